"""A trained model as one self-contained file, ``model.h5``: weights plus everything needed to score
a new mammogram exactly as the training run scored its test images.

The paper's pipeline has state outside the weights: images are "histogram equalized, mean
subtracted and downsampled ... to 227 x 227". A weights file alone loses the mean image, the input
scale, the preprocessing parameters and which class is "positive", so a reloaded model scores new
images differently from the run that made it. ``model.h5`` keeps them all.

Layout: a weights file of :mod:`alexnet_np.weights` (so ``load_weights`` and ``weights_info`` read
it as they read any weights file; its root ``mean`` is the per-channel average, for those readers)
plus a ``/model`` group::

    /model/mean                 float32: the mean subtracted at training time, (S, S) mean image of
                                the training images, or (3,) per channel when the model's chain
                                started from pretrained weights (see mean_rule)
    /model attributes
      format                    "alexnet_np-model"
      format_version            1
      scenario                  e.g. "malignant-vs-negative"
      class_names               JSON list, network class order
      class_labels              JSON list of lists: the dataset labels (0 negative, 1 recalled-benign,
                                2 malignant) that make up each network class
      positive_class            the class whose probability is the score (ROC analysis)
      widths                    JSON list, conv1..conv5, fc6, fc7
      input_scale               network input = (gray - mean) * input_scale
      mean_rule                 which rule made the mean: "training-split" or "pretrained-file"
                                (pipeline.jobs.MEAN_RULES); "unknown" in files written before it
      preprocessing             JSON {size, aspect, equalize, threshold_fraction}: data_prep's
                                parameters of the dataset it was trained on
      seed                      the run's seed
      training_data             JSON: per dataset its build fingerprint, manifest and image count;
                                train_sha256 of the training images and labels in training order
      training                  JSON: the job (key, iterations, ...) and the run's configuration
      environment               JSON: package versions, backend, BLAS, platform, date
      git_commit, git_dirty     the code's commit and whether tracked files had uncommitted changes
                                ("unknown" outside a git checkout)

:func:`save_model` writes it atomically, :func:`load_model` rebuilds the network and the
:class:`ModelCard`, :func:`score` turns preprocessed gray images into class probabilities.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from alexnet_np import AlexNet, load_weights
from alexnet_np.weights import write_weights
from data_prep.fileio import atomic_output

from .errors import UserError
from .provenance import environment, git_version
from .scenarios import MALIGNANT
from .train import predict

FORMAT = "alexnet_np-model"
FORMAT_VERSION = 1


class ModelFileError(UserError):
    """A model file is missing, damaged, of another kind or of an unsupported format version."""


@dataclass(frozen=True)
class Preprocessing:
    """data_prep's preprocessing parameters (see data_prep.preprocess_steps): what a new image needs."""

    size: int
    aspect: str
    equalize: str
    threshold_fraction: float


@dataclass
class ModelCard:
    """What a model is and how to feed it: everything in model.h5 besides the weights."""

    scenario: str
    class_names: tuple
    class_labels: tuple           # per network class, the dataset labels it stands for
    positive_class: int           # proba[:, positive_class] is the score of ROC analysis
    variant: str
    input_size: int
    widths: tuple
    mean: np.ndarray              # (S, S) mean image or (3,) per-channel mean, float32
    input_scale: float
    preprocessing: Preprocessing
    seed: int
    training_data: dict
    training: dict
    environment: dict
    git_commit: str
    git_dirty: str                # "yes", "no" or "unknown"
    mean_rule: str = "unknown"     # "training-split" or "pretrained-file" (pipeline.jobs.MEAN_RULES)
    format_version: int = FORMAT_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def score_name(self) -> str:
        return f"P({self.class_names[self.positive_class]})"


# ------------------------------------------------------------------ making a card for a study job
def _dataset_parts(data):
    """{dataset name: its build attributes}; the combined experiment's ImageSet nests one per part."""
    attrs = data.attrs
    if attrs and all(isinstance(v, dict) for v in attrs.values()):
        return attrs
    return {data.name: attrs}


def _preprocessing(attrs: dict) -> Preprocessing:
    return Preprocessing(size=int(attrs["size"]), aspect=str(attrs["aspect"]), equalize=str(attrs["equalize"]),
                         threshold_fraction=float(attrs["threshold_fraction"]))


def _training_sha256(images, indices, labels, chunk=1024):
    """SHA-256 of the training images (in training order) and their labels: which data made the model."""
    digest = hashlib.sha256()
    for start in range(0, len(indices), chunk):
        digest.update(np.ascontiguousarray(images[indices[start:start + chunk]]).tobytes())
    digest.update(np.asarray(labels, np.int64).tobytes())
    return digest.hexdigest()


def job_card(cfg, job, net, mean, mean_rule) -> ModelCard:
    """The card of a study job's trained ``net`` (``cfg``: StudyConfig, ``job``: plan.Job, ``mean``: what
    training subtracted, by ``mean_rule``). The triple scenario's score is P(malignant).

    The preprocessing is the first dataset's; every dataset's own parameters stay in
    ``training_data`` (the combined experiment's two datasets are built alike by run.py).
    """
    scenario = job.scenario
    parts = _dataset_parts(job.data)
    datasets = {name: {"fingerprint": a.get("fingerprint", "unknown"), "manifest_path": a.get("manifest_path", ""),
                       "n_images": int(a.get("n_images", 0)), "preprocessing": vars(_preprocessing(a))}
                for name, a in parts.items()}
    positive = 1 if scenario.binary else next(i for i, g in enumerate(scenario.classes) if MALIGNANT in g)
    commit, dirty = git_version()
    return ModelCard(
        scenario=scenario.name, class_names=tuple(scenario.class_names),
        class_labels=tuple(tuple(int(v) for v in g) for g in scenario.classes), positive_class=positive,
        variant=net.variant, input_size=net.input_size, widths=net.widths,
        mean=np.asarray(mean, np.float32), input_scale=float(cfg.input_scale),
        preprocessing=_preprocessing(next(iter(parts.values()))), seed=int(cfg.seed),
        training_data={"datasets": datasets, "n_train": int(len(job.train_idx)),
                       "train_sha256": _training_sha256(job.data.images, job.train_idx, job.train_y)},
        training={"job": job.key, "iters": int(job.iters), "init_weights": job.init_weights,
                  "config": json.loads(json.dumps(cfg.to_dict(), default=str))},
        environment=environment(), git_commit=commit, git_dirty=dirty, mean_rule=mean_rule)


# ------------------------------------------------------------------ writing and reading
def save_model(path, net, card: ModelCard):
    """Write ``net``'s weights and ``card`` to ``path`` (atomically: a reader sees the old file or the new one)."""
    got = (net.num_classes, net.variant, net.input_size, tuple(net.widths))
    want = (card.num_classes, card.variant, card.input_size, tuple(card.widths))
    if got != want:
        raise ValueError(f"save_model: the network is (classes, variant, input size, widths) {got}, the card says {want}")
    mean = np.asarray(card.mean, np.float32)
    with atomic_output(path) as tmp:
        write_weights(tmp, net.params, net.variant, net.input_size, mean=(float(mean.mean()),) * 3,
                      source=f"alexnet_np model file, {card.scenario} ({card.training.get('job', '')})")
        with h5py.File(tmp, "a") as f:
            g = f.create_group("model")
            g.create_dataset("mean", data=mean)
            attrs = {"format": FORMAT, "format_version": FORMAT_VERSION, "scenario": card.scenario,
                     "class_names": json.dumps(list(card.class_names)),
                     "class_labels": json.dumps([list(c) for c in card.class_labels]),
                     "positive_class": int(card.positive_class), "widths": json.dumps(list(card.widths)),
                     "input_scale": float(card.input_scale), "preprocessing": json.dumps(vars(card.preprocessing)),
                     "seed": int(card.seed), "training_data": json.dumps(card.training_data),
                     "training": json.dumps(card.training), "environment": json.dumps(card.environment, default=str),
                     "git_commit": card.git_commit, "git_dirty": card.git_dirty, "mean_rule": card.mean_rule}
            g.attrs.update(attrs)
    return Path(path)


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def read_card(path) -> ModelCard:
    """The :class:`ModelCard` of a model file, without building the network; raises :class:`ModelFileError`."""
    path = os.fspath(path)
    if os.path.isdir(path):
        found = sorted(str(p) for p in Path(path).glob("jobs/**/main/model.h5"))
        hint = f", e.g. {found[0]}" + (f" (one of {len(found)} in this run)" if len(found) > 1 else "") if found else ""
        raise ModelFileError(f"model file {path} is a folder; expected a model.h5 file from a run's jobs/ folder{hint}")
    if not os.path.isfile(path):
        raise ModelFileError(f"model file {path} does not exist (expected a model.h5 from a run's jobs/ folder)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ModelFileError(f"{path} is not an HDF5 file (h5py: {e}); expected a model.h5 written by run.py") from None
    with f:
        g = f.get("model")
        fmt = _text(g.attrs.get("format", "")) if isinstance(g, h5py.Group) else ""
        if fmt != FORMAT:
            kind = "an alexnet_np weights file" if _text(f.attrs.get("format", "")) == "alexnet_np-weights" \
                else "an HDF5 file of another kind"
            raise ModelFileError(f"{path} is {kind}, not a model file: expected a /model group with format "
                                 f"{FORMAT!r} (run.py writes one as jobs/.../model.h5)")
        version = int(g.attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise ModelFileError(f"{path} has model format_version {version}; this code reads version "
                                 f"{FORMAT_VERSION} (use the alexnet_np version that wrote it)")
        try:
            a = g.attrs
            pre = json.loads(_text(a["preprocessing"]))
            return ModelCard(
                scenario=_text(a["scenario"]), class_names=tuple(json.loads(_text(a["class_names"]))),
                class_labels=tuple(tuple(c) for c in json.loads(_text(a["class_labels"]))),
                positive_class=int(a["positive_class"]), variant=_text(f.attrs["variant"]),
                input_size=int(f.attrs["input_size"]), widths=tuple(json.loads(_text(a["widths"]))),
                mean=np.asarray(g["mean"][()], np.float32), input_scale=float(a["input_scale"]),
                preprocessing=Preprocessing(int(pre["size"]), str(pre["aspect"]), str(pre["equalize"]),
                                            float(pre["threshold_fraction"])),
                seed=int(a["seed"]), training_data=json.loads(_text(a["training_data"])),
                training=json.loads(_text(a["training"])), environment=json.loads(_text(a["environment"])),
                git_commit=_text(a["git_commit"]), git_dirty=_text(a["git_dirty"]),
                mean_rule=_text(a.get("mean_rule", "unknown")), format_version=version)
        except (KeyError, ValueError, TypeError, OSError) as e:
            raise ModelFileError(f"{path} is a damaged model file: {type(e).__name__}: {e}") from None


def load_model(path):
    """Rebuild the network of a model file on the current array backend; returns (net, card).
    Raises :class:`ModelFileError` (missing, damaged, foreign, non-finite weights)."""
    card = read_card(path)
    try:
        net = AlexNet(card.num_classes, variant=card.variant, input_size=card.input_size,
                      widths=card.widths, seed=card.seed)
        load_weights(net, path)
    except (KeyError, ValueError, OSError) as e:
        raise ModelFileError(f"{os.fspath(path)}: its weights do not match its card: {e}") from None
    if card.mean.ndim == 2 and card.mean.shape != (card.input_size,) * 2:
        raise ModelFileError(f"{os.fspath(path)} is damaged: mean image {card.mean.shape}, input size {card.input_size}")
    bad = [name for name, p in net.params.items() if not bool(net.xp.isfinite(p).all())]
    if bad or not np.isfinite(card.mean).all():
        raise ModelFileError(f"{os.fspath(path)} is damaged: non-finite (NaN or inf) values in "
                             f"{', '.join(bad) if bad else 'its input mean'}; expected a model whose training finished")
    return net, card


def score(net, card: ModelCard, gray, batch_size=50):
    """Class probabilities (N, classes), float32, of preprocessed gray images (N, S, S) uint8.

    The same code as the training run's test predictions (pipeline.train.predict): network input
    (gray - card.mean) * card.input_scale, test mode, softmax. The score of ROC analysis is
    ``proba[:, card.positive_class]``.
    """
    gray = np.asarray(gray)
    want = (card.input_size, card.input_size)
    if gray.ndim != 3 or gray.shape[1:] != want or gray.dtype != np.uint8:
        raise ValueError(f"score: expected gray images (N, {want[0]}, {want[1]}) uint8 preprocessed with "
                         f"{card.preprocessing}, got {gray.shape} {gray.dtype}")
    return predict(net, gray, np.arange(len(gray)), card.mean, card.input_scale, batch_size)
