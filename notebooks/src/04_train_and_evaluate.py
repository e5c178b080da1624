# Source of notebooks/04_train_and_evaluate.ipynb and its solution (python notebooks/build.py writes both).

# %% [markdown]
# # 4. Train and evaluate
#
# The paper reports every result as an area under the ROC curve (AUC) with a 95% bootstrap
# confidence interval, compares AUCs with DeLong's test, and quotes "a specificity of 87%" at "the
# radiologists' overall sensitivity 86.9%". This notebook trains a tiny AlexNet on a tiny synthetic
# cohort (so that it runs in seconds on a laptop) and then computes all of those numbers twice: by
# hand, from their definitions, and with the project's `stats` package.
#
# 1. a synthetic cohort, a patient-level split, the scenario "malignant vs negative", balanced;
# 2. training with the paper's SGD (in miniature) and the loss curve;
# 3. the ROC curve and the AUC as the Mann-Whitney statistic;
# 4. DeLong's variance from its structural components;
# 5. bootstrap intervals over images and over patients, and why the second is wider;
# 6. a paired comparison of two models on the same test images;
# 7. the specificity at 86.9% sensitivity.
#
# Most of the run time goes to generating the cohort and training; `notebooks/README.md` lists the
# measured times on 2 CPU cores.

# %% [markdown]
# ## Setup
#
# The kernel starts in the notebook's folder; the repository root (the first folder upwards holding
# `alexnet_np/`) goes on `sys.path`, so that the project imports without being installed.

# %%
import sys
import tempfile
from pathlib import Path

ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "alexnet_np").is_dir())
sys.path.insert(0, str(ROOT))

import alexnet_np  # first: it sets OpenBLAS's thread behaviour before NumPy loads
import matplotlib.pyplot as plt
import numpy as np
from alexnet_np import SGD, AlexNet

import data_prep
import stats
from pipeline.scenarios import balance, get_scenario, scenario_labels
from pipeline.train import predict, train

plt.rcParams.update({"figure.dpi": 80, "axes.titlesize": 10, "axes.labelsize": 9})
rng = np.random.default_rng(0)
TMP = tempfile.TemporaryDirectory(prefix="notebook04_")   # removed when the kernel stops
WORK = Path(TMP.name)

# %% [markdown]
# ## 1. Cohort, split, scenario
#
# 240 synthetic FFDM patients (notebook 3 shows how they are made), with lesions made easy to see
# (`difficulty=0.05` multiplies their contrast by 20, `finding_scale=3` draws them 3 times larger),
# because our network will see the breast at 67 x 67 pixels instead of the paper's 227 x 227, and
# train for seconds instead of hours. 30% of the *patients* (not of the images) go to the test side,
# stratified by class (`data_prep.holdout_split`, notebook 3).

# %%
manifest = data_prep.synthesize("ffdm", 240, seed=0, out_dir=WORK / "cohort", image_size=(256, 208),
                                difficulty=0.05, finding_scale=3.0, workers=2, progress=False)
dataset = data_prep.load_dataset(data_prep.build_dataset(manifest, WORK / "cohort.h5", size=67,
                                                         workers=2, progress=False))
images, labels, patients = dataset["images"], dataset["labels"], dataset["patient_id"]
train_side, test_side = data_prep.holdout_split(patients, labels, test_fraction=0.3, seed=0)
data_prep.check_no_patient_leakage(patients, train_side, test_side)
print(f"{len(images)} images of {len(set(patients))} patients, {images.shape[1]} x {images.shape[2]} pixels; "
      f"per class (negative, recalled-benign, malignant): {np.bincount(labels).tolist()}")
print(f"split: {len(train_side)} training images, {len(test_side)} test images; no patient on both sides")

# %% [markdown]
# The paper's scenarios (Table 1) each pick two groups of labels; "malignant vs negative" leaves
# the recalled-benign images out. Each side is then **balanced**: the same number of images per
# class (the paper lists equal "images per category"), drawn at random.

# %%
scenario = get_scenario("malignant-vs-negative")
print(f"scenario {scenario.name}: network class 0 = {scenario.class_names[0]}, class 1 = {scenario.class_names[1]}")
train_idx, train_y = balance(scenario, labels, train_side, np.random.default_rng(0))
test_idx, test_y = balance(scenario, labels, test_side, np.random.default_rng(1))
test_patients = patients[test_idx]
print(f"training: {len(train_idx)} images ({np.bincount(train_y).tolist()} per class); "
      f"test: {len(test_idx)} images ({np.bincount(test_y).tolist()} per class) of {len(set(test_patients))} patients")
one_of_each = [int(np.flatnonzero(labels == k)[0]) for k in range(3)]
print("dataset labels 0, 1, 2 (negative, recalled-benign, malignant) -> network classes",
      scenario_labels(scenario, labels[one_of_each]).tolist(), "(-1: not used in this scenario)")

# %% [markdown]
# ## 2. Train a tiny AlexNet
#
# The same Caffe AlexNet as the paper's, in miniature: widths 24, 48, 64, 64, 48 for conv1-conv5 and
# 64 for fc6/fc7 (instead of 96 ... 4096), 67 x 67 inputs. Trained from scratch, so with He
# initialization and inputs scaled to unit size (gray level minus the training mean, divided by
# 256), Caffe's SGD with momentum 0.9, a learning rate of 0.003 with a 10-iteration warm-up, batches
# of 16, up-down flips and shifts of up to 2 pixels as augmentation, 400 iterations.
# `pipeline.train.train` is the function the study itself uses (prefetching, checkpoints, resume).
# We stop at iteration 100 once, score the test images, and resume to 400: the two models give the
# paired comparison of section 6.

# %%
mean = data_prep.compute_mean(images, train_idx)     # the training images' mean, as the paper's "mean subtracting"
scale = 1 / 256
net = AlexNet(2, variant="caffe", input_size=67, widths=(24, 48, 64, 64, 48, 64, 64), init="he", seed=0)
opt = SGD(net, base_lr=0.003, momentum=0.9, weight_decay=5e-4, stepsize=10_000, warmup=10)
common = dict(batch_size=16, seed=0, mean=mean, scale=scale, checkpoint_path=WORK / "model.h5",
              log_path=WORK / "log.csv", progress=False, flip=True, shift=2)
log = train(net, opt, images, train_idx, train_y, iters=100, **common)
early = predict(net, images, test_idx, mean, scale)[:, 1]
log = train(net, opt, images, train_idx, train_y, iters=400, resume=True, **common)
scores = predict(net, images, test_idx, mean, scale)[:, 1]
print(f"{len(log)} iterations logged; the last one took {float(log[-1]['images_per_s']):.0f} images/s")
print("test scores P(malignant), first 6:", np.round(scores[:6], 3), "true classes:", test_y[:6])

# %%
loss = np.array([float(r["loss"]) for r in log])
accuracy = np.array([float(r["accuracy"]) for r in log])
smooth = np.convolve(loss, np.ones(25) / 25, mode="valid")
fig, (a0, a1) = plt.subplots(1, 2, figsize=(12, 3.6))
a0.plot(loss, color="C0", alpha=0.35, lw=0.8, label="minibatch loss")
a0.plot(np.arange(24, len(loss)), smooth, color="C0", label="mean of 25")
a0.axhline(np.log(2), color="k", ls="--", lw=1, label="ln 2 (a guess)")
a0.axvline(100, color="C3", lw=0.8, label="iteration 100 (early model)")
a0.set(title="Training loss", xlabel="iteration", ylabel="mean cross-entropy of the batch", ylim=(0, 2))
a0.legend(fontsize=8)
a1.plot(np.arange(24, len(loss)), np.convolve(accuracy, np.ones(25) / 25, mode="valid"), color="C1")
a1.axhline(0.5, color="k", ls="--", lw=1, label="chance (balanced classes)")
a1.set(title="Training accuracy (mean of 25 batches of 16)", xlabel="iteration", ylabel="share of the batch right", ylim=(0.3, 1))
a1.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# The first batches cost more than ln 2, the He-initialized network's confident guessing (notebook 2,
# section 4); after the warm-up the loss sits near ln 2 while the network finds the lesions, then
# falls. The minibatch losses are noisy because each batch holds 16 images.
#
# ## 3. ROC curve and AUC, by hand
#
# A score $s$ and a threshold $t$ call an image positive when $s \ge t$. Sweeping $t$ over the
# observed scores from high to low traces the ROC curve: sensitivity (true-positive rate) against
# 1 - specificity (false-positive rate),
#
# $$\mathrm{TPR}(t) = \frac{\#\{\text{positives with } s \ge t\}}{n_1}, \qquad
#   \mathrm{FPR}(t) = \frac{\#\{\text{negatives with } s \ge t\}}{n_0}.$$
#
# The area under it equals the **Mann-Whitney statistic**: the probability that a random positive
# scores higher than a random negative, ties counting one half,
# $A = \frac{1}{n_1 n_0}\sum_i\sum_j \psi(s_i, s_j)$, $\psi = 1, \tfrac12, 0$ for $>, =, <$.

# %%
def roc_by_hand(y, s):
    thresholds = np.concatenate([[np.inf], np.sort(np.unique(s))[::-1]])
    tpr = np.array([(s[y == 1] >= t).mean() for t in thresholds])
    fpr = np.array([(s[y == 0] >= t).mean() for t in thresholds])
    return fpr, tpr, thresholds


def psi(pos, neg):
    """(n1, n0) matrix: 1 where the positive out-scores the negative, 1/2 for a tie, else 0."""
    return (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])


fpr, tpr, thr = roc_by_hand(test_y, scores)
fpr_s, tpr_s, thr_s = stats.roc_curve(test_y, scores)
pos, neg = scores[test_y == 1], scores[test_y == 0]
auc_pairs = psi(pos, neg).mean()
auc_trapezoid = np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)
print(f"ROC points by hand vs stats.roc_curve: {len(fpr)} vs {len(fpr_s)} points, "
      f"identical: {np.array_equal(fpr, fpr_s) and np.array_equal(tpr, tpr_s)}")
print(f"AUC: Mann-Whitney by hand {auc_pairs:.6f}, trapezoids by hand {auc_trapezoid:.6f}, "
      f"stats.auc {stats.auc(test_y, scores):.6f}")
print(f"early model (iteration 100): AUC {stats.auc(test_y, early):.3f}")

# %% [markdown]
# ## 4. DeLong's variance, from its structural components
#
# DeLong et al. (1988) estimate the variance of an AUC without resampling. Each positive $i$ gets
# the share of negatives it out-scores, $V_{10}(i) = \frac{1}{n_0}\sum_j \psi(s_i, s_j)$; each
# negative $j$ the share of positives that out-score it, $V_{01}(j) = \frac{1}{n_1}\sum_i
# \psi(s_i, s_j)$. Both average to the AUC, and
#
# $$\widehat{\mathrm{Var}}(A) = \frac{S_{10}}{n_1} + \frac{S_{01}}{n_0}, \qquad
#   S_{10} = \frac{1}{n_1 - 1}\sum_i (V_{10}(i) - A)^2, \quad
#   S_{01} = \frac{1}{n_0 - 1}\sum_j (V_{01}(j) - A)^2.$$

# %%
matrix = psi(pos, neg)
v10, v01 = matrix.mean(axis=1), matrix.mean(axis=0)
var_by_hand = v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)
auc_, lo, hi = stats.delong_ci(test_y, scores)
print(f"mean of V10 {v10.mean():.6f}, mean of V01 {v01.mean():.6f} (both = the AUC)")
print(f"DeLong variance by hand {var_by_hand:.4e}, stats.delong_variance {stats.delong_variance(test_y, scores):.4e}")
print(f"AUC {auc_:.3f}, DeLong 95% CI {lo:.3f} to {hi:.3f} (AUC -+ 1.96 standard errors, clipped to [0, 1])")

# %%
fig, (a0, a1) = plt.subplots(1, 2, figsize=(12, 4))
a0.step(fpr, tpr, where="post", color="C0", label=f"iteration 400, AUC {stats.auc(test_y, scores):.3f}")
fe, te_, _ = stats.roc_curve(test_y, early)
a0.step(fe, te_, where="post", color="C1", ls="--", label=f"iteration 100, AUC {stats.auc(test_y, early):.3f}")
op = stats.specificity_at_sensitivity(test_y, scores, 0.869)
a0.plot(1 - op.specificity, op.sensitivity, "o", color="C3",
        label=f"sensitivity >= 86.9%: specificity {op.specificity:.2f}")
a0.plot([0, 1], [0, 1], color="gray", lw=0.8, ls=":", label="chance")
a0.set(title="ROC curves on the test images", xlabel="1 - specificity (false-positive rate)",
       ylabel="sensitivity (true-positive rate)", aspect="equal")
a0.legend(fontsize=8, loc="lower right")
a1.hist(v10, bins=20, range=(0, 1), alpha=0.7, label=f"V10: {len(v10)} malignant images")
a1.hist(v01, bins=20, range=(0, 1), alpha=0.7, label=f"V01: {len(v01)} negative images")
a1.axvline(auc_, color="k", ls="--", lw=1, label="AUC (the mean of each)")
a1.set(title="DeLong's structural components", xlabel="share of the other class out-scored / out-scoring",
       ylabel="images")
a1.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# Left: the ROC curves, with the operating point of section 7. Right: most malignant images
# out-score nearly all negatives ($V_{10}$ near 1) and most negatives are out-scored by nearly all
# malignant images ($V_{01}$ near 1); the spread of the components is what the variance measures.
#
# ## 5. Bootstrap: over images, or over patients?
#
# The bootstrap redraws the test set with replacement many times (here 2,000), recomputes the AUC,
# and takes the 2.5th and 97.5th percentiles of the replicates as the 95% interval. The question is
# *what* to redraw. Our test images come in groups: up to two views of each breast, from the same
# patient. They are not independent, so redrawing single images pretends we have more independent
# evidence than we do. `stats.bootstrap_ci(..., groups=patient_ids)` redraws whole patients.

# %%
_, lo_i, hi_i = stats.bootstrap_ci(test_y, scores, n_boot=2000, seed=0)
_, lo_p, hi_p = stats.bootstrap_ci(test_y, scores, n_boot=2000, seed=0, groups=test_patients)
print(f"{len(test_y)} test images from {len(set(test_patients))} patients")
print(f"bootstrap over images:   {lo_i:.3f} to {hi_i:.3f} (width {hi_i - lo_i:.3f})")
print(f"bootstrap over patients: {lo_p:.3f} to {hi_p:.3f} (width {hi_p - lo_p:.3f})")

# %% [markdown]
# Whether the patient bootstrap comes out wider on one small test set depends on how alike a
# patient's images score. To see the effect itself, we simulate a setting where we know the truth:
# 60 patients with 4 images each, half malignant; each image's score is the class effect plus a
# **patient effect** shared by the patient's images plus image noise. Drawing 300 fresh cohorts
# gives the true spread of the AUC; on one cohort we compute both bootstrap intervals.

# %%
def simulated_cohort(seed, patients_=60, per_patient=4, shared=1.0, own=0.7):
    r = np.random.default_rng(seed)
    y = np.repeat(r.permutation(np.arange(patients_) % 2), per_patient)
    ids = np.repeat(np.arange(patients_), per_patient)
    s = 1.0 * y + shared * np.repeat(r.standard_normal(patients_), per_patient) + own * r.standard_normal(len(y))
    return y, s, ids


true_aucs = [stats.auc(*simulated_cohort(seed)[:2]) for seed in range(1, 301)]
true_lo, true_hi = np.percentile(true_aucs, [2.5, 97.5])
y_sim, s_sim, ids_sim = simulated_cohort(0)
a_sim, lo_si, hi_si = stats.bootstrap_ci(y_sim, s_sim, n_boot=2000, seed=0)
_, lo_sp, hi_sp = stats.bootstrap_ci(y_sim, s_sim, n_boot=2000, seed=0, groups=ids_sim)
print(f"true spread over 300 cohorts (2.5-97.5%): width {true_hi - true_lo:.3f}")
print(f"one cohort, AUC {a_sim:.3f}: image bootstrap width {hi_si - lo_si:.3f}, patient bootstrap width {hi_sp - lo_sp:.3f}")

# %%
fig, ax = plt.subplots(figsize=(8, 3))
rows = [("true spread of the AUC\n(300 simulated cohorts)", true_lo, true_hi, np.mean(true_aucs), "k"),
        ("bootstrap over images\n(one cohort)", lo_si, hi_si, a_sim, "C0"),
        ("bootstrap over patients\n(one cohort)", lo_sp, hi_sp, a_sim, "C3")]
for k, (label, lo_, hi_, centre, color) in enumerate(rows):
    ax.plot([lo_, hi_], [k, k], color=color, lw=4)
    ax.plot(centre, k, "o", color="white", mec=color)
    ax.text(hi_ + 0.005, k, f"width {hi_ - lo_:.3f}", va="center", fontsize=8)
ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
ax.set(title="95% intervals for the AUC: 60 patients x 4 correlated images", xlabel="AUC", xlim=(0.55, 1.0))
ax.invert_yaxis()
plt.tight_layout()
plt.show()

# %% [markdown]
# The image bootstrap is too narrow: it treats 240 images as 240 independent cases, while the
# evidence is closer to 60 patients' worth. The patient bootstrap, which redraws whole patients, is
# about as wide as the true spread. That is why the pipeline bootstraps over patients whenever the
# test images carry patient ids.
#
# ## 6. A paired comparison
#
# Is the model after 400 iterations better than after 100? Both scored the **same** test images, so
# the two AUCs are correlated, and a paired test uses that: DeLong's paired test (what the paper
# used, two-sided) works from the covariance of the two models' structural components; the paired
# bootstrap redraws the same patients for both models and looks at the spread of the difference.

# %%
delong = stats.delong_test(test_y, scores, early)
boot = stats.bootstrap_test(test_y, scores, early, n_boot=2000, seed=0, groups=test_patients)
print(f"AUC after 400 iterations {delong.auc_a:.3f}, after 100 iterations {delong.auc_b:.3f}, "
      f"difference {delong.auc_a - delong.auc_b:+.3f}")
print(f"DeLong paired test:               z = {delong.z:.2f}, two-sided p = {delong.p_value:.2g}")
print(f"paired bootstrap over patients:   z = {boot.z:.2f}, two-sided p = {boot.p_value:.2g}")

# %% [markdown]
# $z$ is the AUC difference divided by its standard error (from DeLong's covariance, or from the
# 2,000 bootstrap differences); $p$ is the probability of a $|z|$ at least this large if the two
# models were equally good. A small $p$ says the longer training really helped on this test set.
#
# ## 7. Specificity at the radiologists' sensitivity
#
# The paper: "Using previously reported radiologists' overall sensitivity 86.9% as a reference
# threshold, our best deep learning model for classifying malignant versus negative yields a
# specificity of 87%". `stats.specificity_at_sensitivity` takes, among the ROC points whose
# sensitivity reaches the target, the one with the highest specificity (no interpolation between
# points, so the sensitivity reached may exceed 86.9%).

# %%
op = stats.specificity_at_sensitivity(test_y, scores, 0.869)
print(f"threshold {op.threshold:.3f}: sensitivity {op.sensitivity:.3f} "
      f"({round(op.sensitivity * (test_y == 1).sum())} of {(test_y == 1).sum()} malignant images), "
      f"specificity {op.specificity:.3f} ({round(op.specificity * (test_y == 0).sum())} of {(test_y == 0).sum()} negatives)")

# %% [markdown]
# Calling every image with $P(\text{malignant}) \ge$ the printed threshold positive finds at least
# 86.9% of the malignant test images; the specificity is the share of negatives it leaves alone.
# These numbers describe a 67-pixel toy on synthetic data, not the paper's result; what carries over
# is the arithmetic.
#
# ## Exercises
#
# Replace each stub, then run the check below it. Solutions: `notebooks/solutions/04_train_and_evaluate.ipynb`.
#
# **Exercise 1: specificity at a sensitivity, by hand.** Write `spec_at_sens(y, s, target)`
# returning the best specificity among the thresholds (the distinct scores) whose sensitivity
# ($s \ge t$ counts as positive) is at least `target`.

# %% exercise
def spec_at_sens(y, s, target):
    """Best specificity among thresholds t in s whose sensitivity (share of positives with s >= t) >= target."""
    # >>> student
    raise NotImplementedError("Exercise 1: write spec_at_sens")
    # >>> solution
    best = 0.0
    for t in np.unique(s):
        if (s[y == 1] >= t).mean() >= target:
            best = max(best, (s[y == 0] < t).mean())
    return best
    # <<<

# %% check
cases = [(test_y, scores), (test_y, early)] + [(rng.integers(0, 2, 80), rng.integers(0, 6, 80).astype(float)) for _ in range(3)]
for target in (0.5, 0.869, 0.95):
    for y_, s_ in cases:
        expected = stats.specificity_at_sensitivity(y_, s_, target).specificity
        assert abs(spec_at_sens(y_, s_, target) - expected) < 1e-12, (target, spec_at_sens(y_, s_, target), expected)
print("Exercise 1 passed")

# %% [markdown]
# **Exercise 2: DeLong's variance shrinks like 1/n.** Write `delong_slope()`: for test sets of
# n = 50, 100, 200, 400 and 800 cases (half positive; positives' scores from N(1, 1), negatives'
# from N(0, 1)), average `stats.delong_variance` over 20 random test sets of each size, and return
# the slope of log(variance) against log(n) (`np.polyfit`). It should be close to -1.

# %% exercise
def delong_slope(seed=0):
    """Slope of log(mean DeLong variance) against log(n) for binormal test sets."""
    # >>> student
    raise NotImplementedError("Exercise 2: write delong_slope")
    # >>> solution
    r = np.random.default_rng(seed)
    sizes = [50, 100, 200, 400, 800]
    variances = []
    for n in sizes:
        y = np.repeat([0, 1], n // 2)
        variances.append(np.mean([stats.delong_variance(y, r.standard_normal(n) + y) for _ in range(20)]))
    return np.polyfit(np.log(sizes), np.log(variances), 1)[0]
    # <<<

# %% check
slope = delong_slope()
assert slope is not None and -1.15 < slope < -0.85, f"slope {slope}"
print(f"slope {slope:.3f}: the variance falls like 1/n, the standard error like 1/sqrt(n). Exercise 2 passed")

# %% [markdown]
# **Exercise 3: the AUC from ranks.** Rank all scores together (ties get the mean of their ranks,
# `scipy.stats.rankdata`); with $R_1$ the sum of the positives' ranks,
# $A = \big(R_1 - n_1(n_1+1)/2\big) / (n_1 n_0)$. Write `auc_from_ranks(y, s)`: it costs
# $O(n \log n)$ where the pairs cost $O(n_1 n_0)$, the trick behind `stats`' fast DeLong.

# %% exercise
from scipy.stats import rankdata


def auc_from_ranks(y, s):
    """The AUC (ties counting 1/2) from the midranks of the scores."""
    # >>> student
    raise NotImplementedError("Exercise 3: write auc_from_ranks")
    # >>> solution
    ranks = rankdata(s)
    n1, n0 = int((y == 1).sum()), int((y == 0).sum())
    return (ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    # <<<

# %% check
for y_, s_ in cases:
    assert abs(auc_from_ranks(y_, s_) - stats.auc(y_, s_)) < 1e-12, (auc_from_ranks(y_, s_), stats.auc(y_, s_))
print("Exercise 3 passed")
