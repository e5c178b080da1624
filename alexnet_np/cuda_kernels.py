"""Hand-written CUDA kernels: the CuPy twins of the primitives in ops.py.

Each function has exactly the signature of its NumPy twin in :mod:`alexnet_np.ops`
and is picked automatically when the first argument is a CuPy array (see
``backend.dispatched``); tests/test_cuda_kernels.py checks every one against its
twin. GEMMs go through cuBLAS (``cupy.matmul``), everything else is here.
The ``buffers`` argument is accepted and not used: CuPy's memory pool already
hands freed device memory out again without the host's page faults.

Design notes (why the kernels look the way they do):

* One thread per *output* element everywhere, including the backward passes:
  col2im and the max-pool backward *gather* the contributions of all windows
  that cover a pixel instead of scattering with atomics, so results are
  deterministic bit for bit (the same order of additions on every run).
* Consecutive threads handle consecutive innermost positions (w), so global
  loads and stores coalesce.
* Index arithmetic uses 32-bit integers when the arrays allow (64-bit integer
  division is emulated on the GPU and would dominate these memory-bound
  kernels), 64-bit otherwise.
* Kernels are generic in the float type ``T`` (float32 for training, float64
  for the comparison tests).

This module imports CuPy at import time; it is only imported once a CuPy array
exists, so CPU-only installs never touch it.
"""
from __future__ import annotations

import functools

import cupy as cp

from .ops import GOLDEN, conv_out_size, keep_threshold, pool_out_size

_INT32_MAX = 2 ** 31 - 1


@functools.lru_cache(maxsize=None)
def _kernel(in_params, out_params, body, name, wide):
    """Build (once) an ElementwiseKernel whose index type ``idx_t`` is int or long long."""
    preamble = f"typedef {'long long' if wide else 'int'} idx_t;"
    return cp.ElementwiseKernel(in_params, out_params, body, name, preamble=preamble)


def _wide(*sizes):
    return max(sizes) > _INT32_MAX


# ----------------------------------------------------------------------------- im2col / col2im
_IM2COL = """
    // i -> (c, ki, kj, n, ho, wo), matching cols[(c, ki, kj), (n, ho, wo)]
    idx_t t = i;
    const idx_t wo = t % Wo; t /= Wo;
    const idx_t ho = t % Ho; t /= Ho;
    const idx_t n = t % N;  t /= N;
    const idx_t kj = t % kw; t /= kw;
    const idx_t ki = t % kh;
    const idx_t c = t / kh;
    const idx_t y = ho * stride + ki - pad;
    const idx_t x = wo * stride + kj - pad;
    col = (y >= 0 && y < H && x >= 0 && x < W) ? img[((n * C + c) * H + y) * W + x] : (T)0;
"""


def im2col(x, kh, kw, stride, pad, buffers=None):
    """CUDA twin of ops.im2col: one thread per column entry."""
    n, c, h, w = x.shape
    ho, wo = conv_out_size(h, kh, stride, pad), conv_out_size(w, kw, stride, pad)
    x = cp.ascontiguousarray(x)
    cols = cp.empty((c * kh * kw, n * ho * wo), dtype=x.dtype)
    k = _kernel("raw T img, int32 N, int32 C, int32 H, int32 W, int32 Ho, int32 Wo, "
                "int32 kh, int32 kw, int32 stride, int32 pad", "T col", _IM2COL,
                "alexnet_im2col", _wide(cols.size, x.size))
    k(x, n, c, h, w, ho, wo, kh, kw, stride, pad, cols)
    return cols


_COL2IM = """
    // One thread per image pixel (n, c, y, x): gather every (ki, kj, ho, wo) with
    // ho*stride + ki - pad == y and wo*stride + kj - pad == x. No atomics.
    idx_t t = i;
    const idx_t x = t % W + pad; t /= W;
    const idx_t y = t % H + pad; t /= H;
    const idx_t c = t % C;
    const idx_t n = t / C;
    // window rows whose span [ho*stride, ho*stride + kh) contains y
    const idx_t ho_lo = (y < kh) ? 0 : (y - kh) / stride + 1;
    const idx_t ho_hi = min((idx_t)(y / stride + 1), (idx_t)Ho);
    const idx_t wo_lo = (x < kw) ? 0 : (x - kw) / stride + 1;
    const idx_t wo_hi = min((idx_t)(x / stride + 1), (idx_t)Wo);
    const idx_t NP = (idx_t)N * Ho * Wo;
    T acc = 0;
    for (idx_t ho = ho_lo; ho < ho_hi; ++ho) {
        const idx_t ki = y - ho * stride;
        for (idx_t wo = wo_lo; wo < wo_hi; ++wo) {
            const idx_t kj = x - wo * stride;
            acc += cols[((c * kh + ki) * kw + kj) * NP + (n * Ho + ho) * Wo + wo];
        }
    }
    img = acc;
"""


def col2im(cols, x_shape, kh, kw, stride, pad, buffers=None):
    """CUDA twin of ops.col2im: gather-style (deterministic, no atomics)."""
    n, c, h, w = x_shape
    ho, wo = conv_out_size(h, kh, stride, pad), conv_out_size(w, kw, stride, pad)
    cols = cp.ascontiguousarray(cols)
    dx = cp.empty((n, c, h, w), dtype=cols.dtype)
    k = _kernel("raw T cols, int32 N, int32 C, int32 H, int32 W, int32 Ho, int32 Wo, "
                "int32 kh, int32 kw, int32 stride, int32 pad", "T img", _COL2IM,
                "alexnet_col2im", _wide(cols.size, dx.size))
    k(cols, n, c, h, w, ho, wo, kh, kw, stride, pad, dx)
    return dx


# ----------------------------------------------------------------------------- max pooling
_POOL_FWD = """
    idx_t t = i;
    const idx_t q = t % Wo; t /= Wo;
    const idx_t p = t % Ho;
    const idx_t nc = t / Ho;
    const T* plane = &x[nc * H * W];
    const int r0 = p * stride, c0 = q * stride;
    const int r1 = min(r0 + kernel, H), c1 = min(c0 + kernel, W);
    T best = plane[r0 * W + c0];
    int arg = 0;
    for (int yy = r0; yy < r1; ++yy) {
        for (int xx = c0; xx < c1; ++xx) {
            const T v = plane[yy * W + xx];
            if (v > best) {  // strict: ties keep the first tap in row-major order (Caffe)
                best = v;
                arg = (yy - r0) * kernel + (xx - c0);
            }
        }
    }
    out = best;
    argmax = (signed char)arg;
"""


def maxpool_forward(x, kernel, stride, ceil_mode=True, buffers=None):
    """CUDA twin of ops.maxpool_forward (ceil-mode windows clipped at the image border)."""
    n, c, h, w = x.shape
    ho = pool_out_size(h, kernel, stride, 0, ceil_mode)
    wo = pool_out_size(w, kernel, stride, 0, ceil_mode)
    x = cp.ascontiguousarray(x)
    out = cp.empty((n, c, ho, wo), dtype=x.dtype)
    argmax = cp.empty((n, c, ho, wo), dtype=cp.int8)
    k = _kernel("raw T x, int32 H, int32 W, int32 Ho, int32 Wo, int32 kernel, int32 stride",
                "T out, int8 argmax", _POOL_FWD, "alexnet_maxpool_fwd", _wide(x.size))
    k(x, h, w, ho, wo, kernel, stride, out, argmax)
    return out, argmax


def maxpool(x, kernel, stride, ceil_mode=True, buffers=None):
    """CUDA twin of ops.maxpool: the forward kernel with its argmax dropped (on the GPU the
    argmax costs next to nothing, so no second kernel)."""
    return maxpool_forward(x, kernel, stride, ceil_mode)[0]


_POOL_BWD = """
    // One thread per input pixel: gather dout from every window whose argmax is this pixel.
    idx_t t = i;
    const int xx = t % W; t /= W;
    const int yy = t % H;
    const idx_t nc = t / H;
    const int p_lo = (yy < kernel) ? 0 : (yy - kernel) / stride + 1;
    const int p_hi = min(yy / stride + 1, Ho);
    const int q_lo = (xx < kernel) ? 0 : (xx - kernel) / stride + 1;
    const int q_hi = min(xx / stride + 1, Wo);
    const idx_t base = nc * Ho * Wo;
    T acc = 0;
    for (int p = p_lo; p < p_hi; ++p) {
        for (int q = q_lo; q < q_hi; ++q) {
            const idx_t o = base + p * Wo + q;
            if (argmax[o] == (yy - p * stride) * kernel + (xx - q * stride)) acc += dout[o];
        }
    }
    dx = acc;
"""


def maxpool_backward(dout, argmax, x_shape, kernel, stride, buffers=None):
    """CUDA twin of ops.maxpool_backward: gather-style, deterministic."""
    n, c, h, w = x_shape
    ho, wo = dout.shape[2:]
    dx = cp.empty((n, c, h, w), dtype=dout.dtype)
    k = _kernel("raw T dout, raw int8 argmax, int32 H, int32 W, int32 Ho, int32 Wo, "
                "int32 kernel, int32 stride", "T dx", _POOL_BWD, "alexnet_maxpool_bwd", _wide(dx.size))
    k(cp.ascontiguousarray(dout), cp.ascontiguousarray(argmax), h, w, ho, wo, kernel, stride, dx)
    return dx


# ----------------------------------------------------------------------------- LRN (fused)
_LRN_FWD = """
    // One thread per (n, c, h, w); the 'size' squares of the channel window come from L1/L2.
    idx_t t = i;
    const idx_t hw = t % HW; t /= HW;
    const int c = t % C;
    const idx_t n = t / C;
    const T* col = &x[n * C * HW + hw];
    const int half = lsize / 2;
    T s = 0;
    for (int cc = max(c - half, 0); cc <= min(c + half, C - 1); ++cc) {
        const T v = col[cc * HW];
        s += v * v;
    }
    s = k + alpha_over_size * s;
    scale = s;
    y = col[c * HW] * pow(s, -beta);
"""

_LRN_BWD = """
    // dx_c = dout_c s_c^-beta - (2 alpha beta / lsize) x_c sum_{c' in window(c)} dout_c' y_c' / s_c'
    idx_t t = i;
    const idx_t hw = t % HW; t /= HW;
    const int c = t % C;
    const idx_t n = t / C;
    const idx_t off = n * C * HW + hw;
    const int half = lsize / 2;
    T acc = 0;
    for (int cc = max(c - half, 0); cc <= min(c + half, C - 1); ++cc) {
        const idx_t j = off + cc * HW;
        acc += dout[j] * y[j] / scale[j];
    }
    const idx_t j = off + c * HW;
    dx = dout[j] * pow(scale[j], -beta) - two_alpha_beta_over_size * x[j] * acc;
"""


def lrn_forward(x, size, alpha, beta, k, buffers=None):
    """CUDA twin of ops.lrn_forward: scale and output in one fused pass."""
    n, c, h, w = x.shape
    x = cp.ascontiguousarray(x)
    y = cp.empty_like(x)
    scale = cp.empty_like(x)
    t = x.dtype.type
    kern = _kernel("raw T x, int32 C, int32 HW, int32 lsize, T alpha_over_size, T beta, T k",
                   "T y, T scale", _LRN_FWD, "alexnet_lrn_fwd", _wide(x.size))
    kern(x, c, h * w, size, t(alpha / size), t(beta), t(k), y, scale)
    return y, scale


def lrn_backward(dout, x, y, scale, size, alpha, beta, buffers=None):
    """CUDA twin of ops.lrn_backward: the exact gradient in one fused pass."""
    n, c, h, w = x.shape
    dx = cp.empty_like(x)
    t = x.dtype.type
    kern = _kernel("raw T dout, raw T x, raw T y, raw T scale, int32 C, int32 HW, int32 lsize, "
                   "T beta, T two_alpha_beta_over_size", "T dx", _LRN_BWD, "alexnet_lrn_bwd",
                   _wide(x.size))
    kern(cp.ascontiguousarray(dout), x, y, scale, c, h * w, size, t(beta),
         t(2.0 * alpha * beta / size), dx)
    return dx


# ----------------------------------------------------------------------------- ReLU, dropout
_relu_fwd = cp.ElementwiseKernel("T x", "T y", "y = x > (T)0 ? x : (T)0", "alexnet_relu_fwd")
_relu_bwd = cp.ElementwiseKernel("T y", "T dx", "dx = y > (T)0 ? dx : (T)0", "alexnet_relu_bwd")
_dropout = cp.ElementwiseKernel("T x, T mask, T scale", "T y", "y = x * mask * scale",
                                "alexnet_dropout")


_DROPOUT_MASK = """
    unsigned long long z = key + (unsigned long long)(i + 1) * golden;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    mask = (z >> 40) >= threshold ? (T)1 : (T)0;
"""


def dropout_mask(x, key, p):
    """CUDA twin of ops.dropout_mask: the same splitmix64 stream, drawn on the device.

    The mask is allocated C-ordered whatever x's layout (the fc layers return F-ordered
    arrays), so that the kernel's element i is the i-th in C order, as in ops.dropout_mask."""
    mask = cp.empty(x.shape, dtype=x.dtype)
    k = _kernel("uint64 key, uint64 golden, uint64 threshold", "T mask", _DROPOUT_MASK,
                "alexnet_dropout_mask", _wide(x.size))
    k(cp.uint64(key), cp.uint64(GOLDEN), cp.uint64(keep_threshold(p)), mask)
    return mask


def relu_forward(x, inplace=False):
    """CUDA twin of ops.relu_forward."""
    return _relu_fwd(x, x) if inplace else _relu_fwd(x)


def relu_backward(dout, y):
    """CUDA twin of ops.relu_backward (overwrites dout)."""
    return _relu_bwd(y, dout)


def dropout_apply(x, mask, scale):
    """CUDA twin of ops.dropout_apply."""
    return _dropout(x, mask, x.dtype.type(scale))


# ----------------------------------------------------------------------------- softmax loss
_SOFTMAX_CE = """
    // One thread per row n: stable log-softmax, the weighted NLL term and the gradient row.
    const T* z = &logits[i * K];
    T* d = &dlogits[i * K];
    T m = z[0];
    for (int j = 1; j < K; ++j) m = max(m, z[j]);
    T s = 0;
    for (int j = 0; j < K; ++j) s += exp(z[j] - m);
    const T lse = m + log(s);
    const long long y = labels[i];
    const T w = weights[y] / wsum;
    for (int j = 0; j < K; ++j) d[j] = w * (exp(z[j] - lse) - (j == y ? (T)1 : (T)0));
    nll = w * (lse - z[y]);
"""


def softmax_cross_entropy(logits, labels, weights):
    """CUDA twin of ops.softmax_cross_entropy: (loss as a 0-d array, dlogits)."""
    n, k = logits.shape
    logits = cp.ascontiguousarray(logits)
    labels = cp.ascontiguousarray(labels, dtype=cp.int64)
    wsum = weights[labels].sum()
    dlogits = cp.empty_like(logits)
    nll = cp.empty((n,), dtype=logits.dtype)
    kern = _kernel("raw T logits, raw int64 labels, raw T weights, T wsum, int32 K",
                   "T nll, raw T dlogits", _SOFTMAX_CE, "alexnet_softmax_ce", False)
    kern(logits, labels, weights, wsum, k, nll, dlogits)
    return nll.sum(), dlogits


# ----------------------------------------------------------------------------- SGD (fused)
_sgd = cp.ElementwiseKernel(
    "T grad, T lr, T momentum, T weight_decay", "T w, T v",
    "v = momentum * v + lr * (grad + weight_decay * w); w -= v;", "alexnet_sgd_update")


def sgd_update(w, grad, v, lr, momentum, weight_decay):
    """CUDA twin of ops.sgd_update: Caffe's momentum update in one pass, in place on w and v."""
    t = w.dtype.type
    _sgd(grad, t(lr), t(momentum), t(weight_decay), w, v)
