"""Figures in the paper's style and an audit-ready report.md, every number beside the paper's.

The paper's values come from ``pipeline/paper_results.json`` (transcribed from
the text of Aboutalib et al., Clin Cancer Res 2018: Figs. 1-5, Table 1 and the
Results/Discussion sections). Every table and figure names the test fraction it
shows, since a full grid has three.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
import numpy as np  # noqa: E402

from alexnet_np.backend import KernelsUsed, KernelUse  # noqa: E402
from data_prep.fileio import atomic_output  # noqa: E402

from .config import deviations  # noqa: E402
from .data import SKIPPED_WARN_SHARE  # noqa: E402
from .experiments import EXPERIMENTS  # noqa: E402
from .explain import TOLERANCE_PX, markdown as explain_markdown  # noqa: E402
from .fidelity import fidelity_markdown  # noqa: E402
from .scenarios import SCENARIOS  # noqa: E402
from .train import read_log  # noqa: E402

PAPER = json.loads((Path(__file__).with_name("paper_results.json")).read_text())
EXPERIMENT_TITLES = {"ffdm": "FFDM only (Fig. 1)", "ddsm": "DDSM only (Fig. 2)",
                     "combined": "FFDM + DDSM mixed (Fig. 3)", "incremental": "DDSM -> FFDM incremental (Fig. 4)"}
RADIOLOGISTS = (PAPER["operating_point"]["radiologist_sensitivity"],
                PAPER["operating_point"]["radiologist_specificity"])
#: The paper compares the radiologists' operating point with malignant vs negative only ("our best deep
#: learning model for classifying malignant versus negative yields a specificity of 87%"); the recall
#: scenarios have no such reference, so their curves are drawn without it.
RADIOLOGIST_SCENARIO = "malignant-vs-negative"
#: the CI that the figures' legends quote (the tables give all three)
LEGEND_CI = "bootstrap over patients"
LINE_STYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (1, 1)))
#: longest moving average of the training curves; shorter runs get a fifth of their length
MAX_SMOOTHING = 20


def _fmt_ci(ci):
    return "--" if not ci else f"{ci[0]:.2f}-{ci[1]:.2f}"


def _pct(test_fraction):
    return f"{100 * test_fraction:g}%"


def _per_class(counts):
    return "/".join(map(str, counts))


def _paper_auc(experiment, scenario):
    entry = PAPER["experiments"].get(experiment, {}).get("auc", {}).get(scenario)
    if not entry:
        return "--"
    return f"{entry['auc']:.2f}" + (f" ({_fmt_ci(entry['ci95'])})" if entry.get("ci95") else "")


def _save(fig, path):
    """Write ``fig`` as a PNG at ``path`` (atomically) and close it; returns the path."""
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")  # legends sit outside the axes
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- figures
def _roc_frame(ax, title):
    ax.plot([0, 1], [0, 1], color="0.75", lw=0.8, ls=":")
    ax.set_xlabel("1 - specificity (false-positive rate)")
    ax.set_ylabel("sensitivity (true-positive rate)")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13))


def roc_label(rec):
    """A binary curve's legend: AUC, its 95% CI (bootstrap over patients) and the test images."""
    b = rec.binary
    return (f"{rec.scenario}: AUC {b.auc:.2f}, 95% CI {_fmt_ci(b.ci95_bootstrap_patient)}, "
            f"n = {rec.n_test} ({_per_class(rec.n_test_per_class)})")


def pair_label(rec, pair):
    """A triple-scenario pair's legend: its AUC, no CI (the paper gives none), the pair's test images."""
    names = SCENARIOS[rec.scenario].class_names
    n = rec.n_test_per_class[names.index(pair.negative)] + rec.n_test_per_class[names.index(pair.positive)]
    return f"{pair.name}: AUC {pair.auc:.2f}, no CI, n = {n}"


def _roc_binary(ax, recs):
    for rec, style in zip(recs, LINE_STYLES):
        ax.plot(rec.binary.roc.fpr, rec.binary.roc.tpr, ls=style, lw=1.6, label=roc_label(rec))
    if any(rec.scenario == RADIOLOGIST_SCENARIO for rec in recs):  # the only scenario the paper compares
        sens, spec = RADIOLOGISTS
        ax.plot([1 - spec], [sens], ls="none", marker="*", ms=13, color="k",
                label=f"radiologists, {RADIOLOGIST_SCENARIO} only: sensitivity {sens}, specificity {spec}")
    _roc_frame(ax, f"binary scenarios (CI: {LEGEND_CI})")


def _roc_triple(ax, rec):
    for pair, style in zip(rec.triple.pairs, LINE_STYLES):
        ax.plot(pair.roc.fpr, pair.roc.tpr, ls=style, lw=1.6, label=pair_label(rec, pair))
    _roc_frame(ax, f"triple scenario: mean pairwise AUC {rec.auc:.2f}, n = {rec.n_test} "
                   f"({_per_class(rec.n_test_per_class)})\neach pair scored by P(its second class)")


def roc_figure(records, experiment, test_fraction):
    """ROC curves of one experiment at one test fraction (Figs. 1-3): a panel for the binary
    scenarios and one for the triple's pairs, each only when the run has it."""
    binary = [r for r in records if r.binary is not None]
    triple = [r for r in records if r.triple is not None]
    panels = [p for p, on in (("binary", binary), ("triple", triple)) if on]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 6.2), squeeze=False, layout="constrained")
    for ax, panel in zip(axes[0], panels):
        if panel == "binary":
            _roc_binary(ax, binary)
        else:
            _roc_triple(ax, triple[0])
    fig.suptitle(f"{EXPERIMENT_TITLES[experiment]}: test set {_pct(test_fraction)} of the patients")
    return fig


def incremental_figure(records):
    """Baseline (FFDM only) vs incremental AUC per scenario with the paired DeLong p, one panel
    per test fraction (Fig. 4)."""
    fracs = sorted({r.test_fraction for r in records})
    fig, axes = plt.subplots(1, len(fracs), figsize=(6 * len(fracs), 4.4), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, tf in zip(axes[0], fracs):
        recs = [r for r in records if r.test_fraction == tf]
        x = np.arange(len(recs))
        ax.bar(x - 0.2, [r.incremental.baseline_auc for r in recs], 0.4, label="FFDM only (baseline)")
        ax.bar(x + 0.2, [r.auc for r in recs], 0.4, label="DDSM -> FFDM (incremental)")
        for i, r in enumerate(recs):
            p = r.incremental.p_delong
            ax.text(i, max(r.auc, r.incremental.baseline_auc) + 0.02, "no test" if p is None else f"p={p:.2f}",
                    ha="center", fontsize=8)
        ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
        ax.set_xticks(x, [f"{r.scenario}\nn = {r.n_test}" for r in recs], rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.12)
        ax.set_title(f"test set {_pct(tf)} of the FFDM patients", fontsize=10)
    axes[0][0].set_ylabel("test AUC (FFDM)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8)
    fig.suptitle("Incremental transfer learning vs baseline, same test images (p: paired DeLong test)")
    return fig


def robustness_figure(records):
    """AUC against the held-out test fraction, one panel per experiment (Fig. 5)."""
    experiments = [e for e in EXPERIMENTS if any(r.experiment == e for r in records)]
    fracs = sorted({r.test_fraction for r in records})
    fig, axes = plt.subplots(1, len(experiments), figsize=(4.2 * len(experiments), 4), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, exp in zip(axes[0], experiments):
        for scen, style in zip(SCENARIOS, LINE_STYLES):
            pts = sorted((r.test_fraction, r.auc) for r in records if r.experiment == exp and r.scenario == scen)
            if pts:
                ax.plot([100 * p[0] for p in pts], [p[1] for p in pts], marker="o", ls=style, label=scen)
        ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
        ax.set_title(EXPERIMENT_TITLES[exp], fontsize=10)
        ax.set_xticks([100 * f for f in fracs], [_pct(f) for f in fracs])
        ax.set_xlabel("test set (share of the patients)")
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("test AUC (triple: mean pairwise)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8)
    return fig


def cv_figure(records):
    """Mean validation AUC over the cross-validation folds at every checkpoint (± 1 SD), one panel per
    scenario, the chosen iteration marked."""
    recs = [r for r in records if r.cv is not None and r.cv.selected_iteration is not None]
    fig, axes = plt.subplots(1, len(recs), figsize=(3.6 * len(recs), 3.4), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, r in zip(axes[0], recs):
        it, mean, sd = (np.asarray(v) for v in (r.cv.curve_iterations, r.cv.curve_mean, r.cv.curve_sd))
        ax.plot(it, mean, marker=".", color="C0", label=f"mean of {r.cv.folds} folds")
        ax.fill_between(it, mean - sd, mean + sd, color="C0", alpha=0.2, label="± 1 SD")
        ax.axvline(r.cv.selected_iteration, color="C3", ls="--", lw=1,
                   label=f"chosen: iteration {r.cv.selected_iteration}")
        ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
        ax.set_title(r.scenario, fontsize=9)
        ax.set_xlabel("training iteration")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("validation AUC (held-out folds)")
    fig.suptitle(f"Cross-validation: validation AUC by training length, {recs[0].experiment}", fontsize=10)
    return fig


def smoothing_window(iters):
    """Moving-average length of the training curves: a fifth of the run, at most MAX_SMOOTHING."""
    return max(1, min(MAX_SMOOTHING, iters // 5))


def smoothing_words(k):
    return "no smoothing (too few iterations)" if k == 1 else f"moving average over {k} iterations"


def _curve(rows, key, k):
    """Iterations and the moving average over ``k`` iterations of one log column (first point at k)."""
    it = np.array([int(r["iteration"]) for r in rows])
    v = np.array([float(r[key]) for r in rows])
    k = min(k, len(v))
    return it[k - 1:], np.convolve(v, np.ones(k) / k, mode="valid")


def lr_steps(rows):
    """Iterations at which the logged learning rate changed."""
    lr = np.array([float(r["lr"]) for r in rows])
    return [int(rows[i]["iteration"]) for i in np.flatnonzero(np.diff(lr)) + 1]


def training_figure(out, records, experiment, k):
    """Small multiples of one experiment: a row per scenario, loss and minibatch accuracy, a line
    per test fraction, each smoothed over ``k`` iterations; dotted verticals where the lr dropped."""
    recs = [r for r in records if r.experiment == experiment]
    scenarios = list(dict.fromkeys(r.scenario for r in recs))
    fracs = sorted({r.test_fraction for r in recs})
    fig, axes = plt.subplots(len(scenarios), 2, figsize=(9, 1.9 * len(scenarios) + 1.2), squeeze=False,
                             sharex=True, layout="constrained")
    for row, scen in zip(axes, scenarios):
        for rec in (r for r in recs if r.scenario == scen):
            rows = read_log(out / "jobs" / rec.job / "train_log.csv")
            if not rows:
                continue
            color = f"C{fracs.index(rec.test_fraction)}"
            for ax, key in zip(row, ("loss", "accuracy")):
                ax.plot(*_curve(rows, key, k), color=color, lw=1.2)
                for step in lr_steps(rows):
                    ax.axvline(step, color="0.4", lw=0.8, ls=":")
        row[0].set_ylabel(f"{scen}\nloss", fontsize=8)
        row[1].set_ylabel("accuracy (minibatch)", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("iteration")
    fig.legend([Line2D([], [], color=f"C{i}") for i in range(len(fracs))], [f"test {_pct(f)}" for f in fracs],
               loc="outside lower center", ncol=len(fracs), fontsize=8)
    fig.suptitle(f"Training, {EXPERIMENT_TITLES[experiment]}: {smoothing_words(k)}; dotted lines: lr steps",
                 fontsize=10)
    return fig


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


def kernels_used(env):
    """The run's ``alexnet_np.backend.kernels_used()`` as the runner recorded it; None when it did not
    (jobs on Dask workers, whose counts stay there, or a run from before the record existed)."""
    if env.get("kernels_used") is None:
        return None
    return KernelsUsed(tuple(KernelUse(**u) for u in env["kernels_used"]))


def section_header(cfg, env, command):
    used = kernels_used(env)
    return ["# Reproduction report: Aboutalib et al., Clin Cancer Res 2018",
            "", f"Generated {env['date']} by alexnet_np (preset `{cfg.preset}`, backend `{env['backend']}`"
            + (f", GPU {env['gpu']}" if "gpu" in env else "")
            + (f", kernels: {', '.join(used.implementations)}" if used and used.uses else "") + ").", "",
            "## How to reproduce", "", "```", command, "```", ""]


def section_deviations(cfg, cohorts):
    lines = ["## What differs from the paper's setting", ""]
    lines += [f"- {d}" for d in deviations(cfg)]
    synthetic = [a.dataset.upper() for a in cohorts if a.dataset not in cfg.data]
    lines += ["", "Paper values are from the paper's text (Figs. 1-4, 5% test split) and its Table 1. "
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
                  "Each scenario then draws equal numbers per class from the images read (Table 1 below).", ""]
    return lines


def _images(total, per_class):
    return f"{total:,} ({'/'.join(f'{n:,}' for n in per_class)})"


def _paper_table1(experiment, scenario):
    """The paper's Table 1 cells for this experiment and scenario, (train, test), as printed."""
    t = PAPER["table1_images"][experiment]["negative-vs-benign" if scenario == "negative-vs-benign" else "others"]
    return (f"{t['train']:,} ({t['train_per_class']:,} per category)",
            f"{t['test']:,} ({t['test_per_class']:,} per category)")


def section_table1(cfg, records):
    """Table 1: training and test images per experiment and scenario at every test fraction, beside the paper's."""
    fracs = sorted({r.test_fraction for r in records})
    header = ["experiment", "scenario"]
    for tf in fracs:
        header += [f"train, test set {_pct(tf)}", f"test, test set {_pct(tf)}"]
    header += ["paper train (test set 5%)", "paper test (test set 5%)"]
    rows = []
    for exp in cfg.experiments:
        for scen in cfg.scenarios:
            cells = {r.test_fraction: r for r in records if r.experiment == exp and r.scenario == scen}
            if not cells:
                continue
            row = [exp, scen]
            for tf in fracs:
                r = cells.get(tf)
                row += [_images(r.n_train, r.n_train_per_class), _images(r.n_test, r.n_test_per_class)] if r \
                    else ["--", "--"]
            rows.append(row + list(_paper_table1(exp, scen)))
    return ["### Table 1: images used for training and testing", "",
            "Images, total (per class, in the scenario's class order). The paper's Table 1 (copied as printed) "
            "lists negative vs recalled-benign apart and the five other scenarios, the triple one included, "
            "under \"Others\", with one count per category; its totals are two-class totals, so the triple "
            "scenario's total here is three times the count per category beside the paper's two. Incremental: the "
            "FFDM fine-tuning stage (the DDSM pretraining draws from every DDSM image).",
            "", _table(header, rows), ""]


def section_results_intro(cfg):
    lines = ["## Results", "",
             "AUC: test-set area under the ROC curve (triple: mean of the pairwise AUCs, Hand & Till). "
             "CIs are 95%: `DeLong` from DeLong's variance; `bootstrap (images)` resamples test images "
             f"(stratified, {cfg.n_boot} replicates); `bootstrap (patients)` resamples whole "
             "patients, which accounts for the correlation between a patient's images and is wider; the "
             "figures' legends quote it. "
             "Spec@86.9% is the specificity at the radiologists' sensitivity of 86.9% (the paper: 0.87 for its "
             "best malignant-vs-negative model, radiologists 0.889). Per breast and per patient (binary scenarios; "
             "not in the paper, which reports images): the AUC of the mean score of a breast's test images (its "
             "views) and of the maximum over a patient's breasts, as screening reads and as recent benchmarks "
             "score (RSNA 2023: per breast); n = breasts or patients. The image level stays the headline, as in "
             "the paper.", "", "Scenarios:", ""]
    for name in cfg.scenarios:
        sc = SCENARIOS[name]
        lines.append(f"- `{name}`: {sc.description}" + (f"; positive class (the ROC score is its probability): "
                                                        f"{sc.class_names[1]}" if sc.binary else ""))
    return lines + [""]


def _experiment_row(cfg, r):
    b = r.binary
    ci = lambda name, value: _fmt_ci(value) + _ci_marks(r.flags, name) if value else "--"  # noqa: E731
    row = [r.scenario, _images(r.n_train, r.n_train_per_class), _images(r.n_test, r.n_test_per_class),
           f"{r.auc:.3f}" + _auc_marks(r.flags),
           ci("DeLong", b and b.ci95_delong), ci("bootstrap (images)", b and b.ci95_bootstrap),
           ci("bootstrap (patients)", b and b.ci95_bootstrap_patient),
           f"{b.operating_point.specificity:.2f}" if b else "--", _level(r.breast), _level(r.patient),
           _paper_auc(r.experiment, r.scenario)]
    if cfg.cv >= 2:
        row.insert(-1, "--" if not r.cv else f"{r.cv.mean:.3f} ± {r.cv.sd:.3f}"
                   + (f" (iteration {r.cv.selected_iteration})" if r.cv.selected_iteration is not None else ""))
    return row


def _level(lvl):
    """A breast- or patient-level AUC cell: AUC (DeLong CI), n."""
    if lvl is None:
        return "--"
    if lvl.auc is None:
        return f"-- (n = {lvl.n}, {lvl.n_positive} positive)"
    return f"{lvl.auc:.3f} ({_fmt_ci(lvl.ci95_delong)}), n = {lvl.n}"


def section_experiment(out, cfg, records, experiment, test_fraction):
    """One experiment's table at one test fraction, its pairwise AUCs and its ROC figure (Figs. 1-4)."""
    recs = [r for r in records if r.experiment == experiment and r.test_fraction == test_fraction]
    if not recs:
        return []
    header = ["scenario", "train (per class)", "test (per class)", "AUC", "DeLong CI", "bootstrap CI (images)",
              "bootstrap CI (patients)", "spec@86.9%", "per breast: AUC (DeLong CI)", "per patient: AUC (DeLong CI)",
              "paper AUC (CI), test set 5%"]
    if cfg.cv >= 2:
        header.insert(-1, f"{cfg.cv}-fold CV AUC")
    lines = [f"### {EXPERIMENT_TITLES[experiment]}, test set {_pct(test_fraction)} of the patients", "",
             _table(header, [_experiment_row(cfg, r) for r in recs]), ""]
    for r in recs:
        lines += [f"- **{r.scenario}**: {m}" for m in r.flags.messages()]
    if any(r.flags.messages() for r in recs):
        lines.append("")
    for r in recs:
        if r.triple is not None:
            lines += ["Triple scenario, pairwise AUCs: " + ", ".join(f"{p.name} {p.auc:.3f}" for p in r.triple.pairs),
                      ""]
    fig = _save(roc_figure(recs, experiment, test_fraction), out / "figures" / f"roc_{experiment}.png")
    lines += [f"![ROC curves, {experiment}, test set {_pct(test_fraction)}](figures/{fig.name})", ""]
    if cfg.cv >= 2 and cfg.cv_select == "iterations":
        fig = _save(cv_figure(recs), out / "figures" / f"cv_{experiment}.png")
        lines += [f"Cross-validation (the paper: \"Internal validation is based on 6-fold cross validation of "
                  f"training data in the CNN model training phase, reducing overfitting and calibrating accuracy "
                  f"of the training process\"): {cfg.cv} folds over the training patients, each trained on "
                  f"{cfg.cv - 1}/{cfg.cv} of them and scored on the rest at every checkpoint; the iteration with "
                  "the best mean validation AUC is the training length of the reported model (and of the "
                  "false-negative models), which trains on the whole training split. The table gives the fold "
                  "AUCs at that iteration (mean ± SD).", "", f"![cross-validation curves, {experiment}](figures/{fig.name})", ""]
    elif cfg.cv >= 2:
        lines += [f"Cross-validation: {cfg.cv} folds over the training patients, each model trained on "
                  f"{cfg.cv - 1}/{cfg.cv} and scored on the rest (mean ± SD of the fold AUCs). Reported only: "
                  "it selects nothing (--cv-select none).", ""]
    return lines


def _paper_incremental(scenario):
    paper = PAPER["experiments"]["incremental"]["auc"].get(scenario)
    if not paper:
        return "--"
    p = "" if paper["p_delong"] is None else f" (p = {paper['p_delong']:.2f})"
    return f"{paper['baseline_auc']:.2f} -> {paper['auc']:.2f}{p}"


def section_incremental(out, records):
    """Baseline against incremental AUCs with the paired DeLong p at every test fraction (Fig. 4)."""
    inc = [r for r in records if r.incremental is not None]
    if not inc:
        return []
    rows = [[_pct(r.test_fraction), r.scenario, f"{r.incremental.baseline_auc:.3f}", f"{r.auc:.3f}",
             "--" if r.incremental.p_delong is None else f"{r.incremental.p_delong:.3f}",
             _paper_incremental(r.scenario)]
            for r in sorted(inc, key=lambda r: r.test_fraction)]
    fig = _save(incremental_figure(inc), out / "figures" / "incremental.png")
    return ["### Incremental transfer vs baseline (same FFDM test images, paired DeLong test)", "",
            f"Pretraining: {inc[0].incremental.pretrained_on}. The triple scenario has no paired test (as in the "
            "paper).", "",
            _table(["test set", "scenario", "baseline AUC (FFDM only)", "incremental AUC", "p (DeLong)",
                    "paper, test set 5%: baseline -> incremental (p)"], rows), "",
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
    fig = _save(robustness_figure(records), out / "figures" / "robustness.png")
    return ["### Robustness over the test fraction (Fig. 5)", "",
            "Test AUC of every model; the sections above give the CIs at the first test fraction, "
            "`results.json` at every one.", "",
            _table(["experiment", "scenario"] + [f"AUC, test set {_pct(f)}" for f in fracs], rows), "",
            f"![robustness](figures/{fig.name})", ""]


def section_operating_point(records):
    """Specificity at the radiologists' 86.9% sensitivity, malignant vs negative, beside the paper's."""
    recs = [r for r in records if r.scenario == "malignant-vs-negative" and r.binary is not None]
    if not recs:
        return []
    sens, spec = RADIOLOGISTS
    paper = PAPER["operating_point"]["best_model_malignant_vs_negative_specificity_at_0.869"]
    rows = [[r.experiment, _pct(r.test_fraction), f"{r.binary.operating_point.threshold:.3f}",
             f"{r.binary.operating_point.sensitivity:.3f}", f"{r.binary.operating_point.specificity:.3f}",
             _images(r.n_test, r.n_test_per_class)] for r in recs]
    best = max(recs, key=lambda r: r.binary.operating_point.specificity)
    return ["### Specificity at the radiologists' sensitivity (malignant vs negative)", "",
            f"The paper: \"Using previously reported radiologists' overall sensitivity {100 * sens:g}% as a reference "
            f"threshold, our best deep learning model for classifying malignant versus negative yields a specificity "
            f"of {100 * paper:g}%, comparable with radiologists' overall specificity of {100 * spec:g}%\" (which "
            "experiment's model is not said). Here: the ROC point with the best specificity among those whose "
            "sensitivity reaches 86.9%, on each test set.", "",
            _table(["experiment", "test set", "threshold", "sensitivity", "specificity", "test images (negative/"
                    "malignant)"], rows), "",
            f"Best here: {best.binary.operating_point.specificity:.3f} ({best.experiment}, test set "
            f"{_pct(best.test_fraction)}); the paper's best model {paper}; radiologists {spec}.", ""]


#: each false-negative design here, what it does, and the paper's analysis it matches (paper_results.json)
FN_DESIGNS = {"separate": ("a model retrained without the interval-cancer patients scores them",
                           "correctly_identified_trained_without"),
              "holdout": ("the main model, whose training and test sets left the interval-cancer patients out, "
                          "scores them", "correctly_identified_trained_without"),
              "halves": ("the interval-cancer patients in two halves, each half's images scored by a model trained "
                         "on the `separate` model's images plus the other half's (every image scored once, unseen)",
                         "correctly_identified_half_in_training")}


def _fn_row(r, design, n_patients, detection):
    """One analysis of one record; ``detection`` has n_images and the shares called malignant at both rules."""
    paper = PAPER["false_negative_analysis"][FN_DESIGNS[design][1]].get(r.scenario)
    return [r.experiment, r.scenario, _pct(r.test_fraction), design, f"{detection.n_images} ({n_patients} patients)",
            f"{100 * detection.share_called_malignant_at_0_5:.1f}%",
            f"{100 * detection.share_called_malignant_at_threshold:.1f}%",
            "--" if paper is None else f"{100 * paper:.1f}%"]


def _fn_rows(records):
    rows = []
    for r in sorted(records, key=lambda r: r.test_fraction):
        if r.false_negative_analysis is not None:
            a = r.false_negative_analysis
            rows.append(_fn_row(r, a.mode, a.n_patients, a.detection))
        if r.false_negative_halves is not None:
            h = r.false_negative_halves
            rows.append(_fn_row(r, "halves", h.n_patients, h.pooled))
    return rows


def section_false_negatives(records):
    """Interval cancers called malignant, beside both of the paper's analyses."""
    rows = _fn_rows(records)
    if not rows:
        return []
    paper = PAPER["false_negative_analysis"]
    paper_rows = [[scen, f"{100 * paper['correctly_identified_trained_without'][scen]:.1f}%",
                   f"{100 * paper['correctly_identified_half_in_training'][scen]:.1f}%"]
                  for scen in paper["correctly_identified_trained_without"]]
    return ["### False-negative analysis (interval cancers)", "",
            "Share of interval-cancer images the model calls malignant, by two rules: the model's own "
            "decision (P(malignant) >= 0.5) and the threshold that gives 86.9% sensitivity on the test set. "
            "Designs: " + "; ".join(f"`{mode}`: {what}" for mode, (what, _) in FN_DESIGNS.items()
                                    if mode in {row[3] for row in rows}) + ". "
            "Beside each, the paper's share ('correctly identified') from its analysis of the same design.", "",
            _table(["experiment", "scenario", "test set", "design", "interval-cancer images", "called malignant "
                    "(p >= 0.5)", "called malignant (86.9% threshold)", "paper, same design"],
                   rows), "",
            f"The paper's two analyses, FFDM, {paper['interval_cancer_patients']} interval-cancer patients: first "
            "retrained without them and scored them all; then trained with half of them and scored the other half.",
            "", _table(["scenario", "paper: trained without them", "paper: half of them in training"], paper_rows),
            ""]


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


def section_training(out, cfg, records):
    """Small multiples of the training curves, one figure per experiment."""
    k = smoothing_window(cfg.iters)
    lines = ["### Training curves", "",
             f"Training loss and minibatch accuracy of every reported model, {smoothing_words(k)}"
             + (f" (each point is the mean of the {k} iterations up to it)" if k > 1 else "")
             + "; dotted vertical lines: the learning rate divided by "
             f"{1 / cfg.gamma:g} (every {cfg.lr_step} iterations). Incremental: the FFDM fine-tuning stage.", ""]
    for exp in cfg.experiments:
        if any(r.experiment == exp for r in records):
            fig = _save(training_figure(out, records, exp, k), out / "figures" / f"training_{exp}.png")
            lines += [f"![training curves, {exp}](figures/{fig.name})", ""]
    return lines


def section_files():
    return ["## Files", "",
            "- `results.json`: every number above, one record per scenario x experiment x test fraction",
            "- `predictions.csv`: one row per test image of every reported model: `y_true` (the scenario's class, "
            "1 = positive), `score` (the positive class's probability), `p0..pK`; `python -m stats predictions.csv "
            "--label-col y_true --score-col score --group-col patient_id` recomputes a single binary model's AUC "
            "and CIs (with several models, take one model's rows)",
            "- `predictions_interval.csv` (when interval cancers are held out): the same columns for the "
            "interval-cancer images the main models scored",
            "- `jobs/<experiment>/<scenario>/<test fraction>/<main|cvK|fn|fn-halfK>/`: `model.h5` (the trained "
            "model, self-contained: `python run.py predict MODEL.h5 IMAGES...` scores new images with it), "
            "`job.h5` (what the job trains on), `train_log.csv`, `predictions.h5`",
            "- `config.json`, `environment.json`: the settings and the software/hardware of this run", ""]


def section_environment(cfg, env, timings, records):
    fracs = sorted({r.test_fraction for r in records})
    rows = []
    for exp in cfg.experiments:
        for scen in cfg.scenarios:
            secs = {r.test_fraction: r.seconds for r in records if r.experiment == exp and r.scenario == scen}
            rows.append([exp, scen] + [f"{secs[f]:.0f}" if f in secs else "--" for f in fracs])
    return ["## Environment and timing", "",
            f"numpy {env.get('numpy')}, BLAS {env.get('blas')}, backend {env['backend']}"
            + (f", GPU {env['gpu']}" if "gpu" in env else "") + f", {env['cpu_count']} CPU cores. "
            f"Data preparation {timings.get('data_s', 0):.0f} s, whole run {timings.get('total_s', 0):.0f} s.", "",
            *section_kernels(env),
            _table(["experiment", "scenario"] + [f"seconds, test set {_pct(f)}" for f in fracs], rows), ""]


def section_kernels(env):
    """Which implementation (reference / fast CPU / im2col + GEMM / Winograd / CUDA) each op of the network ran."""
    used = kernels_used(env)
    if used is None:
        return [f"Kernels: not recorded (the jobs ran on {env['cluster']}, which count their own).", ""] \
            if "kernels_used" in env else []
    if not used.uses:
        return ["Kernels: none ran in this process (every model was reused from an earlier run).", ""]
    return ["Kernels that ran, by implementation (`alexnet_np.backend.kernels_used()`, counted over this run's "
            "training and scoring; `environment.json` has the calls per op):", ""] + \
        [f"- {line}" for line in used.summary().splitlines()] + [""]


def write_report(out, cfg, records, cohorts, env, timings, command, provenance=None, explanations=None,
                 explain_note="", tolerance_px=TOLERANCE_PX):
    """Write figures and report.md under ``out``, one section after the other; returns report.md's path.
    ``explanations``: pipeline.explain's records of the run's models (Grad-CAM figures, pointing game),
    shown with ``explain_note`` after the section's heading."""
    out = Path(out)
    (out / "figures").mkdir(exist_ok=True)
    first_tf = cfg.test_fractions[0]
    lines = section_header(cfg, env, command) + section_deviations(cfg, cohorts)
    lines += ["## Fidelity to the paper", ""] + fidelity_markdown(cfg) + [""]
    lines += section_cohorts(cohorts)
    lines += section_table1(cfg, records)
    lines += section_results_intro(cfg)
    for exp in cfg.experiments:
        lines += section_experiment(out, cfg, records, exp, first_tf)
    lines += section_incremental(out, records)
    lines += section_robustness(out, cfg, records)
    lines += section_operating_point(records)
    lines += section_false_negatives(records)
    lines += section_training(out, cfg, records)
    if explanations:
        lines += explain_markdown(explanations, tolerance_px, explain_note) + [""]
    lines += section_files()
    lines += section_environment(cfg, env, timings, records)
    lines += section_provenance(provenance)
    path = out / "report.md"
    with atomic_output(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path
