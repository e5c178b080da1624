"""The synthetic cohorts' cache key: a new generator version never reuses an old cohort's images."""
import data_prep.synthetic
from pipeline.data import synthetic_cohort_dir

ARGS = dict(n_patients=40, seed=0, difficulty=1.0, image_size=None, cache_dir="cache")


def test_cohort_folder_changes_with_the_generator_version(monkeypatch):
    before = synthetic_cohort_dir("ddsm", **ARGS)
    assert synthetic_cohort_dir("ddsm", **ARGS) == before
    monkeypatch.setattr(data_prep.synthetic, "GENERATOR_VERSION", data_prep.synthetic.GENERATOR_VERSION + 1)
    assert synthetic_cohort_dir("ddsm", **ARGS) != before
    assert synthetic_cohort_dir("ddsm", **ARGS).parent == before.parent


def test_cohort_folder_changes_with_each_parameter():
    base = synthetic_cohort_dir("ffdm", **ARGS)
    for change in (dict(seed=1), dict(difficulty=0.5), dict(n_patients=41), dict(image_size=(320, 256))):
        assert synthetic_cohort_dir("ffdm", **{**ARGS, **change}) != base, change


def test_grain_scale_keys_the_folder_only_when_not_one():
    """Cohorts cached before grain_scale existed (scale 1) keep their folder; other scales get their own."""
    base = synthetic_cohort_dir("ffdm", **ARGS)
    assert synthetic_cohort_dir("ffdm", **ARGS, grain_scale=1.0) == base
    assert synthetic_cohort_dir("ffdm", **ARGS, grain_scale=3.0) != base
    assert synthetic_cohort_dir("ffdm", **ARGS, grain_scale=3.0) != synthetic_cohort_dir("ffdm", **ARGS, grain_scale=2.0)


def test_finding_scale_keys_the_folder_only_when_not_one():
    base = synthetic_cohort_dir("ffdm", **ARGS, grain_scale=1.5)
    assert synthetic_cohort_dir("ffdm", **ARGS, grain_scale=1.5, finding_scale=1.0) == base
    assert synthetic_cohort_dir("ffdm", **ARGS, grain_scale=1.5, finding_scale=2.0) != base
    # the two knobs are keyed apart: grains x2 is not findings x2
    assert (synthetic_cohort_dir("ffdm", **ARGS, finding_scale=2.0)
            != synthetic_cohort_dir("ffdm", **ARGS, grain_scale=2.0))
