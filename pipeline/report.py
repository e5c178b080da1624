"""Figures in the paper's style and an audit-ready report.md, every number beside the paper's.

The paper's values come from ``pipeline/paper_results.json`` (transcribed from
the text of Aboutalib et al., Clin Cancer Res 2018, Figs. 1-5 and the
Results/Discussion sections).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .config import deviations  # noqa: E402
from .scenarios import SCENARIOS  # noqa: E402

PAPER = json.loads((Path(__file__).with_name("paper_results.json")).read_text())
EXPERIMENT_TITLES = {"ffdm": "FFDM only (Fig. 1)", "ddsm": "DDSM only (Fig. 2)",
                     "combined": "FFDM + DDSM mixed (Fig. 3)", "incremental": "DDSM -> FFDM incremental (Fig. 4)"}


def _fmt_ci(ci):
    return "--" if not ci else f"{ci[0]:.2f}-{ci[1]:.2f}"


def _paper_auc(experiment, scenario):
    entry = PAPER["experiments"].get(experiment, {}).get("auc", {}).get(scenario)
    if not entry:
        return "--"
    return f"{entry['auc']:.2f}" + (f" ({_fmt_ci(entry['ci95'])})" if entry.get("ci95") else "")


def _save(fig, path):
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


# ----------------------------------------------------------------------------- figures
def plot_roc(records, experiment, path):
    """Binary scenarios' ROC curves on the left, the triple's pairwise curves on the right (Figs. 1-3)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.6))
    for rec in records:
        if "roc" in rec:
            left.plot(rec["roc"]["fpr"], rec["roc"]["tpr"], label=f"{rec['scenario']} (AUC {rec['auc']:.2f})")
        elif "roc_pairs" in rec:
            for pair, roc in rec["roc_pairs"].items():
                right.plot(roc["fpr"], roc["tpr"], label=f"{pair} ({rec['pairwise_auc'][pair]:.2f})")
            right.set_title(f"triple: mean pairwise AUC {rec['auc']:.2f}")
    for ax in (left, right):
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
        ax.set_xlabel("1 - specificity (false-positive rate)")
        ax.set_ylabel("sensitivity (true-positive rate)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        if ax.lines[:-1]:
            ax.legend(fontsize=7, loc="lower right")
    left.set_title("binary scenarios")
    if not right.get_title():
        right.set_title("triple scenario (not run)")
    fig.suptitle(EXPERIMENT_TITLES.get(experiment, experiment))
    return _save(fig, path)


def plot_incremental(records, path):
    """Baseline (FFDM only) vs incremental AUC per scenario, with the DeLong p-value (Fig. 4)."""
    recs = [r for r in records if r["experiment"] == "incremental"]
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(recs)), 4))
    x = np.arange(len(recs))
    ax.bar(x - 0.2, [r["baseline_auc"] for r in recs], 0.4, label="FFDM only (baseline)")
    ax.bar(x + 0.2, [r["auc"] for r in recs], 0.4, label="DDSM -> FFDM (incremental)")
    for i, r in enumerate(recs):
        p = r.get("p_delong")
        ax.text(i, max(r["auc"], r["baseline_auc"]) + 0.02, "" if p is None else f"p={p:.2f}",
                ha="center", fontsize=8)
    ax.set_xticks(x, [r["scenario"] for r in recs], rotation=20, fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("test AUC (FFDM)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Incremental transfer learning vs baseline (paired DeLong)")
    return _save(fig, path)


def plot_robustness(records, path):
    """AUC against the held-out test fraction, one panel per experiment (Fig. 5)."""
    experiments = sorted({r["experiment"] for r in records})
    fig, axes = plt.subplots(1, len(experiments), figsize=(4.2 * len(experiments), 3.8), squeeze=False)
    for ax, exp in zip(axes[0], experiments):
        for scen in SCENARIOS:
            pts = sorted((r["test_fraction"], r["auc"]) for r in records if r["experiment"] == exp
                         and r["scenario"] == scen)
            if pts:
                ax.plot([100 * p[0] for p in pts], [p[1] for p in pts], marker="o", label=scen)
        ax.set_title(exp)
        ax.set_xlabel("test set (% of patients)")
        ax.set_ylabel("test AUC")
        ax.set_ylim(0.4, 1.0)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_training(out, records, path):
    """Loss and accuracy per iteration (moving average over 20) of every reported model."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for rec in records:
        log = out / "jobs" / rec["job"] / "train_log.csv"
        if not log.exists():
            continue
        with open(log, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            continue
        it = np.array([int(r["iteration"]) for r in rows])
        k = min(20, len(rows))
        smooth = lambda v: np.convolve(v, np.ones(k) / k, mode="valid")  # noqa: E731
        label = f"{rec['experiment']}/{rec['scenario']}/{rec['test_fraction']:g}"
        a1.plot(it[k - 1:], smooth(np.array([float(r["loss"]) for r in rows])), label=label)
        a2.plot(it[k - 1:], smooth(np.array([float(r["accuracy"]) for r in rows])), label=label)
    a1.set_ylabel("training loss")
    a2.set_ylabel("training accuracy (minibatch)")
    for ax in (a1, a2):
        ax.set_xlabel("iteration")
        if ax.lines:
            ax.legend(fontsize=6)
    return _save(fig, path)


# ----------------------------------------------------------------------------- report.md
def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(out, cfg, records, env, timings, command):
    """Write figures and report.md under ``out``; returns report.md's path."""
    out = Path(out)
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    first_tf = cfg.test_fractions[0]
    lines = ["# Reproduction report: Aboutalib et al., Clin Cancer Res 2018",
             "", f"Generated {env['date']} by alexnet_np (preset `{cfg.preset}`, backend `{env['backend']}`"
             + (f", GPU {env['gpu']}" if "gpu" in env else "") + ").", "",
             "## How to reproduce", "", "```", command, "```", "",
             "## What differs from the paper's setting", ""]
    lines += [f"- {d}" for d in deviations(cfg)]
    lines += ["", "Paper values are from the paper's text (Figs. 1-4, 5% test split); synthetic data are not "
              "the paper's data, so agreement in *numbers* is not expected -- the comparison shows the "
              "pipeline computes the same quantities.", ""]

    lines += ["## Results", "",
              "AUC: test-set area under the ROC curve (triple: mean of the pairwise AUCs, Hand & Till). "
              "CIs are 95%: `DeLong` from DeLong's variance; `bootstrap (images)` resamples test images "
              f"(stratified, {cfg.n_boot} replicates); `bootstrap (patients)` resamples whole "
              "patients, which accounts for the correlation between a patient's images and is wider. "
              "Spec@86.9% is the specificity at the radiologists' sensitivity of 86.9% (the paper: 0.87 for its "
              "best malignant-vs-negative model, radiologists 0.889).", ""]
    for exp in cfg.experiments:
        recs = [r for r in records if r["experiment"] == exp and r["test_fraction"] == first_tf]
        if not recs:
            continue
        lines += [f"### {EXPERIMENT_TITLES[exp]}, test fraction {first_tf:g}", ""]
        header = ["scenario", "train (per class)", "test (per class)", "AUC", "DeLong CI", "bootstrap CI (images)",
                  "bootstrap CI (patients)", "spec@86.9%", "paper AUC (CI)"]
        if cfg.cv >= 2:
            header.insert(-1, f"{cfg.cv}-fold CV AUC")
        rows = []
        for r in recs:
            row = [r["scenario"], f"{r['n_train']} ({'/'.join(map(str, r['n_train_per_class']))})",
                   f"{r['n_test']} ({'/'.join(map(str, r['n_test_per_class']))})", f"{r['auc']:.3f}",
                   _fmt_ci(r["ci95_delong"]), _fmt_ci(r["ci95_bootstrap"]), _fmt_ci(r["ci95_bootstrap_patient"]),
                   f"{r['specificity_at_0.869']:.2f}" if "specificity_at_0.869" in r else "--",
                   _paper_auc(exp, r["scenario"])]
            if cfg.cv >= 2:
                row.insert(-1, f"{r['cv_auc_mean']:.3f} ± {r['cv_auc_sd']:.3f}" if r.get("cv_auc_mean") is not None else "--")
            rows.append(row)
        lines += [_table(header, rows), ""]
        for r in recs:
            if "pairwise_auc" in r:
                lines += ["Triple scenario, pairwise AUCs: " + ", ".join(
                    f"{k} {v:.3f}" for k, v in r["pairwise_auc"].items()), ""]
        if exp != "incremental":
            fig = plot_roc(recs, exp, figs / f"roc_{exp}.png")
            lines += [f"![ROC curves, {exp}](figures/{fig.name})", ""]
        if cfg.cv >= 2:
            lines += [f"Cross-validation: {cfg.cv} folds over the training patients, each model trained on "
                      f"{cfg.cv - 1}/{cfg.cv} and scored on the rest (mean ± SD of the fold AUCs). It is the "
                      "paper's internal validation of training stability; it selects nothing.", ""]
    inc = [r for r in records if r["experiment"] == "incremental" and r["test_fraction"] == first_tf]
    if inc:
        rows = []
        for r in inc:
            paper = PAPER["experiments"]["incremental"]["auc"].get(r["scenario"], {})
            p = "--" if r.get("p_delong") is None else f"{r['p_delong']:.3f}"
            rows.append([r["scenario"], f"{r['baseline_auc']:.3f}", f"{r['auc']:.3f}", p,
                         f"{paper.get('baseline_auc', '--')} -> {paper.get('auc', '--')} (p={paper.get('p_delong')})"])
        lines += ["### Incremental transfer vs baseline (same FFDM test images, paired DeLong test)", "",
                  f"Pretraining: {inc[0]['pretrained_on']}.", "",
                  _table(["scenario", "baseline AUC (FFDM only)", "incremental AUC", "p (DeLong)", "paper"], rows), ""]
        fig = plot_incremental(records, figs / "incremental.png")
        lines += [f"![incremental vs baseline](figures/{fig.name})", ""]
    fracs = sorted({r["test_fraction"] for r in records})
    if len(fracs) > 1:
        rows = []
        for exp in cfg.experiments:
            for scen in cfg.scenarios:
                vals = {r["test_fraction"]: r["auc"] for r in records if r["experiment"] == exp and r["scenario"] == scen}
                rows.append([exp, scen] + [f"{vals[f]:.3f}" if f in vals else "--" for f in fracs])
        lines += ["### Robustness over the test fraction (Fig. 5)", "",
                  _table(["experiment", "scenario"] + [f"test {100 * f:g}%" for f in fracs], rows), ""]
        fig = plot_robustness(records, figs / "robustness.png")
        lines += [f"![robustness](figures/{fig.name})", ""]
    fn = [r for r in records if r.get("false_negative_analysis")]
    if fn:
        paper_fn = PAPER["false_negative_analysis"]
        rows = []
        for r in fn:
            a = r["false_negative_analysis"]
            rows.append([r["scenario"], a["mode"], f"{a['n_images']} ({a['n_patients']} patients)",
                         f"{100 * a['share_called_malignant_at_0.5']:.1f}%",
                         f"{100 * a['share_called_malignant_at_0.869_threshold']:.1f}%",
                         f"{100 * paper_fn['correctly_identified_trained_without'].get(r['scenario'], float('nan')):.1f}%"])
        lines += ["### False-negative analysis (interval cancers)", "",
                  "Share of interval-cancer images the model calls malignant, by two rules: the model's own "
                  "decision (P(malignant) >= 0.5) and the threshold that gives 86.9% sensitivity on the test set. "
                  f"Paper: {paper_fn['interval_cancer_patients']} interval-cancer patients.", "",
                  _table(["scenario", "how", "interval-cancer images", "called malignant (p>=0.5)",
                          "called malignant (86.9% threshold)", "paper (trained without them)"], rows), ""]
    fig = plot_training(out, records, figs / "training_curves.png")
    lines += ["### Training curves", "", f"![training curves](figures/{fig.name})", ""]
    lines += ["## Files", "",
              "- `results.json`: every number above, one record per scenario x experiment x test fraction",
              "- `predictions.csv`: per-image class probabilities of every reported model (split test / interval / val)",
              "- `jobs/<experiment>/<scenario>/<test fraction>/<main|cvK|fn>/`: `weights.h5`, `train_log.csv`, "
              "`predictions.h5` of each trained model",
              "- `config.json`, `environment.json`: the settings and the software/hardware of this run", "",
              "## Environment and timing", "",
              f"numpy {env.get('numpy')}, BLAS {env.get('blas')}, backend {env['backend']}"
              + (f", GPU {env['gpu']}" if "gpu" in env else "") + f", {env['cpu_count']} CPU cores. "
              f"Data preparation {timings.get('data_s', 0):.0f} s, whole run {timings.get('total_s', 0):.0f} s.", ""]
    for r in records:
        lines.append(f"- {r['experiment']} / {r['scenario']} / test {r['test_fraction']:g}: {r.get('seconds', 0):.0f} s")
    path = out / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path
