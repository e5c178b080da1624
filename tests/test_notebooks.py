"""The teaching notebooks (notebooks/): built from their sources, executed, exercises that check themselves.

* Each committed notebook is exactly what notebooks/build.py makes from its source (cells, tags),
  and its outputs came from its code: the SHA-256 of the code cells that build.py recorded when it
  executed the notebook must match the committed code cells. (Solution notebooks are committed
  without outputs; the hash still says that this code ran without error.)
* Each notebook runs top to bottom on a fresh ``python3`` kernel with nbclient: the solution
  notebook without any error; the student notebook with every exercise check failing on its stub
  (NotImplementedError or AssertionError) and no other cell failing. So every check is known to
  pass with a right answer and to fail with the stub.

Run times are recorded (``record_property``, printed with ``-s``), not asserted: notebooks/README.md
states them and the command that measured them.
"""
import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("notebooks_build", ROOT / "notebooks" / "build.py")
build = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = build  # notebooks/ is not a package; its dataclasses need the module registered
_spec.loader.exec_module(build)

SOURCES = build.sources()
CASES = [(source, variant) for source in SOURCES for variant in build.VARIANTS]
IDS = [f"{source.stem}-{variant}" for source, variant in CASES]


def committed(source, variant):
    path = build.output_paths(source)[variant]
    assert path.exists(), f"{path} is missing: run python notebooks/build.py {source.stem[:2]}"
    return path, nbformat.read(path, as_version=4)


def cell_summary(nb):
    return [(c.cell_type, c.source, tuple(c.metadata.get("tags", ()))) for c in nb.cells]


def test_five_notebooks_each_with_checked_exercises():
    assert [s.stem[:2] for s in SOURCES] == ["01", "02", "03", "04", "05"]
    for source in SOURCES:
        cells = build.parse(source.read_text(encoding="utf-8"), source.name)
        kinds = [c.kind for c in cells]
        exercises = [i for i, k in enumerate(kinds) if k == "exercise"]
        assert 2 <= len(exercises) <= 4, (source.name, len(exercises))
        assert all(kinds[i + 1] == "check" for i in exercises), f"{source.name}: an exercise without its check"
        assert kinds.count("check") == len(exercises)


def test_exercise_cells_split_into_stub_and_solution():
    text = ("# %% [markdown]\n# Title\n#\n# text\n# %% exercise\ndef f():\n    # >>> student\n"
            "    raise NotImplementedError\n    # >>> solution\n    return 1\n    # <<<\n# %% check\nassert f() == 1\n")
    cells = build.parse(text)
    assert [c.kind for c in cells] == ["markdown", "exercise", "check"]
    assert cells[0].text == "Title\n\ntext"
    assert build.variant_text(cells[1], "student") == "def f():\n    raise NotImplementedError"
    assert build.variant_text(cells[1], "solution") == "def f():\n    return 1"
    student = build.notebook(cells, "student", "x.py")
    assert student.cells[2].metadata["tags"] == ["check", "raises-exception"]
    assert build.notebook(cells, "solution", "x.py").cells[2].metadata["tags"] == ["check"]
    with pytest.raises(ValueError, match="markers"):
        build.parse("# %% exercise\nx = 1\n# >>> solution\nx = 2\n# <<<\n")
    with pytest.raises(ValueError, match="<source>:2: a markdown line"):
        build.parse("# %% [markdown]\nnot a comment\n")


@pytest.mark.parametrize("source, variant", CASES, ids=IDS)
def test_committed_notebook_is_built_from_its_source(source, variant):
    path, nb = committed(source, variant)
    expected = build.notebook(build.parse(source.read_text(encoding="utf-8"), source.name), variant, source.name)
    assert cell_summary(nb) == cell_summary(expected), \
        f"{path} differs from {source}: run python notebooks/build.py {source.stem[:2]}"
    assert nb.metadata["kernelspec"]["name"] == build.KERNEL


@pytest.mark.parametrize("source, variant", CASES, ids=IDS)
def test_committed_outputs_come_from_the_committed_code(source, variant):
    path, nb = committed(source, variant)
    recorded = nb.metadata.get("build", {})
    assert recorded.get("code_sha256") == build.code_hash(nb), \
        f"{path}: its code is not the code that produced its outputs; run python notebooks/build.py {source.stem[:2]}"
    code = [c for c in nb.cells if c.cell_type == "code"]
    if variant == "solution":  # committed without outputs (build.clear_outputs); the run test executes it
        assert all(c.execution_count is None and not c.outputs for c in code), f"{path}: outputs left in"
        return
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), \
        f"{path}: not run top to bottom in one kernel"
    assert build.run_problems(nb, variant) == [], f"{path}: its committed outputs show failures"


@pytest.mark.slow
@pytest.mark.parametrize("source, variant", CASES, ids=IDS)
def test_notebook_runs_and_its_checks_fail_on_stubs_and_pass_with_solutions(source, variant, record_property):
    path, nb = committed(source, variant)
    run = build.execute(nb, path.parent)
    record_property("run_time_s", round(run.wall_s, 1))
    record_property("cpu_time_s", run.cpu_s and round(run.cpu_s, 1))
    print(f"\n{path.relative_to(ROOT)}: {run.wall_s:.1f} s, CPU {run.cpu_s or 0:.1f} s")
    problems = build.run_problems(nb, variant)
    assert not problems, f"{path.relative_to(ROOT)}:\n" + "\n".join(problems)
