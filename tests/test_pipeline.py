"""The study's orchestration: scenarios, balancing, splits, training resume, the incremental
comparison, and an end-to-end smoke run of run.py on a tiny synthetic cohort."""
import csv
import json
import os

import h5py
import numpy as np
import pytest

from alexnet_np import SGD, AlexNet, backend
from pipeline import evaluate
from pipeline.data import ImageSet, split_holdout
from pipeline.scenarios import SCENARIOS, balance, get_scenario, scenario_labels
from pipeline.train import TrainingDiverged, batch_indices, train

MINI = (8, 12, 12, 12, 8, 16, 16)


# ----------------------------------------------------------------------------- scenarios
def test_scenario_mapping_matches_the_paper():
    labels = np.array([0, 1, 2])  # negative, recalled-benign, malignant
    expect = {"malignant-vs-rest": [0, 0, 1], "malignant-vs-negative": [0, -1, 1],
              "malignant-vs-benign": [-1, 0, 1], "negative-vs-benign": [0, 1, -1],
              "benign-vs-rest": [0, 1, 0], "triple": [0, 1, 2]}
    assert set(expect) == set(SCENARIOS)
    for name, want in expect.items():
        assert scenario_labels(get_scenario(name), labels).tolist() == want, name
    with pytest.raises(ValueError, match="unknown scenario"):
        get_scenario("benign-vs-malignant")


def test_balance_gives_equal_classes_and_merged_classes_draw_equally():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    rng = np.random.default_rng(0)
    idx, y = balance(get_scenario("malignant-vs-rest"), labels, np.arange(100), rng)
    assert np.bincount(y).tolist() == [20, 20]
    rest = labels[idx[y == 0]]
    assert np.bincount(rest, minlength=3).tolist() == [10, 10, 0]  # half negative, half benign
    # Table 1: every scenario but negative-vs-benign has the smallest label's count per class, benign-vs-rest
    # too (30 benign images could face 15 negative + 15 malignant, but the paper's counts are the malignant 20)
    idx, y = balance(get_scenario("benign-vs-rest"), labels, np.arange(100), rng)
    assert np.bincount(y).tolist() == [20, 20]  # 10 negative + 10 malignant vs 20 benign
    assert np.bincount(labels[idx[y == 0]], minlength=3).tolist() == [10, 0, 10]
    idx, y = balance(get_scenario("triple"), labels, np.arange(100), rng)
    assert np.bincount(y).tolist() == [20, 20, 20] and len(np.unique(idx)) == 60
    with pytest.raises(ValueError, match="no images"):
        balance(get_scenario("malignant-vs-negative"), labels, np.arange(50), rng)


def test_balance_is_deterministic_for_a_seed():
    labels = np.random.default_rng(1).integers(0, 3, 200)
    a = balance(get_scenario("triple"), labels, np.arange(200), np.random.default_rng(5))
    b = balance(get_scenario("triple"), labels, np.arange(200), np.random.default_rng(5))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


# ----------------------------------------------------------------------------- splits
def _toy_set(n_patients=60, seed=0, size=67, name="ffdm"):
    rng = np.random.default_rng(seed)
    plabel = rng.integers(0, 3, n_patients)
    pid = np.repeat([f"{name}:P{i}" for i in range(n_patients)], 4)
    labels = np.repeat(plabel, 4)
    n = len(labels)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    images[labels == 2, 20:40, 20:40] = 255  # a learnable "lesion"
    return ImageSet(name, images, labels.astype(np.int64), pid, np.zeros(n, np.int8),
                    np.array([f"img{i}.png" for i in range(n)]), np.full(n, name), {})


def test_holdout_split_is_patient_level_and_per_source():
    ds = ImageSet.concat("combined", [_toy_set(40, 0, name="ffdm"), _toy_set(40, 1, name="ddsm")])
    tr, te = split_holdout(ds, 0.25, seed=3)
    assert not set(ds.patient_id[tr]) & set(ds.patient_id[te])
    assert len(tr) + len(te) == len(ds)
    for src in ("ffdm", "ddsm"):  # both datasets appear on the test side
        assert np.any(ds.source[te] == src)
    tr2, te2 = split_holdout(ds, 0.25, seed=3)
    assert np.array_equal(te, te2)


# ----------------------------------------------------------------------------- training
def test_batch_order_is_a_function_of_seed_and_iteration():
    a = [batch_indices(10, 4, 7, t) for t in range(6)]
    b = [batch_indices(10, 4, 7, t) for t in range(6)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    first_epoch = np.concatenate(a)[:10]
    assert sorted(first_epoch.tolist()) == list(range(10))  # each image once per epoch


def _train_run(tmp_path, name, iters, kill_at=None):
    ds = _toy_set(30, size=67)
    idx = np.flatnonzero(ds.labels != 1)
    y = (ds.labels[idx] == 2).astype(np.int64)
    net = AlexNet(2, input_size=67, widths=MINI, init="he", seed=0)
    opt = SGD(net, base_lr=0.01, stepsize=5)
    kwargs = dict(iters=iters, batch_size=8, seed=1, mean=np.float32(128), scale=1 / 64,
                  checkpoint_path=tmp_path / f"{name}.h5", log_path=tmp_path / f"{name}.csv",
                  checkpoint_every=3, progress=False)
    if kill_at is not None:
        real_step = opt.step

        def step():
            if opt.iteration == kill_at:
                raise KeyboardInterrupt  # the run is killed mid-way
            real_step()
        opt.step = step
        with pytest.raises(KeyboardInterrupt):
            train(net, opt, ds.images, idx, y, **kwargs)
        net = AlexNet(2, input_size=67, widths=MINI, init="he", seed=0)  # a fresh process
        opt = SGD(net, base_lr=0.01, stepsize=5)
    train(net, opt, ds.images, idx, y, **kwargs)
    return net, tmp_path / f"{name}.csv"


def test_resume_after_kill_gives_the_same_weights(tmp_path):
    straight, _ = _train_run(tmp_path, "straight", iters=10)
    resumed, log = _train_run(tmp_path, "resumed", iters=10, kill_at=7)
    for k in straight.params:
        np.testing.assert_array_equal(straight.params[k], resumed.params[k], err_msg=k)
    with open(log) as f:
        its = [int(r["iteration"]) for r in csv.DictReader(f)]
    assert its == list(range(10))  # no duplicated or missing log rows


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point of the test
def test_diverging_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path):
    ds = _toy_set(20, size=67)
    idx = np.arange(len(ds))
    net = AlexNet(3, input_size=67, widths=MINI, init="he")
    opt = SGD(net, base_lr=1e4, momentum=0.9)
    with pytest.raises(TrainingDiverged, match="smaller --lr"):
        train(net, opt, ds.images, idx, ds.labels[idx], iters=50, batch_size=8, seed=0, mean=128.0, scale=1 / 64,
              checkpoint_path=tmp_path / "c.h5", log_path=tmp_path / "l.csv", checkpoint_every=1,
              progress=False)
    assert (tmp_path / "c.h5").exists()
    with h5py.File(tmp_path / "c.h5") as f:
        assert all(np.isfinite(f[k][()]).all() for k in ("conv1/weight", "fc8/weight"))


def test_a_loss_that_explodes_and_comes_back_stops_the_run(tmp_path, monkeypatch):
    """One minibatch at 1e27 then ordinary losses again (seen in a real run that ended at AUC 0.500):
    the rule (loss > 1000 ln C) stops training at that minibatch, naming it."""
    import pipeline.train as train_module
    from alexnet_np import SoftmaxCrossEntropy

    class SpikeOnce(SoftmaxCrossEntropy):
        calls = 0

        def __call__(self, logits, labels):
            loss, grad = super().__call__(logits, labels)
            SpikeOnce.calls += 1
            return (1e27 if SpikeOnce.calls == 4 else loss), grad
    monkeypatch.setattr(train_module, "SoftmaxCrossEntropy", SpikeOnce)
    ds = _toy_set(20, size=67)
    idx = np.flatnonzero(ds.labels != 1)
    net = AlexNet(2, input_size=67, widths=MINI, init="he")
    with pytest.raises(TrainingDiverged, match=r"1e\+27 at iteration 3 .*above 693 = 1000 ln 2"):
        train(net, SGD(net, base_lr=0.001), ds.images, idx, (ds.labels[idx] == 2).astype(np.int64), iters=8,
              batch_size=8, seed=0, mean=128.0, scale=1 / 64, checkpoint_path=tmp_path / "c.h5",
              log_path=tmp_path / "l.csv", checkpoint_every=2, progress=False)
    assert SpikeOnce.calls == 4  # it stopped at the spike, not later


# ----------------------------------------------------------------------------- evaluation
def test_paired_comparison_uses_the_same_cases():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    good = y + rng.normal(0, 0.6, 100)
    bad = y + rng.normal(0, 2.0, 100)
    cmp = evaluate.compare_paired(y, good, bad)
    assert cmp.auc > cmp.baseline_auc and 0 <= cmp.p_delong < 0.05
    same = evaluate.compare_paired(y, good, good)
    assert same.p_delong == 1.0


def test_binary_metrics_fields_and_patient_ci_is_wider():
    rng = np.random.default_rng(2)
    pid = np.repeat(np.arange(40), 4)
    y = np.repeat(rng.permutation([0, 1] * 20), 4)
    patient_effect = np.repeat(rng.normal(0, 1, 40), 4)
    score = y + patient_effect + rng.normal(0, 0.2, 160)
    m = evaluate.binary_metrics(y, score, pid, n_boot=500)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(m.ci95_bootstrap_patient) > width(m.ci95_bootstrap)
    assert m.ci95_delong[0] < m.auc < m.ci95_delong[1]
    assert m.operating_point.sensitivity >= 0.869 and m.operating_point.target_sensitivity == 0.869


# ----------------------------------------------------------------------------- configuration
def test_resolve_config_applies_the_preset_rules():
    from pipeline.config import PRESETS, resolve_config
    demo = PRESETS["demo"]
    cpu = resolve_config("demo", {"iters": 7, "lr": None}, "cpu")
    assert (cpu.iters, cpu.lr, cpu.input_size, cpu.augment_shift) == (7, demo["lr"], demo["input_size"],
                                                                      demo["augment_shift"])
    gpu = resolve_config("demo", {}, "gpu")  # a GPU affords the paper's input size, with shifts scaled to it
    assert (gpu.input_size, gpu.augment_shift, gpu.device) == (demo["gpu_input_size"], demo["gpu_augment_shift"], "gpu")
    assert resolve_config("demo", {"input_size": 67}, "gpu").input_size == 67  # an explicit size wins
    assert resolve_config("demo", {"scenarios": ["all"]}, "cpu").scenarios == list(SCENARIOS)


def test_pretrained_weights_get_their_input_scale_unless_given(tmp_path):
    from alexnet_np import save_weights
    from pipeline.config import resolve_config
    save_weights(AlexNet(2, input_size=67, widths=MINI), tmp_path / "w.h5", mean=(1.0, 1.0, 1.0), source="test")
    base = {"input_size": 67, "widths": list(MINI), "pretrained": str(tmp_path / "w.h5")}
    assert resolve_config("demo", base, "cpu").input_scale == 1.0
    assert resolve_config("demo", dict(base, input_scale=0.5), "cpu").input_scale == 0.5
    assert resolve_config("demo", {}, "cpu").input_scale == 1 / 512
    # weights that record the scale they were trained with (the stand-in) get it
    from alexnet_np.weights import write_weights
    net = AlexNet(2, input_size=67, widths=MINI)
    write_weights(tmp_path / "s.h5", net.params, "caffe", 67, mean=(1.0,) * 3, source="test", input_scale=1 / 512)
    assert resolve_config("demo", dict(base, pretrained=str(tmp_path / "s.h5")), "cpu").input_scale == 1 / 512
    assert resolve_config("demo", dict(base, pretrained=str(tmp_path / "s.h5"), input_scale=0.25),
                          "cpu").input_scale == 0.25


def test_demo_fine_tunes_the_committed_stand_in_unless_told_otherwise(tmp_path):
    """The demo's default is the stand-in (full-width caffe nets only, said in the departures);
    'none' trains from scratch; ImageNet-unit weights get the paper's fine-tuning lr, not the demo's."""
    from alexnet_np import save_weights
    from alexnet_np.weights import weights_info
    from pipeline.config import PAPER, PRESETS, STANDIN_WEIGHTS, UserError, deviations, resolve_config
    assert STANDIN_WEIGHTS.stat().st_size <= 10 * 2 ** 20    # committed, at most 10 MB
    info = weights_info(STANDIN_WEIGHTS)
    assert "standin" in info and info["input_scale"] == PRESETS["demo"]["input_scale"]
    assert info["pretrain_accuracy"] > 5 * info["pretrain_chance"]
    cfg = resolve_config("demo", {}, "cpu")
    assert cfg.pretrained == str(STANDIN_WEIGHTS) and cfg.input_scale == 1 / 512 and cfg.new_layer_lr_mult == 1.0
    said = " ".join(deviations(cfg))
    assert "NOT on ImageNet" in said and "stand-in" in said and "1x the lr" in said and "first 100 iterations" in said
    assert "findings drawn magnified 2x" in said and "grains drawn 1.5x their real size (0.15-1.3 mm), 3x with" in said
    assert resolve_config("demo", {"finding_scale": 0.5}, "cpu").finding_scale == 0.5
    with pytest.raises(UserError, match="--finding-scale 0: expected a value above 0"):
        resolve_config("demo", {"finding_scale": 0}, "cpu")
    assert "magnified" not in " ".join(deviations(resolve_config("paper", {}, "cpu")))
    scratch = resolve_config("demo", {"pretrained": "none"}, "cpu")
    assert scratch.pretrained is None and scratch.input_scale == 1 / 512 and scratch.lr == PRESETS["demo"]["lr"]
    assert "trained from scratch" in " ".join(deviations(scratch))
    mini = resolve_config("demo", {"widths": list(MINI), "input_size": 67}, "cpu")
    assert mini.pretrained is None and "fit only the full-width" in " ".join(deviations(mini))
    assert resolve_config("paper", {}, "cpu").pretrained is None
    save_weights(AlexNet(2, input_size=67, widths=MINI), tmp_path / "w.h5", mean=(1.0, 1.0, 1.0), source="test")
    imagenet = resolve_config("demo", {"pretrained": str(tmp_path / "w.h5"), "widths": list(MINI), "input_size": 67},
                              "cpu")
    assert (imagenet.input_scale, imagenet.lr, imagenet.weight_decay, imagenet.new_layer_lr_mult) == (
        1.0, PAPER["lr"], PAPER["weight_decay"], 10.0)
    given = resolve_config("demo", {"pretrained": str(tmp_path / "w.h5"), "widths": list(MINI), "input_size": 67,
                                    "lr": 1e-5}, "cpu")
    assert given.lr == 1e-5


@pytest.mark.parametrize("entry", ["import run", "import pipeline.config", "from pipeline.report import write_report",
                                   "import pipeline.scenarios"])
def test_openblas_spin_is_set_before_numpy_loads_whatever_is_imported_first(entry):
    """OpenBLAS reads OPENBLAS_THREAD_TIMEOUT when NumPy loads it: the variable must already be set then."""
    import os
    import subprocess
    import sys
    spy = ("import os, sys\n"
           "class Spy:\n"
           "    def find_spec(self, name, path=None, target=None):\n"
           "        if name == 'numpy' and 'numpy' not in sys.modules:\n"
           "            print('at numpy:', os.environ.get('OPENBLAS_THREAD_TIMEOUT'))\n"
           "        return None\n"
           "sys.meta_path.insert(0, Spy())\n" + entry + "\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    got = subprocess.run([sys.executable, "-c", spy], capture_output=True, text=True, env=env, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert got.stdout.splitlines()[0] == "at numpy: 4", got.stdout + got.stderr


# ----------------------------------------------------------------------------- end to end
def _run(tmp_path, *extra):
    import run
    out = tmp_path / "run"
    argv = ["--patients", "ffdm=30", "ddsm=30", "--iters", "4", "--pretrain-iters", "3", "--input-size", "67",
            "--widths", "8", "12", "12", "12", "8", "16", "16", "--batch-size", "8", "--lr", "0.001",
            "--n-boot", "50", "--out", str(out), "--cache-dir", str(tmp_path.parent / "cache"), "--device", "cpu",
            "--no-progress", "--workers", "2", "--checkpoint-every", "2", *extra]
    assert run.main(argv) == 0
    return out, argv


def test_run_py_end_to_end_every_experiment(tmp_path):
    """Every experiment with a binary and the triple scenario at 4 iterations each: every output
    must exist and parse; a rerun without --resume refuses, with --resume reuses every model."""
    import run
    out, argv = _run(tmp_path, "--scenario", "malignant-vs-negative", "triple", "--experiment", "all",
                     "--test-fraction", "0.25")
    res = json.loads((out / "results.json").read_text())
    runs = res["runs"]
    assert {(r["experiment"], r["scenario"]) for r in runs} == {
        (e, s) for e in ("ffdm", "ddsm", "combined", "incremental") for s in ("malignant-vs-negative", "triple")}
    for r in runs:
        assert 0.0 <= r["auc"] <= 1.0 and r["n_test"] > 0 and r["n_train"] > 0
        if r["scenario"] == "triple":
            assert len(r["triple"]["pairs"]) == 3 and r["binary"] is None
            assert r["auc"] == pytest.approx(np.mean([p["auc"] for p in r["triple"]["pairs"]]))
        else:
            assert r["auc"] == r["binary"]["auc"] and r["triple"] is None
            assert len(r["binary"]["ci95_bootstrap_patient"]) == 2
            assert 0 <= r["binary"]["operating_point"]["specificity"] <= 1
        if r["experiment"] == "incremental":
            assert 0 <= r["incremental"]["baseline_auc"] <= 1
            assert (r["incremental"]["p_delong"] is None) == (r["scenario"] == "triple")
        else:
            assert r["incremental"] is None
        assert r["cv"] is None  # the demo runs no CV, and says so
    assert res["config"]["iters"] == 4 and res["environment"]["backend"] == "numpy"
    assert {"conv_forward", "im2col"} <= {u["op"] for u in res["environment"]["kernels_used"]}  # what ran, recorded
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(r["n_test"] for r in runs)  # the test images of every reported model
    assert {r["y_true"] for r in rows if r["scenario"] == "triple"} == {"0", "1", "2"}
    report = (out / "report.md").read_text()
    assert "What differs from the paper" in report and "paper AUC" in report and "Incremental" in report
    assert "Kernels that ran" in report
    for fig in ("roc_ffdm.png", "roc_combined.png", "incremental.png", "training_ffdm.png", "roc_incremental.png"):
        assert (out / "figures" / fig).stat().st_size > 1000, fig
    assert run.main(argv) == 2  # the folder holds a run: an error naming --out, without --resume
    assert run.main(argv + ["--resume"]) == 0
    again = json.loads((out / "results.json").read_text())["runs"]
    assert [r["auc"] for r in again] == [r["auc"] for r in runs]  # the saved models were reused


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: no local workers to start")
def test_several_full_size_cpu_models_go_to_local_workers_unless_here(tmp_path):
    """Without --cluster, two full-size CPU models train on two one-thread local workers, on the
    same test sets as in this process (not bit for bit: one BLAS thread there, two here); --cluster here
    keeps them in this process."""
    import run
    base = ["--scenario", "malignant-vs-negative", "negative-vs-benign", "--patients", "ffdm=30", "--iters", "2",
            "--input-size", "67", "--batch-size", "4", "--n-boot", "20", "--device", "cpu", "--no-progress",
            "--pretrained", "none", "--cache-dir", str(tmp_path / "cache"), "--test-fraction", "0.25"]
    assert run.main(base + ["--out", str(tmp_path / "auto")]) == 0
    assert run.main(base + ["--out", str(tmp_path / "here"), "--cluster", "here"]) == 0
    auto, here = (json.loads((tmp_path / name / "environment.json").read_text()) for name in ("auto", "here"))
    assert auto["cluster"] == "Dask local (2 workers)" and here["cluster"] == "this process"
    assert [r["n_test"] for r in json.loads((tmp_path / "auto" / "results.json").read_text())["runs"]] == \
        [r["n_test"] for r in json.loads((tmp_path / "here" / "results.json").read_text())["runs"]]


def test_run_py_cross_validation_and_robustness(tmp_path):
    out, _ = _run(tmp_path, "--scenario", "malignant-vs-negative", "--experiment", "ffdm",
                  "--test-fraction", "0.2", "0.3", "--cv", "2")
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert sorted(r["test_fraction"] for r in runs) == [0.2, 0.3]
    for r in runs:
        assert r["cv"]["folds"] == 2 and len(r["cv"]["aucs"]) == 2 and np.isfinite(r["cv"]["sd"])
    assert (out / "figures" / "robustness.png").exists()
    assert "Robustness" in (out / "report.md").read_text()


def test_run_py_fine_tunes_from_pretrained_weights(tmp_path):
    """--pretrained loads conv1..fc7 and starts a fresh fc8 (same input size), with the file's mean."""
    from alexnet_np import save_weights
    donor = AlexNet(2, input_size=67, widths=MINI, init="he", seed=123)
    donor.params["conv1.weight"] /= 64  # like ImageNet weights, it takes 0-255 inputs (input scale 1)
    save_weights(donor, tmp_path / "imagenet_like.h5", mean=(100.0, 110.0, 120.0), source="test donor")
    out, _ = _run(tmp_path, "--scenario", "malignant-vs-negative", "--test-fraction", "0.25",
                  "--pretrained", str(tmp_path / "imagenet_like.h5"), "--lr", "0.00001")  # 0-255 inputs: small steps
    job = json.loads(h5py.File(out / "jobs/ffdm/malignant-vs-negative/tf0.25/main/predictions.h5")
                     .attrs["job"])
    assert job["pretrained"].endswith("imagenet_like.h5") and job["mean_pixel"] == pytest.approx(110.0)
    assert json.loads((out / "config.json").read_text())["input_scale"] == 1.0
    report = (out / "report.md").read_text()
    assert "no ImageNet weights" not in report


@pytest.mark.skipif(backend._import_cupy() is None, reason="CuPy with a CUDA GPU is not available: run.py "
                    "--device gpu is checked on a GPU machine (bash bench/gpu_session.sh)")
def test_run_py_on_the_gpu_matches_the_cpu(tmp_path):
    """run.py --device gpu end to end. Same seed, data order, augmentation and dropout masks as the
    CPU run (both backends draw the masks from the same counter-based stream), so the class
    probabilities agree up to float32 rounding in four SGD steps."""
    probs = {}
    try:
        for device in ("cpu", "gpu"):
            out, _ = _run(tmp_path / device, "--scenario", "malignant-vs-negative", "--test-fraction", "0.25",
                          "--augment-shift", "2", "--device", device)
            res = json.loads((out / "results.json").read_text())
            assert res["environment"]["backend"] == {"cpu": "numpy", "gpu": "cupy"}[device]
            with open(out / "predictions.csv") as f:
                probs[device] = np.array([[float(r["p0"]), float(r["p1"])] for r in csv.DictReader(f)])
    finally:
        backend.set_backend("numpy")
    assert probs["cpu"].shape == probs["gpu"].shape and len(probs["cpu"]) > 0
    np.testing.assert_allclose(probs["gpu"], probs["cpu"], rtol=0, atol=1e-3)
