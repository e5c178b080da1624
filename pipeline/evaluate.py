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

Beside the paper's image-level AUC (the headline, as in the paper), the AUC of
aggregated scores, as screening is read and as recent benchmarks (RSNA 2023)
score it: per breast, the mean of its views' scores; per patient, the maximum
over their breasts (:func:`aggregate_by_breast`, :func:`aggregate_by_patient`).
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


@dataclass
class Aggregated:
    """Scores aggregated over groups of images (breasts or patients), one row per group, in the order
    each group first appears among the images."""

    key: np.ndarray        # (G,) "patient<TAB>laterality" per breast, or the patient id
    patient_id: np.ndarray  # (G,)
    y: np.ndarray          # (G,) the group's label: positive when any of its images is
    score: np.ndarray      # (G,) the aggregated score
    n_images: np.ndarray   # (G,)


def group_mean(keys, values):
    """(unique keys in first-seen order, counts, mean of ``values`` (N,) or (N, K) per key)."""
    values = np.asarray(values, np.float64)
    uniq, first, inverse = np.unique(np.asarray(keys), return_index=True, return_inverse=True)
    order = np.argsort(first)
    counts = np.bincount(inverse, minlength=len(uniq))
    sums = np.zeros((len(uniq),) + values.shape[1:])
    np.add.at(sums, inverse, values)
    means = sums / counts.reshape((-1,) + (1,) * (values.ndim - 1))
    return uniq[order], counts[order], means[order]


def aggregate_by_breast(y, score, patient_id, laterality) -> Aggregated:
    """One score per breast: the mean of its images' (views') scores; the breast is positive when any
    of its images is (in a scenario all images of one breast share a label)."""
    patient_id = np.asarray(patient_id).astype(str)
    keys = np.char.add(np.char.add(patient_id, "\t"), np.asarray(laterality).astype(str))
    uniq, counts, mean = group_mean(keys, score)
    _, _, positive = group_mean(keys, np.asarray(y, np.float64))
    return Aggregated(uniq, np.array([k.split("\t")[0] for k in uniq]), (positive > 0).astype(int), mean, counts)


def aggregate_by_patient(breasts: Aggregated) -> Aggregated:
    """One score per patient: the maximum over their breasts' scores (a patient is recalled when one
    breast is); positive when any breast is."""
    uniq, first, inverse = np.unique(breasts.patient_id, return_index=True, return_inverse=True)
    order = np.argsort(first)
    score = np.full(len(uniq), -np.inf)
    np.maximum.at(score, inverse, breasts.score)
    y = np.zeros(len(uniq), int)
    np.maximum.at(y, inverse, breasts.y)
    n = np.bincount(inverse, weights=breasts.n_images, minlength=len(uniq)).astype(int)
    return Aggregated(uniq[order], uniq[order], y[order], score[order], n[order])


@dataclass
class LevelAUC:
    """The AUC of aggregated scores (breast or patient level) with its 95% CIs."""

    level: str                      # "breast" or "patient"
    rule: str                       # how the images' scores were combined
    n: int                          # breasts or patients
    n_positive: int
    auc: float | None               # None: a class is missing at this level
    ci95_delong: list
    ci95_bootstrap_patient: list    # resampling whole patients


def level_auc(agg: Aggregated, level: str, rule: str, n_boot=2000, seed=0) -> LevelAUC:
    """AUC, DeLong CI and patient-bootstrap CI of aggregated scores."""
    n_pos = int(agg.y.sum())
    if min(n_pos, len(agg.y) - n_pos) < 2:  # DeLong's variance needs two of each class
        return LevelAUC(level, rule, int(len(agg.y)), n_pos, None, [], [])
    auc, d_lo, d_hi = stats.delong_ci(agg.y, agg.score)
    _, p_lo, p_hi = stats.bootstrap_ci(agg.y, agg.score, n_boot=n_boot, seed=seed, groups=agg.patient_id)
    return LevelAUC(level, rule, int(len(agg.y)), n_pos, float(auc), [float(d_lo), float(d_hi)],
                    [float(p_lo), float(p_hi)])


BREAST_RULE = "mean of the breast's views"
PATIENT_RULE = "maximum over the patient's breasts"


def aggregated_aucs(y, score, patient_id, laterality, n_boot=2000, seed=0) -> tuple[LevelAUC, LevelAUC]:
    """(breast-level, patient-level) AUCs of a binary scenario's test images."""
    breasts = aggregate_by_breast(y, score, patient_id, laterality)
    return (level_auc(breasts, "breast", BREAST_RULE, n_boot, seed),
            level_auc(aggregate_by_patient(breasts), "patient", PATIENT_RULE, n_boot, seed))


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
