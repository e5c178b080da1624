"""DeLong's variance, confidence interval and tests for AUCs (the paper's
"DeLong test was used to evaluate the statistical significance when comparing
differences of AUCs"; all tests two-sided)."""

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from ._ranks import auc_from_counts, placement_counts
from ._validate import check_binary, check_level


@dataclass(frozen=True)
class AUCComparison:
    """Result of a two-sided test of H0: AUC_a == AUC_b.

    ``covariance`` is the 2x2 covariance matrix of (AUC_a, AUC_b) that the test
    used; ``method`` says which test produced it.
    """

    auc_a: float
    auc_b: float
    z: float
    p_value: float
    covariance: np.ndarray
    method: str

    @property
    def difference(self):
        return self.auc_a - self.auc_b


def z_test(auc_a, auc_b, variance):
    """Two-sided normal test of d = AUC_a - AUC_b given Var(d).

        z = d / sqrt(Var(d)),   p = 2 * (1 - Phi(|z|)).

    When Var(d) is exactly zero (e.g. both scores separate the classes
    perfectly, or the two score vectors are identical) z would be 0/0 or d/0;
    it is then defined as
        z = 0,           p = 1   if AUC_a == AUC_b,
        z = sign(d)*inf, p = 0   if they differ,
    i.e. a difference measured without any sampling variability is certain.
    """
    difference = auc_a - auc_b
    if variance > 0.0:
        z = difference / np.sqrt(variance)
    elif difference == 0.0:
        z = 0.0
    else:
        z = np.copysign(np.inf, difference)
    return float(z), float(2.0 * norm.sf(abs(z)))


def _win_counts(is_pos, scores):
    """Stacked placement counts (one row per score vector): n0*V10 (k x n1) and n1*V01 (k x n0)."""
    n_pos = int(is_pos.sum())
    n_neg = len(is_pos) - n_pos
    if min(n_pos, n_neg) < 2:
        raise ValueError(
            f"DeLong's variance needs at least 2 positives and 2 negatives, got {n_pos} "
            f"positive(s) and {n_neg} negative(s); use bootstrap_ci for such tiny samples"
        )
    pos_wins, neg_wins = zip(*(placement_counts(is_pos, s) for s in scores), strict=True)
    return np.vstack(pos_wins), np.vstack(neg_wins)


def _covariance(pos_wins, neg_wins):
    """DeLong covariance matrix of the AUCs whose win counts are the rows given.

        S = S10 / n1 + S01 / n0,   S10 = cov(V10),  S01 = cov(V01)  (ddof = 1),

    DeLong, DeLong & Clarke-Pearson (1988), Biometrics 44:837.  The covariances
    are taken of the win counts (exact multiples of 1/2) and then rescaled
    (V10 = counts / n0, V01 = counts / n1), so a zero variance is exactly 0.
    """
    n_pos, n_neg = pos_wins.shape[1], neg_wins.shape[1]
    s10 = sample_covariance(pos_wins) / n_neg**2
    s01 = sample_covariance(neg_wins) / n_pos**2
    return s10 / n_pos + s01 / n_neg


def sample_covariance(rows):
    """Covariance matrix (ddof = 1) of the variables in the rows; 2-D even for one row."""
    # Elementwise rather than np.cov: np.cov calls the threaded BLAS, whose
    # spinning worker threads then slow the single-threaded sorts on 2 cores.
    centered = rows - rows.mean(axis=1, keepdims=True)
    return (centered[:, None, :] * centered[None, :, :]).sum(axis=2) / (rows.shape[1] - 1)


def _single(is_pos, score):
    """AUC and DeLong variance of one score vector."""
    pos_wins, neg_wins = _win_counts(is_pos, [score])
    return auc_from_counts(pos_wins[0], neg_wins[0]), float(_covariance(pos_wins, neg_wins)[0, 0])


def delong_variance(y_true, y_score):
    """DeLong's estimate of Var(AUC), by the O(n log n) midrank algorithm.

        Var(A) = S10 / n1 + S01 / n0,
        S10 = (1/(n1-1)) sum_i (V10_i - A)^2,   S01 = (1/(n0-1)) sum_j (V01_j - A)^2,

    with the structural components V10_i (share of negatives that positive i
    out-scores, ties 1/2) and V01_j (share of positives that out-score
    negative j) computed from midranks as in Sun & Xu (2014).

    Needs at least 2 positives and 2 negatives (otherwise ``ValueError``).
    The variance is exactly 0 when the scores separate the classes perfectly.

    Paper: the variance behind the DeLong comparisons of AUCs.
    """
    is_pos, (score,) = check_binary(y_true, y_score)
    return _single(is_pos, score)[1]


def delong_ci(y_true, y_score, level=0.95):
    """Normal-approximation confidence interval for the AUC from DeLong's variance.

        (lo, hi) = A -/+ z_{(1+level)/2} * sqrt(Var_DeLong(A)),  clipped to [0, 1].

    With perfect separation the variance is 0 and the interval is (1, 1).
    Needs at least 2 positives and 2 negatives.  Returns ``(auc, lo, hi)``.

    Paper: an analytic companion to the bootstrap CIs that the paper reports.
    """
    level = check_level(level)
    is_pos, (score,) = check_binary(y_true, y_score)
    value, variance = _single(is_pos, score)
    half_width = norm.ppf(0.5 + level / 2.0) * np.sqrt(variance)
    return value, float(max(0.0, value - half_width)), float(min(1.0, value + half_width))


def delong_test(y_true, score_a, score_b):
    """Paired DeLong test of two correlated AUCs measured on the same cases.

        z = (A_a - A_b) / sqrt(S_aa + S_bb - 2 S_ab),   p = 2 * (1 - Phi(|z|)),

    with S the 2x2 DeLong covariance matrix (DeLong et al. 1988) computed by
    the midrank algorithm of Sun & Xu (2014).  The variance of the difference
    is computed from the differences of the structural components, which
    equals S_aa + S_bb - 2 S_ab and is exactly 0 for identical score vectors
    (then z = 0, p = 1; other zero-variance cases: see ``z_test``).  Needs at
    least 2 positives and 2 negatives.

    Paper: "DeLong test was used to evaluate the statistical significance when
    comparing differences of AUCs" (two-sided), e.g. FFDM-only vs FFDM+DDSM
    training evaluated on the same FFDM test images.

    Returns an ``AUCComparison`` (auc_a, auc_b, z, p_value, covariance, method).
    """
    is_pos, scores = check_binary(y_true, score_a, score_b, names=("score_a", "score_b"))
    pos_wins, neg_wins = _win_counts(is_pos, scores)
    auc_a, auc_b = (auc_from_counts(p, q) for p, q in zip(pos_wins, neg_wins, strict=True))
    variance = _covariance(pos_wins[:1] - pos_wins[1:], neg_wins[:1] - neg_wins[1:])[0, 0]
    z, p = z_test(auc_a, auc_b, variance)
    return AUCComparison(auc_a, auc_b, z, p, _covariance(pos_wins, neg_wins), "DeLong, paired")


def delong_test_unpaired(y_a, score_a, y_b, score_b):
    """DeLong-variance test of two AUCs from independent samples.

        z = (A_a - A_b) / sqrt(Var(A_a) + Var(A_b)),   p = 2 * (1 - Phi(|z|)),

    each variance by ``delong_variance``; the covariance matrix is diagonal.
    Zero total variance is handled as in ``z_test``.  (R's pROC reports the
    same statistic for unpaired DeLong tests but takes p from a t distribution.)

    Paper: comparing AUCs measured on different test sets (e.g. models
    evaluated on FFDM and on DDSM images).

    Returns an ``AUCComparison``.
    """
    is_pos_a, (a,) = check_binary(y_a, score_a, names=("score_a",), label_name="y_a")
    is_pos_b, (b,) = check_binary(y_b, score_b, names=("score_b",), label_name="y_b")
    (auc_a, var_a), (auc_b, var_b) = _single(is_pos_a, a), _single(is_pos_b, b)
    z, p = z_test(auc_a, auc_b, var_a + var_b)
    return AUCComparison(auc_a, auc_b, z, p, np.diag([var_a, var_b]), "DeLong, unpaired")
