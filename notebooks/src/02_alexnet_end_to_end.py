# Source of notebooks/02_alexnet_end_to_end.ipynb and its solution (python notebooks/build.py writes both).

# %% [markdown]
# # 2. AlexNet end to end
#
# The paper fine-tuned Caffe's `bvlc_alexnet`: "five convolutional layers (includes max-pooling in
# the 1st, 2nd, and 5th convolutional layers) followed by two fully connected layers and a fully
# connected output layer with a final softmax function", trained by stochastic gradient descent
# with "a batch size of 50 ..., a weight decay of 0.001, and a momentum of 0.9". This notebook
#
# 1. walks through the network's shapes layer by layer, and runs one forward and backward pass;
# 2. compares our forward pass, loss and every gradient with a reference written by PyTorch
#    (`tests/data/torch_reference.h5`, committed in the repository);
# 3. computes Caffe's SGD update by hand, where the learning rate sits *inside* the momentum;
# 4. explains the first loss of a fresh network: ln(C), and what He initialization and dropout do to it.
#
# Notebook 1 took the layers apart; here they are put together. Run time on 2 CPU cores:
# `notebooks/README.md` lists the measured times.

# %% [markdown]
# ## Setup
#
# The kernel starts in the notebook's folder; the repository root (the first folder upwards holding
# `alexnet_np/`) goes on `sys.path`, so that the project imports without being installed.

# %%
import sys
import time
from pathlib import Path

ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "alexnet_np").is_dir())
sys.path.insert(0, str(ROOT))

import alexnet_np  # first: it sets OpenBLAS's thread behaviour before NumPy loads
import h5py
import matplotlib.pyplot as plt
import numpy as np
from alexnet_np import SGD, AlexNet, Conv2d, Linear, SoftmaxCrossEntropy, backend, ops, to_network_input
from alexnet_np.gradcheck import rel_error
from IPython.display import Markdown, display

plt.rcParams.update({"figure.dpi": 80, "axes.titlesize": 10, "axes.labelsize": 9})
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The Caffe network, layer by layer
#
# `AlexNet(num_classes, variant="caffe")` builds `bvlc_alexnet` as its prototxt specifies it. The
# paper's tasks are binary (e.g. malignant vs negative), so `num_classes=2`. We push one 227 x 227
# image through the layers one at a time, which is all that `AlexNet.forward` does, and record each
# output's shape, the layer's parameters and its multiply-adds.

# %%
net = AlexNet(2, variant="caffe", seed=0)
x = rng.standard_normal((1, 3, 227, 227)).astype(np.float32)

rows, a = [], x
start = time.perf_counter()
for name, layer in net.layers:
    a_in = a
    a = layer.forward(a, train=True)
    params = sum(p.size for p in layer.params.values())
    if isinstance(layer, Conv2d):
        macs = a.shape[1] * (layer.in_ch // layer.groups) * layer.kernel ** 2 * a.shape[2] * a.shape[3]
    elif isinstance(layer, Linear):
        macs = layer.in_features * layer.out_features
    else:
        macs = 0
    rows.append((name, repr(layer), " x ".join(map(str, a.shape[1:])), params, macs))
forward_s = time.perf_counter() - start

table = ["| layer | what | output (C x H x W) | parameters | multiply-adds |", "|---|---|---|---:|---:|"]
table += [f"| {n} | `{r}` | {s} | {p:,} | {m:,} |" for n, r, s, p, m in rows]
table.append(f"| **total** | | | **{sum(r[3] for r in rows):,}** | **{sum(r[4] for r in rows):,}** |")
display(Markdown("\n".join(table)))
conv_share = sum(r[4] for r in rows if r[0].startswith("conv")) / sum(r[4] for r in rows)
print(f"share of the multiply-adds in the five convolutions: {conv_share:.0%}")

# %% [markdown]
# How to read it:
#
# * **conv1** (96 filters of 11 x 11, stride 4, no padding) turns 227 x 227 into
#   (227 - 11) / 4 + 1 = 55 x 55. Each LRN keeps the shape; each 3 x 3, stride-2 max pooling
#   roughly halves it, rounding up as Caffe does: 55 -> 27 -> 13 -> 6.
# * **conv2, conv4, conv5** have `groups=2`: each filter sees half of the input channels
#   (conv2's weights are 256 x 48 x 5 x 5, not 256 x 96 x 5 x 5), which halves their parameters.
# * **fc6** takes pool5's 256 x 6 x 6 = 9,216 numbers; with 4,096 outputs it alone holds 37.7
#   million of the network's 56.9 million parameters, while the five convolutions do 92% of the
#   0.72 billion multiply-adds per image (printed under the table).
# * **drop6, drop7** (dropout 0.5) only act during training; **fc8** gives the 2 logits, which the
#   softmax (inside the loss) turns into probabilities.
#
# One backward pass from a loss completes the training step's arithmetic:

# %%
labels = np.array([1])
loss, dlogits = SoftmaxCrossEntropy()(a, labels)
start = time.perf_counter()
net.backward(dlogits)
backward_s = time.perf_counter() - start
print(f"loss {float(loss):.4f} for one image of class 1; forward {forward_s:.2f} s, backward {backward_s:.2f} s")
print(f"{len(net.grads)} gradient arrays, e.g. conv1.weight {net.grads['conv1.weight'].shape}, "
      f"fc8.bias {net.grads['fc8.bias'].shape}")
print("implementations that ran:", backend.kernels_used().summary().replace("\n", "; "))

# %% [markdown]
# The loss of this untrained network is ln 2 = 0.693 (section 4 explains why). There is one gradient
# array per parameter array: 8 layers with a weight and a bias each. The last line names what
# actually computed each primitive (notebook 1 compared them): the fast CPU twins, Winograd for the
# 3 x 3 convolutions conv3 to conv5, im2col + GEMM for the others. The timings are this machine's,
# for one image; a batch of 50 costs far less than 50 times as much per image.
#
# ## 2. Against PyTorch, tensor by tensor
#
# How do we know the whole network is right, not only each layer? `bench/torch_reference.py` builds
# the same network in PyTorch, runs it on a fixed batch with fixed weights and dropout masks, and
# stores inputs, weights, masks, logits, loss, every gradient and four SGD losses in
# `tests/data/torch_reference.h5` (float64, miniature widths so the file stays small). We load it
# into our network and compare. `tests/test_torch_reference.py` asserts the same thing; here we look.

# %%
REFERENCE = ROOT / "tests" / "data" / "torch_reference.h5"
with h5py.File(REFERENCE, "r") as f:
    print("cases:", list(f), "| written by", f.attrs["written_by"], "with torch", f.attrs["torch"])
    g = f["caffe_227"]
    ref = {key: g[key][()] for key in ("x", "labels", "logits", "loss", "sgd_losses")}
    for group in ("masks", "params", "grads"):
        ref[group] = {k: v[()] for k, v in g[group].items()}
    widths = tuple(int(v) for v in g.attrs["widths"])
    sgd_settings = {k[4:]: f.attrs[k].item() for k in f.attrs if k.startswith("sgd_")}
    num_classes, dropout, steps = int(f.attrs["num_classes"]), float(f.attrs["dropout"]), int(f.attrs["steps"])
print(f"caffe_227: input {ref['x'].shape}, widths {widths}, {num_classes} classes, labels {ref['labels']}")


def reference_network():
    """The file's network in alexnet_np: its weights, and dropout by its fixed masks."""
    model = AlexNet(num_classes, variant="caffe", dropout=dropout, widths=widths, dtype=np.float64)
    for key, value in ref["params"].items():
        model.params[key][...] = value
    for name in ("drop6", "drop7"):
        model.layer(name).fixed_mask = ref["masks"][name]
    return model


model = reference_network()
logits = model.forward(ref["x"], train=True)
loss, dlogits = SoftmaxCrossEntropy()(logits, ref["labels"])
model.backward(dlogits)
compared = {"logits": (logits, ref["logits"]), "loss": (loss, ref["loss"])}
compared.update({f"d {k}": (model.grads[k], ref["grads"][k]) for k in ref["grads"]})
for what, (ours, theirs) in compared.items():
    diff = np.abs(np.asarray(ours) - theirs).max()
    print(f"{what:18s} max |ours - torch| = {diff:.1e}   (max |torch| = {np.abs(theirs).max():.1e})")

# %%
differences = {what: rel_error(ours, theirs) for what, (ours, theirs) in compared.items()}
fig, ax = plt.subplots(figsize=(9, 3.4))
ax.bar(range(len(differences)), [max(v, 1e-18) for v in differences.values()], color="C0")
ax.axhline(np.finfo(np.float64).eps / 2, color="C3", ls="--", label="float64 unit roundoff (1.1e-16)")
ax.axhline(1e-10, color="C2", ls=":", label="tests/test_torch_reference.py's tolerance (1e-10)")
ax.set_yscale("log")
ax.set_ylim(1e-18, 1e-8)
ax.set_xticks(range(len(differences)), list(differences), rotation=60, ha="right", fontsize=8)
ax.set(title="alexnet_np vs PyTorch on the caffe_227 case (miniature widths, float64)",
       ylabel="max |ours - torch| / max |torch|")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# Every tensor agrees to within a few units of float64 rounding (1e-16 relative), far below any
# mistake (a wrong LRN constant, a floor-mode pooling or a transposed weight would show up at 1e-3
# or more). The logits, the loss and the 16 gradients (a weight and a bias for each of the 8 layers)
# come from code that shares nothing with PyTorch except the definition of AlexNet.
#
# ## 3. Caffe's SGD: the learning rate inside the momentum
#
# Caffe's solver (`sgd_solver.cpp`), which the paper used, updates each parameter W with gradient g as
#
# $$V \leftarrow \mu V + \mathrm{lr}\cdot\mathrm{lr\_mult}\,(g + \lambda\cdot\mathrm{decay\_mult}\, W),
#   \qquad W \leftarrow W - V$$
#
# with momentum $\mu = 0.9$, weight decay $\lambda = 0.001$, and, as in `bvlc_alexnet`,
# `lr_mult, decay_mult` = 1, 1 for weights and 2, 0 for biases (biases learn twice as fast and are
# not decayed). The learning rate follows Caffe's "step" policy,
# $\mathrm{lr} = \mathrm{base\_lr}\cdot\gamma^{\lfloor t / \mathrm{stepsize} \rfloor}$ (the paper:
# 0.001, divided by 10 every 2,500 iterations). We take two steps with `alexnet_np.SGD` and
# with the formula written out, from the same gradients, with the lr dropping after the first step.

# %%
model = reference_network()
model.backward(SoftmaxCrossEntropy()(model.forward(ref["x"], train=True), ref["labels"])[1])
grads = {k: g.copy() for k, g in model.grads.items()}
settings = dict(base_lr=0.001, momentum=0.9, weight_decay=0.001, gamma=0.1, stepsize=1)
opt = SGD(model, **settings)

by_hand = {k: p.copy() for k, p in model.params.items()}
velocity = {k: np.zeros_like(p) for k, p in by_hand.items()}
for t in range(2):
    lr = settings["base_lr"] * settings["gamma"] ** (t // settings["stepsize"])
    for k, w in by_hand.items():
        lr_mult, decay_mult = (1.0, 1.0) if k.endswith(".weight") else (2.0, 0.0)
        velocity[k] = settings["momentum"] * velocity[k] + lr * lr_mult * (grads[k] + settings["weight_decay"] * decay_mult * w)
        by_hand[k] = w - velocity[k]
    print(f"step {t}: lr {lr:g} (alexnet_np.SGD's lr before the step: {opt.lr:g})")
    opt.step()                     # uses model.grads, which we left unchanged
worst = max(rel_error(model.params[k], by_hand[k]) for k in by_hand)
print(f"after 2 steps, largest difference between SGD and the formula, over all 16 arrays: {worst:.1e}")

# %% [markdown]
# The two agree (here exactly: the same operations in the same order). Why does it matter *where* the learning rate sits? PyTorch's
# `torch.optim.SGD` keeps it outside: $V \leftarrow \mu V + g$, $W \leftarrow W - \mathrm{lr}\, V$.
# With a constant lr the two are the same algorithm (Caffe's V is lr times PyTorch's). When the lr
# *drops*, they differ: PyTorch's very next step is 10 times smaller, while Caffe's velocity still
# holds the steps taken at the old rate and shrinks only as fast as the momentum forgets them
# ($0.9^t$). A one-parameter example with a constant gradient g = 1 shows the step sizes:

# %%
def step_sizes(rule, iterations=60, drop_at=30, base_lr=0.1, momentum=0.9):
    v, sizes = 0.0, []
    for t in range(iterations):
        lr = base_lr * (0.1 if t >= drop_at else 1.0)
        if rule == "caffe":
            v = momentum * v + lr * 1.0
            sizes.append(v)
        else:
            v = momentum * v + 1.0
            sizes.append(lr * v)
    return np.array(sizes)


fig, ax = plt.subplots(figsize=(7.5, 4))
ax.plot(step_sizes("caffe"), label="Caffe / alexnet_np: V = mu V + lr g;  W -= V")
ax.plot(step_sizes("pytorch"), ls="--", label="PyTorch: V = mu V + g;  W -= lr V")
ax.axvline(30, color="gray", lw=0.8)
ax.text(30.5, 0.5, "lr / 10 from here", fontsize=8)
ax.set(title="Step size with a constant gradient g = 1 (momentum 0.9, lr 0.1, then 0.01)",
       xlabel="iteration", ylabel="|W change| per step")
ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
plt.tight_layout()
plt.show()

# %% [markdown]
# Both climb to lr / (1 - momentum) = 1.0 (momentum adds up ten steps' worth). At the drop, PyTorch's
# step falls to 0.1 at once; Caffe's decays there over about 20 iterations. A reimplementation that
# used PyTorch's rule with the paper's settings would train differently around each lr drop.
#
# Finally, the reference file also holds the losses of four training steps of Caffe's SGD on its batch
# (lr dividing by 10 every 2 steps). Our optimizer reproduces them:

# %%
model = reference_network()
opt = SGD(model, **sgd_settings)
lossf = SoftmaxCrossEntropy()
ours = []
for _ in range(steps):
    loss, d = lossf(model.forward(ref["x"], train=True), ref["labels"])
    ours.append(float(loss))
    model.backward(d)
    opt.step()
print("SGD settings from the file:", sgd_settings)
print("losses, alexnet_np:", np.round(ours, 10))
print("losses, PyTorch:   ", np.round(ref["sgd_losses"], 10))
print(f"largest difference: {np.abs(np.array(ours) - ref['sgd_losses']).max():.1e}")

# %% [markdown]
# ## 4. The first loss: ln(C), and what He initialization and dropout do to it
#
# The loss is the mean cross-entropy $-\log p_y$ with $p = \mathrm{softmax}(z)$. If all $C$ logits
# of an image are equal, $p_y = 1/C$ and the loss is exactly $\ln C$ (0.693 for two classes, 1.099
# for three). Caffe's initialization (Gaussian weights of standard deviation 0.01, 0.005 in fc6/fc7)
# shrinks every signal on its way through eight layers, so the logits of a fresh network are tiny and
# nearly equal: its first loss is $\ln C$ whatever the labels. That is a useful check of a new
# training run: a first loss far from $\ln C$ with the Caffe initialization means a bug.
#
# **He initialization** (standard deviation $\sqrt{2/\text{fan-in}}$, for training from scratch)
# is built to keep the size of the activations constant through ReLU layers, so the logits come out
# about as large as the input: of order 1 or more. The softmax is then far from uniform and the first
# loss is *above* $\ln C$ on average (a confident wrong guess costs more than a confident right one
# saves). **Dropout** at training time zeroes half of the fc6 and fc7 activations and doubles the
# others: the mean is kept, but the variance of what reaches fc8 grows, the logits spread further
# and the loss rises again. At test time there is no dropout.
#
# We measure it: a miniature AlexNet (the same layers, narrower, on 99 x 99 inputs, so that eight
# initializations take seconds) on a batch of 32 random smooth images in 0..255 with random labels,
# the mean subtracted as in training; eight seeds for each setting.

# %%
from scipy.ndimage import gaussian_filter

size, mini = 99, (16, 32, 48, 48, 32, 64, 64)
gray = np.clip(128 + 480 * gaussian_filter(rng.standard_normal((32, size, size)), (0, 3, 3)), 0, 255)
labels = rng.integers(0, 2, 32)
first = {}
for init, scale in [("caffe", 1.0), ("he", 1 / 64)]:
    xin = to_network_input(gray, gray.mean(), scale)   # He init expects inputs of unit size
    for train in (False, True):
        losses, spread = [], []
        for seed in range(8):
            m = AlexNet(2, variant="caffe", init=init, seed=seed, input_size=size, widths=mini)
            z = m.forward(xin, train=train)
            losses.append(float(lossf(z, labels)[0]))
            spread.append(float(np.std(z[:, 1] - z[:, 0])))
        key = f"{init} init\n{'train (dropout)' if train else 'test (no dropout)'}"
        first[key] = losses
        print(f"{key.replace(chr(10), ', '):35s} first loss {np.mean(losses):.4f} +- {np.std(losses):.4f}, "
              f"typical |z1 - z0| {np.mean(spread):.3g}")

# %%
fig, ax = plt.subplots(figsize=(7.5, 3.6))
for i, (key, losses) in enumerate(first.items()):
    ax.scatter(np.full(len(losses), i) + rng.uniform(-0.08, 0.08, len(losses)), losses, s=18, color=f"C{i}")
ax.axhline(np.log(2), color="k", ls="--", lw=1, label="ln 2 = 0.693 (all logits equal)")
ax.set_yscale("log")
ax.set_xticks(range(len(first)), list(first), fontsize=8)
ax.set(title="First loss of a fresh miniature AlexNet, 2 classes (one dot per seed)",
       ylabel="mean cross-entropy on 32 images (log scale)")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# Reading the numbers: with the Caffe initialization the first loss is 0.693 = ln 2 to three
# decimals, with or without dropout, because the logit difference $z_1 - z_0$ is tiny: of order
# 1e-7 at test time, 0.01 with dropout's noise (the "typical |z1 - z0|" column). With
# He initialization the logit differences are of order 1 to 10; the first loss is several times
# ln 2, varies with the seed, and dropout raises it further. The pipeline's divergence rule
# (`pipeline.train.EXPLODED_LOSS`, 1000 ln C) leaves room for such starts; the optimizer's warm-up
# option exists because these large first logits make the first full-size steps violent.
#
# ## Exercises
#
# Replace each stub, then run the check below it. Solutions: `notebooks/solutions/02_alexnet_end_to_end.ipynb`.
#
# **Exercise 1: one Caffe SGD step.** Write `caffe_sgd_step(w, g, v, lr, momentum, weight_decay,
# lr_mult, decay_mult)` returning the new `(w, v)` without changing its inputs.

# %% exercise
def caffe_sgd_step(w, g, v, lr, momentum, weight_decay, lr_mult, decay_mult):
    """One step of Caffe's SGD for one parameter array; returns (new w, new v)."""
    # >>> student
    raise NotImplementedError("Exercise 1: write caffe_sgd_step")
    # >>> solution
    v = momentum * v + lr * lr_mult * (g + weight_decay * decay_mult * w)
    return w - v, v
    # <<<

# %% check
for lr_mult, decay_mult in [(1.0, 1.0), (2.0, 0.0)]:
    w, v = rng.standard_normal(50), np.zeros(50)
    w_ref, v_ref = w.copy(), v.copy()
    for t in range(3):
        g = rng.standard_normal(50)
        w, v = caffe_sgd_step(w, g, v, 0.01, 0.9, 0.001, lr_mult, decay_mult)
        ops.sgd_update(w_ref, g, v_ref, 0.01 * lr_mult, 0.9, 0.001 * decay_mult)   # in place
    assert rel_error(w, w_ref) < 1e-14 and rel_error(v, v_ref) < 1e-14, "w or v differs from ops.sgd_update"
print("Exercise 1 passed")

# %% [markdown]
# **Exercise 2: the trunk's sizes.** Write `trunk_sizes(s)` returning the spatial size (rows = columns)
# after conv1, pool1, conv2, pool2, conv3, conv4, conv5 and pool5 of the Caffe network for a
# `s x s` input, as a list of 8 integers. Use the formulas (convolution: floor; Caffe's pooling:
# ceil), not the project's functions. For 227 it is `[55, 27, 27, 13, 13, 13, 13, 6]`.

# %% exercise
def trunk_sizes(s):
    """Spatial size after conv1, pool1, conv2, pool2, conv3, conv4, conv5, pool5 of bvlc_alexnet."""
    # >>> student
    raise NotImplementedError("Exercise 2: write trunk_sizes")
    # >>> solution
    import math

    def conv(n, k, stride, pad):
        return (n + 2 * pad - k) // stride + 1

    def pool(n):
        return math.ceil((n - 3) / 2) + 1

    sizes = [conv(s, 11, 4, 0)]
    sizes.append(pool(sizes[-1]))
    sizes.append(conv(sizes[-1], 5, 1, 2))
    sizes.append(pool(sizes[-1]))
    sizes += [sizes[-1]] * 3                    # conv3-5: 3 x 3, padding 1, stride 1
    sizes.append(pool(sizes[-1]))
    return sizes
    # <<<

# %% check
for s in (227, 119, 99, 67):
    net_s = AlexNet(2, input_size=s, widths=(2,) * 7)
    shape, expected = (3, s, s), []
    for name, layer in net_s.layers:
        if name in ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"):
            shape = layer.output_shape(*shape)
            expected.append(shape[1])
    assert list(trunk_sizes(s)) == expected, f"input {s}: got {trunk_sizes(s)}, expected {expected}"
print("Exercise 2 passed")

# %% [markdown]
# **Exercise 3: count the parameters.** Write `alexnet_parameters(num_classes, input_size)`: the
# number of weights and biases of the full-width Caffe AlexNet (widths 96, 256, 384, 384, 256, 4096,
# 4096), from the layer sizes alone. Remember the groups of conv2, conv4 and conv5, and that fc6's
# input is pool5's output (you may use `trunk_sizes`). For 2 classes at 227 x 227 it is 56,876,418.

# %% exercise
def alexnet_parameters(num_classes, input_size):
    """Number of parameters (weights + biases) of AlexNet(num_classes, "caffe", input_size)."""
    # >>> student
    raise NotImplementedError("Exercise 3: write alexnet_parameters")
    # >>> solution
    def conv(c_in, c_out, k, groups=1):
        return c_out * (c_in // groups) * k * k + c_out

    def fc(n_in, n_out):
        return n_in * n_out + n_out

    pool5 = trunk_sizes(input_size)[-1]
    return (conv(3, 96, 11) + conv(96, 256, 5, 2) + conv(256, 384, 3) + conv(384, 384, 3, 2)
            + conv(384, 256, 3, 2) + fc(256 * pool5 ** 2, 4096) + fc(4096, 4096) + fc(4096, num_classes))
    # <<<

# %% check
assert alexnet_parameters(2, 227) == sum(p.size for p in net.params.values()), alexnet_parameters(2, 227)
assert alexnet_parameters(3, 227) == 56_876_418 + 4097, "one more class adds fc8's 4096 weights + 1 bias"
assert alexnet_parameters(2, 99) == 56_876_418 - 256 * (36 - 4) * 4096, "at 99 x 99, pool5 is 2 x 2"
print("Exercise 3 passed")
