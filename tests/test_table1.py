"""Table 1 of the paper, cell by cell: ``--preset paper`` on the synthetic cohorts trains and tests on
exactly the paper's numbers of images.

The cohorts' composition (patients, labels, sides, views, files) is what the generator writes
(:func:`data_prep.synthetic.cohort.cohort_composition`, which :func:`data_prep.synthesize` itself
uses), so no image is drawn here: the ImageSets carry 1-pixel images, and the real planner
(:meth:`pipeline.study.Study.plan`) makes the patient-level split and the balanced selections of
every experiment and scenario at the paper's 5% test fraction. Table 1's numbers are read from
pipeline/paper_results.json ("table1_images"); its "Others" total is a binary scenario's (two
classes), the triple scenario has three classes of the same size.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from data_prep import LABEL_CODES
from data_prep.synthetic.cohort import PAPER_COHORTS, cohort_composition
from pipeline.config import resolve_config
from pipeline.data import ImageSet
from pipeline.experiments import EXPERIMENTS
from pipeline.scenarios import SCENARIOS
from pipeline.study import Study

TABLE1 = json.loads((Path(__file__).resolve().parent.parent / "pipeline" / "paper_results.json").read_text())[
    "table1_images"]


def composed_set(name: str, seed: int, views: str) -> ImageSet:
    """The synthetic cohort ``name`` at the paper's size as the generator would write it, 1-pixel images."""
    images = [(p, v) for p in cohort_composition(name, sum(PAPER_COHORTS[name]), seed, views) for v in p.views]
    n = len(images)
    return ImageSet(name, np.zeros((n, 1, 1), np.uint8), np.array([LABEL_CODES[p.label] for p, _ in images]),
                    np.array([f"{name}:{p.patient_id}" for p, _ in images]),
                    np.array([int(p.interval) for p, _ in images], np.int8),
                    np.array([v.image_path for _, v in images]), np.full(n, name), {},
                    np.array([v.laterality for _, v in images]))


def paper_study(tmp_path, seed: int, views: str) -> Study:
    cfg = resolve_config("paper", {"progress": False, "experiments": ["all"], "scenarios": ["all"], "seed": seed},
                         "cpu")
    assert cfg.synthetic_views == "table1" and cfg.test_fractions == [0.05]
    sets = {name: composed_set(name, seed, views) for name in ("ffdm", "ddsm")}
    files = {}
    for name in sets:
        files[name] = tmp_path / f"{name}.h5"
        files[name].write_bytes(b"")
    return Study(cfg, sets, tmp_path / "run", files, log=lambda *a: None)


def counts_of(study: Study) -> dict:
    """{(experiment, scenario): (training images per class, test images per class)} of the main models."""
    out = {}
    for experiment in EXPERIMENTS:
        for scenario in SCENARIOS:
            main = study.plan(scenario, experiment, 0.05).main
            out[experiment, scenario] = (np.bincount(main.train_y).tolist(),
                                         np.bincount(main.eval_sets["test"].label).tolist())
    return out


@pytest.mark.parametrize("seed", [0, 7])
def test_the_paper_preset_reproduces_every_cell_of_table1(tmp_path, seed):
    got = counts_of(paper_study(tmp_path, seed, "table1"))
    for (experiment, scenario), (train, test) in got.items():
        cell = TABLE1[experiment]["negative-vs-benign" if scenario == "negative-vs-benign" else "others"]
        where = f"{experiment} {scenario} (seed {seed})"
        classes = SCENARIOS[scenario].num_classes
        assert train == [cell["train_per_class"]] * classes, where
        assert test == [cell["test_per_class"]] * classes, where
        if classes == 2:
            assert (sum(train), sum(test)) == (cell["train"], cell["test"]), where


def test_the_standard_views_fall_short_of_table1(tmp_path):
    """Four views a patient (the affected breast's two for malignant patients), as the paper's text
    says, cannot fill Table 1: 376 recalled-benign FFDM patients give 1,504 images, not 1,600."""
    got = counts_of(paper_study(tmp_path, 0, "standard"))
    train, test = got["ffdm", "negative-vs-benign"]
    assert sum(train) // 2 + sum(test) // 2 == 4 * PAPER_COHORTS["ffdm"][1] < 1520 + 80
    assert got["ffdm", "malignant-vs-negative"][0] != [TABLE1["ffdm"]["others"]["train_per_class"]] * 2
