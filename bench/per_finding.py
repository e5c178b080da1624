"""Which findings a run's models found: for every binary model of a run on a synthetic cohort, the
AUC of each group of test images (by class and kinds of finding, from the cohort's findings.csv)
against all test images of the other class.

    python bench/per_finding.py RUN_DIR COHORT_DIR [--scenario NAME ...]

COHORT_DIR is the synthetic cohort's folder (the one holding manifest.csv and findings.csv, e.g.
data_cache/synthetic/ffdm-p1000-s0-...; the run prints it). An AUC near 0.5 for a group means the
model does not tell those images from the other class: bench/demo_design.md used this to find that
the demo's models missed calcifications. Incidental findings (lymph nodes, vascular calcifications,
in every class) are left out of the groups' names.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from stats import auc  # noqa: E402


def finding_names(cohort_dir: Path) -> dict:
    """image path (relative to the cohort) -> 'kind,kind' of its non-incidental findings ('none')."""
    kinds = defaultdict(set)
    with open(cohort_dir / "findings.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["role"] != "incidental":
                kinds[row["image_path"]].add(row["finding"])
    return defaultdict(lambda: "none", {path: ",".join(sorted(k)) for path, k in kinds.items()})


def group_aucs(y_true, score, groups):
    """{(class, group): (n, AUC of that group's images against every image of the other class)}."""
    out = {}
    for cls in (0, 1):
        other = score[y_true != cls]
        for group in sorted(set(groups[y_true == cls])):
            mine = score[(y_true == cls) & (groups == group)]
            y = np.r_[np.ones(mine.size), np.zeros(other.size)]
            s = np.r_[mine, other] if cls == 1 else np.r_[-mine, -other]  # class 0: low scores are right
            out[cls, group] = (mine.size, auc(y, s))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("cohort_dir", type=Path)
    ap.add_argument("--scenario", nargs="+", default=None, help="only these scenarios")
    args = ap.parse_args(argv)
    names = finding_names(args.cohort_dir)
    rows = defaultdict(list)
    with open(args.run_dir / "predictions.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["score"] and (args.scenario is None or row["scenario"] in args.scenario):
                rows[row["model"]].append(row)
    for model, mine in rows.items():
        y = np.array([int(r["y_true"]) for r in mine])
        score = np.array([float(r["score"]) for r in mine])
        groups = np.array([f"{r['dataset_label']}: {names[r['image_path']]}" for r in mine])
        print(f"{model}  (all test images: AUC {auc(y, score):.3f}, {y.size} images)")
        for (cls, group), (n, value) in group_aucs(y, score, groups).items():
            print(f"  class {cls}  {group:50s} n={n:4d}  AUC against class {1 - cls}: {value:.2f}")


if __name__ == "__main__":
    main()
