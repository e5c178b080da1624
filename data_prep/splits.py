"""Patient-level splits: a stratified held-out test set and K-fold cross-validation.

Paper (Evaluation and statistical analysis): "An independent test cohort consisting of
approximately 5% of our datasets was used for testing (95% data for training) ... we also repeated
the experiments by using 10% and 15% of the data as independent sets for testing. In all settings,
testing data did not include any images used in training." and (Deep learning approach): "Internal
validation is based on 6-fold cross validation of training data".

All images of a patient go to the same side, because two views of one breast (or one patient's
two breasts) are far more alike than images of different patients; splitting by image would leak.
Splits are stratified by the patient's class and deterministic given the seed.

Every function takes per-image arrays (``patient_ids``, ``labels``) and returns image indices
into them.
"""

from __future__ import annotations

import numpy as np

from .manifest import LABEL_CODES


def _patient_strata(patient_ids, labels):
    """Unique patients (sorted), each patient's stratum, and each image's patient number.

    A patient's stratum is the most severe label among their images (malignant > recalled_benign >
    negative), since e.g. a CBIS-DDSM patient can have one malignant and one benign breast. Labels
    may be the names or the integer codes of :data:`data_prep.manifest.LABEL_CODES`.
    """
    patient_ids = np.asarray(patient_ids).astype(str)
    labels = np.asarray(labels)
    if patient_ids.shape != labels.shape or patient_ids.ndim != 1:
        raise ValueError(f"patient_ids and labels must be 1-D and equally long, got {patient_ids.shape} and {labels.shape}")
    if labels.dtype.kind in "USO":
        unknown = sorted(set(labels.astype(str)) - set(LABEL_CODES))
        if unknown:
            raise ValueError(f"unknown label(s) {unknown}, expected {list(LABEL_CODES)} or their codes 0-2")
        labels = np.array([LABEL_CODES[name] for name in labels.astype(str)], np.int64)
    patients, image_patient = np.unique(patient_ids, return_inverse=True)
    strata = np.full(patients.size, -1, np.int64)
    np.maximum.at(strata, image_patient, labels.astype(np.int64))
    return patients, strata, image_patient


def holdout_split(patient_ids, labels, test_fraction: float, seed: int):
    """Stratified patient-level held-out split; returns (train_idx, test_idx) image indices.

    In each stratum (see :func:`_patient_strata`) the patients are shuffled with
    ``numpy.random.default_rng(seed)`` and ``round(test_fraction * n)`` of them go to the test set.
    The paper used test fractions 0.05, 0.10 and 0.15.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    patients, strata, image_patient = _patient_strata(patient_ids, labels)
    rng = np.random.default_rng(seed)
    test_patient = np.zeros(patients.size, bool)
    for stratum in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == stratum))
        test_patient[members[: int(np.floor(test_fraction * members.size + 0.5))]] = True
    test_image = test_patient[image_patient]
    return np.flatnonzero(~test_image), np.flatnonzero(test_image)


def kfold_split(patient_ids, labels, k: int = 6, seed: int = 0):
    """Stratified patient-level K-fold split; returns a list of k (train_idx, val_idx) pairs.

    Patients of each stratum are shuffled and dealt to the folds in turn; the turn continues from
    one stratum to the next so that fold sizes differ by at most one patient. Pass the training
    part of :func:`holdout_split` (indices are into the arrays given here).
    """
    patients, strata, image_patient = _patient_strata(patient_ids, labels)
    if not 2 <= k <= patients.size:
        raise ValueError(f"k must be between 2 and the number of patients ({patients.size}), got {k}")
    rng = np.random.default_rng(seed)
    fold = np.empty(patients.size, np.int64)
    dealt = 0
    for stratum in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == stratum))
        fold[members] = (dealt + np.arange(members.size)) % k
        dealt += members.size
    image_fold = fold[image_patient]
    return [(np.flatnonzero(image_fold != f), np.flatnonzero(image_fold == f)) for f in range(k)]


def check_no_patient_leakage(patient_ids, idx_a, idx_b) -> None:
    """Raise ValueError naming every patient that has images in both ``idx_a`` and ``idx_b``."""
    patient_ids = np.asarray(patient_ids).astype(str)
    both = sorted(set(patient_ids[np.asarray(idx_a, np.int64)]) & set(patient_ids[np.asarray(idx_b, np.int64)]))
    if both:
        shown = ", ".join(both[:20]) + (f" and {len(both) - 20} more" if len(both) > 20 else "")
        raise ValueError(f"patient leakage: {len(both)} patient(s) have images on both sides of the split: {shown}")
