"""The paper's design, read sentence by sentence, and what a wrong implementation would get wrong:

* the two arms of the incremental comparison are normalized alike (read from their model files);
* the combined experiment balances each source per class, then merges (equal FFDM/DDSM shares per
  class; Table 1's combined counts are the sums of the per-source ones);
* cross-validation chooses the training length and the reported model trains that long, without
  changing what the folds learn;
* the false-negative analyses run for experiments (iii) and (iv) as for (i);
* breast- and patient-level AUCs equal a hand computation;
* the radiologists' point is drawn only on the malignant-vs-negative panel.
"""
import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import run
from alexnet_np import AlexNet, save_weights
from pipeline import evaluate, modelfile, report
from pipeline.config import resolve_config
from pipeline.data import ImageSet
from pipeline.jobs import choose_iterations, job_info
from pipeline.study import Study

MINI = ["8", "12", "12", "12", "8", "16", "16"]


def _tiny(tmp_path, out, *extra):
    return ["--preset", "tiny", "--patients", "ffdm=60", "ddsm=60", "--iters", "12", "--pretrain-iters", "6",
            "--checkpoint-every", "4", "--n-boot", "50", "--test-fraction", "0.25", "--device", "cpu",
            "--no-progress", "--workers", "2", "--cache-dir", str(tmp_path.parent / "cache"), "--cluster", "here",
            "--out", str(out), *extra]


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    """Combined and incremental, fine-tuned from a (miniature) pretrained file, with the paper's
    false-negative designs and 2-fold cross-validation choosing the training length."""
    tmp = tmp_path_factory.mktemp("design")
    weights = tmp / "pretrained.h5"
    save_weights(AlexNet(2, input_size=67, widths=[int(w) for w in MINI], seed=3), weights,
                 mean=(100.0, 101.0, 102.0), source="test: a miniature pretrained network")
    out = tmp / "run"
    assert run.main(_tiny(tmp, out, "--experiment", "combined", "incremental", "--scenario", "malignant-vs-negative",
                          "--fn-analysis", "separate", "--cv", "2", "--cv-select", "iterations",
                          "--pretrained", str(weights))) == 0
    return out


def _card(out, key):
    return modelfile.read_card(Path(out) / "jobs" / key / "model.h5")


def test_the_incremental_arms_subtract_the_same_mean_with_pretrained_weights(pretrained_run):
    fine, base = (_card(pretrained_run, f"{e}/malignant-vs-negative/tf0.25/main") for e in ("incremental", "ffdm"))
    stage = _card(pretrained_run, "incremental/malignant-vs-negative/ddsm-pretrain")
    for card in (fine, base, stage):
        assert card.mean_rule == "pretrained-file"
        np.testing.assert_array_equal(card.mean, np.array([100.0, 101.0, 102.0], np.float32))


def test_the_incremental_arms_subtract_the_same_mean_from_scratch(tmp_path):
    out = tmp_path / "run"
    assert run.main(_tiny(tmp_path, out, "--experiment", "incremental", "--scenario", "malignant-vs-negative")) == 0
    fine, base = (_card(out, f"{e}/malignant-vs-negative/tf0.25/main") for e in ("incremental", "ffdm"))
    stage = _card(out, "incremental/malignant-vs-negative/ddsm-pretrain")
    assert fine.mean_rule == base.mean_rule == stage.mean_rule == "training-split"
    assert fine.mean.shape == (67, 67)
    np.testing.assert_array_equal(fine.mean, base.mean)          # the same FFDM training images
    assert not np.array_equal(fine.mean, stage.mean)             # the DDSM stage: its own images


def _sources_by_class(ds, idx, y):
    return {c: dict(zip(*np.unique(ds.source[idx[y == c]], return_counts=True))) for c in np.unique(y)}


def _synthetic_set(name, n_patients, seed):
    """Four views a patient, labels by patient (40% negative, 35% benign, 25% malignant)."""
    rng = np.random.default_rng(seed)
    plabel = rng.choice(3, n_patients, p=[0.4, 0.35, 0.25])
    n = 4 * n_patients
    return ImageSet(name, np.zeros((n, 3, 3), np.uint8), np.repeat(plabel, 4).astype(np.int64),
                    np.repeat([f"{name}:P{i}" for i in range(n_patients)], 4), np.zeros(n, np.int8),
                    np.array([f"{name}{k}.png" for k in range(n)]), np.full(n, name), {},
                    np.tile(["L", "L", "R", "R"], n_patients))


def test_combined_balances_each_source_then_merges(tmp_path):
    cfg = resolve_config("demo", {"progress": False, "experiments": ["all"]}, "cpu")
    sets = {"ffdm": _synthetic_set("ffdm", 90, 1), "ddsm": _synthetic_set("ddsm", 150, 2)}
    files = {}
    for name in sets:
        files[name] = tmp_path / f"{name}.h5"
        files[name].write_bytes(b"")
    study = Study(cfg, sets, tmp_path / "run", files, log=lambda *a: None)
    for scenario in ("malignant-vs-negative", "malignant-vs-rest", "negative-vs-benign", "triple"):
        combined, ffdm, ddsm = (study.plan(scenario, e, 0.1).main for e in ("combined", "ffdm", "ddsm"))
        ds = combined.data
        for idx, y, a, b in ((combined.train_idx, combined.train_y, ffdm.train_y, ddsm.train_y),
                             (combined.eval_sets["test"].index, combined.eval_sets["test"].label,
                              ffdm.eval_sets["test"].label, ddsm.eval_sets["test"].label)):
            shares = _sources_by_class(ds, idx, y)
            assert len({tuple(sorted(v.items())) for v in shares.values()}) == 1, (scenario, shares)
            # Table 1: the combined cells are the sums of the per-source cells
            assert np.bincount(y).tolist() == (np.bincount(a) + np.bincount(b)).tolist()


def test_cross_validation_chooses_the_training_length(pretrained_run):
    for exp in ("combined", "incremental"):
        base = pretrained_run / "jobs" / exp / "malignant-vs-negative" / "tf0.25"
        curves = []
        for k in (1, 2):
            with open(base / f"cv{k}" / "val_curve.csv", newline="") as f:
                rows = list(csv.DictReader(f))
            assert [int(r["iteration"]) for r in rows] == [4, 8, 12]
            curves.append({"iteration": [int(r["iteration"]) for r in rows], "auc": [float(r["auc"]) for r in rows]})
        mean = np.mean([c["auc"] for c in curves], axis=0)
        chosen = [4, 8, 12][int(np.argmax(mean))]
        main = job_info(base / "main" / "predictions.h5")
        assert main["iters"] == chosen
        with open(base / "main" / "train_log.csv", newline="") as f:
            assert len(list(csv.DictReader(f))) == chosen
        rec = next(r for r in json.loads((pretrained_run / "results.json").read_text())["runs"] if r["experiment"] == exp)
        assert rec["cv"]["selected_iteration"] == chosen and rec["cv"]["curve_iterations"] == [4, 8, 12]
        assert rec["cv"]["curve_mean"] == pytest.approx(mean.tolist())
        # the false-negative models of the cell train as long as the reported one
        assert job_info(base / "fn" / "predictions.h5")["iters"] == chosen
    assert "![cross-validation curves, combined](figures/cv_combined.png)" in (pretrained_run / "report.md").read_text()


def test_choose_iterations_takes_the_best_mean_and_the_earliest_tie():
    curves = [{"iteration": [10, 20, 30], "auc": [0.6, 0.8, 0.7]}, {"iteration": [10, 20, 30], "auc": [0.7, 0.6, 0.7]}]
    assert choose_iterations(curves) == 20          # means 0.65, 0.70, 0.70: the earliest of the ties
    with pytest.raises(RuntimeError, match="different iterations"):
        choose_iterations([curves[0], {"iteration": [10, 20], "auc": [0.5, 0.5]}])


def test_scoring_the_folds_at_checkpoints_does_not_change_what_they_learn(tmp_path):
    outs = {}
    for select in ("none", "iterations"):
        outs[select] = tmp_path / select
        assert run.main(_tiny(tmp_path, outs[select], "--scenario", "malignant-vs-negative", "--cv", "2",
                              "--cv-select", select, "--iters", "8")) == 0
    key = "jobs/ffdm/malignant-vs-negative/tf0.25/cv1/model.h5"
    with h5py.File(outs["none"] / key, "r") as a, h5py.File(outs["iterations"] / key, "r") as b:
        names = []
        a.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        assert {"conv1/weight", "fc8/bias", "model/mean"} <= set(names)
        for n in names:
            np.testing.assert_array_equal(a[n][()], b[n][()], err_msg=n)


def test_false_negative_analyses_run_for_experiments_iii_and_iv(pretrained_run):
    runs = json.loads((pretrained_run / "results.json").read_text())["runs"]
    for exp in ("combined", "incremental"):
        rec = next(r for r in runs if r["experiment"] == exp)
        assert rec["false_negative_analysis"]["mode"] == "separate"
        assert rec["false_negative_analysis"]["detection"]["n_images"] > 0
        assert len(rec["false_negative_halves"]["folds"]) == 2
    # the incremental false-negative models fine-tune from the DDSM stage, as the reported one
    fn = job_info(pretrained_run / "jobs/incremental/malignant-vs-negative/tf0.25/fn/predictions.h5")
    assert fn["init_weights"].endswith("incremental/malignant-vs-negative/ddsm-pretrain/model.h5")
    text = (pretrained_run / "report.md").read_text()
    assert "| combined | malignant-vs-negative |" in text and "| incremental | malignant-vs-negative |" in text


def test_breast_and_patient_aucs_equal_a_hand_computation():
    # patient A: left breast malignant (views 0.9, 0.5), right negative (0.2); B: both negative (0.3, 0.1 | 0.6);
    # C: left negative (0.4, 0.4); D: right malignant (0.7), left negative (0.35)
    pid = ["A", "A", "A", "B", "B", "B", "C", "C", "D", "D"]
    lat = ["L", "L", "R", "L", "L", "R", "L", "L", "R", "L"]
    y = [1, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    s = [0.9, 0.5, 0.2, 0.3, 0.1, 0.6, 0.4, 0.4, 0.7, 0.35]
    breasts = evaluate.aggregate_by_breast(y, s, pid, lat)
    assert breasts.key.tolist() == ["A\tL", "A\tR", "B\tL", "B\tR", "C\tL", "D\tR", "D\tL"]
    assert breasts.score.tolist() == pytest.approx([0.7, 0.2, 0.2, 0.6, 0.4, 0.7, 0.35])
    assert breasts.y.tolist() == [1, 0, 0, 0, 0, 1, 0]
    # breast AUC by hand: positives 0.7, 0.7 against negatives 0.2, 0.2, 0.6, 0.4, 0.35: all 10 pairs won
    breast, patient = evaluate.aggregated_aucs(y, s, pid, lat, n_boot=200)
    assert breast.auc == 1.0 and breast.n == 7 and breast.n_positive == 2
    patients = evaluate.aggregate_by_patient(breasts)
    assert patients.key.tolist() == ["A", "B", "C", "D"]
    assert patients.score.tolist() == pytest.approx([0.7, 0.6, 0.4, 0.7]) and patients.y.tolist() == [1, 0, 0, 1]
    assert patients.n_images.tolist() == [3, 3, 2, 2]
    assert patient.auc == 1.0 and patient.n == 4
    # B's right breast at 0.7 ties both positive patients: pairs (A,B) and (D,B) count 1/2, (A,C), (D,C) 1
    s2 = s[:5] + [0.7] + s[6:]
    _, tied = evaluate.aggregated_aucs(y, s2, pid, lat, n_boot=200)
    assert tied.auc == pytest.approx((0.5 + 1 + 0.5 + 1) / 4)


def test_the_radiologists_point_is_drawn_only_beside_malignant_vs_negative():
    def labels(records):
        fig = report.roc_figure(records, "ffdm", 0.25)
        return [t for ax in fig.axes for t in ax.get_legend_handles_labels()[1]]

    def record(scenario):
        return type("R", (), {"scenario": scenario, "binary": evaluate.BinaryMetrics(
            0.8, [0.7, 0.9], [0.7, 0.9], [0.7, 0.9], evaluate.OperatingPoint(0.869, 0.5, 0.9, 0.8),
            evaluate.RocCurve([0, 1], [0, 1])), "triple": None, "n_test": 20, "n_test_per_class": [10, 10]})()

    assert any(t.startswith("radiologists") for t in labels([record("malignant-vs-negative"), record("benign-vs-rest")]))
    assert not any(t.startswith("radiologists") for t in labels([record("benign-vs-rest"), record("negative-vs-benign")]))
