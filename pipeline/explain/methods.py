"""Attribution methods: how much each input region or feature-map unit supports a class.

x: the network input (N, 3, S, S); y_t: the target's pre-softmax logit; p_t its softmax probability.
Every gradient method is one forward and one backward per batch (``AlexNet.activation_gradient``):

* :func:`grad_cam` (Selvaraju et al. 2017), at a conv layer's output after its ReLU, A (N, K, h, w):
  alpha_k = mean_ij dy_t/dA_kij,  map = ReLU(sum_k alpha_k A_k)            -> (N, h, w)
* :func:`grad_cam_pp` (Chattopadhay et al. 2018, closed form of eq. 19 for y = exp(y_t)), g = dy_t/dA:
  a_kij = g^2 / (2 g^2 + (sum_ab A_kab) g^3)  (0 where g = 0),
  w_k = sum_ij a_kij ReLU(g_kij),  map = ReLU(sum_k w_k A_k)              -> (N, h, w)
* :func:`input_gradient`: dy_t/dx summed over the three input channels (the gray image
  enters replicated, so this is the gradient with respect to it)        -> (N, S, S)
* :func:`integrated_gradients` (Sundararajan et al. 2017), midpoint rule with m steps:
  IG = (x - x0) * (1/m) sum_{s<m} dy_t/dx (x0 + (s + 1/2)/m (x - x0)), summed over channels;
  completeness: sum IG = y_t(x) - y_t(x0), checked and returned
* :func:`occlusion` (Zeiler & Fergus 2014): p_t(x) - p_t(x with one square patch set to the
  baseline), one value per patch position                                 -> (N, nh, nw)

Maps come back as host NumPy float32 arrays, unnormalized; :func:`to_image` brings them to the
stored image's size (bilinear, pixel centres aligned); :func:`compute_maps` gives any method's maps
at that size, non-negative, as the checks and figures use them.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from alexnet_np import softmax
from alexnet_np.backend import array_module, to_numpy

METHODS = ("gradcam", "gradcam++", "gradient", "integrated-gradients", "occlusion")


# ----------------------------------------------------------------------------- gradient methods
def _one_hot(model, n, target):
    """(n, num_classes) seed selecting logit ``target`` (an int, or one per image) of each image."""
    t = np.broadcast_to(np.asarray(target, dtype=np.int64), (n,))
    if t.min() < 0 or t.max() >= model.num_classes:
        raise ValueError(f"target must lie in [0, {model.num_classes - 1}], got {np.unique(t).tolist()}")
    seed = np.zeros((n, model.num_classes), np.float32)
    seed[np.arange(n), t] = 1.0
    return seed


def _relu_of(model, layer):
    """The name of the ReLU that runs in place on ``layer``'s output (conv5 -> relu5)."""
    names = [n for n, _ in model.layers]
    if layer not in names:
        raise KeyError(f"no layer {layer!r}; layers are {names}")
    following = names[names.index(layer) + 1] if layer != names[-1] else None
    if not (following or "").startswith("relu"):
        raise ValueError(f"layer {layer!r} is not followed by a ReLU; Grad-CAM needs a conv layer (conv1..conv5)")
    return following


def _cam_inputs(model, x, target, layer):
    x = model.xp.asarray(x, dtype=model.dtype)
    return model.activation_gradient(x, _one_hot(model, len(x), target), _relu_of(model, layer))


def grad_cam(model, x, target, layer="conv5"):
    """Grad-CAM maps (N, h, w) at ``layer``'s resolution, unnormalized.

    A = the layer's output after its ReLU, g = d logit_target / dA (pre-softmax logit):
    alpha_k = mean over (i, j) of g_kij;  map = ReLU(sum_k alpha_k A_k).
    ``target``: a class index, or one per image.
    """
    r = _cam_inputs(model, x, target, layer)
    m = array_module(r.activation)
    alpha = r.gradient.mean(axis=(2, 3))
    return to_numpy(m.maximum(m.einsum("nk,nkij->nij", alpha, r.activation), 0))


def grad_cam_pp(model, x, target, layer="conv5"):
    """Grad-CAM++ maps (N, h, w), the closed form of Chattopadhay et al. 2018, eq. 19.

    With A and g = d logit_target / dA as in :func:`grad_cam` (taking the score exp(logit),
    whose higher derivatives are powers of g):
    a_kij = g_kij^2 / (2 g_kij^2 + (sum_ab A_kab) g_kij^3)   (a = 0 where g = 0),
    w_k = sum_ij a_kij ReLU(g_kij);   map = ReLU(sum_k w_k A_k).
    A 1e-6 in the denominator guards 0/0, as pytorch-grad-cam's GradCAMPlusPlus does.
    """
    r = _cam_inputs(model, x, target, layer)
    m = array_module(r.activation)
    g, a = r.gradient, r.activation
    g2 = g * g
    denominator = 2 * g2 + a.sum(axis=(2, 3), keepdims=True) * g2 * g + 1e-6
    aij = m.where(g != 0, g2 / denominator, 0)
    w = (aij * m.maximum(g, 0)).sum(axis=(2, 3))
    return to_numpy(m.maximum(m.einsum("nk,nkij->nij", w, a), 0))


@contextlib.contextmanager
def input_gradients(model):
    """Switch on conv1's input gradient for the duration (training leaves it off: its input is the
    image), restoring the previous setting afterwards, also on error."""
    conv1 = model.layer("conv1")
    before = conv1.needs_input_grad
    conv1.needs_input_grad = True
    try:
        yield model
    finally:
        conv1.needs_input_grad = before


def _input_grad(model, x, seed):
    with input_gradients(model):
        r = model.activation_gradient(x, seed, None)
    return r.logits, r.gradient


def input_gradient(model, x, target):
    """d logit_target / d gray image (N, S, S): the input gradient summed over the 3 channels."""
    x = model.xp.asarray(x, dtype=model.dtype)
    _, g = _input_grad(model, x, _one_hot(model, len(x), target))
    return to_numpy(g.sum(axis=1))


@dataclass
class IntegratedGradients:
    """Integrated gradients of a batch and their completeness check."""

    attributions: np.ndarray   # (N, S, S), summed over the input channels
    total: np.ndarray          # (N,) sum of the attributions
    delta: np.ndarray          # (N,) logit_target(x) - logit_target(baseline)
    relative_error: np.ndarray  # (N,) |total - delta| / |delta|
    steps: int


def integrated_gradients(model, x, target, baseline=0.0, steps=64):
    """Integrated gradients of the target's logit from ``baseline`` (a scalar or an input-shaped
    array; 0 = the mean image, since inputs are mean-subtracted) to x, midpoint rule:

    IG = (x - x0) * (1/m) sum_{s=0}^{m-1} d logit_t/dx (x0 + (s + 1/2)/m (x - x0)),
    summed over the three channels. Completeness (Sundararajan et al. 2017, their check):
    sum IG = logit_t(x) - logit_t(x0) as m grows; both sides are returned.
    One forward and one backward of the batch per step.
    """
    m = model.xp
    x = m.asarray(x, dtype=model.dtype)
    x0 = m.broadcast_to(m.asarray(baseline, dtype=model.dtype), x.shape)
    seed = _one_hot(model, len(x), target)
    total_grad = m.zeros_like(x)
    for s in range(steps):
        _, g = _input_grad(model, x0 + model.dtype.type((s + 0.5) / steps) * (x - x0), seed)
        total_grad += g
    ig = ((x - x0) * total_grad / model.dtype.type(steps)).sum(axis=1)
    rows = np.arange(len(x))
    t = seed.argmax(axis=1)
    end = to_numpy(model.forward(x, train=False))[rows, t].astype(np.float64)
    start = to_numpy(model.forward(m.ascontiguousarray(x0), train=False))[rows, t].astype(np.float64)
    ig = to_numpy(ig)
    total = ig.reshape(len(x), -1).sum(axis=1, dtype=np.float64)
    delta = end - start
    return IntegratedGradients(ig, total, delta, np.abs(total - delta) / np.maximum(np.abs(delta), 1e-12), steps)


def _softmax_target(model, x, target_rows):
    p = softmax(model.forward(x, train=False), axis=1)
    return to_numpy(p)[np.arange(len(x)), target_rows]


def occlusion(model, x, target, patch, stride, baseline=0.0):
    """Occlusion maps (N, nh, nw): p_t(x) - p_t(x with the patch at (i*stride, j*stride) set to
    ``baseline``), for square patches of ``patch`` pixels, nh = nw = (S - patch) // stride + 1.
    One test-mode forward of the batch per patch position; a positive value means the patch
    supported the target."""
    m = model.xp
    x = m.asarray(x, dtype=model.dtype)
    s = x.shape[-1]
    if not 0 < patch <= s or stride < 1:
        raise ValueError(f"occlusion needs 0 < patch <= {s} and stride >= 1, got patch={patch}, stride={stride}")
    t = np.broadcast_to(np.asarray(target, dtype=np.int64), (len(x),))
    starts = range(0, s - patch + 1, stride)
    full = _softmax_target(model, x, t)
    out = np.empty((len(x), len(starts), len(starts)), np.float32)
    occluded = m.empty_like(x)
    for i, r in enumerate(starts):
        for j, c in enumerate(starts):
            occluded[...] = x
            occluded[:, :, r:r + patch, c:c + patch] = baseline
            out[:, i, j] = full - _softmax_target(model, occluded, t)
    return out


def to_image(maps, shape):
    """Bilinear upsampling of maps (N, h, w) (or one (h, w) map) to ``shape`` (H, W), with pixel
    centres aligned: output pixel u samples the map at (u + 1/2) h / H - 1/2, clamped to the edge."""
    maps = np.asarray(maps, dtype=np.float32)
    single = maps.ndim == 2
    maps = maps[None] if single else maps

    def axis(n_in, n_out):
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(np.int64)
        return lo, np.minimum(lo + 1, n_in - 1), (pos - lo).astype(np.float32)

    r0, r1, fr = axis(maps.shape[1], shape[0])
    c0, c1, fc = axis(maps.shape[2], shape[1])
    rows = maps[:, r0] * (1 - fr)[None, :, None] + maps[:, r1] * fr[None, :, None]
    out = rows[:, :, c0] * (1 - fc) + rows[:, :, c1] * fc
    return out[0] if single else out


def compute_maps(model, x, target, method, *, layer="conv5", steps=64, patch=None, stride=None):
    """Maps of one method for a batch, at the stored image's resolution (N, S, S), non-negative:
    CAM maps upsampled, gradient maps as absolute values, occlusion maps upsampled and clipped at 0.
    Returns (maps, extra) where extra holds the integrated-gradients record (else None)."""
    size = model.input_size
    if method == "gradcam":
        return to_image(grad_cam(model, x, target, layer), (size, size)), None
    if method == "gradcam++":
        return to_image(grad_cam_pp(model, x, target, layer), (size, size)), None
    if method == "gradient":
        return np.abs(input_gradient(model, x, target)), None
    if method == "integrated-gradients":
        ig = integrated_gradients(model, x, target, steps=steps)
        return np.abs(ig.attributions), ig
    if method == "occlusion":
        patch = patch or max(1, size // 8)
        stride = stride or max(1, patch // 2)
        return np.maximum(to_image(occlusion(model, x, target, patch, stride), (size, size)), 0), None
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
