"""Where the network looks: attribution maps, and whether they fall on the lesions.

The paper ends: "we are not yet able to clearly visualize and clinically interpret what the
identified nuanced imaging features are". The network's backward pass is written out here, and
the synthetic cohorts know where every lesion is (``findings.csv``), so this module draws
attribution maps and *measures* them against the ground truth.

Methods (x: the network input (N, 3, S, S), y_t: the target's pre-softmax logit, p_t its
softmax probability; every gradient method is one forward and one backward per batch,
``AlexNet.activation_gradient``):

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
stored image's size (bilinear, pixel centres aligned). Checks:

* :func:`pointing_game` (Zhang et al. 2016): is the map's maximum inside a ground-truth finding
  of the image's class (within a tolerance in pixels of the original image)? Beside it the chance
  level, the share of the breast the findings' disks cover, a one-sided binomial test of the hits
  against it, and the share of the map's mass inside the findings (a map spread evenly over the
  breast scores the chance level on both).
* :func:`cascading_randomization` (Adebayo et al. 2018): re-initialize the layers from fc8 down,
  one more each time; the rank correlation with the trained model's maps must fall, or the map
  does not depend on what the network learned.

``python run.py explain RUN_DIR`` (:func:`main`) runs all of this over a finished run.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

import data_prep
from alexnet_np import to_network_input
from alexnet_np.backend import array_module, to_numpy
from data_prep.fileio import atomic_output
from data_prep.figures import _findings_by_image

from .config import StudyConfig, UserError
from .data import ImageSet
from .modelfile import load_model, score
from .scenarios import LABEL_NAMES, get_scenario
from .study import read_predictions

METHODS = ("gradcam", "gradcam++", "gradient", "integrated-gradients", "occlusion")
#: Pointing-game tolerance in pixels of the original image (Zhang et al. 2016 used 15).
TOLERANCE_PX = 15.0
#: The randomization check passes when the fully randomized model's maps keep a rank
#: correlation below this with the trained model's (a map that survives randomization
#: of every layer shows the input's structure, not what the network learned).
RANDOMIZATION_PASS = 0.5


# ----------------------------------------------------------------------------- methods
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
    logits = model.forward(x, train=False)
    z = logits - logits.max(axis=1, keepdims=True)
    p = model.xp.exp(z)
    p /= p.sum(axis=1, keepdims=True)
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


# ----------------------------------------------------------------------------- checks
@dataclass
class StoredFindings:
    """The scored findings of one image in stored-image coordinates."""

    row: np.ndarray      # (k,) centres, stored pixels
    col: np.ndarray
    radius: np.ndarray   # (k,) radii in pixels of the original image
    scale: tuple         # (rows, cols): stored pixels per original pixel


@dataclass
class PointingResult:
    n_images: int
    hits: int
    hit_rate: float | None
    chance: float | None        # mean share of the breast inside the (tolerance-widened) findings
    energy_share: float | None  # mean share of the map's mass inside the findings
    tolerance_px: float
    p_value: float | None       # one-sided binomial test of the hits against the mean chance level


def finding_mask(f: StoredFindings, size, tolerance_px):
    """Stored pixels within ``radius + tolerance`` original pixels of a finding's centre (the disks
    become ellipses when the stored image stretches the crop differently along its two axes)."""
    rr, cc = np.mgrid[0:size, 0:size].astype(np.float64)
    inside = np.zeros((size, size), bool)
    for r, c, rad in zip(f.row, f.col, f.radius):
        d2 = ((rr - r) / f.scale[0]) ** 2 + ((cc - c) / f.scale[1]) ** 2
        inside |= d2 <= (rad + tolerance_px) ** 2
    return inside


def pointing_game(maps, findings, breast, tolerance_px=TOLERANCE_PX) -> PointingResult:
    """Pointing game over images with scored findings.

    maps (N, S, S) non-negative at the stored resolution; findings: one StoredFindings per image,
    or None for an image without scored findings (left out); breast (N, S, S) bool. A hit: the
    map's maximum lies inside a finding widened by ``tolerance_px``; a map that is zero everywhere
    has no maximum and misses.
    """
    hits, chance, energy = [], [], []
    size = maps.shape[-1]
    for i, f in enumerate(findings):
        if f is None or len(f.row) == 0:
            continue
        inside = finding_mask(f, size, tolerance_px)
        m = maps[i]
        total = float(m.sum())
        hits.append(total > 0 and bool(inside.flat[int(np.argmax(m))]))
        chance.append(float((inside & breast[i]).sum()) / max(1, int(breast[i].sum())))
        energy.append(float(m[inside].sum()) / total if total > 0 else 0.0)
    n = len(hits)
    if n == 0:
        return PointingResult(0, 0, None, None, None, float(tolerance_px), None)
    from scipy.stats import binomtest
    p = binomtest(int(sum(hits)), n, float(np.mean(chance)), alternative="greater").pvalue
    return PointingResult(n, int(sum(hits)), float(np.mean(hits)), float(np.mean(chance)), float(np.mean(energy)),
                          float(tolerance_px), float(p))


def spearman(a, b):
    """Rank correlation of two maps (ties get mean ranks); 0 when either map is constant."""
    from scipy.stats import rankdata
    ra, rb = rankdata(np.ravel(a)), rankdata(np.ravel(b))
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass
class RandomizationCurve:
    method: str
    layers: list          # cumulatively randomized, from fc8 down
    correlation: list     # mean rank correlation with the trained model's maps, per step
    passes: bool


def cascading_randomization(model, x, target, method, seed=0, **kw) -> RandomizationCurve:
    """Adebayo et al. 2018: re-initialize fc8, then fc7, ... conv1 (cumulatively, with the model's
    own initializer); after each step, the mean Spearman correlation of each image's map with the
    trained model's. The trained weights are restored afterwards."""
    saved = {k: v.copy() for k, v in model.params.items()}
    rng = np.random.default_rng(seed)
    try:
        reference, _ = compute_maps(model, x, target, method, **kw)
        layers, corr = [], []
        for name in reversed(model.param_layers):
            model.reinitialize(name, rng)
            maps, _ = compute_maps(model, x, target, method, **kw)
            layers.append(name)
            corr.append(float(np.mean([spearman(a, b) for a, b in zip(reference, maps)])))
    finally:
        for k, v in saved.items():
            model.params[k][...] = v
    return RandomizationCurve(method, layers, corr, corr[-1] < RANDOMIZATION_PASS)


# ----------------------------------------------------------------------------- figures
def draw_overlay(ax, gray, heat, title="", findings=(), incidental=()):
    """Gray stored image with a heat map over it (alpha 0.45, 'jet', scaled to its own maximum)
    and findings drawn as ellipses (red: the class's findings, yellow: incidental)."""
    ax.imshow(gray, cmap="gray", vmin=0, vmax=255)
    top = float(np.max(heat)) if np.size(heat) else 0.0
    ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=top if top > 0 else 1.0)
    for group, color in ((findings, "red"), (incidental, "yellow")):
        for f in group:
            for r, c, rad in zip(f.row, f.col, f.radius):
                ax.add_patch(Ellipse((c, r), 2 * rad * f.scale[1], 2 * rad * f.scale[0], fill=False,
                                     color=color, lw=1.2))
    ax.set_title(title, fontsize=7)
    ax.set_axis_off()


@dataclass
class Explanation:
    """What :func:`explain_images` hands back."""

    maps: np.ndarray        # (N, S, S) at the input resolution, non-negative
    proba: np.ndarray       # (N, num_classes)
    target: np.ndarray      # (N,)
    method: str
    paths: list = field(default_factory=list)  # overlay PNGs written


def explain_images(net, x_batch, target=None, method="gradcam", out_dir=None, gray=None, names=None, **kw):
    """Maps of ``method`` for network inputs ``x_batch`` (N, 3, S, S); ``target`` defaults to each
    image's predicted class. With ``out_dir``, one overlay PNG per image (over ``gray``, the
    (N, S, S) uint8 images, when given; else over the input's first channel) named after ``names``."""
    proba = net.predict_proba(x_batch)
    target = proba.argmax(axis=1) if target is None else np.broadcast_to(np.asarray(target), (len(proba),))
    maps, _ = compute_maps(net, x_batch, target, method, **kw)
    result = Explanation(maps, proba, np.asarray(target), method)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        shown = gray if gray is not None else to_numpy(x_batch[:, 0])
        for i in range(len(maps)):
            name = names[i] if names is not None else f"image_{i:04d}"
            fig = Figure(figsize=(3, 3), dpi=100)
            ax = fig.subplots()
            img = np.asarray(shown[i], np.float32)
            if gray is None:  # network units: stretch to 0..255 for display
                img = 255 * (img - img.min()) / max(1e-12, float(img.max() - img.min()))
            draw_overlay(ax, img, maps[i], f"{method}, class {int(result.target[i])}, "
                                            f"p = {proba[i, int(result.target[i])]:.2f}")
            path = out_dir / f"{Path(name).stem}_{method}.png"
            with atomic_output(path) as tmp:
                fig.savefig(tmp, format="png", bbox_inches="tight")
            result.paths.append(path)
    return result


# ----------------------------------------------------------------------------- a finished run
@dataclass
class Geometry:
    """Where each stored image came from (from the dataset HDF5; absent in builds before crop_box)."""

    crop_box: np.ndarray        # (N, 4) top, bottom, left, right of the oriented image
    flipped: np.ndarray         # (N,)
    original_shape: np.ndarray  # (N, 2)
    size: int
    aspect: str


@dataclass
class RunData:
    dataset: ImageSet
    geometry: Geometry | None
    findings: dict              # image_path -> list of findings.csv rows (empty without ground truth)


def _load_geometry(path, size):
    with h5py.File(path, "r") as f:
        if "crop_box" not in f:
            return None
        return Geometry(f["crop_box"][()], f["flipped"][()], f["original_shape"][()], int(size),
                        str(f.attrs.get("aspect", "stretch")))


def _ground_truth(ds: ImageSet):
    """findings.csv beside the dataset's manifest (synthetic cohorts), by image_path; {} without one."""
    manifest = ds.attrs.get("manifest_path")
    return _findings_by_image(Path(manifest)) if manifest else {}


def run_data(datasets: dict, files: dict, size: int) -> dict:
    """The run's datasets ({name: ImageSet}, built from ``files`` {name: built HDF5}) with their crop
    geometry and ground truth, keyed by experiment data name (ffdm, ddsm, combined)."""
    out = {name: RunData(ds, _load_geometry(files[name], size), _ground_truth(ds))
           for name, ds in datasets.items() if name in ("ffdm", "ddsm")}
    if "ffdm" in out and "ddsm" in out:
        parts = [out["ffdm"], out["ddsm"]]
        geos = [p.geometry for p in parts]
        geo = None if any(g is None for g in geos) else Geometry(
            *(np.concatenate([getattr(g, k) for g in geos]) for k in ("crop_box", "flipped", "original_shape")),
            geos[0].size, geos[0].aspect)
        out["combined"] = RunData(ImageSet.concat("combined", [p.dataset for p in parts]), geo,
                                  {**parts[0].findings, **parts[1].findings})
    return out


def _stored_findings(rows, geo: Geometry, i):
    """findings.csv rows of one image -> StoredFindings in the stored image of index i."""
    if not rows:
        return None
    r = np.array([float(x["row"]) for x in rows])
    c = np.array([float(x["col"]) for x in rows])
    sr, sc = data_prep.to_stored_coords(r, c, geo.crop_box[i], geo.flipped[i], geo.original_shape[i],
                                        geo.size, aspect=geo.aspect)
    scale = tuple(float(v) for v in np.ravel(data_prep.stored_scale(geo.crop_box[i], geo.size, geo.aspect)))
    scale = scale * 2 if len(scale) == 1 else scale
    return StoredFindings(np.asarray(sr, float), np.asarray(sc, float),
                          np.array([float(x["radius_px"]) for x in rows]), scale)


def _findings_for(data: RunData, idx):
    """(scored, incidental) StoredFindings per test image: scored = findings whose role is the image's
    own label (malignant on a malignant image, recalled_benign on a recalled-benign one); everything
    else (incidental lymph nodes and vascular calcifications, a benign second finding beside a cancer)
    is not scored: a maximum on it is a miss, and its area is not part of the chance level."""
    if data.geometry is None or not data.findings:
        return None, None
    ds = data.dataset
    scored, incidental = [], []
    for i in idx:
        rows = data.findings.get(ds.image_path[i], [])
        label = LABEL_NAMES[ds.labels[i]]
        scored.append(_stored_findings([r for r in rows if r["role"] == label], data.geometry, i))
        incidental.append(_stored_findings([r for r in rows if r["role"] != label], data.geometry, i))
    return scored, incidental


def _figure(path, ds, idx, maps, proba, y, picks, scored, incidental, class_names, title):
    cols = max(len(p) for _, p in picks) or 1
    fig = Figure(figsize=(2.6 * cols, 2.9 * len(picks)), dpi=110)
    axes = fig.subplots(len(picks), cols, squeeze=False)
    for row, (label, chosen) in enumerate(picks):
        for col in range(axes.shape[1]):
            ax = axes[row, col]
            ax.set_axis_off()
            if col >= len(chosen):
                continue
            k = chosen[col]
            pred = int(proba[k].argmax())
            draw_overlay(ax, ds.images[idx[k]], maps[k],
                         # three short lines: "recalled-benign" in two class names overran the next panel
                         f"{label}\ntrue {class_names[y[k]]},\ncalled {class_names[pred]} ({proba[k, pred]:.2f})",
                         [scored[k]] if scored and scored[k] else (),
                         [incidental[k]] if incidental and incidental[k] else ())
    fig.suptitle(title, fontsize=8)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")


@dataclass
class ExplainOptions:
    methods: tuple = METHODS
    tolerance_px: float = TOLERANCE_PX
    per_row: int = 4
    steps: int = 32
    randomization_images: int = 16
    progress: bool = True


def explain_record(run_dir, cfg, record, data: RunData, opts: ExplainOptions):
    """Maps, pointing game, randomization curves and the figure for one result record (one job)."""
    from tqdm import tqdm
    job = Path(run_dir) / "jobs" / record["job"]
    scenario = get_scenario(record["scenario"])
    ds = data.dataset
    test = read_predictions(job / "predictions.h5")["test"]
    idx, y, proba = test.index, test.label, test.proba
    # model.h5 holds the network and the input mean and scale it trained with; scoring the test
    # images again checks that the maps explain the very model the run evaluated.
    net, card = load_model(job / "model.h5")
    mean, scale = card.mean, card.input_scale
    check = score(net, card, ds.images[idx], batch_size=cfg.batch_size)
    mismatch = float(np.abs(check - proba).max())
    scored, incidental = _findings_for(data, idx)
    breast = ds.images[idx] > 0
    out = {"scenario": scenario.name, "experiment": record["experiment"], "test_fraction": record["test_fraction"],
           "job": record["job"], "n_test": int(len(idx)), "max_abs_proba_difference": mismatch,
           "ground_truth": scored is not None, "pointing_game": {}, "randomization": {},
           "integrated_gradients_completeness": None}
    maps_of = {}
    batch = cfg.batch_size
    bar = tqdm(total=len(opts.methods) * len(idx), desc=f"explain {record['job']}", disable=not opts.progress)
    for method in opts.methods:
        parts, igs = [], []
        for start in range(0, len(idx), batch):
            sel = idx[start:start + batch]
            x = to_network_input(net.xp.asarray(ds.images[sel]), net.xp.asarray(mean), scale)
            maps, ig = compute_maps(net, x, y[start:start + batch], method, steps=opts.steps)
            parts.append(maps)
            igs.append(ig)
            bar.update(len(sel))
        maps_of[method] = np.concatenate(parts)
        if method == "integrated-gradients":
            err = np.concatenate([g.relative_error for g in igs])
            out["integrated_gradients_completeness"] = {
                "steps": opts.steps, "median_relative_error": float(np.median(err)),
                "max_relative_error": float(err.max()), "share_within_1pct": float(np.mean(err <= 0.01))}
        if scored is not None:
            out["pointing_game"][method] = asdict(pointing_game(maps_of[method], scored, breast, opts.tolerance_px))
    bar.close()
    # the randomization check on the first test images of the scored class (or all, without findings)
    with_truth = [k for k in range(len(idx)) if scored is None or scored[k] is not None]
    chosen = np.asarray(with_truth[:opts.randomization_images] or list(range(min(len(idx), opts.randomization_images))))
    x = to_network_input(net.xp.asarray(ds.images[idx[chosen]]), net.xp.asarray(mean), scale)
    for method in opts.methods:
        if method == "occlusion":  # hundreds of forwards per step; the check stays with the gradient methods
            continue
        curve = cascading_randomization(net, x, y[chosen], method, seed=cfg.seed, steps=opts.steps)
        out["randomization"][method] = asdict(curve)
    for method in opts.methods:
        pg = out["pointing_game"].get(method)
        loc = None if not pg or pg["hit_rate"] is None else pg["p_value"] < 0.05
        rnd = out["randomization"].get(method, {}).get("passes")
        out.setdefault("verdict", {})[method] = {"localizes_above_chance": loc, "passes_randomization": rnd}
    # figure: the most confident correct and the most confident wrong test images, Grad-CAM
    shown = "gradcam" if "gradcam" in maps_of else opts.methods[0]
    pred = proba.argmax(axis=1)
    conf = proba.max(axis=1)
    correct = [k for k in np.argsort(-conf) if pred[k] == y[k]][:opts.per_row]
    wrong = [k for k in np.argsort(-conf) if pred[k] != y[k]][:opts.per_row]
    name = f"explain_{record['experiment']}_{scenario.name}_tf{record['test_fraction']:g}.png"
    _figure(Path(run_dir) / name, ds, idx, maps_of[shown], proba, y,
            [("confident, correct", correct), ("confident, wrong", wrong)],
            scored, incidental, scenario.class_names,
            f"{shown} for the true class -- {scenario.description} ({record['experiment']}): the most confident "
            f"correct and wrong test images; red: findings of the image's class, yellow: other findings")
    out["figure"] = name
    return out


def _cell(value, spec=".2f"):
    return "-" if value is None else format(value, spec)


def markdown(results, tolerance_px):
    """The report section: the pointing-game table per scenario and method, the randomization
    curves' end points, and the figures."""
    lines = ["## Where the network looks", "",
             f"Pointing game: a hit when the map's maximum lies within {tolerance_px:g} original-image pixels of "
             "a finding of the image's own class (other findings -- incidental ones, a benign finding beside a "
             "cancer -- are not scored); chance = the share of the breast those widened findings cover. "
             "Mass inside = the share of the map's sum inside them. Randomization (Adebayo et al. 2018): "
             "rank correlation of the maps after re-initializing fc8 ... conv1 with the trained model's; it "
             f"should fall (passes below {RANDOMIZATION_PASS}).", ""]
    for r in results:
        lines += [f"### {r['scenario']} ({r['experiment']}, test fraction {r['test_fraction']:g})", ""]
        if r["max_abs_proba_difference"] > 1e-3:
            lines += [f"Warning: the reloaded model's probabilities differ from the run's by up to "
                      f"{r['max_abs_proba_difference']:.3g}.", ""]
        lines += ["| method | images | hit rate | chance | p (hits > chance) | mass inside | randomization: "
                  "correlation after fc8 ... all layers | verdict |", "|---|---|---|---|---|---|---|---|"]
        for method, v in r["verdict"].items():
            pg = r["pointing_game"].get(method) or dict.fromkeys(("n_images", "hit_rate", "chance", "p_value",
                                                                   "energy_share"))
            rnd = r["randomization"].get(method)
            curve = f"{rnd['correlation'][0]:.2f} ... {rnd['correlation'][-1]:.2f}" if rnd else "not run"
            failed = v["localizes_above_chance"] is False and v["passes_randomization"] is False
            verdict = "fails both checks" if failed else ", ".join(
                t for t, ok in (("localizes", v["localizes_above_chance"]),
                                ("randomization-sensitive", v["passes_randomization"])) if ok) or "-"
            cells = [_cell(pg["n_images"], "d"), _cell(pg["hit_rate"]), _cell(pg["chance"]), _cell(pg["p_value"], ".2g"),
                     _cell(pg["energy_share"])]
            lines.append(f"| {method} | {' | '.join(cells)} | {curve} | {verdict} |")
        ig = r["integrated_gradients_completeness"]
        if ig:
            lines += ["", f"Integrated gradients ({ig['steps']} steps): completeness error median "
                          f"{100 * ig['median_relative_error']:.2f}%, max {100 * ig['max_relative_error']:.2f}%."]
        if not r["ground_truth"]:
            lines += ["", "No ground-truth findings (or no crop geometry in the dataset): overlays only."]
        lines += ["", f"![{r['scenario']}: Grad-CAM on the most confident correct and wrong test images]({r['figure']})",
                  ""]
    return lines


def explain_run(run_dir, cache_dir="data_cache", opts: ExplainOptions | None = None, workers=None,
                datasets=None, files=None):
    """Explain every result record of a finished run: writes the figures and ``explain.json`` into
    the run folder and returns the markdown lines of a report section. ``datasets`` ({name:
    ImageSet}) and ``files`` ({name: built HDF5}) are the run's, when the caller holds them (the
    run's own end); otherwise they are loaded from ``cache_dir`` as the run loaded them."""
    opts = opts or ExplainOptions()
    run_dir = Path(run_dir)
    results_json = json.loads((run_dir / "results.json").read_text())
    cfg = StudyConfig(**results_json["config"])
    cfg.progress = opts.progress
    if datasets is None:
        from .runner import prepare_datasets  # the runner calls this function: no import at the top
        datasets, cohorts = prepare_datasets(cfg, cache_dir, workers, log=lambda *_: None)
        files = {c.dataset: c.built_file for c in cohorts}
    data = run_data(datasets, files, cfg.input_size)
    results = []
    for record in results_json["runs"]:
        results.append(explain_record(run_dir, cfg, record,
                                      data["ffdm" if record["experiment"] == "incremental" else record["experiment"]],
                                      opts))
    with atomic_output(run_dir / "explain.json") as tmp:
        tmp.write_text(json.dumps({"tolerance_px": opts.tolerance_px, "options": asdict(opts), "results": results},
                                  indent=2))
    return markdown(results, opts.tolerance_px)


def _error(message):
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv=None):
    """python run.py explain RUN_DIR: attribution maps and their checks for a finished run."""
    ap = argparse.ArgumentParser(prog="run.py explain", description=main.__doc__ + " Writes explain.json, "
                                 "explain_*.png and explain.md into RUN_DIR and prints the markdown section.")
    ap.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder (results.json, jobs/...)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), metavar="NAME",
                    help=f"attribution methods, any of {', '.join(METHODS)} (default: all)")
    ap.add_argument("--tolerance", type=float, default=TOLERANCE_PX, metavar="PX",
                    help=f"pointing-game tolerance in original-image pixels (default {TOLERANCE_PX:g})")
    ap.add_argument("--steps", type=int, default=32, help="integrated-gradients steps (default 32)")
    ap.add_argument("--per-row", type=int, default=4, help="images per figure row (default 4)")
    ap.add_argument("--randomization-images", type=int, default=16,
                    help="test images for the randomization check (default 16)")
    ap.add_argument("--cache-dir", default="data_cache", help="the run's --cache-dir (default ./data_cache)")
    ap.add_argument("--device", choices=("cpu", "gpu", "auto"), default="auto", help="as run.py's --device")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not (run_dir / "results.json").is_file():
        return _error(f"RUN_DIR {run_dir}: no results.json there; expected a finished run folder of run.py")
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        return _error(f"--methods: got {bad}, expected any of {', '.join(METHODS)}")
    for name, value, low in (("--steps", args.steps, 1), ("--per-row", args.per_row, 1),
                             ("--randomization-images", args.randomization_images, 1)):
        if value < low:
            return _error(f"{name}: got {value}, expected an integer >= {low}")
    if args.tolerance < 0:
        return _error(f"--tolerance: got {args.tolerance}, expected a number >= 0")
    from .runner import select_device  # the runner calls explain_run at a run's end: no import at the top
    try:
        select_device(args.device)
    except UserError as e:
        return _error(str(e))
    opts = ExplainOptions(tuple(args.methods), args.tolerance, args.per_row, args.steps,
                          args.randomization_images, not args.no_progress)
    lines = explain_run(run_dir, args.cache_dir, opts)
    with atomic_output(run_dir / "explain.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten: {run_dir / 'explain.json'}, {run_dir / 'explain.md'}")
    return 0
