"""Array primitives behind the layers: the readable reference of each, with faster twins.

Each function here is the readable NumPy definition of one primitive. Those
decorated with :func:`~alexnet_np.backend.dispatched` have twins of the same
name and signature -- a hand-written CUDA kernel in :mod:`alexnet_np.cuda_kernels`,
a fast CPU version in :mod:`alexnet_np.cpu_kernels` -- and the decorator picks
the one that runs (backend.py says how). The convolution (:func:`conv_forward`,
:func:`conv_backward`) has one more implementation, Winograd's algorithm for
3x3 filters (:mod:`alexnet_np.winograd`), picked by the same dispatch.

``buffers`` (the primitives whose outputs are large): the caller's dict of
arrays kept between calls (a layer's ``buffers``). The fast twins keep their
outputs there, so that a training step does not pay a page fault per page of
fresh memory for each; the references allocate fresh arrays, except the
convolution, whose im2col path is also the fast one. An output kept in
``buffers`` is overwritten by the next call with the same ``buffers``.

Layouts (shared by both twins):

* activations ``x``: NCHW, weights OIHW;
* im2col columns ``cols``: shape ``(C*kh*kw, N*Ho*Wo)``, rows ordered (c, i, j)
  and columns ordered (n, ho, wo). Rows of one channel group are contiguous,
  so a grouped convolution is a batch of ``groups`` matrix products, and the
  column order puts the batch *inside* the GEMM's N dimension (one large GEMM
  per layer instead of one per image).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .backend import array_module, dispatched, kept, scratch


# ----------------------------------------------------------------------------- sizes
def conv_out_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Convolution output length: floor((size + 2*pad - kernel) / stride) + 1 (Caffe, PyTorch)."""
    out = (size + 2 * pad - kernel) // stride + 1
    if out < 1:
        raise ValueError(f"input of size {size} is smaller than the kernel {kernel} (pad {pad})")
    return out


def pool_out_size(size: int, kernel: int, stride: int, pad: int = 0, ceil_mode: bool = True) -> int:
    """Pooling output length. Caffe rounds *up*: ceil((size + 2*pad - kernel) / stride) + 1;
    ``ceil_mode=False`` rounds down (PyTorch's default, used by torchvision's AlexNet).

    As in Caffe's PoolingLayer, a last window that would start entirely in the
    padding is dropped, so every window overlaps the image.
    """
    span = size + 2 * pad - kernel
    out = (int(math.ceil(span / stride)) if ceil_mode else span // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    if out < 1:
        raise ValueError(f"input of size {size} is smaller than the pooling window {kernel}")
    return out


def _padded(x, pad: int, fill=0.0):
    """Copy of NCHW ``x`` with ``pad`` pixels of ``fill`` on each spatial side."""
    if pad == 0:
        return x
    n, c, h, w = x.shape
    out = np.full((n, c, h + 2 * pad, w + 2 * pad), fill, dtype=x.dtype)
    out[:, :, pad:pad + h, pad:pad + w] = x
    return out


# ----------------------------------------------------------------------------- im2col
@dispatched
def im2col(x, kh: int, kw: int, stride: int, pad: int, buffers=None):
    """Unfold convolution windows into columns.

    x: (N, C, H, W) -> cols: (C*kh*kw, N*Ho*Wo) with
    ``cols[(c, i, j), (n, ho, wo)] = xpad[n, c, ho*stride + i, wo*stride + j]``.
    One strided copy of a 6-D view; no Python loop over pixels.
    """
    n, c, h, w = x.shape
    ho, wo = conv_out_size(h, kh, stride, pad), conv_out_size(w, kw, stride, pad)
    xp_ = _padded(x, pad)
    sn, sc, sh, sw = xp_.strides
    windows = as_strided(xp_, shape=(c, kh, kw, n, ho, wo),
                         strides=(sc, sh, sw, sn, stride * sh, stride * sw), writeable=False)
    cols = np.empty((c * kh * kw, n * ho * wo), dtype=x.dtype)
    cols.reshape(c, kh, kw, n, ho, wo)[...] = windows
    return cols


@dispatched
def col2im(cols, x_shape, kh: int, kw: int, stride: int, pad: int, buffers=None):
    """Adjoint of :func:`im2col`: fold column gradients back onto the image.

    cols: (C*kh*kw, N*Ho*Wo) -> dx: (N, C, H, W) with
    ``dx[n, c, y, x] = sum over (i, j, ho, wo) with ho*stride + i - pad = y and
    wo*stride + j - pad = x of cols[(c, i, j), (n, ho, wo)]``.
    The loop runs over the kh*kw kernel taps; each tap adds one strided slab.
    """
    n, c, h, w = x_shape
    ho, wo = conv_out_size(h, kh, stride, pad), conv_out_size(w, kw, stride, pad)
    taps = cols.reshape(c, kh, kw, n, ho, wo)
    # Accumulate in (C, N, H, W) order, the order of the columns, for cache locality.
    acc = np.zeros((c, n, h + 2 * pad, w + 2 * pad), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            acc[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride] += taps[:, i, j]
    return np.ascontiguousarray(acc[:, :, pad:pad + h, pad:pad + w].transpose(1, 0, 2, 3))


# ----------------------------------------------------------------------------- convolution
@dataclass
class ConvCache:
    """What a convolution's backward needs: the algorithm that ran and the arrays it saved."""
    algorithm: str          # "im2col" or "winograd"
    x_shape: tuple
    cols: object = None     # im2col: the columns (C*kh*kw, N*Ho*Wo)
    v: object = None        # winograd: the input tiles (16, T, C)
    u: object = None        # winograd: the transformed filters (16, g, K/g, C/g)


@dispatched
def conv_forward(x, w, b, stride: int, pad: int, groups: int, train: bool = True, buffers=None):
    """2-D convolution with groups as im2col + one GEMM per group -> (out, cache).

    x: (N, C, H, W), w: (K, C/groups, kh, kw), b: (K,) -> out: (N, K, Ho, Wo);
    cache (a ConvCache, None unless ``train``) is what :func:`conv_backward` needs.

        cols = im2col(x)                  (C*kh*kw, N*Ho*Wo)
        Y_g  = W_g @ cols_g + b_g          per group g, W_g: (K/g, C/g*kh*kw)

    The GEMM writes into a scratch buffer (backend.scratch), the output and the
    columns into ``buffers``.
    """
    m = array_module(x)
    n = x.shape[0]
    k_out, _, kh, kw = w.shape
    ho, wo = conv_out_size(x.shape[2], kh, stride, pad), conv_out_size(x.shape[3], kw, stride, pad)
    cols = im2col(x, kh, kw, stride, pad, buffers)               # (C*kh*kw, N*Ho*Wo)
    wg = w.reshape(groups, k_out // groups, -1)                   # (g, K/g, C/g*kh*kw)
    y = scratch((groups, k_out // groups, cols.shape[1]), x.dtype, m, "gemm")
    m.matmul(wg, cols.reshape(groups, -1, cols.shape[1]), out=y)  # (g, K/g, N*Ho*Wo)
    # (K, N, Ho, Wo) -> (N, K, Ho, Wo), adding the bias in the same pass.
    out = kept(buffers, "conv.out", (n, k_out, ho, wo), x.dtype, m)
    m.add(y.reshape(k_out, n, ho, wo).transpose(1, 0, 2, 3), b[None, :, None, None], out=out)
    return out, (ConvCache("im2col", x.shape, cols=cols) if train else None)


@dispatched
def conv_backward(dout, cache, w, stride: int, pad: int, groups: int, dw, db, need_dx: bool = True,
                  buffers=None):
    """The gradients of :func:`conv_forward`: dW into ``dw``, db into ``db``; returns dx
    (None unless ``need_dx``).

        dW_g = (cols_g @ dY_g^T)^T,   db = sum over (n, ho, wo) of dY,
        dcols_g = W_g^T @ dY_g,   dx = col2im(dcols)   (the adjoint of im2col).

    GEMM orientation: cols_g @ dY_g^T runs 2-3x faster than dY_g @ cols_g^T in
    OpenBLAS at these shapes (a short, wide output with a very long inner
    dimension). dcols takes the memory of the cached cols, whose last reader is
    dW: no new allocation of the layer's largest array.
    """
    m = array_module(dout)
    cols, n = cache.cols, cache.x_shape[0]
    k_out, _, kh, kw = w.shape
    kg = k_out // groups
    dy = scratch((k_out, cols.shape[1]), dout.dtype, m, "gemm")   # (K, N*Ho*Wo)
    m.copyto(dy.reshape(k_out, n, -1), dout.reshape(n, k_out, -1).transpose(1, 0, 2))
    dyg, colsg = dy.reshape(groups, kg, -1), cols.reshape(groups, -1, cols.shape[1])
    m.copyto(dw.reshape(groups, kg, -1), m.matmul(colsg, dyg.transpose(0, 2, 1)).transpose(0, 2, 1))
    dy.sum(axis=1, out=db)
    if not need_dx:
        return None
    dcols = colsg                                                 # cols' memory, see above
    m.matmul(w.reshape(groups, kg, -1).transpose(0, 2, 1), dyg, out=dcols)
    return col2im(dcols.reshape(cols.shape), cache.x_shape, kh, kw, stride, pad, buffers)


# ----------------------------------------------------------------------------- max pooling
@dataclass(frozen=True)
class PoolInput:
    """An input made ready for pooling windows (see :func:`pool_input`)."""
    x: object   # (N, C, H', W'): the input, padded bottom/right where ceil-mode windows overhang
    ho: int     # output rows, pool_out_size(H, ...)
    wo: int     # output columns, pool_out_size(W, ...)


def pool_input(x, kernel: int, stride: int, ceil_mode: bool, fill) -> PoolInput:
    """x: (N, C, H, W) -> the input that every pooling window fits in, and the output size.

    Ho = pool_out_size(H, kernel, stride, 0, ceil_mode) (likewise Wo). With Caffe's
    ceil mode the last window may overhang the image, by up to stride - 1 pixels:
    then x is copied with (Ho-1)*stride + kernel - H rows (and columns) of ``fill``
    added at the bottom (right), so window (p, q) is always the plain slice
    x[..., p*stride : p*stride + kernel, q*stride : q*stride + kernel]. ``fill`` is
    -inf for max pooling (the overhang never wins). Otherwise x itself, no copy.
    Shared by the reference pooling here and its fast CPU twins.
    """
    n, c, h, w = x.shape
    ho, wo = pool_out_size(h, kernel, stride, 0, ceil_mode), pool_out_size(w, kernel, stride, 0, ceil_mode)
    hp, wp = (ho - 1) * stride + kernel, (wo - 1) * stride + kernel
    if hp > h or wp > w:
        xp_ = np.full((n, c, max(hp, h), max(wp, w)), fill, dtype=x.dtype)
        xp_[:, :, :h, :w] = x
        x = xp_
    return PoolInput(x, ho, wo)


@dispatched
def maxpool_forward(x, kernel: int, stride: int, ceil_mode: bool = True, buffers=None):
    """Max pooling (Caffe's ceil mode by default). x: (N, C, H, W) -> (out, argmax), each (N, C, Ho, Wo).

    out[n, c, p, q] = max over (i, j) in [0, kernel)^2 of x[n, c, p*stride + i, q*stride + j]
    (positions beyond the image do not take part).
    argmax (int8) is the tap index i*kernel + j of the maximum. **Ties** go to the
    first tap in row-major scan order (strict ``>``), the rule of Caffe's CPU code.
    """
    pooled = pool_input(x, kernel, stride, ceil_mode, -np.inf)
    xw, ho, wo = pooled.x, pooled.ho, pooled.wo
    out = None
    argmax = np.zeros(x.shape[:2] + (ho, wo), dtype=np.int8)
    for i in range(kernel):
        for j in range(kernel):
            v = xw[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]
            if out is None:
                out = v.copy()
                continue
            better = v > out
            np.copyto(out, v, where=better)
            argmax[better] = i * kernel + j
    return out, argmax


@dispatched
def maxpool(x, kernel: int, stride: int, ceil_mode: bool = True, buffers=None):
    """Max pooling without the argmax, for inference (no gradient to route): maxpool_forward's out."""
    return maxpool_forward(x, kernel, stride, ceil_mode)[0]


@dispatched
def maxpool_backward(dout, argmax, x_shape, kernel: int, stride: int, buffers=None):
    """Route each output gradient to its window's argmax. dout, argmax: (N, C, Ho, Wo) -> dx (N, C, H, W).

    dx[n, c, p*stride + i, q*stride + j] += dout[n, c, p, q] where argmax[n, c, p, q] == i*kernel + j.
    """
    n, c, h, w = x_shape
    ho, wo = dout.shape[2:]
    hp, wp = max(h, (ho - 1) * stride + kernel), max(w, (wo - 1) * stride + kernel)
    dx = np.zeros((n, c, hp, wp), dtype=dout.dtype)
    for i in range(kernel):
        for j in range(kernel):
            dx[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride] += \
                np.where(argmax == i * kernel + j, dout, 0)
    return np.ascontiguousarray(dx[:, :, :h, :w])


# ----------------------------------------------------------------------------- LRN
def _channel_window_sum(a, size: int):
    """s[:, c] = sum of a[:, c'] for |c' - c| <= size // 2 (zero beyond the channel ends)."""
    s = a.copy()
    for d in range(1, size // 2 + 1):
        s[:, d:] += a[:, :-d]
        s[:, :-d] += a[:, d:]
    return s


@dispatched
def lrn_forward(x, size: int, alpha: float, beta: float, k: float, buffers=None):
    """Caffe LRN, ACROSS_CHANNELS. x: (N, C, H, W) -> (y, scale), both like x.

    scale_c = k + alpha/size * sum_{|c'-c| <= size//2} x_{c'}^2,    y_c = x_c * scale_c^(-beta).
    """
    scale = _channel_window_sum(x * x, size)
    scale *= alpha / size
    scale += k
    y = x * _neg_pow(scale, beta)
    return y, scale


@dispatched
def lrn_backward(dout, x, y, scale, size: int, alpha: float, beta: float, buffers=None):
    """Exact LRN backward (as Caffe's CrossChannelBackward).

    dx_c = dout_c * scale_c^(-beta)
           - (2 * alpha * beta / size) * x_c * sum_{|c'-c| <= size//2} dout_{c'} * y_{c'} / scale_{c'}
    (the window is symmetric, so "c in the window of c'" is "c' in the window of c").
    """
    t = _channel_window_sum(dout * y / scale, size)
    dx = dout * _neg_pow(scale, beta)
    dx -= (2.0 * alpha * beta / size) * x * t
    return dx


def _neg_pow(a, beta: float):
    """a^(-beta). For AlexNet's beta = 0.75 this is 1/(sqrt(a)*sqrt(sqrt(a))): two square
    roots are several times cheaper than a general ``pow`` on both CPU and GPU."""
    if beta == 0.75:
        r = np.sqrt(a)
        r *= np.sqrt(r)
        return np.reciprocal(r, out=r)
    return np.power(a, -beta)


# ----------------------------------------------------------------------------- random numbers
GOLDEN = 0x9E3779B97F4A7C15  # 2^64 / golden ratio, the splitmix64 increment


def mix64(z):
    """splitmix64's finalizer on uint64 arrays (arithmetic mod 2^64): a bijective bit mixer."""
    z = np.asarray(z, dtype=np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class CounterRNG:
    """A counter-based random stream for dropout: draw k uses the key mix64(seed * GOLDEN + k).

    Each mask entry is then a pure function of (key, position), so the NumPy and
    CUDA twins of :func:`dropout_mask` produce identical masks, and the whole
    state is two integers (``state`` / ``set_state``), which a checkpoint stores
    to make a resumed run draw exactly the masks of an uninterrupted one.
    """

    def __init__(self, seed=0):
        self.seed, self.counter = int(seed), 0

    def next_key(self) -> int:
        z = (self.seed * GOLDEN + self.counter) % 2 ** 64
        self.counter += 1
        return int(mix64(np.array([z], dtype=np.uint64))[0])

    @property
    def state(self) -> dict:
        return {"seed": self.seed, "counter": self.counter}

    def set_state(self, state: dict):
        self.seed, self.counter = int(state["seed"]), int(state["counter"])


def keep_threshold(p: float) -> int:
    """Entries whose 24-bit uniform integer u satisfies u >= ceil(p * 2^24) are kept: P(keep) = 1 - p
    up to 2^-24. Integer comparison keeps the two twins bit-identical."""
    return int(math.ceil(p * 2 ** 24))


@dispatched
def dropout_mask(x, key: int, p: float):
    """Bernoulli(1 - p) keep-mask shaped like x: mask[i] = [top 24 bits of mix64(key + (i+1)*GOLDEN)
    >= ceil(p * 2^24)], with i the flat C-order position."""
    i = np.arange(1, x.size + 1, dtype=np.uint64)
    u = mix64(i * np.uint64(GOLDEN) + np.uint64(key)) >> np.uint64(40)
    return (u >= np.uint64(keep_threshold(p))).astype(x.dtype).reshape(x.shape)


# ----------------------------------------------------------------------------- ReLU, dropout
@dispatched
def relu_forward(x, inplace: bool = False):
    """y = max(x, 0). With ``inplace`` the result overwrites x (safe when nothing else keeps x)."""
    return np.maximum(x, 0, out=x if inplace else None)


@dispatched
def relu_backward(dout, y):
    """dx = dout * [y > 0] (y is the ReLU output; y > 0 exactly where x > 0). Overwrites dout."""
    return np.multiply(dout, y > 0, out=dout)


@dispatched
def dropout_apply(x, mask, scale: float):
    """Inverted dropout: y = x * mask * scale, with mask in {0, 1} and scale = 1/(1-p)."""
    return x * (mask * x.dtype.type(scale))


# ----------------------------------------------------------------------------- softmax, loss
def log_softmax(z, axis: int = -1):
    """log softmax(z) along ``axis``, by the stable log-sum-exp (NumPy or CuPy arrays):

        log p = z - max(z) - log sum exp(z - max(z))

    Subtracting the maximum changes nothing mathematically and keeps exp() from
    overflowing; in the log domain a tiny probability stays finite (log of a
    softmax that underflowed to 0 would be -inf)."""
    m = array_module(z)
    z = z - z.max(axis=axis, keepdims=True)
    return z - m.log(m.exp(z).sum(axis=axis, keepdims=True))


def softmax(z, axis: int = -1):
    """Class probabilities from logits (the paper's "final softmax function"), NumPy or CuPy
    arrays, along ``axis`` (default the last: logits (N, K) -> probabilities (N, K)):

        p_k = exp(z_k - max(z)) / sum_j exp(z_j - max(z))

    The maximum subtracted keeps exp() from overflowing; each row sums to 1 up to
    rounding. The result is on the array module of ``z`` and has its float dtype."""
    m = array_module(z)
    p = m.exp(z - z.max(axis=axis, keepdims=True))
    p /= p.sum(axis=axis, keepdims=True)
    return p


@dispatched
def softmax_cross_entropy(logits, labels, weights):
    """Mean softmax cross-entropy and its gradient. logits (N, K), labels (N,) int -> (loss, dlogits).

    log p = log_softmax(z) = z - max(z) - log sum exp(z - max(z))
    loss  = - sum_n w[y_n] log p[n, y_n] / sum_n w[y_n]
    dlogits[n] = w[y_n] (p[n] - onehot(y_n)) / sum_n w[y_n]
    ``weights`` (K,) are per-class weights (all ones for the plain mean).
    """
    logp = log_softmax(logits, axis=1)
    rows = np.arange(logits.shape[0])
    w = weights[labels]
    wsum = w.sum()
    loss = -(w * logp[rows, labels]).sum() / wsum
    d = np.exp(logp)
    d[rows, labels] -= 1.0
    d *= (w / wsum)[:, None]
    return loss, d


# ----------------------------------------------------------------------------- SGD
@dispatched
def sgd_update(w, grad, v, lr: float, momentum: float, weight_decay: float):
    """Caffe's SGD update, in place on ``w`` and ``v``:

    v <- momentum * v + lr * (grad + weight_decay * w);    w <- w - v.
    (``lr`` and ``weight_decay`` here already include the parameter's lr_mult / decay_mult.)
    """
    step = grad + w * w.dtype.type(weight_decay) if weight_decay else grad.copy()
    step *= w.dtype.type(lr)
    v *= v.dtype.type(momentum)
    v += step
    w -= v
