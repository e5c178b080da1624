"""Patient-level splits: no leakage, stratification, determinism."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.splits import check_no_patient_leakage, holdout_split, kfold_split


def cohort(n_patients=(60, 40, 40), seed=0):
    """Per-image arrays: each patient has 2-4 images, all with the patient's label."""
    rng = np.random.default_rng(seed)
    patients, labels = [], []
    number = 0
    for label, count in enumerate(n_patients):
        for _ in range(count):
            views = int(rng.integers(2, 5))
            patients += [f"P{number:04d}"] * views
            labels += [label] * views
            number += 1
    order = rng.permutation(len(patients))   # images need not be grouped by patient
    return np.array(patients)[order], np.array(labels)[order]


def patients_of(patient_ids, labels, idx, label):
    return set(patient_ids[idx][labels[idx] == label])


@pytest.mark.parametrize("fraction", [0.05, 0.10, 0.15])
def test_holdout_is_patient_level_and_stratified(fraction):
    pid, lab = cohort()
    train, test = holdout_split(pid, lab, fraction, seed=3)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(pid)))
    check_no_patient_leakage(pid, train, test)
    for label, n in enumerate((60, 40, 40)):
        assert len(patients_of(pid, lab, test, label)) == int(np.floor(fraction * n + 0.5))


def test_holdout_is_deterministic_and_seed_dependent():
    pid, lab = cohort()
    a = holdout_split(pid, lab, 0.1, seed=7)
    b = holdout_split(pid, lab, 0.1, seed=7)
    c = holdout_split(pid, lab, 0.1, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])


def test_holdout_rejects_bad_fraction_and_labels():
    pid, lab = cohort()
    with pytest.raises(ValueError, match="test_fraction"):
        holdout_split(pid, lab, 1.5, seed=0)
    with pytest.raises(ValueError, match="unknown label"):
        holdout_split(["a", "b"], ["negative", "cancer"], 0.5, seed=0)


def test_mixed_label_patient_is_stratified_by_worst_label():
    # Patient X has a negative and a malignant image: stratum malignant (it is the only one).
    pid = np.array(["X", "X", "A", "B", "C", "D"])
    lab = np.array(["negative", "malignant", "negative", "negative", "negative", "negative"])
    train, test = holdout_split(pid, lab, 0.5, seed=0)
    check_no_patient_leakage(pid, train, test)
    # floor(0.5 * 1 + 0.5) = 1: the only malignant-stratum patient goes to the test set.
    assert set(pid[test]) >= {"X"} and set(test) >= {0, 1}


def test_kfold_partitions_patients_and_balances_classes():
    pid, lab = cohort()
    folds = kfold_split(pid, lab, k=6, seed=1)
    assert len(folds) == 6
    validation = np.concatenate([val for _, val in folds])
    assert np.array_equal(np.sort(validation), np.arange(len(pid)))   # each image validated once
    for train, val in folds:
        check_no_patient_leakage(pid, train, val)
        assert len(train) + len(val) == len(pid)
    per_fold = np.array([[len(patients_of(pid, lab, val, c)) for c in range(3)] for _, val in folds])
    assert (per_fold.max(axis=0) - per_fold.min(axis=0) <= 1).all()   # stratified
    totals = per_fold.sum(axis=1)
    assert totals.max() - totals.min() <= 1                            # balanced fold sizes
    again = kfold_split(pid, lab, k=6, seed=1)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    with pytest.raises(ValueError, match="k must be"):
        kfold_split(pid[:3], lab[:3], k=6)


def test_leakage_check_names_the_patients():
    pid = np.array(["P1", "P1", "P2", "P3", "P3"])
    check_no_patient_leakage(pid, [0, 1], [2, 3, 4])
    with pytest.raises(ValueError, match=r"1 patient\(s\).*P3"):
        check_no_patient_leakage(pid, [0, 3], [2, 4])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(1, 4)), min_size=8, max_size=60),
       st.sampled_from([0.05, 0.1, 0.15, 0.5]), st.integers(0, 10_000))
def test_split_invariants_on_random_cohorts(patients, fraction, seed):
    pid = np.repeat([f"P{i}" for i in range(len(patients))], [n for _, n in patients])
    lab = np.repeat([label for label, _ in patients], [n for _, n in patients])
    train, test = holdout_split(pid, lab, fraction, seed)
    check_no_patient_leakage(pid, train, test)
    assert len(train) + len(test) == len(pid)
    k = min(6, len(patients))
    for fold_train, fold_val in kfold_split(pid[train], lab[train], k=k, seed=seed) if len(set(pid[train])) >= k else []:
        check_no_patient_leakage(pid[train], fold_train, fold_val)
