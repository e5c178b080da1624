"""report.md and its figures at the paper's scale, on a tiny grid's records (no training: the
records are built from random scores with pipeline.evaluate, as the study builds them)."""
import csv

import matplotlib.pyplot as plt
import numpy as np
import pytest

from pipeline import evaluate, report
from pipeline.config import resolve_config
from pipeline.evaluate import IntervalCancerDetection, PooledDetection
from pipeline.scenarios import SCENARIOS
from pipeline.experiments import FN_SCENARIOS
from pipeline.records import FalseNegativeAnalysis, FalseNegativeHalves, IncrementalComparison, ModelResult
from pipeline.train import LOG_FIELDS

FRACTIONS = (0.05, 0.10)
ITERS, LR_STEP = 30, 10


def _record(experiment, scenario, tf, seed):
    """A ModelResult whose test set grows with the test fraction (so every cell's counts differ)."""
    rng = np.random.default_rng(seed)
    sc = SCENARIOS[scenario]
    per_class = int(round(100 * tf))          # 5 or 10 test images per class
    y = np.repeat(np.arange(sc.num_classes), per_class)
    rec = ModelResult(scenario=scenario, experiment=experiment, test_fraction=tf,
                      job=f"{experiment}/{scenario}/tf{tf:g}/main", n_train=sc.num_classes * (200 - per_class),
                      n_test=len(y), n_train_per_class=[200 - per_class] * sc.num_classes,
                      n_test_per_class=[per_class] * sc.num_classes, n_test_patients=len(y) // 2)
    if sc.binary:
        rec.binary = evaluate.binary_metrics(y, y + rng.normal(0, 1, len(y)), np.arange(len(y)) // 2, n_boot=50)
    else:
        proba = rng.dirichlet(np.ones(3), len(y)) + np.eye(3)[y]
        rec.triple = evaluate.triple_metrics(y, proba / proba.sum(1, keepdims=True), sc.class_names)
    if experiment == "incremental":
        rec.incremental = IncrementalComparison(f"ffdm/{scenario}/tf{tf:g}/main", "DDSM only", rec.auc - 0.1,
                                                None if rec.triple else 0.04 + tf, None if rec.triple else 1.5)
    if experiment == "ffdm" and scenario in FN_SCENARIOS:
        rec.false_negative_analysis = FalseNegativeAnalysis("holdout", 3, IntervalCancerDetection(
            6, share_called_malignant_at_0_5=tf, threshold_at_target_sensitivity=0.3,
            share_called_malignant_at_threshold=2 * tf))
        rec.false_negative_halves = FalseNegativeHalves(3, [], PooledDetection(6, tf / 2, 3 * tf))
    rec.seconds = 1000 * tf
    return rec


def _grid(experiments, scenarios, fractions=FRACTIONS):
    return [_record(e, s, tf, seed) for seed, (tf, e, s) in
            enumerate((tf, e, s) for tf in fractions for e in experiments for s in scenarios)]


def _write_logs(out, records):
    """A train_log.csv per record: the loss falls, the lr drops by 10 every LR_STEP iterations."""
    for i, rec in enumerate(records):
        folder = out / "jobs" / rec.job
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "train_log.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(LOG_FIELDS)
            for it in range(ITERS):
                w.writerow([it, 2.0 / (1 + it) + 0.01 * i, min(1, it / ITERS), 0.001 * 0.1 ** (it // LR_STEP),
                            100, 0, it])


def _legend(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _suptitle(fig):
    return " ".join(t.get_text() for t in fig.texts)


# ----------------------------------------------------------------------------- ROC figure
def test_roc_legends_carry_auc_ci_and_test_size():
    recs = _grid(["ffdm"], list(SCENARIOS), fractions=(0.05,))
    fig = report.roc_figure(recs, "ffdm", 0.05)
    binary_ax, triple_ax = fig.axes
    texts = _legend(binary_ax)
    for rec in recs[:-1]:
        lo, hi = rec.binary.ci95_bootstrap_patient
        (label,) = [t for t in texts if t.startswith(rec.scenario + ":")]
        assert f"AUC {rec.binary.auc:.2f}" in label and f"95% CI {lo:.2f}-{hi:.2f}" in label
        assert f"n = {rec.n_test} (5/5)" in label
    triple = recs[-1]
    pair_texts = _legend(triple_ax)
    assert len(pair_texts) == 3
    for pair in triple.triple.pairs:
        (label,) = [t for t in pair_texts if t.startswith(pair.name + ":")]
        assert f"AUC {pair.auc:.2f}" in label and "n = 10" in label  # the two classes' 5 + 5 images
    assert "5%" in _suptitle(fig)
    plt.close(fig)


def test_roc_marks_the_radiologists_operating_point():
    fig = report.roc_figure(_grid(["ddsm"], ["malignant-vs-negative"], (0.05,)), "ddsm", 0.05)
    (ax,) = fig.axes
    stars = [ln for ln in ax.lines if ln.get_marker() == "*"]
    assert len(stars) == 1
    assert stars[0].get_xdata()[0] == pytest.approx(1 - 0.889) and stars[0].get_ydata()[0] == pytest.approx(0.869)
    assert "sensitivity 0.869, specificity 0.889" in stars[0].get_label()
    plt.close(fig)


@pytest.mark.parametrize("scenarios, curves", [(["malignant-vs-negative", "benign-vs-rest"], [2]),
                                               (["triple"], [3])])
def test_roc_has_a_panel_only_for_what_ran(scenarios, curves):
    fig = report.roc_figure(_grid(["combined"], scenarios, (0.05,)), "combined", 0.05)
    assert [len([t for t in _legend(ax) if "AUC" in t]) for ax in fig.axes] == curves
    plt.close(fig)


# ----------------------------------------------------------------------------- tables beside the paper's
def _rows(lines, first_cell):
    """The cells of every markdown table row whose first cell is ``first_cell``."""
    return [[c.strip() for c in line.strip("|").split("|")] for line in "\n".join(lines).splitlines()
            if line.startswith(f"| {first_cell} |")]


def test_table1_rows_stand_beside_the_papers():
    cfg = resolve_config("demo", {"scenarios": ["negative-vs-benign", "triple"],
                                  "experiments": ["ffdm", "ddsm"], "test_fractions": list(FRACTIONS)}, "cpu")
    records = _grid(cfg.experiments, cfg.scenarios)
    lines = report.section_table1(cfg, records)
    header = _rows(lines, "experiment")[0]
    assert header[2:6] == ["train, test set 5%", "test, test set 5%", "train, test set 10%", "test, test set 10%"]
    rows = {(r[0], r[1]): r for r in _rows(lines, "ffdm") + _rows(lines, "ddsm")}
    assert len(rows) == 4
    assert rows["ffdm", "negative-vs-benign"][2:6] == ["390 (195/195)", "10 (5/5)", "380 (190/190)", "20 (10/10)"]
    assert rows["ddsm", "triple"][5] == "30 (10/10/10)"
    table1 = report.PAPER["table1_images"]
    for (exp, scen), row in rows.items():
        paper = table1[exp]["negative-vs-benign" if scen == "negative-vs-benign" else "others"]
        assert row[6:] == [f"{paper['train']:,} ({paper['train_per_class']:,} per category)",
                           f"{paper['test']:,} ({paper['test_per_class']:,} per category)"]
    assert rows["ffdm", "negative-vs-benign"][6] != rows["ffdm", "triple"][6]  # the paper's two groups differ


def test_paper_table1_is_consistent():
    """Each transcribed row: two categories per total; incremental fine-tunes on FFDM's images."""
    table1 = report.PAPER["table1_images"]
    assert set(table1) == {"ffdm", "ddsm", "combined", "incremental"}
    for exp, groups in table1.items():
        for group in ("negative-vs-benign", "others"):
            g = groups[group]
            assert (g["train"], g["test"]) == (2 * g["train_per_class"], 2 * g["test_per_class"]), (exp, group)
    assert table1["incremental"] == table1["ffdm"]


def test_specificity_at_radiologists_sensitivity_beside_the_papers():
    records = _grid(["ffdm", "combined"], ["malignant-vs-negative", "malignant-vs-benign"])
    lines = report.section_operating_point(records)
    text = "\n".join(lines)
    assert "specificity of 87%" in text and "88.9%" in text and "0.87" in text and "0.889" in text
    mvn = [r for r in records if r.scenario == "malignant-vs-negative"]
    rows = _rows(lines, "ffdm") + _rows(lines, "combined")
    assert len(rows) == len(mvn) == 4  # malignant vs recalled-benign is not in this comparison
    for r in mvn:
        (row,) = [row for row in rows if row[:2] == [r.experiment, f"{100 * r.test_fraction:g}%"]]
        assert row[4] == f"{r.binary.operating_point.specificity:.3f}"
        assert float(row[3]) >= 0.869
    best = max(r.binary.operating_point.specificity for r in mvn)
    assert f"Best here: {best:.3f}" in text


def test_false_negative_analyses_beside_both_of_the_papers():
    records = _grid(["ffdm", "ddsm"], ["malignant-vs-negative", "malignant-vs-benign", "triple"])
    lines = report.section_false_negatives(records)
    rows = _rows(lines, "ffdm")
    assert len(rows) == 8  # two scenarios x two test fractions x two analyses; ddsm and triple have none
    paper = {("holdout", "malignant-vs-negative"): "71.3%", ("holdout", "malignant-vs-benign"): "63.6%",
             ("halves", "malignant-vs-negative"): "72.8%", ("halves", "malignant-vs-benign"): "68.4%"}
    for row in rows:
        tf = float(row[2].rstrip("%")) / 100
        shares = {"holdout": (tf, 2 * tf), "halves": (tf / 2, 3 * tf)}[row[3]]
        assert row[5:7] == [f"{100 * v:.1f}%" for v in shares]
        assert row[7] == paper[row[3], row[1]]
    assert sorted(row[3] for row in rows) == ["halves"] * 4 + ["holdout"] * 4
    paper = {r[0]: r[1:] for r in _rows(lines, "malignant-vs-negative") + _rows(lines, "malignant-vs-benign")
             if len(r) == 3}
    assert paper == {"malignant-vs-negative": ["71.3%", "72.8%"], "malignant-vs-benign": ["63.6%", "68.4%"]}


# ----------------------------------------------------------------------------- other figures
def test_incremental_figure_has_one_labelled_panel_per_test_fraction():
    records = _grid(["incremental"], ["malignant-vs-rest", "negative-vs-benign", "triple"])
    fig = report.incremental_figure(records)
    assert [ax.get_title() for ax in fig.axes] == [f"test set {p} of the FFDM patients" for p in ("5%", "10%")]
    for ax, tf in zip(fig.axes, FRACTIONS):
        recs = [r for r in records if r.test_fraction == tf]
        heights = sorted(round(p.get_height(), 6) for p in ax.patches)
        assert heights == sorted(round(v, 6) for r in recs for v in (r.auc, r.incremental.baseline_auc))
        notes = [t.get_text() for t in ax.texts]
        assert notes == [f"p={0.04 + tf:.2f}"] * 2 + ["no test"]
    plt.close(fig)


def test_training_curves_are_small_multiples_with_lr_steps_and_smoothing(tmp_path):
    records = _grid(["ffdm", "ddsm"], ["malignant-vs-negative", "triple"])
    _write_logs(tmp_path, records)
    k = report.smoothing_window(ITERS)
    assert k == ITERS // 5
    fig = report.training_figure(tmp_path, records, "ddsm", k)
    assert len(fig.axes) == 4  # two scenarios x (loss, accuracy)
    assert f"moving average over {k} iterations" in _suptitle(fig)
    assert [ax.get_ylabel().split("\n")[0] for ax in fig.axes[::2]] == ["malignant-vs-negative", "triple"]
    for ax in fig.axes:
        verticals = sorted({ln.get_xdata()[0] for ln in ax.lines if len(ln.get_xdata()) == 2})
        assert verticals == [LR_STEP, 2 * LR_STEP]
        assert len([ln for ln in ax.lines if len(ln.get_xdata()) > 2]) == len(FRACTIONS)
    first = next(ln for ln in fig.axes[0].lines if len(ln.get_xdata()) > 2)
    index = records.index(next(r for r in records if r.experiment == "ddsm"))
    loss = 2.0 / (1 + np.arange(k)) + 0.01 * index
    assert first.get_xdata()[0] == k - 1 and first.get_ydata()[0] == pytest.approx(loss.mean())
    plt.close(fig)


# ----------------------------------------------------------------------------- the whole report
def test_report_labels_every_result_table_and_figure_with_its_test_fraction(tmp_path):
    cfg = resolve_config("demo", {"scenarios": ["malignant-vs-negative", "triple"], "iters": ITERS,
                                  "lr_step": LR_STEP, "experiments": ["ffdm", "incremental"],
                                  "test_fractions": list(FRACTIONS)}, "cpu")
    records = _grid(cfg.experiments, cfg.scenarios)
    _write_logs(tmp_path, records)
    env = {"date": "today", "backend": "numpy", "cpu_count": 2}
    path = report.write_report(tmp_path, cfg, records, [], env, {"data_s": 1, "total_s": 2}, "python run.py")
    text = path.read_text()
    results = text[text.index("### Table 1"):]
    paper_only = "| scenario | paper: trained without them | paper: half of them in training |"
    heading = ""
    for block in results.split("\n\n"):
        if block.startswith("#"):
            heading = block
        elif block.startswith("|") and not block.startswith(paper_only):
            assert "test set" in block.splitlines()[0] or "test set" in heading, block.splitlines()[0]
    figures = [line[line.index("(figures/") + 1:-1] for line in text.splitlines() if line.startswith("![")]
    assert sorted(figures) == sorted(["figures/roc_ffdm.png", "figures/roc_incremental.png",
                                      "figures/incremental.png", "figures/robustness.png",
                                      "figures/training_ffdm.png", "figures/training_incremental.png"])
    for name in figures:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    timing = _rows([text], "incremental")[-1]
    assert timing[1:] == ["triple", "50", "100"]  # seconds per test fraction


def test_the_report_states_which_kernels_ran():
    """The runner's record of backend.kernels_used(), read back: every implementation that ran is
    named with its ops, in the header and in the environment section."""
    from dataclasses import asdict

    from alexnet_np import AlexNet, backend
    backend.reset_kernels_used()
    AlexNet(2, input_size=67, widths=(2, 4, 4, 4, 4, 8, 8)).forward(np.zeros((1, 3, 67, 67), np.float32))
    used = backend.kernels_used()
    env = {"date": "today", "backend": "numpy", "kernels_used": [asdict(u) for u in used.uses]}
    lines = report.section_kernels(env)
    for implementation in used.implementations:
        (line,) = [ln for ln in lines if ln.startswith(f"- {implementation}: ")]
        assert set(line.split(": ", 1)[1].split(", ")) == set(used.ops(implementation))
    assert "conv_forward" in "\n".join(lines)
    cfg = resolve_config("demo", {}, "cpu")
    assert f"kernels: {', '.join(used.implementations)})" in report.section_header(cfg, env, "run.py")[2]
    assert report.section_kernels(dict(env, kernels_used=[]))[0].startswith("Kernels: none ran")
    assert report.section_kernels({"backend": "numpy"}) == []  # a run recorded before kernels_used existed
    assert "not recorded (the jobs ran on Dask local" in report.section_kernels(
        dict(env, kernels_used=None, cluster="Dask local (2 workers)"))[0]
