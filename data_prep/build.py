"""Dataset build: manifest -> one HDF5 file of preprocessed images, resumable and parallel.

HDF5 layout (format ``aboutalib2018-mammo-dataset``, version :data:`FORMAT_VERSION`), N images:

* ``images``          (N, size, size) uint8, preprocessed (see :mod:`data_prep.preprocess`);
* ``labels``          (N,) int8, 0 = negative, 1 = recalled_benign, 2 = malignant (root attribute
                      ``label_names`` gives the mapping);
* ``interval_cancer`` (N,) int8; ``manifest_line`` (N,) int32 (the image's row in the manifest);
* ``patient_id``, ``exam_id``, ``view``, ``laterality``, ``source``, ``image_path``: (N,)
  variable-length UTF-8 strings (``laterality``/``view`` as given by the manifest, else by the
  DICOM tags);
* crop geometry (version 2 on; :class:`data_prep.preprocess.CropGeometry`), to map positions in
  the original files onto the stored images with :func:`data_prep.preprocess.to_stored_coords`:
  ``crop_box`` (N, 4) int32 = (top, bottom, left, right), rows [top, bottom) and columns
  [left, right) of the *oriented* image that were kept; ``flipped`` (N,) int8, 1 when the image
  was mirrored left-right; ``original_shape`` (N, 2) int32, (rows, cols) as read;
* crop measures (version 2 on; :func:`data_prep.preprocess.crop_measures`): ``breast_fraction``
  (N,) float32, the share of the stored image inside the breast mask, and ``breast_extent`` (N,)
  float32, the breast's width over the crop's stored width. An image is a *crop outlier* when
  breast_extent < :data:`OUTLIER_EXTENT` or breast_fraction < :data:`OUTLIER_FRACTION` (a good
  crop gives 0.93-1 and 0.65-0.8 on the synthetic cohorts; a crop that kept a film border about
  0.5-0.6 and 0.3-0.5); every image's measures and flag are listed in ``<out stem>.crops.csv``;
* root attributes: every build parameter (with ``preprocess_version``), a description of each
  preprocessing step, the manifest path and fingerprint, library versions, the error count and
  report name, ``n_crop_outliers``, ``crop_outlier_rule`` and ``crops_report``.

Files of format version 1 lack the crop geometry and measures; :func:`load_dataset` loads them
without those fields.

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
    PREPROCESS_VERSION,
    THRESHOLD_FRACTION,
    preprocess_steps,
)
from .readers import ROBUST_PERCENTILES, read_image

FORMAT_NAME = "aboutalib2018-mammo-dataset"
FORMAT_VERSION = 2
#: Images per part file of a running build: what an interruption can lose at most.
PART_SIZE = 64
STRING_FIELDS = ("patient_id", "exam_id", "view", "laterality", "source", "image_path")
#: Per-image crop geometry and measures: HDF5 dataset name -> (shape per image, type).
CROP_FIELDS = {"crop_box": ((4,), np.int32), "flipped": ((), np.int8), "original_shape": ((2,), np.int32),
               "breast_fraction": ((), np.float32), "breast_extent": ((), np.float32)}
#: A crop outlier has breast_extent below this or breast_fraction below OUTLIER_FRACTION.
OUTLIER_EXTENT = 0.85
OUTLIER_FRACTION = 0.3

#: What each step does, stored with every dataset so a result can be traced to its pixels.
STEP_DESCRIPTIONS = {
    "step_read": ("DICOM: BitsStored, Modality LUT, first VOI LUT item or first window (LINEAR, LINEAR_EXACT, "
                  "SIGMOID), MONOCHROME1 inverted, padding to 0; For Processing or no VOI: percentile window "
                  f"{ROBUST_PERCENTILES}; PNG/TIFF/PGM: divided by 2**bits-1 of the significant bit depth"),
    "step_mask": ("bright flat strips anchored at the image edges removed (film border, scanner edge); threshold = "
                  "background + threshold_fraction * (Otsu - background), background = median of the lowest of three "
                  "Otsu classes; largest 8-connected component, holes filled; on a copy of at most 512 px per side"),
    "step_orient": ("mirror so the chest wall is at the left (left-breast orientation); content first (the side where "
                    "the mask fills its bounding box's edge), laterality if ambiguous"),
    "step_crop": "bounding box of the breast mask, pixels outside the mask set to 0",
    "step_resize": f"separable Keys cubic (a={KEYS_A}) with kernel stretched by the scale factor (anti-aliased), "
                   "weights renormalised at the border; equals Pillow BICUBIC",
    "step_equalize": "over the breast mask only, background 0; global = empirical CDF, clahe = skimage equalize_adapthist",
    "step_store": "uint8 = round(255 * clip(x, 0, 1)); NOT mean-subtracted (done at training time)",
}


def _prepare_one(task: tuple) -> tuple:
    """Read and preprocess one manifest row (runs in a worker process).

    Returns (index, image or None, laterality, view, CropGeometry or None, error or None). Every
    exception becomes an error string: one unreadable file must not stop a build of thousands.
    """
    index, path, laterality, view, size, aspect, equalize = task
    try:
        image, meta = read_image(path)
        laterality = laterality or meta["laterality"] or ""
        view = view or meta["view"] or ""
        if laterality not in ("L", "R"):
            raise DataPrepError(f"{path}: laterality unknown: the manifest leaves it empty and the file has "
                                "no ImageLaterality/Laterality tag (expected L or R)")
        steps = preprocess_steps(image, laterality, size, aspect, equalize)
        return index, steps["final"], laterality, view, steps["geometry"], None
    except Exception as exc:  # noqa: BLE001 - any failure of one image is reported, never fatal
        return index, None, laterality, view, None, f"{type(exc).__name__}: {exc}"


def errors_report_path(out_h5: str | os.PathLike) -> Path:
    """Where the build writes its list of skipped images: ``<out stem>.errors.csv`` next to ``out_h5``."""
    out_h5 = Path(out_h5)
    return out_h5.with_name(out_h5.stem + ".errors.csv")


def crops_report_path(out_h5: str | os.PathLike) -> Path:
    """Where the build lists every image's crop measures: ``<out stem>.crops.csv`` next to ``out_h5``."""
    out_h5 = Path(out_h5)
    return out_h5.with_name(out_h5.stem + ".crops.csv")


def _fingerprint(rows: list[dict], settings: dict) -> str:
    """SHA-256 of everything that decides the output: the manifest rows and the build settings.

    The settings include the step descriptions, so a changed algorithm never resumes old work.
    """
    keys = ("path", "image_path", "patient_id", "exam_id", "laterality", "view", "label", "source", "interval_cancer")
    payload = json.dumps({"rows": [[row[k] for k in keys] for row in rows], "settings": settings}, sort_keys=True)
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
    """Write finished images (index, image, laterality, view, geometry) as the next part file, atomically."""
    number = len(list(partial.glob("part_*.h5")))
    strings = h5py.string_dtype("utf-8")
    with atomic_output(partial / f"part_{number:06d}.h5") as tmp, h5py.File(tmp, "w") as f:
        f["index"] = np.array([r[0] for r in results], np.int64)
        f["images"] = np.stack([r[1] for r in results])
        f.create_dataset("laterality", data=[r[2] for r in results], dtype=strings)
        f.create_dataset("view", data=[r[3] for r in results], dtype=strings)
        for name, (_, dtype) in CROP_FIELDS.items():
            f[name] = np.array([getattr(r[4], name) for r in results], dtype)


def _assemble(out_h5: Path, partial: Path, rows: list[dict], done: dict, attrs: dict) -> None:
    """Gather the part files into ``out_h5`` (manifest order, failed images left out), atomically.

    Also writes the crop report (:func:`crops_report_path`) and counts the crop outliers.
    """
    kept = np.array(sorted(done), np.int64)
    size = attrs["size"]
    strings = h5py.string_dtype("utf-8")
    crops = {name: np.zeros((kept.size, *shape), dtype) for name, (shape, dtype) in CROP_FIELDS.items()}
    with atomic_output(out_h5) as tmp, h5py.File(tmp, "w") as f:
        images = f.create_dataset("images", (kept.size, size, size), np.uint8)
        for part in sorted(partial.glob("part_*.h5")):
            with h5py.File(part, "r") as p:
                index = p["index"][()]
                order = np.argsort(index)
                at = np.searchsorted(kept, index[order])
                images[at] = p["images"][()][order]
                for name in CROP_FIELDS:
                    crops[name][at] = p[name][()][order]
        chosen = [rows[i] for i in kept]
        outlier = (crops["breast_extent"] < OUTLIER_EXTENT) | (crops["breast_fraction"] < OUTLIER_FRACTION)
        report = write_csv_atomic(
            crops_report_path(out_h5),
            ("manifest_line", "image_path", "patient_id", "breast_extent", "breast_fraction", "top", "bottom",
             "left", "right", "flipped", "outlier"),
            [(r["line"], r["image_path"], r["patient_id"], f"{extent:.4f}", f"{fraction:.4f}", *box, flip, int(bad))
             for r, extent, fraction, box, flip, bad in zip(chosen, crops["breast_extent"], crops["breast_fraction"],
                                                            crops["crop_box"].tolist(), crops["flipped"], outlier)])
        for name, values in crops.items():
            f[name] = values
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
        f.attrs["n_crop_outliers"] = int(outlier.sum())
        f.attrs["crop_outlier_rule"] = f"breast_extent < {OUTLIER_EXTENT} or breast_fraction < {OUTLIER_FRACTION}"
        f.attrs["crops_report"] = report.name


def build_dataset(manifest, out_h5, size: int = 227, aspect: str = "stretch", equalize: str = "global",
                  workers: int | None = None, resume: bool = True, progress: bool = True) -> Path:
    """Read, preprocess and store every image of a manifest in one HDF5 file; return its path.

    ``manifest`` is a manifest CSV path or rows from :func:`data_prep.manifest.read_manifest`.
    ``size``, ``aspect`` ("stretch" or "pad") and ``equalize`` ("global", "clahe", "none") are the
    preprocessing parameters (:mod:`data_prep.preprocess`); ``workers`` processes run in parallel
    (default: all cores). With ``resume`` (default), an interrupted build with the same manifest and
    parameters continues where it stopped, and an existing finished file built from them is returned
    as it is. Skipped images are listed in :func:`errors_report_path`, every image's crop measures
    in :func:`crops_report_path`. Raises
    :class:`DataPrepError` if no image at all could be prepared.
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
                "format_version": FORMAT_VERSION, "preprocess_version": PREPROCESS_VERSION}
    fingerprint = _fingerprint(rows, {**settings, **STEP_DESCRIPTIONS})
    if resume and out_h5.exists() and _finished_fingerprint(out_h5) == fingerprint:
        return out_h5

    partial = out_h5.with_name(out_h5.name + ".partial")
    done = _open_partial(partial, fingerprint, resume)
    tasks = [(i, row["path"], row["laterality"], row["view"], size, aspect, equalize)
             for i, row in enumerate(rows) if i not in done]
    errors, finished = [], []
    for index, image, laterality, view, geometry, error in parallel_map(
            _prepare_one, tasks, workers, progress, desc=f"build {out_h5.name}", total=len(rows),
            initial=len(done), unit="img"):
        if error is not None:
            errors.append((index, error))
            continue
        finished.append((index, image, laterality, view, geometry))
        done[index] = (laterality, view)
        if len(finished) >= PART_SIZE:
            _write_part(partial, finished)
            finished = []
    if finished:
        _write_part(partial, finished)

    report = errors_report_path(out_h5)
    errors.sort()
    write_csv_atomic(report, ("manifest_line", "image_path", "patient_id", "label", "reason"),
                     [(rows[i]["line"], rows[i]["image_path"], rows[i]["patient_id"], rows[i]["label"], reason)
                      for i, reason in errors])
    if not done:
        raise DataPrepError(f"{manifest_path or 'manifest'}: none of the {len(rows)} images could be prepared; "
                            f"reasons in {report}")
    attrs = {
        "format_name": FORMAT_NAME, "format_version": FORMAT_VERSION,
        "label_names": json.dumps({str(code): name for code, name in enumerate(LABELS)}),
        **settings, **STEP_DESCRIPTIONS,
        "mean_subtracted": False,
        "build_parameters": json.dumps(settings, sort_keys=True),
        "manifest_path": manifest_path, "fingerprint": fingerprint,
        "n_manifest_rows": len(rows), "n_errors": len(errors), "errors_report": report.name,
        "library_versions": json.dumps({"numpy": np.__version__, "scipy": scipy.__version__,
                                        "scikit-image": skimage.__version__, "pydicom": pydicom.__version__,
                                        "h5py": h5py.__version__}),
    }
    _assemble(out_h5, partial, rows, done, attrs)
    shutil.rmtree(partial, ignore_errors=True)
    return out_h5


def load_dataset(path: str | os.PathLike) -> dict:
    """Load a built dataset into memory: a dict of NumPy arrays plus ``"attrs"`` (root attributes).

    String datasets come back as arrays of ``str``; ``images`` as (N, size, size) uint8. Files of
    format version 1 have no crop geometry or measures: those keys are simply absent.
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
