"""Winograd's minimal filtering F(2x2, 3x3) for the 3x3, stride-1 convolutions (conv3 to conv5).

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016.
The 2x2 block of outputs of a 3x3 filter g over a 4x4 input tile d is

    Y = A^T [ (G g G^T) * (B^T d B) ] A          (* elementwise on 4x4 arrays)

16 multiplications where the direct sum needs 36. Summed over the input
channels, the elementwise product at each of the 16 tile positions ab becomes
one matrix product over channels:

    U[ab] = (G g G^T)[ab]      (K, C)       filter transform
    V[ab] = (B^T d B)[ab]      (tiles, C)   input transform, tiles = N * T * T
    M[ab] = V[ab] @ U[ab]^T    (tiles, K)   16 GEMMs: 2.25x fewer FLOPs than im2col's one
    y     = A^T M A            per tile, 4x4 -> 2x2 outputs (output transform)

Backward. Every transform is linear, so its gradient is its transpose, applied
in reverse order:

    dM    = A dY A^T           per tile, 2x2 -> 4x4
    dU    = dM[ab]^T @ V[ab]   -> dg = G^T dU G
    dV    = dM[ab] @ U[ab]     -> dd = B dV B^T, added into dx where the tiles lie
                                  (neighbouring 4x4 tiles overlap by 2 pixels)

The output is cut into T x T tiles of 2x2, T = ceil(Ho / 2); an odd output
size computes one extra row and column, on zero padding, and drops it. The
matrices below hold only 0 and +-1 (B, A) or are tiny (G), so the input and
output transforms are separable sums of strided views: the 1-D transform along
rows, then along columns, one whole-array addition per nonzero entry (no loop
over pixels). Tile arrays are laid out (16, T, T, N, C), channels last: each
V[ab] is then a plain (tiles, C) matrix for its GEMM, and the transforms' views
have contiguous rows of C values.

The functions take NumPy or CuPy arrays. :func:`conv_forward` and
:func:`conv_backward` have the signatures of ops.conv_forward / ops.conv_backward:
the dispatch (backend.dispatched, backend.conv_algorithm) runs them in their
place for the 3x3 stride-1 convolutions of NumPy arrays. Temporaries live in
backend.scratch buffers, and the transforms split the batch over the CPU worker
threads (backend.parallel).
"""
from __future__ import annotations

import numpy as np

from .backend import array_module, kept, parallel, scratch
from .ops import ConvCache

BT = np.array([[1, 0, -1, 0],
               [0, 1, 1, 0],
               [0, -1, 1, 0],
               [0, 1, 0, -1]])
G = np.array([[1.0, 0.0, 0.0],
              [0.5, 0.5, 0.5],
              [0.5, -0.5, 0.5],
              [0.0, 0.0, 1.0]])
AT = np.array([[1, 1, 1, 0],
               [0, 1, -1, -1]])


def tiles(size: int) -> int:
    """Tiles of 2 outputs along an output side of ``size``."""
    return (size + 1) // 2


def _signed_sum(m, terms, out, accumulate=False):
    """out = sum of s * t over (s, t) in terms, s in {-1, 0, 1} (``accumulate``: out += ...).

    One ufunc call per nonzero term, writing through ``out`` (any strided view)."""
    terms = [(int(s), t) for s, t in terms if s != 0]
    if not accumulate:
        (s0, t0), terms = terms[0], terms[1:]
        if terms and s0 != terms[0][0]:        # t0 - t1 or t1 - t0: one call
            (_, t1), terms = terms[0], terms[1:]
            m.subtract(t0, t1, out=out) if s0 > 0 else m.subtract(t1, t0, out=out)
        elif terms:                             # t0 + t1 (or -(t0 + t1), fixed below)
            (_, t1), terms = terms[0], terms[1:]
            m.add(t0, t1, out=out)
            if s0 < 0:
                m.negative(out, out=out)
        elif s0 > 0:
            m.copyto(out, t0)
        else:
            m.negative(t0, out=out)
    for s, t in terms:
        (m.add if s > 0 else m.subtract)(out, t, out=out)
    return out


def _place(dst, src, top, left):
    """dst (H', W', N, C) = src (N, C, H, W) channels last, at rows top.. and columns left..,
    zeros around it."""
    h, w = src.shape[2:]
    dst[:top] = 0
    dst[top + h:] = 0
    rows = dst[top:top + h]
    rows[:, :left] = 0
    rows[:, left + w:] = 0
    rows[:, left:left + w] = src.transpose(2, 3, 0, 1)


def grouped(a, groups: int):
    """(16, T, C) -> the (16, g, T, C/g) view whose [ab, g] are one group's GEMM operands."""
    return a.reshape(a.shape[0], a.shape[1], groups, -1).transpose(0, 2, 1, 3)


# ----------------------------------------------------------------------------- filters
# U[ab] = sum_ij G[a, i] G[b, j] w[ij]: one GEMM with kron(G, G), rows (a, b), columns (i, j).
GG = np.kron(G, G)


def filter_transform(w, groups: int = 1):
    """w: (K, C/g, 3, 3) -> U: (16, g, K/g, C/g), U[ab] = (G w G^T)[ab] (laid out as w:
    the GEMMs read U[ab]^T through a transposed view)."""
    m = array_module(w)
    k, cg = w.shape[:2]
    u = m.matmul(m.asarray(GG, dtype=w.dtype), w.reshape(k * cg, 9).T)     # (16, K*C/g)
    return u.reshape(16, groups, k // groups, cg)


def filter_transform_T(du):
    """Adjoint of filter_transform: dU (16, g, K/g, C/g) -> dw (K, C/g, 3, 3), dw = G^T dU G."""
    m = array_module(du)
    _, groups, kg, cg = du.shape
    dw = m.matmul(du.reshape(16, -1).T, m.asarray(GG, dtype=du.dtype))    # (K*C/g, 9)
    return dw.reshape(groups * kg, cg, 3, 3)


# ----------------------------------------------------------------------------- inputs
def input_transform(x, pad: int, v=None):
    """x: (N, C, H, W) -> V: (16, T*T*N, C), V[ab] = (B^T d B)[ab] for every 4x4 tile d of
    the zero-padded input (tile (ty, tx) starts at row 2*ty, column 2*tx; the rows of
    V are ordered (ty, tx, n)). Written into ``v`` when given."""
    m = array_module(x)
    n, c, h, w = x.shape
    th, tw = tiles(h + 2 * pad - 2), tiles(w + 2 * pad - 2)
    if v is None:
        v = m.empty((16, th * tw * n, c), dtype=x.dtype)
    xp_ = scratch((2 * th + 2, 2 * tw + 2, n, c), x.dtype, m, "winograd.input")
    rows = scratch((4, th, 2 * tw + 2, n, c), x.dtype, m, "winograd.rows")
    vt = v.reshape(4, 4, th, tw, n, c)

    def work(lo, hi):
        xs, rs = xp_[:, :, lo:hi], rows[..., lo:hi, :]
        _place(xs, x[lo:hi], pad, pad)
        for a in range(4):                                       # B^T along the rows
            _signed_sum(m, [(BT[a, i], xs[i:i + 2 * th:2]) for i in range(4)], rs[a])
        for a in range(4):                                       # then along the columns
            for b in range(4):
                _signed_sum(m, [(BT[b, j], rs[a][:, j:j + 2 * tw:2]) for j in range(4)],
                            vt[a, b, :, :, lo:hi])
    parallel(x, work, n)
    return v


def input_transform_T(dv, x_shape, pad: int):
    """Adjoint of input_transform: dV (16, T*T*N, C) -> dx (N, C, H, W), the tile gradients
    B dV B^T added up where the tiles overlap, the padding dropped."""
    m = array_module(dv)
    n, c, h, w = x_shape
    th, tw = tiles(h + 2 * pad - 2), tiles(w + 2 * pad - 2)
    d = dv.reshape(4, 4, th, tw, n, c)
    rows = scratch((4, th, 2 * tw + 2, n, c), dv.dtype, m, "winograd.rows")
    dxp = scratch((2 * th + 2, 2 * tw + 2, n, c), dv.dtype, m, "winograd.input")
    dx = m.empty(x_shape, dtype=dv.dtype)

    # Tile offsets 0 and 1 cover the first 2T positions once (assigned), offsets 2 and 3
    # overlap the next tile's 0 and 1 (added), and the last two positions only get those.
    def work(lo, hi):
        rs, ds = rows[..., lo:hi, :], dxp[:, :, lo:hi]
        rs[:, :, 2 * tw:] = 0
        for a in range(4):                                       # B along the columns
            for j in range(4):
                _signed_sum(m, [(BT[b, j], d[a, b, :, :, lo:hi]) for b in range(4)],
                            rs[a][:, j:j + 2 * tw:2], accumulate=j >= 2)
        ds[2 * th:] = 0
        for i in range(4):                                       # then along the rows
            _signed_sum(m, [(BT[a, i], rs[a]) for a in range(4)], ds[i:i + 2 * th:2],
                        accumulate=i >= 2)
        dx[lo:hi] = ds[pad:pad + h, pad:pad + w].transpose(2, 3, 0, 1)
    parallel(dv, work, n)
    return dx


# ----------------------------------------------------------------------------- outputs
def output_transform(mm, bias, out):
    """M: (16, T*T*N, K) -> out: (N, K, Ho, Wo) = A^T M A per 2x2 output tile, plus ``bias``
    (K,) (the rows and columns beyond Ho, Wo are dropped)."""
    m = array_module(mm)
    n, k, ho, wo = out.shape
    th, tw = tiles(ho), tiles(wo)
    t = mm.reshape(4, 4, th, tw, n, k)
    half = scratch((2, 4, th, tw, n, k), mm.dtype, m, "winograd.rows")
    y = scratch((2 * th, 2 * tw, n, k), mm.dtype, m, "winograd.output")
    b4 = bias[None, :, None, None]

    def work(lo, hi):
        hs, ys = half[..., lo:hi, :], y[:, :, lo:hi]
        for i in range(2):                                       # A^T along the rows
            for b in range(4):
                _signed_sum(m, [(AT[i, a], t[a, b, :, :, lo:hi]) for a in range(4)], hs[i, b])
        for i in range(2):                                       # then along the columns
            for j in range(2):
                _signed_sum(m, [(AT[j, b], hs[i, b]) for b in range(4)], ys[i::2, j::2])
        m.add(ys[:ho, :wo].transpose(2, 3, 0, 1), b4, out=out[lo:hi])
    parallel(mm, work, n)
    return out


def output_transform_T(dy, dm=None):
    """Adjoint of output_transform: dY (N, K, Ho, Wo) -> dM (16, T*T*N, K), dM = A dY A^T
    per tile (the dropped rows and columns count as zeros). Written into ``dm`` when given."""
    m = array_module(dy)
    n, k, ho, wo = dy.shape
    th, tw = tiles(ho), tiles(wo)
    if dm is None:
        dm = m.empty((16, th * tw * n, k), dtype=dy.dtype)
    dyp = scratch((2 * th, 2 * tw, n, k), dy.dtype, m, "winograd.output")
    half = scratch((4, 2, th, tw, n, k), dy.dtype, m, "winograd.rows")
    dmt = dm.reshape(4, 4, th, tw, n, k)

    def work(lo, hi):
        ys, hs = dyp[:, :, lo:hi], half[..., lo:hi, :]
        _place(ys, dy[lo:hi], 0, 0)
        for a in range(4):                                       # A along the rows
            for j in range(2):
                _signed_sum(m, [(AT[i, a], ys[i::2, j::2]) for i in range(2)], hs[a, j])
        for a in range(4):                                       # then along the columns
            for b in range(4):
                _signed_sum(m, [(AT[j, b], hs[a, j]) for j in range(2)], dmt[a, b, :, :, lo:hi])
    parallel(dy, work, n)
    return dm


# ----------------------------------------------------------------------------- the convolution
def conv_forward(x, w, b, stride: int, pad: int, groups: int, train: bool = True, buffers=None):
    """ops.conv_forward for a 3x3 filter and stride 1, by F(2x2, 3x3) -> (out, cache):

        V = B^T d B per tile,  U = G w G^T,  M[ab] = V[ab] @ U[ab]^T per group,  y = A^T M A + b.

    When training, V (needed by the backward's dU) goes into ``buffers``; else into scratch.
    """
    m = array_module(x)
    n, c, h, wd = x.shape
    k_out = w.shape[0]
    ho, wo = h + 2 * pad - 2, wd + 2 * pad - 2
    t = tiles(ho) * tiles(wo) * n
    v = kept(buffers, "winograd.v", (16, t, c), x.dtype, m) if train else scratch(
        (16, t, c), x.dtype, m, "winograd.v")
    input_transform(x, pad, v)                                          # (16, T, C)
    u = filter_transform(w, groups)                                     # (16, g, K/g, C/g)
    mm = scratch((16, t, k_out), x.dtype, m, "gemm")
    m.matmul(grouped(v, groups), u.transpose(0, 1, 3, 2), out=grouped(mm, groups))
    out = kept(buffers, "conv.out", (n, k_out, ho, wo), x.dtype, m)
    output_transform(mm, b, out)
    return out, (ConvCache("winograd", x.shape, v=v, u=u) if train else None)


def conv_backward(dout, cache, w, stride: int, pad: int, groups: int, dw, db, need_dx: bool = True,
                  buffers=None):
    """ops.conv_backward after :func:`conv_forward`: dW into ``dw``, db into ``db``, returns dx:

        dM = A dY A^T,  dU[ab] = dM[ab]^T @ V[ab] -> dW = G^T dU G,
        dV[ab] = dM[ab] @ U[ab] -> dx = B dV B^T, overlapping tiles added.

    dV takes the memory of the cached V, whose last reader is dU.
    """
    m = array_module(dout)
    v, u = cache.v, cache.u
    dm = output_transform_T(dout, scratch((16, v.shape[1], w.shape[0]), dout.dtype, m, "winograd.dm"))
    vg, dmg = grouped(v, groups), grouped(dm, groups)
    du = m.matmul(dmg.transpose(0, 1, 3, 2), vg)                       # (16, g, K/g, C/g)
    m.copyto(dw, filter_transform_T(du))
    dout.sum(axis=(0, 2, 3), out=db)
    if not need_dx:
        return None
    dv = vg                                                            # V's memory, see above
    m.matmul(dmg, u, out=dv)
    return input_transform_T(v, cache.x_shape, pad)
