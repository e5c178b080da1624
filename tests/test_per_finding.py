"""bench/per_finding.py: AUC per group of findings, each group against every image of the other class."""
import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest

SPEC = importlib.util.spec_from_file_location("per_finding", Path(__file__).parent.parent / "bench" / "per_finding.py")
per_finding = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(per_finding)


def test_each_group_is_ranked_against_the_other_class_only():
    # negatives score 0.1..0.4; masses are all above them, calcifications all below
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    score = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.05, 0.15])
    groups = np.array(["neg", "neg", "neg", "neg", "mass", "mass", "calcs", "calcs"])
    out = per_finding.group_aucs(y, score, groups)
    assert out[1, "mass"] == (2, 1.0)
    assert out[1, "calcs"][1] == pytest.approx(1 / 8)   # 0.15 beats only the negative at 0.1
    assert out[0, "neg"][1] == pytest.approx(0.5 * 1.0 + 0.5 * (1 / 8))  # class 0: below the masses, mostly above the calcs


def test_command_line_groups_by_the_cohorts_findings(tmp_path, capsys):
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    with open(cohort / "findings.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_path", "finding", "role"])
        w.writerows([["a.dcm", "oval_mass", "recalled_benign"], ["b.dcm", "punctate_calcs", "recalled_benign"],
                     ["c.dcm", "lymph_node", "incidental"]])
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "scenario", "image_path", "dataset_label", "y_true", "score"])
        w.writerows([["m", "negative-vs-benign", "a.dcm", "recalled_benign", 1, 0.9],
                     ["m", "negative-vs-benign", "b.dcm", "recalled_benign", 1, 0.2],
                     ["m", "negative-vs-benign", "c.dcm", "negative", 0, 0.5],
                     ["m", "negative-vs-benign", "d.dcm", "negative", 0, 0.4]])
    per_finding.main([str(run), str(cohort)])
    out = capsys.readouterr().out
    assert "AUC 0.500, 4 images" in out
    assert "recalled_benign: oval_mass" in out and "recalled_benign: punctate_calcs" in out
    assert "negative: none" in out and "lymph_node" not in out   # incidental findings name no group
    line = next(x for x in out.splitlines() if "punctate_calcs" in x)
    assert line.endswith("AUC against class 0: 0.00")
