"""An offline stand-in for ImageNet pretraining: AlexNet trained on images made from formulas.

The paper fine-tuned an ImageNet-pretrained AlexNet; no ImageNet weights can be had
offline here. Kataoka et al. (Pre-training without Natural Images, ACCV 2020) showed that
a network pretrained to tell apart *categories of fractals* -- each category one iterated
function system (IFS), each image one rendering of it with randomly perturbed parameters
-- transfers to natural images. This module builds such a "FractalDB" at the network's
input size, trains the demo's AlexNet on it and writes its convolutional layers as a
weights file that ``run.py --pretrained`` accepts like converted ImageNet weights.

**Categories.** Category k is an IFS of M affine maps (M = 2..4, drawn from (seed, k))::

    f_j(p) = A_j p + t_j,   A_j, t_j uniform in [-1, 1],   A_j rescaled so that ||A_j||_2 <= 0.8,
    P(choose f_j) = (|det A_j| + 0.02) / sum_i (|det A_i| + 0.02)

Rescaling makes every map a contraction, so the attractor exists and is bounded. As in
FractalDB, a candidate whose attractor fills less than 8% of a 64 x 64 rendering (a dot
or a thin curve) is rejected and the next one drawn.

**Images.** Image i of category k is rendered from its own random numbers, a pure
function of (seed, k, i) (a counter hash, splitmix64), so any batch in any order gives
the same images. Its parameters: one of the maps (at random) has A_j and t_j multiplied by
w ~ U[0.8, 1.2] (FractalDB's intra-category variation), then the chaos game runs 96
chains of 112 steps from random starting points (the first 12 steps dropped):
p <- f_j(p) with j drawn by P(choose f_j). The points are mirrored
(left-right) with probability 1/2, rotated by an angle ~ U[-pi/8, pi/8], with probability 1/2, scaled so the longer side spans a fraction
~ U[0.55, 0.95] of the image and shifted at random inside it. The gray image is
``background + (255 - background) * contrast * log(1 + n) / log(1 + max n)``
with n the number of points per pixel, background ~ U[0, 128], contrast ~ U[0.5, 1],
plus uniform pixel noise of standard deviation ~ U[0, 8] gray levels.

**Pretraining.** The training set is ``images_per_class`` images per category (indices
0..N-1), written once to an HDF5 file; held-out images are further indices (N, N+1, ...)
of the same categories. AlexNet (variant caffe, He initialization with fc8 drawn at std
0.001, input = (image - the set's mean pixel) / 512) is trained with Caffe's SGD by
:func:`pipeline.train.train` (prefetching, progress bar, checkpoints, resume). At an input
scale of 1/64 the full-width network's first steps move its logits by tens and it
stops depending on the image within 20 iterations (bench/demo_design.md, "the loss clue"); the demo trains at 1/512.

**The weights file** holds conv1..conv5 only (float32, 9.3 MB at any input size): fc6's
shape depends on the input size, and fc6 + fc7 would add 84 MB at 99 px. It expects
inputs (x - ``mean``) * ``input_scale`` (root attributes); ``run.py --pretrained FILE`` takes
that input scale from the file. Its root attributes also
record the parameters (``standin``, JSON), the seed, the time taken and the held-out accuracy.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np

from alexnet_np import SGD, AlexNet
from alexnet_np.ops import GOLDEN, mix64
from alexnet_np.weights import write_weights
from data_prep.fileio import atomic_output

from .config import Option
from .errors import UserError
from .train import predict, train

GENERATOR_VERSION = 1
MAX_MAPS = 4
MAX_NORM = 0.8              # spectral norm bound of every map's linear part
DET_FLOOR = 0.02            # keeps near-singular maps in play
MIN_FILL = 0.08             # a category's attractor must cover this fraction of a 64 x 64 rendering
FC8_STD = 0.001             # the output layer's init (Caffe: 0.01 for its far smaller activations)
MAX_ANGLE = np.pi / 8       # images are rotated by up to +-22.5 degrees
CHAINS, STEPS, BURN_IN = 96, 112, 12
CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
# Per-image random numbers: these slots, then 2 * CHAINS starting coordinates, then
# CHAINS * STEPS map choices, then size * size pixel noise values.
(U_MAP, U_WEIGHT, U_ANGLE, U_MIRROR, U_FIT, U_DX, U_DY, U_BACKGROUND, U_CONTRAST, U_NOISE) = range(10)
N_SLOTS = 10
SCREEN_INDEX = 2 ** 64 - 1   # the image index whose random numbers screen a category


@dataclass
class Categories:
    """The IFS of every category: maps padded to MAX_MAPS (unused maps have probability 0)."""

    seed: int
    A: np.ndarray       # (K, MAX_MAPS, 2, 2) linear parts
    t: np.ndarray       # (K, MAX_MAPS, 2) translations
    prob: np.ndarray    # (K, MAX_MAPS) map probabilities, each row sums to 1

    def __len__(self):
        return len(self.prob)


def _opt(help, **kw):
    return {"option": Option(help, **kw)}


@dataclass
class StandinConfig:
    """What :func:`pretrain` builds; fields with an Option are ``run.py standin``'s options."""

    out: str = field(metadata=_opt("weights file to write (HDF5), e.g. weights/standin_caffe_99.h5",
                                   metavar="OUT.h5"))
    classes: int = field(default=32, metadata=_opt("fractal categories", type=int))
    images_per_class: int = field(default=150, metadata=_opt("training images per category", type=int))
    test_per_class: int = field(default=20, metadata=_opt(
        "held-out images per category for the recorded accuracy", type=int))
    iters: int = field(default=3000, metadata=_opt("SGD iterations", type=int))
    batch_size: int = field(default=32, metadata=_opt("minibatch", type=int))
    lr: float = field(default=0.005, metadata=_opt("base learning rate", type=float))
    lr_step: int | None = field(default=None, metadata=_opt(
        "divide the lr by 10 every this many iterations (default: 80%% of --iters)", type=int))
    momentum: float = 0.9
    weight_decay: float = 0.0005
    input_size: int = field(default=99, metadata=_opt("image side in pixels, the network input (the demo's)",
                                                      type=int))
    # an input scale of 1/64 kills the full-width network (bench/demo_design.md)
    input_scale: float = field(default=1 / 512, metadata=_opt(
        "network input = (image - mean) * this while pretraining; the file records it as its input_scale, "
        "which run.py --pretrained takes", type=float))
    seed: int = field(default=0, metadata=_opt("decides categories, images and training", type=int))
    widths: list | None = field(default=None, metadata=_opt(
        "layer widths conv1..conv5 fc6 fc7 (default: AlexNet's; smaller for tests)", type=int, nargs=7, metavar="W"))
    work_dir: str | None = field(default=None, metadata=_opt(
        "where the generated set and checkpoints go (default OUT.work/<hash>)"))
    checkpoint_every: int = field(default=100, metadata=_opt("iterations between checkpoints", type=int))
    progress: bool = True


@dataclass
class StandinResult:
    """What a pretraining produced, as recorded in the weights file."""

    path: str
    accuracy: float             # top-1 on held-out generated images
    chance: float
    train_accuracy: float       # mean minibatch accuracy over the last 10% of iterations
    generate_s: float
    train_s: float
    iterations: int


# ------------------------------------------------------------------ random numbers
def image_keys(seed, labels, indices) -> np.ndarray:
    """One 64-bit key per image, a pure function of (seed, category, index)."""
    labels, indices = np.asarray(labels, dtype=np.uint64), np.asarray(indices, dtype=np.uint64)
    z = mix64(np.full(labels.shape, seed, dtype=np.uint64) + np.uint64(GOLDEN))
    z = mix64(z ^ labels)
    return mix64(z ^ indices)


def uniforms(keys, start, count) -> np.ndarray:
    """Draws start..start+count-1 of each key's stream, uniform in [0, 1): (len(keys), count) float64."""
    j = np.arange(start + 1, start + count + 1, dtype=np.uint64)
    bits = mix64(np.asarray(keys, dtype=np.uint64)[:, None] + j[None, :] * np.uint64(GOLDEN))
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


# ------------------------------------------------------------------ categories
def _candidate(rng):
    m = int(rng.integers(2, MAX_MAPS + 1))
    A = rng.uniform(-1.0, 1.0, (m, 2, 2))
    t = rng.uniform(-1.0, 1.0, (m, 2))
    norm = np.linalg.norm(A, ord=2, axis=(1, 2))
    A *= np.minimum(1.0, MAX_NORM / norm)[:, None, None]
    p = np.abs(np.linalg.det(A)) + DET_FLOOR
    pad = MAX_MAPS - m
    return (np.concatenate([A, np.zeros((pad, 2, 2))]), np.concatenate([t, np.zeros((pad, 2))]),
            np.concatenate([p / p.sum(), np.zeros(pad)]))


def make_categories(num_classes, seed) -> Categories:
    """Draw ``num_classes`` IFS categories; category k depends only on (seed, k) (see the module doc)."""
    A, t, prob = [], [], []
    for k in range(num_classes):  # once per run, not per batch
        rng = np.random.default_rng([seed, k])
        while True:
            a, b, p = _candidate(rng)
            img = render(a[None], b[None], p[None], image_keys(seed, [k], [SCREEN_INDEX]), 64, vary=False)
            if (img > 0).mean() >= MIN_FILL:
                break
        A.append(a)
        t.append(b)
        prob.append(p)
    return Categories(seed, np.stack(A), np.stack(t), np.stack(prob))


# ------------------------------------------------------------------ rendering
def chaos_game(A, t, prob, keys) -> np.ndarray:
    """Points of each image's attractor by the chaos game: (B, CHAINS * (STEPS - BURN_IN), 2)."""
    b = len(keys)
    p = uniforms(keys, N_SLOTS, 2 * CHAINS).reshape(b, CHAINS, 2) * 2.0 - 1.0
    choice_u = uniforms(keys, N_SLOTS + 2 * CHAINS, CHAINS * STEPS).reshape(b, STEPS * CHAINS)
    cum = np.cumsum(prob, axis=1)[:, :-1]                                       # (B, M - 1) thresholds
    j = (choice_u[:, :, None] >= cum[:, None, :]).sum(axis=2)                   # map of every step
    # each step's coefficients, gathered for all steps at once: (B, STEPS, CHAINS) each
    flat = (j + np.arange(b)[:, None] * MAX_MAPS).reshape(b, STEPS, CHAINS)
    pick = lambda a: np.take(a, flat)  # noqa: E731  (a: (B, MAX_MAPS))
    a00, a01, a10, a11 = (pick(A[:, :, r, c]) for r, c in ((0, 0), (0, 1), (1, 0), (1, 1)))
    t0, t1 = pick(t[:, :, 0]), pick(t[:, :, 1])
    x, y = p[..., 0], p[..., 1]
    out = np.empty((b, STEPS - BURN_IN, CHAINS, 2))
    for s in range(STEPS):  # one vectorized update of every chain of every image per step
        x, y = a00[:, s] * x + a01[:, s] * y + t0[:, s], a10[:, s] * x + a11[:, s] * y + t1[:, s]
        if s >= BURN_IN:
            out[:, s - BURN_IN, :, 0] = x
            out[:, s - BURN_IN, :, 1] = y
    return out.reshape(b, -1, 2)


def render(A, t, prob, keys, size, vary=True) -> np.ndarray:
    """Gray uint8 images (B, size, size) of the IFS (A, t, prob) (batched as in :class:`Categories`).

    With ``vary`` each image gets its own perturbation, pose, gray levels and noise drawn
    from ``keys`` (the module doc has the formulas); without, the plain attractor, centred,
    white on black (used to screen categories).
    """
    b = len(keys)
    u = uniforms(keys, 0, N_SLOTS)
    A, t = A.copy(), t.copy()
    rows = np.arange(b)
    if vary:  # FractalDB's intra-category variation: one map's parameters times w ~ U[0.8, 1.2]
        n_maps = (prob > 0).sum(axis=1)
        j = np.minimum((u[:, U_MAP] * n_maps).astype(int), n_maps - 1)
        w = 0.8 + 0.4 * u[:, U_WEIGHT]
        A[rows, j] *= w[:, None, None]
        t[rows, j] *= w[:, None]
    pts = chaos_game(A, t, prob, keys)
    if vary:
        angle = MAX_ANGLE * (2 * u[:, U_ANGLE] - 1)
        c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
        x = pts[..., 0] * np.where(u[:, U_MIRROR] < 0.5, -1.0, 1.0)[:, None]   # mirror, then rotate
        pts = np.stack([c * x - s * pts[..., 1], s * x + c * pts[..., 1]], axis=-1)
        fit = 0.55 + 0.4 * u[:, U_FIT]
    else:
        fit = np.full(b, 0.9)
    lo, hi = pts.min(axis=1), pts.max(axis=1)                                   # (B, 2)
    scale = fit * (size - 1) / np.maximum((hi - lo).max(axis=1), 1e-9)
    slack = (size - 1) - scale[:, None] * (hi - lo)                              # room left per axis
    shift = slack * (np.stack([u[:, U_DY], u[:, U_DX]], 1) if vary else 0.5)
    pix = np.floor((pts - lo[:, None]) * scale[:, None, None] + shift[:, None] + 0.5).astype(np.int64)
    pix = np.clip(pix, 0, size - 1)
    flat = (rows[:, None] * size + pix[..., 0]) * size + pix[..., 1]
    counts = np.bincount(flat.ravel(), minlength=b * size * size).reshape(b, size, size)
    density = np.log1p(counts) / np.log1p(counts.reshape(b, -1).max(axis=1))[:, None, None]
    if not vary:
        return np.round(255 * density).astype(np.uint8)
    background = 128 * u[:, U_BACKGROUND]
    contrast = 0.5 + 0.5 * u[:, U_CONTRAST]
    img = background[:, None, None] + ((255 - background) * contrast)[:, None, None] * density
    noise_std = 8 * u[:, U_NOISE]
    noise = uniforms(keys, N_SLOTS + 2 * CHAINS + CHAINS * STEPS, size * size).reshape(b, size, size)
    img += (noise - 0.5) * (np.sqrt(12) * noise_std)[:, None, None]              # uniform, std noise_std
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def generate(categories: Categories, labels, indices, size) -> np.ndarray:
    """Images ``indices`` of categories ``labels`` (arrays of equal length): (B, size, size) uint8."""
    labels = np.asarray(labels, dtype=np.int64)
    keys = image_keys(categories.seed, labels, indices)
    return render(categories.A[labels], categories.t[labels], categories.prob[labels], keys, size)


def write_training_set(path, categories, images_per_class, size, chunk=256, progress=True):
    """Generate images 0..N-1 of every category into HDF5 ``path`` (datasets ``images``, ``labels``);
    returns the mean pixel. Written atomically; an existing file made with the same settings is reused."""
    path = Path(path)
    n = len(categories) * images_per_class
    made_of = json.dumps({"classes": len(categories), "images_per_class": images_per_class, "size": size,
                          "seed": categories.seed, "generator_version": GENERATOR_VERSION})
    if path.exists():
        with h5py.File(path, "r") as f:
            if f.attrs.get("made_of") == made_of:
                return float(f.attrs["mean_pixel"])
    labels = np.repeat(np.arange(len(categories)), images_per_class)
    indices = np.tile(np.arange(images_per_class), len(categories))
    bar = _bar(progress, n, "generate")
    total = 0.0
    t0 = time.perf_counter()
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        images = f.create_dataset("images", (n, size, size), dtype=np.uint8, chunks=(min(64, n), size, size))
        f["labels"] = labels
        for s in range(0, n, chunk):
            batch = generate(categories, labels[s:s + chunk], indices[s:s + chunk], size)
            images[s:s + len(batch)] = batch
            total += float(batch.sum(dtype=np.float64))
            if bar is not None:
                bar.update(len(batch))
        mean = total / (n * size * size)
        f.attrs["mean_pixel"] = mean
        f.attrs["made_of"] = made_of
        f.attrs["generate_s"] = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    return mean


def _bar(enabled, total, desc):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True)


# ------------------------------------------------------------------ pretraining
def _work_dir(cfg: StandinConfig) -> Path:
    """<out>.work/<hash of what decides the result>, so a rerun with the same options resumes."""
    if cfg.work_dir:
        return Path(cfg.work_dir)
    decides = {k: v for k, v in asdict(cfg).items() if k not in ("out", "work_dir", "progress", "checkpoint_every")}
    decides["generator_version"] = GENERATOR_VERSION
    return Path(f"{cfg.out}.work") / hashlib.sha1(json.dumps(decides, sort_keys=True).encode()).hexdigest()[:10]


def pretrain(cfg: StandinConfig, log=print) -> StandinResult:
    """Generate the stand-in's training set, train AlexNet on it, write ``cfg.out``; resumable.

    Work files (the generated set, checkpoint, training log) live in ``<out>.work/<hash>``;
    rerunning with the same options continues from the last checkpoint.
    """
    work = _work_dir(cfg)
    work.mkdir(parents=True, exist_ok=True)
    categories = make_categories(cfg.classes, cfg.seed)
    set_path = work / "train_images.h5"
    mean = write_training_set(set_path, categories, cfg.images_per_class, cfg.input_size, progress=cfg.progress)
    net = AlexNet(cfg.classes, variant="caffe", input_size=cfg.input_size, init="he", seed=cfg.seed,
                  widths=cfg.widths)
    # He init draws fc8 as wide as a hidden layer; the activations grow through max pooling and
    # dropout, so the softmax would start saturated (bench/demo_design.md, "the loss clue"); the demo trains at 1/512.
    fc8 = net.params["fc8.weight"]
    fc8[...] = net.xp.asarray(np.random.default_rng([cfg.seed, 8]).normal(0.0, FC8_STD, fc8.shape).astype(fc8.dtype))
    opt = SGD(net, base_lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, gamma=0.1,
              stepsize=cfg.lr_step or max(1, int(0.8 * cfg.iters)))
    mean_arr = np.float32(mean)
    with h5py.File(set_path, "r") as f:
        generate_s = float(f.attrs["generate_s"])
        labels = f["labels"][()]
        rows = train(net, opt, f["images"], np.arange(len(labels)), labels, iters=cfg.iters,
                     batch_size=cfg.batch_size, seed=cfg.seed, mean=mean_arr, scale=cfg.input_scale,
                     checkpoint_path=work / "checkpoint.h5", log_path=work / "train_log.csv",
                     checkpoint_every=cfg.checkpoint_every, resume=True, progress=cfg.progress, desc="stand-in")
    # compute time over every (resumed) session: each logged step took batch / (images per s)
    train_s = sum(cfg.batch_size / float(r["images_per_s"]) for r in rows)
    tail = rows[-max(1, len(rows) // 10):]
    train_accuracy = float(np.mean([float(r["accuracy"]) for r in tail]))
    test_labels = np.repeat(np.arange(cfg.classes), cfg.test_per_class)
    test_indices = np.tile(np.arange(cfg.images_per_class, cfg.images_per_class + cfg.test_per_class), cfg.classes)
    test_images = generate(categories, test_labels, test_indices, cfg.input_size)
    proba = predict(net, test_images, np.arange(len(test_labels)), mean_arr, cfg.input_scale, cfg.batch_size)
    accuracy = float((proba.argmax(axis=1) == test_labels).mean())
    # The input scale is recorded, not folded into conv1: folded, conv1's gradients in 0-255 units
    # would be 512x larger on 512x smaller weights, and the first fine-tuning step blew up (measured).
    params = {f"{name}.{kind}": net.params[f"{name}.{kind}"] for name in CONV_LAYERS for kind in ("weight", "bias")}
    record = dict(asdict(cfg), generator_version=GENERATOR_VERSION, fc8_init_std=FC8_STD, chains=CHAINS, steps=STEPS, burn_in=BURN_IN,
                  lr_step=opt.stepsize)
    for key in ("out", "work_dir", "progress"):
        record.pop(key)
    write_weights(cfg.out, params, "caffe", cfg.input_size, mean=(mean,) * 3,
                  source=f"alexnet_np stand-in pretraining (pipeline/standin.py): {cfg.classes} FractalDB-style "
                         f"IFS fractal categories, {cfg.images_per_class} images each, {opt.iteration} iterations; "
                         f"conv1..conv5 only; inputs (x - mean) * {cfg.input_scale:g}",
                  standin=json.dumps(record), seed=cfg.seed, pretrain_accuracy=accuracy,
                  pretrain_chance=1.0 / cfg.classes, pretrain_train_accuracy=train_accuracy,
                  pretrain_test_images=len(test_labels), generate_s=generate_s, train_s=train_s,
                  iterations=opt.iteration, input_scale=cfg.input_scale,
                  created=time.strftime("%Y-%m-%d %H:%M:%S"))
    result = StandinResult(str(cfg.out), accuracy, 1.0 / cfg.classes, train_accuracy, generate_s, train_s,
                           opt.iteration)
    log(f"{cfg.out}: held-out accuracy {accuracy:.3f} on {len(test_labels)} generated images "
        f"(chance {1 / cfg.classes:.3f}); generating {generate_s:.0f} s, training {train_s:.0f} s")
    return result


# ------------------------------------------------------------------ checks
#: What ``run.py standin --help`` says of the images (the module docstring has the exact formulas).
EPILOG = ("Images: FractalDB-style (Kataoka et al., ACCV 2020). Category k is an iterated function "
          "system of 2-4 contractive affine maps p -> A p + t (entries uniform in [-1, 1], ||A||_2 <= "
          "0.8, chosen with probability ~ |det A| + 0.02; categories filling < 8% of a 64 x 64 "
          "rendering are redrawn). Each image perturbs one map by a factor U[0.8, 1.2], renders the "
          "attractor by the chaos game, rotates, mirrors, scales and shifts it at random, and maps "
          "log(1 + points per pixel) to gray on a random background with noise. Everything is a pure "
          "function of --seed (image i of class k of (seed, k, i)). Work files go to OUT.work/; a "
          "rerun with the same options resumes.")


def check_config(cfg: StandinConfig):
    """Every option within what can be pretrained, before any image is drawn; raises UserError."""
    for name in ("classes", "images_per_class", "test_per_class", "iters", "batch_size", "input_size", "lr_step",
                 "checkpoint_every"):
        value = getattr(cfg, name)
        low = 2 if name == "classes" else 1
        if value is not None and value < low:
            raise UserError(f"--{name.replace('_', '-')} {value}: expected an integer >= {low}")
    for name in ("lr", "input_scale"):
        value = getattr(cfg, name)
        if not (value > 0 and math.isfinite(value)):
            raise UserError(f"--{name.replace('_', '-')} {value}: expected a positive number")
    if cfg.widths and min(cfg.widths) < 2:
        raise UserError(f"--widths {cfg.widths}: expected 7 integers >= 2")
    out = Path(cfg.out)
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder, expected a weights file path such as {out / 'standin.h5'}")
    try:
        AlexNet(cfg.classes, variant="caffe", input_size=cfg.input_size, widths=cfg.widths or [2] * 7)
    except ValueError as e:
        raise UserError(f"--input-size {cfg.input_size}: {e}") from None
