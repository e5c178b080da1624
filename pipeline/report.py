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

from data_prep.fileio import atomic_output  # noqa: E402

from .config import deviations  # noqa: E402
from .data import SKIPPED_WARN_SHARE  # noqa: E402
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
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- figures
def plot_roc(records, experiment, path):
    """Binary scenarios' ROC curves on the left, the triple's pairwise curves on the right (Figs. 1-3)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.6))
    for rec in records:
        if rec.binary is not None:
            left.plot(rec.binary.roc.fpr, rec.binary.roc.tpr, label=f"{rec.scenario} (AUC {rec.auc:.2f})")
        else:
            for pair in rec.triple.pairs:
                right.plot(pair.roc.fpr, pair.roc.tpr, label=f"{pair.name} ({pair.auc:.2f})")
            right.set_title(f"triple: mean pairwise AUC {rec.auc:.2f}")
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
    recs = [r for r in records if r.incremental is not None]
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(recs)), 4))
    x = np.arange(len(recs))
    ax.bar(x - 0.2, [r.incremental.baseline_auc for r in recs], 0.4, label="FFDM only (baseline)")
    ax.bar(x + 0.2, [r.auc for r in recs], 0.4, label="DDSM -> FFDM (incremental)")
    for i, r in enumerate(recs):
        p = r.incremental.p_delong
        ax.text(i, max(r.auc, r.incremental.baseline_auc) + 0.02, "" if p is None else f"p={p:.2f}",
                ha="center", fontsize=8)
    ax.set_xticks(x, [r.scenario for r in recs], rotation=20, fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("test AUC (FFDM)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Incremental transfer learning vs baseline (paired DeLong)")
    return _save(fig, path)


def plot_robustness(records, path):
    """AUC against the held-out test fraction, one panel per experiment (Fig. 5)."""
    experiments = sorted({r.experiment for r in records})
    fig, axes = plt.subplots(1, len(experiments), figsize=(4.2 * len(experiments), 3.8), squeeze=False)
    for ax, exp in zip(axes[0], experiments):
        for scen in SCENARIOS:
            pts = sorted((r.test_fraction, r.auc) for r in records if r.experiment == exp and r.scenario == scen)
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
        log = out / "jobs" / rec.job / "train_log.csv"
        if not log.exists():
            continue
        with open(log, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            continue
        it = np.array([int(r["iteration"]) for r in rows])
        k = min(20, len(rows))
        smooth = lambda v: np.convolve(v, np.ones(k) / k, mode="valid")  # noqa: E731
        label = f"{rec.experiment}/{rec.scenario}/{rec.test_fraction:g}"
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


def _auc_marks(flags):
    return "".join(f" **({m})**" for m, on in (("untrained", flags.untrained),
                                               ("constant scores", flags.constant_scores)) if on)


def _ci_marks(flags, name):
    return "".join(f" **({m})**" for m, on in (("zero width", name in flags.zero_width_cis),
                                               ("too few patients", flags.small_test_set)) if on)


def section_header(cfg, env, command):
    return ["# Reproduction report: Aboutalib et al., Clin Cancer Res 2018",
            "", f"Generated {env['date']} by alexnet_np (preset `{cfg.preset}`, backend `{env['backend']}`"
            + (f", GPU {env['gpu']}" if "gpu" in env else "") + ").", "",
            "## How to reproduce", "", "```", command, "```", ""]


def section_deviations(cfg, cohorts):
    lines = ["## What differs from the paper's setting", ""]
    lines += [f"- {d}" for d in deviations(cfg)]
    synthetic = [a.dataset.upper() for a in cohorts if a.dataset not in cfg.data]
    lines += ["", "Paper values are from the paper's text (Figs. 1-4, 5% test split). "
              + (f"The {' and '.join(synthetic)} data here are synthetic, not the paper's, so agreement in *numbers* "
                 "is not expected -- the comparison shows the pipeline computes the same quantities."
                 if synthetic else "The data here are yours (below), not the paper's private cohort."), ""]
    return lines


def section_cohorts(cohorts):
    """Where each dataset came from and how many images reached the study (cohort attrition)."""
    rows = []
    for a in cohorts:
        skipped = "--" if a.n_skipped is None else str(a.n_skipped) + (
            f" ({', '.join(f'{k} {v}' for k, v in a.skipped_by_reason.items())})" if a.n_skipped else "")
        rows.append([a.dataset, a.origin, "--" if a.n_manifest is None else a.n_manifest, a.n_read,
                     skipped + (f" **{100 * a.skipped_share:.1f}%: more than {100 * SKIPPED_WARN_SHARE:g}%**"
                                if a.too_many_skipped else ""),
                     ", ".join(f"{k} {v}" for k, v in a.read_by_label.items())])
    lines = ["## Data", "", _table(["dataset", "origin", "images in manifest", "read", "skipped (by reason)",
                                    "read, by class"], rows), ""]
    listed = [a for a in cohorts if a.n_skipped]
    if listed:
        lines += ["Skipped images, with the reasons: " + ", ".join(f"`{a.errors_report}`" for a in listed) + ". "
                  "Each scenario then draws equal numbers per class from the images read (the train and test "
                  "columns below).", ""]
    return lines


def section_results_intro(cfg):
    lines = ["## Results", "",
             "AUC: test-set area under the ROC curve (triple: mean of the pairwise AUCs, Hand & Till). "
             "CIs are 95%: `DeLong` from DeLong's variance; `bootstrap (images)` resamples test images "
             f"(stratified, {cfg.n_boot} replicates); `bootstrap (patients)` resamples whole "
             "patients, which accounts for the correlation between a patient's images and is wider. "
             "Spec@86.9% is the specificity at the radiologists' sensitivity of 86.9% (the paper: 0.87 for its "
             "best malignant-vs-negative model, radiologists 0.889).", "", "Scenarios:", ""]
    for name in cfg.scenarios:
        sc = SCENARIOS[name]
        lines.append(f"- `{name}`: {sc.description}" + (f"; positive class (the ROC score is its probability): "
                                                        f"{sc.class_names[1]}" if sc.binary else ""))
    return lines + [""]


def section_experiment(out, cfg, records, experiment, test_fraction):
    """One experiment's table at the first test fraction, its pairwise AUCs and its ROC figure (Figs. 1-3)."""
    recs = [r for r in records if r.experiment == experiment and r.test_fraction == test_fraction]
    if not recs:
        return []
    header = ["scenario", "train (per class)", "test (per class)", "AUC", "DeLong CI", "bootstrap CI (images)",
              "bootstrap CI (patients)", "spec@86.9%", "paper AUC (CI)"]
    if cfg.cv >= 2:
        header.insert(-1, f"{cfg.cv}-fold CV AUC")
    rows = []
    for r in recs:
        b = r.binary
        ci = lambda name, value: _fmt_ci(value) + _ci_marks(r.flags, name) if value else "--"  # noqa: E731
        row = [r.scenario, f"{r.n_train} ({'/'.join(map(str, r.n_train_per_class))})",
               f"{r.n_test} ({'/'.join(map(str, r.n_test_per_class))})", f"{r.auc:.3f}" + _auc_marks(r.flags),
               ci("DeLong", b and b.ci95_delong), ci("bootstrap (images)", b and b.ci95_bootstrap),
               ci("bootstrap (patients)", b and b.ci95_bootstrap_patient),
               f"{b.operating_point.specificity:.2f}" if b else "--", _paper_auc(experiment, r.scenario)]
        if cfg.cv >= 2:
            row.insert(-1, f"{r.cv.mean:.3f} ± {r.cv.sd:.3f}" if r.cv else "--")
        rows.append(row)
    lines = [f"### {EXPERIMENT_TITLES[experiment]}, test fraction {test_fraction:g}", "", _table(header, rows), ""]
    for r in recs:
        lines += [f"- **{r.scenario}**: {m}" for m in r.flags.messages()]
    if any(r.flags.messages() for r in recs):
        lines.append("")
    for r in recs:
        if r.triple is not None:
            lines += ["Triple scenario, pairwise AUCs: " + ", ".join(f"{p.name} {p.auc:.3f}" for p in r.triple.pairs), ""]
    if experiment != "incremental":
        fig = plot_roc(recs, experiment, out / "figures" / f"roc_{experiment}.png")
        lines += [f"![ROC curves, {experiment}](figures/{fig.name})", ""]
    if cfg.cv >= 2:
        lines += [f"Cross-validation: {cfg.cv} folds over the training patients, each model trained on "
                  f"{cfg.cv - 1}/{cfg.cv} and scored on the rest (mean ± SD of the fold AUCs). It is the "
                  "paper's internal validation of training stability; it selects nothing.", ""]
    return lines


def section_incremental(out, records, test_fraction):
    """Baseline against incremental AUCs with the paired DeLong p (Fig. 4)."""
    inc = [r for r in records if r.incremental is not None and r.test_fraction == test_fraction]
    if not inc:
        return []
    rows = []
    for r in inc:
        paper = PAPER["experiments"]["incremental"]["auc"].get(r.scenario, {})
        p = "--" if r.incremental.p_delong is None else f"{r.incremental.p_delong:.3f}"
        rows.append([r.scenario, f"{r.incremental.baseline_auc:.3f}", f"{r.auc:.3f}", p,
                     f"{paper.get('baseline_auc', '--')} -> {paper.get('auc', '--')} (p={paper.get('p_delong')})"])
    fig = plot_incremental(records, out / "figures" / "incremental.png")
    return ["### Incremental transfer vs baseline (same FFDM test images, paired DeLong test)", "",
            f"Pretraining: {inc[0].incremental.pretrained_on}.", "",
            _table(["scenario", "baseline AUC (FFDM only)", "incremental AUC", "p (DeLong)", "paper"], rows), "",
            f"![incremental vs baseline](figures/{fig.name})", ""]


def section_robustness(out, cfg, records):
    """AUC at each test fraction (Fig. 5); only when the run has more than one."""
    fracs = sorted({r.test_fraction for r in records})
    if len(fracs) < 2:
        return []
    rows = []
    for exp in cfg.experiments:
        for scen in cfg.scenarios:
            vals = {r.test_fraction: r.auc for r in records if r.experiment == exp and r.scenario == scen}
            rows.append([exp, scen] + [f"{vals[f]:.3f}" if f in vals else "--" for f in fracs])
    fig = plot_robustness(records, out / "figures" / "robustness.png")
    return ["### Robustness over the test fraction (Fig. 5)", "",
            _table(["experiment", "scenario"] + [f"test {100 * f:g}%" for f in fracs], rows), "",
            f"![robustness](figures/{fig.name})", ""]


def section_false_negatives(records):
    """Interval cancers called malignant, beside the paper's shares."""
    fn = [r for r in records if r.false_negative_analysis is not None]
    if not fn:
        return []
    paper_fn = PAPER["false_negative_analysis"]
    rows = []
    for r in fn:
        a = r.false_negative_analysis
        rows.append([r.scenario, a.mode, f"{a.detection.n_images} ({a.n_patients} patients)",
                     f"{100 * a.detection.share_called_malignant_at_0_5:.1f}%",
                     f"{100 * a.detection.share_called_malignant_at_threshold:.1f}%",
                     f"{100 * paper_fn['correctly_identified_trained_without'].get(r.scenario, float('nan')):.1f}%"])
    return ["### False-negative analysis (interval cancers)", "",
            "Share of interval-cancer images the model calls malignant, by two rules: the model's own "
            "decision (P(malignant) >= 0.5) and the threshold that gives 86.9% sensitivity on the test set. "
            f"Paper: {paper_fn['interval_cancer_patients']} interval-cancer patients.", "",
            _table(["scenario", "how", "interval-cancer images", "called malignant (p>=0.5)",
                    "called malignant (86.9% threshold)", "paper (trained without them)"], rows), ""]


def section_false_negative_halves(records):
    """The paper's second false-negative analysis (half of the interval cancers in training), beside its shares."""
    recs = [r for r in records if r.false_negative_halves is not None]
    if not recs:
        return []
    paper = PAPER["false_negative_analysis"]["correctly_identified_half_in_training"]
    rows = [[r.scenario, f"{r.false_negative_halves.pooled.n_images} ({r.false_negative_halves.n_patients} patients)",
             f"{100 * r.false_negative_halves.pooled.share_called_malignant_at_0_5:.1f}%",
             f"{100 * r.false_negative_halves.pooled.share_called_malignant_at_threshold:.1f}%",
             f"{100 * paper.get(r.scenario, float('nan')):.1f}%"] for r in recs]
    return ["With half of the interval-cancer patients in training (the paper's second analysis): the "
            "interval-cancer patients are split in two halves; each half's images are scored by a model trained "
            "on the images of the first analysis plus the other half's, so every image is scored once, unseen.", "",
            _table(["scenario", "interval-cancer images scored", "called malignant (p>=0.5)",
                    "called malignant (86.9% threshold)", "paper (half in training)"], rows), ""]


def section_provenance(prov):
    """The code's commit and each dataset's fingerprint and manifest hash (and path, for user data)."""
    if not prov:
        return []
    lines = ["## Provenance", "", f"Code: git commit `{prov['git_commit']}`"
             + {"yes": " **with uncommitted changes to tracked files**", "no": " (clean)"}.get(prov["git_dirty"], "")
             + ".", ""]
    lines += [f"- {name}: build fingerprint `{d['fingerprint']}`, manifest SHA-256 `{d['manifest_sha256']}`"
              + (f", manifest `{d['manifest_path']}`" if d["manifest_path"] else "") for name, d in prov["datasets"].items()]
    return lines + [""]


def section_training(out, records):
    fig = plot_training(out, records, out / "figures" / "training_curves.png")
    return ["### Training curves", "", f"![training curves](figures/{fig.name})", ""]


def section_files():
    return ["## Files", "",
            "- `results.json`: every number above, one record per scenario x experiment x test fraction",
            "- `predictions.csv`: one row per test image of every reported model: `y_true` (the scenario's class, "
            "1 = positive), `score` (the positive class's probability), `p0..pK`; `python -m stats predictions.csv "
            "--label-col y_true --score-col score --group-col patient_id` recomputes a single binary model's AUC "
            "and CIs (with several models, take one model's rows)",
            "- `predictions_interval.csv` (when interval cancers are held out): the same columns for the "
            "interval-cancer images the main models scored",
            "- `jobs/<experiment>/<scenario>/<test fraction>/<main|cvK|fn>/`: `weights.h5`, `train_log.csv`, "
            "`predictions.h5` of each trained model",
            "- `config.json`, `environment.json`: the settings and the software/hardware of this run", ""]


def section_environment(env, timings, records):
    lines = ["## Environment and timing", "",
             f"numpy {env.get('numpy')}, BLAS {env.get('blas')}, backend {env['backend']}"
             + (f", GPU {env['gpu']}" if "gpu" in env else "") + f", {env['cpu_count']} CPU cores. "
             f"Data preparation {timings.get('data_s', 0):.0f} s, whole run {timings.get('total_s', 0):.0f} s.", ""]
    return lines + [f"- {r.experiment} / {r.scenario} / test {r.test_fraction:g}: {r.seconds:.0f} s" for r in records]


def write_report(out, cfg, records, cohorts, env, timings, command, provenance=None):
    """Write figures and report.md under ``out``, one section after the other; returns report.md's path."""
    out = Path(out)
    (out / "figures").mkdir(exist_ok=True)
    first_tf = cfg.test_fractions[0]
    lines = section_header(cfg, env, command) + section_deviations(cfg, cohorts) + section_cohorts(cohorts)
    lines += section_results_intro(cfg)
    for exp in cfg.experiments:
        lines += section_experiment(out, cfg, records, exp, first_tf)
    lines += section_incremental(out, records, first_tf)
    lines += section_robustness(out, cfg, records)
    lines += section_false_negatives(records)
    lines += section_false_negative_halves(records)
    lines += section_training(out, records)
    lines += section_files()
    lines += section_environment(env, timings, records)
    lines += section_provenance(provenance)
    path = out / "report.md"
    with atomic_output(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path
