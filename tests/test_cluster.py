"""The job-graph engine (pipeline/cluster.py): same result files sequentially, on local Dask workers
(TLS on 127.0.0.1), on a plain tcp:// scheduler, after a worker is killed mid-job, and on a real
one-node SLURM through TLS (bench/slurm_local.sh); BLAS threads and devices per worker; idempotence;
the --cluster / --tls-* / --dashboard / --slurm-* checks; SLURM's temporary credentials."""
import argparse
import importlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import dask
import numpy as np
import pytest

from data_prep.fileio import atomic_output
# jobqueue's defaults must be in dask's configuration before a dask.config.set below adds to it
# (leaving a set() would otherwise remove them with the keys it added).
importlib.import_module("dask_jobqueue")

from pipeline.cluster import (CREDENTIALS_PREFIX, ClusterRequest, GridJob, JobsFailed, SlurmOptions,
                              add_cluster_arguments, cluster_arguments, cores_per_worker, open_client, parse_cluster,
                              run_jobs, slurm_cluster_kwargs, temporary_credentials, walltime_seconds)
from pipeline.errors import UserError

# ---------------------------------------------------------------------------- toy jobs
def _save(path, array):
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def make_matrix(path, seed):
    """A leaf job: a seeded matrix through a few BLAS products (slow enough for a second worker to
    start a dependent job too early if the order were not respected)."""
    x = np.random.default_rng(seed).standard_normal((64, 64))
    for _ in range(3):
        x = np.tanh(x @ x.T / 64)
    time.sleep(0.3)
    _save(path, x)


def combine(path, *inputs):
    """A job reading its dependencies' results (FileNotFoundError if it ran before them)."""
    arrays = [np.load(p) for p in inputs]
    _save(path, np.linalg.multi_dot(arrays) if len(arrays) > 1 else arrays[0] * 2)


def count_calls(path, counter):
    with open(counter, "a") as f:
        f.write("run\n")
    _save(path, np.arange(3))


def slow_checkpointed(path, steps, checkpoint, starts):
    """A long job that checkpoints every step and logs (pid, first step) at each start."""
    state, first = np.ones((32, 32)) / 32, 0
    if os.path.exists(checkpoint):
        with np.load(checkpoint) as ck:
            state, first = ck["state"], int(ck["step"])
    with open(starts, "a") as f:
        f.write(f"{os.getpid()} {first}\n")
    for step in range(first, steps):
        state = np.tanh(state @ state + step / steps)
        with atomic_output(checkpoint) as tmp, open(tmp, "wb") as f:
            np.savez(f, state=state, step=step + 1)
        time.sleep(0.15)
    _save(path, state)


def failing(path):
    raise ValueError("toy failure")


def blas_threads():
    import threadpoolctl
    return sorted({p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"})


def visible_device():
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def toy_graph(folder):
    """a, b -> c (a @ b); c -> d; e stands alone."""
    f = Path(folder)
    return [
        GridJob("d", combine, f / "d.npy", args=(f / "d.npy", f / "c.npy"), deps=("c",)),
        GridJob("a", make_matrix, f / "a.npy", args=(f / "a.npy", 1)),
        GridJob("c", combine, f / "c.npy", args=(f / "c.npy", f / "a.npy", f / "b.npy"), deps=("a", "b")),
        GridJob("b", make_matrix, f / "b.npy", args=(f / "b.npy", 2)),
        GridJob("e", make_matrix, f / "e.npy", args=(f / "e.npy", 3)),
    ]


def assert_same_files(paths_a: dict, paths_b: dict):
    assert paths_a.keys() == paths_b.keys()
    for key in paths_a:
        assert paths_a[key].read_bytes() == paths_b[key].read_bytes(), key


@pytest.fixture(scope="module")
def sequential_results(tmp_path_factory):
    return run_jobs(toy_graph(tmp_path_factory.mktemp("sequential")), progress=False)


@pytest.fixture(scope="module")
def client():
    """One local:2 cluster for the module (starting one costs seconds). Each worker is given 2 BLAS
    threads (Dask's default is 1) and one of two device ids (environment values only: no job here
    uses a GPU)."""
    with open_client("local:2", cores=2, gpus=("0", "1")) as c:
        yield c


# ---------------------------------------------------------------------------- sequential and local Dask
def test_sequential_runs_in_dependency_order_and_writes_every_result(sequential_results):
    a, b = np.load(sequential_results["a"]), np.load(sequential_results["b"])
    np.testing.assert_allclose(np.load(sequential_results["c"]), a @ b)
    np.testing.assert_allclose(np.load(sequential_results["d"]), 2 * a @ b)
    assert not np.array_equal(a, b)


def test_local_cluster_gives_the_sequential_files(client, sequential_results, tmp_path):
    assert_same_files(run_jobs(toy_graph(tmp_path), client=client, progress=False), sequential_results)


def test_local_workers_talk_tls_and_refuse_a_plain_connection(client):
    """local:N: TLS with credentials made in memory, on 127.0.0.1; a process without them is refused."""
    from distributed import Client
    address = client.scheduler.address
    assert address.startswith("tls://127.0.0.1:")
    assert all(w.startswith("tls://127.0.0.1:") for w in client.scheduler_info()["workers"])
    with pytest.raises(Exception):   # whatever Dask raises: no client without the credentials
        Client(address.replace("tls://", "tcp://"), timeout=3, set_as_default=False)


def test_tcp_address_reaches_a_running_scheduler(sequential_results, tmp_path):
    """A plain tcp:// scheduler (in-process workers, which import this module's jobs)."""
    from distributed import LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp://",
                      host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        results = run_jobs(toy_graph(tmp_path), where=cluster.scheduler_address, progress=False)
    assert_same_files(results, sequential_results)


def test_a_finished_job_is_not_run_again(client, tmp_path):
    counter = tmp_path / "calls.txt"
    job = GridJob("once", count_calls, tmp_path / "once.npy", args=(tmp_path / "once.npy", counter))
    run_jobs([job], progress=False)
    run_jobs([job], progress=False)
    run_jobs([job], client=client, progress=False)
    assert counter.read_text() == "run\n"


def test_skipped_dependency_lets_the_rest_run(client, sequential_results, tmp_path):
    """A run folder started elsewhere: the finished results are kept, the others computed."""
    for key in ("a", "b"):
        shutil.copy(sequential_results[key], tmp_path / f"{key}.npy")
    before = (tmp_path / "a.npy").stat().st_mtime_ns
    assert_same_files(run_jobs(toy_graph(tmp_path), client=client, progress=False), sequential_results)
    assert (tmp_path / "a.npy").stat().st_mtime_ns == before


def test_failures_are_collected_and_dependents_fail(client, tmp_path):
    jobs = [GridJob("bad", failing, tmp_path / "bad.npy", args=(tmp_path / "bad.npy",)),
            GridJob("after", combine, tmp_path / "after.npy", args=(tmp_path / "after.npy", tmp_path / "bad.npy"),
                    deps=("bad",)),
            GridJob("fine", make_matrix, tmp_path / "fine.npy", args=(tmp_path / "fine.npy", 4))]
    with pytest.raises(JobsFailed) as info:
        run_jobs(jobs, client=client, retries=1, progress=False)
    assert set(info.value.failures) == {"bad", "after"}
    assert isinstance(info.value.failures["bad"], ValueError)
    assert (tmp_path / "fine.npy").exists()


def malloc_trim():
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_workers_get_their_blas_threads_and_one_device_each(client):
    assert set(map(tuple, client.run(blas_threads).values())) == {(2,)}
    assert sorted(client.run(visible_device).values()) == ["0", "1"]
    # and glibc's own malloc thresholds: Dask's MALLOC_TRIM_THRESHOLD_ cost a fifth of the training speed
    assert set(client.run(malloc_trim).values()) == {None}


def test_cores_per_worker_shares_the_machine():
    assert [cores_per_worker(n, cpu_count=64) for n in (1, 8, 64, 100)] == [64, 8, 1, 1]


def test_graph_errors_name_the_job(tmp_path):
    r = tmp_path / "x.npy"
    with pytest.raises(ValueError, match="'x' depends on 'missing'"):
        run_jobs([GridJob("x", make_matrix, r, deps=("missing",))], progress=False)
    with pytest.raises(ValueError, match="cycle"):
        run_jobs([GridJob("x", make_matrix, r, deps=("y",)), GridJob("y", make_matrix, r, deps=("x",))],
                 progress=False)
    with pytest.raises(ValueError, match="appears twice"):
        run_jobs([GridJob("x", make_matrix, r), GridJob("x", make_matrix, r)], progress=False)
    with pytest.raises(ValueError, match="not a top-level function"):
        run_jobs([GridJob("x", lambda: None, r)], progress=False)


def test_a_worker_killed_mid_job_resumes_elsewhere_from_its_checkpoint(client, tmp_path):
    """kill -9 of the worker running a job: Dask reschedules it, it continues from its checkpoint,
    and its result equals that of an uninterrupted run."""
    steps = 16

    def job(folder):
        f = Path(folder)
        return GridJob("slow", slow_checkpointed, f / "slow.npy",
                       args=(f / "slow.npy", steps, f / "checkpoint.npz", f / "starts.txt"))

    (tmp_path / "calm").mkdir()
    calm = run_jobs([job(tmp_path / "calm")], progress=False)
    starts, checkpoint = tmp_path / "starts.txt", tmp_path / "checkpoint.npz"

    def kill_when_halfway():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if checkpoint.exists() and starts.exists():
                with np.load(checkpoint) as ck:
                    if int(ck["step"]) >= 4:
                        os.kill(int(starts.read_text().split()[0]), signal.SIGKILL)
                        return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_halfway)
    killer.start()
    killed = run_jobs([job(tmp_path)], client=client, progress=False)
    killer.join()
    runs = [line.split() for line in starts.read_text().splitlines()]
    assert len(runs) == 2 and runs[0][0] != runs[1][0], runs       # two processes ran it
    assert runs[0][1] == "0" and int(runs[1][1]) >= 4, runs          # the second resumed
    assert killed["slow"].read_bytes() == calm["slow"].read_bytes()


# ---------------------------------------------------------------------------- SLURM
def slurm_unavailable(wait: float = 60) -> str:
    """Why no SLURM job can run here now ("" when one can): no sinfo, or no idle node within ``wait``
    seconds (a SLURM job of an earlier test may still be ending). Shared by the SLURM tests."""
    if shutil.which("sinfo") is None:
        return "sinfo not found (run `bash bench/slurm_local.sh` as root to start a local SLURM)"
    deadline = time.monotonic() + wait
    while True:
        state = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True).stdout.split()
        if state and state[0].startswith(("idle", "mix")):
            return ""
        if time.monotonic() > deadline:
            return f"no idle SLURM node (sinfo: {state or 'nothing'}); run `bash bench/slurm_local.sh`"
        time.sleep(2)


def test_slurm_gives_the_sequential_files_through_tls(sequential_results, tmp_path, monkeypatch):
    reason = slurm_unavailable()
    if reason:
        print(f"skipping the SLURM test: {reason}")
        pytest.skip(reason)
    # SLURM's workers import job functions by name: from the repository, and from this file's folder
    # through the client's PYTHONPATH, which workers inherit.
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    options = SlurmOptions(cores=2, memory="2GB", walltime="00:10:00", jobs=1)
    credentials = tmp_path / "shared-temp"
    credentials.mkdir()
    with dask.config.set({"jobqueue.slurm.log-directory": str(tmp_path / "slurm-logs"),
                          "jobqueue.slurm.shared-temp-directory": str(credentials)}), \
            open_client("slurm", options) as c:
        results = run_jobs(toy_graph(tmp_path / "run"), client=c, progress=False)
        assert set(map(tuple, c.run(blas_threads).values())) == {(2,)}
        workers = c.scheduler_info()["workers"]
        assert [w["nthreads"] for w in workers.values()] == [1]
        assert c.scheduler.address.startswith("tls://") and all(w.startswith("tls://") for w in workers)
        folders = list(credentials.glob(CREDENTIALS_PREFIX + "*"))
        assert len(folders) == 1 and (folders[0] / "key.pem").stat().st_mode & 0o777 == 0o600
    assert not list(credentials.iterdir())     # removed at the end
    assert_same_files(results, sequential_results)


def test_temporary_credentials_are_private_and_removed(tmp_path):
    """The SLURM run's key: in a folder only this user may enter, mode 600, gone after the run (also
    after an error); the Security requires encryption and gives workers the files' paths."""
    with pytest.raises(RuntimeError), temporary_credentials(tmp_path) as security:
        (folder,) = tmp_path.glob(CREDENTIALS_PREFIX + "*")
        assert folder.stat().st_mode & 0o777 == 0o700
        assert (folder / "key.pem").stat().st_mode & 0o777 == 0o600
        assert "PRIVATE KEY" in (folder / "key.pem").read_text()
        worker = security.get_tls_config_for_role("worker")
        assert (worker["key"], worker["cert"], worker["ca_file"]) == \
            (str(folder / "key.pem"), str(folder / "cert.pem"), str(folder / "cert.pem"))
        assert security.require_encryption
        raise RuntimeError("the run fails")
    assert not list(tmp_path.iterdir())


def test_slurm_job_script_starts_tls_workers_with_the_key_file(tmp_path):
    """What dask-jobqueue submits (as text, no SLURM needed): `dask worker` with --protocol tls:// and
    the temporary credentials' paths."""
    from dask_jobqueue import SLURMCluster
    with dask.config.set({"jobqueue.slurm.cores": 2, "jobqueue.slurm.memory": "2GB"}), \
            temporary_credentials(tmp_path) as security, \
            SLURMCluster(**slurm_cluster_kwargs(SlurmOptions(walltime="01:00:00")), security=security,
                         scheduler_options={"dashboard": False, "host": "127.0.0.1",
                                            "dashboard_address": "127.0.0.1:0"}) as cluster:
        script, address = cluster.job_script(), cluster.scheduler_address
        (folder,) = tmp_path.glob(CREDENTIALS_PREFIX + "*")
    assert not list(tmp_path.iterdir())      # removed with the cluster
    assert "--protocol tls://" in script and address.startswith("tls://")
    given = dict(re.findall(r"(--tls-[a-z-]+) (\S+)", script))
    assert given == {"--tls-key": str(folder / "key.pem"), "--tls-cert": str(folder / "cert.pem"),
                     "--tls-ca-file": str(folder / "cert.pem")}


def test_slurm_arguments_come_from_config_and_options():
    config = {"jobqueue.slurm.cores": 8, "jobqueue.slurm.memory": "32GB", "jobqueue.slurm.walltime": "04:00:00",
              "jobqueue.slurm.job-extra-directives": ["--qos=long"]}
    with dask.config.set(config):
        from_config = slurm_cluster_kwargs(SlurmOptions())
        given = slurm_cluster_kwargs(SlurmOptions(partition="gpu", cores=16, memory="64GB", walltime="1-00:00:00",
                                                  gpus=2, jobs=4))
    assert (from_config["cores"], from_config["memory"], from_config["processes"]) == (8, "32GB", 1)
    assert "export OPENBLAS_NUM_THREADS=8" in from_config["job_script_prologue"]
    lifetime = from_config["worker_extra_args"][from_config["worker_extra_args"].index("--lifetime") + 1]
    assert 0 < int(lifetime.rstrip("s")) < 4 * 3600
    assert from_config["job_extra_directives"] == ["--qos=long"] and "queue" not in from_config
    assert (given["cores"], given["memory"], given["processes"], given["queue"]) == (16, "64GB", 2, "gpu")
    assert given["job_extra_directives"] == ["--qos=long", "--gres=gpu:2"]
    assert "export OPENBLAS_NUM_THREADS=8" in given["job_script_prologue"]    # 16 cores over 2 GPU workers
    assert "--preload" in given["worker_extra_args"]
    with dask.config.set({"jobqueue.slurm.cores": None, "jobqueue.slurm.memory": "4GB"}), \
            pytest.raises(ValueError, match="--slurm-cores not given"):
        slurm_cluster_kwargs(SlurmOptions())


# ---------------------------------------------------------------------------- command-line values
def test_cluster_values_are_parsed():
    assert parse_cluster("local:3").workers == 3
    assert parse_cluster("tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    assert (parse_cluster("tls://head-node:8786").kind, parse_cluster("tcp://h:1").kind) == ("tls", "tcp")
    assert parse_cluster("slurm").kind == "slurm" and parse_cluster("here").kind == "here"
    assert [walltime_seconds(v) for v in ("90", "10:30", "04:00:00", "2-03", "1-00:30:00")] == \
        [5400, 630, 14400, 183600, 88200]


def _parser():
    parser = argparse.ArgumentParser(prog="run.py")
    add_cluster_arguments(parser)
    return parser


@pytest.mark.parametrize("argv, message", [
    (["--cluster", "local:0"], "--cluster 'local:0': expected local:N"),
    (["--cluster", "local"], "--cluster 'local': expected local:N"),
    (["--cluster", "tcp://host"], "--cluster 'tcp://host': expected"),
    (["--cluster", "tls://host:99999"], "expected"),
    (["--cluster", "sge"], "--cluster 'sge'"),
    (["--cluster", "slurm", "--slurm-memory", "lots"], "--slurm-memory 'lots': expected a size"),
    (["--cluster", "slurm", "--slurm-walltime", "4h"], "--slurm-walltime '4h': expected"),
    (["--cluster", "slurm", "--slurm-jobs", "0"], "--slurm-jobs '0': expected a whole number >= 1"),
])
def test_bad_cluster_values_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(argv)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert info.value.code == 2 and err.startswith("run.py: error:") and message in err, err


@pytest.fixture(scope="module")
def pem(tmp_path_factory):
    """A CA, a certificate it signed and its key, and a key of another certificate (openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed (Debian: apt-get install openssl)")
    folder = tmp_path_factory.mktemp("pem")
    run = lambda *a: subprocess.run(["openssl", *a], cwd=folder, check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
        "-keyout", "ca.key", "-out", "ca.pem")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test", "-CA", "ca.pem",
        "-CAkey", "ca.key", "-keyout", "dask.key", "-out", "dask.pem")
    (folder / "text.pem").write_text("not a certificate\n")
    return folder


@pytest.mark.parametrize("argv, message", [
    (["--slurm-gpus", "1"], "--slurm-gpus given without --cluster slurm"),
    (["--cluster", "local:2", "--slurm-cores", "4"], "--slurm-cores given without --cluster slurm"),
    (["--cluster", "slurm", "--slurm-cores", "2", "--slurm-memory", "4GB", "--slurm-walltime", "00:03:00"],
     "too short"),
    (["--cluster", "tls://h:1", "--tls-ca-file", "{pem}/ca.pem"],
     "--cluster tls://h:1: --tls-cert, --tls-key not given; expected --tls-ca-file CA.pem"),
    (["--cluster", "tcp://h:1", "--tls-cert", "{pem}/dask.pem"],
     "--tls-cert given with --cluster tcp://h:1; expected --cluster tls://HOST:PORT"),
    (["--cluster", "slurm", "--slurm-cores", "1", "--slurm-memory", "1GB", "--tls-key", "k"],
     "--tls-key given with --cluster slurm; expected --cluster tls://HOST:PORT (local:N and slurm make"),
    (["--cluster", "tls://h:1", "--tls-ca-file", "{pem}/ca.pem", "--tls-cert", "{pem}/nothing.pem",
      "--tls-key", "{pem}/dask.key"], "--tls-cert {pem}/nothing.pem: no such file; expected a PEM file"),
    (["--cluster", "tls://h:1", "--tls-ca-file", "{pem}/text.pem", "--tls-cert", "{pem}/dask.pem",
      "--tls-key", "{pem}/dask.key"], "--tls-ca-file {pem}/text.pem: no PEM certificate in it"),
    (["--cluster", "tls://h:1", "--tls-ca-file", "{pem}/ca.pem", "--tls-cert", "{pem}/dask.pem",
      "--tls-key", "{pem}/ca.key"], "--tls-key {pem}/ca.key: the key does not belong to the certificate"),
    (["--dashboard"], "--dashboard given without a Dask cluster; expected --cluster local:N"),
    (["--cluster", "here", "--dashboard"], "--dashboard given without a Dask cluster"),
])
def test_bad_cluster_combinations_are_user_errors(argv, message, pem):
    args = _parser().parse_args([a.replace("{pem}", str(pem)) for a in argv])
    with pytest.raises(UserError) as info:
        cluster_arguments(args)
    text = str(info.value)
    assert message.replace("{pem}", str(pem)) in text and "\n" not in text, text


def test_good_cluster_values_pass(pem):
    parser = _parser()
    request = cluster_arguments(parser.parse_args(
        ["--cluster", "slurm", "--slurm-cores", "4", "--slurm-memory", "8GB", "--slurm-walltime", "02:00:00",
         "--slurm-gpus", "1", "--slurm-jobs", "3", "--slurm-partition", "gpu"]))
    assert request.spec.kind == "slurm" and request.slurm == SlurmOptions("gpu", 4, "8GB", "02:00:00", 1, 3)
    assert request.tls is None and not request.dashboard
    assert cluster_arguments(parser.parse_args([])) == ClusterRequest(None, SlurmOptions(), None, False)
    request = cluster_arguments(parser.parse_args(
        ["--cluster", "tls://10.0.0.5:8786", "--tls-ca-file", str(pem / "ca.pem"), "--tls-cert",
         str(pem / "dask.pem"), "--tls-key", str(pem / "dask.key"), "--dashboard"]))
    assert request.spec.address == "tls://10.0.0.5:8786" and request.dashboard
    assert request.tls.cert == pem / "dask.pem"
    security = request.tls.security()
    assert security.require_encryption and security.tls_client_key == str(pem / "dask.key")


def test_dashboard_of_a_local_cluster_needs_bokeh(monkeypatch):
    """--dashboard starts Dask's dashboard, a bokeh application: without bokeh, one line saying so."""
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bokeh" else real(name, *a))
    with pytest.raises(UserError, match="--dashboard with --cluster local:2: Dask's dashboard needs bokeh"):
        cluster_arguments(_parser().parse_args(["--cluster", "local:2", "--dashboard"]))


def test_dashboard_link_is_printed_for_local_workers(capsys):
    pytest.importorskip("bokeh", reason="Dask's dashboard needs bokeh (python -m pip install bokeh)")
    with open_client("local:1", cores=1, dashboard=True) as c:
        link = c.dashboard_link
    out = capsys.readouterr().out
    assert link.startswith("http://127.0.0.1:") and f"Dask dashboard: {link}" in out


def test_without_cluster_several_full_size_cpu_jobs_get_one_worker_per_core():
    """auto_cluster: one single-threaded worker per core (at most one per job) for full-size CPU jobs;
    here for one job, one core, a GPU, or a miniature network."""
    from pipeline.cluster import ClusterSpec, auto_cluster
    assert auto_cluster(6, "cpu", True, cpu_count=2) == ClusterSpec("local", workers=2)
    assert auto_cluster(3, "cpu", True, cpu_count=16) == ClusterSpec("local", workers=3)
    assert auto_cluster(1, "cpu", True, cpu_count=2) is None
    assert auto_cluster(6, "cpu", True, cpu_count=1) is None
    assert auto_cluster(6, "gpu", True, cpu_count=16) is None
    assert auto_cluster(6, "cpu", False, cpu_count=16) is None
