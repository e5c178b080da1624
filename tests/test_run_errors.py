"""run.py never misleads: faulty input is one line `error: ...` and exit 2 before any work,
dropped images are counted, Ctrl-C says how to continue, degenerate results are marked, and the
outputs say what they hold (predictions.csv feeds `python -m stats` as it is)."""
import csv
import json
import os
import shlex
import subprocess
import sys

import h5py
import numpy as np
import pytest

import run
from alexnet_np import AlexNet, save_weights
from pipeline import evaluate
from pipeline.data import ImageSet, synthetic_dataset
from pipeline.scenarios import get_scenario
from pipeline.plan import EvalSet, Job
from pipeline.records import result_flags

MINI = ["8", "12", "12", "12", "8", "16", "16"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _argv(tmp_path, *extra, out=True):
    """A tiny run (the cohort test_pipeline's runs share, 0 or few iterations of a miniature net)."""
    argv = ["--patients", "ffdm=30", "ddsm=30", "--iters", "0", "--input-size", "67", "--widths", *MINI,
            "--batch-size", "8", "--n-boot", "50", "--cache-dir", str(tmp_path.parent / "cache"),
            "--device", "cpu", "--no-progress", "--workers", "2", "--test-fraction", "0.25", *extra]
    return argv + (["--out", str(tmp_path / "run")] if out else [])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """The synthetic FFDM-like cohort of the tiny runs (built once per session, cached): its manifest path."""
    built = synthetic_dataset("ffdm", n_patients=30, seed=0, difficulty=0.1, image_size=None, size=67,
                              cache_dir=tmp_path_factory.getbasetemp() / "cache", workers=2, progress=False)
    return built.parent / "manifest.csv"


# ----------------------------------------------------------------------------- faulty input, found first
def _bad_inputs(tmp_path):
    (tmp_path / "notes.txt").write_text("not a manifest")
    (tmp_path / "bad.csv").write_text("image_path,patient_id\nx.dcm,P1\n")
    (tmp_path / "plain.h5").write_bytes(b"not hdf5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["something"] = 1
    save_weights(AlexNet(2, variant="torchvision", input_size=67, widths=[int(w) for w in MINI]),
                 tmp_path / "tv.h5", mean=(1.0, 1.0, 1.0), source="test")
    save_weights(AlexNet(2, input_size=67, widths=[int(w) * 2 for w in MINI]), tmp_path / "wide.h5",
                 mean=(1.0, 1.0, 1.0), source="test")
    (tmp_path / "fresh").mkdir()
    return [
        (["--test-fraction", "0"], "--test-fraction 0.0"),
        (["--test-fraction", "1"], "--test-fraction 1.0"),
        (["--test-fraction", "1.5"], "--test-fraction 1.5"),
        (["--batch-size", "0"], "--batch-size 0"),
        (["--cv", "1"], "--cv 1"),
        (["--iters", "-5"], "--iters -5"),
        (["--input-size", "20"], "--input-size 20"),
        (["--grain-scale", "0"], "--grain-scale 0"),
        (["--finding-scale", "-2"], "--finding-scale -2"),
        (["--scenario", "benign-vs-malignant"], "--scenario benign-vs-malignant"),
        (["--patients", "ffdm=0"], "--patients ffdm=0"),
        (["--data", "ffdm"], "--data 'ffdm'"),
        (["--data", f"ffdm={tmp_path / 'missing.csv'}"], "missing.csv: no such file"),
        (["--data", f"ffdm={tmp_path / 'notes.txt'}"], "notes.txt: expected a manifest .csv"),
        (["--data", f"ffdm={tmp_path / 'bad.csv'}"], "bad.csv:"),
        (["--data", f"ffdm={tmp_path / 'plain.h5'}"], "plain.h5: expected a dataset"),
        (["--data", f"ffdm={tmp_path / 'other.h5'}"], "other.h5: expected a dataset"),
        (["--experiment", "combined", "--data", f"ffdm={tmp_path / 'other.h5'}"], "also needs ddsm=PATH"),
        (["--pretrained", str(tmp_path / "nothing.h5")], "--pretrained"),
        (["--pretrained", str(tmp_path / "notes.txt")], "not an HDF5 weights file"),
        (["--pretrained", str(tmp_path / "tv.h5")], "holds 'torchvision' weights"),
        (["--pretrained", str(tmp_path / "wide.h5")], "conv1.weight"),
        (["--resume", "--out", str(tmp_path / "fresh")], "no run there"),
        (["--resume", "--out", str(tmp_path / "never-made")], "no run there"),
    ]


def test_faulty_input_is_one_line_exit_2_and_leaves_nothing_behind(tmp_path, capsys):
    """Each faulty option or file: exit 2, one stderr line `error: ...` naming it, no traceback,
    no run folder and no data cache made (nothing was generated or built)."""
    for extra, named in _bad_inputs(tmp_path):
        argv = ["--patients", "ffdm=30", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
                "--no-progress", "--out", str(tmp_path / "run")] + extra
        assert run.main(argv) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and named in err[0], (extra, err)
        assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists(), extra
    assert not any((tmp_path / "fresh").iterdir())


@pytest.mark.skipif(__import__("alexnet_np").backend._import_cupy() is not None, reason="a GPU is present")
def test_device_gpu_without_cupy_is_a_user_error(tmp_path, capsys):
    assert run.main(_argv(tmp_path) + ["--device", "gpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --device gpu: ")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- dropped images are counted
def test_skipped_images_are_counted_on_the_console_in_results_and_in_the_report(tmp_path, cohort, capsys):
    """The cohort's manifest (n images) plus 10 bad rows (5 missing files, 5 that are not DICOM):
    10 of n + 10 (above the 5% threshold) are skipped, said everywhere, with a loud warning."""
    with open(cohort, newline="") as f:
        rows = list(csv.DictReader(f))
    n = len(rows)
    share = f"{100 * 10 / (n + 10):.1f}%"
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    for k in range(10):
        path = bad_dir / f"X{k}.dcm"
        if k >= 5:
            path.write_bytes(b"not a DICOM file")
        rows.append(dict(rows[0], image_path=str(path), patient_id=f"X{k}", exam_id=f"XE{k}", label="malignant"))
    manifest = tmp_path / "with_bad_rows.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "image_path": str((cohort.parent / r["image_path"]).resolve())
                     if not r["image_path"].startswith("/") else r["image_path"]} for r in rows)
    assert run.main(_argv(tmp_path, "--data", f"ffdm={manifest}")) == 0
    out = capsys.readouterr().out
    assert f"{n + 10} images in the manifest, {n} read" in out and "10 skipped (missing file 5, " in out
    assert out.count(f"WARNING: ffdm: 10 of {n + 10} images ({share}, more than 5%)") == 2  # after the build, at the end
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    (c,) = res["cohorts"]
    assert (c["n_manifest"], c["n_read"], c["n_skipped"]) == (n + 10, n, 10)
    assert c["skipped_by_reason"]["missing file"] == 5 and sum(c["skipped_by_reason"].values()) == 10
    assert c["skipped_by_label"]["malignant"] == 10 and sum(c["read_by_label"].values()) == n
    assert c["skipped_share"] == pytest.approx(10 / (n + 10)) and str(manifest) in c["origin"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Data" in report and f"| {n + 10} | {n} | 10 (missing file 5, " in report and f"**{share}: more" in report
    # the data are the user's: the report names them and does not call them synthetic
    assert f"your data: --data ffdm={manifest}" in report and "synthetic" not in report.split("## Data")[0]


def test_rebuild_builds_the_dataset_again(tmp_path, cohort, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text(cohort.read_text().replace("images/", f"{cohort.parent}/images/"))
    argv = _argv(tmp_path, "--data", f"ffdm={manifest}", out=False)
    assert run.main(argv + ["--out", str(tmp_path / "a")]) == 0
    built = json.loads((tmp_path / "a" / "results.json").read_text())["cohorts"][0]["built_file"]
    first = os.stat(built).st_mtime_ns
    assert run.main(argv + ["--out", str(tmp_path / "b"), "--rebuild"]) == 0
    assert os.stat(built).st_mtime_ns > first  # built again (data_prep's tests check that a build is reused)


def test_unusable_data_found_while_building_is_an_error_and_removes_the_new_run_folder(tmp_path, capsys):
    """A manifest whose every image is missing passes the up-front checks (files are not opened
    there); the build finds none usable: one error line, exit 2, no stub run folder."""
    rows = ["image_path,patient_id,exam_id,laterality,view,label,source"]
    rows += [f"none{k}.dcm,P{k},E{k},L,CC,{('negative', 'malignant')[k % 2]},ffdm" for k in range(6)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    assert run.main(_argv(tmp_path, "--data", f"ffdm={tmp_path / 'm.csv'}")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "none of the 6 images" in err[0]
    assert not (tmp_path / "run").exists()


def test_data_without_a_scenario_class_is_an_error_before_training(tmp_path, cohort, capsys):
    """A user's manifest with no malignant image and the scenario malignant vs negative: found when the
    scenario's classes are drawn, after the build and before any training; one error line, exit 2."""
    with open(cohort, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["label"] != "malignant"]
    for r in rows:
        r["image_path"] = str(cohort.parent / r["image_path"])
    with open(tmp_path / "no_malignant.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    argv = _argv(tmp_path, "--data", f"ffdm={tmp_path / 'no_malignant.csv'}", "--iters", "2")
    assert run.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: scenario malignant-vs-negative: a class has no images"), err
    assert "malignant 0" in err[0] and "training side of the ffdm data" in err[0]
    assert not list((tmp_path / "run").glob("jobs/**/model.h5"))


# ----------------------------------------------------------------------------- interrupting
def test_ctrl_c_prints_the_command_that_continues_the_run(tmp_path, monkeypatch, capsys):
    """The run folder is printed first; Ctrl-C in the middle ends with exit 130 and the exact command
    that continues (with the default folder, which the user never typed); that command finishes it.
    Then the finished run: the same command without --resume, or with other settings, is refused."""
    import pipeline.jobs
    monkeypatch.chdir(tmp_path)
    real = pipeline.jobs.run_job
    started = []

    def interrupted(*a, **k):
        started.append(1)
        if len(started) > 1:  # the first model finishes, the second is interrupted
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(pipeline.jobs, "run_job", interrupted)
    argv = _argv(tmp_path, "--scenario", "malignant-vs-negative", "triple", "--iters", "2", out=False)
    assert run.main(argv) == 130
    captured = capsys.readouterr()
    first = captured.out.splitlines()[0]
    assert first.startswith("run folder: runs/")
    folder = first.split(": ", 1)[1]
    hint = captured.err.strip().splitlines()[-1]
    assert hint.startswith("interrupted; continue with: python run.py ") and hint.endswith(f"--resume --out {folder}")
    monkeypatch.setattr(pipeline.jobs, "run_job", real)
    assert run.main(shlex.split(hint.split("continue with: ", 1)[1])[2:]) == 0
    runs = json.loads((tmp_path / folder / "results.json").read_text())["runs"]
    assert [r["scenario"] for r in runs] == ["malignant-vs-negative", "triple"]
    capsys.readouterr()
    assert run.main(argv + ["--out", folder]) == 2
    assert "already holds a run; expected --resume" in capsys.readouterr().err
    assert run.main(argv + ["--out", folder, "--resume", "--lr", "0.5"]) == 2
    assert "lr: 0.008 -> 0.5" in capsys.readouterr().err


# ----------------------------------------------------------------------------- degenerate results are marked
def test_untrained_models_and_small_test_sets_are_marked(tmp_path, capsys):
    """--iters 0 and a test set of a few patients per class: flagged in results.json, marked next to
    the numbers in report.md, and warned about after the AUCs, which are the console's last lines."""
    assert run.main(_argv(tmp_path, "--scenario", "malignant-vs-negative", "triple")) == 0
    out = capsys.readouterr().out.strip().splitlines()
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    for r in res["runs"]:
        assert r["flags"]["untrained"] is True and "test patients" in r["flags"]["small_test_set"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert report.count("**(untrained)**") == 2 and "**(too few patients)**" in report
    tail = out[next(i for i, line in enumerate(out) if line.startswith("test AUCs, image level (95% CI: DeLong;")):]
    binary = res["runs"][0]
    d_lo, d_hi = binary["binary"]["ci95_delong"]
    assert tail[1].startswith(f"  ffdm / malignant-vs-negative / test 0.25: AUC {binary['auc']:.3f} (DeLong {d_lo:.2f}-"
                              f"{d_hi:.2f}; patients {{:.2f}}-{{:.2f}})".format(*binary["binary"]["ci95_bootstrap_patient"]))
    assert tail[2].startswith("    WARNING: untrained model (0 iterations)")
    assert any(line.startswith("  ffdm / triple / test 0.25: AUC ") for line in tail)


def test_zero_width_cis_and_constant_scores_are_flagged():
    """Two patients per class perfectly separated: every CI is (1, 1); and a network that gives every
    image the same probabilities is flagged as such."""
    scenario = get_scenario("malignant-vs-negative")
    ds = ImageSet("ffdm", np.zeros((8, 4, 4), np.uint8), np.array([0] * 4 + [2] * 4), np.repeat(["a", "b", "c", "d"], 2),
                  np.zeros(8, np.int8), np.array([f"i{k}" for k in range(8)]), np.full(8, "ffdm"), {})
    job = Job("k", ds, scenario, np.arange(8), np.repeat([0, 1], 4), {"test": EvalSet(np.arange(8), None)}, iters=5)
    y = np.repeat([0, 1], 4)
    separated = evaluate.Predictions(np.arange(8), y, np.stack([1 - y * 0.8, y * 0.8 + 0.1], axis=1))
    metrics = evaluate.binary_metrics(y, separated.positive_score, ds.patient_id, n_boot=50)
    flags = result_flags(scenario, job, separated, metrics, pretrain_iters=0)
    assert flags.zero_width_cis == ["DeLong", "bootstrap (images)", "bootstrap (patients)"]
    assert flags.small_test_set == "2 negative test patients" and not flags.untrained and not flags.constant_scores
    constant = evaluate.Predictions(np.arange(8), y, np.full((8, 2), 0.5))
    assert result_flags(scenario, job, constant, None, 0).constant_scores
    assert any("zero-width CI" in m for m in flags.messages())


# ----------------------------------------------------------------------------- honest outputs
def test_predictions_csv_feeds_the_stats_command_line_as_it_is(tmp_path, capsys):
    """One binary model: `python -m stats predictions.csv --label-col y_true --score-col score
    --group-col patient_id` gives the AUC and CIs of results.json."""
    assert run.main(_argv(tmp_path, "--iters", "3", "--checkpoint-every", "3")) == 0
    run_dir = tmp_path / "run"
    rec = json.loads((run_dir / "results.json").read_text())["runs"][0]
    with open(run_dir / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == rec["n_test"] and {r["y_true"] for r in rows} == {"0", "1"}
    assert all((r["y_true"] == "1") == (r["dataset_label"] == "malignant") for r in rows)
    assert all(r["score"] == r["p1"] for r in rows)
    got = subprocess.run([sys.executable, "-m", "stats", str(run_dir / "predictions.csv"), "--label-col", "y_true",
                          "--score-col", "score", "--group-col", "patient_id", "--n-boot", "50"],
                         capture_output=True, text=True, cwd=REPO)
    assert got.returncode == 0, got.stderr
    assert float(got.stdout.split("AUC")[1].split()[0]) == pytest.approx(rec["auc"], abs=1e-3)
    lo, hi = rec["binary"]["ci95_delong"]
    assert f"{lo:.4f} - {hi:.4f}" in got.stdout, got.stdout
    lo, hi = rec["binary"]["ci95_bootstrap_patient"]
    assert f"{lo:.4f} - {hi:.4f}" in got.stdout
    if (run_dir / "predictions_interval.csv").exists():  # interval cancers: malignant, so positive
        with open(run_dir / "predictions_interval.csv", newline="") as f:
            assert {r["y_true"] for r in csv.DictReader(f)} == {"1"}


# ----------------------------------------------------------------------------- one command line
def test_help_lists_the_subcommands_and_the_presets_values():
    got = subprocess.run([sys.executable, "run.py", "--help"], cwd=REPO, capture_output=True, text=True)
    assert got.returncode == 0
    for name in ("predict", "explain", "standin", "--preset {demo,paper,tiny}", "--cv-select"):
        assert name in got.stdout, name
    # the options are derived from StudyConfig: its help appends both presets' values
    assert "[paper: 0.001; demo: 0.008]" in " ".join(got.stdout.split())


@pytest.mark.parametrize("argv, needle", [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--iters", "many"], "argument --iters: invalid int value: 'many'"),
    (["predict"], "the following arguments are required"),
    (["predict", "m.h5", "x.png", "--out", "s.csv", "--workers", "0"], "--workers: got '0', expected a whole number"),
    (["explain", "no/such/run"], "RUN_DIR no/such/run: no results.json there"),
    (["explain", "x", "--methods", "lime"], "argument --methods: invalid choice: 'lime'"),
    (["standin"], "the following arguments are required: --out"),
    (["standin", "--out", "w.h5", "--classes", "1"], "--classes 1: expected an integer >= 2"),
])
def test_every_subcommands_bad_input_is_one_error_line(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    assert run.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and len(captured.err.strip().splitlines()) == 1, captured.err
    assert needle in captured.err and captured.out == ""
