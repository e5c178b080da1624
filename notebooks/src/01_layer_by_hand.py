# Source of notebooks/01_layer_by_hand.ipynb and its solution (python notebooks/build.py writes both).

# %% [markdown]
# # 1. A layer by hand
#
# AlexNet, the network of Aboutalib et al. (2018), is "five convolutional layers (includes
# max-pooling in the 1st, 2nd, and 5th convolutional layers) followed by two fully connected layers
# and a fully connected output layer with a final softmax function". This notebook takes its
# building blocks apart: the **convolution** (as `im2col` + one matrix product), **ReLU**, **max
# pooling** and **local response normalization (LRN)**. For each one we
#
# 1. write the forward and the backward pass out by hand, with plain loops where that is clearer;
# 2. compare them with the project's own implementation in `alexnet_np.ops`;
# 3. check the backward pass against *numerical* gradients (`alexnet_np.gradcheck`).
#
# At the end we see why the project's three ways of running a convolution (the readable reference,
# a fast CPU twin, and Winograd's algorithm) give the same numbers, up to float rounding.
#
# **Layouts.** Activations are `(N, C, H, W)` (images, channels, rows, columns), convolution weights
# `(K, C/groups, kh, kw)` (output channels, input channels per group, kernel rows, kernel columns).
#
# Everything is computed here; nothing is downloaded. Run time on 2 CPU cores: `notebooks/README.md`
# lists the measured times.

# %% [markdown]
# ## Setup
#
# Jupyter starts the kernel in the notebook's folder (`notebooks/` or `notebooks/solutions/`); the
# first folder upwards that holds `alexnet_np/` is the repository root, which goes on `sys.path` so
# that the project's packages import without being installed.

# %%
import sys
from pathlib import Path

ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "alexnet_np").is_dir())
sys.path.insert(0, str(ROOT))

import alexnet_np  # first: it sets OpenBLAS's thread behaviour before NumPy loads
import matplotlib.pyplot as plt
import numpy as np
from alexnet_np import LocalResponseNorm, MaxPool2d, ReLU, Conv2d, backend, ops
from alexnet_np.gradcheck import check_layer, numeric_gradient, rel_error

plt.rcParams.update({"figure.dpi": 80, "axes.titlesize": 10, "axes.labelsize": 9})
rng = np.random.default_rng(0)

# %% [markdown]
# `rel_error(a, b)` is the measure used throughout: the largest entry of |a - b| divided by the
# largest |entry| of a or b. Two float64 computations of the same formula in a different order agree
# to about 1e-15; a numerical gradient agrees with a correct analytic one to about 1e-9 (its own
# error); **anything above 1e-6 is a real mistake**.
#
# ## 2. im2col: every window becomes a column
#
# A convolution slides a `kh x kw` window over the (zero-padded) image. `im2col` copies every
# window into one column of a matrix, so that the whole convolution becomes a single matrix product.
# Row `(c, i, j)` of the matrix is kernel tap `(i, j)` of channel `c`; column `(n, ho, wo)` is output
# position `(ho, wo)` of image `n`:
#
# $$\mathrm{cols}[(c,i,j),\,(n,h_o,w_o)] = x_{\text{pad}}[n,\,c,\,h_o s + i,\,w_o s + j]$$
#
# with output size $H_o = \lfloor (H + 2p - k_h)/s \rfloor + 1$. Written with loops (slow, but every
# index is visible):

# %%
def out_size(size, kernel, stride, pad):
    return (size + 2 * pad - kernel) // stride + 1


def im2col_by_hand(x, kh, kw, stride, pad):
    n, c, h, w = x.shape
    ho, wo = out_size(h, kh, stride, pad), out_size(w, kw, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.zeros((c * kh * kw, n * ho * wo), dtype=x.dtype)
    for ci in range(c):
        for i in range(kh):
            for j in range(kw):
                row = (ci * kh + i) * kw + j
                for b in range(n):
                    for p in range(ho):
                        for q in range(wo):
                            cols[row, (b * ho + p) * wo + q] = xp[b, ci, p * stride + i, q * stride + j]
    return cols


x = rng.standard_normal((2, 3, 7, 7))
for stride, pad in [(1, 0), (2, 1), (3, 2)]:
    ours = im2col_by_hand(x, 3, 3, stride, pad)
    project = ops.im2col(x, 3, 3, stride, pad)
    print(f"stride {stride}, pad {pad}: cols {ours.shape}, identical to alexnet_np.ops.im2col: "
          f"{np.array_equal(ours, project)}")

# %% [markdown]
# `cols` has `C*kh*kw = 3*3*3 = 27` rows and `N*Ho*Wo` columns: 2 images x 5 x 5 = 50 output
# positions at stride 1, 2 x 4 x 4 = 32 at stride 2 with one pixel of padding, 2 x 3 x 3 = 18 at
# stride 3 with two. im2col only *copies* numbers, so "identical" means bit for bit.
#
# A picture makes the layout plain: one 5 x 5 channel whose pixels hold their own index, and its
# 3 x 3, stride-1 columns.

# %%
tiny = np.arange(25, dtype=float).reshape(1, 1, 5, 5)
cols = ops.im2col(tiny, 3, 3, 1, 0)
fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1, 2.2]})
a0.imshow(tiny[0, 0], cmap="Blues")
for (r, c), v in np.ndenumerate(tiny[0, 0]):
    a0.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=8)
a0.add_patch(plt.Rectangle((0.5, -0.5), 3, 3, fill=False, color="red", lw=2))
a0.set(title="input x[0, 0] (value = pixel index)\nred: the window of output (0, 1)",
       xlabel="column w", ylabel="row h")
a1.imshow(cols, cmap="Blues", aspect="auto")
for (r, c), v in np.ndenumerate(cols):
    a1.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=7)
a1.add_patch(plt.Rectangle((0.5, -0.5), 1, 9, fill=False, color="red", lw=2))
a1.set(title="im2col(x, 3, 3, stride 1, pad 0): one column per output position",
       xlabel="column = output position (n, ho, wo), flattened", ylabel="row = kernel tap (c, i, j)",
       yticks=range(9), yticklabels=[f"(0,{i},{j})" for i in range(3) for j in range(3)])
plt.tight_layout()
plt.show()

# %% [markdown]
# Column 1 (red) is the window of output position (0, 1): pixels 1, 2, 3, 6, 7, 8, 11, 12, 13.
# Neighbouring windows overlap, so each pixel appears in up to 9 columns: `cols` is 9 x 9 = 81
# numbers for a 25-pixel image. That memory is the price of turning the convolution into one large
# matrix product, which BLAS runs near the machine's peak speed.
#
# ## 3. Convolution forward: the definition, and im2col + GEMM
#
# The definition, with groups (AlexNet's conv2, conv4 and conv5 split their channels into 2 groups,
# a relic of training on two GPUs): output channel `o` of group `g` only sees input channels of
# group `g`,
#
# $$y[n,o,p,q] = b_o + \sum_{c \in g(o)} \sum_{i,j} w[o, c, i, j]\; x_{\text{pad}}[n, c, ps+i, qs+j].$$
#
# With im2col it is one matrix product per group: $Y_g = W_g \cdot \mathrm{cols}_g + b_g$, where
# $W_g$ is the group's weights flattened to `(K/g, C/g*kh*kw)` and $\mathrm{cols}_g$ the group's rows
# of `cols` (im2col orders rows by channel, so a group's rows are contiguous).

# %%
def conv_by_definition(x, w, b, stride, pad, groups):
    n, c, h, wd = x.shape
    k, cg, kh, kw = w.shape
    ho, wo = out_size(h, kh, stride, pad), out_size(wd, kw, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    y = np.zeros((n, k, ho, wo))
    for o in range(k):
        g = o // (k // groups)
        xs = xp[:, g * cg:(g + 1) * cg]
        for p in range(ho):
            for q in range(wo):
                window = xs[:, :, p * stride:p * stride + kh, q * stride:q * stride + kw]
                y[:, o, p, q] = (window * w[o]).sum(axis=(1, 2, 3)) + b[o]
    return y


def conv_im2col_by_hand(x, w, b, stride, pad, groups):
    n, k, kh = x.shape[0], w.shape[0], w.shape[2]
    ho, wo = out_size(x.shape[2], kh, stride, pad), out_size(x.shape[3], kh, stride, pad)
    cols = im2col_by_hand(x, kh, kh, stride, pad)                  # (C*kh*kw, N*Ho*Wo)
    wg = w.reshape(groups, k // groups, -1)                        # (g, K/g, C/g*kh*kw)
    y = wg @ cols.reshape(groups, -1, cols.shape[1])               # (g, K/g, N*Ho*Wo)
    y = y.reshape(k, n, ho, wo).transpose(1, 0, 2, 3) + b[None, :, None, None]
    return y, cols


x = rng.standard_normal((2, 4, 9, 9))
w = rng.standard_normal((6, 2, 3, 3))          # 6 output channels, 2 groups of 2 input channels
b = rng.standard_normal(6)
y_def = conv_by_definition(x, w, b, stride=2, pad=1, groups=2)
y_gemm, cols = conv_im2col_by_hand(x, w, b, stride=2, pad=1, groups=2)
y_project, cache = ops.conv_forward(x, w, b, 2, 1, 2, True)
print("output shape", y_project.shape)
print(f"definition vs im2col + GEMM by hand: {rel_error(y_def, y_gemm):.1e}")
print(f"definition vs alexnet_np.ops.conv_forward: {rel_error(y_def, y_project):.1e}")

# %% [markdown]
# A 9 x 9 input with one pixel of padding at stride 2 gives a 5 x 5 output (`(9 + 2 - 3) // 2 + 1`).
# The three agree to about 1e-16, the rounding of float64: the same products, summed in different
# orders.
#
# ## 4. Convolution backward
#
# The backward pass receives `dout` = dL/dy and returns dL/dx, dL/dw and dL/db. Each follows from
# the matrix form $Y_g = W_g\,\mathrm{cols}_g + b_g$ (with $dY_g$ = `dout` laid out like $Y_g$):
#
# $$dW_g = dY_g\,\mathrm{cols}_g^{\top}, \qquad db = \sum_{n,p,q} dY, \qquad
#   d\mathrm{cols}_g = W_g^{\top} dY_g, \qquad dx = \mathrm{col2im}(d\mathrm{cols}).$$
#
# `col2im` is the adjoint (the transpose) of im2col: where im2col *copied* a pixel into several
# columns, col2im *adds* those columns' gradients back onto the pixel.

# %%
def col2im_by_hand(dcols, x_shape, kh, kw, stride, pad):
    n, c, h, w = x_shape
    ho, wo = out_size(h, kh, stride, pad), out_size(w, kw, stride, pad)
    dxp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=dcols.dtype)
    for ci in range(c):
        for i in range(kh):
            for j in range(kw):
                row = (ci * kh + i) * kw + j
                for b_ in range(n):
                    for p in range(ho):
                        for q in range(wo):
                            dxp[b_, ci, p * stride + i, q * stride + j] += dcols[row, (b_ * ho + p) * wo + q]
    return dxp[:, :, pad:pad + h, pad:pad + w]


def conv_backward_by_hand(dout, x, w, cols, stride, pad, groups):
    n, k, ho, wo = dout.shape
    kh = w.shape[2]
    dy = dout.transpose(1, 0, 2, 3).reshape(groups, k // groups, -1)    # (g, K/g, N*Ho*Wo)
    colsg = cols.reshape(groups, -1, cols.shape[1])                      # (g, C/g*kh*kw, N*Ho*Wo)
    dw = (dy @ colsg.transpose(0, 2, 1)).reshape(w.shape)
    db = dout.sum(axis=(0, 2, 3))
    dcols = (w.reshape(groups, k // groups, -1).transpose(0, 2, 1) @ dy).reshape(cols.shape)
    dx = col2im_by_hand(dcols, x.shape, kh, kh, stride, pad)
    return dx, dw, db


dout = rng.standard_normal(y_project.shape)
dx, dw, db = conv_backward_by_hand(dout, x, w, cols, stride=2, pad=1, groups=2)
dw_p, db_p = np.zeros_like(w), np.zeros_like(b)
dx_p = ops.conv_backward(dout, cache, w, 2, 1, 2, dw_p, db_p, True)
for name, ours, project in [("dx", dx, dx_p), ("dw", dw, dw_p), ("db", db, db_p)]:
    print(f"{name}: by hand vs alexnet_np.ops.conv_backward: {rel_error(ours, project):.1e}")

# %% [markdown]
# Both are computed from the same formulas; the remaining question is whether the *formulas* are
# right. A numerical gradient answers it without trusting any algebra. For the scalar
# $L = \sum y \cdot \text{dout}$ (whose gradient with respect to $y$ is exactly `dout`), each entry
# of dL/dx is estimated by nudging that one entry of x by $\pm h, \pm 2h$ and re-running the forward
# pass (`alexnet_np.gradcheck.numeric_gradient`, a fourth-order central difference, $h = 10^{-4}$).

# %%
def loss():
    return np.sum(conv_by_definition(x, w, b, 2, 1, 2) * dout)


for name, param, analytic in [("x", x, dx), ("w", w, dw), ("b", b, db)]:
    numeric = numeric_gradient(loss, param)
    print(f"d{name}: analytic vs numerical: {rel_error(analytic, numeric):.1e}")

# %% [markdown]
# All three agree to about 1e-10 or better, the size of the numerical estimate's own rounding
# error: the backward pass is right. `alexnet_np.gradcheck.check_layer` does the same for a whole
# layer object; here conv1's configuration in miniature (stride 4, no padding) and conv2's (padding
# 2, two groups):

# %%
for layer, shape in [(Conv2d(3, 4, 11, stride=4, dtype=np.float64), (2, 3, 19, 19)),
                     (Conv2d(4, 6, 5, padding=2, groups=2, dtype=np.float64), (2, 4, 6, 6))]:
    for key, p in layer.params.items():
        p[...] = rng.standard_normal(p.shape)
    errors = check_layer(layer, rng.standard_normal(shape))
    print(repr(layer), {k: f"{v:.1e}" for k, v in errors.items()})

# %% [markdown]
# What col2im does is easiest to see with a single nonzero output gradient: `dout` = 1 at one
# output position of a stride-2, 3 x 3 convolution with all weights 1. dx is then 1 exactly on the
# pixels of that output's window, its *receptive field*. With dout = 1 everywhere, each pixel
# collects one 1 per window that covers it: 1, 2 or 4 for stride 2 (the windows overlap by one
# pixel), which is why an im2col gradient must *add*, never overwrite.

# %%
xs = np.zeros((1, 1, 9, 9))
ws, bs = np.ones((1, 1, 3, 3)), np.zeros(1)
_, c1 = ops.conv_forward(xs, ws, bs, 2, 0, 1, True)
spike = np.zeros((1, 1, 4, 4))
spike[0, 0, 1, 2] = 1.0
dx_spike = ops.conv_backward(spike, c1, ws, 2, 0, 1, np.zeros_like(ws), np.zeros(1), True)
_, c2 = ops.conv_forward(xs, ws, bs, 2, 0, 1, True)
dx_ones = ops.conv_backward(np.ones((1, 1, 4, 4)), c2, ws, 2, 0, 1, np.zeros_like(ws), np.zeros(1), True)
fig, axes = plt.subplots(1, 2, figsize=(8, 3.8))
for ax, img, title in [(axes[0], dx_spike, "dx for dout = 1 at output (1, 2) only"),
                       (axes[1], dx_ones, "dx for dout = 1 at every output")]:
    im = ax.imshow(img[0, 0], cmap="viridis", vmin=0)
    ax.set(title=title, xlabel="input column", ylabel="input row")
    fig.colorbar(im, ax=ax, label="dL/dx (windows covering the pixel)")
plt.tight_layout()
plt.show()

# %% [markdown]
# Left: the window of output (1, 2) starts at row 2, column 4 (stride 2) and spans 3 x 3 pixels.
# Right: 9 x 9 input, 4 x 4 outputs, windows starting at rows (and columns) 0, 2, 4 and 6. Rows
# and columns 2, 4 and 6 lie under two windows each, so their pixels collect 2 (or 4, where both
# the row and the column are shared); all other pixels lie under one window.
#
# ## 5. ReLU, max pooling and LRN
#
# **ReLU**: $y = \max(x, 0)$, $dx = \text{dout}\cdot[y > 0]$. The numerical check needs inputs at
# least $2h$ away from the kink at 0, where the derivative jumps.

# %%
x = rng.standard_normal((2, 3, 4, 4))
x[np.abs(x) < 0.01] = 0.5                      # keep clear of the kink at 0
dout = rng.standard_normal(x.shape)
y_hand, dx_hand = np.maximum(x, 0), dout * (x > 0)
y_p = ops.relu_forward(x.copy())
dx_p = ops.relu_backward(dout.copy(), y_p)
print(f"ReLU forward by hand vs ops: {rel_error(y_hand, y_p):.1e}, backward: {rel_error(dx_hand, dx_p):.1e}")
print("ReLU numerical check:", {k: f"{v:.1e}" for k, v in check_layer(ReLU(), x).items()})

# %% [markdown]
# **Max pooling** (AlexNet: 3 x 3 windows, stride 2). Caffe rounds the output size *up*,
# $H_o = \lceil (H - k)/s \rceil + 1$, so the last window may hang over the image's edge (it then
# takes the maximum of the pixels it does cover); PyTorch rounds down and drops that window. The
# backward pass sends each output's gradient to the one input that was the maximum of its window
# (Caffe: the first one in row-major order when several tie).

# %%
def maxpool_by_hand(x, kernel, stride):
    n, c, h, w = x.shape
    ho, wo = -(-(h - kernel) // stride) + 1, -(-(w - kernel) // stride) + 1     # ceil division
    y = np.zeros((n, c, ho, wo))
    where = np.zeros((n, c, ho, wo, 2), dtype=int)                              # argmax (row, col)
    for b_ in range(n):
        for ci in range(c):
            for p in range(ho):
                for q in range(wo):
                    window = x[b_, ci, p * stride:p * stride + kernel, q * stride:q * stride + kernel]
                    i, j = np.unravel_index(np.argmax(window), window.shape)    # first maximum
                    y[b_, ci, p, q] = window[i, j]
                    where[b_, ci, p, q] = p * stride + i, q * stride + j
    return y, where


def maxpool_backward_by_hand(dout, where, x_shape):
    dx = np.zeros(x_shape)
    for idx in np.ndindex(dout.shape):
        r, c = where[idx]
        dx[idx[0], idx[1], r, c] += dout[idx]      # += : overlapping windows may pick the same pixel
    return dx


# distinct values at least 0.01 apart: no ties, and no winner changes under the +-2h nudges
x = rng.permutation(2 * 3 * 8 * 8).reshape(2, 3, 8, 8) * 0.01
y_hand, where = maxpool_by_hand(x, 3, 2)
y_p, argmax = ops.maxpool_forward(x, 3, 2)
dout = rng.standard_normal(y_p.shape)
dx_p = ops.maxpool_backward(dout, argmax, x.shape, 3, 2)
print(f"8 x 8 input -> {y_p.shape[2]} x {y_p.shape[3]} output (Caffe's ceil mode; "
      f"PyTorch's floor mode: {ops.pool_out_size(8, 3, 2, ceil_mode=False)})")
print(f"max pooling forward by hand vs ops: {rel_error(y_hand, y_p):.1e}, "
      f"backward: {rel_error(maxpool_backward_by_hand(dout, where, x.shape), dx_p):.1e}")
print("max pooling numerical check:", {k: f"{v:.1e}" for k, v in check_layer(MaxPool2d(3, 2), x).items()})

# %% [markdown]
# An 8 x 8 input gives $\lceil 5/2 \rceil + 1 = 4$ outputs per side in Caffe's ceil mode: the fourth
# window starts at pixel 6 and covers only pixels 6 and 7. PyTorch's floor mode gives 3. In AlexNet
# at 227 x 227 the two agree (55 -> 27 -> 13 -> 6); at other input sizes they do not, which matters
# when comparing with a PyTorch model (notebook 2).
#
# **LRN** (Caffe's `LRN` layer, across channels: size 5, alpha 1e-4, beta 0.75, k 1 in AlexNet).
# Each activation is divided by a power of the energy of its neighbouring channels at the same pixel:
#
# $$s_c = k + \frac{\alpha}{n} \sum_{|c'-c| \le n/2} x_{c'}^2, \qquad y_c = x_c\, s_c^{-\beta},$$
#
# $$dx_c = \text{dout}_c\, s_c^{-\beta} - \frac{2\alpha\beta}{n}\, x_c \sum_{|c'-c| \le n/2}
#   \text{dout}_{c'}\, \frac{y_{c'}}{s_{c'}}.$$
#
# The second term of the backward is there because $x_c$ also enters its neighbours' $s_{c'}$.

# %%
def lrn_by_hand(x, size, alpha, beta, k):
    c = x.shape[1]
    half = size // 2
    s = np.empty_like(x)
    for ci in range(c):
        lo, hi = max(0, ci - half), min(c, ci + half + 1)
        s[:, ci] = k + alpha / size * (x[:, lo:hi] ** 2).sum(axis=1)
    return x * s ** -beta, s


def lrn_backward_by_hand(dout, x, y, s, size, alpha, beta):
    c = x.shape[1]
    half = size // 2
    t = dout * y / s
    dx = dout * s ** -beta
    for ci in range(c):
        lo, hi = max(0, ci - half), min(c, ci + half + 1)
        dx[:, ci] -= 2 * alpha * beta / size * x[:, ci] * t[:, lo:hi].sum(axis=1)
    return dx


x = rng.standard_normal((2, 7, 3, 3)) * 30      # activations of conv1's size, where LRN matters
size, alpha, beta, k = 5, 1e-4, 0.75, 1.0
y_hand, s = lrn_by_hand(x, size, alpha, beta, k)
y_p, s_p = ops.lrn_forward(x, size, alpha, beta, k)
dout = rng.standard_normal(x.shape)
dx_p = ops.lrn_backward(dout, x, y_p, s_p, size, alpha, beta)
print(f"LRN forward by hand vs ops: {rel_error(y_hand, y_p):.1e}, "
      f"backward: {rel_error(lrn_backward_by_hand(dout, x, y_hand, s, size, alpha, beta), dx_p):.1e}")
print("LRN numerical check:", {k_: f"{v:.1e}" for k_, v in check_layer(LocalResponseNorm(), x).items()})
print(f"y / x ranges from {np.min(y_p / x):.2f} to {np.max(y_p / x):.2f} for activations of size ~30")

# %% [markdown]
# With activations of about 30 (the size of conv1's outputs on 0-255 inputs), LRN shrinks each one
# by the factor $s^{-0.75}$ printed last: close to 1 where the neighbouring channels are quiet, smaller
# where they are loud. On activations of size 1 it would do nearly nothing ($s \approx 1.0001$).
#
# ## 6. Three implementations, one answer: the fast CPU twin and Winograd
#
# Each primitive in `alexnet_np.ops` is the readable *reference*. The backend (`alexnet_np.backend`)
# may run, in its place, a **fast CPU twin** (`alexnet_np.cpu_kernels`: the same arithmetic in
# cache-sized blocks on several threads) and, for 3 x 3 stride-1 convolutions (conv3 to conv5),
# **Winograd's F(2x2, 3x3)** (`alexnet_np.winograd`), which computes each 2 x 2 block of outputs with
# 16 multiplications instead of 36 by transforming input tiles and filters first.
#
# We run conv4's configuration in miniature (3 x 3, padding 1, two groups) all three ways, in
# float32 (what training uses) and float64, and compare outputs and input gradients with the
# reference. `backend.kernels_used()` tells which implementation actually ran.

# %%
def run_conv(x, w, b, dout, kernels, winograd):
    backend.set_cpu_kernels(kernels)
    backend.set_winograd(winograd)
    backend.reset_kernels_used()
    y, cache = ops.conv_forward(x, w, b, 1, 1, 2, True)
    y = y.copy()
    dx = ops.conv_backward(dout, cache, w, 1, 1, 2, np.zeros_like(w), np.zeros_like(b), True)
    return y, dx.copy(), backend.kernels_used().summary().replace("\n", "; ")


saved = backend.cpu_kernels_name(), backend.winograd_enabled()
x64 = rng.standard_normal((4, 32, 13, 13))
w64 = rng.standard_normal((48, 16, 3, 3)) * 0.1
b64 = rng.standard_normal(48)
dout64 = rng.standard_normal((4, 48, 13, 13))
differences = {}
for dtype in (np.float32, np.float64):
    args = [a.astype(dtype) for a in (x64, w64, b64, dout64)]
    ref_y, ref_dx, used = run_conv(*args, "reference", False)
    print(f"{np.dtype(dtype).name} reference ran: {used}")
    for label, kernels, wino in [("fast CPU twin", "fast", False), ("Winograd", "fast", True)]:
        y, dx, used = run_conv(*args, kernels, wino)
        differences[(label, np.dtype(dtype).name)] = (rel_error(y, ref_y), rel_error(dx, ref_dx))
        print(f"  {label:14s} ran: {used}")
        print(f"  {'':14s} max |y - y_ref| / max|y_ref| = {differences[(label, np.dtype(dtype).name)][0]:.1e}, "
              f"same for dx: {differences[(label, np.dtype(dtype).name)][1]:.1e}")
backend.set_cpu_kernels(saved[0])
backend.set_winograd(saved[1])
u32, u64 = np.finfo(np.float32).eps / 2, np.finfo(np.float64).eps / 2
print(f"unit roundoff: float32 {u32:.1e}, float64 {u64:.1e}, ratio {u32 / u64:.1e}")
print(f"Winograd's difference, float32 / float64: {differences['Winograd', 'float32'][0] / differences['Winograd', 'float64'][0]:.1e}")

# %%
fig, ax = plt.subplots(figsize=(7.5, 3.6))
labels = [f"{impl}\n{dt}" for impl, dt in differences]
pos = np.arange(len(labels))
for shift, part, label in [(-0.2, 0, "output y"), (0.2, 1, "input gradient dx")]:
    heights = [v[part] for v in differences.values()]
    ax.bar(pos + shift, [max(h, 1e-18) for h in heights], 0.4, label=label, color=f"C{part}")
    for xpos, h in zip(pos + shift, heights):
        if h == 0:
            ax.text(xpos, 3e-18, "exactly 0", rotation=90, ha="center", va="bottom", fontsize=8)
for dt, eps, color in [("float32", np.finfo(np.float32).eps / 2, "C2"), ("float64", np.finfo(np.float64).eps / 2, "C3")]:
    ax.axhline(eps, ls="--", color=color, label=f"{dt} unit roundoff {eps:.0e}")
ax.set_yscale("log")
ax.set_ylim(1e-18, 1e-3)
ax.set_xticks(pos, labels)
ax.set(title="conv4 in miniature: difference from the reference implementation",
       ylabel="max |difference| / max |reference|")
ax.legend(fontsize=8, loc="upper right")
plt.tight_layout()
plt.show()

# %% [markdown]
# What the numbers say:
#
# * The **fast CPU twin** differs by exactly 0: its im2col is the same copy, its GEMM the same BLAS
#   call, and its col2im adds the same numbers in the same order (the twins are written so that each
#   output element goes through the same floating-point operations; `tests/test_cpu_kernels.py`
#   asserts bit-for-bit equality).
# * **Winograd** differs by a few times the unit roundoff of the type (about 1e-7 in float32, 1e-16
#   in float64). It is the same mathematical function, computed by other operations: the input
#   tiles are transformed by additions and subtractions, 16 products are summed over channels, and
#   the result is transformed back. Float addition is not associative, `(a + b) + c` and
#   `a + (b + c)` round differently, so the last bits differ.
# * The proof that this is rounding and not a wrong formula: going from float32 to float64 shrinks
#   the difference by a factor of several hundred million, as much as the unit roundoff shrinks
#   (the two ratios printed last). A mistake in the formula would leave a difference of the size
#   of the outputs in both types.
#
# ## Exercises
#
# Each exercise cell holds a stub; replace it, then run the check cell below it. The checks fail
# until the answer is right. Solutions: `notebooks/solutions/01_layer_by_hand.ipynb`.
#
# **Exercise 1: average pooling's backward.** `avgpool_forward` below averages each `k x k` window
# (stride `s`, no padding, floor mode). Write `avgpool_backward(dout, x_shape, kernel, stride)`
# returning dL/dx. Hint: every pixel of a window receives `dout / k^2` from that window, and windows
# may overlap (stride < kernel).

# %%
def avgpool_forward(x, kernel, stride):
    n, c, h, w = x.shape
    ho, wo = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    y = np.zeros((n, c, ho, wo))
    for i in range(kernel):
        for j in range(kernel):
            y += x[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]
    return y / kernel ** 2

# %% exercise
def avgpool_backward(dout, x_shape, kernel, stride):
    """dout: (N, C, Ho, Wo) -> dx: x_shape = (N, C, H, W)."""
    # >>> student
    raise NotImplementedError("Exercise 1: write avgpool_backward")
    # >>> solution
    n, c, h, w = x_shape
    ho, wo = dout.shape[2:]
    dx = np.zeros(x_shape)
    for i in range(kernel):
        for j in range(kernel):
            dx[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride] += dout / kernel ** 2
    return dx
    # <<<

# %% check
for kernel, stride, shape in [(2, 2, (2, 3, 6, 6)), (3, 2, (2, 2, 7, 7)), (3, 1, (1, 2, 5, 6))]:
    xe = rng.standard_normal(shape)
    de = rng.standard_normal(avgpool_forward(xe, kernel, stride).shape)
    numeric = numeric_gradient(lambda: np.sum(avgpool_forward(xe, kernel, stride) * de), xe)
    err = rel_error(avgpool_backward(de, shape, kernel, stride), numeric)
    assert err < 1e-8, f"kernel {kernel}, stride {stride}: relative error {err:.1e}"
print("Exercise 1 passed")

# %% [markdown]
# **Exercise 2: Winograd in one dimension.** F(2, 3) computes two outputs of a 3-tap correlation,
# $y_i = \sum_{k=0}^{2} d_{i+k}\, g_k$ for $i = 0, 1$, from a 4-sample input $d$ with four
# multiplications instead of six:
#
# $$y = A^\top \big[ (G g) \odot (B^\top d) \big]$$
#
# `alexnet_np.winograd` holds the matrices `BT` (4 x 4), `G` (4 x 3) and `AT` (2 x 4) (the 2-D
# algorithm applies them along rows and columns). Write `winograd_f23(d, g)` with them.

# %% exercise
from alexnet_np import winograd


def winograd_f23(d, g):
    """d: (4,), g: (3,) -> the 2 outputs of the correlation of d with g."""
    # >>> student
    raise NotImplementedError("Exercise 2: write winograd_f23")
    # >>> solution
    return winograd.AT @ ((winograd.G @ g) * (winograd.BT @ d))
    # <<<

# %% check
for _ in range(5):
    d, g = rng.standard_normal(4), rng.standard_normal(3)
    expected = np.correlate(d, g, mode="valid")          # [d0 g0 + d1 g1 + d2 g2, d1 g0 + d2 g1 + d3 g2]
    got = np.asarray(winograd_f23(d, g))
    assert got.shape == (2,) and np.allclose(got, expected, atol=1e-12), (got, expected)
print("Exercise 2 passed")

# %% [markdown]
# **Exercise 3: a 1 x 1 convolution is a matrix product.** With a 1 x 1 kernel each output pixel
# mixes the channels of the same input pixel. Write `conv1x1(x, w, b)` for x `(N, C, H, W)`,
# w `(K, C, 1, 1)`, b `(K,)` with one `np.einsum` or `@`, no im2col and no loop.

# %% exercise
def conv1x1(x, w, b):
    """(N, C, H, W), (K, C, 1, 1), (K,) -> (N, K, H, W)."""
    # >>> student
    raise NotImplementedError("Exercise 3: write conv1x1")
    # >>> solution
    return np.einsum("kc,nchw->nkhw", w[:, :, 0, 0], x) + b[None, :, None, None]
    # <<<

# %% check
xe, we, be = rng.standard_normal((2, 5, 4, 3)), rng.standard_normal((7, 5, 1, 1)), rng.standard_normal(7)
expected, _ = ops.conv_forward(xe, we, be, 1, 0, 1, False)
got = conv1x1(xe, we, be)
assert got is not None and got.shape == expected.shape, "conv1x1 must return an (N, K, H, W) array"
assert rel_error(got, expected) < 1e-12, f"relative error {rel_error(got, expected):.1e}"
print("Exercise 3 passed")
