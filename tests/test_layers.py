"""Gradient checks (float64 central differences) and reference forwards for every layer."""
import itertools

import numpy as np
import pytest

from alexnet_np import ops
from alexnet_np.gradcheck import check_layer, numeric_gradient, rel_error
from alexnet_np.layers import (Conv2d, Dropout, Flatten, Linear, LocalResponseNorm, MaxPool2d,
                               ReLU, SoftmaxCrossEntropy)

TOL = 1e-6


def f64(layer, rng):
    for k in layer.params:
        layer.params[k] = rng.standard_normal(layer.params[k].shape)
    return layer


# ----------------------------------------------------------------------------- naive references
def conv_naive(x, w, b, stride, pad, groups):
    """Direct convolution by explicit loops over output channels and kernel taps (test oracle)."""
    n, c, h, wd = x.shape
    k_out, cg, kh, kw = w.shape
    xp_ = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, k_out, ho, wo))
    kg = k_out // groups
    for o in range(k_out):
        g = o // kg
        for ci in range(cg):
            for i in range(kh):
                for j in range(kw):
                    out[:, o] += w[o, ci, i, j] * xp_[:, g * cg + ci,
                                                      i:i + stride * ho:stride, j:j + stride * wo:stride]
        out[:, o] += b[o]
    return out


def maxpool_naive(x, k, s, ceil_mode=True):
    n, c, h, w = x.shape
    ho, wo = ops.pool_out_size(h, k, s, 0, ceil_mode), ops.pool_out_size(w, k, s, 0, ceil_mode)
    out = np.empty((n, c, ho, wo))
    for p, q in itertools.product(range(ho), range(wo)):
        out[:, :, p, q] = x[:, :, p * s:min(p * s + k, h), q * s:min(q * s + k, w)].max(axis=(2, 3))
    return out


def lrn_naive(x, size, alpha, beta, k):
    n, c, h, w = x.shape
    out = np.empty_like(x)
    for ch in range(c):
        lo, hi = max(0, ch - size // 2), min(c, ch + size // 2 + 1)
        scale = k + alpha / size * (x[:, lo:hi] ** 2).sum(axis=1)
        out[:, ch] = x[:, ch] / scale ** beta
    return out


# ----------------------------------------------------------------------------- conv
CONV_CASES = [  # (N, C, H, W, K, k, stride, pad, groups)
    (2, 3, 7, 7, 4, 3, 1, 0, 1),
    (2, 4, 8, 7, 6, 3, 2, 1, 2),
    (1, 3, 15, 13, 2, 11, 4, 2, 1),
    (2, 4, 6, 6, 4, 5, 1, 2, 2),
    (3, 2, 5, 9, 3, 2, 3, 1, 1),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_forward_matches_direct_convolution(case):
    n, c, h, w, k_out, k, s, p, g = case
    rng = np.random.default_rng(1)
    layer = f64(Conv2d(c, k_out, k, stride=s, padding=p, groups=g), rng)
    x = rng.standard_normal((n, c, h, w))
    ref = conv_naive(x, layer.params["weight"], layer.params["bias"], s, p, g)
    np.testing.assert_allclose(layer.forward(x, train=False), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_gradients(case):
    n, c, h, w, k_out, k, s, p, g = case
    rng = np.random.default_rng(2)
    layer = f64(Conv2d(c, k_out, k, stride=s, padding=p, groups=g), rng)
    errs = check_layer(layer, rng.standard_normal((n, c, h, w)))
    assert set(errs) == {"x", "weight", "bias"}
    assert max(errs.values()) < TOL, errs


def test_col2im_is_the_adjoint_of_im2col():
    """<im2col(x), c> == <x, col2im(c)> for random x and c: the defining property of the backward."""
    rng = np.random.default_rng(3)
    for (n, c, h, w, _, k, s, p, _) in CONV_CASES:
        x = rng.standard_normal((n, c, h, w))
        cols = ops.im2col(x, k, k, s, p)
        cc = rng.standard_normal(cols.shape)
        lhs = np.sum(cols * cc)
        rhs = np.sum(x * ops.col2im(cc, x.shape, k, k, s, p))
        assert abs(lhs - rhs) < 1e-9 * max(1.0, abs(lhs))


def test_conv_without_input_grad_returns_none_but_fills_weights():
    rng = np.random.default_rng(4)
    layer = f64(Conv2d(3, 4, 3), rng)
    layer.needs_input_grad = False
    y = layer.forward(rng.standard_normal((2, 3, 5, 5)))
    assert layer.backward(np.ones_like(y)) is None
    assert layer.grads["weight"].shape == (4, 3, 3, 3)


def test_conv_rejects_bad_channels_and_groups():
    with pytest.raises(ValueError, match="divisible by groups"):
        Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="channels"):
        Conv2d(3, 4, 3).forward(np.zeros((1, 2, 5, 5), np.float32))


# ----------------------------------------------------------------------------- ReLU
def test_relu_forward_backward():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 5, 5))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink for the numeric check
    layer = ReLU()
    np.testing.assert_array_equal(layer.forward(x.copy()), np.maximum(x, 0))
    assert check_layer(layer, x)["x"] < TOL


def test_relu_inplace_overwrites_input():
    x = np.array([[-1.0, 2.0]])
    y = ReLU(inplace=True).forward(x)
    assert y is x and x[0, 0] == 0.0


# ----------------------------------------------------------------------------- LRN
@pytest.mark.parametrize("size,beta,c", [(5, 0.75, 8), (3, 0.6, 4), (5, 0.75, 3), (7, 1.0, 9)])
def test_lrn_forward_matches_caffe_formula(size, beta, c):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, c, 4, 3)) * 3
    alpha, k = 0.3, 1.5  # large alpha so that the normalization matters in the check
    y = LocalResponseNorm(size, alpha, beta, k).forward(x, train=False)
    np.testing.assert_allclose(y, lrn_naive(x, size, alpha, beta, k), rtol=1e-12)


@pytest.mark.parametrize("size,beta,c", [(5, 0.75, 8), (3, 0.6, 4), (5, 0.75, 3)])
def test_lrn_gradient(size, beta, c):
    rng = np.random.default_rng(7)
    layer = LocalResponseNorm(size, alpha=0.3, beta=beta, k=1.5)
    errs = check_layer(layer, rng.standard_normal((2, c, 4, 3)) * 2)
    assert errs["x"] < TOL, errs


def test_lrn_rejects_even_size():
    with pytest.raises(ValueError, match="odd"):
        LocalResponseNorm(4)


# ----------------------------------------------------------------------------- max pooling
@pytest.mark.parametrize("shape,k,s,ceil_mode", [((2, 3, 7, 7), 3, 2, True), ((2, 2, 8, 6), 3, 2, True),
                                                  ((1, 2, 8, 6), 3, 2, False), ((2, 2, 9, 10), 2, 2, True),
                                                  ((1, 3, 55, 55), 3, 2, True)])
def test_maxpool_forward_and_gradient(shape, k, s, ceil_mode):
    rng = np.random.default_rng(8)
    x = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float64) / 7.0  # no ties
    layer = MaxPool2d(k, s, ceil_mode=ceil_mode)
    np.testing.assert_array_equal(layer.forward(x, train=False), maxpool_naive(x, k, s, ceil_mode))
    if np.prod(shape) < 2000:
        assert check_layer(layer, x)["x"] < TOL


def test_maxpool_ceil_mode_output_sizes():
    # Caffe: 55 -> 27 -> 13 -> 6 in AlexNet; 8 -> 4 (ceil) where floor mode gives 3.
    assert [ops.pool_out_size(v, 3, 2) for v in (55, 27, 13, 8)] == [27, 13, 6, 4]
    assert ops.pool_out_size(8, 3, 2, 0, ceil_mode=False) == 3


def test_maxpool_ties_go_to_first_position_in_row_major_order():
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 0, 2] = x[0, 0, 1, 0] = x[0, 0, 2, 2] = 5.0  # three tied maxima
    layer = MaxPool2d(3, 2)
    layer.forward(x)
    dx = layer.backward(np.ones((1, 1, 1, 1)))
    expected = np.zeros_like(x)
    expected[0, 0, 0, 2] = 1.0
    np.testing.assert_array_equal(dx, expected)


def test_maxpool_overlapping_windows_accumulate():
    """With stride < kernel one input can be the max of two windows and gets both gradients."""
    x = np.zeros((1, 1, 5, 3))
    x[0, 0, 2, 1] = 1.0  # shared row 2 of windows 0 (rows 0-2) and 1 (rows 2-4)
    layer = MaxPool2d(3, 2)
    layer.forward(x)
    dx = layer.backward(np.array([[[[2.0]], [[3.0]]]]).reshape(1, 1, 2, 1))
    assert dx[0, 0, 2, 1] == 5.0 and dx.sum() == 5.0


# ----------------------------------------------------------------------------- dropout
def test_dropout_fixed_mask_gradient_and_scaling():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 6))
    layer = Dropout(0.5)
    layer.fixed_mask = (rng.random(x.shape) > 0.5).astype(np.float64)
    y = layer.forward(x.copy())
    np.testing.assert_allclose(y, x * layer.fixed_mask * 2.0)
    assert check_layer(layer, x)["x"] < TOL


def test_dropout_is_identity_at_test_time_and_keeps_expectation():
    layer = Dropout(0.5, rng=ops.CounterRNG(0))
    x = np.ones((200, 500), np.float32)
    assert layer.forward(x, train=False) is x
    y = layer.forward(x, train=True)
    assert set(np.unique(y)) == {0.0, 2.0}
    assert abs(y.mean() - 1.0) < 0.01
    with pytest.raises(ValueError):
        Dropout(1.0)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_mask_stream_statistics(p):
    """Keep rate 1 - p, no correlation between neighbours or between successive draws."""
    rng = ops.CounterRNG(123)
    x = np.zeros((400, 1000), np.float32)
    a = ops.dropout_mask(x, rng.next_key(), p)
    b = ops.dropout_mask(x, rng.next_key(), p)
    se = np.sqrt(p * (1 - p) / x.size)
    assert abs(a.mean() - (1 - p)) < 5 * se
    assert abs(np.corrcoef(a.ravel()[:-1], a.ravel()[1:])[0, 1]) < 0.01
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.01


def test_counter_rng_state_restores_the_same_masks():
    x = np.zeros((3, 50), np.float32)
    rng = ops.CounterRNG(7)
    rng.next_key()
    state = dict(rng.state)
    first = ops.dropout_mask(x, rng.next_key(), 0.5)
    other = ops.CounterRNG(0)
    other.set_state(state)
    np.testing.assert_array_equal(ops.dropout_mask(x, other.next_key(), 0.5), first)
    assert ops.CounterRNG(8).next_key() != ops.CounterRNG(7).next_key()


# ----------------------------------------------------------------------------- linear, flatten, loss
def test_linear_gradients():
    rng = np.random.default_rng(10)
    layer = f64(Linear(7, 5), rng)
    errs = check_layer(layer, rng.standard_normal((4, 7)))
    assert max(errs.values()) < TOL, errs
    x = rng.standard_normal((3, 7))
    np.testing.assert_allclose(layer.forward(x, False), x @ layer.params["weight"].T + layer.params["bias"])


def test_dropout_mask_does_not_depend_on_the_memory_layout():
    """The fc layers return F-ordered arrays; the mask of element [n, j] must be the same as for
    a C-ordered input (tests/test_cuda_kernels.py checks the CUDA twin the same way)."""
    x = np.zeros((5, 37), np.float32)
    key = ops.CounterRNG(3).next_key()
    np.testing.assert_array_equal(ops.dropout_mask(np.asfortranarray(x), key, 0.5),
                                  ops.dropout_mask(x, key, 0.5))


def test_flatten_round_trip():
    x = np.arange(24.0).reshape(2, 3, 2, 2)
    layer = Flatten()
    y = layer.forward(x)
    assert y.shape == (2, 12) and np.array_equal(y[1], x[1].ravel())
    assert layer.backward(y).shape == x.shape


@pytest.mark.parametrize("weights", [None, [1.0, 3.0, 0.5]])
def test_softmax_cross_entropy_value_and_gradient(weights):
    rng = np.random.default_rng(11)
    logits = rng.standard_normal((6, 3)) * 3
    labels = np.array([0, 1, 2, 2, 1, 0])
    lossf = SoftmaxCrossEntropy(weights)
    loss, d = lossf(logits, labels)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    w = np.ones(3) if weights is None else np.asarray(weights)
    expected = -(w[labels] * np.log(p[np.arange(6), labels])).sum() / w[labels].sum()
    assert abs(loss - expected) < 1e-12
    num = numeric_gradient(lambda: lossf(logits, labels)[0], logits)
    assert rel_error(d, num) < TOL


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    loss, d = SoftmaxCrossEntropy()(np.array([[1000.0, -1000.0], [0.0, 2000.0]]), np.array([0, 0]))
    assert np.isfinite(loss) and np.all(np.isfinite(d))
    assert abs(loss - 1000.0) < 1e-9  # second row: -log softmax = 2000, first ~0; mean 1000


def test_softmax_is_the_normalized_exponential_and_does_not_overflow():
    rng = np.random.default_rng(12)
    z = rng.standard_normal((5, 4)) * 4
    expected = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(ops.softmax(z), expected, rtol=1e-14)
    np.testing.assert_allclose(ops.softmax(z.T, axis=0), expected.T, rtol=1e-14)
    np.testing.assert_allclose(ops.log_softmax(z), np.log(expected), rtol=1e-13, atol=1e-14)
    p = ops.softmax(np.array([[1000.0, 999.0, -1000.0]], np.float32))
    assert p.dtype == np.float32
    np.testing.assert_allclose(p, [[1 / (1 + np.exp(-1.0)), 1 / (1 + np.e), 0.0]], rtol=1e-6)
    assert np.isfinite(ops.log_softmax(np.array([[0.0, 2000.0]]))).all()   # log p = -2000, not -inf


def test_pool_input_pads_where_ceil_mode_windows_overhang():
    x = np.arange(2 * 1 * 6 * 5, dtype=np.float32).reshape(2, 1, 6, 5)
    ready = ops.pool_input(x, 3, 2, True, -np.inf)      # ceil: Ho = ceil(3/2) + 1 = 3, Wo = 2
    assert (ready.ho, ready.wo) == (3, 2) and ready.x.shape == (2, 1, 7, 5)
    np.testing.assert_array_equal(ready.x[:, :, :6], x)
    assert np.all(ready.x[:, :, 6] == -np.inf)
    floor = ops.pool_input(x, 3, 2, False, -np.inf)      # floor: every window inside, no copy
    assert (floor.ho, floor.wo) == (2, 2) and floor.x is x


def test_softmax_cross_entropy_rejects_bad_labels():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):
        SoftmaxCrossEntropy()(np.zeros((2, 2)), np.array([0, 2]))
    with pytest.raises(ValueError, match="class_weights"):
        SoftmaxCrossEntropy([1.0])(np.zeros((2, 2)), np.array([0, 1]))
