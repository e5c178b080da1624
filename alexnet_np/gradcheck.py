"""Numeric gradient checking by central differences (the test oracle for every backward pass).

For a layer with output y = f(x, W) we check the scalar L = sum(y * dout) for a
random ``dout``: its exact gradients are what ``backward(dout)`` must return.
Each entry is estimated with the fourth-order central difference

    dL/dx_i ~ [L(x - 2h e_i) - 8 L(x - h e_i) + 8 L(x + h e_i) - L(x + 2h e_i)] / (12 h),

whose truncation error (~h^4) is negligible at h = 1e-4 and whose rounding
error in float64 is ~1e-12 |L|, so a correct backward agrees to ~1e-9 of the
gradient's scale and anything above 1e-6 is a real mistake. Inputs must stay
2h away from kinks (ReLU at 0, ties in max pooling).
"""
from __future__ import annotations

import numpy as np


def numeric_gradient(f, x, eps=1e-4, indices=None):
    """d f / d x for a scalar function ``f()`` of the array ``x`` (perturbed in place).

    ``indices`` (flat positions) restricts the estimate to a sample of entries;
    the others are left NaN.
    """
    grad = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    if indices is not None:
        gflat[:] = np.nan
    for i in (range(flat.size) if indices is None else indices):  # test-only loop
        old = flat[i]
        vals = []
        for step in (-2, -1, 1, 2):
            flat[i] = old + step * eps
            vals.append(float(f()))
        flat[i] = old
        gflat[i] = (vals[0] - 8 * vals[1] + 8 * vals[2] - vals[3]) / (12 * eps)
    return grad


def rel_error(a, b, scale=None):
    """Max relative error: max_i |a_i - b_i| / max(max|a|, max|b|).

    Normalizing by the gradient's scale (not entry by entry) keeps entries that
    happen to be near zero from reporting rounding noise as error. When ``a`` and
    ``b`` are a sample of a gradient's entries, pass the whole gradient's scale
    (max |entry|) as ``scale``: a sample of exact zeros against rounding noise of
    1e-11 is no error.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"gradient shapes differ: {a.shape} vs {b.shape}")
    if not a.size:
        return 0.0
    scale = max(np.max(np.abs(a)), np.max(np.abs(b)), scale or 0.0, 1e-300)
    return float(np.max(np.abs(a - b)) / scale)


def check_layer(layer, x, train=True, seed=0, eps=1e-4):
    """Compare ``layer.backward`` with numeric gradients for the input and every parameter.

    Returns {"x": err, "weight": err, ...} (relative errors). ``layer`` must be
    deterministic across calls (dropout needs a fixed mask).
    """
    rng = np.random.default_rng(seed)
    dout = rng.standard_normal(layer.forward(x.copy(), train).shape)

    def loss():
        return np.sum(layer.forward(x.copy(), train) * dout)

    layer.forward(x.copy(), train)
    dx = layer.backward(dout.copy())
    analytic = {k: np.array(v) for k, v in layer.grads.items()}
    errors = {}
    if dx is not None:
        errors["x"] = rel_error(dx, numeric_gradient(loss, x, eps))
    for name, p in layer.params.items():
        errors[name] = rel_error(analytic[name], numeric_gradient(loss, p, eps))
    return errors
