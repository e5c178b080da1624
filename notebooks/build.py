"""Build the teaching notebooks from their sources: a student and a solution notebook from one file.

    python notebooks/build.py            # every notebook: build, execute, check, write
    python notebooks/build.py 03 05      # only the sources whose names start with 03 or 05

Each source ``notebooks/src/NN_name.py`` is written in jupytext's "percent" format, with two cell
kinds of our own for the exercises:

    # %% [markdown]    a markdown cell: the comment lines that follow, "# " taken off
    # %%               a code cell, the same in both notebooks
    # %% exercise      the student's code cell. Lines between "# >>> student" and "# >>> solution"
                       go to the student notebook (the stub), lines between "# >>> solution" and
                       "# <<<" to the solution notebook; lines outside the markers go to both
    # %% check         a code cell that asserts the exercise's answer. In the student notebook it
                       is tagged ``raises-exception``: on the stub it fails, and the notebook
                       still runs to its end (nbclient records the error and goes on)

The student notebook goes to ``notebooks/NN_name.ipynb``, the solution notebook to
``notebooks/solutions/NN_name.ipynb``. Both are executed here by nbclient (kernel ``python3``,
working directory the notebook's folder). Before writing, the run is checked: the solution notebook
must raise nowhere, and in the student notebook every check cell must fail on its stub
(NotImplementedError or AssertionError) and no other cell may fail. The student notebook is written
with its outputs, so that a repository browser shows the figures; the solution notebook without
them (they would repeat the student notebook's figures). The metadata ``build`` records the
source, the variant, the SHA-256 of the code cells as executed, and the wall and CPU time in seconds;
tests/test_notebooks.py compares the committed notebooks with their sources and that hash, and
runs them again.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient

try:
    import resource
except ImportError:  # Windows: no CPU accounting of finished child processes
    resource = None

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
SOLUTIONS = HERE / "solutions"
VARIANTS = ("student", "solution")
KERNEL = "python3"
#: Per-cell limit of the runner: generous, since a whole notebook is meant to take under 90 s.
CELL_TIMEOUT_S = 300
#: The errors a check cell may raise on the student's stub: the stub's own NotImplementedError,
#: or the check's assertion on an answer the stub left empty.
STUB_ERRORS = ("NotImplementedError", "AssertionError")
_HEADER = re.compile(r"^# %%(?: (?P<kind>\[markdown\]|exercise|check))?\s*$")
_STUDENT, _SOLUTION, _END = "# >>> student", "# >>> solution", "# <<<"


@dataclass(frozen=True)
class Cell:
    """One cell of a source: ``kind`` is "markdown", "code", "exercise" or "check"."""
    kind: str
    text: str
    line: int  # where its header stands in the source (1-based), for error messages


def parse(text: str, name: str = "<source>") -> list[Cell]:
    """Split a percent-format source into cells (a header line opens each; text before the first
    header is the file's own comment and is dropped). Raises ValueError naming the line of a cell
    that is empty or whose exercise markers are out of order."""
    cells, kind, body, start = [], None, [], 0
    for number, line in enumerate(text.splitlines() + ["# %%"], start=1):  # the last header closes the last cell
        match = _HEADER.match(line)
        if not match:
            body.append(line)
            continue
        if kind is not None:
            cells.append(_cell(kind, body, start, name))
        kind = {"[markdown]": "markdown", None: "code"}.get(match["kind"], match["kind"])
        body, start = [], number
    return cells


def _cell(kind, body, start, name) -> Cell:
    while body and not body[-1].strip():
        body.pop()
    while body and not body[0].strip():
        body.pop(0)
    if not body:
        raise ValueError(f"{name}:{start}: empty cell")
    if kind == "markdown":
        for i, line in enumerate(body):
            if line and not line.startswith("#"):
                raise ValueError(f"{name}:{start + 1 + i}: a markdown line must start with '#'")
        body = [line[2:] if line.startswith("# ") else line[1:] for line in body]
    if kind == "exercise":
        markers = [line.strip() for line in body if line.strip() in (_STUDENT, _SOLUTION, _END)]
        if markers != [_STUDENT, _SOLUTION, _END]:
            raise ValueError(f"{name}:{start}: an exercise cell needs the markers '{_STUDENT}', "
                             f"'{_SOLUTION}' and '{_END}' once each, in that order; found {markers}")
    elif any(line.strip() in (_STUDENT, _SOLUTION, _END) for line in body):
        raise ValueError(f"{name}:{start}: student/solution markers belong in an '# %% exercise' cell")
    return Cell(kind, "\n".join(body), start)


def variant_text(cell: Cell, variant: str) -> str:
    """The cell's code in the student or the solution notebook (the other version's lines dropped)."""
    if cell.kind != "exercise":
        return cell.text
    keep, out = "both", []
    for line in cell.text.splitlines():
        marker = line.strip()
        if marker in (_STUDENT, _SOLUTION, _END):
            keep = {_STUDENT: "student", _SOLUTION: "solution", _END: "both"}[marker]
            continue
        if keep in ("both", variant):
            out.append(line)
    return "\n".join(out)


def notebook(cells: list[Cell], variant: str, source_name: str) -> nbformat.NotebookNode:
    """The unexecuted notebook of one variant. Cell ids are fixed (their position), so that a rebuild
    changes only what really changed."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    nb = nbformat.v4.new_notebook()
    nb.metadata.update({
        "kernelspec": {"name": KERNEL, "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "build": {"source": f"src/{source_name}", "variant": variant},
    })
    for i, cell in enumerate(cells):
        if cell.kind == "markdown":
            new = nbformat.v4.new_markdown_cell(cell.text)
        else:
            new = nbformat.v4.new_code_cell(variant_text(cell, variant))
            if cell.kind in ("exercise", "check"):
                new.metadata["tags"] = [cell.kind] + (["raises-exception"]
                                                      if cell.kind == "check" and variant == "student" else [])
        new["id"] = f"cell-{i:03d}"
        nb.cells.append(new)
    return nb


def code_hash(nb) -> str:
    """SHA-256 of the notebook's code cells, in order (what runs; markdown and outputs excluded)."""
    h = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            h.update(cell.source.encode("utf-8"))
            h.update(b"\0")
    return h.hexdigest()


def output_paths(source: Path) -> dict:
    """Where the source's two notebooks are written: {"student": path, "solution": path}."""
    name = source.stem + ".ipynb"
    return {"student": HERE / name, "solution": SOLUTIONS / name}


def sources() -> list[Path]:
    """The notebook sources, in order."""
    return sorted(SOURCES.glob("[0-9][0-9]_*.py"))


@dataclass(frozen=True)
class RunTime:
    """How long one execution of a notebook took."""
    wall_s: float            # elapsed, kernel start and shutdown included
    cpu_s: float | None      # CPU seconds (user + system) of the kernel and the processes it started;
                             # unlike the wall time, hardly changed by other work on the machine


def _finished_children_cpu_s():
    if resource is None:
        return None
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def execute(nb, cwd: Path) -> RunTime:
    """Run every cell of ``nb`` in place (outputs added) with a fresh ``python3`` kernel in ``cwd``.
    A failing cell not tagged raises-exception raises nbclient's CellExecutionError. The CPU time
    is that of this process's finished children: the kernel is shut down and reaped before
    ``execute`` returns, and it reaps the worker processes it starts."""
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL,
                            resources={"metadata": {"path": str(cwd)}})
    cpu, start = _finished_children_cpu_s(), time.perf_counter()
    client.execute()
    wall = time.perf_counter() - start
    return RunTime(wall, None if cpu is None else _finished_children_cpu_s() - cpu)


def cell_errors(nb) -> dict:
    """{cell id: exception name} of the cells whose outputs hold an error."""
    return {cell.id: out.ename for cell in nb.cells if cell.cell_type == "code"
            for out in cell.get("outputs", []) if out.output_type == "error"}


def run_problems(nb, variant: str) -> list[str]:
    """What is wrong with an executed notebook: a check that passed on the student's stub, a check
    failing for another reason than the stub, or an error in any other cell. Empty when all is well."""
    errors = cell_errors(nb)
    problems = []
    for cell in nb.cells:
        is_check = "check" in cell.metadata.get("tags", [])
        error = errors.get(cell.id)
        if variant == "student" and is_check and error not in STUB_ERRORS:
            problems.append(f"{cell.id}: the check should fail on the stub with one of {STUB_ERRORS}, "
                            f"got {error or 'no error'}")
        elif (variant == "solution" or not is_check) and error:
            problems.append(f"{cell.id}: raised {error}")
    return problems


def clear_outputs(nb):
    """Drop the outputs and execution counts: the solution notebooks are committed without them,
    because they would repeat the student notebooks' figures (megabytes) for a handful of changed
    cells; the test executes them instead."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)


def build(source: Path) -> dict:
    """Build, execute, check and write the source's two notebooks; returns {variant: RunTime}."""
    cells = parse(source.read_text(encoding="utf-8"), source.name)
    times = {}
    for variant, path in output_paths(source).items():
        nb = notebook(cells, variant, source.name)
        path.parent.mkdir(exist_ok=True)
        run = execute(nb, path.parent)
        problems = run_problems(nb, variant)
        if problems:
            raise RuntimeError(f"{path.relative_to(HERE.parent)} not written:\n  " + "\n  ".join(problems))
        nb.metadata["build"].update(code_sha256=code_hash(nb), run_time_s=round(run.wall_s, 1),
                                    cpu_time_s=run.cpu_s and round(run.cpu_s, 1))
        if variant == "solution":
            clear_outputs(nb)
        tmp = path.with_suffix(".ipynb.tmp")
        nbformat.write(nb, tmp)
        os.replace(tmp, path)  # a crash leaves the previous notebook whole
        times[variant] = run
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="*", help="build only the sources whose names start with these")
    args = parser.parse_args(argv)
    chosen = [s for s in sources() if not args.only or any(s.name.startswith(p) for p in args.only)]
    if not chosen:
        print(f"error: no source in {SOURCES} starts with {' or '.join(args.only)}", file=sys.stderr)
        return 2
    for source in chosen:
        times = build(source)
        print(f"{source.stem}: " + ", ".join(f"{v} {t.wall_s:.1f} s (CPU {t.cpu_s or 0:.1f} s)"
                                             for v, t in times.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
