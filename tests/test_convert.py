"""Converters: Caffe .caffemodel files encoded here by a tiny protobuf writer, and torchvision
state dicts made with PyTorch (skipped without it), checked array by array and by forward pass."""
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from alexnet_np import AlexNet, load_weights, to_numpy
from alexnet_np.caffe_proto import CaffeModelError, read_caffemodel
from alexnet_np.convert import CAFFE_MEAN_BGR, LAYERS, convert_caffe, convert_torchvision, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINI = (4, 6, 6, 6, 4, 8, 8)


# ------------------------------------------------------------------ a tiny protobuf writer
def varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field_varint(number, value):
    return varint(number << 3 | 0) + varint(value)


def field_bytes(number, payload):
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def field_fixed32(number, raw):
    return varint(number << 3 | 5) + raw


def field_fixed64(number, raw):
    return varint(number << 3 | 1) + raw


def encode_blob(arr, legacy_shape=False, packed=True, double=False):
    """BlobProto for ``arr``; legacy blobs use num/channels/height/width padded to 4-D with 1s."""
    out = b""
    if legacy_shape:
        dims = (1,) * (4 - arr.ndim) + arr.shape
        out += b"".join(field_varint(n, d) for n, d in zip((1, 2, 3, 4), dims))
    flat = arr.ravel()
    number, fmt, fixed = (8, "<f8", field_fixed64) if double else (5, "<f4", field_fixed32)
    if packed:
        out += field_bytes(number, flat.astype(fmt).tobytes())
    else:
        out += b"".join(fixed(number, v.astype(fmt).tobytes()) for v in flat)
    out += field_bytes(6, np.zeros(3, "<f4").tobytes())  # a diff: skipped
    if not legacy_shape:  # BlobShape after the data: field order must not matter
        dims = [varint(d) for d in arr.shape]
        shape = field_bytes(1, b"".join(dims)) if packed else b"".join(
            field_varint(1, d) for d in arr.shape)
        out += field_bytes(7, shape)
    return out


def encode_layer(name, blobs, legacy=False, **blob_options):
    """LayerParameter (field 100) or legacy V1LayerParameter (field 2) with unknown fields mixed in."""
    encoded = [encode_blob(b, legacy_shape=legacy, **blob_options) for b in blobs]
    if legacy:  # V1: name 4, type enum 5, blobs 6, blobs_lr 7 (unknown to the reader)
        body = field_bytes(2, b"data") + field_bytes(4, name.encode()) + field_varint(5, 4)
        body += b"".join(field_bytes(6, e) for e in encoded) + field_fixed32(7, struct.pack("<f", 1.0))
        return field_bytes(2, body)
    body = field_bytes(1, name.encode()) + field_bytes(2, b"Convolution") + field_bytes(3, b"data")
    body += field_varint(10, 1) + field_fixed64(999, b"\x00" * 8)  # phase, an unknown fixed64
    body += b"".join(field_bytes(7, e) for e in encoded)
    body += field_bytes(106, field_varint(1, 96))  # a convolution_param sub-message
    return field_bytes(100, body)


def encode_net(params, legacy=False, skip=(), **blob_options):
    out = field_bytes(1, b"AlexNet") + field_bytes(3, b"data")  # name, input
    out += encode_layer("relu1", [], legacy)  # a layer without blobs
    for layer in LAYERS:
        if layer not in skip:
            out += encode_layer(layer, [params[f"{layer}.weight"], params[f"{layer}.bias"]],
                                legacy, **blob_options)
    return out


def random_params(model, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in model.params.items()}


# ------------------------------------------------------------------ Caffe
@pytest.mark.parametrize("legacy,options", [
    (False, dict(packed=True)),
    (False, dict(packed=False)),
    (True, dict(packed=True)),
    (True, dict(packed=False, double=True)),
])
def test_caffe_model_converts_exactly(tmp_path, legacy, options):
    model = AlexNet(3, input_size=67, widths=MINI)
    params = random_params(model)
    src = tmp_path / "net.caffemodel"
    src.write_bytes(encode_net(params, legacy=legacy, **options))
    dst = tmp_path / "net.h5"
    summary = convert_caffe(str(src), str(dst))
    assert "channel_order BGR" in summary
    attrs = load_weights(model, dst)
    for key in params:
        np.testing.assert_array_equal(to_numpy(model.params[key]), params[key], err_msg=key)
    assert attrs["variant"] == "caffe" and attrs["input_size"] == 227
    assert attrs["channel_order"] == "BGR" and attrs["mean"] == CAFFE_MEAN_BGR
    assert "net.caffemodel" in attrs["source"]


def test_caffe_bgr_to_rgb_reverses_conv1_and_mean(tmp_path):
    model = AlexNet(3, input_size=67, widths=MINI)
    params = random_params(model)
    src = tmp_path / "net.caffemodel"
    src.write_bytes(encode_net(params))
    convert_caffe(str(src), str(tmp_path / "rgb.h5"), bgr_to_rgb=True)
    attrs = load_weights(model, tmp_path / "rgb.h5")
    assert attrs["channel_order"] == "RGB" and attrs["mean"] == CAFFE_MEAN_BGR[::-1]
    host = {k: to_numpy(v) for k, v in model.params.items()}
    np.testing.assert_array_equal(host["conv1.weight"], params["conv1.weight"][:, ::-1])
    np.testing.assert_array_equal(host["conv2.weight"], params["conv2.weight"])


BVLC_SHAPES = {"conv1": (96, 3, 11, 11), "conv2": (256, 48, 5, 5), "conv3": (384, 256, 3, 3),
               "conv4": (384, 192, 3, 3), "conv5": (256, 192, 3, 3), "fc6": (4096, 9216),
               "fc7": (4096, 4096), "fc8": (1000, 4096)}


def test_caffe_real_bvlc_shapes_in_legacy_v1_form(tmp_path):
    """bvlc_alexnet.caffemodel's real structure: V1 ``layers``, legacy 4-D blob shapes
    (fc weights (1, 1, out, in), biases (1, 1, 1, out)); 61M parameters."""
    params = {}
    for i, (layer, shape) in enumerate(BVLC_SHAPES.items()):  # distinct values everywhere
        params[f"{layer}.weight"] = (np.arange(np.prod(shape), dtype=np.float32) + i).reshape(shape)
        params[f"{layer}.bias"] = -np.arange(shape[0], dtype=np.float32) - i
    src = tmp_path / "bvlc_alexnet.caffemodel"
    src.write_bytes(encode_net(params, legacy=True))
    layers = read_caffemodel(src)
    assert layers["fc6"][0].shape == (1, 1, 4096, 9216) and layers["fc6"][1].shape == (1, 1, 1, 4096)
    del layers
    convert_caffe(str(src), str(tmp_path / "bvlc.h5"))
    model = AlexNet(1000, init="he")
    load_weights(model, tmp_path / "bvlc.h5")  # the real caffe-variant shapes
    for key, value in params.items():
        np.testing.assert_array_equal(to_numpy(model.params[key]), value, err_msg=key)


def test_caffe_missing_layer_names_it(tmp_path):
    params = random_params(AlexNet(3, input_size=67, widths=MINI))
    src = tmp_path / "net.caffemodel"
    src.write_bytes(encode_net(params, skip=("fc7",)))
    with pytest.raises(KeyError, match="net.caffemodel has no layer 'fc7'.*'fc6', 'fc8'"):
        convert_caffe(str(src), str(tmp_path / "out.h5"))
    assert not (tmp_path / "out.h5").exists()


def test_caffe_truncated_and_garbage_files(tmp_path):
    params = random_params(AlexNet(3, input_size=67, widths=MINI))
    data = encode_net(params)
    src = tmp_path / "cut.caffemodel"
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(CaffeModelError, match="cut.caffemodel is not a readable .caffemodel.*truncated"):
        convert_caffe(str(src), str(tmp_path / "out.h5"))
    src.write_bytes(b"\x07" * 10)  # wire type 7 does not exist
    with pytest.raises(CaffeModelError, match="wire type 7"):
        read_caffemodel(src)
    src.write_bytes(field_bytes(100, field_bytes(1, b"conv1") + field_bytes(7, field_bytes(
        7, field_bytes(1, varint(2) + varint(3))) + field_bytes(5, b"\x00" * 20))))
    with pytest.raises(CaffeModelError, match=r"layer 'conv1', blob 0: .*\(2, 3\).*5 values"):
        read_caffemodel(src)
    assert not (tmp_path / "out.h5").exists()


def test_cli_caffe(tmp_path):
    params = random_params(AlexNet(3, input_size=67, widths=MINI))
    src = tmp_path / "net.caffemodel"
    src.write_bytes(encode_net(params))
    run = subprocess.run([sys.executable, "-m", "alexnet_np.convert", "caffe", str(src),
                          str(tmp_path / "out.h5"), "--bgr-to-rgb"],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "channel_order RGB" in run.stdout and "reversed" in run.stdout
    run = subprocess.run([sys.executable, "-m", "alexnet_np.convert", "caffe",
                          str(tmp_path / "absent.caffemodel"), str(tmp_path / "x.h5")],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 1 and "error:" in run.stderr and "absent.caffemodel" in run.stderr


# ------------------------------------------------------------------ torchvision
def torch_alexnet(torch, widths, num_classes):
    """torchvision's AlexNet, written with torch.nn (torchvision itself is not a dependency)."""
    nn = torch.nn
    c1, c2, c3, c4, c5, f6, f7 = widths
    model = nn.Module()
    model.features = nn.Sequential(
        nn.Conv2d(3, c1, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c3, c4, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c4, c5, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
    model.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    model.classifier = nn.Sequential(
        nn.Dropout(0.5), nn.Linear(c5 * 36, f6), nn.ReLU(inplace=True),
        nn.Dropout(0.5), nn.Linear(f6, f7), nn.ReLU(inplace=True), nn.Linear(f7, num_classes))

    def forward(x):
        return model.classifier(torch.flatten(model.avgpool(model.features(x)), 1))

    model.forward = forward
    return model


@pytest.mark.torch
def test_torchvision_state_dict_converts_and_matches_torch_forward(tmp_path):
    torch = pytest.importorskip("torch", reason="the torchvision converter and its test need PyTorch")
    widths = (64, 192, 384, 256, 256, 64, 64)  # real conv shapes and fc6 input (9216), small fc
    torch.manual_seed(0)
    ref = torch_alexnet(torch, widths, 10).eval()
    state = ref.state_dict()
    assert len(state) == 16
    src = tmp_path / "alexnet-owt-test.pth"
    torch.save(state, src)
    dst = tmp_path / "tv.h5"
    main(["torchvision", str(src), str(dst)])

    ours = AlexNet(10, variant="torchvision", widths=widths, seed=3)
    attrs = load_weights(ours, dst)
    assert attrs["variant"] == "torchvision" and attrs["input_size"] == 224
    assert attrs["channel_order"] == "RGB"
    np.testing.assert_allclose(attrs["mean"], (123.675, 116.28, 103.53), rtol=1e-12)
    assert attrs["std"] == (0.229, 0.224, 0.225)
    for layer, prefix in (("conv1", "features.0"), ("conv2", "features.3"), ("conv3", "features.6"),
                          ("conv4", "features.8"), ("conv5", "features.10"),
                          ("fc6", "classifier.1"), ("fc7", "classifier.4"), ("fc8", "classifier.6")):
        for kind in ("weight", "bias"):
            np.testing.assert_array_equal(to_numpy(ours.params[f"{layer}.{kind}"]),
                                          state[f"{prefix}.{kind}"].numpy())

    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        expected = ref.forward(torch.from_numpy(x)).numpy()
    got = to_numpy(ours.forward(ours.xp.asarray(x), train=False))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


@pytest.mark.torch
def test_torchvision_wrong_keys_are_named(tmp_path):
    torch = pytest.importorskip("torch", reason="the torchvision converter and its test need PyTorch")
    src = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2, 3, 7, 7)}, src)
    with pytest.raises(KeyError, match=r"resnet.pth is not a torchvision AlexNet state dict.*"
                                       r"features\.0\.weight.*unexpected keys \['conv1.weight'\]"):
        convert_torchvision(str(src), str(tmp_path / "out.h5"))
