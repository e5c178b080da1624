"""The study as a graph of jobs (pipeline/study.py on pipeline/cluster.py): the same results.json records
sequentially, on local:2, with a worker killed mid-job and through a real one-node SLURM; both
false-negative analyses choose the right interval-cancer patients and count as the paper does; a
dataset changed since the run started stops --resume.

Results are byte-identical between ways of running only with the same BLAS threads per model (threads
split float sums differently), so every run here trains with one thread: the sequential reference in a
subprocess with OPENBLAS_NUM_THREADS=1, the Dask workers with one core each.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import importlib

import dask
import h5py
import numpy as np
import pytest

# jobqueue's defaults must be in dask's configuration before the SLURM test's dask.config.set adds to it
importlib.import_module("dask_jobqueue")

import run  # noqa: E402
from pipeline import evaluate
from pipeline.cluster import open_client
from pipeline.config import resolve_config
from pipeline.data import ImageSet
from pipeline.config import study_options
from pipeline.jobs import PREDICTIONS, write_predictions
from pipeline.plan import interval_halves
from pipeline.study import Study, run_study

REPO = Path(__file__).resolve().parent.parent
MINI = ["8", "12", "12", "12", "8", "16", "16"]
ONE_THREAD = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def grid_argv(cache, out):
    """A tiny grid with a dependency: two scenarios, the ffdm and incremental experiments (the fine-tune
    waits for its DDSM stage; the comparison reads both models), the separate false-negative model."""
    return ["--patients", "ffdm=30", "ddsm=30", "--iters", "12", "--pretrain-iters", "6", "--input-size", "67",
            "--widths", *MINI, "--batch-size", "8", "--lr", "0.001", "--n-boot", "50", "--cache-dir", str(cache),
            "--device", "cpu", "--no-progress", "--workers", "2", "--checkpoint-every", "2",
            "--scenario", "malignant-vs-negative", "triple", "--experiment", "ffdm", "incremental",
            "--test-fraction", "0.25", "--fn-analysis", "separate", "--out", str(out)]


def records(out):
    """results.json's records without the timings, which differ between any two runs."""
    runs = json.loads((Path(out) / "results.json").read_text())["runs"]
    for r in runs:
        r.pop("seconds")
    return runs


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """The reference: run.py without --cluster, one BLAS thread, in a fresh process."""
    base = tmp_path_factory.getbasetemp()
    out = tmp_path_factory.mktemp("grid") / "sequential"
    env = dict(os.environ, **ONE_THREAD)
    got = subprocess.run([sys.executable, "run.py", *grid_argv(base / "cache", out)], cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert got.returncode == 0, got.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def client():
    with open_client("local:2", cores=1) as c:
        yield c


def _cfg(argv):
    args = run.build_parser().parse_args(argv)
    overrides = {name: getattr(args, name) for name, _, _ in study_options()}
    overrides["progress"] = False
    return resolve_config(args.preset, overrides, "cpu"), args


def test_the_grid_on_local_workers_gives_the_sequential_records(sequential, client, tmp_path):
    cfg, args = _cfg(grid_argv(tmp_path.parent / "cache", tmp_path / "local"))
    run_study(cfg, args.out, cache_dir=args.cache_dir, client=client)
    got, want = records(args.out), records(sequential)
    assert [r["job"] for r in got] == [r["job"] for r in want] and len(got) == 4
    assert got == want
    jobs = {p.parent.relative_to(Path(args.out) / "jobs").as_posix() for p in Path(args.out).glob("jobs/**/job.h5")}
    assert "incremental/malignant-vs-negative/ddsm-pretrain" in jobs and "ffdm/malignant-vs-negative/tf0.25/fn" in jobs


def test_a_worker_killed_mid_job_gives_the_same_records(sequential, client, tmp_path):
    """kill -9 of the workers while a job is between two checkpoints: Dask reruns it on a restarted
    worker, it continues from its checkpoint, and the records equal the sequential run's."""
    cfg, args = _cfg(grid_argv(tmp_path.parent / "cache", tmp_path / "killed"))
    jobs = Path(args.out) / "jobs"
    pids = list(client.run(os.getpid).values())
    killed = []

    def kill_mid_job():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for ck in jobs.glob("**/checkpoint.h5"):
                if not (ck.parent / PREDICTIONS).exists():
                    killed.append(ck.parent.relative_to(jobs).as_posix())
                    for pid in pids:
                        os.kill(pid, signal.SIGKILL)
                    return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_mid_job)
    killer.start()
    run_study(cfg, args.out, cache_dir=args.cache_dir, client=client)
    killer.join()
    assert killed, "no job was caught between two checkpoints"
    assert (jobs / killed[0] / PREDICTIONS).exists()
    assert sorted(client.run(os.getpid).values()) != sorted(pids)    # the workers were restarted
    assert records(args.out) == records(sequential)


def _slurm_reason():
    if shutil.which("sinfo") is None:
        return "sinfo not found (run `bash bench/slurm_local.sh` as root to start a local SLURM)"
    deadline = time.monotonic() + 60   # a SLURM job of an earlier test (test_cluster's) may still be ending
    while True:
        state = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True).stdout.split()
        if (state and state[0].startswith(("idle", "mix"))) or time.monotonic() > deadline:
            break
        time.sleep(2)
    if not state or not state[0].startswith(("idle", "mix")):
        return f"no idle SLURM node (sinfo: {state or 'nothing'}); run `bash bench/slurm_local.sh`"
    return ""


def test_the_grid_through_slurm_gives_the_sequential_records(sequential, tmp_path, capsys):
    """run.py --cluster slurm on the one-node SLURM of bench/slurm_local.sh (one core per SLURM job,
    so one BLAS thread, as the reference)."""
    reason = _slurm_reason()
    if reason:
        print(f"skipping the SLURM test: {reason}")
        pytest.skip(reason)
    out = tmp_path / "slurm"
    argv = grid_argv(tmp_path.parent / "cache", out) + [
        "--cluster", "slurm", "--slurm-cores", "1", "--slurm-memory", "2GB", "--slurm-walltime", "00:10:00"]
    with dask.config.set({"jobqueue.slurm.log-directory": str(tmp_path / "slurm-logs"),
                          "jobqueue.slurm.scheduler-options": {"dashboard": False}}):
        assert run.main(argv) == 0
    assert records(out) == records(sequential)
    assert json.loads((out / "environment.json").read_text())["cluster"] == "Dask slurm"


# ----------------------------------------------------------------------------- false-negative analyses
def _interval_set(n_patients=48, seed=3):
    """Four images a patient; a third of the patients malignant, half of those interval cancers."""
    rng = np.random.default_rng(seed)
    plabel = np.tile([0, 1, 2], n_patients // 3)
    pid = np.repeat([f"ffdm:P{i}" for i in range(n_patients)], 4)
    labels = np.repeat(plabel, 4)
    interval = np.repeat((plabel == 2) & (np.arange(n_patients) % 2 == 0), 4).astype(np.int8)
    n = len(labels)
    return ImageSet("ffdm", rng.integers(0, 256, (n, 9, 9), dtype=np.uint8), labels.astype(np.int64), pid, interval,
                    np.array([f"i{k}.png" for k in range(n)]), np.full(n, "ffdm"), {})


def _study(tmp_path, fn_analysis):
    cfg = resolve_config("demo", {"fn_analysis": fn_analysis, "progress": False}, "cpu")
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "ffdm.h5").write_bytes(b"")   # the worker's copy; planning uses the loaded set
    return Study(cfg, {"ffdm": _interval_set()}, tmp_path / "run", files={"ffdm": tmp_path / "ffdm.h5"},
                 log=lambda *a: None)


def _patients(ds, idx):
    return set(ds.patient_id[np.asarray(idx)])


def test_false_negative_analyses_choose_the_right_interval_cancer_patients(tmp_path):
    study = _study(tmp_path, "separate")
    ds = study.dataset_for("ffdm")
    interval = set(ds.patient_id[ds.interval_cancer == 1])
    assert len(interval) == 8
    for scenario in ("malignant-vs-negative", "malignant-vs-benign"):
        plan = study.plan(scenario, "ffdm", 0.25)
        fn = plan.fn
        # first analysis: trained and tested without any interval-cancer patient, scores all their images
        assert not _patients(ds, fn.train_idx) & interval and not _patients(ds, fn.eval_sets["test"].index) & interval
        assert set(fn.eval_sets["interval"].index) == set(np.flatnonzero(ds.interval_cancer == 1))
        # second: two halves by patient, each scored by the model trained with the other one only
        a, b = plan.fn_halves
        with_a, scored_a = _patients(ds, a.train_idx) & interval, _patients(ds, a.eval_sets["interval"].index)
        with_b, scored_b = _patients(ds, b.train_idx) & interval, _patients(ds, b.eval_sets["interval"].index)
        assert with_a == scored_b and with_b == scored_a and not with_a & with_b and with_a | with_b == interval
        assert len(with_a) == len(with_b) == 4
        for half in (a, b):
            assert not _patients(ds, half.train_idx) & _patients(ds, half.eval_sets["interval"].index)
            assert not _patients(ds, half.train_idx) & _patients(ds, half.eval_sets["test"].index)
            n_fn = len(fn.train_idx)   # the first analysis's training set, plus that half's images as malignant
            assert np.array_equal(half.train_idx[:n_fn], fn.train_idx)
            added = half.train_idx[n_fn:]
            assert set(added) == set(np.flatnonzero(np.isin(ds.patient_id, list(_patients(ds, added)))))
            assert np.all(half.train_y[n_fn:] == 1) and np.all(ds.labels[added] == 2)
        # the halves are the run's, whatever the scenario
        assert [set(h) for h in interval_halves(study.cfg, sorted(interval))] in ([with_a, with_b], [with_b, with_a])
    separate_main = study.plan("malignant-vs-negative", "ffdm", 0.25).main
    assert "interval" not in separate_main.eval_sets   # the paper's main model is not changed by the analysis
    assert _patients(ds, separate_main.train_idx) & interval
    holdout = _study(tmp_path / "h", "holdout").plan("malignant-vs-negative", "ffdm", 0.25)
    assert not (_patients(ds, holdout.main.train_idx) | _patients(ds, holdout.main.eval_sets["test"].index)) & interval
    assert _patients(ds, holdout.main.eval_sets["interval"].index) == interval and not holdout.fn_halves


def test_false_negative_shares_count_images_called_malignant(tmp_path):
    """'Correctly identified' = an interval-cancer image whose P(malignant) reaches the rule's threshold
    (0.5, or the one giving 86.9% sensitivity on that model's test set); the share is over images, and
    the second analysis pools both halves' images."""
    study = _study(tmp_path, "separate")
    plan = study.plan("malignant-vs-negative", "ffdm", 0.25)
    rng = np.random.default_rng(0)
    interval_p = {}
    for job in plan.jobs():
        results = {}
        for name, s in job.eval_sets.items():
            label = s.label if s.label is not None else np.full(len(s.index), -1)
            p = rng.uniform(0, 1, len(s.index)) if s.label is None else np.where(label == 1, 0.4, 0.2) + rng.uniform(0, 0.5, len(label))
            results[name] = evaluate.Predictions(s.index, label, np.stack([1 - p, p], 1).astype(np.float32))
            if name == "interval":   # as stored (float32), with the test set that sets its threshold
                interval_p[job.key] = (results[name].positive_score, results["test"])
        (study.folder(job)).mkdir(parents=True, exist_ok=True)
        write_predictions(study.folder(job) / PREDICTIONS, results, {"seconds": 1.0})
    rec = study.record(plan)
    p_fn, test_fn = interval_p[plan.fn.key]
    t = evaluate.operating_threshold(test_fn)
    assert rec.false_negative_analysis.detection.share_called_malignant_at_0_5 == np.mean(p_fn >= 0.5)
    assert rec.false_negative_analysis.detection.share_called_malignant_at_threshold == np.mean(p_fn >= t)
    called, called_t, n = 0, 0, 0
    for job in plan.fn_halves:
        p, test = interval_p[job.key]
        called += int(np.sum(p >= 0.5))
        called_t += int(np.sum(p >= evaluate.operating_threshold(test)))
        n += len(p)
    pooled = rec.false_negative_halves.pooled
    assert (pooled.n_images, rec.false_negative_halves.n_patients) == (32, 8)   # 4 images a patient
    assert pooled.share_called_malignant_at_0_5 == called / n
    assert pooled.share_called_malignant_at_threshold == called_t / n


# ----------------------------------------------------------------------------- provenance
def test_resume_refuses_a_dataset_that_changed_since_the_run_started(tmp_path, capsys):
    """results.json and the report carry the code's commit and the dataset's fingerprint, manifest hash
    and (user data) manifest path; a rebuilt dataset at the same path stops --resume with one line."""
    from pipeline.data import synthetic_dataset
    built = synthetic_dataset("ffdm", n_patients=30, seed=0, difficulty=0.1, image_size=None, size=67,
                              cache_dir=tmp_path.parent / "cache", workers=2, progress=False)
    mine = tmp_path / "mine.h5"
    shutil.copy(built, mine)
    argv = ["--data", f"ffdm={mine}", "--iters", "0", "--input-size", "67", "--widths", *MINI, "--batch-size", "8",
            "--n-boot", "20", "--device", "cpu", "--no-progress", "--test-fraction", "0.25",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run")]
    assert run.main(argv) == 0
    prov = json.loads((tmp_path / "run" / "results.json").read_text())["provenance"]
    with h5py.File(mine, "r") as f:
        fingerprint, manifest = f.attrs["fingerprint"], f.attrs["manifest_path"]
    assert prov["datasets"]["ffdm"]["fingerprint"] == fingerprint
    assert prov["datasets"]["ffdm"]["manifest_path"] == manifest and len(prov["datasets"]["ffdm"]["manifest_sha256"]) == 64
    assert len(prov["git_commit"]) == 40 or prov["git_commit"] == "unknown"
    assert prov["git_commit"] in (tmp_path / "run" / "report.md").read_text()
    capsys.readouterr()
    assert run.main(argv + ["--resume"]) == 0                       # unchanged: continues
    with h5py.File(mine, "a") as f:                                  # rebuilt from other images
        f.attrs["fingerprint"] = "0" * 64
    capsys.readouterr()
    assert run.main(argv + ["--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --resume") and "ffdm dataset changed since the run started" in err[0]
