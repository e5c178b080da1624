"""Convert published ImageNet AlexNet weights into alexnet_np's HDF5 weights format.

    python -m alexnet_np.convert torchvision alexnet-owt-7be5be79.pth alexnet_torchvision.h5
    python -m alexnet_np.convert caffe bvlc_alexnet.caffemodel bvlc_alexnet.h5 [--bgr-to-rgb]

(alexnet_np/WEIGHTS.md says where to download the two files.)

torchvision (``variant="torchvision"``, input 224, RGB)
    The .pth file is a state dict read with ``torch.load(weights_only=True)``
    (PyTorch is needed for this command only). Keys map as features.0/3/6/8/10 ->
    conv1..conv5 and classifier.1/4/6 -> fc6..fc8; the tensors already have our
    layouts (OIHW, (out, in)). torchvision normalizes inputs as
    ``(x / 255 - mean) / std`` per channel with mean (0.485, 0.456, 0.406) and std
    (0.229, 0.224, 0.225). The file records ``mean`` = 255 * that mean (0-255 units,
    like every weights file) and the extra attribute ``std`` = (0.229, 0.224, 0.225).
    Our pipeline subtracts ``mean`` only (:func:`alexnet_np.to_network_input`), so to
    feed these weights what they were trained on it must also divide the
    mean-subtracted input by ``255 * std`` per channel -- or, equivalently and exactly,
    divide conv1's weights ``W[:, c]`` by ``255 * std[c]`` once after loading (conv1
    is linear and its zero padding stays zero under the scaling). Without either,
    the inputs are ~58x larger than the weights expect.

Caffe bvlc_alexnet (``variant="caffe"``, input 227, BGR)
    Read with the dependency-free protobuf reader in :mod:`alexnet_np.caffe_proto`
    (current ``layer`` and legacy ``layers`` messages alike); layers are found by
    their bvlc_alexnet names conv1..conv5, fc6..fc8, blobs[0] = weights (OIHW, or
    (out, in) for InnerProduct; legacy 4-D blob shapes (1, 1, out, in) are
    squeezed), blobs[1] = bias. bvlc_alexnet was trained on BGR images (OpenCV
    order) minus the ImageNet mean image ``ilsvrc_2012_mean.binaryproto``; the file
    records that image's per-channel averages B 104.00698793, G 116.66876762,
    R 122.67891434 (the values Caffe's own examples use; often rounded to 104, 117,
    123) and ``channel_order="BGR"``. With ``--bgr-to-rgb`` conv1's input-channel
    axis and the mean are reversed and ``channel_order="RGB"`` is recorded.

Mammograms enter as one gray image replicated into all three channels, so the
channel order changes nothing about the image itself: it only decides which
per-channel mean goes with which conv1 input plane, and the two options give
the same network output as long as the recorded mean is used.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from .caffe_proto import read_caffemodel
from .weights import write_weights

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
TORCHVISION_PREFIX = {"conv1": "features.0", "conv2": "features.3", "conv3": "features.6",
                      "conv4": "features.8", "conv5": "features.10", "fc6": "classifier.1",
                      "fc7": "classifier.4", "fc8": "classifier.6"}
TORCHVISION_MEAN = (0.485, 0.456, 0.406)  # RGB, on inputs scaled to 0..1
TORCHVISION_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)  # ilsvrc_2012_mean.binaryproto


def _canonical(params, src):
    """Check (and squeeze legacy leading 1s off) every array's shape: conv weights 4-D,
    fc weights 2-D, biases 1-D. Errors name the source file and the layer."""
    out = {}
    for key, value in params.items():
        layer, kind = key.split(".")
        ndim = 1 if kind == "bias" else 4 if layer.startswith("conv") else 2
        shape = value.shape
        while value.ndim > ndim and value.shape[0] == 1:
            value = value.reshape(value.shape[1:])
        if value.ndim != ndim:
            raise ValueError(f"{src}: {layer} {kind} has shape {shape}, expected a {ndim}-D array")
        out[key] = np.ascontiguousarray(value, dtype=np.float32)
    return out


def convert_torchvision(src, dst):
    """torchvision ``alexnet`` state dict (.pth) -> weights file; returns a one-line summary."""
    try:
        import torch  # needed by this converter only
    except ImportError:
        raise RuntimeError("converting torchvision weights needs PyTorch to read the .pth file "
                           "(pip install torch); nothing else in alexnet_np uses it") from None
    state = torch.load(src, map_location="cpu", weights_only=True)
    expected = {f"{TORCHVISION_PREFIX[layer]}.{kind}" for layer in LAYERS for kind in ("weight", "bias")}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise KeyError(f"{src} is not a torchvision AlexNet state dict: missing keys {missing}, "
                       f"unexpected keys {unexpected}")
    params = {f"{layer}.{kind}": state[f"{TORCHVISION_PREFIX[layer]}.{kind}"].float().numpy()
              for layer in LAYERS for kind in ("weight", "bias")}
    mean = tuple(255.0 * m for m in TORCHVISION_MEAN)
    write_weights(dst, _canonical(params, src), "torchvision", 224, "RGB", mean,
                  source=f"torchvision AlexNet state dict {os.path.basename(src)}",
                  std=np.asarray(TORCHVISION_STD))
    return (f"wrote {dst} from {src}: variant torchvision, input_size 224, channel_order RGB, "
            f"mean {tuple(round(m, 3) for m in mean)} (0-255); the weights also expect the "
            f"mean-subtracted input divided by 255*std, std {TORCHVISION_STD} (see WEIGHTS.md)")


def convert_caffe(src, dst, bgr_to_rgb=False):
    """bvlc_alexnet .caffemodel -> weights file (BGR, or RGB with ``bgr_to_rgb``); returns a summary."""
    layers = read_caffemodel(src)
    params = {}
    for layer in LAYERS:
        if layer not in layers:
            raise KeyError(f"{src} has no layer {layer!r} with weights (bvlc_alexnet names are "
                           f"{list(LAYERS)}); layers with weights in the file: {sorted(layers)}")
        blobs = layers[layer]
        if len(blobs) != 2:
            raise ValueError(f"{src}: layer {layer!r} has {len(blobs)} blobs, expected 2 "
                             f"(weights and bias)")
        params[f"{layer}.weight"], params[f"{layer}.bias"] = blobs
    params = _canonical(params, src)
    mean, order = CAFFE_MEAN_BGR, "BGR"
    if bgr_to_rgb:
        params["conv1.weight"] = np.ascontiguousarray(params["conv1.weight"][:, ::-1])
        mean, order = mean[::-1], "RGB"
    how = "conv1 input channels reversed to RGB" if bgr_to_rgb else "Caffe's BGR channel order kept"
    write_weights(dst, params, "caffe", 227, order, mean,
                  source=f"Caffe model {os.path.basename(src)} ({how})")
    return (f"wrote {dst} from {src}: variant caffe, input_size 227, channel_order {order} "
            f"({how}), mean {tuple(round(m, 3) for m in mean)} in {order} order (0-255)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m alexnet_np.convert",
                                     description="Convert ImageNet AlexNet weights to alexnet_np HDF5.")
    sub = parser.add_subparsers(dest="kind", required=True)
    tv = sub.add_parser("torchvision", help="torchvision alexnet .pth state dict (needs PyTorch)")
    tv.add_argument("src", help="e.g. alexnet-owt-7be5be79.pth")
    tv.add_argument("dst", help="output .h5")
    cf = sub.add_parser("caffe", help="Caffe .caffemodel (bvlc_alexnet layer names)")
    cf.add_argument("src", help="e.g. bvlc_alexnet.caffemodel")
    cf.add_argument("dst", help="output .h5")
    cf.add_argument("--bgr-to-rgb", action="store_true",
                    help="reverse conv1's input channels and the mean; record channel_order RGB")
    args = parser.parse_args(argv)
    try:
        if args.kind == "torchvision":
            summary = convert_torchvision(args.src, args.dst)
        else:
            summary = convert_caffe(args.src, args.dst, args.bgr_to_rgb)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        parser.exit(1, f"error: {e.args[0] if isinstance(e, KeyError) else e}\n")
    print(summary)


if __name__ == "__main__":
    main()
