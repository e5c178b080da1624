"""Attribution maps (pipeline/explain/) against their definitions written out with loops and
finite differences, on a miniature AlexNet; the model's activation-gradient hook; the pointing
game on hand-made maps; CPU vs GPU."""
import numpy as np

import data_prep
import pytest

from alexnet_np import AlexNet
from alexnet_np.backend import _import_cupy
from pipeline import explain

MINI = (4, 6, 6, 6, 4, 8, 8)  # conv1..conv5, fc6, fc7; at 67 px conv5's output is 4 x 3 x 3
SIZE = 67


def mini_net(seed=0, dtype=np.float64, num_classes=3):
    net = AlexNet(num_classes, input_size=SIZE, init="he", seed=seed, dtype=dtype, widths=MINI)
    rng = np.random.default_rng(seed + 10)
    for key, p in net.params.items():  # nonzero biases keep pre-activations off ReLU's kink at 0
        if key.endswith(".bias"):
            p[...] = rng.normal(0.0, 0.3, p.shape)
    # conv5's outputs off zero: a channel of ReLU zeros ties pool5's maximum, where the derivative
    # that finite differences see depends on the sign of the step
    net.params["conv5.bias"][...] += 1.0
    return net


def inputs(n=2, seed=1, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal((n, 3, SIZE, SIZE)).astype(dtype)


def tail(net, name, a):
    """The network from just after layer ``name`` to the logits, at test time."""
    names = [n for n, _ in net.layers]
    for _, layer in net.layers[names.index(name) + 1:]:
        a = layer.forward(a, train=False)
    return a


def numeric_grad_at(net, name, a, n, t, eps=1e-6):
    """d logit_t / dA for image n by central differences of the tail, one element at a time."""
    g = np.zeros(a.shape[1:])
    for idx in np.ndindex(*a.shape[1:]):
        up, down = a[n:n + 1].copy(), a[n:n + 1].copy()
        up[(0,) + idx] += eps
        down[(0,) + idx] -= eps
        g[idx] = (tail(net, name, up)[0, t] - tail(net, name, down)[0, t]) / (2 * eps)
    return g


def relu5_output(net, x):
    a = x
    for name, layer in net.layers:
        a = layer.forward(a, train=False)
        if name == "relu5":
            return a.copy()


# ----------------------------------------------------------------------------- the model's hook
def test_activation_gradient_matches_finite_differences_and_test_mode_logits():
    net = mini_net()
    x = inputs()
    seed = np.array([[0, 1, 0], [0, 0, 1]], float)
    r = net.activation_gradient(x, seed, "relu5")
    np.testing.assert_allclose(r.logits, net.forward(x, train=False), rtol=1e-12)  # dropout off
    np.testing.assert_allclose(r.activation, relu5_output(net, x), rtol=1e-12)
    for n, t in ((0, 1), (1, 2)):
        np.testing.assert_allclose(r.gradient[n], numeric_grad_at(net, "relu5", r.activation, n, t),
                                   rtol=1e-5, atol=1e-8)
    assert all(layer.cache is None for _, layer in net.layers[:10])  # caches below relu5 dropped


def test_activation_gradient_at_the_input_needs_conv1_switched_on_and_the_switch_is_restored():
    net = mini_net()
    x = inputs(1)
    seed = np.array([[1.0, 0, 0]])
    with pytest.raises(ValueError, match="needs_input_grad"):
        net.activation_gradient(x, seed, None)
    with explain.input_gradients(net):
        g = net.activation_gradient(x, seed, None).gradient
    assert net.layer("conv1").needs_input_grad is False
    rng = np.random.default_rng(3)
    for _ in range(4):  # a few random input elements against central differences
        c, i, j = rng.integers(3), rng.integers(SIZE), rng.integers(SIZE)
        up, down = x.copy(), x.copy()
        up[0, c, i, j] += 1e-6
        down[0, c, i, j] -= 1e-6
        num = (net.forward(up, train=False)[0, 0] - net.forward(down, train=False)[0, 0]) / 2e-6
        assert g[0, c, i, j] == pytest.approx(num, rel=1e-5, abs=1e-9)


def test_activation_gradient_rejects_a_wrong_seed_and_an_unknown_layer():
    net = mini_net()
    with pytest.raises(ValueError, match="seed must have"):
        net.activation_gradient(inputs(1), np.ones((1, 2)), "relu5")
    with pytest.raises(KeyError, match="no layer"):
        net.activation_gradient(inputs(1), np.ones((1, 3)), "relu9")


# ----------------------------------------------------------------------------- methods vs definitions
def test_grad_cam_against_finite_differences_and_per_channel_loops():
    net = mini_net()
    x = inputs()
    targets = [2, 0]
    maps = explain.grad_cam(net, x, targets)
    a = relu5_output(net, x)
    assert maps.shape == (2,) + a.shape[2:]
    for n, t in enumerate(targets):
        g = numeric_grad_at(net, "relu5", a, n, t)
        expected = np.zeros(a.shape[2:])
        for k in range(a.shape[1]):
            expected += g[k].mean() * a[n, k]
        np.testing.assert_allclose(maps[n], np.maximum(expected, 0), rtol=1e-5, atol=1e-8)
    assert maps.min() >= 0 and maps.max() > 0


def test_grad_cam_pp_against_finite_differences_and_loops():
    net = mini_net()
    x = inputs()
    maps = explain.grad_cam_pp(net, x, 1)
    a = relu5_output(net, x)
    for n in range(2):
        g = numeric_grad_at(net, "relu5", a, n, 1)
        expected = np.zeros(a.shape[2:])
        for k in range(a.shape[1]):
            s = a[n, k].sum()
            w = 0.0
            for i in range(a.shape[2]):
                for j in range(a.shape[3]):
                    if g[k, i, j] != 0:
                        alpha = g[k, i, j] ** 2 / (2 * g[k, i, j] ** 2 + s * g[k, i, j] ** 3 + 1e-6)
                        w += alpha * max(g[k, i, j], 0.0)
            expected += w * a[n, k]
        np.testing.assert_allclose(maps[n], np.maximum(expected, 0), rtol=1e-4, atol=1e-8)


def test_occlusion_against_a_brute_force_loop():
    net = mini_net()
    x = inputs()
    patch, stride, base = 20, 15, -0.5
    maps = explain.occlusion(net, x, [0, 2], patch, stride, base)
    starts = list(range(0, SIZE - patch + 1, stride))
    assert maps.shape == (2, len(starts), len(starts))
    for n, t in enumerate([0, 2]):
        p = net.predict_proba(x[n:n + 1])[0, t]
        for i, r in enumerate(starts):
            for j, c in enumerate(starts):
                occluded = x[n:n + 1].copy()
                occluded[:, :, r:r + patch, c:c + patch] = base
                assert maps[n, i, j] == pytest.approx(p - net.predict_proba(occluded)[0, t], abs=1e-6)


def test_integrated_gradients_completeness_within_one_percent_at_64_steps():
    """sum IG = logit(x) - logit(baseline). Each ReLU kink or pool5 switch crossed on the path costs
    the midpoint rule an O(1/m) error, large in a net of a few units: a net of widths 8..32 on
    smooth images, where a 4-step rule is off by several percent."""
    from scipy.ndimage import gaussian_filter
    net = AlexNet(2, input_size=SIZE, init="he", seed=0, widths=(8, 16, 16, 16, 16, 32, 32))
    rng = np.random.default_rng(10)
    for key, p in net.params.items():
        if key.endswith(".bias"):
            p[...] = rng.normal(0.0, 0.1, p.shape)
    gray = gaussian_filter(np.random.default_rng(0).standard_normal((3, 1, SIZE, SIZE)), (0, 0, 2, 2))
    x = np.repeat(gray / gray.std(), 3, axis=1).astype(np.float32)
    ig = explain.integrated_gradients(net, x, [0, 1, 0], baseline=0.0, steps=64)
    assert ig.attributions.shape == (3, SIZE, SIZE)
    assert np.all(np.abs(ig.delta) > 1.0)  # a real change of the logit to account for
    assert np.all(ig.relative_error < 0.01), ig.relative_error
    np.testing.assert_allclose(ig.total, ig.attributions.reshape(3, -1).sum(axis=1), rtol=1e-4)
    coarse = explain.integrated_gradients(net, x, [0, 1, 0], baseline=0.0, steps=4)
    assert coarse.relative_error.max() > 0.03
    x = inputs(3, dtype=np.float32)
    net = mini_net(dtype=np.float32)
    # one step: (x - x0) times the input gradient at the midpoint, summed over the channels
    one = explain.integrated_gradients(net, x, 0, steps=1)
    with explain.input_gradients(net):
        g = net.activation_gradient(x / 2, np.tile([[1.0, 0, 0]], (3, 1)), None).gradient
    np.testing.assert_allclose(one.attributions, (x * g).sum(axis=1), rtol=1e-5, atol=1e-6)


def test_input_gradient_is_the_channel_sum_of_the_input_gradient():
    net = mini_net()
    x = inputs(1)
    g = explain.input_gradient(net, x, 2)
    with explain.input_gradients(net):
        full = net.activation_gradient(x, np.array([[0, 0, 1.0]]), None).gradient
    np.testing.assert_allclose(g[0], full[0].sum(axis=0), rtol=1e-12)


def test_to_image_keeps_constants_and_linear_ramps_and_aligns_centres():
    assert np.allclose(explain.to_image(np.full((1, 3, 3), 2.5), (12, 9)), 2.5)
    ramp = np.arange(4, dtype=float)[None, :, None] * np.ones((1, 4, 4))
    up = explain.to_image(ramp, (8, 8))[0]
    # output row u samples the map at (u + 1/2) / 2 - 1/2, clamped to [0, 3]
    expected = np.clip((np.arange(8) + 0.5) / 2 - 0.5, 0, 3)
    np.testing.assert_allclose(up[:, 5], expected, rtol=1e-6)


# ----------------------------------------------------------------------------- pointing game
def _finding(row, col, radius, scale=(1.0, 1.0)):
    """One image's findings: a circle, in stored pixels, of ``radius`` original pixels."""
    original = data_prep.Finding("x.png", "mass", "malignant", "circle", (row,), (col,), float(radius))
    return [data_prep.StoredFinding("mass", "malignant", "circle", np.array([row], float), np.array([col], float),
                                    float(radius), scale, original)]


def test_pointing_game_on_hand_made_maps():
    size = 40
    breast = np.zeros((4, size, size), bool)
    breast[:, :, :20] = True  # the left half is breast: 800 pixels
    maps = np.zeros((4, size, size))
    maps[0, 10, 10] = 1.0      # on the finding: hit
    maps[1, 30, 5] = 1.0       # far from it: miss
    maps[2, 10, 16] = 1.0      # 6 px from the centre of a radius-3 finding: hit only with tolerance >= 3
    findings = [_finding(10, 10, 3), _finding(10, 10, 3), _finding(10, 10, 3), None]  # image 3: no finding
    strict = explain.pointing_game(maps, findings, breast, tolerance_px=0)
    assert (strict.n_images, strict.hits) == (3, 1)
    loose = explain.pointing_game(maps, findings, breast, tolerance_px=3)
    assert loose.hits == 2 and loose.hit_rate == pytest.approx(2 / 3)
    assert loose.p_value < strict.p_value  # more hits, at a chance level that grew less
    inside = (np.add.outer((np.arange(size) - 10.0) ** 2, (np.arange(size) - 10.0) ** 2) <= 9)
    assert strict.chance == pytest.approx(inside[:, :20].sum() / 800)
    assert strict.energy_share == pytest.approx(1 / 3)  # all of image 0's mass, none of the others'
    zero = explain.pointing_game(np.zeros((1, size, size)), [_finding(0, 0, 5)], breast[:1], 0)
    assert zero.hits == 0  # a map without a maximum does not point at the corner finding


def test_pointing_game_measures_distance_in_original_pixels_under_anisotropic_scaling():
    size = 40
    breast = np.ones((1, size, size), bool)
    m = np.zeros((1, size, size))
    m[0, 20, 28] = 1.0  # 8 stored columns right of the centre = 16 original pixels at 0.5 stored/original
    f = [_finding(20, 20, 10, scale=(1.0, 0.5))]
    assert explain.pointing_game(m, f, breast, 5).hits == 0   # 16 > 10 + 5
    assert explain.pointing_game(m, f, breast, 6).hits == 1   # 16 <= 10 + 6


# ----------------------------------------------------------------------------- sanity check, outputs
def test_cascading_randomization_restores_the_weights_and_its_curve_falls():
    net = mini_net(dtype=np.float32)
    before = {k: v.copy() for k, v in net.params.items()}
    x = inputs(3, dtype=np.float32)
    curve = explain.cascading_randomization(net, x, 0, "gradient", seed=5)
    assert curve.layers == ["fc8", "fc7", "fc6", "conv5", "conv4", "conv3", "conv2", "conv1"]
    assert len(curve.correlation) == 8 and all(-1 <= c <= 1 for c in curve.correlation)
    assert curve.correlation[-1] < 0.9  # every weight redrawn: the map must change
    for k, v in before.items():
        np.testing.assert_array_equal(net.params[k], v)


def test_explain_images_writes_one_overlay_per_image(tmp_path):
    net = mini_net(dtype=np.float32)
    x = inputs(2, dtype=np.float32)
    r = explain.explain_images(net, x, method="gradcam", out_dir=tmp_path, names=["a.dcm", "b.dcm"])
    assert r.maps.shape == (2, SIZE, SIZE) and list(r.target) == list(r.proba.argmax(axis=1))
    assert [p.name for p in r.paths] == ["a_gradcam.png", "b_gradcam.png"]
    assert all(p.stat().st_size > 1000 for p in r.paths)


def test_run_py_explain_reports_a_missing_run_folder(tmp_path, capsys):
    import run
    assert run.main(["explain", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: RUN_DIR") and "results.json" in err[0]


# ----------------------------------------------------------------------------- CPU vs GPU
cp = _import_cupy()


@pytest.mark.skipif(cp is None, reason="CuPy with a CUDA GPU is not available: the GPU maps are not "
                                       "compared with the CPU ones on this machine")
@pytest.mark.parametrize("method", explain.METHODS)
def test_every_method_gives_the_same_maps_on_cpu_and_gpu(method):
    from alexnet_np import backend
    cpu = mini_net()
    x = inputs()
    want, _ = explain.compute_maps(cpu, x, [1, 2], method, steps=8)
    previous = backend.backend_name()
    backend.set_backend("cupy")
    try:
        gpu = mini_net()
        got, _ = explain.compute_maps(gpu, cp.asarray(x), [1, 2], method, steps=8)
    finally:
        backend.set_backend(previous)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------- a finished run
def test_run_py_explain_on_a_tiny_run(tmp_path):
    """run.py on a tiny synthetic cohort, then run.py explain over it: the reloaded model must give
    the run's own probabilities (same weights, same mean image), the findings must map into the
    stored images, and every output must be written."""
    import json

    import run
    out = tmp_path / "run"
    # the cohort test_pipeline's runs use (same cache folder, size and seed): generated once per session
    common = ["--cache-dir", str(tmp_path.parent / "cache"), "--no-progress"]
    assert run.main(["--patients", "ffdm=30", "ddsm=30", "--iters", "3", "--input-size", "67",
                     "--widths", "8", "12", "12", "12", "8", "16", "16", "--batch-size", "8",
                     "--n-boot", "20", "--out", str(out), "--device", "cpu", "--workers", "2",
                     "--test-fraction", "0.3", *common]) == 0
    # the run itself ends with Grad-CAM: the report has its section, figure and pointing-game table
    report = (out / "report.md").read_text()
    assert "## Where the network looks" in report and "| gradcam |" in report and "Computed at the end" in report
    first = json.loads((out / "explain.json").read_text())["results"][0]
    assert (out / first["figure"]).is_file() and f"]({first['figure']})" in report
    assert "explain_s" in json.loads((out / "results.json").read_text())["timings"]
    assert run.main(["explain", str(out), "--methods", "gradcam", "gradient", "--randomization-images", "4",
                     "--device", "cpu", *common]) == 0
    res = json.loads((out / "explain.json").read_text())["results"][0]
    assert res["max_abs_proba_difference"] < 1e-5
    assert res["ground_truth"] is True
    pg = res["pointing_game"]["gradcam"]
    assert pg["n_images"] > 0 and 0 < pg["chance"] < 1 and 0 <= pg["hit_rate"] <= 1
    assert len(res["randomization"]["gradient"]["correlation"]) == 8
    assert (out / res["figure"]).stat().st_size > 5000
    md = (out / "explain.md").read_text()
    assert "| gradcam |" in md and "malignant-vs-negative" in md
