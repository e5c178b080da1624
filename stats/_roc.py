"""AUC, ROC curve and operating points (the paper's AUCs, ROC figures and
"specificity at the radiologists' 86.9% sensitivity")."""

from typing import NamedTuple

import numpy as np

from ._ranks import auc_of
from ._validate import check_binary, check_fraction


def auc(y_true, y_score):
    """Area under the ROC curve, computed as the Mann-Whitney statistic.

        A = (1 / (n1 n0)) * sum_{i: y_i=1} sum_{j: y_j=0} psi(s_i, s_j),
        psi(a, b) = 1 if a > b, 1/2 if a == b, 0 otherwise,

    i.e. the probability that a random positive scores higher than a random
    negative, ties counting one half; this equals the trapezoidal area under
    ``roc_curve``.  Positive class = label 1 and a higher score means "more
    likely positive"; an AUC below 0.5 is returned as is, never flipped.

    Paper: every binary result of Aboutalib et al. (2018) is such an AUC.

    Parameters
    ----------
    y_true : array of 0/1 (or bool), both classes present.
    y_score : array of finite numbers, same length.
    """
    is_pos, (score,) = check_binary(y_true, y_score)
    return auc_of(is_pos, score)


def _roc_counts(is_pos, score):
    """Cumulative (thresholds, true positives, false positives) at every distinct score,
    from the highest threshold (+inf: nothing called positive) down."""
    thresholds, block = np.unique(score, return_inverse=True)
    pos_per_score = np.bincount(block, weights=is_pos, minlength=len(thresholds))
    all_per_score = np.bincount(block, minlength=len(thresholds))
    tps = np.r_[0.0, np.cumsum(pos_per_score[::-1])]
    fps = np.r_[0.0, np.cumsum((all_per_score - pos_per_score)[::-1])]
    return np.r_[np.inf, thresholds[::-1]], tps, fps


def roc_curve(y_true, y_score):
    """ROC curve points (fpr, tpr, thresholds), highest threshold first.

    A case is called positive when ``score >= threshold``.  There is one point
    per distinct score, plus a first point (0, 0) at threshold +inf:

        tpr_k = #{positives with score >= t_k} / n1,
        fpr_k = #{negatives with score >= t_k} / n0.

    These are the same points and conventions as
    ``sklearn.metrics.roc_curve(y_true, y_score, drop_intermediate=False)``.

    Paper: the ROC figures (Figs. 1-4) plot these curves.
    """
    is_pos, (score,) = check_binary(y_true, y_score)
    thresholds, tps, fps = _roc_counts(is_pos, score)
    return fps / fps[-1], tps / tps[-1], thresholds


class OperatingPoint(NamedTuple):
    """One point of the ROC curve: call a case positive when score >= threshold."""

    threshold: float
    sensitivity: float
    specificity: float


def _operating_points(y_true, y_score):
    """Every ROC point as (thresholds, sensitivity, specificity), highest threshold first.

    Each rate is one division of two counts, so a target such as 0.869 compares
    exactly with 869/1000 (both are the same correctly rounded float)."""
    is_pos, (score,) = check_binary(y_true, y_score)
    thresholds, tps, fps = _roc_counts(is_pos, score)
    n_neg = fps[-1]
    return thresholds, tps / tps[-1], (n_neg - fps) / n_neg


def specificity_at_sensitivity(y_true, y_score, sensitivity):
    """Best specificity among the ROC points whose sensitivity reaches a target.

    Rule: among the thresholds t of ``roc_curve`` with
    TP(t)/n1 >= ``sensitivity`` (score >= t counts as positive), take the one
    with the largest specificity TN(t)/n0.  Because specificity can only fall
    as the threshold is lowered, this is the highest threshold that reaches
    the target sensitivity.  No interpolation between ROC points is done (so
    the sensitivity achieved may exceed the target); the point actually used
    is returned.  A target of 0 gives threshold +inf (specificity 1).

    Paper: "Using previously reported radiologists' overall sensitivity 86.9%
    as a reference threshold, our best deep learning model for classifying
    malignant versus negative yields a specificity of 87%" -> call with
    ``sensitivity=0.869``.

    Returns an ``OperatingPoint(threshold, sensitivity, specificity)``.
    """
    target = check_fraction(sensitivity, "sensitivity")
    thresholds, sens, spec = _operating_points(y_true, y_score)
    # sensitivity rises as the threshold falls: the first point reaching it is the best.
    k = int(np.argmax(sens >= target))
    return OperatingPoint(float(thresholds[k]), float(sens[k]), float(spec[k]))


def sensitivity_at_specificity(y_true, y_score, specificity):
    """Best sensitivity among the ROC points whose specificity reaches a target.

    Rule: among the thresholds t of ``roc_curve`` with TN(t)/n0 >=
    ``specificity`` (score >= t counts as positive), take the one with the
    largest sensitivity TP(t)/n1, i.e. the lowest threshold that still reaches
    the target specificity.  No interpolation; the point used is returned.  A
    target of 0 gives the lowest score as threshold (sensitivity 1).

    Paper: the counterpart of ``specificity_at_sensitivity`` for comparing
    with the radiologists' specificity of 88.9%.

    Returns an ``OperatingPoint(threshold, sensitivity, specificity)``.
    """
    target = check_fraction(specificity, "specificity")
    thresholds, sens, spec = _operating_points(y_true, y_score)
    # specificity falls as the threshold falls: the last point reaching it is the best.
    k = len(spec) - 1 - int(np.argmax(spec[::-1] >= target))
    return OperatingPoint(float(thresholds[k]), float(sens[k]), float(spec[k]))
