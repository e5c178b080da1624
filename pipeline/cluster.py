"""Run a graph of jobs in this process or on Dask: a ``LocalCluster``-like set of local workers,
an existing scheduler (``tcp://HOST:PORT``), or SLURM through dask-jobqueue.

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
business; the README's "Running the grid on a cluster" has the details.

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
import importlib
import logging
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parent.parent   # workers put the repository on their import path
BLAS_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
CLUSTER_FORMS = ("local:N (N worker processes here), here (in this process, one job after another), "
                 "tcp://HOST:PORT (a running Dask scheduler) or slurm")


@dataclass(frozen=True)
class GridJob:
    """One job of the graph.

    ``func(*args)`` must be a top-level function (workers import it by name) that writes ``result``
    atomically (temporary file + ``os.replace``) and, when it is long, checkpoints so that a second
    call after an interruption continues where the first stopped. Its return value is ignored.
    ``deps`` are the keys of the jobs whose results it reads (through paths among its ``args``);
    it starts only once they have finished.
    """

    key: str
    func: Callable[..., object]
    result: Path
    args: tuple = ()
    deps: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterSpec:
    """Where jobs run, parsed from ``--cluster``: kind "local" (``workers`` processes), "tcp" or "slurm"."""

    kind: str
    workers: int = 0
    address: str = ""


@dataclass(frozen=True)
class SlurmOptions:
    """``--slurm-*`` options; None means the value of dask's ``jobqueue.slurm`` configuration."""

    partition: str | None = None
    cores: int | None = None      # per SLURM job
    memory: str | None = None     # per SLURM job, e.g. "16GB"
    walltime: str | None = None   # per SLURM job, SLURM's formats ("HH:MM:SS", "D-HH:MM", minutes)
    gpus: int = 0                 # per SLURM job: --gres=gpu:N and one worker process per GPU
    jobs: int = 1                 # SLURM jobs kept running (each retired job is replaced)


# ---------------------------------------------------------------------------- parsing and validation
def parse_cluster(value: str) -> ClusterSpec:
    """``--cluster`` value -> `ClusterSpec`; ValueError naming the value and the accepted forms."""
    if value in ("slurm", "here"):
        return ClusterSpec(value)
    m = re.fullmatch(r"local:(\d+)", value)
    if m and int(m.group(1)) >= 1:
        return ClusterSpec("local", workers=int(m.group(1)))
    m = re.fullmatch(r"tcp://([^:/\s]+):(\d+)", value)
    if m and 1 <= int(m.group(2)) <= 65535:
        return ClusterSpec("tcp", address=value)
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
    """The ``--cluster`` and ``--slurm-*`` options; read them back with `cluster_arguments`."""
    g = parser.add_argument_group(
        "running the grid on a cluster",
        "The run folder (--out) and the data cache must be on a file system that every worker sees.")
    g.add_argument("--cluster", type=_argtype(parse_cluster), default=None, metavar="WHERE",
                   help=f"where the jobs run: {CLUSTER_FORMS} (slurm: dask-jobqueue, configured by "
                        "~/.config/dask/jobqueue.yaml, section jobqueue.slurm); absent = one single-threaded "
                        "local worker per core when a CPU run has several full-size jobs, else here")
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


def cluster_arguments(parser: argparse.ArgumentParser, args) -> tuple[ClusterSpec | None, SlurmOptions]:
    """Read back `add_cluster_arguments`' options, checking them together (``parser.error``, exit 2)
    before any heavy work: ``--slurm-*`` only with ``--cluster slurm``, and SLURM's cores and memory
    known from the options or the jobqueue configuration."""
    slurm = SlurmOptions(partition=args.slurm_partition, cores=args.slurm_cores, memory=args.slurm_memory,
                         walltime=args.slurm_walltime, gpus=args.slurm_gpus, jobs=args.slurm_jobs)
    given = [f"--slurm-{name}" for name, value in vars(slurm).items() if value != getattr(SlurmOptions(), name)]
    spec = args.cluster
    if given and (spec is None or spec.kind != "slurm"):
        parser.error(f"{', '.join(given)} given without --cluster slurm")
    if spec is not None and spec.kind == "slurm":
        try:
            slurm_cluster_kwargs(slurm)
        except ValueError as e:
            parser.error(str(e))
    return spec, slurm


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
    one-thread workers against 4.6-4.8 minutes each in one two-thread process (1.14x; README, "BLAS
    threads"), for one model's memory (under 1 GB at 99 px) per extra worker. Miniature networks
    (``widths``) and GPU runs stay here: a local cluster takes about 10 s to start, more than they
    would save.
    """
    if cpu_count is None:   # the cores this process may run on, as BLAS counts them
        cpu_count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device != "cpu" or not full_size or n_jobs < 2 or cpu_count < 2:
        return None
    return ClusterSpec("local", workers=min(cpu_count, n_jobs))


def cores_per_worker(n_workers: int, cpu_count: int | None = None) -> int:
    """The cores each of ``n_workers`` local workers owns: an equal share, at least one."""
    return max(1, (cpu_count or os.cpu_count() or 1) // n_workers)


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


def start_local_cluster(n_workers: int, cores: int | None = None, gpus: Sequence[str] = ()):
    """``n_workers`` worker processes on this machine, one job at a time each.

    Each owns ``cores`` cores (default: an equal share) as BLAS threads and 1/n of the memory
    (a worker passing 95% of it is restarted by its nanny, and its job resumes elsewhere). With
    ``gpus`` (device ids, e.g. ("0", "1")), worker i sees only ``gpus[i]``.
    """
    from distributed import Nanny, Scheduler, SpecCluster
    from distributed.system import MEMORY_LIMIT

    if gpus and len(gpus) < n_workers:
        raise ValueError(f"--cluster local:{n_workers}: {n_workers} GPU workers but only {len(gpus)} GPUs "
                         f"({', '.join(gpus)}); expected local:N with N <= {len(gpus)}")
    cores = cores or cores_per_worker(n_workers)
    workers = {}
    for i in range(n_workers):
        env = worker_environment(cores, gpus[i] if gpus else None)
        # CUDA_VISIBLE_DEVICES differs per worker, so it goes in the nanny's own env (set in the
        # worker process at its start, before CUDA is initialized); the BLAS variables cannot.
        workers[i] = {"cls": Nanny, "options": {"nthreads": 1, "memory_limit": MEMORY_LIMIT // n_workers,
                                                "host": "127.0.0.1", "env": env, "silence_logs": logging.ERROR}}
    # Dask's nannies also set MALLOC_TRIM_THRESHOLD_=65536 (to give memory back sooner); fixing it
    # turns off glibc's adaptive mmap threshold, so every large NumPy temporary is mmapped and
    # zero-filled afresh: 62 instead of 80 images/s per one-thread worker at 99 px (measured). None
    # leaves glibc's defaults.
    import dask
    with _spawn_environment({name: str(cores) for name in BLAS_VARIABLES}), \
            dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return SpecCluster(workers=workers, silence_logs=logging.ERROR,
                           scheduler={"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard": False}})


def slurm_cluster_kwargs(opts: SlurmOptions) -> dict:
    """dask-jobqueue ``SLURMCluster`` arguments: dask's ``jobqueue.slurm`` configuration, overridden
    by the options given. One worker process per GPU (one when there is none); each runs one job at
    a time with the job's cores shared out as BLAS threads; workers retire (``--lifetime``) before
    the walltime, so a job interrupted then continues on a fresh worker instead of being killed."""
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


@contextlib.contextmanager
def open_client(where: ClusterSpec | str, slurm: SlurmOptions | None = None, cores: int | None = None,
                gpus: Sequence[str] = ()):
    """A Dask client for ``where`` (a `ClusterSpec` or a ``--cluster`` string), closed on exit with the
    cluster it started. ``cores`` and ``gpus`` apply to ``local:N`` (see `start_local_cluster`);
    workers of a ``tcp://`` scheduler are configured where they were started."""
    from distributed import Client
    spec = parse_cluster(where) if isinstance(where, str) else where
    if spec.kind == "tcp":
        with Client(spec.address) as client:
            yield client
        return
    if spec.kind == "local":
        cluster = start_local_cluster(spec.workers, cores=cores, gpus=gpus)
    else:
        from dask_jobqueue import SLURMCluster
        slurm = slurm or SlurmOptions()
        cluster = SLURMCluster(**slurm_cluster_kwargs(slurm))
        cluster.adapt(minimum_jobs=slurm.jobs, maximum_jobs=slurm.jobs)
    with cluster, Client(cluster) as client:
        yield client


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
             progress: bool = True, retries: int = 2, client=None) -> dict[str, Path]:
    """Run a graph of jobs in dependency order and return {key: result path}.

    ``where``: None runs them here, one after another (an exception stops the run at once); a
    ``--cluster`` value (or `ClusterSpec`) runs them on Dask, ``client`` on an existing Dask client.
    On Dask each job is a future that starts when its dependencies' futures have finished, is rerun
    up to ``retries`` times when it raises, and is rescheduled on another worker when its worker dies
    (up to Dask's ``distributed.scheduler.allowed-failures``); a failed job fails its dependents, the
    others run to the end, then `JobsFailed` lists the failures. Jobs whose result exists are skipped.
    One progress bar counts finished jobs.
    """
    ordered = _in_order(jobs)
    todo = [job for job in ordered if not Path(job.result).exists()]
    results = {job.key: Path(job.result) for job in jobs}
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="jobs", unit="job", disable=not progress)
    with bar:
        if where is None and client is None:
            for job in todo:
                _run_one(job)
                bar.update()
            return results
        with contextlib.ExitStack() as stack:
            if client is None:
                client = stack.enter_context(open_client(where, slurm_options))
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
