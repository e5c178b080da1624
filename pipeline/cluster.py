"""Run a graph of jobs in this process or on Dask: a ``LocalCluster``-like set of local workers,
an existing scheduler (``tcp://HOST:PORT`` or, encrypted, ``tls://HOST:PORT``), or SLURM through
dask-jobqueue.

The study is a graph of jobs: a fine-tune runs after its DDSM stage, a comparison after both of its
models. A job (`GridJob`) is a top-level function with small, picklable arguments (paths, small
configurations) that writes one result file; the engine returns result *paths*, never arrays, so
whatever a job produces stays on the file system that every worker sees.

Correctness lives in the jobs, not in the scheduler (as in nnU-Net or submitit):

* a job whose result file exists is skipped, here and on a worker (idempotent); a job writes its
  result atomically, so an existing file is a finished one;
* a job continues from its own checkpoint when it is run again after an interruption, so a worker
  killed mid-job (``kill -9``, a SLURM walltime) costs at most one checkpoint interval: Dask
  reschedules the job on another worker and it resumes there.

So the same graph gives the same result files whether it runs sequentially, on ``local:N``, on a
running scheduler or on SLURM, and ``--resume`` picks up a run folder that another machine started.
Where the run folder lives (a file system shared by the client and every worker) is the caller's
business; docs/cluster.md has the recipes.

Code. Dask pickles a job's function by reference (module and name), and both the scheduler (it
unpickles the task graph) and the workers import it, so every process of a cluster needs this
project: local and SLURM workers get the repository on their ``PYTHONPATH``; a scheduler and workers
started by hand need it installed (``python -m pip install .``). `check_reachable` asks a running
scheduler and its workers for a digest of the project's sources before any work, so a missing or
stale installation is one line, not a failed task graph.

Security. Dask sends tasks as pickles, so whoever can talk to a scheduler runs code as its workers'
user. ``local:N`` and SLURM clusters therefore use TLS with temporary credentials made for the run
(``distributed.Security.temporary``); ``tls://`` uses the certificates given with ``--tls-ca-file``,
``--tls-cert`` and ``--tls-key``, with encryption required; ``tcp://`` is plain and belongs on a
private network only.

Threads. Each worker runs one job at a time (one Dask thread) and gives BLAS the cores it owns:
Dask's nanny otherwise sets ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``OPENBLAS_NUM_THREADS`` to
1 in every worker (``distributed.nanny.pre-spawn-environ``), and those must be set before NumPy is
imported in the worker process, so they go into the environment the nanny spawns from (an
environment variable there wins over Dask's configuration). On GPUs each worker sees one device
(``CUDA_VISIBLE_DEVICES``), the way dask-cuda's ``LocalCUDACluster`` pins them.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import logging
import os
import re
import shutil
import socket
import ssl
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from tqdm import tqdm

from alexnet_np import usable_cores

from .errors import UserError

ROOT = Path(__file__).resolve().parent.parent   # the folder holding the project's packages (checkout or site-packages)
PROJECT_PACKAGES = ("alexnet_np", "data_prep", "pipeline", "stats")   # what every process of a cluster imports
BLAS_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
CLUSTER_FORMS = ("local:N (N worker processes here), here (in this process, one job after another), "
                 "tcp://HOST:PORT (a running Dask scheduler), tls://HOST:PORT (one with TLS, see --tls-*) "
                 "or slurm")
TLS_OPTIONS = ("--tls-ca-file", "--tls-cert", "--tls-key")
CREDENTIALS_PREFIX = ".alexnet-np-tls-"   # SLURM's temporary credentials: <shared temp directory>/.alexnet-np-tls-XXXX/
CONNECT_TIMEOUT = 5.0                     # seconds check_reachable waits for a scheduler
DOCS = "docs/cluster.md"


@dataclass(frozen=True)
class GridJob:
    """One job of the graph.

    ``func(*args)`` must be a top-level function (the scheduler and the workers import it by name)
    that writes ``result`` atomically (temporary file + ``os.replace``) and, when it is long,
    checkpoints so that a second call after an interruption continues where the first stopped. Its
    return value is ignored. ``deps`` are the keys of the jobs whose results it reads (through paths
    among its ``args``); it starts only once they have finished.
    """

    key: str
    func: Callable[..., object]
    result: Path
    args: tuple = ()
    deps: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterSpec:
    """Where jobs run, parsed from ``--cluster``: kind "here", "local" (``workers`` processes),
    "tcp" or "tls" (``address`` of a running scheduler) or "slurm"."""

    kind: str
    workers: int = 0
    address: str = ""

    def value(self) -> str:
        """The ``--cluster`` value it was parsed from, for messages."""
        return self.address or (f"local:{self.workers}" if self.kind == "local" else self.kind)


@dataclass(frozen=True)
class SlurmOptions:
    """``--slurm-*`` options; None means the value of dask's ``jobqueue.slurm`` configuration."""

    partition: str | None = None
    cores: int | None = None      # per SLURM job
    memory: str | None = None     # per SLURM job, e.g. "16GB"
    walltime: str | None = None   # per SLURM job, SLURM's formats ("HH:MM:SS", "D-HH:MM", minutes)
    gpus: int = 0                 # per SLURM job: --gres=gpu:N and one worker process per GPU
    jobs: int = 1                 # SLURM jobs kept running (each retired job is replaced)


@dataclass(frozen=True)
class TlsFiles:
    """``--tls-ca-file``, ``--tls-cert``, ``--tls-key`` (Dask's own names): PEM files of the CA that
    signed the scheduler's certificate, and of this client's certificate and private key."""

    ca_file: Path
    cert: Path
    key: Path

    def security(self):
        """The ``distributed.Security`` of a client holding these files, encryption required."""
        from distributed import Security
        return Security(tls_ca_file=str(self.ca_file), tls_client_cert=str(self.cert),
                        tls_client_key=str(self.key), require_encryption=True)


@dataclass(frozen=True)
class ClusterRequest:
    """What `add_cluster_arguments`' options ask for, checked (`cluster_arguments`).

    ``spec`` None: no ``--cluster`` (`auto_cluster` decides). ``tls``: the client's certificates for
    a ``tls://`` scheduler. ``dashboard``: print the link to Dask's dashboard (``local:N`` and SLURM
    start one on 127.0.0.1 only then).
    """

    spec: ClusterSpec | None = None
    slurm: SlurmOptions = SlurmOptions()
    tls: TlsFiles | None = None
    dashboard: bool = False


# ---------------------------------------------------------------------------- parsing and validation
def parse_cluster(value: str) -> ClusterSpec:
    """``--cluster`` value -> `ClusterSpec`; ValueError naming the value and the accepted forms."""
    if value in ("slurm", "here"):
        return ClusterSpec(value)
    m = re.fullmatch(r"local:(\d+)", value)
    if m and int(m.group(1)) >= 1:
        return ClusterSpec("local", workers=int(m.group(1)))
    m = re.fullmatch(r"(tcp|tls)://([^:/\s]+):(\d+)", value)
    if m and 1 <= int(m.group(3)) <= 65535:
        return ClusterSpec(m.group(1), address=value)
    raise ValueError(f"--cluster {value!r}: expected {CLUSTER_FORMS}")


def walltime_seconds(value: str) -> int:
    """SLURM's time formats (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) -> seconds."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value.strip())
    if not m:
        raise ValueError(f"--slurm-walltime {value!r}: expected HH:MM:SS, D-HH:MM:SS or minutes")
    days, a, b, c = m.groups()
    if days is not None:            # D-HH[:MM[:SS]]
        seconds = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:             # HH:MM:SS
        seconds = int(a) * 3600 + int(b) * 60 + int(c)
    elif b is not None:             # MM:SS
        seconds = int(a) * 60 + int(b)
    else:                           # minutes
        seconds = int(a) * 60
    if seconds <= 0:
        raise ValueError(f"--slurm-walltime {value!r}: must be longer than zero")
    return seconds


def _parse_memory(value: str) -> str:
    from dask.utils import parse_bytes
    try:
        if parse_bytes(value) > 0:
            return value
    except ValueError:
        pass
    raise ValueError(f"--slurm-memory {value!r}: expected a size such as 16GB or 4000MiB")


def _count(option: str, minimum: int):
    def parse(value: str) -> int:
        if not re.fullmatch(r"\d+", value) or int(value) < minimum:
            raise ValueError(f"{option} {value!r}: expected a whole number >= {minimum}")
        return int(value)
    return parse


def _argtype(parse):
    """argparse reports an ArgumentTypeError's text as it is: `error: argument --x: <text>`, exit 2."""
    def wrapped(value):
        try:
            return parse(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return wrapped


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--cluster``, ``--tls-*``, ``--dashboard`` and ``--slurm-*`` options; read them back with
    `cluster_arguments`."""
    g = parser.add_argument_group(
        "running the grid on a cluster (docs/cluster.md)",
        "The run folder (--out) and the data cache must be on a file system that every worker sees.")
    g.add_argument("--cluster", type=_argtype(parse_cluster), default=None, metavar="WHERE",
                   help=f"where the jobs run: {CLUSTER_FORMS} (slurm: dask-jobqueue, configured by "
                        "~/.config/dask/jobqueue.yaml, section jobqueue.slurm); absent = one single-threaded "
                        "local worker per core when a CPU run has several full-size jobs, else here. local:N "
                        "and slurm use TLS with temporary credentials")
    g.add_argument("--tls-ca-file", type=Path, default=None, metavar="PEM",
                   help="with --cluster tls://: the CA certificate that signed the scheduler's certificate")
    g.add_argument("--tls-cert", type=Path, default=None, metavar="PEM",
                   help="with --cluster tls://: this client's certificate (signed by the scheduler's CA)")
    g.add_argument("--tls-key", type=Path, default=None, metavar="PEM",
                   help="with --cluster tls://: this client's private key")
    g.add_argument("--dashboard", action="store_true",
                   help="print the link to Dask's dashboard (local:N and slurm start one, on 127.0.0.1 only; "
                        "needs bokeh)")
    g.add_argument("--slurm-partition", default=None, metavar="NAME",
                   help="SLURM partition (default: jobqueue.slurm.queue)")
    g.add_argument("--slurm-cores", type=_argtype(_count("--slurm-cores", 1)), default=None, metavar="N",
                   help="cores per SLURM job (default: jobqueue.slurm.cores)")
    g.add_argument("--slurm-memory", type=_argtype(_parse_memory), default=None, metavar="SIZE",
                   help="memory per SLURM job, e.g. 16GB (default: jobqueue.slurm.memory)")
    g.add_argument("--slurm-walltime", type=_argtype(_checked_walltime), default=None, metavar="TIME",
                   help="walltime per SLURM job, e.g. 04:00:00 (default: jobqueue.slurm.walltime); workers "
                        "retire before it and their jobs continue elsewhere")
    g.add_argument("--slurm-gpus", type=_argtype(_count("--slurm-gpus", 0)), default=0, metavar="N",
                   help="GPUs per SLURM job (--gres=gpu:N), one worker process per GPU (default 0)")
    g.add_argument("--slurm-jobs", type=_argtype(_count("--slurm-jobs", 1)), default=1, metavar="N",
                   help="SLURM jobs kept running at once (default 1)")


def _checked_walltime(value: str) -> str:
    walltime_seconds(value)
    return value


def cluster_arguments(args) -> ClusterRequest:
    """Read back `add_cluster_arguments`' options from ``args`` (argparse's namespace), checking them
    together before any heavy work: ``--slurm-*`` only with ``--cluster slurm``, SLURM's cores and
    memory known from the options or the jobqueue configuration, ``--tls-*`` all three with
    ``tls://`` (readable PEM files, the key matching the certificate) and only with it, and
    ``--dashboard`` only for a Dask cluster. Raises `UserError` (one line naming the option)."""
    slurm = SlurmOptions(partition=args.slurm_partition, cores=args.slurm_cores, memory=args.slurm_memory,
                         walltime=args.slurm_walltime, gpus=args.slurm_gpus, jobs=args.slurm_jobs)
    given = [f"--slurm-{name}" for name, value in vars(slurm).items() if value != getattr(SlurmOptions(), name)]
    spec = args.cluster
    kind = spec.kind if spec is not None else None
    if given and kind != "slurm":
        raise UserError(f"{', '.join(given)} given without --cluster slurm")
    if kind == "slurm":
        try:
            slurm_cluster_kwargs(slurm)
        except ValueError as e:
            raise UserError(str(e)) from None
    files = dict(zip(TLS_OPTIONS, (args.tls_ca_file, args.tls_cert, args.tls_key)))
    tls = None
    if kind == "tls":
        missing = [option for option, path in files.items() if path is None]
        if missing:
            raise UserError(f"--cluster {spec.address}: {', '.join(missing)} not given; expected --tls-ca-file "
                            "CA.pem --tls-cert CERT.pem --tls-key KEY.pem (the scheduler's CA, this client's "
                            f"certificate and key; {DOCS})")
        tls = _checked_tls_files(TlsFiles(*(Path(p).expanduser().resolve() for p in files.values())))
    elif any(path is not None for path in files.values()):
        named = ", ".join(option for option, path in files.items() if path is not None)
        where = f"--cluster {spec.value()}" if spec is not None else "no --cluster"
        raise UserError(f"{named} given with {where}; expected --cluster tls://HOST:PORT (local:N and slurm "
                        "make temporary credentials of their own)")
    if args.dashboard:
        if kind in (None, "here"):
            raise UserError("--dashboard given without a Dask cluster; expected --cluster local:N, tcp://HOST:PORT, "
                            "tls://HOST:PORT or slurm")
        if kind in ("local", "slurm") and importlib.util.find_spec("bokeh") is None:
            raise UserError(f"--dashboard with --cluster {spec.value()}: "
                            "Dask's dashboard needs bokeh, which is not installed; expected `python -m pip "
                            "install bokeh` first, or no --dashboard")
    return ClusterRequest(spec, slurm, tls, bool(args.dashboard))


def _checked_tls_files(tls: TlsFiles) -> TlsFiles:
    """``tls`` when its files are PEM files that load, the key belonging to the certificate; else UserError."""
    for option, path in zip(TLS_OPTIONS, (tls.ca_file, tls.cert, tls.key)):
        if not path.is_file():
            raise UserError(f"{option} {path}: no such file; expected a PEM file")
        if not os.access(path, os.R_OK):
            raise UserError(f"{option} {path}: not readable by this user; expected a PEM file it can read")
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file))
    except (ssl.SSLError, ValueError) as e:
        raise UserError(f"--tls-ca-file {tls.ca_file}: no PEM certificate in it ({_ssl_reason(e)}); expected the "
                        "certificate of the CA that signed the scheduler's") from None
    try:
        context.load_cert_chain(str(tls.cert), str(tls.key))
    except ssl.SSLError as e:
        what = "the key does not belong to the certificate" if "MISMATCH" in str(e) else _ssl_reason(e)
        raise UserError(f"--tls-cert {tls.cert} and --tls-key {tls.key}: {what}; expected a PEM certificate and "
                        "its unencrypted private key") from None
    return tls


def _ssl_reason(e: Exception) -> str:
    return getattr(e, "reason", None) or " ".join(str(e).split())


# ---------------------------------------------------------------------------- connect first
def project_sources() -> list[str]:
    """The project's Python sources as this process imports them: paths relative to `ROOT`, sorted."""
    return sorted(path.relative_to(ROOT).as_posix() for package in PROJECT_PACKAGES
                  for path in (ROOT / package).rglob("*.py"))


def source_digest(files: Sequence[str]) -> str:
    """SHA-256 over ``files`` (relative to `ROOT`): names and contents, a missing file as missing.

    Run on the scheduler and the workers with the client's list: equal digests mean that they
    import the client's code (files they have in addition, e.g. left in an old installation, do not
    count)."""
    digest = hashlib.sha256()
    for name in files:
        path = ROOT / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"<missing>") + b"\0")
    return digest.hexdigest()


def check_reachable(request: ClusterRequest, timeout: float = CONNECT_TIMEOUT) -> None:
    """Check, before any data is built or any folder made, that ``request``'s cluster can run the jobs;
    `UserError` (one line naming the address or option) when it cannot.

    ``tcp://`` and ``tls://``: the host resolves, its port accepts a connection within ``timeout``
    seconds, the Dask handshake (with TLS: certificates both ways) succeeds, and the scheduler and
    the workers connected now import this project's code (the same source digest as this client).
    ``local:N``: the ``cryptography`` package for its temporary TLS credentials. ``slurm``: also
    ``sbatch`` on the PATH and a writable folder for the credentials. None and ``here``: nothing.
    """
    spec = request.spec
    if spec is None or spec.kind == "here":
        return
    if spec.kind in ("local", "slurm") and importlib.util.find_spec("cryptography") is None:
        raise UserError(f"--cluster {spec.value()}: the "
                        "cryptography package (for the cluster's temporary TLS credentials) is not installed; "
                        "expected `python -m pip install cryptography`")
    if spec.kind == "slurm":
        if shutil.which("sbatch") is None:
            raise UserError("--cluster slurm: sbatch not found on the PATH; expected to run on a SLURM login node "
                            "(or a one-node SLURM: bash bench/slurm_local.sh)")
        folder = credentials_folder()
        if not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
            raise UserError(f"--cluster slurm: the folder for the workers' temporary TLS credentials, {folder} "
                            "(jobqueue.slurm.shared-temp-directory, default the home folder), is not a writable "
                            "folder; expected one that every SLURM node sees")
    if spec.kind in ("tcp", "tls"):
        _check_scheduler(spec.address, request.tls, timeout)


def _check_scheduler(address: str, tls: TlsFiles | None, timeout: float) -> None:
    from distributed import Client
    host, port = address.split("://", 1)[1].rsplit(":", 1)
    where = f"--cluster {address}"
    try:
        socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UserError(f"{where}: host {host!r} does not resolve ({e.strerror}); expected the name or IP "
                        "address of the machine running `dask scheduler`") from None
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except ConnectionRefusedError:
        raise UserError(f"{where}: connection refused (nothing listens on port {port} of {host}); expected a "
                        f"running `dask scheduler` there ({DOCS})") from None
    except (socket.timeout, TimeoutError):
        raise UserError(f"{where}: no answer within {timeout:g} s (a firewall, or the wrong host or port?); "
                        f"expected a running `dask scheduler` there ({DOCS})") from None
    except OSError as e:
        raise UserError(f"{where}: cannot connect ({e.strerror or e}); expected a running `dask scheduler` "
                        f"there ({DOCS})") from None
    security = tls.security() if tls else None
    try:
        _handshake(address, security, timeout)
    except TimeoutError:
        raise UserError(f"{where}: no answer to Dask's handshake within {timeout:g} s (another service on that "
                        f"port, or a stuck scheduler?); expected a running `dask scheduler` there ({DOCS})") from None
    except Exception as e:   # whatever answered on that port, it did not complete Dask's handshake with us
        raise UserError(f"{where}: {_handshake_failure(address, tls, e)}") from None
    with Client(address, security=security, timeout=timeout, set_as_default=False) as client:
        _check_same_code(client, where)


def _handshake(address: str, security, timeout: float) -> None:
    """Open and close one Dask connection to ``address`` (TLS with ``security``), in a thread of its
    own so that it works whether or not the caller runs an event loop. A failed connection leaves no
    half-made Client behind (whose clean-up would wait and complain at exit)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor
    from distributed.comm import connect

    async def probe():
        comm = await connect(address, timeout=timeout,
                             **(security.get_connection_args("client") if security else {}))
        await comm.close()

    async def within_timeout():   # Dask's own timeout does not cover a peer that never answers the handshake
        try:
            await asyncio.wait_for(probe(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no Dask handshake within {timeout:g} s") from None

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, within_timeout()).result()


def _handshake_failure(address: str, tls: TlsFiles | None, error: BaseException) -> str:
    """One line saying why a connection that TCP accepted did not become a Dask connection."""
    chain, cause = [], error
    while cause is not None and len(chain) < 5:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    text = " ".join(f"{type(c).__name__}: {c}" for c in chain)
    detail = " ".join(f"{type(chain[-1]).__name__}: {chain[-1]}".split())[:160]   # the root cause
    if tls is not None:
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return (f"TLS handshake refused: the scheduler's certificate is not signed by the CA of --tls-ca-file "
                    f"{tls.ca_file}; expected the CA that signed it")
        if any(s in text for s in ("UNKNOWN_CA", "alert", "EOF occurred", "reset by peer")):
            return (f"TLS handshake refused: the scheduler did not accept --tls-cert {tls.cert}; expected a "
                    "certificate signed by the scheduler's CA")
        return f"TLS handshake refused: no TLS answer, a plain tcp:// scheduler? ({detail})"
    if any(s in text for s in ("reset by peer", "Timed out", "closed")):
        return (f"the scheduler closed the connection: does it require TLS? then use "
                f"tls://{address.split('://', 1)[1]} with --tls-ca-file, --tls-cert and --tls-key ({detail})")
    return f"no Dask scheduler answered ({detail})"


def _check_same_code(client, where: str) -> None:
    """`UserError` unless the scheduler and the connected workers import this process's code."""
    files = project_sources()
    want = source_digest(files)
    fix = (f"expected this project installed into the environment that runs `dask scheduler` and `dask worker`: "
           f"`python -m pip install .` in the checkout, again after every change of the code ({DOCS})")
    try:
        got = client.run_on_scheduler(source_digest, files)
    except ImportError as e:
        raise UserError(f"{where}: the scheduler cannot import this project ({e}); {fix}") from None
    if got != want:
        raise UserError(f"{where}: the scheduler imports another version of this project than {ROOT}; {fix}")
    answers = client.run(source_digest, files, on_error="return")
    broken = sorted(w for w, got in answers.items() if got != want)
    if broken:
        cause = next((f" ({a})" for a in answers.values() if isinstance(a, BaseException)), "")
        raise UserError(f"{where}: worker(s) {', '.join(broken)} cannot import this project or import another "
                        f"version of it{cause}; {fix}")
    if not answers:
        print(f"{where}: no workers connected yet; the jobs wait until workers connect ({DOCS})")


# ---------------------------------------------------------------------------- workers
def worker_environment(cores: int, gpu: str | None = None) -> dict[str, str]:
    """What a worker process needs in its environment: BLAS threads for the cores it owns, the
    repository on its import path, and (GPU workers) the one device it may use."""
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {name: str(cores) for name in BLAS_VARIABLES}
    env["PYTHONPATH"] = pythonpath
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def auto_cluster(n_jobs: int, device: str, full_size: bool, cpu_count: int | None = None) -> ClusterSpec | None:
    """Where a run's jobs go when ``--cluster`` is not given: one single-threaded local worker per
    core when there are several full-size CPU jobs to train, else here (None).

    On the 2-core development machine the demo's six models took 8.2 minutes per pair on two
    one-thread workers against 4.6-4.8 minutes each in one two-thread process (1.14x; bench/RESULTS.md),
    for one model's memory (under 1 GB at 99 px) per extra worker. Miniature networks
    (``widths``) and GPU runs stay here: a local cluster takes about 10 s to start, more than they
    would save.
    """
    cpu_count = cpu_count or usable_cores()
    if device != "cpu" or not full_size or n_jobs < 2 or cpu_count < 2:
        return None
    return ClusterSpec("local", workers=min(cpu_count, n_jobs))


def cores_per_worker(n_workers: int, cpu_count: int | None = None) -> int:
    """The cores each of ``n_workers`` local workers owns: an equal share, at least one."""
    return max(1, (cpu_count or usable_cores()) // n_workers)


@contextlib.contextmanager
def _spawn_environment(env: dict[str, str]) -> Iterator[None]:
    """Put ``env`` into this process's environment while nannies are created, then restore it.

    A nanny reads its pre-spawn variables (the BLAS ones) when it is created, taking an existing
    environment variable over Dask's configuration, and sets them before every (re)start of its
    worker process; the worker inherits them before it imports NumPy.
    """
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def start_local_cluster(n_workers: int, cores: int | None = None, gpus: Sequence[str] = (), dashboard: bool = False):
    """``n_workers`` worker processes on this machine, one job at a time each, on 127.0.0.1 with TLS.

    Each owns ``cores`` cores (default: an equal share) as BLAS threads and 1/n of the memory
    (a worker passing 95% of it is restarted by its nanny, and its job resumes elsewhere). With
    ``gpus`` (device ids, e.g. ("0", "1")), worker i sees only ``gpus[i]``. Every connection uses
    TLS with credentials made for this cluster and held in memory (``Security.temporary``): other
    users of the machine can reach 127.0.0.1 too, and a scheduler runs whatever pickles it is sent.
    The scheduler's web server (Dask's dashboard with ``dashboard``) listens on 127.0.0.1 only.
    """
    from distributed import Nanny, Scheduler, Security, SpecCluster
    from distributed.system import MEMORY_LIMIT

    if gpus and len(gpus) < n_workers:
        raise ValueError(f"--cluster local:{n_workers}: {n_workers} GPU workers but only {len(gpus)} GPUs "
                         f"({', '.join(gpus)}); expected local:N with N <= {len(gpus)}")
    cores = cores or cores_per_worker(n_workers)
    security = Security.temporary()
    workers = {}
    for i in range(n_workers):
        env = worker_environment(cores, gpus[i] if gpus else None)
        # CUDA_VISIBLE_DEVICES differs per worker, so it goes in the nanny's own env (set in the
        # worker process at its start, before CUDA is initialized); the BLAS variables cannot.
        workers[i] = {"cls": Nanny, "options": {"nthreads": 1, "memory_limit": MEMORY_LIMIT // n_workers,
                                                "host": "127.0.0.1", "env": env, "silence_logs": logging.ERROR,
                                                "security": security, "protocol": "tls://"}}
    # Dask's nannies also set MALLOC_TRIM_THRESHOLD_=65536 (to give memory back sooner); fixing it
    # turns off glibc's adaptive mmap threshold, so every large NumPy temporary is mmapped and
    # zero-filled afresh: 62 instead of 80 images/s per one-thread worker at 99 px (measured). None
    # leaves glibc's defaults.
    import dask
    scheduler = {"host": "127.0.0.1", "protocol": "tls://", "security": security, "dashboard": dashboard,
                 "dashboard_address": "127.0.0.1:0"}
    with _spawn_environment({name: str(cores) for name in BLAS_VARIABLES}), \
            dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return SpecCluster(workers=workers, silence_logs=logging.ERROR, security=security,
                           scheduler={"cls": Scheduler, "options": scheduler})


def slurm_cluster_kwargs(opts: SlurmOptions) -> dict:
    """dask-jobqueue ``SLURMCluster`` arguments: dask's ``jobqueue.slurm`` configuration, overridden
    by the options given. One worker process per GPU (one when there is none); each runs one job at
    a time with the job's cores shared out as BLAS threads; workers retire (``--lifetime``) before
    the walltime, so a job interrupted then continues on a fresh worker instead of being killed.
    (`open_client` adds the TLS credentials and the dashboard's settings.)"""
    import dask
    importlib.import_module("dask_jobqueue")      # loads the jobqueue section of dask's configuration
    config = dask.config.get("jobqueue.slurm")
    cores = opts.cores or config.get("cores")
    memory = opts.memory or config.get("memory")
    walltime = opts.walltime or config.get("walltime")
    where = "dask's configuration (jobqueue.slurm in ~/.config/dask/jobqueue.yaml)"
    if not cores:
        raise ValueError(f"--slurm-cores not given and no cores in {where}; expected e.g. --slurm-cores 8")
    if not memory:
        raise ValueError(f"--slurm-memory not given and no memory in {where}; expected e.g. --slurm-memory 16GB")
    processes = max(1, opts.gpus)
    if cores < processes:
        raise ValueError(f"--slurm-cores {cores}: fewer cores than the {processes} worker processes "
                         f"(one per GPU); expected at least {processes}")
    seconds = walltime_seconds(str(walltime))
    margin = max(120, seconds // 10)                   # room to retire and hand work back
    if seconds <= 2 * margin:
        raise ValueError(f"--slurm-walltime {walltime!r}: too short for workers to retire before it; "
                         f"expected at least {2 * margin // 60 + 1} minutes")
    worker_args = list(config.get("worker-extra-args") or []) + [
        "--nthreads", "1",                             # one job at a time per worker (the last --nthreads wins)
        "--lifetime", f"{seconds - margin}s", "--lifetime-stagger", f"{margin // 4}s"]
    directives = list(config.get("job-extra-directives") or [])
    if opts.gpus:
        directives.append(f"--gres=gpu:{opts.gpus}")
        if opts.gpus > 1:
            worker_args += ["--preload", "pipeline.cluster"]   # dask_setup below picks each worker's GPU
    env = worker_environment(cores // processes)
    prologue = list(config.get("job-script-prologue") or []) + [f"export {k}={v}" for k, v in env.items()]
    kwargs = dict(cores=cores, memory=memory, walltime=str(walltime), processes=processes,
                  worker_extra_args=worker_args, job_extra_directives=directives, job_script_prologue=prologue)
    if opts.partition:
        kwargs["queue"] = opts.partition
    return kwargs


def dask_setup(worker) -> None:
    """Worker preload for SLURM jobs with several GPUs: SLURM sets ``CUDA_VISIBLE_DEVICES`` to the
    job's GPUs, and ``dask worker --nworkers N`` names its workers ``<name>-0`` ... ``<name>-(N-1)``;
    worker i keeps the i-th device. Runs before any job, so before CUDA is initialized."""
    devices = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    m = re.search(r"-(\d+)$", str(worker.name))
    if len(devices) > 1 and m and int(m.group(1)) < len(devices):
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[int(m.group(1))]


def credentials_folder() -> Path:
    """Where a SLURM run keeps its workers' temporary TLS credentials: dask's
    ``jobqueue.slurm.shared-temp-directory`` (dask-jobqueue's setting for them), else the home folder;
    a folder every SLURM node sees, at the same path."""
    import dask
    importlib.import_module("dask_jobqueue")
    configured = dask.config.get("jobqueue.slurm.shared-temp-directory", None)
    return Path(os.path.expandvars(configured or "~")).expanduser()


@contextlib.contextmanager
def temporary_credentials(folder: Path) -> Iterator[object]:
    """A ``distributed.Security`` for one SLURM cluster, encryption required: a certificate and key
    made for it (``Security.temporary``), written where the SLURM jobs' workers can read them, to
    ``folder/.alexnet-np-tls-XXXXXXXX/`` (only this user may enter it; ``cert.pem`` and ``key.pem``,
    mode 600); the folder is removed on exit, also after an error or Ctrl-C (not after ``kill -9``:
    a stale folder holds nothing of use once its scheduler has gone)."""
    from distributed import Security
    made = Security.temporary()
    folder = Path(tempfile.mkdtemp(prefix=CREDENTIALS_PREFIX, dir=folder))   # mode 700
    try:
        cert, key = folder / "cert.pem", folder / "key.pem"
        for path, text in ((cert, made.tls_worker_cert), (key, made.tls_worker_key)):
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(text)
        # the certificate is self-signed: it is its own CA; workers are given the files' paths
        # (dask-jobqueue puts them on the `dask worker` command line), this process the same files
        roles = {f"tls_{role}_{part}": str(path) for role in ("client", "scheduler", "worker")
                 for part, path in (("cert", cert), ("key", key))}
        yield Security(tls_ca_file=str(cert), require_encryption=True, **roles)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def open_client(where: ClusterSpec | str, slurm: SlurmOptions | None = None, cores: int | None = None,
                gpus: Sequence[str] = (), tls: TlsFiles | None = None, dashboard: bool = False):
    """A Dask client for ``where`` (a `ClusterSpec` or a ``--cluster`` string), closed on exit with the
    cluster it started. ``cores`` and ``gpus`` apply to ``local:N`` (see `start_local_cluster`);
    workers of a ``tcp://`` or ``tls://`` scheduler are configured where they were started, and
    ``tls`` holds this client's certificates for ``tls://``. SLURM clusters use TLS with temporary
    credentials (`temporary_credentials`). ``dashboard``: print the link to Dask's dashboard
    (``local:N`` and SLURM start one, on 127.0.0.1 only: from another machine, an ssh tunnel)."""
    from distributed import Client
    spec = parse_cluster(where) if isinstance(where, str) else where
    if spec.kind == "here":
        raise ValueError("--cluster here runs the jobs in this process, without a Dask client")
    if spec.kind in ("tcp", "tls"):
        if spec.kind == "tls" and tls is None:
            raise ValueError(f"--cluster {spec.address}: needs the client's certificates (tls=TlsFiles(...))")
        with Client(spec.address, security=tls.security() if spec.kind == "tls" else None) as client:
            _print_dashboard(client, dashboard)
            yield client
        return
    with contextlib.ExitStack() as stack:
        if spec.kind == "local":
            cluster = start_local_cluster(spec.workers, cores=cores, gpus=gpus, dashboard=dashboard)
        else:
            import dask
            from dask_jobqueue import SLURMCluster
            slurm = slurm or SlurmOptions()
            kwargs = slurm_cluster_kwargs(slurm)
            security = stack.enter_context(temporary_credentials(credentials_folder()))
            scheduler = dict(dask.config.get("jobqueue.slurm.scheduler-options", None) or {}, dashboard=dashboard)
            scheduler.setdefault("dashboard_address", "127.0.0.1:0")
            cluster = SLURMCluster(**kwargs, security=security, scheduler_options=scheduler)
            cluster.adapt(minimum_jobs=slurm.jobs, maximum_jobs=slurm.jobs)
        stack.enter_context(cluster)
        client = stack.enter_context(Client(cluster))
        _print_dashboard(client, dashboard)
        yield client


def _print_dashboard(client, dashboard: bool) -> None:
    if dashboard:
        link = client.dashboard_link if "dashboard" in client.scheduler_info().get("services", {}) else None
        print(f"Dask dashboard: {link}" if link else
              f"Dask dashboard: the scheduler at {client.scheduler.address} has none (start it without "
              "--no-dashboard, with bokeh installed)")


# ---------------------------------------------------------------------------- the graph
def _in_order(jobs: Sequence[GridJob]) -> list[GridJob]:
    """Check the graph (unique keys, known dependencies, no cycle, importable functions) and return
    its jobs so that each comes after its dependencies, otherwise in the order given."""
    by_key = {}
    for job in jobs:
        if job.key in by_key:
            raise ValueError(f"job key {job.key!r} appears twice; expected unique keys")
        qualname = getattr(job.func, "__qualname__", "")
        if not callable(job.func) or "<" in qualname or "." in qualname:
            raise ValueError(f"job {job.key!r}: {job.func!r} is not a top-level function; workers import "
                             "job functions by name")
        by_key[job.key] = job
    for job in jobs:
        for dep in job.deps:
            if dep not in by_key:
                raise ValueError(f"job {job.key!r} depends on {dep!r}, which is not a job of the graph")
    ordered, placed = [], set()
    while len(ordered) < len(jobs):
        ready = [j for j in jobs if j.key not in placed and all(d in placed for d in j.deps)]
        if not ready:
            stuck = sorted(j.key for j in jobs if j.key not in placed)
            raise ValueError(f"jobs {stuck} depend on each other in a cycle")
        ordered += ready
        placed.update(j.key for j in ready)
    return ordered


def _run_one(job: GridJob, *finished_deps: str) -> str:
    """Run one job unless its result exists (on whichever machine runs it) and return the result path.
    ``finished_deps`` are the dependencies' result paths: Dask starts a task only when the futures
    passed to it have finished, which is how it learns the order."""
    result = Path(job.result)
    if not result.exists():
        job.func(*job.args)
        if not result.exists():
            raise RuntimeError(f"job {job.key!r}: {job.func.__module__}.{job.func.__qualname__} returned "
                               f"without writing its result {result}")
    return str(result)


class JobsFailed(RuntimeError):
    """Some jobs failed on the cluster (after their retries); the others ran to the end."""

    def __init__(self, failures: dict[str, BaseException]):
        self.failures = failures
        lines = [f"  {key}: {type(e).__name__}: {e}" for key, e in failures.items()]
        super().__init__(f"{len(failures)} job(s) failed:\n" + "\n".join(lines))


def run_jobs(jobs: Sequence[GridJob], where: ClusterSpec | str | None = None, slurm_options: SlurmOptions | None = None,
             progress: bool = True, retries: int = 2, client=None, tls: TlsFiles | None = None,
             dashboard: bool = False) -> dict[str, Path]:
    """Run a graph of jobs in dependency order and return {key: result path}.

    ``where``: None (or "here") runs them here, one after another (an exception stops the run at
    once); a ``--cluster`` value (or `ClusterSpec`) runs them on Dask (`open_client`, with ``tls``
    and ``dashboard``), ``client`` on an existing Dask client. On Dask each job is a future that
    starts when its dependencies' futures have finished, is rerun up to ``retries`` times when it
    raises, and is rescheduled on another worker when its worker dies (up to Dask's
    ``distributed.scheduler.allowed-failures``); a failed job fails its dependents, the others run to
    the end, then `JobsFailed` lists the failures. Jobs whose result exists are skipped. One
    progress bar counts finished jobs.
    """
    spec = parse_cluster(where) if isinstance(where, str) else where
    ordered = _in_order(jobs)
    todo = [job for job in ordered if not Path(job.result).exists()]
    results = {job.key: Path(job.result) for job in jobs}
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="jobs", unit="job", disable=not progress)
    with bar:
        if (spec is None or spec.kind == "here") and client is None:
            for job in todo:
                _run_one(job)
                bar.update()
            return results
        with contextlib.ExitStack() as stack:
            if client is None:
                client = stack.enter_context(open_client(spec, slurm_options, tls=tls, dashboard=dashboard))
            _run_on_dask(client, todo, retries, bar)
    return results


def _run_on_dask(client, todo: list[GridJob], retries: int, bar) -> None:
    from distributed import as_completed
    run_id = uuid.uuid4().hex[:8]          # keys unique to this call, so a shared client never mixes runs
    futures, keys = {}, {}
    for job in todo:
        deps = [futures[d] for d in job.deps if d in futures]    # finished dependencies are not waited for
        fut = client.submit(_run_one, job, *deps, key=f"{job.key}-{run_id}", retries=retries, pure=False)
        futures[job.key], keys[fut.key] = fut, job.key
    failures = {}
    for fut in as_completed(list(futures.values())):
        if fut.status != "finished":
            failures[keys[fut.key]] = fut.exception() if fut.status == "error" else RuntimeError(fut.status)
        bar.update()
    if failures:
        raise JobsFailed(failures)
