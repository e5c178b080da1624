"""The results of a tiny run are the ones recorded before the pipeline was split into one-concern
modules (tests/data/golden_tiny_run.json: results.json's records, every test probability and the
Grad-CAM checks of commit f29be0d, made with the command line stored beside them).

Restructuring code must not change a single result; a later change that does on purpose records
the new numbers here with the reason. Floats are compared to 1e-6: the run trains with one BLAS
thread, so on the same BLAS they agree bit for bit, and a different CPU's kernels may round the
last bits of a float32 sum differently.
"""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOLDEN = json.loads((REPO / "tests" / "data" / "golden_tiny_run.json").read_text())
ONE_THREAD = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def assert_matches(want, got, where="results"):
    """``got`` holds everything ``want`` holds (extra keys allowed: new results may be added), numbers
    within 1e-6."""
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{where}: expected a mapping, got {got!r}"
        for key, value in want.items():
            assert key in got, f"{where}: {key!r} missing"
            assert_matches(value, got[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for k, (a, b) in enumerate(zip(want, got)):
            assert_matches(a, b, f"{where}[{k}]")
    elif isinstance(want, float) and not isinstance(got, bool) and isinstance(got, (int, float)):
        assert math.isclose(want, got, rel_tol=1e-6, abs_tol=1e-6), f"{where}: {got} != {want}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def _numbers(row):
    return {k: (float(v) if (k == "score" or k[:1] == "p" and k[1:].isdigit()) and v else v) for k, v in row.items()}


def test_a_tiny_run_gives_the_recorded_results(tmp_path):
    out = tmp_path / "run"
    got = subprocess.run([sys.executable, "run.py", *GOLDEN["argv"], "--cache-dir", str(tmp_path / "cache"),
                          "--out", str(out)], cwd=REPO, env=dict(os.environ, **ONE_THREAD),
                         capture_output=True, text=True)
    assert got.returncode == 0, got.stderr[-3000:]
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["job"] for r in runs] == [r["job"] for r in GOLDEN["runs"]]
    assert_matches(GOLDEN["runs"], runs, "runs")
    preds = []
    for name in ("predictions.csv", "predictions_interval.csv"):
        with open(out / name, newline="") as f:
            for row in csv.DictReader(f):
                preds.append(dict(row, image_path=os.path.basename(row["image_path"]), file=name))
    assert len(preds) == len(GOLDEN["predictions"]) > 50
    assert_matches([_numbers(r) for r in GOLDEN["predictions"]], [_numbers(r) for r in preds], "predictions")
    explained = json.loads((out / "explain.json").read_text())["results"]
    assert_matches(GOLDEN["explain"], [{"job": r["job"], "pointing_game": r["pointing_game"],
                                        "randomization": r["randomization"]} for r in explained], "explain")
