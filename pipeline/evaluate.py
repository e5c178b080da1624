"""Test-set evaluation, as the paper reports it, computed with the ``stats`` package.

The paper: "The ROC curve was generated and AUC was calculated ... For the
triple classification ... generating an ROC curve for each binary-class
combination and then reporting the average of the AUCs. Ninety-five percent
confidence intervals (CI) were calculated for AUC values using bootstrapping
methods. DeLong test was used to evaluate the statistical significance when
comparing differences of AUCs." and "Using previously reported radiologists'
overall sensitivity 86.9% as a reference threshold ... a specificity of 87%".

Two bootstrap CIs are reported for every binary AUC: resampling images (what
the paper's figures most likely used) and resampling whole patients (about
four images per patient are correlated, so the image-level interval is too
narrow); ``report.md`` names which is which.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import stats

RADIOLOGIST_SENSITIVITY = 0.869  # Lehman et al. via the paper, the operating point it quotes


@dataclass
class Predictions:
    """A model's class probabilities on one evaluation set (test, interval cancers, a CV fold)."""

    index: np.ndarray    # image indices into the dataset
    label: np.ndarray    # network-class labels; -1 where the set has none (interval cancers)
    proba: np.ndarray    # (N, classes) softmax output

    @property
    def positive_score(self) -> np.ndarray:
        """P(class 1), the score of a binary scenario's positive class (the one named first)."""
        return self.proba[:, 1]


@dataclass
class RocCurve:
    fpr: list
    tpr: list


@dataclass
class OperatingPoint:
    """The ROC point with the best specificity among those whose sensitivity reaches the target."""

    target_sensitivity: float
    threshold: float     # a case is called positive when its score >= threshold
    sensitivity: float
    specificity: float


@dataclass
class BinaryMetrics:
    """A binary scenario's test-set figures; CIs are 95%, as [low, high]."""

    auc: float
    ci95_delong: list
    ci95_bootstrap: list            # resampling images, stratified
    ci95_bootstrap_patient: list    # resampling whole patients
    operating_point: OperatingPoint
    roc: RocCurve


@dataclass
class PairAUC:
    """One class pair of the triple scenario: ``positive`` against ``negative``, scored by P(positive)."""

    negative: str
    positive: str
    auc: float
    roc: RocCurve

    @property
    def name(self) -> str:
        return f"{self.negative} vs {self.positive}"


@dataclass
class TripleMetrics:
    auc: float           # Hand & Till: the mean of the pairwise AUCs
    pairs: list          # PairAUC per class pair


@dataclass
class PairedComparison:
    """Two models' AUCs on the same test images and the paired two-sided DeLong test."""

    auc: float
    baseline_auc: float
    z: float
    p_delong: float


@dataclass
class IntervalCancerDetection:
    """How many interval-cancer (false-negative) images a model calls malignant, by two rules."""

    n_images: int
    share_called_malignant_at_0_5: float
    threshold_at_target_sensitivity: float
    share_called_malignant_at_threshold: float


@dataclass
class PooledDetection:
    """Interval-cancer images of several models pooled: each image called by its own model's rules."""

    n_images: int
    share_called_malignant_at_0_5: float
    share_called_malignant_at_threshold: float


def binary_metrics(y, score, patient_id, n_boot=2000, seed=0) -> BinaryMetrics:
    """AUC, DeLong CI, image- and patient-level bootstrap CIs, specificity at 86.9% sensitivity."""
    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=np.float64)
    auc, d_lo, d_hi = stats.delong_ci(y, score)
    _, b_lo, b_hi = stats.bootstrap_ci(y, score, n_boot=n_boot, seed=seed)
    _, p_lo, p_hi = stats.bootstrap_ci(y, score, n_boot=n_boot, seed=seed, groups=np.asarray(patient_id))
    op = stats.specificity_at_sensitivity(y, score, RADIOLOGIST_SENSITIVITY)
    fpr, tpr, _ = stats.roc_curve(y, score)
    return BinaryMetrics(
        auc=float(auc), ci95_delong=[float(d_lo), float(d_hi)], ci95_bootstrap=[float(b_lo), float(b_hi)],
        ci95_bootstrap_patient=[float(p_lo), float(p_hi)],
        operating_point=OperatingPoint(RADIOLOGIST_SENSITIVITY, float(op.threshold), float(op.sensitivity),
                                       float(op.specificity)),
        roc=RocCurve(fpr.tolist(), tpr.tolist()))


def scenario_auc(pred: Predictions) -> float:
    """The headline AUC of a scenario: binary AUC of P(class 1), or the triple's Hand & Till mean."""
    y = np.asarray(pred.label).astype(int)
    if pred.proba.shape[1] == 2:
        return float(stats.auc(y, pred.positive_score))
    return float(stats.multiclass_auc(y, pred.proba, average="ovo").auc)


def operating_threshold(pred: Predictions) -> float:
    """Score threshold of the best-specificity operating point with sensitivity >= 86.9%."""
    return float(stats.specificity_at_sensitivity(np.asarray(pred.label).astype(int),
                                                  np.asarray(pred.positive_score, np.float64),
                                                  RADIOLOGIST_SENSITIVITY).threshold)


def triple_metrics(y, proba, class_names) -> TripleMetrics:
    """Hand & Till mean of the pairwise AUCs (the paper's triple-class figure) and each pair's ROC.

    For the pair (i, j) the plotted curve is class j (positive) against class i
    scored by P(j) on the images of those two classes.
    """
    y = np.asarray(y).astype(int)
    proba = np.asarray(proba, dtype=np.float64)
    m = stats.multiclass_auc(y, proba, average="ovo")
    pairs = []
    for (i, j), value in m.pairwise.items():
        keep = np.isin(y, (i, j))
        fpr, tpr, _ = stats.roc_curve((y[keep] == j).astype(int), proba[keep, j])
        pairs.append(PairAUC(class_names[i], class_names[j], float(value), RocCurve(fpr.tolist(), tpr.tolist())))
    return TripleMetrics(auc=float(m.auc), pairs=pairs)


def compare_paired(y, score_new, score_baseline) -> PairedComparison:
    """Paired two-sided DeLong test of two models' AUCs on the same test images."""
    r = stats.delong_test(np.asarray(y).astype(int), np.asarray(score_new, np.float64),
                          np.asarray(score_baseline, np.float64))
    return PairedComparison(auc=float(r.auc_a), baseline_auc=float(r.auc_b), z=float(r.z), p_delong=float(r.p_value))


def interval_cancer_detection(p_malignant, threshold) -> IntervalCancerDetection | None:
    """Share of interval-cancer (false-negative) images that a model calls malignant.

    Two rules, both reported: the model's own decision (P(malignant) >= 0.5,
    i.e. the argmax of a two-class softmax) and the threshold that gives 86.9%
    sensitivity on the test set (``threshold``).
    """
    p = np.asarray(p_malignant, dtype=np.float64)
    if p.size == 0:
        return None
    return IntervalCancerDetection(n_images=int(p.size), share_called_malignant_at_0_5=float(np.mean(p >= 0.5)),
                                   threshold_at_target_sensitivity=float(threshold),
                                   share_called_malignant_at_threshold=float(np.mean(p >= threshold)))


def pool_interval_detections(parts) -> PooledDetection:
    """The shares of several :class:`IntervalCancerDetection` over all their images together (each
    image counts once, whichever model scored it): sum of the images called malignant / all images."""
    n = sum(p.n_images for p in parts)
    called = lambda share: sum(round(p.n_images * getattr(p, share)) for p in parts)  # noqa: E731
    return PooledDetection(n_images=n, share_called_malignant_at_0_5=called("share_called_malignant_at_0_5") / n,
                           share_called_malignant_at_threshold=called("share_called_malignant_at_threshold") / n)
