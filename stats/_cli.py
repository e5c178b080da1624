"""Command line for auditors: AUC, DeLong CI, bootstrap CI and DeLong test
from prediction CSV files, optionally with an ROC plot.

    python -m stats predictions.csv [other.csv] --label-col y --score-col score
        [--id-col id] [--group-col patient] [--roc-png roc.png]
        [--n-boot 2000] [--seed 0] [--level 0.95]
"""

import argparse
import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._bootstrap import bootstrap_ci
from ._delong import delong_ci, delong_test, delong_test_unpaired
from ._roc import auc, roc_curve
from ._validate import check_level, check_n_boot


@dataclass
class Predictions:
    path: str
    labels: np.ndarray
    scores: np.ndarray
    ids: list | None
    groups: list | None


def _parse_label(text):
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value in (0.0, 1.0) else None


def _parse_score(text):
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_predictions(path, label_col, score_col, id_col=None, group_col=None):
    """Read one CSV file of predictions; errors name the file, line and column."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
            header = [] if not rows else list(rows[0].keys())
    except OSError as err:
        raise ValueError(f"{path}: cannot read the file ({err.strerror})") from None
    if not rows:
        raise ValueError(f"{path}: no data rows; expected a header line and one row per case")
    wanted = {
        "--label-col": label_col,
        "--score-col": score_col,
        "--id-col": id_col,
        "--group-col": group_col,
    }
    for option, column in wanted.items():
        if column is not None and column not in header:
            raise ValueError(
                f"{path}: no column {column!r} (given by {option}); the header has "
                f"{', '.join(map(repr, header))}"
            )
    labels, scores = [], []
    # line 1 is the header
    for line, row in enumerate(rows, start=2):
        for column, parse, expected, out in (
            (label_col, _parse_label, "a label 0 or 1", labels),
            (score_col, _parse_score, "a finite number", scores),
        ):
            value = parse(row[column] or "")
            if value is None:
                raise ValueError(
                    f"{path}, line {line}, column {column!r}: expected {expected}, "
                    f"got {row[column]!r}"
                )
            out.append(value)
    ids = None if id_col is None else [row[id_col] for row in rows]
    groups = None if group_col is None else [row[group_col] for row in rows]
    return Predictions(path, np.array(labels), np.array(scores), ids, groups)


def _report_one(pred, n_boot, seed, level):
    n_pos = int(pred.labels.sum())
    percent = f"{100 * level:g}% CI"
    try:
        value, d_lo, d_hi = delong_ci(pred.labels, pred.scores, level)
        _, b_lo, b_hi = bootstrap_ci(pred.labels, pred.scores, n_boot, level, seed=seed)
        lines = [
            f"{pred.path}: {len(pred.labels)} cases ({n_pos} positive, "
            f"{len(pred.labels) - n_pos} negative)",
            f"  {'AUC':<28}{value:.4f}",
            f"  {percent + ', DeLong':<28}{d_lo:.4f} - {d_hi:.4f}",
            f"  {percent + ', bootstrap':<28}{b_lo:.4f} - {b_hi:.4f}   "
            f"(case-level, stratified percentile, {n_boot} replicates, seed {seed})",
        ]
        if pred.groups is not None:
            _, g_lo, g_hi = bootstrap_ci(
                pred.labels, pred.scores, n_boot, level, seed=seed, groups=pred.groups
            )
            lines.append(
                f"  {percent + ', group bootstrap':<28}{g_lo:.4f} - {g_hi:.4f}   "
                f"(resampling {len(set(pred.groups))} whole groups, stratified percentile)"
            )
    except ValueError as err:
        raise ValueError(f"{pred.path}: {err}") from None
    return lines


def _pairing(first, second):
    """Reorder ``second`` to match ``first`` by id, or return None with the reason."""
    if first.ids is None:
        return None, "no --id-col given, so rows cannot be matched between the files"
    for pred in (first, second):
        if len(set(pred.ids)) != len(pred.ids):
            raise ValueError(f"{pred.path}: the id column has repeated ids; ids must be unique")
    shared = set(first.ids) & set(second.ids)
    if not shared:
        return None, "the files share no id, so they are independent samples"
    if len(shared) != len(first.ids) or len(shared) != len(second.ids):
        raise ValueError(
            f"{first.path} and {second.path} share {len(shared)} ids but not all of them "
            f"({len(first.ids)} and {len(second.ids)} rows); a paired test needs the same "
            "cases in both files, an unpaired one disjoint cases"
        )
    position = {case: k for k, case in enumerate(second.ids)}
    order = np.array([position[case] for case in first.ids])
    differs = np.flatnonzero(first.labels != second.labels[order])
    if differs.size:
        raise ValueError(
            f"id {first.ids[differs[0]]!r} has label {first.labels[differs[0]]} in "
            f"{first.path} but {second.labels[order][differs[0]]} in {second.path}"
        )
    return second.scores[order], f"paired on {len(shared)} cases matched by id"


def _report_comparison(first, second):
    paired_scores, how = _pairing(first, second)
    if paired_scores is None:
        result = delong_test_unpaired(first.labels, first.scores, second.labels, second.scores)
        title = f"DeLong test, unpaired ({how})"
    else:
        result = delong_test(first.labels, first.scores, paired_scores)
        title = f"DeLong test, paired ({how})"
    return [
        f"{first.path} vs {second.path}: {title}",
        f"  AUC {result.auc_a:.4f} vs {result.auc_b:.4f}, difference {result.difference:+.4f}",
        f"  z = {result.z:.4f}, two-sided p = {result.p_value:.4g}",
    ]


def write_roc_plot(predictions, path):
    """ROC curves of all files on one figure, written as PNG with the Agg backend."""
    # Figure + FigureCanvasAgg (no pyplot): never changes the caller's backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for pred in predictions:
        fpr, tpr, _ = roc_curve(pred.labels, pred.scores)
        value = auc(pred.labels, pred.scores)
        axes.plot(fpr, tpr, label=f"{pred.path} (AUC {value:.3f})")
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
    axes.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1))
    axes.legend(loc="lower right", fontsize="small")
    figure.savefig(path, dpi=100)


def check_roc_png(path, inputs):
    """Refuse an ROC path that cannot be written, before any computing: its folder
    must exist (a typo should not create folders) and it must not be a folder or an input file."""
    target = Path(path)
    if not target.resolve().parent.is_dir():
        raise ValueError(
            f"--roc-png {path}: the folder {target.parent} does not exist "
            "(expected a PNG path in an existing folder)"
        )
    if target.is_dir():
        raise ValueError(f"--roc-png {path}: is a folder (expected a PNG file path)")
    if target.resolve() in {Path(p).resolve() for p in inputs}:
        raise ValueError(
            f"--roc-png {path}: is one of the prediction files; it would be overwritten "
            "(expected another path)"
        )


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m stats",
        description="AUC with DeLong and bootstrap confidence intervals, and the DeLong "
        "test between two prediction files (paired when --id-col matches every row).",
    )
    parser.add_argument("files", nargs="+", metavar="predictions.csv", help="one or two CSV files")
    parser.add_argument("--label-col", required=True, help="column with the true label, 0 or 1")
    parser.add_argument(
        "--score-col", required=True, help="column with the score; higher = positive"
    )
    parser.add_argument("--id-col", help="case id column; pairs the rows of two files")
    parser.add_argument(
        "--group-col", help="patient id column; adds a bootstrap CI over whole groups"
    )
    parser.add_argument(
        "--roc-png", help="write the ROC curve(s) to this PNG file (its folder must exist)"
    )
    parser.add_argument(
        "--n-boot", type=int, default=2000, help="bootstrap replicates (default 2000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.files) > 2:
        parser.error("give one or two prediction files")
    try:
        check_level(args.level)
        check_n_boot(args.n_boot)
        if args.roc_png:
            check_roc_png(args.roc_png, args.files)
        predictions = [
            read_predictions(path, args.label_col, args.score_col, args.id_col, args.group_col)
            for path in args.files
        ]
        lines = []
        for pred in predictions:
            lines += _report_one(pred, args.n_boot, args.seed, args.level)
        if len(predictions) == 2:
            lines += _report_comparison(*predictions)
        if args.roc_png:
            write_roc_plot(predictions, args.roc_png)
            lines.append(f"ROC plot written to {args.roc_png}")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0
