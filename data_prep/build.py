"""Dataset build: manifest -> one HDF5 file of preprocessed images, resumable and parallel.

HDF5 layout (format ``aboutalib2018-mammo-dataset``, version :data:`FORMAT_VERSION`), N images:

* ``images``          (N, size, size) uint8, preprocessed (see :mod:`data_prep.preprocess`);
* ``labels``          (N,) int8, 0 = negative, 1 = recalled_benign, 2 = malignant (root attribute
                      ``label_names`` gives the mapping);
* ``interval_cancer`` (N,) int8; ``manifest_line`` (N,) int32 (the image's row in the manifest);
* ``patient_id``, ``exam_id``, ``view``, ``laterality``, ``source``, ``image_path``: (N,)
  variable-length UTF-8 strings (``laterality``/``view`` as given by the manifest, else by the
  DICOM tags);
* root attributes: every build parameter, a description of each preprocessing step, the manifest
  path and fingerprint, library versions, and the error count and report name.

How a build survives interruption: finished images are written in small HDF5 "part" files
(:data:`PART_SIZE` images each, each written atomically) in ``<out>.partial/``. A new build with
the same manifest and parameters skips the images found there. When all images are done the parts
are assembled into a temporary file that is renamed onto ``<out>`` (atomic), and the partial folder
is removed. A finished file is therefore never half-written and never mixes two parameter sets.

An image that cannot be read or preprocessed is skipped and listed, with the reason, in
``<out stem>.errors.csv`` next to the output; one bad file never aborts a build.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pydicom
import scipy
import skimage

from .fileio import atomic_output, write_csv_atomic
from .manifest import LABEL_CODES, LABELS, DataPrepError, read_manifest
from .parallel import parallel_map
from .preprocess import (
    ASPECTS,
    EQUALIZE_METHODS,
    KEYS_A,
    THRESHOLD_FRACTION,
    preprocess_image,
)
from .readers import ROBUST_PERCENTILES, ImageReadError, read_image

FORMAT_NAME = "aboutalib2018-mammo-dataset"
FORMAT_VERSION = 1
#: Images per part file of a running build: what an interruption can lose at most.
PART_SIZE = 64
STRING_FIELDS = ("patient_id", "exam_id", "view", "laterality", "source", "image_path")
#: Why an image is skipped, as counted in the ``skipped_by_reason`` attribute: the file is missing;
#: it is not a readable image; its compression has no installed decoder; its pixels cannot be used
#: (missing, not one grayscale frame, bad window tags); neither the manifest nor the file gives its
#: laterality; preprocessing finds no breast in it; anything else.
SKIP_CATEGORIES = ("missing file", "unreadable file", "unsupported transfer syntax", "unusable pixel data",
                   "laterality unknown", "no breast found", "other error")

#: What each step does, stored with every dataset so a result can be traced to its pixels.
STEP_DESCRIPTIONS = {
    "step_read": ("DICOM: BitsStored, Modality LUT, first VOI LUT item or first window (LINEAR, LINEAR_EXACT, "
                  "SIGMOID), MONOCHROME1 inverted, padding to 0; For Processing or no VOI: percentile window "
                  f"{ROBUST_PERCENTILES}; PNG/TIFF/PGM: divided by 2**bits-1 of the significant bit depth"),
    "step_mask": ("threshold = background + threshold_fraction * (Otsu - background), background = median below "
                  "Otsu; largest 8-connected component, holes filled; on a copy of at most 512 px per side"),
    "step_orient": "mirror so the chest wall is at the left (left-breast orientation); content first, laterality if ambiguous",
    "step_crop": "bounding box of the breast mask, pixels outside the mask set to 0",
    "step_resize": f"separable Keys cubic (a={KEYS_A}) with kernel stretched by the scale factor (anti-aliased), "
                   "weights renormalised at the border; equals Pillow BICUBIC",
    "step_equalize": "over the breast mask only, background 0; global = empirical CDF, clahe = skimage equalize_adapthist",
    "step_store": "uint8 = round(255 * clip(x, 0, 1)); NOT mean-subtracted (done at training time)",
}


@dataclass(frozen=True)
class Skipped:
    """Why one image was left out of a build: a category from :data:`SKIP_CATEGORIES` and the full message."""

    category: str
    reason: str


def _skip_category(exc: Exception) -> str:
    """The short, stable category of a failed image (the keys of the ``skipped_by_reason`` attribute)."""
    if isinstance(exc, ImageReadError):
        if exc.field == "file":
            return "missing file" if exc.problem == "does not exist" else "unreadable file"
        return "unsupported transfer syntax" if exc.field == "TransferSyntaxUID" else "unusable pixel data"
    if isinstance(exc, DataPrepError) and "laterality unknown" in str(exc):
        return "laterality unknown"
    if isinstance(exc, DataPrepError) and "no breast found" in str(exc):
        return "no breast found"
    return "other error"


def _prepare_one(task: tuple) -> tuple:
    """Read and preprocess one manifest row (runs in a worker process).

    Returns (index, image or None, laterality, view, :class:`Skipped` or None). Every exception
    becomes a :class:`Skipped`: one unreadable file must not stop a build of thousands.
    """
    index, path, laterality, view, size, aspect, equalize = task
    try:
        image, meta = read_image(path)
        laterality = laterality or meta["laterality"] or ""
        view = view or meta["view"] or ""
        if laterality not in ("L", "R"):
            raise DataPrepError(f"{path}: laterality unknown: the manifest leaves it empty and the file has "
                                "no ImageLaterality/Laterality tag (expected L or R)")
        return index, preprocess_image(image, laterality, size, aspect, equalize), laterality, view, None
    except Exception as exc:  # noqa: BLE001 - any failure of one image is reported, never fatal
        return index, None, laterality, view, Skipped(_skip_category(exc), f"{type(exc).__name__}: {exc}")


def errors_report_path(out_h5: str | os.PathLike) -> Path:
    """Where the build writes its list of skipped images: ``<out stem>.errors.csv`` next to ``out_h5``."""
    out_h5 = Path(out_h5)
    return out_h5.with_name(out_h5.stem + ".errors.csv")


def _file_stat(path: str) -> list[int] | None:
    """[size in bytes, modification time in ns] of an image file; None when it does not exist."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _fingerprint(rows: list[dict], settings: dict) -> str:
    """SHA-256 of everything that decides the output: the manifest rows, the image files and the settings.

    The image files count by their size and modification time (ns), so an image corrected or
    re-exported at the same path makes a new build instead of returning the old dataset (reading
    every file's content would cost as much as the build). The settings include the step
    descriptions, so a changed algorithm never resumes old work.
    """
    keys = ("path", "image_path", "patient_id", "exam_id", "laterality", "view", "label", "source", "interval_cancer")
    payload = json.dumps({"rows": [[row[k] for k in keys] for row in rows],
                          "files": [_file_stat(row["path"]) for row in rows], "settings": settings}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _finished_fingerprint(out_h5: Path) -> str | None:
    try:
        with h5py.File(out_h5, "r") as f:
            return f.attrs.get("fingerprint")
    except OSError:
        return None


def _open_partial(partial: Path, fingerprint: str, resume: bool) -> dict[int, tuple[str, str]]:
    """Prepare ``partial``; return {manifest index: (laterality, view)} of the images already done.

    A partial folder from another manifest or other parameters (or ``resume=False``) is discarded.
    """
    params = partial / "fingerprint.txt"
    if resume and params.exists() and params.read_text().strip() == fingerprint:
        done = {}
        for part in sorted(partial.glob("part_*.h5")):
            with h5py.File(part, "r") as f:
                lateralities, views = f["laterality"].asstr()[()], f["view"].asstr()[()]
                done.update((int(i), (lat, view)) for i, lat, view in zip(f["index"][()], lateralities, views))
        return done
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with atomic_output(params) as tmp:
        tmp.write_text(fingerprint + "\n")
    return {}


def _write_part(partial: Path, results: list[tuple]) -> None:
    """Write finished images (index, image, laterality, view) as the next part file, atomically."""
    number = len(list(partial.glob("part_*.h5")))
    strings = h5py.string_dtype("utf-8")
    with atomic_output(partial / f"part_{number:06d}.h5") as tmp, h5py.File(tmp, "w") as f:
        f["index"] = np.array([r[0] for r in results], np.int64)
        f["images"] = np.stack([r[1] for r in results])
        f.create_dataset("laterality", data=[r[2] for r in results], dtype=strings)
        f.create_dataset("view", data=[r[3] for r in results], dtype=strings)


def _assemble(out_h5: Path, partial: Path, rows: list[dict], done: dict, attrs: dict) -> None:
    """Gather the part files into ``out_h5`` (manifest order, failed images left out), atomically."""
    kept = np.array(sorted(done), np.int64)
    size = attrs["size"]
    strings = h5py.string_dtype("utf-8")
    with atomic_output(out_h5) as tmp, h5py.File(tmp, "w") as f:
        images = f.create_dataset("images", (kept.size, size, size), np.uint8)
        for part in sorted(partial.glob("part_*.h5")):
            with h5py.File(part, "r") as p:
                index = p["index"][()]
                order = np.argsort(index)
                images[np.searchsorted(kept, index[order])] = p["images"][()][order]
        chosen = [rows[i] for i in kept]
        f["labels"] = np.array([LABEL_CODES[r["label"]] for r in chosen], np.int8)
        f["interval_cancer"] = np.array([r["interval_cancer"] for r in chosen], np.int8)
        f["manifest_line"] = np.array([r["line"] for r in chosen], np.int32)
        columns = {name: [r[name] for r in chosen] for name in STRING_FIELDS}
        columns["laterality"] = [done[i][0] for i in kept]
        columns["view"] = [done[i][1] for i in kept]
        for name in STRING_FIELDS:
            f.create_dataset(name, data=columns[name], dtype=strings)
        f.attrs.update(attrs)
        f.attrs["n_images"] = kept.size


def _count_json(labels) -> str:
    """JSON {label: count} over the three classes, zeros included."""
    counts = Counter(labels)
    return json.dumps({label: counts[label] for label in LABELS})


def build_dataset(manifest, out_h5, size: int = 227, aspect: str = "stretch", equalize: str = "global",
                  workers: int | None = None, resume: bool = True, progress: bool = True,
                  rebuild: bool = False) -> Path:
    """Read, preprocess and store every image of a manifest in one HDF5 file; return its path.

    ``manifest`` is a manifest CSV path or rows from :func:`data_prep.manifest.read_manifest`.
    ``size``, ``aspect`` ("stretch" or "pad") and ``equalize`` ("global", "clahe", "none") are the
    preprocessing parameters (:mod:`data_prep.preprocess`); ``workers`` processes run in parallel
    (default: all cores). An existing finished file built from the same manifest rows, image files
    (size and modification time) and parameters is returned as it is, unless ``rebuild``. With
    ``resume`` (default), an interrupted build with the same inputs continues where it stopped;
    ``resume=False`` starts it over. ``rebuild=True`` builds every image again. Skipped images are
    listed in :func:`errors_report_path` and counted in the attributes ``n_errors``,
    ``skipped_by_reason`` (category of :data:`SKIP_CATEGORIES` -> count) and ``skipped_by_label``,
    next to ``n_manifest_rows`` and ``manifest_by_label``. Raises :class:`DataPrepError` if no image
    at all could be prepared.
    """
    if aspect not in ASPECTS:
        raise ValueError(f"aspect must be one of {ASPECTS}, got {aspect!r}")
    if equalize not in EQUALIZE_METHODS:
        raise ValueError(f"equalize must be one of {EQUALIZE_METHODS}, got {equalize!r}")
    if int(size) < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    size = int(size)
    manifest_path = "" if isinstance(manifest, list) else str(Path(manifest).resolve())
    rows = manifest if isinstance(manifest, list) else read_manifest(manifest)
    out_h5 = Path(out_h5)
    settings = {"size": size, "aspect": aspect, "equalize": equalize, "threshold_fraction": THRESHOLD_FRACTION,
                "format_version": FORMAT_VERSION}
    fingerprint = _fingerprint(rows, {**settings, **STEP_DESCRIPTIONS})
    if not rebuild and out_h5.exists() and _finished_fingerprint(out_h5) == fingerprint:
        return out_h5

    partial = out_h5.with_name(out_h5.name + ".partial")
    done = _open_partial(partial, fingerprint, resume and not rebuild)
    tasks = [(i, row["path"], row["laterality"], row["view"], size, aspect, equalize)
             for i, row in enumerate(rows) if i not in done]
    errors, finished = [], []
    for index, image, laterality, view, error in parallel_map(
            _prepare_one, tasks, workers, progress, desc=f"build {out_h5.name}", total=len(rows),
            initial=len(done), unit="img"):
        if error is not None:
            errors.append((index, error))
            continue
        finished.append((index, image, laterality, view))
        done[index] = (laterality, view)
        if len(finished) >= PART_SIZE:
            _write_part(partial, finished)
            finished = []
    if finished:
        _write_part(partial, finished)

    report = errors_report_path(out_h5)
    errors.sort(key=lambda error: error[0])
    write_csv_atomic(report, ("manifest_line", "image_path", "patient_id", "label", "category", "reason"),
                     [(rows[i]["line"], rows[i]["image_path"], rows[i]["patient_id"], rows[i]["label"],
                       skipped.category, skipped.reason) for i, skipped in errors])
    if not done:
        raise DataPrepError(f"{manifest_path or 'manifest'}: none of the {len(rows)} images could be prepared; "
                            f"reasons in {report}")
    by_reason = Counter(skipped.category for _, skipped in errors)
    attrs = {
        "format_name": FORMAT_NAME, "format_version": FORMAT_VERSION,
        "label_names": json.dumps({str(code): name for code, name in enumerate(LABELS)}),
        **settings, **STEP_DESCRIPTIONS,
        "mean_subtracted": False,
        "build_parameters": json.dumps(settings, sort_keys=True),
        "manifest_path": manifest_path, "fingerprint": fingerprint,
        "n_manifest_rows": len(rows), "n_errors": len(errors), "errors_report": report.name,
        "manifest_by_label": _count_json(row["label"] for row in rows),
        "skipped_by_label": _count_json(rows[i]["label"] for i, _ in errors),
        "skipped_by_reason": json.dumps({c: by_reason[c] for c in SKIP_CATEGORIES if by_reason[c]}),
        "library_versions": json.dumps({"numpy": np.__version__, "scipy": scipy.__version__,
                                        "scikit-image": skimage.__version__, "pydicom": pydicom.__version__,
                                        "h5py": h5py.__version__}),
    }
    _assemble(out_h5, partial, rows, done, attrs)
    shutil.rmtree(partial, ignore_errors=True)
    return out_h5


def load_dataset(path: str | os.PathLike) -> dict:
    """Load a built dataset into memory: a dict of NumPy arrays plus ``"attrs"`` (root attributes).

    String datasets come back as arrays of ``str``; ``images`` as (N, size, size) uint8.
    """
    with h5py.File(path, "r") as f:
        data = {name: (f[name].asstr()[()].astype(str) if h5py.check_string_dtype(f[name].dtype) else f[name][()])
                for name in f}
        data["attrs"] = {key: (value.item() if isinstance(value, np.generic) else value)
                         for key, value in f.attrs.items()}
    return data


def compute_mean(source, indices=None, chunk: int = 256) -> np.ndarray:
    """Per-pixel mean image (float64, size x size) of a dataset or a subset of it.

    The paper subtracts a mean before training ("mean subtracting"); Caffe's AlexNet uses a
    per-pixel mean image computed on the training images only (a scalar is ``.mean()`` of it). The
    training code calls this on its training split and records the result. ``source`` is an HDF5
    path from :func:`build_dataset` or an (N, H, W) array; ``indices`` selects images (default all;
    a repeated index counts once).
    Reads in chunks so a large file never has to fit in memory.
    """
    with contextlib.ExitStack() as stack:
        images = source if isinstance(source, np.ndarray) else stack.enter_context(h5py.File(source, "r"))["images"]
        order = np.arange(images.shape[0]) if indices is None else np.unique(np.asarray(indices, np.int64))
        if order.size == 0:
            raise ValueError("compute_mean: no images selected")
        total = np.zeros(images.shape[1:], np.float64)
        for start in range(0, order.size, chunk):
            total += images[order[start:start + chunk]].sum(axis=0, dtype=np.float64)
    return total / order.size
