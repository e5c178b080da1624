"""AlexNet as a whole: architecture, a float64 whole-network gradient check, full-size shapes."""
import gc
import sys

import numpy as np
import pytest

from alexnet_np import AlexNet, SoftmaxCrossEntropy, to_network_input
from alexnet_np.backend import (RUNTIME, _import_cupy, backend_name, cpu_kernels_name, kernels_used,
                                reset_kernels_used, set_backend, set_cpu_kernels, set_winograd)
from alexnet_np.gradcheck import numeric_gradient, rel_error

MINI = (4, 6, 6, 6, 4, 8, 8)  # conv1..conv5, fc6, fc7 widths (even: groups of 2)


def mini_net(variant="caffe", input_size=67, seed=0):
    net = AlexNet(3, variant=variant, input_size=input_size, init="he", seed=seed,
                  dtype=np.float64, widths=MINI)
    rng = np.random.default_rng(seed + 10)
    for key, p in net.params.items():  # nonzero biases keep pre-activations off ReLU's kink at 0
        if key.endswith(".bias"):
            p[...] = rng.normal(0.0, 0.1, p.shape)
    for name in ("drop6", "drop7"):  # fixed masks make the training-mode net a fixed function
        layer = net.layer(name)
        fan = net.layer("fc6").in_features if (variant == "torchvision" and name == "drop6") else 8
        layer.fixed_mask = (rng.random((2, fan)) > 0.5).astype(np.float64)
    return net


@pytest.mark.parametrize("variant", ["caffe", "torchvision"])
def test_whole_network_gradient_check_float64(variant):
    net = mini_net(variant)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 67, 67))
    labels = np.array([0, 2])
    lossf = SoftmaxCrossEntropy()

    def loss():
        return lossf(net.forward(x, train=True), labels)[0]

    _, d = lossf(net.forward(x, train=True), labels)
    net.backward(d)
    assert set(net.grads) == set(net.params)
    for name, p in net.params.items():
        idx = rng.choice(p.size, size=min(p.size, 12), replace=False)
        num = numeric_gradient(loss, p, eps=1e-6, indices=idx)  # small steps: many kinks downstream
        # Normalized by the whole gradient's scale: the Winograd convolutions' rounding gives
        # the numeric estimate noise of ~1e-11 where the exact gradient is 0 (a padding tap).
        err = rel_error(net.grads[name].reshape(-1)[idx], num.reshape(-1)[idx],
                        scale=np.abs(net.grads[name]).max())
        assert err < 1e-6, (name, err)


def test_caffe_architecture_and_parameter_names():
    net = AlexNet(2, variant="caffe")
    shapes = {k: v.shape for k, v in net.params.items()}
    assert shapes == {
        "conv1.weight": (96, 3, 11, 11), "conv1.bias": (96,),
        "conv2.weight": (256, 48, 5, 5), "conv2.bias": (256,),
        "conv3.weight": (384, 256, 3, 3), "conv3.bias": (384,),
        "conv4.weight": (384, 192, 3, 3), "conv4.bias": (384,),
        "conv5.weight": (256, 192, 3, 3), "conv5.bias": (256,),
        "fc6.weight": (4096, 9216), "fc6.bias": (4096,),
        "fc7.weight": (4096, 4096), "fc7.bias": (4096,),
        "fc8.weight": (2, 4096), "fc8.bias": (2,)}
    assert net.pool5_shape == (256, 6, 6)
    assert [n for n, _ in net.layers][:4] == ["conv1", "relu1", "norm1", "pool1"]
    # bvlc_alexnet fillers: std 0.01 conv, 0.005 fc6/fc7; biases 0 or 0.1
    assert abs(float(net.params["conv3.weight"].std()) - 0.01) < 5e-4
    assert abs(float(net.params["fc6.weight"].std()) - 0.005) < 1e-4
    assert float(net.params["conv2.bias"][0]) == pytest.approx(0.1)
    assert float(net.params["conv1.bias"].max()) == 0.0


def test_torchvision_architecture():
    net = AlexNet(1000, variant="torchvision")
    assert net.input_size == 224 and net.pool5_shape == (256, 6, 6)
    assert net.params["conv2.weight"].shape == (192, 64, 5, 5)
    names = [n for n, _ in net.layers]
    assert "norm1" not in names and names.index("drop6") < names.index("fc6")


def test_he_init_and_input_size_changes_fc6():
    net = AlexNet(2, init="he", input_size=99)
    assert net.pool5_shape == (256, 2, 2) and net.params["fc6.weight"].shape == (4096, 1024)
    w = net.params["conv3.weight"]
    assert abs(float(w.std()) - np.sqrt(2.0 / (256 * 9))) < 2e-3
    assert float(np.abs(net.params["fc6.bias"]).max()) == 0.0
    with pytest.raises(ValueError, match="too small"):
        AlexNet(2, input_size=20)


def test_full_size_alexnet_float32_forward_backward():
    net = AlexNet(3)
    x = np.random.default_rng(0).standard_normal((2, 3, 227, 227)).astype(np.float32)
    logits = net.forward(x, train=True)
    assert logits.shape == (2, 3) and logits.dtype == np.float32
    loss, d = SoftmaxCrossEntropy()(logits, np.array([0, 2]))
    assert np.isfinite(loss)
    net.backward(d)
    for k, g in net.grads.items():
        assert g.shape == net.params[k].shape and g.dtype == np.float32, k
        assert np.all(np.isfinite(g)), k
    assert float(np.abs(net.grads["conv1.weight"]).sum()) > 0
    with pytest.raises(ValueError, match="expects input of shape"):
        net.forward(np.zeros((1, 3, 224, 224), np.float32))


def test_predict_proba_rows_sum_to_one_and_are_batch_independent():
    net = AlexNet(3, input_size=67, widths=MINI, init="he")
    x = np.random.default_rng(0).standard_normal((5, 3, 67, 67)).astype(np.float32)
    p_all = net.predict_proba(x, batch_size=5)
    p_small = net.predict_proba(x, batch_size=2)
    np.testing.assert_allclose(p_all.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(p_all, p_small, rtol=1e-5, atol=1e-6)


def _python_calls(fn):
    """Python-level calls made by fn() in this thread. The garbage collector is paused: a
    collection inside fn would run finalizers of earlier tests' objects and add their calls."""
    count = 0

    def prof(frame, event, arg):
        nonlocal count
        if event in ("call", "c_call"):
            count += 1
    gc.collect()
    gc.disable()
    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
        gc.enable()
    return count


@pytest.mark.parametrize("kernels", ["reference", "fast"])
def test_forward_backward_do_not_loop_over_batch_or_pixels(kernels):
    """A Python loop over the images or the pixels of any layer would make a training step's
    Python-level calls (in the calling thread) grow with the batch or the input size: by at
    least 32 calls from a batch of 2 to one of 34, by thousands from 67 x 67 to 131 x 131
    inputs. The bound is on growth only, so the code is free to take other paths for other
    sizes (the fast kernels' loops over cache-sized slabs run in worker threads, unseen)."""
    previous = cpu_kernels_name()
    set_cpu_kernels(kernels)
    lossf = SoftmaxCrossEntropy()

    def step(n, size):
        net = AlexNet(2, input_size=size, widths=MINI, init="he")
        x = np.random.default_rng(0).standard_normal((n, 3, size, size)).astype(np.float32)
        labels = np.arange(n) % 2
        def train_step():
            net.backward(lossf(net.forward(x, train=True), labels)[1])
        train_step()  # warm-up: first calls import, allocate gradient buffers, grow scratch memory
        return _python_calls(train_step)

    try:
        base = step(2, 67)
        assert abs(step(34, 67) - base) < 32
        assert abs(step(2, 131) - base) < 32
    finally:
        set_cpu_kernels(previous)


@pytest.mark.parametrize("kernels, winograd, expected", [
    ("fast", True, {"fast CPU", "im2col + GEMM", "Winograd", "reference"}),
    ("fast", False, {"fast CPU", "im2col + GEMM", "reference"}),
    ("reference", True, {"im2col + GEMM", "reference"})])
def test_kernels_used_says_what_ran(kernels, winograd, expected, monkeypatch):
    """kernels_used() records, per op, the implementation the dispatch picked: Winograd for
    conv3-conv5 only with the fast kernels, im2col + GEMM for conv1 and conv2, fast CPU twins
    where they exist (the dropout and the loss have none: reference)."""
    monkeypatch.setattr(RUNTIME, "winograd", RUNTIME.winograd)
    previous = cpu_kernels_name()
    set_cpu_kernels(kernels)
    set_winograd(winograd)
    try:
        net = AlexNet(2, input_size=67, widths=MINI, init="he")
        x = np.random.default_rng(0).standard_normal((2, 3, 67, 67)).astype(np.float32)
        reset_kernels_used()
        net.backward(SoftmaxCrossEntropy()(net.forward(x, train=True), np.array([0, 1]))[1])
        used = kernels_used()
    finally:
        set_cpu_kernels(previous)
    assert set(used.implementations) == expected, used.summary()
    calls = {(u.op, u.implementation): u.calls for u in used.uses}
    if "Winograd" in expected:
        assert calls[("conv_forward", "Winograd")] == calls[("conv_backward", "Winograd")] == 3
        assert calls[("conv_forward", "im2col + GEMM")] == 2
    else:
        assert calls[("conv_forward", "im2col + GEMM")] == 5
    kind = "fast CPU" if kernels == "fast" else "reference"
    assert calls[("lrn_forward", kind)] == 2 and calls[("maxpool_backward", kind)] == 3
    assert calls[("dropout_mask", "reference")] == 2
    assert used.summary().splitlines()[0].startswith("reference: ")
    reset_kernels_used()
    assert kernels_used().uses == () and kernels_used().summary() == "no dispatched op has run"


def test_to_network_input_replicates_gray_and_subtracts_mean():
    gray = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    out = to_network_input(gray, mean=np.array([1.0, 2.0, 3.0]))
    assert out.shape == (2, 3, 4, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 2], gray - 3.0)
    mean_img = gray.mean(axis=0)
    out = to_network_input(gray, mean=mean_img)
    np.testing.assert_allclose(out[:, 0], gray - mean_img)
    np.testing.assert_array_equal(out[:, 0], out[:, 1])


def _network_input_by_hand(gray, mean, scale):
    """(gray - mean) * scale per channel in float32, written out for the test."""
    g = np.asarray(gray, np.float32)
    mean = np.asarray(mean, np.float32)
    channels = [g - (mean[c] if mean.ndim == 1 else mean) for c in range(3)]
    out = np.stack(channels, axis=1)
    return out * np.float32(scale) if scale != 1.0 else out


@pytest.mark.parametrize("mean_kind", ["image", "per channel", "scalar"])
@pytest.mark.parametrize("scale", [1.0, 1 / 512])
def test_to_network_input_takes_host_arrays_and_returns_the_backends(mean_kind, scale):
    """uint8 NumPy images and a NumPy mean (an (S, S) image, a (3,) per-channel mean or a
    scalar) give a float32 NumPy array on the numpy backend, equal to (gray - mean) * scale."""
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (3, 5, 5)).astype(np.uint8)
    mean = {"image": rng.uniform(0, 255, (5, 5)), "per channel": np.array([101.5, 7.25, 200.0]),
            "scalar": 99.5}[mean_kind]
    out = to_network_input(gray, mean, scale)
    assert type(out) is np.ndarray and out.dtype == np.float32 and out.shape == (3, 3, 5, 5)
    np.testing.assert_array_equal(out, _network_input_by_hand(gray, mean, scale))
    assert to_network_input(gray, mean, scale, dtype=np.float64).dtype == np.float64


@pytest.mark.skipif(_import_cupy() is None, reason="CuPy with a CUDA GPU is not available: "
                                                    "host-to-device input is not exercised")
def test_to_network_input_moves_host_arrays_to_the_gpu_backend():
    cp = _import_cupy()
    rng = np.random.default_rng(4)
    gray, mean = rng.integers(0, 256, (2, 6, 6)).astype(np.uint8), rng.uniform(0, 255, (6, 6))
    expected = _network_input_by_hand(gray, mean, 1 / 512)
    previous = backend_name()
    try:
        set_backend("cupy")
        out = to_network_input(gray, mean, 1 / 512)
        assert isinstance(out, cp.ndarray)
        np.testing.assert_allclose(out.get(), expected, rtol=1e-6)
        set_backend("numpy")   # a device array comes back to the host backend
        out = to_network_input(cp.asarray(gray), cp.asarray(mean), 1 / 512)
        assert type(out) is np.ndarray
        np.testing.assert_allclose(out, expected, rtol=1e-6)
    finally:
        set_backend(previous)


def test_predict_proba_is_the_softmax_of_the_test_mode_logits():
    net = AlexNet(3, input_size=67, widths=MINI, init="he", dtype=np.float64)
    x = np.random.default_rng(5).standard_normal((4, 3, 67, 67))
    z = net.forward(x, train=False).copy()
    expected = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(net.predict_proba(x), expected, rtol=1e-12)
