"""stats against independent references: scikit-learn, a slow O(n^2) DeLong
written here from the 1988 definitions, brute-force operating points, and
R's pROC on its aSAH data set."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

import stats

PROPERTY = settings(max_examples=150, deadline=None, derandomize=True)


@st.composite
def binary_cases(draw, min_size=2, max_size=80, n_scores=1):
    """Labels with both classes (balanced or very imbalanced) and score vectors,
    with many ties (few distinct values) or almost none (continuous)."""
    n = draw(st.integers(min_size, max_size))
    n_pos = draw(st.integers(1, n - 1))
    seed = draw(st.integers(0, 2**32 - 1))
    tied = draw(st.booleans())
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.r_[np.ones(n_pos, int), np.zeros(n - n_pos, int)])
    shift = rng.normal(0, 1.5, size=n_scores)
    scores = [rng.normal(size=n) + shift[k] * y for k in range(n_scores)]
    if tied:
        scores = [np.round(s) for s in scores]
    return (y, *scores)


def slow_delong(y, *scores):
    """DeLong et al. (1988) straight from the definitions, O(n1 n0) per score:
    psi matrix, V10 = row means, V01 = column means, S = S10/n1 + S01/n0."""
    pos, neg = y == 1, y == 0
    v10, v01 = [], []
    for s in scores:
        diff = s[pos][:, None] - s[neg][None, :]
        psi = (diff > 0) + 0.5 * (diff == 0)
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    aucs = np.array([v.mean() for v in v10])
    covariance = np.atleast_2d(np.cov(v10)) / pos.sum() + np.atleast_2d(np.cov(v01)) / neg.sum()
    return aucs, covariance


# --- AUC and ROC curve against scikit-learn --------------------------------------------


@PROPERTY
@given(binary_cases())
def test_auc_matches_sklearn(case):
    y, s = case
    assert stats.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


@PROPERTY
@given(binary_cases())
def test_roc_curve_matches_sklearn_without_dropping_points(case):
    y, s = case
    ours = stats.roc_curve(y, s)
    theirs = sk_roc_curve(y, s, drop_intermediate=False)
    for mine, ref in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(mine, ref)


@pytest.mark.parametrize("prevalence", [0.5, 0.01, 0.999])
@pytest.mark.parametrize("decimals", [None, 1])
def test_auc_and_roc_large_samples(prevalence, decimals):
    rng = np.random.default_rng(3)
    y = (rng.random(20_000) < prevalence).astype(int)
    s = rng.normal(size=y.size) + 0.7 * y
    s = s if decimals is None else np.round(s, decimals)
    assert stats.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, thr = stats.roc_curve(y, s)
    ref = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_array_equal(thr, ref[2])
    np.testing.assert_allclose(fpr, ref[0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(tpr, ref[1], rtol=0, atol=1e-15)


def test_auc_below_half_is_not_flipped():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([6.0, 5, 4, 3, 2, 1.5])
    assert stats.auc(y, s) == 0.0
    assert stats.auc(y, -s) == 1.0
    fpr, tpr, _ = stats.roc_curve(y, s)
    assert np.trapezoid(tpr, fpr) == 0.0


@PROPERTY
@given(binary_cases())
def test_auc_is_area_under_roc_curve(case):
    y, s = case
    fpr, tpr, _ = stats.roc_curve(y, s)
    assert stats.auc(y, s) == pytest.approx(np.trapezoid(tpr, fpr), abs=1e-12)


# --- multi-class AUC against scikit-learn ----------------------------------------------


@st.composite
def multiclass_cases(draw):
    """Probabilities on a coarse grid (many ties, rows summing to 1) for 3-5 classes."""
    n_classes = draw(st.integers(3, 5))
    n = draw(st.integers(n_classes, 60))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    y = np.r_[np.arange(n_classes), rng.integers(0, n_classes, n - n_classes)]
    logits = rng.normal(size=(n, n_classes)) + 1.5 * np.eye(n_classes)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    if draw(st.booleans()):
        proba = rng.multinomial(8, proba) / 8.0  # few distinct values, rows still sum to 1
    return y, proba


@PROPERTY
@given(multiclass_cases())
def test_multiclass_matches_sklearn(case):
    y, proba = case
    ovo = stats.multiclass_auc(y, proba, average="ovo")
    ovr = stats.multiclass_auc(y, proba, average="ovr")
    assert ovo.auc == pytest.approx(roc_auc_score(y, proba, multi_class="ovo"), abs=1e-12)
    assert ovr.auc == pytest.approx(
        roc_auc_score(y, proba, multi_class="ovr", average="macro"), abs=1e-12
    )
    per_class = roc_auc_score(y, proba, multi_class="ovr", average=None)
    np.testing.assert_allclose([ovr.one_vs_rest[k] for k in range(len(per_class))], per_class)


def test_multiclass_pairwise_values_are_hand_and_till_pairs():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 90)
    proba = rng.dirichlet(np.ones(3), size=90) + 0.3 * np.eye(3)[y]
    result = stats.multiclass_auc(y, proba)
    assert set(result.pairwise) == {(0, 1), (0, 2), (1, 2)}
    for (i, j), value in result.pairwise.items():
        both = np.isin(y, [i, j])
        a_ij = roc_auc_score(y[both] == i, proba[both, i])
        a_ji = roc_auc_score(y[both] == j, proba[both, j])
        assert value == pytest.approx((a_ij + a_ji) / 2, abs=1e-12)
    assert result.auc == pytest.approx(np.mean(list(result.pairwise.values())))


# --- DeLong against the O(n^2) definition ----------------------------------------------


@PROPERTY
@given(binary_cases(min_size=4, n_scores=2))
def test_delong_paired_matches_slow_definition(case):
    y, a, b = case
    if min((y == 1).sum(), (y == 0).sum()) < 2:
        return
    aucs, covariance = slow_delong(y, a, b)
    result = stats.delong_test(y, a, b)
    np.testing.assert_allclose([result.auc_a, result.auc_b], aucs, atol=1e-12)
    np.testing.assert_allclose(result.covariance, covariance, atol=1e-14)
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    if variance > 1e-12:
        z = (aucs[0] - aucs[1]) / np.sqrt(variance)
        assert result.z == pytest.approx(z, rel=1e-8, abs=1e-10)
        assert result.p_value == pytest.approx(2 * norm.sf(abs(z)), rel=1e-7, abs=1e-12)
    assert stats.delong_variance(y, a) == pytest.approx(covariance[0, 0], abs=1e-14)


@PROPERTY
@given(binary_cases(min_size=4), st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_delong_ci_matches_slow_definition(case, level):
    y, s = case
    if min((y == 1).sum(), (y == 0).sum()) < 2:
        return
    aucs, covariance = slow_delong(y, s)
    half = norm.ppf((1 + level) / 2) * np.sqrt(covariance[0, 0])
    value, lo, hi = stats.delong_ci(y, s, level)
    assert value == pytest.approx(aucs[0], abs=1e-12)
    assert lo == pytest.approx(max(0.0, aucs[0] - half), abs=1e-9)
    assert hi == pytest.approx(min(1.0, aucs[0] + half), abs=1e-9)


@PROPERTY
@given(binary_cases(min_size=4), binary_cases(min_size=4))
def test_delong_unpaired_matches_slow_definition(first, second):
    (y_a, a), (y_b, b) = first, second
    if min((y_a == 1).sum(), (y_a == 0).sum(), (y_b == 1).sum(), (y_b == 0).sum()) < 2:
        return
    (auc_a,), var_a = slow_delong(y_a, a)
    (auc_b,), var_b = slow_delong(y_b, b)
    result = stats.delong_test_unpaired(y_a, a, y_b, b)
    np.testing.assert_allclose(result.covariance, np.diag([var_a[0, 0], var_b[0, 0]]), atol=1e-14)
    if var_a[0, 0] + var_b[0, 0] > 1e-12:
        z = (auc_a - auc_b) / np.sqrt(var_a[0, 0] + var_b[0, 0])
        assert result.z == pytest.approx(z, rel=1e-8, abs=1e-10)


def test_delong_larger_sample_with_ties_matches_slow_definition():
    rng = np.random.default_rng(11)
    y = (rng.random(3000) < 0.2).astype(int)
    a = np.round(rng.normal(size=y.size) + y, 1)
    b = np.round(a + rng.normal(size=y.size), 1)
    aucs, covariance = slow_delong(y, a, b)
    result = stats.delong_test(y, a, b)
    np.testing.assert_allclose(result.covariance, covariance, rtol=1e-9)
    np.testing.assert_allclose([result.auc_a, result.auc_b], aucs, atol=1e-12)


# --- R's pROC example -------------------------------------------------------------------
# aSAH data of R's pROC package (Turck et al. 2010, Intensive Care Med 36:107), 113
# patients in the package's row order, read from pROC 1.18.0 (Debian r-cran-proc) with R.
# outcome: 1 = Poor (positive), 0 = Good; wfns: WFNS grade 1-5; s100b: S100B in ug/l.
ASAH_OUTCOME_POOR = (
    "00001101001011001011101000000000100110110000000001100010001010011101101111000110100000"
    "010000000000001111110001000"
)
ASAH_WFNS = (
    "11113254125255125225211112121134214541425511241125521251222151125214524414121421232421"
    "451154221113125225552445111"
)
ASAH_S100B = [
    0.13,
    0.14,
    0.10,
    0.04,
    0.13,
    0.10,
    0.47,
    0.16,
    0.18,
    0.10,
    0.12,
    0.10,
    0.44,
    0.71,
    0.04,
    0.08,
    0.49,
    0.04,
    0.07,
    0.33,
    0.09,
    0.09,
    0.07,
    0.11,
    0.07,
    0.17,
    0.07,
    0.11,
    0.13,
    0.19,
    0.05,
    0.16,
    0.41,
    0.14,
    0.34,
    0.35,
    0.48,
    0.09,
    0.96,
    0.25,
    0.50,
    0.46,
    0.16,
    0.07,
    0.43,
    0.45,
    0.11,
    0.08,
    0.09,
    0.86,
    0.52,
    0.08,
    0.06,
    0.13,
    2.07,
    0.10,
    0.14,
    0.15,
    0.07,
    0.06,
    0.77,
    0.05,
    0.09,
    0.30,
    0.03,
    0.09,
    0.04,
    0.23,
    0.70,
    0.09,
    0.27,
    0.71,
    0.08,
    0.26,
    0.08,
    0.16,
    0.09,
    0.13,
    0.10,
    0.08,
    0.11,
    0.33,
    0.11,
    0.28,
    0.07,
    0.10,
    0.32,
    0.22,
    0.07,
    0.05,
    0.24,
    0.38,
    0.10,
    0.15,
    0.08,
    0.14,
    0.10,
    0.07,
    0.04,
    0.19,
    0.56,
    0.14,
    0.58,
    0.32,
    0.82,
    0.74,
    0.15,
    0.47,
    0.17,
    0.44,
    0.15,
    0.50,
    0.48,
]


@pytest.fixture
def asah():
    y = np.array([int(c) for c in ASAH_OUTCOME_POOR])
    wfns = np.array([int(c) for c in ASAH_WFNS], dtype=float)
    s100b = np.array(ASAH_S100B)
    assert len(y) == len(wfns) == len(s100b) == 113 and y.sum() == 41
    return y, s100b, wfns


def test_asah_published_values(asah):
    # pROC documentation: roc.test(roc(aSAH$outcome, aSAH$s100b), roc(aSAH$outcome, aSAH$wfns))
    # "Z = -2.209, p-value = 0.02718 ... AUC of roc1 0.7313686, AUC of roc2 0.8236789".
    y, s100b, wfns = asah
    result = stats.delong_test(y, s100b, wfns)
    assert result.auc_a == pytest.approx(0.7313686, abs=5e-8)
    assert result.auc_b == pytest.approx(0.8236789, abs=5e-8)
    assert round(result.z, 3) == -2.209
    assert round(result.p_value, 5) == 0.02718


def test_asah_full_precision_against_proc(asah):
    # Printed with options(digits = 15) by pROC 1.18.0: var(), cov(), roc.test(),
    # ci.auc(method = "delong"), and the D statistic of roc.test(paired = FALSE).
    y, s100b, wfns = asah
    result = stats.delong_test(y, s100b, wfns)
    np.testing.assert_allclose(
        result.covariance,
        [[0.00266868245717244, 0.00119615567376754], [0.00119615567376754, 0.00146991470882363]],
        rtol=1e-12,
    )
    assert result.z == pytest.approx(-2.20898359144091, rel=1e-12)
    assert result.p_value == pytest.approx(0.0271757822291882, rel=1e-10)
    assert stats.delong_ci(y, s100b)[1:] == pytest.approx(
        (0.630118211762, 0.83261891561), abs=1e-11
    )
    assert stats.delong_ci(y, wfns)[1:] == pytest.approx(
        (0.748534887819, 0.898822835758), abs=1e-11
    )
    unpaired = stats.delong_test_unpaired(y, s100b, y, wfns)
    assert unpaired.z == pytest.approx(-1.43490640926908, rel=1e-12)


# --- operating points against brute force -----------------------------------------------


def brute_force_points(y, s):
    """(threshold, sensitivity, specificity) for +inf and every observed score, by counting."""
    points = []
    for t in np.r_[np.inf, np.unique(s)]:
        called = s >= t
        points.append((t, called[y == 1].mean(), (~called[y == 0]).mean()))
    return points


# positions in (threshold, sensitivity, specificity): (rate that must reach the target,
# rate to maximize)
OPERATING_POINT_RULES = {
    "specificity_at_sensitivity": (1, 2),
    "sensitivity_at_specificity": (2, 1),
}


@pytest.mark.parametrize("name", OPERATING_POINT_RULES)
@PROPERTY
@given(case=binary_cases(), target=st.floats(0, 1))
def test_operating_point_is_the_best_point_reaching_the_target(name, case, target):
    constrained, maximized = OPERATING_POINT_RULES[name]
    y, s = case
    points = brute_force_points(y, s)
    best = max(p[maximized] for p in points if p[constrained] >= target)
    point = getattr(stats, name)(y, s, target)
    assert point[constrained] >= target
    assert point[maximized] == pytest.approx(best, abs=1e-15)
    # the returned rates are those of the returned threshold
    at_threshold = next(p for p in points if p[0] == point.threshold)
    assert point == pytest.approx(at_threshold, abs=1e-15)


def test_specificity_at_the_papers_sensitivity_is_exact_at_869_of_1000():
    # 1000 positives scored 1..1000 and 1000 negatives scored 0.5..999.5: sensitivity
    # 869/1000 is reached at threshold 132 exactly, where 868 negatives score below.
    y = np.r_[np.ones(1000, int), np.zeros(1000, int)]
    s = np.r_[np.arange(1, 1001), np.arange(1000) + 0.5].astype(float)
    point = stats.specificity_at_sensitivity(y, s, 0.869)
    assert point == (132.0, 0.869, 0.132)
    assert stats.sensitivity_at_specificity(y, s, 0.132) == (132.0, 0.869, 0.132)
