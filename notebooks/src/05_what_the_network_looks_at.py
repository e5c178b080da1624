# Source of notebooks/05_what_the_network_looks_at.ipynb and its solution (python notebooks/build.py writes both).

# %% [markdown]
# # 5. What the network looks at
#
# The paper ends: "we are not yet able to clearly visualize and clinically interpret what the
# identified nuanced imaging features are". A synthetic cohort knows where every lesion is, so here
# we can do more than look: we can *measure* whether the network's attention falls on the lesions.
# This notebook
#
# 1. trains a tiny AlexNet to tell malignant from negative images (as notebook 4, at 99 x 99);
# 2. computes **Grad-CAM** (Selvaraju et al. 2017) by hand, from conv5's activations and the
#    gradient of the malignant logit, and compares it with `pipeline.explain.grad_cam`;
# 3. plays the **pointing game** (Zhang et al. 2016): is the map's maximum on the lesion, more often
#    than chance?
# 4. runs the **randomization sanity check** (Adebayo et al. 2018): a map that does not change when
#    the network's weights are scrambled shows the image, not what the network learned.
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
import warnings
import matplotlib.pyplot as plt
from matplotlib_inline.backend_inline import set_matplotlib_formats
import numpy as np
from alexnet_np import SGD, AlexNet, Dropout, to_network_input
from scipy.stats import spearmanr

import data_prep
import stats
# pipeline.explain's progress bars (tqdm.auto) would warn once that Jupyter widgets are not installed
warnings.filterwarnings("ignore", message="IProgress not found")
from pipeline.explain import (cascading_randomization, draw_overlay, finding_mask, grad_cam,
                              pointing_game, to_image)
from pipeline.scenarios import balance, get_scenario
from pipeline.train import predict, train

plt.rcParams.update({"figure.dpi": 80, "axes.titlesize": 10, "axes.labelsize": 9})
set_matplotlib_formats("jpeg", pil_kwargs={"quality": 90})   # mostly mammograms: JPEG is half PNG's size
rng = np.random.default_rng(0)
TMP = tempfile.TemporaryDirectory(prefix="notebook05_")   # removed when the kernel stops
WORK = Path(TMP.name)

# %% [markdown]
# ## 1. A cohort and a tiny trained network
#
# As in notebook 4: synthetic FFDM patients with easy-to-see lesions, a patient-level split, the
# scenario "malignant vs negative" balanced on each side, a miniature Caffe AlexNet trained from
# scratch with Caffe's SGD. The input is 99 x 99 here, so that conv5's maps are 5 x 5 rather than
# 3 x 3.

# %%
SIZE = 99
manifest = data_prep.synthesize("ffdm", 200, seed=0, out_dir=WORK / "cohort", image_size=(256, 208),
                                difficulty=0.05, finding_scale=3.0, workers=2, progress=False)
built = data_prep.build_dataset(manifest, WORK / "cohort.h5", size=SIZE, workers=2, progress=False)
dataset = data_prep.load_dataset(built)
images, labels, patients = dataset["images"], dataset["labels"], dataset["patient_id"]
train_side, test_side = data_prep.holdout_split(patients, labels, test_fraction=0.3, seed=0)
scenario = get_scenario("malignant-vs-negative")
train_idx, train_y = balance(scenario, labels, train_side, np.random.default_rng(0))
test_idx, test_y = balance(scenario, labels, test_side, np.random.default_rng(1))

mean, scale = data_prep.compute_mean(images, train_idx), 1 / 256
net = AlexNet(2, variant="caffe", input_size=SIZE, widths=(24, 48, 64, 64, 48, 64, 64), init="he", seed=0)
opt = SGD(net, base_lr=0.003, momentum=0.9, weight_decay=5e-4, stepsize=10_000, warmup=10)
train(net, opt, images, train_idx, train_y, iters=400, batch_size=16, seed=0, mean=mean, scale=scale,
      checkpoint_path=WORK / "model.h5", log_path=WORK / "log.csv", progress=False, flip=True, shift=2)
scores = predict(net, images, test_idx, mean, scale)[:, 1]
print(f"{len(train_idx)} training images, {len(test_idx)} test images; test AUC {stats.auc(test_y, scores):.3f}")

# %% [markdown]
# The test AUC (notebook 4 explains it) says the network separates the classes well above chance
# (0.5). Whether it does so *by looking at the lesions* is the question of this notebook.
#
# The ground truth: `findings.csv` beside the manifest lists every finding in the pixels of the
# image as read (the generator's, or a public set's annotations written by its adapter); the build
# carries each into the stored 99 x 99 image with `data_prep.to_stored_coords` (notebook 3) and
# keeps it in the dataset file. `data_prep.load_findings` gives, per image, its
# `data_prep.StoredFinding` records: where the finding is in stored pixels, its role (the class it
# makes) and a `.mask(size, tolerance)` of the pixels it covers.

# %%
truth = data_prep.load_findings(built)


def stored_findings(i, role):
    """Image i's findings of one role ("malignant", "recalled_benign", "incidental"), in stored pixels;
    None when it has none."""
    return [f for f in truth[i] if f.role == role] or None


malignant = test_idx[test_y == 1]
lesions = [stored_findings(i, "malignant") for i in malignant]
incidental = [stored_findings(i, "incidental") for i in malignant]
print(f"{len(malignant)} malignant test images, {sum(f is not None for f in lesions)} with a malignant finding "
      f"in findings.csv, {sum(f is not None for f in incidental)} with incidental findings too")

# %% [markdown]
# ## 2. Grad-CAM by hand
#
# Take conv5's output after its ReLU, $A$ (48 channels of 5 x 5 here), and the gradient of the
# malignant class's logit $y$ (before the softmax) with respect to it, $g = \partial y / \partial A$.
# Grad-CAM weighs each channel by its mean gradient and keeps the positive part of the sum:
#
# $$\alpha_k = \frac{1}{hw}\sum_{i,j} g_{kij}, \qquad \mathrm{map} = \mathrm{ReLU}\Big(\sum_k \alpha_k A_k\Big).$$
#
# The gradient is one backward pass, from a "loss" that is the logit itself: we run the layers
# forward one by one (keeping what the backward needs, dropout off as at test time), then backward
# from fc8 down to relu5, starting from `dlogits` = 1 for the malignant class and 0 for the other.

# %%
x = to_network_input(images[malignant], mean, scale)
names = [name for name, _ in net.layers]
a = x
for name, layer in net.layers:
    a = layer.forward(a, train=not isinstance(layer, Dropout))   # train=True keeps caches; dropout stays off
    if name == "relu5":
        A = a.copy()                                              # (N, 48, 5, 5)
logits = a
d = np.zeros_like(logits)
d[:, 1] = 1.0                                                     # d(malignant logit) / d(logits)
for name, layer in reversed(net.layers[names.index("relu5") + 1:]):
    d = layer.backward(d)
g = d                                                             # d(malignant logit) / dA, (N, 48, 5, 5)

alpha = g.mean(axis=(2, 3))                                       # (N, 48)
cam_by_hand = np.maximum(np.einsum("nk,nkij->nij", alpha, A), 0)  # (N, 5, 5)
cam = grad_cam(net, x, target=1, layer="conv5")
print(f"A {A.shape}, g {g.shape}, maps {cam.shape}")
print(f"Grad-CAM by hand vs pipeline.explain.grad_cam: max |difference| = {np.abs(cam_by_hand - cam).max():.1e} "
      f"(map values up to {cam.max():.2f})")

# %% [markdown]
# The two agree (exactly here: the same operations on the same numbers). A 5 x 5 map is coarse: `pipeline.explain.to_image` upsamples it
# to the stored image (bilinear, pixel centres aligned), and `draw_overlay` draws it over the image
# with the findings (red: the malignant lesion, yellow: incidental findings such as lymph nodes).

# %%
maps = to_image(cam, (SIZE, SIZE))
show = [k for k, f in enumerate(lesions) if f is not None][:5]
fig, axes = plt.subplots(2, len(show), figsize=(2.5 * len(show) + 1, 5.8), layout="constrained")
for col, k in enumerate(show):
    i = malignant[k]
    axes[0, col].imshow(images[i], cmap="gray", vmin=0, vmax=255)
    axes[0, col].set_title(f"patient {patients[i][-3:]}, {dataset['laterality'][i]} {dataset['view'][i]}\n"
                           f"P(malignant) {scores[list(test_idx).index(i)]:.2f}", fontsize=9)
    axes[0, col].set_axis_off()
    draw_overlay(axes[1, col], images[i], maps[k], findings=lesions[k], incidental=incidental[k] or [])
    axes[1, col].set_title("Grad-CAM at conv5", fontsize=9)
fig.colorbar(plt.cm.ScalarMappable(cmap="jet"), ax=axes[1], shrink=0.8, label="map / its own maximum")
fig.suptitle("Malignant test images (top) and Grad-CAM of the malignant logit (bottom);\n"
             "red ellipse: the lesion, yellow: incidental findings", fontsize=10)
plt.show()

# %% [markdown]
# Each heat map is scaled to its own maximum (red = the map's largest values). Looking is not
# measuring, though: the eye finds lesions under the red spots it wants to find.
#
# ## 3. The pointing game
#
# A **hit**: the map's maximum lies inside the lesion, widened by a tolerance of 15 pixels of the
# original image (Zhang et al. used 15). The **chance level** is the share of the breast that the
# widened lesion covers: a map pointing at a random breast pixel hits that often. With $n$ images,
# the number of hits of a map that knows nothing is binomial, so a one-sided binomial test says how
# surprising the observed hits are. `pointing_game` also reports the **energy share**: the part of
# the map's total mass inside the lesion.

# %%
breast = images[malignant] > 0                     # preprocessing set everything outside the breast to 0
result = pointing_game(maps, lesions, breast, tolerance_px=15)
hits_by_hand = [bool(finding_mask(f, SIZE, 15).flat[np.argmax(m)]) for m, f in zip(maps, lesions) if f is not None]
print(f"pointing game: {result.hits} hits of {result.n_images} images (by hand: {sum(hits_by_hand)}), "
      f"hit rate {result.hit_rate:.2f}")
print(f"chance level {result.chance:.2f}, one-sided binomial p = {result.p_value:.2g}; "
      f"energy share inside the lesion {result.energy_share:.2f}")

noise = rng.random(maps.shape)                      # a map that knows nothing
control = pointing_game(noise, lesions, breast, tolerance_px=15)
print(f"random maps: {control.hits} hits of {control.n_images} (hit rate {control.hit_rate:.2f}), "
      f"energy share {control.energy_share:.2f}, p = {control.p_value:.2g}")

# %% [markdown]
# How to read it: the lesion (widened by the tolerance) covers the share of the breast printed as
# the chance level, so random maps hit about that often and spread about that share of their mass
# on it, and their $p$ is unremarkable. The trained network's maps hit more often than that, with a
# small $p$: its evidence for "malignant" sits on the lesions much more often than chance would put
# it there. On a 99-pixel toy with 5 x 5 maps the hit rate is not perfect; the misses are worth
# looking at (often an incidental finding, or the breast's edge).
#
# ## 4. The randomization sanity check
#
# Adebayo et al. (2018) showed that some popular saliency maps hardly change when the network's
# weights are replaced by random ones: they show edges of the image, not what the network learned.
# The check: re-initialize fc8, then fc8 and fc7, and so on down to conv1, and after each step
# measure how similar the maps stay (mean Spearman rank correlation with the trained network's maps,
# image by image). A map worth trusting loses the similarity. `cascading_randomization` does this
# and restores the trained weights; we also do it by hand, with the same random draws, using SciPy's
# Spearman correlation.

# %%
curve = cascading_randomization(net, x, target=1, method="gradcam", seed=0)

saved = {k: v.copy() for k, v in net.params.items()}
draws = np.random.default_rng(0)                  # the same stream as cascading_randomization(seed=0)
by_hand, randomized_maps = [], {}
for name in reversed(net.param_layers):
    net.reinitialize(name, draws)
    m = to_image(grad_cam(net, x, target=1, layer="conv5"), (SIZE, SIZE))
    randomized_maps[name] = m
    rho = [spearmanr(a_.ravel(), b_.ravel())[0] if a_.std() > 0 and b_.std() > 0 else 0.0
           for a_, b_ in zip(maps, m)]
    by_hand.append(float(np.mean(rho)))
for k, v in saved.items():
    net.params[k][...] = v
print("layers randomized (cumulative):", curve.layers)
print("mean Spearman correlation, pipeline:", np.round(curve.correlation, 3).tolist())
print("mean Spearman correlation, by hand: ", np.round(by_hand, 3).tolist())
print(f"passes (correlation below 0.5 once every layer is random): {curve.passes}")
print(f"trained weights restored: test AUC {stats.auc(test_y, predict(net, images, test_idx, mean, scale)[:, 1]):.3f}")

# %%
fig = plt.figure(figsize=(13, 4.2))
ax = fig.add_subplot(1, 2, 1)
ax.plot(range(len(curve.layers) + 1), [1.0] + curve.correlation, "o-", label="pipeline.explain")
ax.plot(range(1, len(by_hand) + 1), by_hand, "x--", label="by hand (scipy.stats.spearmanr)")
ax.axhline(0.5, color="C3", ls=":", label="pass line: below 0.5 at the end")
ax.set_xticks(range(len(curve.layers) + 1), ["none"] + [n if n == "fc8" else f"+{n}" for n in curve.layers], fontsize=8)
ax.set(title="Cascading randomization of Grad-CAM", xlabel="layers re-initialized, cumulatively from fc8 down",
       ylabel="mean rank correlation with\nthe trained network's map", ylim=(-0.3, 1.05))
ax.legend(fontsize=8)
k = show[0]
for j, (title, m) in enumerate([("trained", maps[k]), ("fc8-fc6 random", randomized_maps["fc6"]),
                                ("all layers random", randomized_maps["conv1"])]):
    sub = fig.add_subplot(1, 6, 4 + j)
    heat = m if title == "trained" else m[k]
    draw_overlay(sub, images[malignant[k]], heat, findings=lesions[k])
    sub.set_title(f"{title}\n(patient {patients[malignant[k]][-3:]})", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# The pipeline's curve and ours coincide (same random weights, same correlation); "none" is the
# trained network compared with itself (correlation 1). As soon as fc8 is re-initialized the
# correlation collapses: Grad-CAM's channel weights are the gradient of the malignant logit, and fc8
# defines that logit. The later steps move it up and down (each draws fresh random weights, and a
# mean over a few dozen images is noisy), but it stays far from 1 and ends below 0.5 with every
# layer random: these maps depend on what the network learned, so the pointing game above measured
# the network, not the image. (Right: one image's map before and after randomization.)
#
# ## Exercises
#
# Replace each stub, then run the check below it. Solutions:
# `notebooks/solutions/05_what_the_network_looks_at.ipynb`.
#
# **Exercise 1: Grad-CAM at conv2.** Deeper layers see more context, earlier ones finer detail.
# Write `grad_cam_relu2(net, x)`: Grad-CAM of the malignant logit (class 1) at relu2's output
# (11 x 11 here), by hand as in section 2: forward through all layers (dropout off), backward from
# fc8 to relu2, then the weighted sum.

# %% exercise
def grad_cam_relu2(net, x):
    """Grad-CAM maps (N, h, w) of class 1 at relu2's output."""
    # >>> student
    raise NotImplementedError("Exercise 1: write grad_cam_relu2")
    # >>> solution
    names = [name for name, _ in net.layers]
    a, kept = x, None
    for name, layer in net.layers:
        a = layer.forward(a, train=not isinstance(layer, Dropout))
        if name == "relu2":
            kept = a.copy()
    d = np.zeros_like(a)
    d[:, 1] = 1.0
    for name, layer in reversed(net.layers[names.index("relu2") + 1:]):
        d = layer.backward(d)
    return np.maximum(np.einsum("nk,nkij->nij", d.mean(axis=(2, 3)), kept), 0)
    # <<<

# %% check
got = grad_cam_relu2(net, x)
expected = grad_cam(net, x, target=1, layer="conv2")
assert got is not None and got.shape == expected.shape, f"shape {getattr(got, 'shape', None)}, expected {expected.shape}"
assert np.abs(got - expected).max() <= 1e-4 * max(expected.max(), 1e-12), f"max difference {np.abs(got - expected).max():.1e}"
print(f"maps of {got.shape[1]} x {got.shape[2]}. Exercise 1 passed")

# %% [markdown]
# **Exercise 2: one round of the pointing game.** Write `is_hit(heat, inside)`: True when the
# heat map's maximum (the first one, `np.argmax`) lies in the boolean mask `inside`, and False for a
# map that is zero everywhere (it points nowhere).

# %% exercise
def is_hit(heat, inside):
    """heat (S, S) non-negative, inside (S, S) bool -> whether the map's maximum is inside."""
    # >>> student
    raise NotImplementedError("Exercise 2: write is_hit")
    # >>> solution
    return bool(heat.sum() > 0 and inside.flat[int(np.argmax(heat))])
    # <<<

# %% check
for m, f, b in zip(maps, lesions, breast):
    if f is None:
        continue
    expected = pointing_game(m[None], [f], b[None], tolerance_px=15).hits == 1
    assert is_hit(m, finding_mask(f, SIZE, 15)) == expected
assert is_hit(np.zeros((SIZE, SIZE)), np.ones((SIZE, SIZE), bool)) is False, "a zero map points nowhere"
print("Exercise 2 passed")

# %% [markdown]
# **Exercise 3: the chance level.** Write `chance_level(inside, breast)`: the share of breast pixels
# that lie inside the (widened) finding, the hit rate of a map pointing at a random breast pixel.
# The pointing game's `chance` is the mean of this over the images.

# %% exercise
def chance_level(inside, breast):
    """Share of the breast's pixels inside the finding's mask."""
    # >>> student
    raise NotImplementedError("Exercise 3: write chance_level")
    # >>> solution
    return float((inside & breast).sum()) / max(1, int(breast.sum()))
    # <<<

# %% check
levels = [chance_level(finding_mask(f, SIZE, 15), b) for f, b in zip(lesions, breast) if f is not None]
assert abs(np.mean(levels) - result.chance) < 1e-12, (np.mean(levels), result.chance)
print(f"chance levels per image from {min(levels):.2f} to {max(levels):.2f}, mean {np.mean(levels):.2f}. Exercise 3 passed")
