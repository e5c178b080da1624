"""Where the study's images come from: user data (manifest or built HDF5) or the synthetic cohorts.

The paper used two datasets, a private FFDM cohort and the public DDSM. Without
``--data``, the run generates synthetic stand-ins for both once
(:func:`data_prep.synthesize`), builds them into HDF5 datasets at the network's
input size (:func:`data_prep.build_dataset`: orientation, breast crop, bicubic
downsampling, histogram equalization) and caches them under ``cache_dir``, so a
second run starts training at once.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import data_prep

DATASETS = ("ffdm", "ddsm")


def needed_datasets(experiments):
    """Which datasets the experiments read: ddsm-only needs DDSM, ffdm-only FFDM, the others both."""
    need = set()
    for e in experiments:
        need |= {"ffdm"} if e == "ffdm" else {"ddsm"} if e == "ddsm" else {"ffdm", "ddsm"}
    return [d for d in DATASETS if d in need]


@dataclass
class ImageSet:
    """A dataset held in memory: images (N, S, S) uint8 and per-image metadata arrays."""

    name: str
    images: np.ndarray
    labels: np.ndarray          # 0 negative, 1 recalled-benign, 2 malignant
    patient_id: np.ndarray      # str, made unique across datasets by a "<name>:" prefix
    interval_cancer: np.ndarray
    image_path: np.ndarray
    source: np.ndarray
    attrs: dict

    def __len__(self):
        return len(self.labels)

    @classmethod
    def load(cls, name, path):
        d = data_prep.load_dataset(path)
        return cls(name=name, images=d["images"], labels=d["labels"].astype(np.int64),
                   patient_id=np.char.add(f"{name}:", d["patient_id"].astype(str)),
                   interval_cancer=d["interval_cancer"].astype(np.int8),
                   image_path=d["image_path"].astype(str), source=np.full(len(d["labels"]), name),
                   attrs=d["attrs"])

    @staticmethod
    def concat(name, parts):
        """The combined experiment's dataset: several sets stacked (patient ids stay distinct)."""
        attrs = {p.name: p.attrs for p in parts}
        cat = lambda field: np.concatenate([getattr(p, field) for p in parts])  # noqa: E731
        return ImageSet(name, cat("images"), cat("labels"), cat("patient_id"), cat("interval_cancer"),
                        cat("image_path"), cat("source"), attrs)


def _key(params: dict) -> str:
    return hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]


def synthetic_dataset(name, *, n_patients, seed, difficulty, image_size, size, cache_dir,
                      workers=None, progress=True):
    """Generate (once) and build (once) a synthetic cohort; returns the built HDF5 path.

    Both steps are cached by their parameters; the generator and the builder
    are themselves resumable and write their final files atomically.
    """
    params = dict(dataset=name, patients=n_patients, seed=seed, difficulty=difficulty,
                  image_size=list(image_size) if image_size else None)
    cohort_dir = Path(cache_dir) / "synthetic" / f"{name}-p{n_patients}-s{seed}-{_key(params)}"
    manifest = cohort_dir / "manifest.csv"
    if not manifest.exists():
        data_prep.synthesize(name, n_patients, seed, cohort_dir, difficulty=difficulty,
                             image_size=tuple(image_size) if image_size else None,
                             workers=workers, progress=progress)
    out = cohort_dir / f"dataset_{size}.h5"
    return data_prep.build_dataset(manifest, out, size=size, workers=workers, resume=True, progress=progress)


def user_dataset(name, path, *, size, cache_dir, workers=None, progress=True):
    """A user's manifest CSV (built here, cached) or an already built HDF5 dataset."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--data {name}={path}: no such file")
    if path.suffix.lower() in (".h5", ".hdf5"):
        with_size = data_prep.load_dataset(path)["attrs"].get("size")
        if with_size is not None and int(with_size) != size:
            raise ValueError(f"--data {name}={path} was built at {with_size}x{with_size} pixels but the "
                             f"network's input size is {size}; rebuild it with "
                             f"`python -m data_prep build MANIFEST OUT.h5 --size {size}` or pass the manifest")
        return path
    if path.suffix.lower() != ".csv":
        raise ValueError(f"--data {name}={path}: expected a manifest .csv or a built .h5 dataset")
    out = Path(cache_dir) / "built" / f"{name}-{_key({'manifest': str(path.resolve())})}_{size}.h5"
    out.parent.mkdir(parents=True, exist_ok=True)
    return data_prep.build_dataset(path, out, size=size, workers=workers, resume=True, progress=progress)


def split_holdout(ds: ImageSet, test_fraction: float, seed: int):
    """Patient-level stratified held-out split (the paper's 5/10/15% test sets), per source dataset,
    so the combined experiment keeps both datasets' proportions on both sides."""
    train, test = [], []
    for src in np.unique(ds.source):
        idx = np.flatnonzero(ds.source == src)
        tr, te = data_prep.holdout_split(ds.patient_id[idx], ds.labels[idx], test_fraction, seed)
        train.append(idx[tr])
        test.append(idx[te])
    train, test = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    data_prep.check_no_patient_leakage(ds.patient_id, train, test)
    return train, test


def training_mean(ds: ImageSet, indices) -> np.ndarray:
    """The paper's "mean subtracting": per-pixel mean image of the training images (float32)."""
    return data_prep.compute_mean(ds.images, indices).astype(np.float32)
