"""What a study run prints at its end: where everything is, the loud warnings, every model's AUC with
its CIs, the trained model files and a ready ``predict`` command, and how to continue a stopped run."""
from __future__ import annotations

import shlex
from pathlib import Path


def resume_command(argv, out) -> str:
    """The command that continues this run: the same options with ``--resume --out OUT``."""
    keep, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--out":
            skip = True
        elif arg != "--resume" and not arg.startswith("--out="):
            keep.append(arg)
    return "python run.py " + shlex.join(keep + ["--resume", "--out", str(out)])


def summary_lines(out: Path, records, cohorts) -> list[str]:
    """The run's last console lines: report and results, the loud warnings, each model's AUC and CI,
    each reported model's file and a command that scores new images with the first one."""
    out = Path(out)
    lines = ["", f"report: {out / 'report.md'}", f"results: {out / 'results.json'}"]
    lines += [a.warning() for a in cohorts if a.too_many_skipped]
    lines.append("test AUCs, image level (95% CI: DeLong; bootstrap over patients); then per breast (mean of its "
                 "views) and per patient (max over breasts), with their counts:")
    for r in records:
        what = f"  {r.experiment} / {r.scenario} / test {r.test_fraction:g}: AUC {r.auc:.3f}"
        if r.binary is not None:
            what += (f" (DeLong {r.binary.ci95_delong[0]:.2f}-{r.binary.ci95_delong[1]:.2f}; patients "
                     f"{r.binary.ci95_bootstrap_patient[0]:.2f}-{r.binary.ci95_bootstrap_patient[1]:.2f})")
            what += "".join(f"; {lvl.level} {lvl.auc:.3f} ({lvl.n})" for lvl in (r.breast, r.patient)
                            if lvl is not None and lvl.auc is not None)
        else:
            what += " (mean of the pairwise AUCs; no CI)"
        lines.append(what)
        lines += [f"    WARNING: {m}" for m in r.flags.messages()]
    models = [out / "jobs" / r.job / "model.h5" for r in records]
    if models:
        lines.append("trained models (self-contained: weights, input mean, preprocessing):")
        lines += [f"  {m}" for m in models]
        lines.append("score new images with one of them (DICOM/PNG files, folders or a manifest CSV):")
        lines.append("  " + shlex.join(["python", "run.py", "predict", str(models[0]), "IMAGES...", "--out",
                                        str(out / "scores.csv")]))
    return lines
