"""Winograd's F(2x2, 3x3) convolution (alexnet_np.winograd) against the direct definition,
its transforms against their adjoints, the Conv2d path that uses it against im2col,
a numeric gradient check, and the choice between the two algorithms."""
import numpy as np
import pytest

from alexnet_np import backend, winograd
from alexnet_np.backend import conv_algorithm, cpu_kernels_name, set_cpu_kernels, set_winograd
from alexnet_np.gradcheck import check_layer
from alexnet_np.layers import Conv2d


@pytest.fixture
def algorithm(monkeypatch):
    """Switch Conv2d between Winograd and im2col for one test; the settings return after."""
    monkeypatch.setattr(backend.RUNTIME, "winograd", backend.RUNTIME.winograd)
    previous = cpu_kernels_name()

    def use(name):
        set_cpu_kernels("fast")
        set_winograd(name == "winograd")
    yield use
    set_cpu_kernels(previous)


def correlate3x3(d, g):
    """The 2x2 outputs of a 3x3 correlation over a 4x4 tile, by the definition."""
    return np.array([[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(2)] for i in range(2)])


def test_matrices_compute_a_3x3_correlation():
    rng = np.random.default_rng(0)
    bt, g_, at = winograd.BT, winograd.G, winograd.AT
    for _ in range(20):
        d, g = rng.standard_normal((4, 4)), rng.standard_normal((3, 3))
        y = at @ ((g_ @ g @ g_.T) * (bt @ d @ bt.T)) @ at.T
        np.testing.assert_allclose(y, correlate3x3(d, g), rtol=0, atol=1e-13)
    # Small integers: every intermediate value is exact in binary floating point.
    d, g = rng.integers(-9, 10, (4, 4)).astype(float), rng.integers(-9, 10, (3, 3)).astype(float)
    np.testing.assert_array_equal(at @ ((g_ @ g @ g_.T) * (bt @ d @ bt.T)) @ at.T, correlate3x3(d, g))
    assert np.array_equal(winograd.GG.reshape(4, 4, 3, 3), np.einsum("ai,bj->abij", g_, g_))


SHAPES = [  # (N, C, H, W, K, pad, groups)
    (2, 4, 5, 7, 6, 1, 1),
    (3, 6, 8, 8, 4, 0, 2),
    (1, 2, 6, 5, 3, 2, 1),
    (2, 4, 13, 13, 4, 1, 2),
    (5, 3, 3, 3, 2, 1, 1),
    (1, 1, 1, 1, 1, 1, 1),   # one pixel: one tile, three quarters of it dropped
    (2, 6, 4, 9, 6, 1, 3),
]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_transforms_equal_their_adjoints(shape):
    """<T(a), b> = <a, T^T(b)> for the input, output and filter transforms: the backward
    functions are the transposes of the forward ones."""
    n, c, h, w, k, pad, groups = shape
    rng = np.random.default_rng(1)
    ho, wo = h + 2 * pad - 2, w + 2 * pad - 2
    tiles = winograd.tiles(ho) * winograd.tiles(wo) * n

    x, v = rng.standard_normal((n, c, h, w)), rng.standard_normal((16, tiles, c))
    assert np.vdot(winograd.input_transform(x, pad), v) == pytest.approx(
        np.vdot(x, winograd.input_transform_T(v, x.shape, pad)), rel=1e-12)

    mm, dy = rng.standard_normal((16, tiles, k)), rng.standard_normal((n, k, ho, wo))
    y = winograd.output_transform(mm, np.zeros(k), np.empty((n, k, ho, wo)))
    assert np.vdot(y, dy) == pytest.approx(np.vdot(mm, winograd.output_transform_T(dy)), rel=1e-12)

    wt = rng.standard_normal((k, c // groups, 3, 3))
    du = rng.standard_normal((16, groups, k // groups, c // groups))
    assert np.vdot(winograd.filter_transform(wt, groups), du) == pytest.approx(
        np.vdot(wt, winograd.filter_transform_T(du)), rel=1e-12)


def run_conv(conv, x, dy, train=True):
    y = conv.forward(x.copy(), train).copy()
    if not train:
        return (y,)
    dx = conv.backward(dy.copy())
    return y, dx.copy(), conv.grads["weight"].copy(), conv.grads["bias"].copy()


def make_conv(shape, dtype, seed=2):
    n, c, h, w, k, pad, groups = shape
    rng = np.random.default_rng(seed)
    conv = Conv2d(c, k, 3, 1, pad, groups, dtype=dtype)
    conv.params["weight"][...] = rng.standard_normal(conv.params["weight"].shape)
    conv.params["bias"][...] = rng.standard_normal(k)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    dy = rng.standard_normal((n, k, h + 2 * pad - 2, w + 2 * pad - 2)).astype(dtype)
    return conv, x, dy


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_conv2d_winograd_equals_im2col(shape, dtype, algorithm):
    conv, x, dy = make_conv(shape, dtype)
    results = {}
    for name in ("im2col", "winograd"):
        algorithm(name)
        assert conv_algorithm(x, 3, 1) == name
        results[name] = run_conv(conv, x, dy) + run_conv(conv, x, dy, train=False)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for what, a, b in zip(("y", "dx", "dW", "db", "y (eval)"), results["im2col"], results["winograd"]):
        assert b.dtype == dtype and b.shape == a.shape, what
        np.testing.assert_allclose(b, a, rtol=0, atol=tol * np.abs(a).max(), err_msg=what)


@pytest.mark.parametrize("shape", SHAPES[:4], ids=str)
def test_conv2d_winograd_gradient_check(shape, algorithm):
    algorithm("winograd")
    conv, x, _ = make_conv(shape, np.float64, seed=3)
    errors = check_layer(conv, x, eps=1e-5)
    assert set(errors) == {"x", "weight", "bias"}
    assert max(errors.values()) < 1e-8, errors


def test_other_layers_between_forward_and_backward_leave_the_backward_intact(algorithm):
    """Training keeps V in the layer's own buffer; other layers' forward and backward passes
    in between (shared scratch buffers, a V of the same shape) must not change what the
    backward computes."""
    algorithm("winograd")
    shape = (2, 4, 13, 13, 4, 1, 2)
    conv, x, dy = make_conv(shape, np.float64)
    other, x2, dy2 = make_conv(shape, np.float64, seed=7)
    expected = run_conv(conv, x, dy)
    conv.forward(x.copy(), True)
    run_conv(other, x2, dy2)
    other.forward(x2, False)
    dx = conv.backward(dy.copy())
    np.testing.assert_array_equal(dx, expected[1])
    np.testing.assert_array_equal(conv.grads["weight"], expected[2])


def test_training_reuses_the_layers_tile_buffer(algorithm):
    algorithm("winograd")
    conv, x, dy = make_conv((3, 4, 9, 9, 4, 1, 1), np.float32)
    run_conv(conv, x, dy)
    buffer = conv.buffers["winograd.v"]
    run_conv(conv, x, dy)
    assert conv.buffers["winograd.v"] is buffer
    run_conv(conv, x[:2], dy[:2])  # another batch size: a buffer of the new shape
    assert conv.buffers["winograd.v"].shape == (16, 25 * 2, 4)


def test_results_do_not_depend_on_the_thread_count(monkeypatch, algorithm):
    algorithm("winograd")
    conv, x, dy = make_conv((5, 6, 13, 13, 4, 1, 2), np.float32)
    before = run_conv(conv, x, dy)
    for threads in (1, 3, 7):
        monkeypatch.setattr(backend.RUNTIME, "threads", threads)
        for a, b in zip(run_conv(conv, x, dy), before):
            np.testing.assert_array_equal(a, b)


def test_which_convolutions_use_winograd(algorithm):
    x = np.zeros((1, 1, 5, 5), np.float32)
    algorithm("winograd")
    assert conv_algorithm(x, 3, 1) == "winograd"
    assert conv_algorithm(x, 5, 1) == "im2col"      # conv2: no F(2x2, 5x5) here
    assert conv_algorithm(x, 3, 2) == "im2col"      # F(2x2, 3x3) is for stride 1
    assert conv_algorithm(x, 11, 4) == "im2col"
    set_cpu_kernels("reference")                     # the readable reference is im2col
    assert conv_algorithm(x, 3, 1) == "im2col"
    set_cpu_kernels("fast")
    set_winograd(False)
    assert conv_algorithm(x, 3, 1) == "im2col"


def test_winograd_can_be_switched_off_by_the_environment(monkeypatch, algorithm):
    algorithm("winograd")  # the fast CPU kernels
    x = np.zeros((1, 1, 5, 5), np.float32)
    for value, expected in (("0", "im2col"), ("off", "im2col"), ("1", "winograd"), ("", "winograd")):
        monkeypatch.setenv("ALEXNET_NP_WINOGRAD", value)
        monkeypatch.setattr(backend.RUNTIME, "winograd", None)
        assert conv_algorithm(x, 3, 1) == expected, value


def test_strided_inputs_and_gradients(algorithm):
    """Views that are not C-contiguous (a slice, a transposed copy's transpose) give the same
    results as contiguous arrays."""
    algorithm("winograd")
    conv, x, dy = make_conv((3, 4, 9, 11, 6, 1, 2), np.float64)
    expected = run_conv(conv, x, dy)
    wide = np.zeros((3, 4, 9, 22))
    wide[:, :, :, ::2] = x
    x_view = wide[:, :, :, ::2]
    dy_view = np.ascontiguousarray(dy.transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0)
    assert not x_view.flags.c_contiguous and not dy_view.flags.c_contiguous
    y = conv.forward(x_view, True)
    dx = conv.backward(dy_view)
    np.testing.assert_allclose(y, expected[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(dx, expected[1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(conv.grads["weight"], expected[2], rtol=0, atol=1e-12)


def test_a_bad_winograd_setting_is_an_error_naming_the_variable(monkeypatch, algorithm):
    monkeypatch.setenv("ALEXNET_NP_WINOGRAD", "maybe")
    monkeypatch.setattr(backend.RUNTIME, "winograd", None)
    with pytest.raises(ValueError, match="ALEXNET_NP_WINOGRAD.*'maybe'"):
        conv_algorithm(np.zeros((1, 1, 5, 5), np.float32), 3, 1)
