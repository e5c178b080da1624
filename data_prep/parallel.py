"""One helper to run a function over many tasks in worker processes with a progress bar."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator

from tqdm import tqdm


def default_workers() -> int:
    """Number of CPU cores this process may use (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def parallel_map(func: Callable, tasks: Iterable, workers: int | None = None, progress: bool = True,
                 desc: str = "", total: int | None = None, initial: int = 0, unit: str = "it") -> Iterator:
    """Yield ``func(task)`` for every task, in completion order, with a tqdm progress bar.

    ``workers`` processes (default: :func:`default_workers`); 1 runs in this process, which keeps
    tracebacks simple and lets tests patch functions. ``func`` must be a module-level function and
    the tasks picklable. ``total``/``initial`` set the bar when resuming (e.g. 400 of 1000 done).
    If the consumer stops early the pool is terminated.
    """
    tasks = list(tasks)
    workers = default_workers() if workers is None else max(1, int(workers))
    workers = min(workers, max(1, len(tasks)))
    bar = tqdm(total=initial + len(tasks) if total is None else total, initial=initial, desc=desc,
               unit=unit, disable=not progress, dynamic_ncols=True)
    pool = None
    try:
        if workers == 1:
            results = map(func, tasks)
        else:
            pool = multiprocessing.get_context().Pool(workers)
            chunksize = max(1, min(16, len(tasks) // (workers * 8)))
            results = pool.imap_unordered(func, tasks, chunksize=chunksize)
        for result in results:
            bar.update(1)
            yield result
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
