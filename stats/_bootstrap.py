"""Bootstrap confidence intervals and tests for AUCs (the paper's "Ninety-five
percent confidence intervals (CI) were calculated for AUC values using
bootstrapping methods"), vectorized over replicates.

A bootstrap replicate only changes how often each case is counted.  With c_b
(the n1 weights of the positives in replicate b) and d_b (the n0 weights of
the negatives), the replicate's AUC is

    A_b = c_b^T H d_b / (sum(c_b) * sum(d_b)),   H[i, j] = psi(X_i, Y_j),

(psi = 1 if X_i > Y_j, 1/2 if equal, 0 otherwise), so no replicate is ever
re-sorted.  ``_weighted_wins`` evaluates c_b^T H d_b for a whole block of
replicates at once, using the step structure of H: with the positives sorted
by score, (c_b^T H)_j is a difference of prefix sums of c_b.  That costs
O(n) per replicate instead of the O(n1 n0) of forming H and multiplying, and
uses no BLAS.  (The matrix product was as fast for n = 438 on an idle 2-core
machine, but 4-5 times slower when other work shared the cores, because the
threaded BLAS then waits for busy cores.)
"""

import warnings

import numpy as np
from scipy.stats import norm

from ._delong import AUCComparison, sample_covariance, z_test
from ._ranks import auc_from_counts, auc_of, placement_counts
from ._validate import check_binary, check_choice, check_level, check_n_boot, group_codes

# Replicates are processed in blocks of about this many replicate-by-case
# weights (1 MB per float64 array).  Such blocks stay in cache and their memory
# is recycled by malloc; 16 MB blocks were twice as slow for 2000 x 438 on
# 2 cores, mostly from page faults on freshly mapped memory.
BLOCK_ENTRIES = 2**17


def _weighted_wins(score, is_pos, units):
    """Return a function W -> (c_b^T H d_b for every row b), for a block of replicates.

    W is (replicates x units): how often each unit was drawn; the case weights
    are c_b = W[b, unit of each positive] and d_b = W[b, unit of each negative].
    With the positives sorted by score and C_b(k) the total weight of the k
    lowest-scoring ones, the weight of positives beating negative j is

        (c_b^T H)_j = C_b(n1) - (C_b(below_j) + C_b(not_above_j)) / 2,

    where below_j and not_above_j count the positives scoring < and <= Y_j
    (ties count one half).  Summed with the weights d_b:
    c_b^T H d_b = C_b(n1) sum(d_b) - sum_j d_bj (C_b(below_j) + C_b(not_above_j)) / 2.
    """
    pos_score, neg_score = score[is_pos], score[~is_pos]
    order = np.argsort(pos_score)
    sorted_pos, sorted_pos_units = pos_score[order], units[is_pos][order]
    neg_units = units[~is_pos]
    below = np.searchsorted(sorted_pos, neg_score, side="left")
    not_above = np.searchsorted(sorted_pos, neg_score, side="right")

    def wins(w):
        cumulative = np.zeros((w.shape[0], len(sorted_pos) + 1))
        np.cumsum(w[:, sorted_pos_units], axis=1, out=cumulative[:, 1:])
        d = w[:, neg_units]
        not_beaten = np.einsum("bj,bj->b", cumulative[:, below] + cumulative[:, not_above], d)
        return cumulative[:, -1] * d.sum(axis=1) - 0.5 * not_beaten

    return wins


def _row_counts(draws, size):
    """counts[b, k] = how often k occurs in draws[b], for every row b at once."""
    draws += np.arange(draws.shape[0])[:, None] * size
    return np.bincount(draws.ravel(), minlength=draws.size).reshape(draws.shape)


def _resampling_weights(has_pos, n_boot, seed, stratified, block):
    """Yield blocks (at most ``block`` replicates x units) of unit draw counts.

    The resampled units are the cases themselves or, with groups, whole
    groups (patients): a unit drawn k times gives all its cases weight k.
    Stratified: the units that contain a positive (``has_pos``) and the other
    units are resampled separately, each stratum keeping its size; with one
    unit per case this keeps n1 and n0 fixed in every replicate.

    Draws: ``numpy.random.default_rng(seed)``; for each block of replicates and
    each stratum (positive-containing first), ``integers(0, m, size=(block, m))``.
    """
    if stratified:
        strata = [s for s in (np.flatnonzero(has_pos), np.flatnonzero(~has_pos)) if s.size]
    else:
        strata = [np.arange(len(has_pos))]
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, block):
        size = min(block, n_boot - start)
        unit_weights = np.empty((size, len(has_pos)))
        for stratum in strata:
            draws = rng.integers(0, len(stratum), size=(size, len(stratum)))
            unit_weights[:, stratum] = _row_counts(draws, len(stratum))
        yield unit_weights


def _unit_codes(groups, n_cases):
    return np.arange(n_cases) if groups is None else group_codes(groups, n_cases)


def bootstrap_replicates(is_pos, scores, n_boot, seed, stratified, units):
    """AUC of every bootstrap replicate, one row per score vector (same draws for all).

    Replicates whose resample holds only one class (possible only without
    stratification) have no AUC; they are dropped with a ``RuntimeWarning``.
    """
    pos_per_unit = np.bincount(units, weights=is_pos)
    neg_per_unit = np.bincount(units, weights=~is_pos)
    evaluators = [_weighted_wins(s, is_pos, units) for s in scores]
    block = max(1, BLOCK_ENTRIES // len(units))
    blocks = []
    for w in _resampling_weights(pos_per_unit > 0, n_boot, seed, stratified, block):
        # einsum, not @: the threaded BLAS would stall on cores shared with other work
        pairs = np.einsum("bu,u->b", w, pos_per_unit) * np.einsum("bu,u->b", w, neg_per_unit)
        wins = np.array([evaluate(w) for evaluate in evaluators])
        blocks.append(np.divide(wins, pairs, out=np.full_like(wins, np.nan), where=pairs > 0))
    replicates = np.concatenate(blocks, axis=1)
    kept = ~np.isnan(replicates[0])
    if not kept.all():
        if not kept.any():
            raise ValueError(
                "every bootstrap replicate contained a single class, so no AUC could be "
                "computed; use stratified=True"
            )
        warnings.warn(
            f"{n_boot - int(kept.sum())} of {n_boot} bootstrap replicates contained a single "
            "class and were discarded; stratified=True avoids this",
            RuntimeWarning,
            stacklevel=3,
        )
    return replicates[:, kept]


def acceleration(is_pos, score, units):
    """BCa acceleration a = sum_u L_u^3 / (6 (sum_u L_u^2)^(3/2)).

    L_u is the empirical influence of resampling unit u on the AUC (Efron &
    Tibshirani 1993, ch. 14 and 22).  For the AUC it is given by DeLong's
    structural components:  L_i = (V10_i - A) / n1 for a positive,
    L_j = (V01_j - A) / n0 for a negative, and a group's influence is the
    sum over its cases.  (The jackknife values A - A_(-i) equal these up to
    the factor n1/(n1-1) or n0/(n0-1).)  a = 0 when every influence is 0.
    |a| <= 1/6 always.
    """
    pos_wins, neg_wins = placement_counts(is_pos, score)
    n_pos, n_neg = len(pos_wins), len(neg_wins)
    value = auc_from_counts(pos_wins, neg_wins)
    influence = np.empty(len(score))
    influence[is_pos] = (pos_wins / n_neg - value) / n_pos
    influence[~is_pos] = (neg_wins / n_pos - value) / n_neg
    per_unit = np.bincount(units, weights=influence)
    spread = np.sum(per_unit**2)
    return 0.0 if spread == 0.0 else float(np.sum(per_unit**3) / (6.0 * spread**1.5))


def bca_probabilities(replicates, estimate, accel, level):
    """Quantile levels of the BCa interval (Efron 1987; Efron & Tibshirani 1993, eq. 14.10).

        z0 = Phi^-1( (#{A_b < A} + #{A_b == A} / 2) / B ),
        alpha_1,2 = Phi( z0 + (z0 + z_q) / (1 - a (z0 + z_q)) ),  q = (1 -/+ level) / 2.

    Ties with the estimate count one half because AUC replicates are discrete
    (they and the estimate are correctly rounded ratios of exact counts, so
    equal AUCs compare equal); the proportion is kept within
    [1/(2B), 1 - 1/(2B)] so that z0 stays finite.
    """
    n = len(replicates)
    below = np.count_nonzero(replicates < estimate) + 0.5 * np.count_nonzero(replicates == estimate)
    z0 = norm.ppf(np.clip(below / n, 0.5 / n, 1.0 - 0.5 / n))
    z_q = norm.ppf([(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    denominator = 1.0 - accel * (z0 + z_q)
    with np.errstate(divide="ignore"):
        shift = (z0 + z_q) / denominator
    # Past the pole of the formula (extreme skewness with extreme levels) the
    # level has run off to 0 or 1; continuing the formula would flip it.
    shift = np.where(denominator > 0, shift, np.sign(z0 + z_q) * np.inf)
    return norm.cdf(z0 + shift)


def bootstrap_ci(
    y_true,
    y_score,
    n_boot=2000,
    level=0.95,
    stratified=True,
    method="percentile",
    seed=0,
    groups=None,
):
    """Bootstrap confidence interval for the AUC; returns ``(auc, lo, hi)``.

    ``auc`` is the AUC of the full sample.  Each of ``n_boot`` replicates
    resamples the cases with replacement, A_b = c_b^T H d_b / (sum c_b sum d_b)
    (see the module docstring); then
      * method="percentile": (lo, hi) = quantiles (1 -/+ level)/2 of the A_b
        (``numpy.quantile``, linear interpolation);
      * method="bca": quantiles at the bias-corrected and accelerated levels of
        ``bca_probabilities`` with the acceleration of ``acceleration``.
    stratified=True keeps n1 and n0 of every replicate (the usual choice for
    ROC work, and no replicate can lack a class).  ``groups`` (e.g. patient
    ids, one per case) resamples whole groups instead of single cases: with
    about four images per patient an image-level bootstrap understates the
    uncertainty.  With groups and stratified=True, the groups holding a
    positive and the others are resampled separately.  Replicates that hold
    a single class (only possible otherwise) are dropped with a warning.
    Reproducible: the same ``seed`` gives the same interval.

    Paper: "Ninety-five percent confidence intervals (CI) were calculated for
    AUC values using bootstrapping methods" - every "AUC = 0.81; 95% CI,
    0.75-0.88" in the results.
    """
    n_boot = check_n_boot(n_boot)
    level = check_level(level)
    check_choice(method, "method", ("percentile", "bca"))
    is_pos, (score,) = check_binary(y_true, y_score)
    units = _unit_codes(groups, len(score))
    replicates = bootstrap_replicates(is_pos, [score], n_boot, seed, stratified, units)[0]
    estimate = auc_of(is_pos, score)
    if method == "percentile":
        probabilities = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    else:
        accel = acceleration(is_pos, score, units)
        probabilities = bca_probabilities(replicates, estimate, accel, level)
    lo, hi = np.quantile(replicates, probabilities)
    return estimate, float(lo), float(hi)


def bootstrap_test(y_true, score_a, score_b, n_boot=2000, seed=0, groups=None):
    """Paired bootstrap test of H0: AUC_a == AUC_b on the same cases.

    Both scores are evaluated on the same stratified resamples (as in
    ``bootstrap_ci``; ``groups`` resamples whole patients).  With D_b the
    replicate differences A_a,b - A_b,b,

        z = (A_a - A_b) / sd(D_b),   p = 2 * (1 - Phi(|z|)),

    (sd with ddof=1; the approach of R's pROC ``roc.test(method="bootstrap")``).
    Identical score vectors give z = 0, p = 1; other zero-variance cases as in
    ``delong_test``.  Needs n_boot >= 2.  ``covariance`` is the covariance
    matrix of the replicate AUCs.

    Paper: a resampling alternative to the DeLong comparisons of AUCs, and the
    one that can respect the patient structure of the images.

    Returns an ``AUCComparison``.
    """
    n_boot = check_n_boot(n_boot, minimum=2)
    is_pos, scores = check_binary(y_true, score_a, score_b, names=("score_a", "score_b"))
    units = _unit_codes(groups, len(is_pos))
    replicates = bootstrap_replicates(is_pos, scores, n_boot, seed, True, units)
    if replicates.shape[1] < 2:
        raise ValueError(
            "fewer than 2 usable bootstrap replicates; the test needs a standard deviation"
        )
    auc_a, auc_b = (auc_of(is_pos, s) for s in scores)
    z, p = z_test(auc_a, auc_b, float(np.var(replicates[0] - replicates[1], ddof=1)))
    method = f"bootstrap, paired, stratified, {replicates.shape[1]} replicates"
    if groups is not None:
        method += ", resampling groups"
    return AUCComparison(auc_a, auc_b, z, p, sample_covariance(replicates), method)
