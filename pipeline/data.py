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
import os
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

import data_prep

from .experiments import needed_datasets


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
    laterality: np.ndarray | None = None   # "L"/"R" per image (breast-level results); None: unknown

    def __len__(self):
        return len(self.labels)

    @classmethod
    def load(cls, name, path):
        d = data_prep.load_dataset(path)
        return cls(name=name, images=d["images"], labels=d["labels"].astype(np.int64),
                   patient_id=np.char.add(f"{name}:", d["patient_id"].astype(str)),
                   interval_cancer=d["interval_cancer"].astype(np.int8),
                   image_path=d["image_path"].astype(str), source=np.full(len(d["labels"]), name),
                   attrs=d["attrs"], laterality=d["laterality"].astype(str) if "laterality" in d else None)

    @staticmethod
    def concat(name, parts):
        """The combined experiment's dataset: several sets stacked (patient ids stay distinct)."""
        attrs = {p.name: p.attrs for p in parts}
        cat = lambda field: np.concatenate([getattr(p, field) for p in parts])  # noqa: E731
        lat = None if any(p.laterality is None for p in parts) else cat("laterality")
        return ImageSet(name, cat("images"), cat("labels"), cat("patient_id"), cat("interval_cancer"),
                        cat("image_path"), cat("source"), attrs, lat)


def _key(params: dict) -> str:
    return hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]


def synthetic_cohort_dir(name, *, n_patients, seed, difficulty, image_size, cache_dir, grain_scale=1.0,
                         finding_scale=1.0, views="standard") -> Path:
    """The cache folder of a synthetic cohort, keyed by its parameters and the generator's version
    (a new generator never reuses images drawn by an older one)."""
    params = dict(dataset=name, patients=n_patients, seed=seed, difficulty=difficulty,
                  image_size=list(image_size) if image_size else None,
                  generator_version=data_prep.synthetic.GENERATOR_VERSION)
    # only when not 1: cohorts cached before these options existed keep their folder
    if grain_scale != 1.0:
        params["grain_scale"] = grain_scale
    if finding_scale != 1.0:
        params["finding_scale"] = finding_scale
    if views != "standard":
        params["views"] = views
    return Path(cache_dir) / "synthetic" / f"{name}-p{n_patients}-s{seed}-{_key(params)}"


def synthetic_dataset(name, *, n_patients, seed, difficulty, image_size, size, cache_dir,
                      workers=None, progress=True, rebuild=False, grain_scale=1.0, finding_scale=1.0,
                      views="standard"):
    """Generate (once) and build (once) a synthetic cohort; returns the built HDF5 path.

    Both steps are cached by their parameters; the generator and the builder
    are themselves resumable and write their final files atomically. ``rebuild``
    builds the dataset again from the cached images. ``views`` is the generator's views per exam
    ("standard", or "table1": the images per patient that give Table 1's counts).
    """
    cohort_dir = synthetic_cohort_dir(name, n_patients=n_patients, seed=seed, difficulty=difficulty,
                                      image_size=image_size, cache_dir=cache_dir, grain_scale=grain_scale,
                                      finding_scale=finding_scale, views=views)
    manifest = cohort_dir / "manifest.csv"
    if not manifest.exists():
        data_prep.synthesize(name, n_patients, seed, cohort_dir, difficulty=difficulty,
                             image_size=tuple(image_size) if image_size else None,
                             workers=workers, progress=progress, grain_scale=grain_scale,
                             finding_scale=finding_scale, views=views)
    out = cohort_dir / f"dataset_{size}.h5"
    return data_prep.build_dataset(manifest, out, size=size, workers=workers, rebuild=rebuild, progress=progress)


def built_attrs(path) -> dict:
    """A built dataset's root attributes ({} when the file is not HDF5), read without its images."""
    try:
        with h5py.File(path, "r") as f:
            return dict(f.attrs)
    except OSError:
        return {}


def check_user_data(name, path, size):
    """Check a ``--data NAME=PATH`` before any work: the file exists and is a readable manifest CSV
    or a built dataset at the network's input size. Raises ``ValueError`` naming the option and file."""
    path = Path(path)
    where = f"--data {name}={path}"
    if not path.is_file():
        raise ValueError(f"{where}: no such file; expected a manifest .csv or a dataset .h5 from "
                         "`python -m data_prep build`")
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        built = built_attrs(path)
        if built.get("format_name") is None:
            raise ValueError(f"{where}: expected a dataset from `python -m data_prep build`, got an HDF5 file "
                             "without its format_name attribute")
        if int(built.get("size", size)) != size:
            raise ValueError(f"{where}: built at {built['size']}x{built['size']} pixels but the network's input "
                             f"size is {size}; expected a dataset built with `python -m data_prep build MANIFEST "
                             f"OUT.h5 --size {size}`, or pass the manifest")
    elif suffix == ".csv":
        try:
            data_prep.read_manifest(path)
        except data_prep.ManifestError as e:
            raise ValueError(f"{where}: {len(e.problems)} problem(s) in the manifest, the first: {e.problems[0]} "
                             f"(`python -m data_prep validate {path}` lists them all)") from None
        except data_prep.DataPrepError as e:
            raise ValueError(f"{where}: {e}") from None
    else:
        raise ValueError(f"{where}: expected a manifest .csv or a built .h5 dataset, got a {suffix or 'suffix-less'} file")


def user_dataset(name, path, *, size, cache_dir, workers=None, progress=True, rebuild=False):
    """A user's manifest CSV (built here, cached) or an already built HDF5 dataset (checked by
    :func:`check_user_data` first)."""
    path = Path(path)
    if path.suffix.lower() in (".h5", ".hdf5"):
        return path
    out = Path(cache_dir) / "built" / f"{name}-{_key({'manifest': str(path.resolve())})}_{size}.h5"
    return data_prep.build_dataset(path, out, size=size, workers=workers, rebuild=rebuild, progress=progress)


#: A run whose datasets lost more than this share of their manifest's images warns loudly: the
#: cohort that trained is then noticeably not the cohort that was described.
SKIPPED_WARN_SHARE = 0.05


@dataclass
class CohortAttrition:
    """Where a dataset came from and how many of its images reached the study, by class.

    ``manifest_by_label``, ``skipped_by_label`` and ``read_by_label`` map the dataset labels
    (negative, recalled_benign, malignant) to image counts; ``skipped_by_reason`` maps data_prep's
    skip categories to counts. Counts the build did not record (a dataset built by an older
    version) are None.
    """

    dataset: str
    origin: str                      # "synthetic ..." or the user's file
    built_file: str
    n_manifest: int | None
    n_read: int
    n_skipped: int | None
    skipped_by_reason: dict
    manifest_by_label: dict
    skipped_by_label: dict
    read_by_label: dict
    errors_report: str | None        # the list of skipped images, with the reasons

    @property
    def skipped_share(self) -> float:
        return self.n_skipped / self.n_manifest if self.n_manifest else 0.0

    @property
    def too_many_skipped(self) -> bool:
        return self.skipped_share > SKIPPED_WARN_SHARE

    def lines(self) -> list[str]:
        """The console's account of the dataset: manifest, read, skipped by reason, used by class."""
        if self.n_manifest is None:
            return [f"  {self.dataset}: {self.n_read} images ({_counts(self.read_by_label)}); the build recorded no "
                    "skipped images count (built by an older data_prep)"]
        lines = [f"  {self.dataset}: {self.n_manifest} images in the manifest, {self.n_read} read "
                 f"({_counts(self.read_by_label)}), {self.n_skipped} skipped"
                 + (f" ({_counts(self.skipped_by_reason)}; by class: {_counts(self.skipped_by_label)}; list: "
                    f"{self.errors_report})" if self.n_skipped else "")]
        if self.too_many_skipped:
            lines.append(self.warning())
        return lines

    def warning(self) -> str:
        """The loud line of a dataset that lost more than :data:`SKIPPED_WARN_SHARE` of its images."""
        return (f"WARNING: {self.dataset}: {self.n_skipped} of {self.n_manifest} images ({100 * self.skipped_share:.1f}%, "
                f"more than {100 * SKIPPED_WARN_SHARE:g}%) could not be used; the study runs on the rest. "
                f"Reasons: {self.errors_report}")


def _counts(by_label: dict) -> str:
    return ", ".join(f"{label} {n}" for label, n in by_label.items())


def attrition(ds: ImageSet, origin: str, built_file) -> CohortAttrition:
    """Read a loaded dataset's build attributes (data_prep.build_dataset's counts) into a record."""
    a = ds.attrs
    by_json = lambda key: json.loads(a[key]) if key in a else {}  # noqa: E731
    read = np.bincount(ds.labels, minlength=len(data_prep.LABELS))
    report = Path(built_file).with_name(str(a["errors_report"])) if a.get("errors_report") else None
    return CohortAttrition(
        dataset=ds.name, origin=origin, built_file=str(built_file),
        n_manifest=int(a["n_manifest_rows"]) if "n_manifest_rows" in a else None, n_read=len(ds),
        n_skipped=int(a["n_errors"]) if "n_errors" in a else None, skipped_by_reason=by_json("skipped_by_reason"),
        manifest_by_label=by_json("manifest_by_label"), skipped_by_label=by_json("skipped_by_label"),
        read_by_label={name: int(n) for name, n in zip(data_prep.LABELS, read)},
        errors_report=str(report) if report else None)


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


def prepare_datasets(cfg, cache_dir, workers=None, rebuild=False, log=print):
    """Load (building or generating first where needed) every dataset the experiments of ``cfg``
    (a StudyConfig) use. Returns ({name: ImageSet}, [CohortAttrition]); ``rebuild`` builds them again."""
    out, cohorts = {}, []
    for name in needed_datasets(cfg.experiments):
        t0 = time.perf_counter()
        if name in cfg.data:
            origin = f"your data: --data {name}={cfg.data[name]}"
            path = user_dataset(name, cfg.data[name], size=cfg.input_size, cache_dir=cache_dir,
                                workers=workers, progress=cfg.progress, rebuild=rebuild)
        else:
            n = cfg.ffdm_patients if name == "ffdm" else cfg.ddsm_patients
            origin = (f"synthetic {name.upper()}-like cohort from data_prep's generator ({n} patients, seed {cfg.seed}, "
                      f"difficulty {cfg.difficulty:g}"
                      + (f", findings drawn x{cfg.finding_scale:g}" if cfg.finding_scale != 1 else "")
                      + (f", calcification grains x{cfg.grain_scale:g}" if cfg.grain_scale != 1 else "")
                      + (", views per exam as the paper's Table 1 implies" if cfg.synthetic_views == "table1" else "")
                      + ")")
            log(f"{origin}, cached in {cache_dir}")
            path = synthetic_dataset(name, n_patients=n, seed=cfg.seed, difficulty=cfg.difficulty,
                                     grain_scale=cfg.grain_scale, finding_scale=cfg.finding_scale,
                                     views=cfg.synthetic_views, image_size=None,
                                     size=cfg.input_size, cache_dir=cache_dir, workers=workers,
                                     progress=cfg.progress, rebuild=rebuild)
        out[name] = ImageSet.load(name, path)
        cohorts.append(attrition(out[name], origin, path))
        log(f"  {name}: {cfg.input_size}x{cfg.input_size} images from {path} [{time.perf_counter() - t0:.0f} s]")
        for line in cohorts[-1].lines():
            log(line)
    return out, cohorts


#: Image sets this process has loaded, for one set of dataset files: a Dask worker loads each dataset
#: once, not once per job, and the client's sequential jobs use the datasets it loaded itself.
_LOADED: dict = {"files": None, "sets": {}}


def _files_id(files: dict) -> tuple:
    """The dataset files as they are now (path, size, modification time): a rebuilt file is another one."""
    out = []
    for name, path in sorted(files.items()):
        st = os.stat(path)
        out.append((name, str(Path(path).resolve()), st.st_size, st.st_mtime_ns))
    return tuple(out)


def remember_datasets(files: dict, datasets: dict):
    """Let this process's jobs use ``datasets`` (already loaded from ``files``) instead of reading them again."""
    _LOADED["files"], _LOADED["sets"] = _files_id(files), dict(datasets)


def image_set(name: str, files: dict) -> ImageSet:
    """The ImageSet ``name`` ("ffdm", "ddsm", or "combined": the two stacked) from the built ``files``
    ({dataset: HDF5 path}), loaded once per process."""
    ident = _files_id(files)
    if _LOADED["files"] != ident:
        _LOADED["files"], _LOADED["sets"] = ident, {}
    sets = _LOADED["sets"]
    if name not in sets:
        sets[name] = (ImageSet.concat("combined", [image_set(p, files) for p in ("ffdm", "ddsm")])
                      if name == "combined" else ImageSet.load(name, files[name]))
    return sets[name]
