"""The auditors' command line: python -m stats predictions.csv [other.csv] ..."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import stats
from stats._cli import main

REPO = Path(__file__).resolve().parents[1]


def write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


@pytest.fixture
def data():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 120)
    a = np.round(rng.normal(size=120) + y, 3)
    b = np.round(a + rng.normal(size=120), 3)
    ids = [f"img{k}" for k in range(120)]
    patient = [f"p{k // 4}" for k in range(120)]
    return y, a, b, ids, patient


@pytest.fixture
def files(tmp_path, data):
    y, a, b, ids, patient = data
    first = write_csv(
        tmp_path / "a.csv", ["id", "patient", "y", "score"], zip(ids, patient, y, a, strict=True)
    )
    order = np.random.default_rng(0).permutation(len(y))  # same cases, other row order
    second = write_csv(
        tmp_path / "b.csv", ["id", "y", "score"], ((ids[k], y[k], b[k]) for k in order)
    )
    return first, second


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_one_file_prints_auc_and_both_intervals(files, data, capsys):
    y, a, *_ = data
    code, out, _ = run(
        [files[0], "--label-col", "y", "--score-col", "score", "--n-boot", "300"], capsys
    )
    assert code == 0
    assert f"{stats.auc(y, a):.4f}" in out
    _, lo, hi = stats.delong_ci(y, a)
    assert f"95% CI, DeLong              {lo:.4f} - {hi:.4f}" in out
    _, lo, hi = stats.bootstrap_ci(y, a, n_boot=300)
    assert f"95% CI, bootstrap           {lo:.4f} - {hi:.4f}" in out
    assert "120 cases" in out and "300 replicates, seed 0" in out


def test_group_column_adds_the_patient_level_interval(files, data, capsys):
    y, a, _, _, patient = data
    argv = [
        files[0],
        "--label-col",
        "y",
        "--score-col",
        "score",
        "--group-col",
        "patient",
        "--seed",
        "3",
    ]
    code, out, _ = run(argv + ["--n-boot", "200", "--level", "0.9"], capsys)
    _, lo, hi = stats.bootstrap_ci(y, a, n_boot=200, level=0.9, seed=3, groups=patient)
    assert code == 0
    assert f"90% CI, group bootstrap     {lo:.4f} - {hi:.4f}" in out
    assert "resampling 30 whole groups" in out


def test_two_files_with_matching_ids_are_paired(files, data, capsys):
    y, a, b, *_ = data
    argv = [*files, "--label-col", "y", "--score-col", "score", "--id-col", "id", "--n-boot", "50"]
    code, out, _ = run(argv, capsys)
    result = stats.delong_test(y, a, b)
    assert code == 0
    assert "DeLong test, paired (paired on 120 cases matched by id)" in out
    assert f"z = {result.z:.4f}, two-sided p = {result.p_value:.4g}" in out


def test_two_files_without_ids_are_unpaired(files, data, capsys):
    y, a, b, *_ = data
    code, out, _ = run(
        [*files, "--label-col", "y", "--score-col", "score", "--n-boot", "50"], capsys
    )
    result = stats.delong_test_unpaired(y, a, y, b)
    assert code == 0
    assert "DeLong test, unpaired (no --id-col given" in out
    assert f"z = {result.z:.4f}" in out


def test_two_files_with_disjoint_ids_are_unpaired(tmp_path, files, capsys):
    other = write_csv(
        tmp_path / "c.csv",
        ["id", "y", "score"],
        [["x1", 0, 0.2], ["x2", 1, 0.7], ["x3", 0, 0.4], ["x4", 1, 0.3]],
    )
    argv = [files[0], other, "--label-col", "y", "--score-col", "score", "--id-col", "id"]
    code, out, _ = run(argv + ["--n-boot", "50"], capsys)
    assert code == 0
    assert "unpaired (the files share no id" in out


def test_roc_png_is_written(files, tmp_path, capsys):
    png = tmp_path / "roc.png"
    argv = [
        *files,
        "--label-col",
        "y",
        "--score-col",
        "score",
        "--roc-png",
        str(png),
        "--n-boot",
        "20",
    ]
    code, out, _ = run(argv, capsys)
    assert code == 0 and f"ROC plot written to {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "rows, message",
    [
        (
            [["1", "0.3"], ["0", "abc"]],
            r"bad.csv, line 3, column 'score': expected a finite number, got 'abc'",
        ),
        (
            [["1", "0.3"], ["0", "nan"]],
            r"line 3, column 'score': expected a finite number, got 'nan'",
        ),
        ([["1", ""], ["0", "0.1"]], r"line 2, column 'score': expected a finite number, got ''"),
        ([["1", "0.3"], ["2", "0.1"]], r"line 3, column 'y': expected a label 0 or 1, got '2'"),
        ([["yes", "0.3"], ["0", "0.1"]], r"line 2, column 'y': expected a label 0 or 1, got 'yes'"),
        ([["1", "0.3"], ["1", "0.1"]], r"bad.csv: y_true contains only class 1"),
        ([], r"bad.csv: no data rows"),
    ],
)
def test_bad_csv_rows(tmp_path, capsys, rows, message):
    path = write_csv(tmp_path / "bad.csv", ["y", "score"], rows)
    code, out, err = run([path, "--label-col", "y", "--score-col", "score"], capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ")
    assert __import__("re").search(message, err), err


def test_bad_csv_files(tmp_path, files, capsys):
    cases = [
        ([str(tmp_path / "missing.csv")], "missing.csv: cannot read the file"),
        (
            [files[0], "--id-col", "case"],
            "a.csv: no column 'case' (given by --id-col); "
            "the header has 'id', 'patient', 'y', 'score'",
        ),
        ([files[1], "--group-col", "patient"], "b.csv: no column 'patient' (given by --group-col)"),
        ([write_csv(tmp_path / "empty.csv", [], [])], "empty.csv: no data rows"),
        ([files[0], "--level", "95"], "level must be a number strictly between 0 and 1"),
        ([files[0], "--n-boot", "0"], "n_boot must be an integer >= 1"),
    ]
    for extra, message in cases:
        code, _, err = run([*extra, "--label-col", "y", "--score-col", "score"], capsys)
        assert code == 2 and message in err, err


def test_id_problems_between_two_files(tmp_path, files, capsys):
    base = ["--label-col", "y", "--score-col", "score", "--id-col", "id", "--n-boot", "20"]
    partial_rows = [["img0", 1, 0.3], ["zz", 0, 0.1], ["img1", 1, 0.2], ["zy", 0, 0.5]]
    partial = write_csv(tmp_path / "p.csv", ["id", "y", "score"], partial_rows)
    code, _, err = run([files[0], partial, *base], capsys)
    assert code == 2 and "share 2 ids but not all of them" in err
    repeated_rows = [["a", 1, 0.3], ["a", 0, 0.1], ["b", 1, 0.2], ["c", 0, 0.5]]
    repeated = write_csv(tmp_path / "r.csv", ["id", "y", "score"], repeated_rows)
    code, _, err = run([repeated, files[0], *base], capsys)
    assert code == 2 and "r.csv: the id column has repeated ids" in err
    one = write_csv(
        tmp_path / "one.csv",
        ["id", "y", "score"],
        [["a", 1, 0.3], ["b", 0, 0.1], ["c", 1, 0.2], ["d", 0, 0.5]],
    )
    flipped = write_csv(
        tmp_path / "two.csv",
        ["id", "y", "score"],
        [["a", 0, 0.3], ["b", 0, 0.1], ["c", 1, 0.2], ["d", 1, 0.5]],
    )
    code, _, err = run([one, flipped, *base], capsys)
    assert code == 2 and "id 'a' has label 1 in" in err


def test_python_dash_m_entry_point(files):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stats",
            files[0],
            "--label-col",
            "y",
            "--score-col",
            "score",
            "--n-boot",
            "20",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "AUC" in done.stdout
    assert (
        subprocess.run(
            [sys.executable, "-m", "stats", "--help"], cwd=REPO, capture_output=True
        ).returncode
        == 0
    )


def test_roc_png_that_cannot_be_written_is_refused_before_computing(files, tmp_path, capsys, monkeypatch):
    import stats._cli as cli

    monkeypatch.setattr(cli, "_report_one", lambda *a: pytest.fail("computed before checking --roc-png"))
    base = [files[0], "--label-col", "y", "--score-col", "score", "--roc-png"]
    cases = [
        (str(tmp_path / "missing" / "roc.png"), "the folder"),
        (str(tmp_path), "is a folder"),
        (files[0], "is one of the prediction files"),
    ]
    for png, message in cases:
        code, out, err = run([*base, png], capsys)
        assert code == 2 and out == "" and err.startswith("error: --roc-png ") and message in err, err
        assert err.count("\n") == 1
    assert not (tmp_path / "missing").exists()
    assert Path(files[0]).read_text().startswith("id,patient,y,score")
