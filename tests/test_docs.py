"""Every command that README.md and docs/*.md show is run, so the documentation cannot drift from the
command line.

How. The fenced blocks of each page are read in order. The commands of a ```bash (``sh``, ``shell``)
block — a line, with ``\\`` continuations joined and ``#`` comments dropped, split at ``&&`` — and the
code of a ```python block run one after another in one scratch folder per page, which is the working
directory. Before the first command, the folder gets the page's fixtures (:data:`FIXTURES`): what a
reader of that page already has — a manifest of their own images, a folder of new images,
converted ImageNet weights, a finished run — made at miniature sizes from one synthetic cohort
shared by every page (as is the data cache, so each cohort is generated once per session).

The commands are rewritten only so that they run here, quickly:

* ``python``/``python3`` is this interpreter, ``run.py`` the repository's, and ``python -m data_prep``
  and ``python -m stats`` (and the python blocks) import the repository's packages (PYTHONPATH);
  leading ``NAME=value`` words are set in the command's environment;
* options are APPENDED, never edited: argparse keeps the last value of a repeated option, and every
  option the page wrote is still parsed. A study run gets the ``tiny`` preset's network and cohort
  sizes (from ``pipeline.config.PRESETS``), 4 iterations, 50 bootstrap replicates, the shared data
  cache, ``--device cpu`` (CI has no GPU) and ``--no-progress``; two cross-validation folds where its
  preset or options ask for cross-validation; a grid (``--scenario all`` or several scenarios,
  several test fractions) is cut to its first scenario and first fraction (its experiments are kept).
  ``predict``, ``explain``, ``standin``, ``data_prep synthesize``/``build``/``validate`` and
  ``python -m stats`` get their own miniature options (:func:`rewrite`).

Not run, each for its reason, and checked in another way:

* ``pip install -r FILE``: it changes the environment; FILE must exist in the repository;
* the test suite's command (``python3 -m pytest ...``): it is what CI runs, so ``.ci/run`` must hold
  the page's line exactly;
* docs/cluster.md: ``tests/test_cluster_recipes.py`` runs its commands with a real scheduler,
  workers and certificates; this file checks that that test exists and reads docs/cluster.md.

Any other command is an error here (a page that shows a new kind of command needs a rule below).
A command that fails fails the test with the page, the command and its output's tail. Every fenced
block must name its language; bash/sh/shell and python blocks run, text and yaml blocks are shown
only.
"""
from __future__ import annotations

import csv
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alexnet_np import AlexNet, save_weights
from pipeline.config import PRESETS
from pipeline.data import synthetic_cohort_dir, synthetic_dataset
from pipeline.scenarios import SCENARIOS

REPO = Path(__file__).resolve().parent.parent
CLUSTER_PAGE = REPO / "docs" / "cluster.md"
PAGES = [REPO / "README.md"] + sorted(p for p in (REPO / "docs").glob("*.md") if p != CLUSTER_PAGE)
RUN_LANGS = {"bash", "sh", "shell"}
PYTHON_LANGS = {"python"}
SHOWN_LANGS = {"text", "yaml", "json", "csv"}
TINY = PRESETS["tiny"]
TIMEOUT_S = 900
# Patients of a cohort `python -m data_prep synthesize` makes (at 256 x 208 pixels): FFDM-like as many
# as the tiny preset's (a study on it needs both classes in its 5% test split), DDSM-like few (only drawn).
SYNTHESIZE_PATIENTS = {"ffdm": TINY["ffdm_patients"], "ddsm": 10}

# What a reader of each page already has, by path in the page's folder (see Materials).
FIXTURES = {
    "README.md": {"weights/standin_caffe_99.h5": "standin", "new_images": "images"},
    "docs/study.md": {"ffdm.csv": "ffdm_manifest", "ddsm.csv": "ddsm_manifest",
                      "weights/bvlc_alexnet.h5": "imagenet_weights"},
    "docs/data.md": {"my_images": "class_folders"},
    "docs/predict.md": {"runs/tiny": "tiny_run", "new_images": "images", "new_manifest.csv": "labelled_manifest"},
    "docs/explain.md": {"runs/tiny": "tiny_run"},
    "docs/statistics.md": {"runs/tiny": "tiny_run"},
}


# ----------------------------------------------------------------------------- reading the pages
def fenced_blocks(page: Path) -> list[tuple[str, str, int]]:
    """(language, text, line of the opening fence) of every top-level fenced block of ``page``."""
    blocks, lang, start, body = [], None, 0, []
    for n, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, start, body = line[3:].strip(), n, []
            else:
                blocks.append((lang, "\n".join(body), start))
                lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, f"{page.name}: the block opened on line {start} is never closed"
    return blocks


def shell_commands(text: str) -> list[tuple[str, list[list[str]]]]:
    """The commands of a shell block: (the line as written, its commands split at ``&&``)."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        if not tokens:
            continue
        bad = [t for t in tokens if t in ("|", "||", ";", ">", ">>", "<", "&", "(", ")")]
        assert not bad, f"shell operator {bad[0]!r} in {line!r}: write one command per line (only && joins)"
        commands, current = [], []
        for t in tokens:
            if t == "&&":
                commands.append(current)
                current = []
            else:
                current.append(t)
        commands.append(current)
        out.append((line.split(" #")[0].strip(), commands))
    return out


# ----------------------------------------------------------------------------- what a reader has
class Materials:
    """The shared data cache and the fixtures made from it, each made once per session."""

    def __init__(self, root: Path):
        self.root = root
        self.cache = root / "data_cache"
        self._made = {}

    def _once(self, key, make):
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]

    def cohort(self, name) -> Path:
        """The tiny preset's synthetic cohort, generated and built into the shared cache as run.py
        would (so that every run of a page finds it there)."""
        def make():
            params = dict(n_patients=TINY[f"{name}_patients"], seed=0, difficulty=TINY["difficulty"],
                          image_size=None, cache_dir=self.cache, grain_scale=TINY["grain_scale"],
                          finding_scale=TINY["finding_scale"])
            synthetic_dataset(name, size=TINY["input_size"], workers=2, progress=False, **params)
            return synthetic_cohort_dir(name, **params)
        return self._once(("cohort", name), make)

    def rows(self, name) -> tuple[list[str], list[dict]]:
        folder = self.cohort(name)
        with open(folder / "manifest.csv", newline="") as f:
            reader = csv.DictReader(f)
            rows = [dict(r, image_path=str(folder / r["image_path"])) for r in reader]
            return list(reader.fieldnames), rows

    def write_manifest(self, dest: Path, name, keep=lambda rows: rows):
        header, rows = self.rows(name)
        with open(dest, "w", newline="") as f:
            writer = csv.DictWriter(f, header)
            writer.writeheader()
            writer.writerows(keep(rows))

    def make(self, kind: str, dest: Path):
        """Put fixture ``kind`` at ``dest``."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        if kind == "standin":
            shutil.copyfile(REPO / "weights" / "standin_caffe_99.h5", dest)
        elif kind == "imagenet_weights":  # converted ImageNet weights, at the miniature network's size
            net = AlexNet(1000, variant="caffe", input_size=TINY["input_size"], widths=TINY["widths"], seed=1)
            save_weights(net, dest, mean=(123.68, 116.78, 103.94), source="miniature stand-in for converted weights")
        elif kind in ("ffdm_manifest", "ddsm_manifest"):
            self.write_manifest(dest, kind.split("_")[0])
        elif kind == "labelled_manifest":  # a few patients of every class
            def keep(rows):
                patients = {}
                for r in rows:
                    patients.setdefault(r["label"], [])
                    if r["patient_id"] not in patients[r["label"]] and len(patients[r["label"]]) < 4:
                        patients[r["label"]].append(r["patient_id"])
                chosen = {p for group in patients.values() for p in group}
                return [r for r in rows if r["patient_id"] in chosen]
            self.write_manifest(dest, "ffdm", keep)
        elif kind == "images":
            dest.mkdir()
            for r in self.rows("ffdm")[1][:4]:
                shutil.copyfile(r["image_path"], dest / Path(r["image_path"]).name)
        elif kind == "class_folders":  # <class>/<patient>/<image>, three patients per class
            counts = {}
            for r in self.rows("ffdm")[1]:
                patients = counts.setdefault(r["label"], set())
                if r["patient_id"] in patients or len(patients) < 3:
                    patients.add(r["patient_id"])
                    target = dest / r["label"] / r["patient_id"] / Path(r["image_path"]).name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(r["image_path"], target)
        elif kind == "tiny_run":  # the README's tiny run, made once
            shutil.copytree(self.tiny_run(), dest)
        else:
            raise AssertionError(f"no fixture kind {kind!r}")

    def tiny_run(self) -> Path:
        def make():
            work = self.root / "tiny_run"
            work.mkdir()
            argv, env = rewrite(["python", "run.py", "--preset", "tiny", "--out", "runs/tiny"], self)
            run_checked(argv, env, work, "the shared tiny run", "python run.py --preset tiny --out runs/tiny")
            return work / "runs" / "tiny"
        return self._once("tiny_run", make)


@pytest.fixture(scope="session")
def materials(tmp_path_factory):
    m = Materials(tmp_path_factory.mktemp("docs_shared"))
    for name in ("ffdm", "ddsm"):
        m.cohort(name)
    return m


# ----------------------------------------------------------------------------- running a command
class NotRun(Exception):
    """A command that this test checks instead of running (the reason is the message)."""


def _value(args, option):
    """The last value given to ``option`` in ``args`` (all of its words), or None."""
    found = None
    for i, a in enumerate(args):
        if a == option:
            found = []
            for b in args[i + 1:]:
                if b.startswith("--"):
                    break
                found.append(b)
    return found


def study_options(args, materials) -> list[str]:
    """What a study run gets appended: the tiny preset's sizes, few iterations, the shared cache."""
    extra = ["--widths", *map(str, TINY["widths"]), "--input-size", str(TINY["input_size"]),
             "--batch-size", str(TINY["batch_size"]), "--iters", "4", "--pretrain-iters", "4",
             "--checkpoint-every", "2", "--augment-shift", str(TINY["augment_shift"]),
             "--patients", f"ffdm={TINY['ffdm_patients']}", f"ddsm={TINY['ddsm_patients']}",
             "--difficulty", str(TINY["difficulty"]), "--finding-scale", str(TINY["finding_scale"]),
             "--grain-scale", str(TINY["grain_scale"]), "--n-boot", "50", "--device", "cpu", "--no-progress",
             "--cache-dir", str(materials.cache)]
    preset = (_value(args, "--preset") or ["demo"])[0]
    if _value(args, "--cv") is None and PRESETS[preset]["cv"] >= 2:
        extra += ["--cv", "2"]
    scenarios = _value(args, "--scenario")
    if scenarios and (len(scenarios) > 1 or scenarios == ["all"]):
        extra += ["--scenario", list(SCENARIOS)[0] if "all" in scenarios else scenarios[0]]
    fractions = _value(args, "--test-fraction")
    if fractions and len(fractions) > 1:
        extra += ["--test-fraction", fractions[0]]
    return extra


def rewrite(words: list[str], materials) -> tuple[list[str], dict]:
    """(argv, environment) that run a page's command here, or NotRun with what was checked instead."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
               MPLBACKEND="Agg")
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    if not words or words[0] not in ("python", "python3"):
        raise AssertionError(f"no rule to run {shlex.join(words)!r}: add one to tests/test_docs.py")
    args = words[1:]
    if args[:4] == ["-m", "pip", "install", "-r"] and len(args) == 5:
        assert (REPO / args[4]).is_file(), f"pip install -r {args[4]}: no such file in the repository"
        raise NotRun(f"pip install: {args[4]} exists")
    if args[:2] == ["-m", "pytest"]:
        raise NotRun("the test suite")
    if args[:1] == ["run.py"]:
        rest = args[1:]
        if "-h" in rest or "--help" in rest:
            extra = []
        elif rest[:1] == ["predict"]:
            extra = ["--device", "cpu", "--no-progress", "--workers", "1", "--n-boot", "50"]
        elif rest[:1] == ["explain"]:
            extra = ["--steps", "4", "--randomization-images", "2", "--device", "cpu", "--no-progress",
                     "--cache-dir", str(materials.cache)]
        elif rest[:1] == ["standin"]:
            # 4 x 16 = 64 training images: a smaller set fails in write_training_set's 64-image chunks
            extra = ["--classes", "4", "--images-per-class", "16", "--test-per-class", "2", "--iters", "4",
                     "--batch-size", "8", "--widths", "2", "2", "2", "2", "2", "4", "4", "--input-size",
                     str(TINY["input_size"]), "--no-progress"]
        else:
            extra = study_options(rest, materials)
        return [sys.executable, str(REPO / "run.py"), *rest, *extra], env
    if args[:2] == ["-m", "data_prep"]:
        dataset = (_value(args, "--dataset") or ["ffdm"])[0]
        extra = {"synthesize": ["--patients", str(SYNTHESIZE_PATIENTS.get(dataset, 10)), "--image-size", "256x208",
                                "--quiet"],
                 "build": ["--size", str(TINY["input_size"]), "--quiet"],
                 "validate": ["--quiet"]}.get(args[2] if len(args) > 2 else "", [])
        return [sys.executable, *args, *extra], env
    if args[:2] == ["-m", "stats"]:
        return [sys.executable, *args, "--n-boot", "50"], env
    raise AssertionError(f"no rule to run {shlex.join(words)!r}: add one to tests/test_docs.py")


def run_checked(argv, env, cwd, page, shown):
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    if result.returncode != 0:
        tail = (result.stdout[-1500:] + "\n--- stderr ---\n" + result.stderr[-3000:]).strip()
        pytest.fail(f"{page}: the documented command failed (exit {result.returncode}):\n  {shown}\n"
                    f"run here as:\n  {shlex.join(argv)}\n{tail}", pytrace=False)


# ----------------------------------------------------------------------------- the tests
def _page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_block_names_a_known_language(page):
    for lang, _, line in fenced_blocks(page):
        assert lang in RUN_LANGS | PYTHON_LANGS | SHOWN_LANGS, (
            f"{_page_id(page)}, line {line}: a fenced block must name its language (one of "
            f"{sorted(RUN_LANGS | PYTHON_LANGS | SHOWN_LANGS)}), got {lang!r}")


def test_fixtures_name_existing_pages():
    assert set(FIXTURES) <= {_page_id(p) for p in PAGES}


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_commands_run(page, materials, tmp_path):
    """Every command and python block of the page, in order, in one folder (see the module docstring)."""
    name = _page_id(page)
    for path, kind in FIXTURES.get(name, {}).items():
        materials.make(kind, tmp_path / path)
    ran = 0
    started = time.perf_counter()
    for lang, text, line in fenced_blocks(page):
        if lang in PYTHON_LANGS:
            script = tmp_path / f"block_line{line}.py"
            script.write_text(text)
            env = dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg")
            run_checked([sys.executable, str(script)], env, tmp_path, name, f"the python block of line {line}")
            ran += 1
            continue
        if lang not in RUN_LANGS:
            continue
        for shown, commands in shell_commands(text):
            for words in commands:
                try:
                    argv, env = rewrite(list(words), materials)
                except NotRun as why:
                    if str(why) == "the test suite":
                        ci = (REPO / ".ci" / "run").read_text().splitlines()
                        assert shown in ci, f"{name}: {shown!r} is not the command .ci/run runs"
                    continue
                run_checked(argv, env, tmp_path, name, shown)
                ran += 1
    print(f"{name}: {ran} commands and blocks in {time.perf_counter() - started:.0f} s")


def test_the_cluster_page_is_run_by_its_own_test():
    """docs/cluster.md needs a scheduler, workers and certificates: tests/test_cluster_recipes.py runs it."""
    recipes = REPO / "tests" / "test_cluster_recipes.py"
    assert recipes.is_file()
    assert '"docs" / "cluster.md"' in recipes.read_text() or "docs/cluster.md" in recipes.read_text()
    assert any(lang in RUN_LANGS for lang, _, _ in fenced_blocks(CLUSTER_PAGE))
