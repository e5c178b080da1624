"""Every CUDA kernel against its NumPy twin (runs only where CuPy sees a GPU)."""
import numpy as np
import pytest

from alexnet_np import ops
from alexnet_np.backend import _import_cupy

cp = _import_cupy()
pytestmark = pytest.mark.skipif(cp is None, reason="CuPy with a CUDA GPU is not available: "
                                                   "the GPU kernels are not exercised on this machine")

DTYPES = [np.float64, np.float32]
# (N, C, H, W, kernel, stride, pad): odd sizes, strides, padding
CONV_SHAPES = [(2, 3, 7, 9, 3, 1, 1), (3, 5, 11, 8, 5, 2, 2), (2, 3, 23, 19, 11, 4, 0),
               (1, 4, 6, 6, 3, 3, 1), (2, 2, 13, 13, 3, 1, 0), (4, 6, 27, 27, 5, 1, 2)]
POOL_SHAPES = [(2, 3, 7, 7, 3, 2), (2, 3, 8, 6, 3, 2), (1, 2, 55, 55, 3, 2), (2, 2, 9, 10, 2, 2),
               (3, 4, 13, 13, 3, 2), (1, 1, 5, 4, 3, 1)]


def tol(dtype):
    return dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)


def pair(rng, shape, dtype):
    a = rng.standard_normal(shape).astype(dtype)
    return a, cp.asarray(a)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", CONV_SHAPES)
def test_im2col_col2im_match_numpy(shape, dtype):
    n, c, h, w, k, s, p = shape
    rng = np.random.default_rng(0)
    x, xg = pair(rng, (n, c, h, w), dtype)
    cols = ops.im2col.reference(x, k, k, s, p)
    colsg = ops.im2col(xg, k, k, s, p)
    np.testing.assert_array_equal(colsg.get(), cols)  # a pure copy: bit-exact
    d, dg = pair(rng, cols.shape, dtype)
    np.testing.assert_allclose(ops.col2im(dg, x.shape, k, k, s, p).get(),
                               ops.col2im.reference(d, x.shape, k, k, s, p), **tol(dtype))


def test_col2im_is_deterministic():
    rng = np.random.default_rng(1)
    _, dg = pair(rng, (3 * 25, 2 * 27 * 27), np.float32)
    a = ops.col2im(dg, (2, 3, 27, 27), 5, 5, 1, 2)
    b = ops.col2im(dg, (2, 3, 27, 27), 5, 5, 1, 2)
    assert bool((a == b).all())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", POOL_SHAPES)
@pytest.mark.parametrize("ceil_mode", [True, False])
def test_maxpool_matches_numpy(shape, dtype, ceil_mode):
    n, c, h, w, k, s = shape
    rng = np.random.default_rng(2)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    x[..., ::3, ::2] = 0.5  # plenty of ties: both twins must route them the same way
    xg = cp.asarray(x)
    out, arg = ops.maxpool_forward.reference(x, k, s, ceil_mode)
    outg, argg = ops.maxpool_forward(xg, k, s, ceil_mode)
    np.testing.assert_array_equal(outg.get(), out)
    np.testing.assert_array_equal(argg.get(), arg)
    np.testing.assert_array_equal(ops.maxpool(xg, k, s, ceil_mode).get(), out)  # inference, no argmax
    d, dg = pair(rng, out.shape, dtype)
    np.testing.assert_allclose(ops.maxpool_backward(dg, argg, x.shape, k, s).get(),
                               ops.maxpool_backward.reference(d, arg, x.shape, k, s), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,size,beta", [((2, 96, 11, 13), 5, 0.75), ((3, 7, 5, 4), 3, 0.6),
                                             ((2, 3, 6, 6), 5, 0.75), ((1, 9, 3, 5), 7, 1.0)])
def test_lrn_matches_numpy(shape, size, beta, dtype):
    rng = np.random.default_rng(3)
    x, xg = pair(rng, shape, dtype)
    x *= 3
    xg *= 3
    alpha, k = 0.3, 1.5
    y, scale = ops.lrn_forward.reference(x, size, alpha, beta, k)
    yg, scaleg = ops.lrn_forward(xg, size, alpha, beta, k)
    np.testing.assert_allclose(yg.get(), y, **tol(dtype))
    np.testing.assert_allclose(scaleg.get(), scale, **tol(dtype))
    d, dg = pair(rng, shape, dtype)
    np.testing.assert_allclose(ops.lrn_backward(dg, xg, yg, scaleg, size, alpha, beta).get(),
                               ops.lrn_backward.reference(d, x, y, scale, size, alpha, beta),
                               **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_dropout_sgd_match_numpy(dtype):
    rng = np.random.default_rng(4)
    x, xg = pair(rng, (4, 5, 6, 7), dtype)
    np.testing.assert_array_equal(ops.relu_forward(xg).get(), ops.relu_forward.reference(x))
    y = ops.relu_forward.reference(x)
    d, dg = pair(rng, x.shape, dtype)
    np.testing.assert_array_equal(ops.relu_backward(dg, cp.asarray(y)).get(),
                                  ops.relu_backward.reference(d.copy(), y))
    xi = xg.copy()
    assert ops.relu_forward(xi, True) is xi and bool((xi >= 0).all())
    mask = (rng.random(x.shape) > 0.5).astype(dtype)
    np.testing.assert_allclose(ops.dropout_apply(xg, cp.asarray(mask), 2.0).get(),
                               ops.dropout_apply.reference(x, mask, 2.0), **tol(dtype))
    w, g, v = (rng.standard_normal(1000).astype(dtype) for _ in range(3))
    wg, gg, vg = cp.asarray(w), cp.asarray(g), cp.asarray(v)
    ops.sgd_update.reference(w, g, v, 0.01, 0.9, 0.001)
    ops.sgd_update(wg, gg, vg, 0.01, 0.9, 0.001)
    np.testing.assert_allclose(wg.get(), w, **tol(dtype))
    np.testing.assert_allclose(vg.get(), v, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.5, 0.3])
def test_dropout_mask_identical_on_both_backends(dtype, p):
    x = np.zeros((50, 4097), dtype)
    key = ops.CounterRNG(5).next_key()
    expected = ops.dropout_mask.reference(x, key, p)
    np.testing.assert_array_equal(ops.dropout_mask(cp.asarray(x), key, p).get(), expected)
    # an F-ordered input (what the fc layers return) gets the same mask
    np.testing.assert_array_equal(ops.dropout_mask(cp.asfortranarray(cp.asarray(x)), key, p).get(), expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k", [(7, 2), (50, 3), (5, 1000)])
def test_softmax_cross_entropy_matches_numpy(n, k, dtype):
    rng = np.random.default_rng(5)
    z, zg = pair(rng, (n, k), dtype)
    z *= 5
    zg *= 5
    labels = rng.integers(0, k, n)
    w = rng.random(k).astype(dtype) + 0.5
    loss, d = ops.softmax_cross_entropy.reference(z, labels, w)
    lossg, dg = ops.softmax_cross_entropy(zg, cp.asarray(labels), cp.asarray(w))
    assert float(lossg) == pytest.approx(float(loss), rel=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(dg.get(), d, **tol(dtype))


@pytest.mark.parametrize("variant", ["caffe", "torchvision"])
def test_whole_network_gpu_matches_cpu(variant):
    """One training step of a small AlexNet in float64 on both backends: same loss, grads, weights."""
    from alexnet_np import SGD, AlexNet, SoftmaxCrossEntropy, set_backend
    from alexnet_np.backend import to_numpy

    widths = (8, 12, 12, 12, 8, 16, 16)
    nets = {}
    for name in ("numpy", "cupy"):
        set_backend(name)
        try:
            nets[name] = AlexNet(3, variant=variant, input_size=99, widths=widths, init="he",
                                 seed=3, dtype=np.float64)
        finally:
            set_backend("numpy")
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 3, 99, 99))
    labels = np.array([0, 1, 2, 1])
    out = {}
    for name, net in nets.items():
        xin = cp.asarray(x) if name == "cupy" else x
        opt = SGD(net, base_lr=0.01)
        loss, d = SoftmaxCrossEntropy()(net.forward(xin, train=True), labels)
        net.backward(d)
        grads = {k: to_numpy(v).copy() for k, v in net.grads.items()}
        opt.step()
        out[name] = (float(loss), grads, {k: to_numpy(v) for k, v in net.params.items()})
    assert out["cupy"][0] == pytest.approx(out["numpy"][0], rel=1e-10)
    for k in out["numpy"][1]:
        np.testing.assert_allclose(out["cupy"][1][k], out["numpy"][1][k], rtol=1e-8, atol=1e-10,
                                   err_msg=k)
        np.testing.assert_allclose(out["cupy"][2][k], out["numpy"][2][k], rtol=1e-10, atol=1e-12,
                                   err_msg=k)
