"""Bootstrap CIs and test: the vectorized replicates against a per-replicate loop over
scikit-learn that follows the documented resampling plan, BCa against its textbook
formulas, coverage on simulated binormal data, and the patient-level (groups) option."""

import warnings

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

import stats
from stats import _bootstrap


def reference_replicates(y, scores, n_boot, seed, groups=None, stratified=True):
    """One sklearn AUC per replicate, drawing exactly as ``_resampling_weights`` documents:
    default_rng(seed); per block of replicates and per stratum (units holding a positive
    first), integers(0, m, size=(block, m)); a unit drawn k times weighs its cases k.
    Single-class replicates are left out."""
    n = len(y)
    units = np.arange(n) if groups is None else np.unique(groups, return_inverse=True)[1]
    n_units = units.max() + 1
    has_pos = np.array([y[units == u].any() for u in range(n_units)])
    strata = (
        [np.flatnonzero(has_pos), np.flatnonzero(~has_pos)] if stratified else [np.arange(n_units)]
    )
    strata = [s for s in strata if s.size]
    block = max(1, _bootstrap.BLOCK_ENTRIES // n)
    rng = np.random.default_rng(seed)
    replicates = []
    for start in range(0, n_boot, block):
        size = min(block, n_boot - start)
        draws = [rng.integers(0, len(s), size=(size, len(s))) for s in strata]
        for b in range(size):
            drawn = np.concatenate([s[d[b]] for s, d in zip(strata, draws, strict=True)])
            weight = np.bincount(drawn, minlength=n_units)[units]
            if len(np.unique(y[weight > 0])) == 2:
                replicates.append([roc_auc_score(y, s, sample_weight=weight) for s in scores])
    return np.array(replicates).T


def example(n=60, n_pos=18, seed=0, decimals=1):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.r_[np.ones(n_pos, int), np.zeros(n - n_pos, int)])
    a = np.round(rng.normal(size=n) + y, decimals)
    b = np.round(a + rng.normal(size=n), decimals)
    return y, a, b


def patients(n_patients=40, per_patient=4, seed=1, within_sd=0.1):
    """Images of patients sharing the patient's label and most of its score."""
    rng = np.random.default_rng(seed)
    label = rng.random(n_patients) < 0.4
    label[:2] = [True, False]
    latent = rng.normal(size=n_patients) + 0.8 * label
    groups = np.repeat(np.arange(n_patients), per_patient)
    y = label[groups].astype(int)
    s = latent[groups] + within_sd * rng.normal(size=groups.size)
    return y, s, groups


@pytest.mark.parametrize("block_entries", [2**17, 60 * 40])
def test_stratified_percentile_ci_equals_per_replicate_loop(block_entries, monkeypatch):
    monkeypatch.setattr(_bootstrap, "BLOCK_ENTRIES", block_entries)
    y, a, _ = example()
    reference = reference_replicates(y, [a], n_boot=130, seed=7)[0]
    value, lo, hi = stats.bootstrap_ci(y, a, n_boot=130, level=0.9, seed=7)
    assert value == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(reference, [0.05, 0.95])), abs=1e-12)


@pytest.mark.parametrize("stratified", [True, False])
def test_group_bootstrap_equals_per_replicate_loop(stratified):
    y, s, groups = patients(n_patients=25, within_sd=0.5)
    y[3] = 1 - y[3]  # one patient with images of both classes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ours = _bootstrap.bootstrap_replicates(
            y == 1, [s], 200, 3, stratified, np.unique(groups, return_inverse=True)[1]
        )
    reference = reference_replicates(
        y, [s], n_boot=200, seed=3, groups=groups, stratified=stratified
    )
    np.testing.assert_allclose(ours, reference, atol=1e-12)


def test_one_group_per_case_is_the_case_level_bootstrap():
    y, a, _ = example()
    for stratified in (True, False):
        plain = stats.bootstrap_ci(y, a, n_boot=300, stratified=stratified, seed=2)
        grouped = stats.bootstrap_ci(
            y, a, n_boot=300, stratified=stratified, seed=2, groups=np.arange(len(y))
        )
        assert plain == grouped


def test_stratified_replicates_keep_class_counts_and_unstratified_do_not():
    y, *_ = example(n=30, n_pos=3)
    for stratified, expect_constant in ((True, True), (False, False)):
        blocks = _bootstrap._resampling_weights(y == 1, 500, 0, stratified, block=128)
        weights = np.vstack(list(blocks))
        assert weights.shape == (500, 30) and np.all(weights.sum(axis=1) == 30)
        assert (np.ptp(weights @ y) == 0) == expect_constant


def test_unstratified_single_class_replicates_are_dropped_with_warning():
    y = np.array([1, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.5])
    with pytest.warns(RuntimeWarning, match="contained a single class and were discarded"):
        _, lo, hi = stats.bootstrap_ci(y, s, n_boot=200, stratified=False, seed=0)
    reference = reference_replicates(y, [s], 200, 0, stratified=False)[0]
    assert len(reference) < 200
    assert (lo, hi) == pytest.approx(tuple(np.quantile(reference, [0.025, 0.975])))


def test_all_replicates_single_class_is_an_error():
    y, s = np.array([1, 0]), np.array([0.7, 0.2])
    # find a seed whose only replicate draws one class twice (probability 1/2 each)
    seed = next(
        k for k in range(100) if len(reference_replicates(y, [s], 1, k, stratified=False)) == 0
    )
    with pytest.raises(ValueError, match="single class.*stratified=True"):
        stats.bootstrap_ci(y, s, n_boot=1, stratified=False, seed=seed)


def test_seed_reproducibility():
    y, a, _ = example()
    first = stats.bootstrap_ci(y, a, n_boot=500, seed=123, method="bca")
    assert stats.bootstrap_ci(y, a, n_boot=500, seed=123, method="bca") == first
    assert stats.bootstrap_ci(y, a, n_boot=500, seed=124, method="bca") != first
    test = stats.bootstrap_test(y, *example()[1:], n_boot=300, seed=5)
    again = stats.bootstrap_test(y, *example()[1:], n_boot=300, seed=5)
    assert (test.z, test.p_value) == (again.z, again.p_value)


def test_percentile_and_delong_intervals_cover_the_true_auc():
    # Binormal model: positives N(mu, 1), negatives N(0, 1), true AUC = Phi(mu / sqrt 2).
    mu, n_sets = 1.0, 200
    truth = norm.cdf(mu / np.sqrt(2))
    rng = np.random.default_rng(2024)
    y = np.r_[np.ones(40, int), np.zeros(40, int)]
    covered = np.zeros((2, n_sets), bool)
    for k in range(n_sets):
        s = rng.normal(size=80) + mu * y
        _, lo, hi = stats.bootstrap_ci(y, s, n_boot=300, seed=k)
        _, d_lo, d_hi = stats.delong_ci(y, s)
        covered[:, k] = lo <= truth <= hi, d_lo <= truth <= d_hi
    coverage = covered.mean(axis=1)
    # 200 sets: binomial sd about 0.015 around 0.95; percentile CIs of AUCs run a bit short.
    assert 0.88 <= coverage[0] <= 0.99, coverage
    assert 0.88 <= coverage[1] <= 0.99, coverage


def test_group_bootstrap_is_wider_when_images_of_a_patient_agree():
    y, s, groups = patients(n_patients=60, per_patient=4, within_sd=0.05)
    _, lo, hi = stats.bootstrap_ci(y, s, n_boot=1000, seed=0)
    _, g_lo, g_hi = stats.bootstrap_ci(y, s, n_boot=1000, seed=0, groups=groups)
    # four near-copies per patient: the honest interval is about twice as wide
    assert g_hi - g_lo >= 1.5 * (hi - lo)


def influence_by_finite_differences(y, s, units, step=1e-6):
    """d AUC / d (weight of unit u) at unit weights 1, from sklearn's weighted AUC."""
    base = roc_auc_score(y, s)
    return np.array(
        [
            (roc_auc_score(y, s, sample_weight=1 + step * (units == u)) - base) / step
            for u in range(units.max() + 1)
        ]
    )


@pytest.mark.parametrize("grouped", [False, True])
def test_bca_acceleration_is_the_skewness_of_the_influence_values(grouped):
    y, s, groups = patients(n_patients=20, within_sd=0.7)
    units = np.unique(groups, return_inverse=True)[1] if grouped else np.arange(len(y))
    influence = influence_by_finite_differences(y, s, units)
    expected = np.sum(influence**3) / (6 * np.sum(influence**2) ** 1.5)
    assert _bootstrap.acceleration(y == 1, s, units) == pytest.approx(expected, rel=1e-4)


def test_bca_interval_follows_efron_formulas():
    # A skewed case (AUC near 1, small n) where BCa and percentile differ.
    y, a, _ = example(n=40, n_pos=12, decimals=2)
    a = a + 1.5 * y
    replicates = reference_replicates(y, [a], 1000, 9)[0]
    estimate = roc_auc_score(y, a)
    influence = influence_by_finite_differences(y, a, np.arange(len(y)))
    accel = np.sum(influence**3) / (6 * np.sum(influence**2) ** 1.5)
    # sklearn's trapezoids are off by an ulp here and there: detect ties with a tolerance.
    tied = np.isclose(replicates, estimate, rtol=0, atol=1e-12)
    z0 = norm.ppf((np.sum(replicates[~tied] < estimate) + 0.5 * np.sum(tied)) / 1000)
    probs = [norm.cdf(z0 + (z0 + z) / (1 - accel * (z0 + z))) for z in norm.ppf([0.025, 0.975])]
    value, lo, hi = stats.bootstrap_ci(y, a, n_boot=1000, seed=9, method="bca")
    assert value == pytest.approx(estimate)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(replicates, probs)), abs=1e-6)
    assert (lo, hi) != pytest.approx(stats.bootstrap_ci(y, a, n_boot=1000, seed=9), abs=1e-3)


def test_perfect_separation_gives_degenerate_but_finite_intervals():
    y = np.r_[np.ones(5, int), np.zeros(7, int)]
    s = np.r_[np.arange(5) + 10.0, np.arange(7.0)]
    for method in ("percentile", "bca"):
        assert stats.bootstrap_ci(y, s, n_boot=200, method=method) == (1.0, 1.0, 1.0)
    assert stats.delong_ci(y, s) == (1.0, 1.0, 1.0)
    assert stats.delong_variance(y, s) == 0.0


def test_very_small_sample_bootstrap():
    # one positive and one negative: every stratified replicate is the sample itself
    assert stats.bootstrap_ci([1, 0], [0.2, 0.8], n_boot=50, method="bca") == (0.0, 0.0, 0.0)
    assert stats.bootstrap_ci([0, 1, 1], [0.5, 0.5, 0.9], n_boot=50)[0] == 0.75


def test_bootstrap_test_equals_per_replicate_loop():
    y, a, b = example(n=80, n_pos=30)
    reference = reference_replicates(y, [a, b], 400, 11)
    result = stats.bootstrap_test(y, a, b, n_boot=400, seed=11)
    z = (roc_auc_score(y, a) - roc_auc_score(y, b)) / np.std(reference[0] - reference[1], ddof=1)
    assert result.z == pytest.approx(z, rel=1e-9)
    assert result.p_value == pytest.approx(2 * norm.sf(abs(z)), rel=1e-9)
    np.testing.assert_allclose(result.covariance, np.cov(reference), rtol=1e-9)
    assert "bootstrap" in result.method


def test_bootstrap_test_agrees_with_delong_on_a_larger_sample():
    y, a, b = example(n=400, n_pos=150, decimals=3)
    boot = stats.bootstrap_test(y, a, b, n_boot=2000, seed=0)
    delong = stats.delong_test(y, a, b)
    assert boot.z == pytest.approx(delong.z, abs=0.25)
    np.testing.assert_allclose(boot.covariance, delong.covariance, rtol=0.2)


def test_bootstrap_test_identical_scores_and_groups():
    y, s, groups = patients()
    result = stats.bootstrap_test(y, s, s.copy(), n_boot=200, groups=groups)
    assert (result.z, result.p_value) == (0.0, 1.0)
    assert "groups" in result.method


def test_bca_levels_past_the_pole_of_the_formula_run_off_to_one():
    # z0 = Phi^-1(0.9995) = 3.29 and level 0.999: with a = 0.16, 1 - a (z0 + z_0.9995) < 0.
    replicates = np.r_[np.zeros(1999), 1.0]
    lo, hi = _bootstrap.bca_probabilities(replicates, 0.5, 0.16, 0.999)
    assert lo == pytest.approx(0.9995) and hi == 1.0
    # without the guard the formula would give hi ~ 0 < lo
    assert _bootstrap.bca_probabilities(replicates, 0.5, 0.0, 0.999)[1] == pytest.approx(1.0)
