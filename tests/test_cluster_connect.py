"""Connect first (pipeline.cluster.check_reachable): a --cluster that cannot run the jobs is one line
naming the address, before any data is built or any folder made."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cluster import ClusterRequest, check_reachable, parse_cluster
from pipeline.errors import UserError

REPO = Path(__file__).resolve().parent.parent
MINI = ["--widths", "4", "4", "4", "4", "4", "8", "8", "--input-size", "67", "--iters", "4", "--patients", "ffdm=40",
        "--device", "cpu", "--no-progress"]


def request(address: str) -> ClusterRequest:
    return ClusterRequest(parse_cluster(address))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]     # nothing listens there once the socket is closed


def test_a_refused_port_is_one_line_at_once():
    port = closed_port()
    t0 = time.monotonic()
    with pytest.raises(UserError) as info:
        check_reachable(request(f"tcp://127.0.0.1:{port}"))
    assert str(info.value).startswith(f"--cluster tcp://127.0.0.1:{port}: connection refused (nothing listens on "
                                      f"port {port} of 127.0.0.1)")
    assert time.monotonic() - t0 < 2 and "\n" not in str(info.value)


def test_a_host_that_does_not_resolve_is_named():
    with pytest.raises(UserError, match=r"--cluster tls://no-such-host\.invalid:8786: host 'no-such-host\.invalid' "
                                        r"does not resolve"):
        check_reachable(request("tls://no-such-host.invalid:8786"))


def test_a_silent_port_times_out_after_the_given_seconds():
    """A listening socket that never answers Dask's handshake (a wrong service, a stuck scheduler)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(UserError) as info:
            check_reachable(request(f"tcp://127.0.0.1:{port}"), timeout=1.5)
        assert time.monotonic() - t0 < 10
    assert str(info.value).startswith(f"--cluster tcp://127.0.0.1:{port}: no answer to Dask's handshake within "
                                      "1.5 s") and "\n" not in str(info.value)


def test_here_and_no_cluster_need_nothing():
    check_reachable(ClusterRequest())
    check_reachable(request("here"))


def test_slurm_without_sbatch_is_named(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(UserError, match="--cluster slurm: sbatch not found on the PATH"):
        check_reachable(request("slurm"))


@pytest.fixture()
def scheduler_without_the_project(tmp_path):
    """`dask scheduler` as the README used to say: this Python, from a folder outside the repository,
    without the project installed or on the PYTHONPATH."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    log = open(tmp_path / "scheduler.log", "w")
    p = subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                          "--dashboard-address", "127.0.0.1:0"], cwd=tmp_path, env=env, stdout=log,
                         stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if p.poll() is not None or time.monotonic() > deadline:
                pytest.fail((tmp_path / "scheduler.log").read_text()[-2000:])
            time.sleep(0.2)
    yield port
    os.killpg(p.pid, signal.SIGTERM)
    p.wait(timeout=20)
    log.close()


def test_a_scheduler_that_cannot_import_the_project_is_named(scheduler_without_the_project):
    """The failure of the old README recipe ("Error during deserialization of the task graph" for
    every job), found before any work and said with its fix."""
    address = f"tcp://127.0.0.1:{scheduler_without_the_project}"
    with pytest.raises(UserError) as info:
        check_reachable(request(address))
    text = str(info.value)
    assert text.startswith(f"--cluster {address}: the scheduler cannot import this project (No module named ")
    assert "python -m pip install ." in text and "docs/cluster.md" in text


def test_run_py_with_an_unreachable_scheduler_exits_2_before_any_folder(tmp_path):
    """`run.py --cluster tcp://127.0.0.1:1`: one line, exit 2, no run folder and no data cache made
    (needs run.py to call pipeline.cluster.check_reachable before it builds anything)."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    got = subprocess.run([sys.executable, "run.py", *MINI, "--cluster", "tcp://127.0.0.1:1", "--out", str(out),
                          "--cache-dir", str(cache)], cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = got.stderr.strip().splitlines()
    assert got.returncode == 2 and len(lines) == 1, got.stderr[-3000:]
    assert lines[0].startswith("error: --cluster tcp://127.0.0.1:1: connection refused"), lines
    assert not out.exists() and not cache.exists()
