"""Fast CPU kernels: drop-in twins of the NumPy references in ops.py.

Each function here has exactly the signature and the semantics of the function
of the same name in :mod:`alexnet_np.ops`; :func:`~alexnet_np.backend.dispatched`
sends NumPy arrays here unless ``ALEXNET_NP_CPU_KERNELS=reference`` (or
``set_cpu_kernels("reference")``) asks for the plain versions.
tests/test_cpu_kernels.py checks every one against its reference.

The results equal the references' bit for bit -- each output element goes
through the same floating-point operations in the same order, only the
schedule differs -- except where a docstring says otherwise.

Why these are faster, with plain NumPy only:

* **Cache blocking.** The references make a dozen passes over arrays of tens
  of megabytes, each pass streaming them from main memory. Here the same
  passes run over slabs of about :data:`BLOCK_BYTES`, which stay in the L2
  cache: main memory sees one read of the inputs and one write of the outputs.
* **No allocations in the loops.** Every temporary lives in a scratch buffer
  allocated once per call and thread, and every step writes with ``out=``:
  freeing and re-allocating slab-sized temporaries makes glibc hand the pages
  back to the kernel and fault them in again, which cost more than the
  arithmetic.
* **Threads.** NumPy releases the GIL inside ufunc loops and copies, so the
  slabs are shared among the runtime's worker threads (``RUNTIME.threads``), one
  per core that BLAS uses (the GEMMs never run at the same time as these kernels).
* **Outputs kept by the caller.** A fresh array of tens of megabytes costs a page
  fault and the kernel's zero-fill for every page, each training step (a third
  of a step's CPU time on the development machine); the outputs go into the
  caller's ``buffers`` (a layer's, see ops.py) instead.
* **Fewer, cheaper operations**: separable max pooling, products by boolean
  masks instead of ``np.where``, division instead of ``np.reciprocal``, a
  phase-split accumulator for the pooling backward.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import ops
from .backend import RUNTIME, kept, scratch
from .ops import conv_out_size, pool_input

# The twins of ops.py functions; backend.dispatched sends NumPy arrays to these.
__all__ = ["col2im", "im2col", "lrn_backward", "lrn_forward", "maxpool", "maxpool_backward",
           "maxpool_forward", "relu_backward", "relu_forward", "sgd_update"]


# ----------------------------------------------------------------------------- blocks
# The input slab of one block step. Smaller slabs stay closer to the core (L2 is
# 1 MB per core on Zen 4 and Skylake-X), larger ones pay NumPy's per-call overhead
# (and the GIL held during it) less often; 512 kB measured best on the development
# machine (2-core Zen 4, 32 MB L3), 128 kB and 2 MB within 30%.
BLOCK_BYTES = 512 * 1024


def parallel(work, n):
    """Run ``work(lo, hi)`` over range(n) on the runtime's CPU worker threads."""
    RUNTIME.parallel(work, n)


def _block_items(item_bytes: int) -> int:
    """How many items of ``item_bytes`` make one block (at least one)."""
    return max(1, BLOCK_BYTES // max(1, item_bytes))


def _flat(a):
    """A 1-D view of ``a`` when its memory is one contiguous run (C or F order), else None."""
    if a.flags.c_contiguous or a.flags.f_contiguous:
        return a.reshape(-1, order="A")
    return None


# ----------------------------------------------------------------------------- im2col / col2im
def im2col(x, kh: int, kw: int, stride: int, pad: int, buffers=None):
    """cols[(c, i, j), (n, ho, wo)] = xpad[n, c, ho*stride + i, wo*stride + j] (see ops.im2col).

    Faster: the same strided copy of a 6-D view of the padded input, split by
    images over the worker threads, the padded input in a scratch buffer and the
    columns in ``buffers``, instead of fresh pages.
    """
    n, c, h, w = x.shape
    ho, wo = conv_out_size(h, kh, stride, pad), conv_out_size(w, kw, stride, pad)
    xp_ = x
    if pad:
        xp_ = scratch((n, c, h + 2 * pad, w + 2 * pad), x.dtype, np, "im2col.pad")
        xp_.fill(0)
        xp_[:, :, pad:pad + h, pad:pad + w] = x
    sn, sc, sh, sw = xp_.strides
    windows = as_strided(xp_, shape=(c, kh, kw, n, ho, wo),
                         strides=(sc, sh, sw, sn, stride * sh, stride * sw), writeable=False)
    cols = kept(buffers, "im2col.cols", (c * kh * kw, n * ho * wo), x.dtype, np)
    out = cols.reshape(c, kh, kw, n, ho, wo)

    def work(lo, hi):
        out[:, :, :, lo:hi] = windows[:, :, :, lo:hi]
    parallel(work, n)
    return cols


def col2im(cols, x_shape, kh: int, kw: int, stride: int, pad: int, buffers=None):
    """dx[n, c, y, x] = sum of cols[(c, i, j), (n, ho, wo)] over ho*stride + i - pad = y,
    wo*stride + j - pad = x (see ops.col2im; the same additions in the same order, so
    identical results for finite inputs).

    Faster: the reference adds kh*kw slabs of the whole (C, N, H, W) image stack,
    each pass streaming it from memory; here a few channels' accumulator stays in
    cache for all the taps, and the channels go to the worker threads. For the
    "same" convolutions with stride 1 (conv2 to conv5) the taps of a channel are
    flat shifts of one (N*H*W)-long row, so each tap is one long contiguous add
    of the tap's row times a 0/1 mask of the positions whose target lies inside
    the image; otherwise each tap adds a strided slab of short rows.
    """
    n, c, h, w = x_shape
    ho, wo = conv_out_size(h, kh, stride, pad), conv_out_size(w, kw, stride, pad)
    taps = cols.reshape(c, kh, kw, n, ho, wo)
    dx = kept(buffers, "col2im.dx", (n, c, h, w), cols.dtype, np)
    if stride == 1 and (ho, wo) == (h, w):
        _col2im_same(taps, dx, pad)
        return dx
    hp, wp = h + 2 * pad, w + 2 * pad
    group = min(n, _block_items(hp * wp * cols.itemsize))  # images per accumulator
    groups = -(-n // group)

    def work(lo, hi):
        acc_s = np.empty((group, hp, wp), dtype=cols.dtype)
        for item in range(lo, hi):
            ch, g = divmod(item, groups)
            n0, n1 = g * group, min(n, (g + 1) * group)
            acc = acc_s[:n1 - n0]
            acc.fill(0)
            for i in range(kh):
                for j in range(kw):
                    dst = acc[:, i:i + stride * ho:stride, j:j + stride * wo:stride]
                    np.add(dst, taps[ch, i, j, n0:n1], out=dst)
            dx[n0:n1, ch] = acc[:, pad:pad + h, pad:pad + w]
    parallel(work, c * groups)
    return dx


def _col2im_same(taps, dx, pad):
    """col2im for stride 1 and output size = input size: tap (i, j) moves the image by
    (i - pad, j - pad), which in the flattened (N*H*W) row of a channel is a shift by
    (i - pad)*W + (j - pad); the mask zeroes what would leave the image (or wrap into
    the next row or image)."""
    c, kh, kw, n, h, w = taps.shape
    size = n * h * w
    rows = taps.reshape(c, kh, kw, size)
    ys, xs = np.arange(h)[:, None], np.arange(w)[None, :]
    masks = np.empty((kh, kw, size), dtype=taps.dtype)
    for i in range(kh):
        for j in range(kw):
            inside = (ys + i - pad >= 0) & (ys + i - pad < h) & (xs + j - pad >= 0) & (xs + j - pad < w)
            masks[i, j] = np.tile(inside.reshape(-1), n)
    per = _block_items(2 * size * taps.itemsize)  # channels per block: accumulator and product

    def work(lo, hi):
        acc_s, part_s = np.empty((2, per, size), dtype=taps.dtype)
        for c0 in range(lo, hi, per):
            c1 = min(c0 + per, hi)
            acc, part = acc_s[:c1 - c0], part_s[:c1 - c0]
            acc.fill(0)
            for i in range(kh):
                for j in range(kw):
                    shift = (i - pad) * w + (j - pad)
                    a = max(0, -shift)  # sources [a, b) have their targets inside the row
                    b = max(a, min(size, size - shift))
                    np.multiply(rows[c0:c1, i, j, a:b], masks[i, j, a:b], out=part[:, :b - a])
                    dst = acc[:, a + shift:b + shift]
                    np.add(dst, part[:, :b - a], out=dst)
            dx[:, c0:c1] = acc.reshape(c1 - c0, n, h, w).transpose(1, 0, 2, 3)
    parallel(work, c)


# ----------------------------------------------------------------------------- max pooling
def maxpool_forward(x, kernel: int, stride: int, ceil_mode: bool = True, buffers=None):
    """Max pooling and its int8 argmax (tap i*kernel + j), ties to the first tap in row-major
    order (see ops.maxpool_forward).

    Faster: separable, on long contiguous runs, without masked assignments.

    1. The rows of a slab of planes are split by phase (row mod stride), so that
       the rows i = 0..kernel-1 of all windows become *shifted flat slices* of
       the phase arrays; ``colmax`` = the maximum over them, and ``first`` =
       kernel * (first row attaining it), from comparisons: each step is one
       NumPy call over the whole slab.
    2. ``colmax`` and ``first`` are reduced over the window's columns the same
       way (shifted flat slices; computed at every column and the window
       origins picked out at the end). The reference's tap -- the first in
       row-major order among the maximal ones -- is the smallest key
       first + column over the columns whose colmax is the window's maximum; the
       other columns get a penalty kernel^2 that keeps them out of the minimum.

    Identical outputs and argmax, except for NaN inputs and the sign of a zero maximum.
    """
    if 2 * kernel * kernel > 127:  # the keys must fit in int8
        return ops.maxpool_forward.reference(x, kernel, stride, ceil_mode)
    pooled = pool_input(x, kernel, stride, ceil_mode, -np.inf)
    xw, ho, wo = pooled.x, pooled.ho, pooled.wo
    n, c, hp, wp = xw.shape
    s = stride
    hq = ho + (kernel - 1) // s        # rows per phase array that the windows use
    planes = xw.reshape(n * c, hp, wp)
    out = kept(buffers, "maxpool.out", (n * c, ho, wo), x.dtype, np)
    argmax = kept(buffers, "maxpool.argmax", (n * c, ho, wo), np.int8, np)
    k, kk = np.int8(kernel), np.int8(kernel * kernel)
    block = _block_items(hp * wp * x.itemsize)

    def work(lo, hi):
        phases_s = np.zeros((s, block, hq, wp), dtype=x.dtype)  # rows past the planes stay 0
        colmax_s, max_s = np.empty((2, block * hq * wp), dtype=x.dtype)
        first_s, key_s, arg_s = np.empty((3, block * hq * wp), dtype=np.int8)
        less_s = np.empty(block * hq * wp, dtype=bool)
        for a in range(lo, hi, block):
            b = min(a + block, hi)
            phases = phases_s[:, :b - a]
            for r in range(s):
                src = planes[a:b, r:hq * s:s]  # rows r, r + s, ... of every plane
                np.copyto(phases[r, :, :src.shape[1]], src)
            flat = phases.reshape(s, -1)
            span = flat.shape[1] - (kernel - 1) // s * wp   # window-origin rows, flattened
            rows = [flat[i % s, i // s * wp:i // s * wp + span] for i in range(kernel)]
            colmax, first, key, less = colmax_s[:span], first_s[:span], key_s[:span], less_s[:span]
            _first_max(rows, colmax, first, key, less, k)
            first *= k
            span2 = span - (kernel - 1)                     # window origins along the columns
            cols = [colmax[j:j + span2] for j in range(kernel)]
            wmax, arg = max_s[:span2], arg_s[:span2]
            _first_max(cols, wmax, arg, key[:span2], less[:span2], kk,
                       base=[first[j:j + span2] for j in range(kernel)])
            # window (p, q) of plane m starts at flat position (m*hq + p)*wp + q*s
            picked = (slice(None), slice(0, ho), slice(0, (wo - 1) * s + 1, s))
            np.copyto(out[a:b], max_s[:(b - a) * hq * wp].reshape(b - a, hq, wp)[picked])
            np.copyto(argmax[a:b], arg_s[:(b - a) * hq * wp].reshape(b - a, hq, wp)[picked])
    parallel(work, n * c)
    return out.reshape(n, c, ho, wo), argmax.reshape(n, c, ho, wo)


def maxpool(x, kernel: int, stride: int, ceil_mode: bool = True, buffers=None):
    """maxpool_forward's output without the argmax (inference), a third to a half of its time.

    Separable, on a slab of planes at a time: the maximum over the window's rows
    (kernel strided views of the slab), then over its columns (kernel strided
    views of that), one NumPy call per tap. The maximum is exact, so the output
    equals the reference's."""
    pooled = pool_input(x, kernel, stride, ceil_mode, -np.inf)
    xw, ho, wo = pooled.x, pooled.ho, pooled.wo
    n, c, hp, wp = xw.shape
    s = stride
    planes = xw.reshape(n * c, hp, wp)
    out = kept(buffers, "maxpool.infer", (n * c, ho, wo), x.dtype, np)
    block = _block_items(hp * wp * x.itemsize)

    def work(lo, hi):
        rowmax_s = np.empty((block, ho, wp), dtype=x.dtype)
        for a in range(lo, hi, block):
            b = min(a + block, hi)
            rowmax = rowmax_s[:b - a]
            _max_of([planes[a:b, i:i + s * (ho - 1) + 1:s] for i in range(kernel)], rowmax)
            _max_of([rowmax[:, :, j:j + s * (wo - 1) + 1:s] for j in range(kernel)], out[a:b])
    parallel(work, n * c)
    return out.reshape(n, c, ho, wo)


def _max_of(taps, best):
    """best = the elementwise maximum of ``taps`` (arrays of best's shape, any strides)."""
    np.copyto(best, taps[0])
    for t in taps[1:]:
        np.maximum(best, t, out=best)


def _first_max(taps, best, first, key, less, penalty, base=None):
    """best = the elementwise maximum of ``taps``; first = the index of the first tap
    attaining it, as min over i of i + penalty*[tap_i < best] (penalty > the last index);
    with ``base`` (one int8 array per tap: the row keys of the column stage) tap i's
    index is base[i] + i. ``key`` and ``less`` are scratch like ``first``."""
    _max_of(taps, best)
    for i, t in enumerate(taps):
        dst = first if i == 0 else key
        np.less(t, best, out=less)
        np.multiply(less.view(np.int8), penalty, out=dst)
        if base is not None:
            dst += base[i]
        if i:
            dst += np.int8(i)
            np.minimum(first, dst, out=first)


def maxpool_backward(dout, argmax, x_shape, kernel: int, stride: int, buffers=None):
    """dx[n, c, p*stride + i, q*stride + j] += dout[n, c, p, q] where argmax == i*kernel + j
    (see ops.maxpool_backward; the same additions in the same order).

    Faster: the accumulator is stored phase by phase -- acc[pi, pj, u, v] holds
    dx[u*stride + pi, v*stride + pj] -- so that the tap (i, j) adds the routed
    gradient at offset (i // stride, j // stride) of one phase plane. With the
    gradient padded to the planes' row length (zeros beyond the last column),
    that shift is a flat offset and each add one long contiguous run per plane.
    One interleaving copy per phase writes dx. Cache-sized slabs of planes over
    the worker threads; routing by a product with the boolean mask (several
    times cheaper than ``np.where``). Identical results for finite dout.
    """
    n, c, h, w = x_shape
    ho, wo = dout.shape[2:]
    s = stride
    hq = -(-max(h, (ho - 1) * s + kernel) // s)
    wq = -(-max(w, (wo - 1) * s + kernel) // s)
    plane = (hq + 1) * wq  # one spare row: the shifted runs may reach past the last row
    d3, a3 = dout.reshape(n * c, ho, wo), argmax.reshape(n * c, ho, wo)
    dx = kept(buffers, "maxpool.dx", (n * c, h, w), dout.dtype, np)
    block = _block_items(s * s * plane * dout.itemsize)

    def work(lo, hi):
        acc_s = np.empty((block, s, s, plane), dtype=dout.dtype)
        dpad_s, part_s = np.zeros((2, block, ho, wq), dtype=dout.dtype)
        apad_s = np.full((block, ho, wq), -1, dtype=np.int8)  # -1 in the padding: never routed
        mask_s = np.empty((block, ho * wq), dtype=bool)
        for a in range(lo, hi, block):
            b = min(a + block, hi)
            acc, dpad, apad, part, mask = acc_s[:b - a], dpad_s[:b - a], apad_s[:b - a], \
                part_s[:b - a].reshape(b - a, -1), mask_s[:b - a]
            np.copyto(dpad[:, :, :wo], d3[a:b])
            np.copyto(apad[:, :, :wo], a3[a:b])
            acc.fill(0)
            for i in range(kernel):
                for j in range(kernel):
                    np.equal(apad.reshape(b - a, -1), i * kernel + j, out=mask)
                    np.multiply(dpad.reshape(b - a, -1), mask, out=part)
                    at = (i // s) * wq + j // s
                    dst = acc[:, i % s, j % s, at:at + ho * wq]
                    np.add(dst, part, out=dst)
            phases = acc[:, :, :, :hq * wq].reshape(b - a, s, s, hq, wq)
            for pi in range(s):
                for pj in range(s):
                    dx[a:b, pi::s, pj::s] = phases[:, pi, pj, :len(range(pi, h, s)), :len(range(pj, w, s))]
    parallel(work, n * c)
    return dx.reshape(x_shape)


# ----------------------------------------------------------------------------- LRN
def _lrn_slabs(x, size):
    """Cut LRN work into slabs of whole channel planes of one image, about BLOCK_BYTES each.

    Returns (x as (N, C, H*W), channels per slab, number of items, slab), where
    slab(item) is (image, first channel, end channel). A slab is one contiguous
    piece of memory, which the hardware prefetcher streams well (a column tile
    across all channels would be C short streams).
    """
    n, c = x.shape[:2]
    x3 = x.reshape(n, c, -1)
    per = min(c, _block_items(x3.shape[2] * x.itemsize))
    slabs = -(-c // per)

    def slab(item):
        i, b = divmod(item, slabs)
        return i, b * per, min(c, (b + 1) * per)
    return x3, per, n * slabs, slab


def _with_halo(buf, c, c0, c1, r):
    """View of scratch ``buf`` for channels c0 - r .. c1 + r, zero where that leaves [0, c),
    and the part of it (channels max(0, c0 - r) .. min(c, c1 + r)) that the caller fills."""
    h = buf[:, :c1 - c0 + 2 * r]
    lo, hi = max(0, r - c0), h.shape[1] - max(0, c1 + r - c)
    h[:, :lo] = 0
    h[:, hi:] = 0
    return h, h[:, lo:hi]


def _window_sum(h, size, out):
    """out[:, c] = sum of h[:, c + r + d] for d = 0, -1, +1, ..., -r, +r (r = size//2): the
    channel-window sum of ops._channel_window_sum, in its order of additions, from ``h``
    holding out's channels plus r halo channels on each side (zeros beyond the image's)."""
    r, m = size // 2, out.shape[1]
    if r == 0:
        np.copyto(out, h)
        return
    np.add(h[:, r:r + m], h[:, r - 1:r - 1 + m], out=out)
    out += h[:, r + 1:r + 1 + m]
    for d in range(2, r + 1):
        out += h[:, r - d:r - d + m]
        out += h[:, r + d:r + d + m]


def _neg_pow(a, beta: float, out, tmp):
    """out = a^(-beta) as ops._neg_pow computes it (two square roots for beta = 0.75), into
    ``out`` with scratch ``tmp``; 1/r as a division, which is correctly rounded like
    np.reciprocal but several times faster."""
    if beta == 0.75:
        np.sqrt(a, out=out)
        np.sqrt(out, out=tmp)
        out *= tmp
        np.divide(1, out, out=out)
    else:
        np.power(a, -beta, out=out)


def lrn_forward(x, size: int, alpha: float, beta: float, k: float, buffers=None):
    """scale_c = k + alpha/size * sum_{|c'-c| <= size//2} x_{c'}^2,  y_c = x_c * scale_c^(-beta)
    (see ops.lrn_forward; the same operations in the same order).

    Faster: the reference's ten-odd elementwise passes over the whole batch run
    on cache-sized slabs of channel planes (with the window's halo channels),
    into scratch buffers, over the worker threads.
    """
    x3, per, items, slab = _lrn_slabs(x, size)
    c, r = x3.shape[1], size // 2
    y = kept(buffers, "lrn.y", x3.shape, x.dtype, np)
    scale = kept(buffers, "lrn.scale", x3.shape, x.dtype, np)

    def work(lo, hi):
        halo_s = np.empty((1, per + 2 * r, x3.shape[2]), dtype=x.dtype)
        tmp_s = np.empty((1, per, x3.shape[2]), dtype=x.dtype)
        for item in range(lo, hi):
            i, c0, c1 = slab(item)
            h, inner = _with_halo(halo_s, c, c0, c1, r)
            xi = x3[i:i + 1, max(0, c0 - r):min(c, c1 + r)]
            np.multiply(xi, xi, out=inner)
            s, yb = scale[i:i + 1, c0:c1], y[i:i + 1, c0:c1]
            _window_sum(h, size, s)
            s *= alpha / size
            s += k
            _neg_pow(s, beta, yb, tmp_s[:, :c1 - c0])
            yb *= x3[i:i + 1, c0:c1]
    parallel(work, items)
    return y.reshape(x.shape), scale.reshape(x.shape)


def lrn_backward(dout, x, y, scale, size: int, alpha: float, beta: float, buffers=None):
    """dx_c = dout_c scale_c^(-beta) - (2 alpha beta / size) x_c sum_{|c'-c| <= size//2}
    dout_{c'} y_{c'} / scale_{c'} (see ops.lrn_backward; the same operations in the same order).

    Faster: cache-sized slabs of channel planes, scratch buffers and worker
    threads, as lrn_forward.
    """
    x3, per, items, slab = _lrn_slabs(x, size)
    c, r = x3.shape[1], size // 2
    d3, y3, s3 = dout.reshape(x3.shape), y.reshape(x3.shape), scale.reshape(x3.shape)
    dx = kept(buffers, "lrn.dx", x3.shape, dout.dtype, np)

    def work(lo, hi):
        halo_s = np.empty((1, per + 2 * r, x3.shape[2]), dtype=x.dtype)
        win_s, tmp_s = np.empty((2, 1, per, x3.shape[2]), dtype=x.dtype)
        for item in range(lo, hi):
            i, c0, c1 = slab(item)
            m = c1 - c0
            h, inner = _with_halo(halo_s, c, c0, c1, r)
            hc = slice(max(0, c0 - r), min(c, c1 + r))
            np.multiply(d3[i:i + 1, hc], y3[i:i + 1, hc], out=inner)
            np.divide(inner, s3[i:i + 1, hc], out=inner)
            win, tmp, out = win_s[:, :m], tmp_s[:, :m], dx[i:i + 1, c0:c1]
            _window_sum(h, size, win)
            _neg_pow(s3[i:i + 1, c0:c1], beta, out, tmp)
            out *= d3[i:i + 1, c0:c1]
            np.multiply(x3[i:i + 1, c0:c1], 2.0 * alpha * beta / size, out=tmp)
            tmp *= win
            out -= tmp
    parallel(work, items)
    return dx.reshape(x.shape)


# ----------------------------------------------------------------------------- ReLU
def relu_forward(x, inplace: bool = False):
    """y = max(x, 0), into x with ``inplace`` (see ops.relu_forward).

    Faster: the memory-bound pass is split over the worker threads.
    """
    y = x if inplace else np.empty_like(x)
    xf, yf = _flat(x), _flat(y)
    if xf is None or yf is None or x.strides != y.strides:  # scattered memory: one plain pass
        return np.maximum(x, 0, out=y)

    def work(lo, hi):
        np.maximum(xf[lo:hi], 0, out=yf[lo:hi])
    parallel(work, xf.size)
    return y


def relu_backward(dout, y):
    """dx = dout * [y > 0], overwriting dout (see ops.relu_backward).

    Faster: cache-sized chunks over the worker threads; the mask never leaves cache.
    """
    df, yf = _flat(dout), _flat(y)
    if df is None or yf is None or dout.strides != y.strides:
        return np.multiply(dout, y > 0, out=dout)
    block = _block_items(dout.itemsize)

    def work(lo, hi):
        mask_s = np.empty(block, dtype=bool)
        for a in range(lo, hi, block):
            b = min(a + block, hi)
            mask = mask_s[:b - a]
            np.greater(yf[a:b], 0, out=mask)
            np.multiply(df[a:b], mask, out=df[a:b])
    parallel(work, df.size)
    return dout


# ----------------------------------------------------------------------------- SGD
def sgd_update(w, grad, v, lr: float, momentum: float, weight_decay: float):
    """v <- momentum * v + lr * (grad + weight_decay * w);  w <- w - v, in place
    (see ops.sgd_update; the same operations in the same order).

    Faster: the reference makes six passes over the parameter and allocates two
    parameter-sized temporaries; here all five steps run on one cache-sized
    chunk at a time, over the worker threads, so that w, grad and v are read
    once and w and v written once.
    """
    wf, gf, vf = _flat(w), _flat(grad), _flat(v)
    if wf is None or gf is None or vf is None or not (w.strides == grad.strides == v.strides):
        return ops.sgd_update.reference(w, grad, v, lr, momentum, weight_decay)
    t = w.dtype.type
    block = _block_items(w.itemsize)

    def work(lo, hi):
        step_s = np.empty(block, dtype=w.dtype)
        for a in range(lo, hi, block):
            b = min(a + block, hi)
            wb, vb, step = wf[a:b], vf[a:b], step_s[:b - a]
            if weight_decay:
                np.multiply(wb, t(weight_decay), out=step)
                step += gf[a:b]
            else:
                np.copyto(step, gf[a:b])
            step *= t(lr)
            vb *= t(momentum)
            vb += step
            wb -= vb
    parallel(work, wf.size)
