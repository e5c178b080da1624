"""Benchmark of the stats package, each timing next to a straightforward
implementation measured in the same run:

  * paired DeLong test, n = 100,000      (target: under 30 ms)
    vs. the usual midrank code (three scipy rankdata calls per score + np.cov),
    and, at n = 5,000, vs. the O(n^2) kernel definition;
  * 2,000-replicate stratified bootstrap CI, n = 438, the paper's largest test set
    (target: under 30 ms) vs. a per-replicate loop over sklearn.metrics.roc_auc_score;
  * for information: BCa, patient-grouped bootstrap, bootstrap test, large-n bootstrap.

Fixed seeds; medians (and minima) of several repeats.  Not a test: nothing fails.

    python bench/bench_stats.py [--repeats 15]
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy
from scipy.stats import norm, rankdata

# Running as a script puts bench/ first on sys.path; the package lives one level up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import stats  # noqa: E402

TARGET_MS = 30.0


def timed(function, repeats):
    """(median, min) wall time in ms over ``repeats`` calls, after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times)), 1e3 * float(np.min(times))


def binormal(n, n_pos, seed, shift=1.0):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.r_[np.ones(n_pos, int), np.zeros(n - n_pos, int)])
    a = rng.normal(size=n) + shift * y
    b = 0.7 * a + rng.normal(size=n) * 0.7 + 0.2 * y
    return y, a, b


def rankdata_delong(y, score_a, score_b):
    """Straightforward Sun & Xu DeLong: rankdata on all, positives and negatives, per score."""
    pos, neg = y == 1, y == 0
    n_pos, n_neg = pos.sum(), neg.sum()
    v10, v01 = [], []
    for s in (score_a, score_b):
        ranks = rankdata(s)
        v10.append((ranks[pos] - rankdata(s[pos])) / n_neg)
        v01.append(1.0 - (ranks[neg] - rankdata(s[neg])) / n_pos)
    aucs = np.array([v.mean() for v in v10])
    cov = np.cov(v10) / n_pos + np.cov(v01) / n_neg
    z = (aucs[0] - aucs[1]) / np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    return aucs, z, 2 * norm.sf(abs(z))


def kernel_delong(y, score_a, score_b):
    """DeLong from the definition: the n1 x n0 kernel psi(X_i, Y_j) of each score."""
    pos, neg = y == 1, y == 0
    v10, v01 = [], []
    for s in (score_a, score_b):
        diff = s[pos][:, None] - s[neg][None, :]
        psi = (diff > 0) + 0.5 * (diff == 0)
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    cov = np.cov(v10) / pos.sum() + np.cov(v01) / neg.sum()
    z = (v10[0].mean() - v10[1].mean()) / np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    return z


def sklearn_bootstrap_loop(y, score, n_boot, seed):
    """Stratified percentile bootstrap CI, one roc_auc_score call per replicate."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    replicates = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        replicates[b] = roc_auc_score(y[idx], score[idx])
    return np.quantile(replicates, [0.025, 0.975])


def environment():
    lines = [
        f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}",
        f"machine: {platform.machine()} {platform.processor() or ''}".rstrip(),
        f"cpu_count {os.cpu_count()}, usable cores {len(os.sched_getaffinity(0))}",
    ]
    for name in (
        "OPENBLAS_CORETYPE",
        "OPENBLAS_L2_SIZE",
        "OPENBLAS_NUM_THREADS",
        "OMP_NUM_THREADS",
    ):
        lines.append(f"{name}={os.environ.get(name, '(unset)')}")
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            lines.append(
                f"threadpool: {pool.get('internal_api')} {pool.get('version')} "
                f"({pool.get('architecture', '?')}), {pool.get('num_threads')} threads"
            )
    except ImportError:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        lines.append(f"BLAS (numpy build): {blas.get('name')} {blas.get('version')}")
    return lines


def report(name, ours, reference=None, reference_name=None, target=None):
    line = f"{name:<46} {ours[0]:9.2f} ms (min {ours[1]:.2f})"
    if target is not None:
        line += f"   target < {target:.0f} ms: {'met' if ours[0] < target else 'NOT met'}"
    print(line)
    if reference is not None:
        print(
            f"{'  vs ' + reference_name:<46} {reference[0]:9.2f} ms (min {reference[1]:.2f})"
            f"   ratio {reference[0] / ours[0]:.1f}x"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="repeats of each fast timing")
    args = parser.parse_args()
    repeats, slow_repeats = args.repeats, max(3, args.repeats // 5)
    print("\n".join(environment()))
    print()

    y, a, b = binormal(100_000, 30_000, seed=1)
    ours_result, theirs_result = stats.delong_test(y, a, b), rankdata_delong(y, a, b)
    assert np.isclose(ours_result.z, theirs_result[1])
    report(
        "paired DeLong test, n=100,000",
        timed(lambda: stats.delong_test(y, a, b), repeats),
        timed(lambda: rankdata_delong(y, a, b), repeats),
        "rankdata-based DeLong (3 rankdata/score)",
        TARGET_MS,
    )
    y5, a5, b5 = binormal(5_000, 1_500, seed=2)
    assert np.isclose(stats.delong_test(y5, a5, b5).z, kernel_delong(y5, a5, b5))
    report(
        "paired DeLong test, n=5,000",
        timed(lambda: stats.delong_test(y5, a5, b5), repeats),
        timed(lambda: kernel_delong(y5, a5, b5), slow_repeats),
        "O(n^2) kernel DeLong",
    )

    y438, a438, b438 = binormal(438, 219, seed=3)
    try:
        loop = timed(lambda: sklearn_bootstrap_loop(y438, a438, 2000, 0), slow_repeats)
    except ImportError:
        loop = None
        print("(scikit-learn is not installed: the per-replicate loop is skipped)")
    report(
        "bootstrap CI, 2000 stratified replicates, n=438",
        timed(lambda: stats.bootstrap_ci(y438, a438), repeats),
        loop,
        "loop over sklearn roc_auc_score",
        TARGET_MS,
    )
    patients = np.repeat(np.arange(110), 4)[:438]
    report(
        "  same, method='bca'", timed(lambda: stats.bootstrap_ci(y438, a438, method="bca"), repeats)
    )
    report(
        "  same, groups = 110 patients",
        timed(lambda: stats.bootstrap_ci(y438, a438, groups=patients), repeats),
    )
    report(
        "bootstrap_test, 2000 replicates, n=438",
        timed(lambda: stats.bootstrap_test(y438, a438, b438), repeats),
    )
    y_big, a_big, _ = binormal(20_000, 6_000, seed=4)
    report(
        "bootstrap CI, 2000 replicates, n=20,000",
        timed(lambda: stats.bootstrap_ci(y_big, a_big), slow_repeats),
    )


if __name__ == "__main__":
    main()
