"""Every fast CPU kernel (alexnet_np.cpu_kernels) against its plain reference in ops.py,
the dispatch between them, the outputs kept in the caller's buffers, and a whole training
step with fast kernels against one with reference kernels."""
import os

import numpy as np
import pytest

from alexnet_np import SGD, AlexNet, SoftmaxCrossEntropy, cpu_kernels, ops, usable_cores
from alexnet_np.backend import RUNTIME, Runtime, cpu_kernels_name, set_cpu_kernels

DTYPES = [np.float64, np.float32]
N_RANDOM = 40  # random shapes per kernel and dtype


def ref(name):
    return getattr(ops, name).reference


def fast(name):
    return getattr(cpu_kernels, name)


@pytest.fixture(params=[None, 2048], ids=["default-blocks", "tiny-blocks"])
def blocks(request, monkeypatch):
    """Run each kernel test with the normal block size and with tiny blocks (many block
    boundaries inside one call)."""
    if request.param:
        monkeypatch.setattr(cpu_kernels, "BLOCK_BYTES", request.param)


def conv_shapes(rng):
    """Random (N, C, H, W, kernel, stride, pad) with a valid output: odd sizes, strides, padding;
    every other one a "same" convolution (stride 1, pad (k-1)/2, odd k: conv2..conv5's case)."""
    while True:
        n, c = int(rng.integers(1, 5)), int(rng.integers(1, 6))
        k, s, p = int(rng.integers(1, 7)), int(rng.integers(1, 5)), int(rng.integers(0, 4))
        if rng.integers(0, 2):
            k = 2 * int(rng.integers(0, 4)) + 1
            s, p = 1, (k - 1) // 2
        h, w = int(rng.integers(1, 17)), int(rng.integers(1, 17))
        if h + 2 * p >= k and w + 2 * p >= k:
            yield n, c, h, w, k, s, p


def pool_shapes(rng):
    """Random (N, C, H, W, kernel, stride, ceil_mode) that pool to at least one output."""
    while True:
        n, c = int(rng.integers(1, 4)), int(rng.integers(1, 6))
        k, s = int(rng.integers(1, 6)), int(rng.integers(1, 4))
        h, w = int(rng.integers(k, 20)), int(rng.integers(k, 20))
        yield n, c, h, w, k, s, bool(rng.integers(0, 2))


def take(gen, count):
    return [next(gen) for _ in range(count)]


# ----------------------------------------------------------------------------- dispatch
def test_dispatch_picks_fast_or_reference(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_kernels, "relu_forward", lambda x, inplace=False: calls.append("fast") or x)
    previous = cpu_kernels_name()
    try:
        set_cpu_kernels("fast")
        ops.relu_forward(np.zeros(3))
        assert calls == ["fast"]
        set_cpu_kernels("reference")
        out = ops.relu_forward(np.array([-1.0, 2.0]))
        assert calls == ["fast"] and out.tolist() == [0.0, 2.0]
    finally:
        set_cpu_kernels(previous)
    with pytest.raises(ValueError, match="CPU kernels"):
        set_cpu_kernels("quick")


def test_every_fast_kernel_has_the_reference_signature():
    import inspect
    assert set(cpu_kernels.__all__) == {"im2col", "col2im", "maxpool", "maxpool_forward", "maxpool_backward",
                                        "lrn_forward", "lrn_backward", "relu_forward", "relu_backward",
                                        "sgd_update"}
    for name in cpu_kernels.__all__:
        assert inspect.signature(fast(name)) == inspect.signature(ref(name)), name
    # ops without a fast twin keep their reference under the fast setting
    for name in ("dropout_mask", "dropout_apply", "softmax_cross_entropy"):
        assert not hasattr(cpu_kernels, name)


# ----------------------------------------------------------------------------- im2col / col2im
@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_equals_reference(dtype, blocks):
    rng = np.random.default_rng(0)
    for n, c, h, w, k, s, p in take(conv_shapes(rng), N_RANDOM):
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        np.testing.assert_array_equal(fast("im2col")(x, k, k, s, p), ref("im2col")(x, k, k, s, p))
    x = rng.standard_normal((3, 4, 9, 7)).astype(dtype).transpose(1, 0, 2, 3)  # a non-contiguous view
    np.testing.assert_array_equal(fast("im2col")(x, 3, 3, 2, 1), ref("im2col")(x, 3, 3, 2, 1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_col2im_equals_reference(dtype, blocks):
    rng = np.random.default_rng(1)
    for n, c, h, w, k, s, p in take(conv_shapes(rng), N_RANDOM):
        ho, wo = ops.conv_out_size(h, k, s, p), ops.conv_out_size(w, k, s, p)
        cols = rng.standard_normal((c * k * k, n * ho * wo)).astype(dtype)
        np.testing.assert_array_equal(fast("col2im")(cols, (n, c, h, w), k, k, s, p),
                                      ref("col2im")(cols, (n, c, h, w), k, k, s, p))


# ----------------------------------------------------------------------------- max pooling
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ties", [False, True])
def test_maxpool_forward_and_backward_equal_reference(dtype, ties, blocks):
    rng = np.random.default_rng(2)
    for n, c, h, w, k, s, ceil_mode in take(pool_shapes(rng), N_RANDOM):
        if ties:  # small integers: many tied maxima inside and across windows
            x = rng.integers(-2, 3, (n, c, h, w)).astype(dtype)
        else:
            x = rng.standard_normal((n, c, h, w)).astype(dtype)
        out, arg = ref("maxpool_forward")(x, k, s, ceil_mode)
        out_f, arg_f = fast("maxpool_forward")(x, k, s, ceil_mode)
        np.testing.assert_array_equal(out_f, out)
        np.testing.assert_array_equal(arg_f, arg)
        assert arg_f.dtype == np.int8 and out_f.dtype == dtype
        d = rng.standard_normal(out.shape).astype(dtype)
        np.testing.assert_array_equal(fast("maxpool_backward")(d, arg, x.shape, k, s),
                                      ref("maxpool_backward")(d, arg, x.shape, k, s))


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool_without_argmax_equals_reference(dtype, blocks):
    """The inference pooling (no argmax) against the reference forward's output: random
    shapes, kernels, strides, both ceil modes, a non-contiguous input, and -inf values."""
    rng = np.random.default_rng(5)
    for n, c, h, w, k, s, ceil_mode in take(pool_shapes(rng), N_RANDOM):
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        out = fast("maxpool")(x, k, s, ceil_mode)
        assert out.dtype == dtype
        np.testing.assert_array_equal(out, ref("maxpool_forward")(x, k, s, ceil_mode)[0])
        np.testing.assert_array_equal(ref("maxpool")(x, k, s, ceil_mode), out)
    x = rng.standard_normal((4, 3, 27, 27)).astype(dtype).transpose(1, 0, 2, 3)
    x[0, 0, :4, :4] = -np.inf  # a window of -inf only: its maximum is -inf, as the reference's
    for ceil_mode in (True, False):
        np.testing.assert_array_equal(fast("maxpool")(x, 3, 2, ceil_mode),
                                      ref("maxpool_forward")(x, 3, 2, ceil_mode)[0])


def test_maxpool_alexnet_sizes_and_first_tap_rule():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 55, 55)).astype(np.float32)
    x[..., ::3, ::2] = 0.5  # ties between taps of one window and between windows
    for ceil_mode in (True, False):
        got, want = fast("maxpool_forward")(x, 3, 2, ceil_mode), ref("maxpool_forward")(x, 3, 2, ceil_mode)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 0, 2] = x[0, 0, 1, 0] = x[0, 0, 2, 2] = 5.0  # three tied maxima: the first in row order wins
    assert int(fast("maxpool_forward")(x, 3, 2)[1][0, 0, 0, 0]) == 2


def test_maxpool_large_kernel_uses_reference():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 2, 19, 19))
    for got, want in zip(fast("maxpool_forward")(x, 9, 3), ref("maxpool_forward")(x, 9, 3)):
        np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- LRN
@pytest.mark.parametrize("dtype", DTYPES)
def test_lrn_forward_and_backward_equal_reference(dtype, blocks):
    rng = np.random.default_rng(5)
    for _ in range(N_RANDOM):
        n, c = int(rng.integers(1, 4)), int(rng.integers(1, 12))
        h, w = int(rng.integers(1, 9)), int(rng.integers(1, 9))
        size = int(rng.choice([1, 3, 5, 7]))
        beta = float(rng.choice([0.75, 0.5, 1.0, 0.6]))
        alpha, k = float(rng.uniform(1e-4, 0.5)), float(rng.uniform(0.5, 2.0))
        x = (rng.standard_normal((n, c, h, w)) * 3).astype(dtype)
        y, scale = ref("lrn_forward")(x, size, alpha, beta, k)
        y_f, scale_f = fast("lrn_forward")(x, size, alpha, beta, k)
        np.testing.assert_array_equal(y_f, y)
        np.testing.assert_array_equal(scale_f, scale)
        d = rng.standard_normal(x.shape).astype(dtype)
        np.testing.assert_array_equal(fast("lrn_backward")(d, x, y, scale, size, alpha, beta),
                                      ref("lrn_backward")(d, x, y, scale, size, alpha, beta))


# ----------------------------------------------------------------------------- ReLU, SGD
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_relu_equals_reference(dtype, layout, blocks):
    rng = np.random.default_rng(6)
    base = rng.standard_normal((3, 5, 7, 9)).astype(dtype)
    x = {"C": base, "F": np.asfortranarray(base), "strided": base[:, :, ::2]}[layout]
    np.testing.assert_array_equal(fast("relu_forward")(x.copy()), ref("relu_forward")(x.copy()))
    xi = x.copy(order="K")
    assert fast("relu_forward")(xi, True) is xi and np.array_equal(xi, np.maximum(x, 0))
    y = np.maximum(x, 0)
    d = rng.standard_normal(x.shape).astype(dtype)
    d = {"C": d, "F": np.asfortranarray(d), "strided": d}[layout]
    d_f = d.copy(order="K")
    assert fast("relu_backward")(d_f, y) is d_f
    np.testing.assert_array_equal(d_f, ref("relu_backward")(d.copy(order="K"), y))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_sgd_update_equals_reference(dtype, weight_decay, blocks):
    rng = np.random.default_rng(7)
    for shape in [(7,), (300, 41), (2, 3, 5, 5)]:
        w, g, v = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
        w2, v2 = w.copy(), v.copy()
        ref("sgd_update")(w, g, v, 0.01, 0.9, weight_decay)
        fast("sgd_update")(w2, g, v2, 0.01, 0.9, weight_decay)
        np.testing.assert_array_equal(w2, w)
        np.testing.assert_array_equal(v2, v)
    w, g, v = (rng.standard_normal((6, 8)).astype(dtype) for _ in range(3))  # non-contiguous views
    w2, v2 = w.copy(), v.copy()
    ref("sgd_update")(w[:, ::2], g[:, ::2], v[:, ::2], 0.1, 0.5, 0.01)
    fast("sgd_update")(w2[:, ::2], g[:, ::2], v2[:, ::2], 0.1, 0.5, 0.01)
    np.testing.assert_array_equal(w2, w)
    np.testing.assert_array_equal(v2, v)


# ----------------------------------------------------------------------------- machinery
def test_results_do_not_depend_on_the_thread_count(monkeypatch):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 7, 13, 11)).astype(np.float32)
    before = fast("lrn_forward")(x, 5, 1e-2, 0.75, 1.0)[0].copy()
    for threads in (1, 3):
        monkeypatch.setattr(RUNTIME, "threads", threads)
        np.testing.assert_array_equal(fast("lrn_forward")(x, 5, 1e-2, 0.75, 1.0)[0], before)


def test_worker_threads_default_to_the_usable_cores(monkeypatch):
    """Without OPENBLAS_NUM_THREADS / OMP_NUM_THREADS the kernels run one thread per core this
    process may use (its affinity mask where the platform has one, not the machine's count)."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5, 7}, raising=False)
    assert usable_cores() == 3 and Runtime().threads == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert Runtime().threads == 5
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert usable_cores() == 1


def test_worker_errors_reach_the_caller():
    def work(lo, hi):
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        cpu_kernels.parallel(work, 10)
    assert cpu_kernels.parallel(lambda lo, hi: None, 10) is None  # the workers survive


def test_outputs_kept_in_buffers_are_reused_by_the_same_caller_only():
    """With ``buffers`` an output lives in the caller's dict and the next call of the same
    kind overwrites it in place; without, or with another caller's dict, it is a new array."""
    rng = np.random.default_rng(4)
    x1, x2 = rng.standard_normal((2, 2, 3, 9, 9)).astype(np.float32)
    mine, theirs = {}, {}
    y1, s1 = fast("lrn_forward")(x1, 5, 1e-2, 0.75, 1.0, mine)
    expected1 = y1.copy()
    y_other, _ = fast("lrn_forward")(x1, 5, 1e-2, 0.75, 1.0, theirs)
    y_fresh, _ = fast("lrn_forward")(x1, 5, 1e-2, 0.75, 1.0)
    assert not np.shares_memory(y1, y_other) and not np.shares_memory(y1, y_fresh)
    y2, s2 = fast("lrn_forward")(x2, 5, 1e-2, 0.75, 1.0, mine)
    assert np.shares_memory(y2, y1) and np.shares_memory(s2, s1)  # reused, no new memory
    np.testing.assert_array_equal(y2, ref("lrn_forward")(x2, 5, 1e-2, 0.75, 1.0)[0])
    np.testing.assert_array_equal(y_other, expected1)            # another caller's output intact
    y3, _ = fast("lrn_forward")(x2[:1], 5, 1e-2, 0.75, 1.0, mine)  # another shape: a new array
    assert y3.shape == (1, 3, 9, 9) and not np.shares_memory(y3, y1)


# ----------------------------------------------------------------------------- whole network
@pytest.mark.parametrize("variant", ["caffe", "torchvision"])
def test_training_step_with_fast_kernels_equals_reference(variant):
    """One forward/backward/SGD step of a small float64 AlexNet with each set of CPU kernels
    (the fast set includes Winograd for conv3-conv5: equal to rounding, not bit for bit)."""
    widths = (8, 12, 12, 12, 8, 16, 16)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 3, 99, 99))
    labels = np.array([0, 1, 2, 1])
    out = {}
    previous = cpu_kernels_name()
    try:
        for kernels in ("reference", "fast"):
            set_cpu_kernels(kernels)
            net = AlexNet(3, variant=variant, input_size=99, widths=widths, init="he", seed=3,
                          dtype=np.float64)
            opt = SGD(net, base_lr=0.01)
            loss, d = SoftmaxCrossEntropy()(net.forward(x, train=True), labels)
            net.backward(d)
            grads = {k: v.copy() for k, v in net.grads.items()}
            opt.step()
            out[kernels] = (loss, grads, {k: v.copy() for k, v in net.params.items()},
                            net.forward(x, train=False))
    finally:
        set_cpu_kernels(previous)
    loss_r, grads_r, params_r, logits_r = out["reference"]
    loss_f, grads_f, params_f, logits_f = out["fast"]
    assert loss_f == pytest.approx(loss_r, rel=1e-12)
    for k in grads_r:
        np.testing.assert_allclose(grads_f[k], grads_r[k], rtol=1e-9, atol=1e-12, err_msg=k)
        np.testing.assert_allclose(params_f[k], params_r[k], rtol=1e-12, atol=1e-14, err_msg=k)
    np.testing.assert_allclose(logits_f, logits_r, rtol=1e-10, atol=1e-12)


def test_importing_the_package_shortens_openblas_spinning_unless_the_user_chose():
    """alexnet_np sets OPENBLAS_THREAD_TIMEOUT (read when OpenBLAS loads) before NumPy is
    imported, and leaves a value from the environment alone."""
    import os
    import subprocess
    import sys
    code = "import alexnet_np, os; print(os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for value, expected in ((None, "4"), ("9", "9")):
        if value is not None:
            env["OPENBLAS_THREAD_TIMEOUT"] = value
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True,
                             text=True, check=True)
        assert out.stdout.strip() == expected
