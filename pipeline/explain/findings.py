"""The ground truth an explanation is measured against: each test image's findings, carried from the
original image into the stored one (orientation flip, breast crop, resize) with data_prep's
``to_stored_coords``, as :class:`~pipeline.explain.checks.StoredFindings`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

import data_prep
from data_prep.figures import _findings_by_image

from ..data import ImageSet
from ..scenarios import LABEL_NAMES
from .checks import StoredFindings


@dataclass
class Geometry:
    """Where each stored image came from (from the dataset HDF5; absent in builds before crop_box)."""

    crop_box: np.ndarray        # (N, 4) top, bottom, left, right of the oriented image
    flipped: np.ndarray         # (N,)
    original_shape: np.ndarray  # (N, 2)
    size: int
    aspect: str


@dataclass
class GroundTruth:
    """An image set's crop geometry and findings (by image path); either may be missing."""

    geometry: Geometry | None
    findings: dict              # image_path -> list of findings.csv rows (empty without ground truth)


def _load_geometry(path, size):
    with h5py.File(path, "r") as f:
        if "crop_box" not in f:
            return None
        return Geometry(f["crop_box"][()], f["flipped"][()], f["original_shape"][()], int(size),
                        str(f.attrs.get("aspect", "stretch")))


def _dataset_truth(path, size) -> GroundTruth:
    with h5py.File(path, "r") as f:
        manifest = f.attrs.get("manifest_path")
    findings = _findings_by_image(Path(manifest)) if manifest else {}
    return GroundTruth(_load_geometry(path, size), findings)


def ground_truth(name: str, files: dict, size: int) -> GroundTruth:
    """The ground truth of the image set ``name`` ("ffdm", "ddsm" or "combined", the two stacked in
    that order, as pipeline.data.image_set stacks their images) built into ``files``."""
    if name != "combined":
        return _dataset_truth(files[name], size)
    parts = [_dataset_truth(files[p], size) for p in ("ffdm", "ddsm")]
    geos = [p.geometry for p in parts]
    geo = None if any(g is None for g in geos) else Geometry(
        *(np.concatenate([getattr(g, k) for g in geos]) for k in ("crop_box", "flipped", "original_shape")),
        geos[0].size, geos[0].aspect)
    return GroundTruth(geo, {**parts[0].findings, **parts[1].findings})


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


def findings_for(truth: GroundTruth, ds: ImageSet, idx):
    """(scored, incidental) StoredFindings per image of ``idx``: scored = findings whose role is the image's
    own label (malignant on a malignant image, recalled_benign on a recalled-benign one); everything
    else (incidental lymph nodes and vascular calcifications, a benign second finding beside a cancer)
    is not scored: a maximum on it is a miss, and its area is not part of the chance level.
    (None, None) without ground truth."""
    if truth.geometry is None or not truth.findings:
        return None, None
    scored, incidental = [], []
    for i in idx:
        rows = truth.findings.get(ds.image_path[i], [])
        label = LABEL_NAMES[ds.labels[i]]
        scored.append(_stored_findings([r for r in rows if r["role"] == label], truth.geometry, i))
        incidental.append(_stored_findings([r for r in rows if r["role"] != label], truth.geometry, i))
    return scored, incidental
