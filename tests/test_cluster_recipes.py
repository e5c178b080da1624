"""docs/cluster.md, run as written: every command of its ```bash blocks, on this machine.

The install block runs in a copy of the checkout (the packages, pyproject.toml, run.py and weights/:
pip builds in the source folder, and the copy keeps what was installed and what run.py runs the
same while the repository is edited), into a fresh virtual environment (made with
--system-site-packages, so it sees the installed dependencies); `python run.py` runs in that copy;
the scheduler and worker blocks run
from a folder outside the repository with that environment's Python first on the PATH, a home folder
of their own and no PYTHONPATH; the certificate block makes the certificates with openssl. In the
commands, HEAD becomes 127.0.0.1, /shared a temporary folder, the ports free ones, and every
`python run.py` gets options appended that shrink the study to two miniature models. Each run's
results.json records and predictions.csv must equal those of the same study run with `--cluster
here`, all with one BLAS thread per model (threads split float sums differently).
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cluster import CREDENTIALS_PREFIX, PROJECT_PACKAGES, ClusterRequest, TlsFiles, check_reachable, \
    parse_cluster
from pipeline.errors import UserError
from test_cluster import slurm_unavailable

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "cluster.md"
TINY = ["--scenario", "malignant-vs-negative", "malignant-vs-benign", "--experiment", "ffdm", "--preset", "demo",
        "--widths", "4", "4", "4", "4", "4", "8", "8", "--input-size", "67", "--iters", "4", "--patients", "ffdm=40",
        "--batch-size", "8", "--n-boot", "20", "--test-fraction", "0.25", "--device", "cpu", "--no-progress"]
SLURM_TINY = ["--slurm-cores", "1", "--slurm-memory", "2GB", "--slurm-walltime", "00:10:00", "--slurm-jobs", "1"]
ONE_THREAD = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


# ---------------------------------------------------------------------------- the page
def doc_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)


def block_kind(block: str) -> str:
    """What a bash block does: install, certificates, scheduler, worker, or run-<--cluster kind>."""
    if "pip install" in block:
        return "install"
    if "openssl" in block:
        return "certificates"
    for role in ("scheduler", "worker"):
        if f"dask {role}" in block:
            return role
    m = re.search(r"python run\.py .*--cluster (\S+)", block.replace("\\\n", " "))
    assert m, f"a bash block of {DOC.name} that no test runs:\n{block}"
    return "run-" + parse_cluster(m.group(1)).kind


def blocks(kind: str) -> list[str]:
    found = [b for b in doc_blocks("bash") if block_kind(b) == kind]
    assert found, f"no {kind} block in {DOC.name}"
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Site:
    """One machine playing every role of the page, in temporary folders."""

    def __init__(self, base: Path, env: dict, checkout: Path):
        self.base, self.env, self.checkout = base, env, checkout
        self.home = Path(env["HOME"])
        self.elsewhere = base / "elsewhere"       # where schedulers and workers start: outside the repository
        self.elsewhere.mkdir(exist_ok=True)
        self.cache = base / "data_cache"
        self.processes = []

    def command(self, block: str, shared: Path, port: int = 0, extra=()) -> str:
        text = block.replace("\\\n", " ")
        text = text.replace("HEAD", "127.0.0.1").replace("127.0.0.1:8787", "127.0.0.1:0")
        text = text.replace(":8786", f":{port}").replace("--port 8786", f"--port {port}")
        text = text.replace("/shared/data_cache", str(self.cache)).replace("/shared", str(shared))
        lines = [line + " " + " ".join(extra) if line.lstrip().startswith("python run.py") else line
                 for line in text.splitlines()]
        return "\n".join(lines)

    def run(self, command: str, cwd: Path, env=None, timeout=600) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", command], cwd=cwd, env=env or self.env, capture_output=True, text=True,
                              timeout=timeout)

    def start(self, command: str, log: Path) -> subprocess.Popen:
        """A scheduler or worker in the background, in a process group of its own (stopped in `stop`)."""
        with open(log, "w") as f:
            p = subprocess.Popen(["bash", "-c", command], cwd=self.elsewhere, env=self.env, stdout=f,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(p)
        return p

    def stop(self):
        for p in self.processes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.processes.clear()


def wait_for(condition, what: str, log: Path, process: subprocess.Popen, seconds: float = 90):
    deadline = time.monotonic() + seconds
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} not ready after {seconds} s (exit {process.poll()}); its log:\n"
                        f"{log.read_text()[-3000:]}")
        time.sleep(0.2)


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def start_cluster(site: Site, kind: str, name: str) -> int:
    """The page's scheduler and worker blocks of one recipe; returns the scheduler's port."""
    port = free_port()
    (scheduler,) = [b for b in blocks("scheduler") if ("tls" in b) == (kind == "tls")]
    (worker,) = [b for b in blocks("worker") if f"{kind}://HEAD" in b]
    log = site.base / f"{name}-scheduler.log"
    p = site.start(site.command(scheduler, site.base, port), log)
    wait_for(lambda: port_open(port), "the scheduler", log, p)
    log = site.base / f"{name}-workers.log"
    p = site.start(site.command(worker, site.base, port), log)
    n = int(re.search(r"--nworkers (\d+)", worker).group(1))
    wait_for(lambda: log.read_text().count("Registered to:") >= n, f"{n} workers", log, p)
    return port


def records(out: Path) -> list:
    runs = json.loads((out / "results.json").read_text())["runs"]
    for r in runs:
        r.pop("seconds")
    return runs


def assert_same_results(out: Path, reference: Path):
    assert records(out) == records(reference) and len(records(out)) == 2
    assert (out / "predictions.csv").read_bytes() == (reference / "predictions.csv").read_bytes()


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The page's install block, run in a copy of the checkout with a fresh virtual environment's
    Python first on the PATH."""
    base = tmp_path_factory.mktemp("recipes")
    venv, home, checkout = base / "venv", base / "home", base / "checkout"
    home.mkdir()
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    for package in PROJECT_PACKAGES:
        shutil.copytree(REPO / package, checkout / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "weights", checkout / "weights")
    for name in ("pyproject.toml", "run.py"):
        shutil.copy(REPO / name, checkout)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("DASK_")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", HOME=str(home), VIRTUAL_ENV=str(venv),
               MPLCONFIGDIR=os.environ.get("MPLCONFIGDIR", str(Path.home() / ".config" / "matplotlib")),
               **ONE_THREAD)
    s = Site(base, env, checkout)
    (install,) = blocks("install")
    got = s.run(install, cwd=checkout)
    if got.returncode and re.search(r"Could not find a version|No matching distribution|Network is unreachable",
                                    got.stdout + got.stderr):
        pytest.skip(f"pip could not reach a package index to build the project: {got.stderr.strip()[-300:]}")
    assert got.returncode == 0, got.stdout[-2000:] + got.stderr[-3000:]
    yield s
    s.stop()


@pytest.fixture(scope="module")
def reference(site):
    """The same miniature study with --cluster here, one BLAS thread."""
    out = site.base / "reference"
    got = site.run(" ".join(["python", "run.py", *TINY, "--cluster", "here", "--cache-dir", str(site.cache),
                             "--out", str(out)]), cwd=site.checkout)
    assert got.returncode == 0, got.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def tls_site(site):
    """The page's certificate block (run in the site's home: ~/.dask-tls), then its TLS scheduler and
    workers; returns the scheduler's port."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command of the page's certificate block is not installed (apt-get install openssl)")
    (certificates,) = blocks("certificates")
    got = site.run(certificates, cwd=site.elsewhere)
    assert got.returncode == 0, got.stderr[-3000:]
    return start_cluster(site, "tls", "tls")


# ---------------------------------------------------------------------------- the recipes
def test_every_bash_block_of_the_page_is_run_by_a_test():
    kinds = [block_kind(b) for b in doc_blocks("bash")]
    assert sorted(set(kinds)) == ["certificates", "install", "run-local", "run-slurm", "run-tcp", "run-tls",
                                  "scheduler", "worker"], kinds


def test_the_install_puts_every_package_and_its_data_into_the_environment(site):
    """Each package folder of the checkout (with its __init__.py, new subpackages included) and the
    JSON data the code reads are importable from the installed copy, outside the checkout."""
    packages = sorted({p.parent.relative_to(site.checkout).as_posix().replace("/", ".")
                       for name in PROJECT_PACKAGES for p in (site.checkout / name).rglob("__init__.py")})
    assert "data_prep.synthetic" in packages
    probe = ("import importlib, json, sys, pathlib; mods = [importlib.import_module(m) for m in sys.argv[1:]]; "
             "print(json.dumps([m.__file__ for m in mods])); "
             "print(json.loads(pathlib.Path(importlib.import_module('pipeline').__file__).with_name("
             "'paper_results.json').read_text()) != {})")
    got = site.run(" ".join(["python", "-c", f'"{probe}"', *packages]), cwd=site.elsewhere)
    assert got.returncode == 0, got.stderr[-3000:]
    files, has_data = got.stdout.splitlines()
    assert all("/site-packages/" in f for f in json.loads(files)) and has_data == "True"


def test_the_grid_on_a_plain_scheduler_started_as_documented(site, reference):
    """The README recipe that used to fail ("Error during deserialization of the task graph": the
    scheduler imports the job functions too) now gives the sequential results."""
    port = start_cluster(site, "tcp", "tcp")
    (run,) = blocks("run-tcp")
    got = site.run(site.command(run, site.base / "tcp", port, TINY), cwd=site.checkout)
    assert got.returncode == 0, got.stdout[-2000:] + got.stderr[-3000:]
    assert_same_results(site.base / "tcp" / "runs" / "demo", reference)


def test_the_grid_through_tls_as_documented(site, tls_site, reference):
    (run,) = blocks("run-tls")
    got = site.run(site.command(run, site.base / "tls", tls_site, TINY), cwd=site.checkout)
    assert got.returncode == 0, got.stdout[-2000:] + got.stderr[-3000:]
    assert_same_results(site.base / "tls" / "runs" / "demo", reference)
    assert "tls://127.0.0.1" in (site.base / "tls-workers.log").read_text()


def _other_ca(site) -> Path:
    """A second certificate authority and a certificate it signed, made as the page makes them."""
    (certificates,) = blocks("certificates")
    other = site.base / "other-home"
    other.mkdir(exist_ok=True)
    got = site.run(certificates, cwd=site.elsewhere, env=dict(site.env, HOME=str(other)))
    assert got.returncode == 0, got.stderr[-3000:]
    return other / ".dask-tls"


def test_a_client_without_the_certificate_is_refused(site, tls_site):
    """check_reachable: a certificate of another CA, the right CA with another CA's certificate, and
    plain tcp:// are each refused with one line naming the address (the right certificates pass in
    test_the_grid_through_tls_as_documented)."""
    mine, other = site.home / ".dask-tls", _other_ca(site)
    address = f"tls://127.0.0.1:{tls_site}"
    cases = [(TlsFiles(other / "ca.pem", other / "dask.pem", other / "dask.key"),
              "TLS handshake refused: the scheduler's certificate is not signed by the CA of --tls-ca-file"),
             (TlsFiles(mine / "ca.pem", other / "dask.pem", other / "dask.key"),
              "TLS handshake refused: the scheduler did not accept --tls-cert")]
    for tls, message in cases:
        with pytest.raises(UserError, match=re.escape(f"--cluster {address}: {message}")):
            check_reachable(ClusterRequest(parse_cluster(address), tls=tls))
    plain = address.replace("tls://", "tcp://")
    with pytest.raises(UserError, match=re.escape(f"--cluster {plain}: the scheduler closed the connection")):
        check_reachable(ClusterRequest(parse_cluster(plain)))


def test_run_py_without_the_certificate_exits_2_before_any_folder(site, tls_site):
    """run.py with another CA's certificate: one line `error: ...`, exit 2, neither the run folder nor
    the data cache made (needs run.py to call pipeline.cluster.check_reachable first)."""
    other = _other_ca(site)
    out, cache = site.base / "refused" / "run", site.base / "refused" / "cache"
    argv = [*TINY, "--cluster", f"tls://127.0.0.1:{tls_site}", "--tls-ca-file", str(other / "ca.pem"),
            "--tls-cert", str(other / "dask.pem"), "--tls-key", str(other / "dask.key"),
            "--out", str(out), "--cache-dir", str(cache)]
    got = site.run(" ".join(["python", "run.py", *argv]), cwd=site.checkout, timeout=120)
    lines = got.stderr.strip().splitlines()
    assert got.returncode == 2 and len(lines) == 1, got.stderr[-3000:]
    assert lines[0].startswith(f"error: --cluster tls://127.0.0.1:{tls_site}: TLS handshake refused"), lines
    assert not out.exists() and not cache.exists()


def test_a_stale_installation_is_named_before_any_work(site, tls_site, tmp_path):
    """A checkout changed after `pip install .`: the scheduler imports other code than the client."""
    for package in PROJECT_PACKAGES:
        shutil.copytree(site.checkout / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "pipeline" / "cluster.py", "a") as f:
        f.write("\n# changed after the installation\n")
    mine = site.home / ".dask-tls"
    probe = (f"from pipeline.cluster import *; check_reachable(ClusterRequest(parse_cluster("
             f"'tls://127.0.0.1:{tls_site}'), tls=TlsFiles(*[__import__('pathlib').Path('{mine}', n) for n in "
             f"('ca.pem', 'dask.pem', 'dask.key')])))")
    got = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=site.env, capture_output=True, text=True,
                         timeout=120)
    assert got.returncode == 1 and "UserError" in got.stderr, got.stderr[-3000:]
    assert "the scheduler imports another version of this project than" in got.stderr
    assert "python -m pip install ." in got.stderr


def test_local_workers_as_documented(site, reference):
    (run,) = blocks("run-local")
    out = site.base / "local"     # the page's command writes to runs/<timestamp> and ./data_cache
    got = site.run(site.command(run, out, extra=TINY + ["--out", str(out), "--cache-dir", str(site.cache)]),
                   cwd=site.checkout)
    assert got.returncode == 0, got.stdout[-2000:] + got.stderr[-3000:]
    assert_same_results(site.base / "local", reference)


def test_slurm_through_tls_as_documented(site, reference):
    """The page's SLURM command on the one-node SLURM of bench/slurm_local.sh (one core per job, so
    one BLAS thread): workers registered over TLS, the temporary key (in the home folder, the default
    shared-temp-directory) removed at the end, the sequential results."""
    reason = slurm_unavailable()
    if reason:
        print(f"skipping the SLURM test: {reason}")
        pytest.skip(reason)
    shared = site.base / "slurm"
    logs = shared / "dask-logs"
    env = dict(site.env, DASK_JOBQUEUE__SLURM__LOG_DIRECTORY=str(logs))
    (run,) = blocks("run-slurm")
    got = site.run(site.command(run, shared, extra=TINY + SLURM_TINY), cwd=site.checkout, env=env)
    assert got.returncode == 0, got.stdout[-2000:] + got.stderr[-3000:]
    assert_same_results(shared / "runs" / "all", reference)
    worker_logs = "".join(p.read_text() for p in logs.glob("*"))
    assert re.search(r"Registered to:\s+tls://", worker_logs), worker_logs[-2000:]
    assert not list(site.home.glob(CREDENTIALS_PREFIX + "*"))


def test_the_page_configures_slurm_with_real_jobqueue_keys():
    """Every key of the page's jobqueue.yaml is one of dask-jobqueue's jobqueue.slurm settings."""
    import dask
    import dask_jobqueue  # noqa: F401  (puts its defaults into dask's configuration)
    import yaml
    (text,) = doc_blocks("yaml")
    given = yaml.safe_load(text)["jobqueue"]["slurm"]
    known = set(dask.config.get("jobqueue.slurm"))
    assert "shared-temp-directory" in given and set(given) <= known, set(given) - known
