"""Bad input raises a ValueError that says what was wrong; degenerate but valid input
(perfect separation, identical scores, tiny samples) gets its documented answer."""

import numpy as np
import pytest

import stats

Y = np.array([0, 1, 0, 1, 1, 0])
S = np.array([0.1, 0.9, 0.4, 0.6, 0.3, 0.2])
T = np.array([0.3, 0.5, 0.2, 0.9, 0.1, 0.4])

# Every public function with one (labels, scores) pair in the first two positions.
SINGLE = {
    "auc": lambda y, s: stats.auc(y, s),
    "roc_curve": lambda y, s: stats.roc_curve(y, s),
    "delong_variance": lambda y, s: stats.delong_variance(y, s),
    "delong_ci": lambda y, s: stats.delong_ci(y, s),
    "delong_test": lambda y, s: stats.delong_test(y, s, T[: len(s)] if len(s) <= 6 else s),
    "delong_test_unpaired": lambda y, s: stats.delong_test_unpaired(y, s, Y, T),
    "bootstrap_ci": lambda y, s: stats.bootstrap_ci(y, s, n_boot=5),
    "bootstrap_test": lambda y, s: stats.bootstrap_test(
        y, s, T[: len(s)] if len(s) <= 6 else s, n_boot=5
    ),
    "specificity_at_sensitivity": lambda y, s: stats.specificity_at_sensitivity(y, s, 0.5),
    "sensitivity_at_specificity": lambda y, s: stats.sensitivity_at_specificity(y, s, 0.5),
}


def test_public_names_are_exactly_the_documented_api():
    expected = set(
        "auc roc_curve delong_variance delong_ci delong_test delong_test_unpaired "
        "bootstrap_ci bootstrap_test multiclass_auc "
        "specificity_at_sensitivity sensitivity_at_specificity".split()
    )
    assert set(stats.__all__) == expected
    assert {name for name in dir(stats) if not name.startswith("_")} == expected


@pytest.mark.parametrize("name", SINGLE)
@pytest.mark.parametrize(
    "y, s, message",
    [
        (Y, S[:5], r"(y_true|y_a) has 6 entries but \w+ has 5"),
        ([1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4], "only class 1 .*at least one negative"),
        ([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4], "only class 0 .*at least one negative"),
        ([0, 1, 2, 1, 0, 1], S, r"only the labels \[0, 1\], got also 2"),
        ([-1, 1, -1, 1, 1, -1], S, r"only the labels \[0, 1\], got also -1"),
        ([0, 1, np.nan, 1, 1, 0], S, r"only the labels \[0, 1\], got also nan"),
        (["a", "b", "a", "b", "b", "a"], S, "must hold numbers"),
        (Y, [0.1, np.nan, 0.4, 0.6, 0.3, 0.2], r"1 NaN/inf value\(s\) \(first at index 1\)"),
        (Y, [0.1, 0.9, np.inf, 0.6, -np.inf, 0.2], r"2 NaN/inf value\(s\) \(first at index 2\)"),
        ([], [], "is empty"),
        (Y.reshape(2, 3), S, "must be a 1-D array"),
        (Y, S.reshape(3, 2), "must be a 1-D array"),
    ],
)
def test_bad_binary_input(name, y, s, message):
    with pytest.raises(ValueError, match=message):
        SINGLE[name](y, s)


@pytest.mark.parametrize("level", [0, 1, 1.5, -0.1, float("nan"), "0.95", True, None])
def test_bad_level(level):
    for call in (
        lambda: stats.delong_ci(Y, S, level=level),
        lambda: stats.bootstrap_ci(Y, S, level=level),
    ):
        with pytest.raises(ValueError, match="level must be a number strictly between 0 and 1"):
            call()


@pytest.mark.parametrize("n_boot", [0, -5, 2.5, "100", True])
def test_bad_n_boot(n_boot):
    with pytest.raises(ValueError, match="n_boot must be an integer >= 1"):
        stats.bootstrap_ci(Y, S, n_boot=n_boot)
    with pytest.raises(ValueError, match="n_boot must be an integer >= 2"):
        stats.bootstrap_test(Y, S, T, n_boot=n_boot)


def test_bootstrap_test_needs_two_replicates():
    with pytest.raises(ValueError, match="n_boot must be an integer >= 2, got 1"):
        stats.bootstrap_test(Y, S, T, n_boot=1)


def test_bad_options():
    with pytest.raises(ValueError, match="method must be one of 'percentile', 'bca'"):
        stats.bootstrap_ci(Y, S, method="bc")
    with pytest.raises(ValueError, match=r"groups has 5 entries but y_true has 6"):
        stats.bootstrap_ci(Y, S, groups=[1, 1, 2, 2, 3])
    with pytest.raises(ValueError, match="groups contains NaN"):
        stats.bootstrap_ci(Y, S, groups=[1.0, 1, 2, 2, np.nan, 3])
    with pytest.raises(ValueError, match="groups contains None"):
        stats.bootstrap_test(Y, S, T, groups=["p1", "p1", None, "p2", "p3", "p3"])
    for bad in (-0.1, 1.01, float("nan"), "0.9"):
        with pytest.raises(ValueError, match="sensitivity must be a number between 0 and 1"):
            stats.specificity_at_sensitivity(Y, S, bad)
        with pytest.raises(ValueError, match="specificity must be a number between 0 and 1"):
            stats.sensitivity_at_specificity(Y, S, bad)


def test_unpaired_errors_name_the_sample():
    with pytest.raises(ValueError, match="y_b has 6 entries but score_b has 5"):
        stats.delong_test_unpaired(Y, S, Y, T[:5])
    with pytest.raises(ValueError, match="y_a contains only class 0"):
        stats.delong_test_unpaired(np.zeros(6), S, Y, T)


def test_paired_errors_name_the_score():
    with pytest.raises(ValueError, match="y_true has 6 entries but score_b has 4"):
        stats.delong_test(Y, S, T[:4])
    with pytest.raises(ValueError, match="score_a contains 1 NaN"):
        stats.bootstrap_test(Y, np.r_[np.nan, S[1:]], T)


@pytest.mark.parametrize(
    "y, proba, average, message",
    [
        ([0, 1, 2, 3], np.full((4, 3), 1 / 3), "ovo", r"only the labels \[0, 1, 2\], got also 3"),
        ([0, 1, 1, 0], np.full((4, 3), 1 / 3), "ovo", r"no case of class\(es\) \[2\]"),
        ([0, 1, 2], np.full((4, 3), 1 / 3), "ovo", "y_true has 3 entries but proba has 4"),
        ([0, 1, 2], np.full(3, 1 / 3), "ovo", "proba must be a 2-D array"),
        ([0, 0, 0], np.ones((3, 1)), "ovo", "at least 2"),
        ([0, 1, 2], [[0.2, 0.3, 0.5], [np.nan, 0.5, 0.5], [0.1, 0.1, 0.8]], "ovr", "NaN/inf"),
        ([0, 1, 2], np.full((3, 3), 1 / 3), "macro", "average must be one of 'ovo', 'ovr'"),
        ([], np.empty((0, 3)), "ovo", "proba is empty"),
    ],
)
def test_bad_multiclass_input(y, proba, average, message):
    with pytest.raises(ValueError, match=message):
        stats.multiclass_auc(y, proba, average=average)


# --- degenerate but valid -------------------------------------------------------------


def test_delong_needs_two_cases_per_class():
    for call in (stats.delong_variance, stats.delong_ci):
        with pytest.raises(
            ValueError, match="at least 2 positives and 2 negatives, got 1 positive"
        ):
            call([1, 0, 0], [0.9, 0.1, 0.2])
    assert stats.auc([1, 0], [0.9, 0.1]) == 1.0  # the AUC itself is fine with one of each
    # V10 = (1, 1/2), V01 = (1/2, 1): Var = var(V10)/2 + var(V01)/2 = 1/16 + 1/16
    assert stats.delong_variance([1, 1, 0, 0], [0.9, 0.3, 0.5, 0.1]) == 0.125


def test_perfect_separation_paired_tests():
    y = np.r_[np.ones(4, int), np.zeros(4, int)]
    perfect = np.r_[5.0, 6, 7, 8, 1, 2, 3, 4]
    also_perfect = perfect**2
    flat = np.zeros(8)  # every case tied: AUC 1/2 with zero variance
    both = stats.delong_test(y, perfect, also_perfect)
    assert (both.auc_a, both.auc_b, both.z, both.p_value) == (1.0, 1.0, 0.0, 1.0)
    np.testing.assert_array_equal(both.covariance, np.zeros((2, 2)))
    certain = stats.delong_test(y, perfect, flat)
    assert (certain.auc_a, certain.auc_b, certain.z, certain.p_value) == (1.0, 0.5, np.inf, 0.0)
    reverse = stats.delong_test_unpaired(y, flat, y, perfect)
    assert (reverse.z, reverse.p_value) == (-np.inf, 0.0)


def test_identical_score_vectors():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    s = rng.normal(size=50) + y
    result = stats.delong_test(y, s, s.copy())
    assert (result.z, result.p_value) == (0.0, 1.0)
    assert result.difference == 0.0
    assert np.all(result.covariance == result.covariance[0, 0])
    boot = stats.bootstrap_test(y, s, s.copy(), n_boot=100)
    assert (boot.z, boot.p_value) == (0.0, 1.0)


def test_smallest_valid_samples():
    assert stats.auc([0, 1], [0.5, 0.5]) == 0.5
    fpr, tpr, thresholds = stats.roc_curve([0, 1], [0.2, 0.8])
    np.testing.assert_array_equal(thresholds, [np.inf, 0.8, 0.2])
    assert stats.specificity_at_sensitivity([0, 1], [0.2, 0.8], 1.0) == (0.8, 1.0, 1.0)
    assert stats.sensitivity_at_specificity([0, 1], [0.2, 0.8], 0.0) == (0.2, 1.0, 0.0)
    assert stats.specificity_at_sensitivity([0, 1], [0.2, 0.8], 0.0) == (np.inf, 0.0, 1.0)
    two_classes = stats.multiclass_auc([0, 1], [[0.7, 0.3], [0.4, 0.6]])
    assert two_classes.auc == 1.0 and two_classes.pairwise == {(0, 1): 1.0}


def test_bool_and_float_labels_are_accepted():
    assert stats.auc(Y.astype(bool), S) == stats.auc(Y.astype(float), S) == stats.auc(Y, S)
