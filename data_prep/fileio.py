"""Atomic file output: a reader never sees a half-written file.

Every file this package writes (manifests, images, HDF5 datasets, error reports) goes through
:func:`atomic_output`: the content is written under a temporary name in the same folder and then
renamed onto the final name with :func:`os.replace`, which POSIX and Windows perform atomically
within one file system. A crash leaves at most a stray temporary file, never a truncated target.
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The temporary name starts with a dot and ends with ``.tmp`` plus the process id, so that
    parallel writers and glob patterns such as ``*.dcm`` never pick it up. On any exception the
    temporary file is removed and the exception propagates; ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_csv_atomic(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    """Write a CSV file (UTF-8, ``\\n`` line ends) atomically and return its path."""
    path = Path(path)
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path
