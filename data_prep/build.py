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
* group ``findings`` (version 3 on), M findings of the stored images from the manifest's findings
  table (:mod:`data_prep.findings`): ``image_index`` (M,) int32, the image's index in this file;
  ``finding``, ``role``, ``shape`` (M,) strings; ``rows``, ``cols`` (M,) variable-length float64,
  the geometry in the original image's pixels, and ``stored_rows``, ``stored_cols`` the same
  points in the stored image's pixels (through the crop, flip and resize, with
  :func:`data_prep.preprocess.to_stored_coords`); ``radius_px`` (M,) float64, a circle's radius in
  original pixels. Read them with :func:`load_findings`;
* root attributes: every build parameter (with ``preprocess_version``), a description of each
  preprocessing step, the manifest path and fingerprint, library versions, the error count and
  report name, ``n_crop_outliers``, ``crop_outlier_rule`` and ``crops_report``, ``n_findings``,
  ``findings_table`` (its file name, empty without one), ``n_findings_outside`` (findings whose
  centre lies outside the stored image) and ``n_findings_of_skipped_images``.

Files of format version 1 lack the crop geometry and measures, files of version 1 and 2 the
findings; :func:`load_dataset` loads them without those fields, :func:`load_findings` gives no
findings for them.

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
from .findings import Finding, StoredFinding, findings_path, read_findings, to_stored_findings
from .manifest import LABEL_CODES, LABELS, DataPrepError, read_manifest
from .parallel import parallel_map
from .preprocess import (
    ASPECTS,
    EQUALIZE_METHODS,
    KEYS_A,
    PREPROCESS_VERSION,
    THRESHOLD_FRACTION,
    preprocess_steps,
    stored_scale,
)
from .readers import ROBUST_PERCENTILES, ImageReadError, read_image

FORMAT_NAME = "aboutalib2018-mammo-dataset"
FORMAT_VERSION = 3
#: Images per part file of a running build: what an interruption can lose at most.
PART_SIZE = 64
STRING_FIELDS = ("patient_id", "exam_id", "view", "laterality", "source", "image_path")
#: Why an image is skipped, as counted in the ``skipped_by_reason`` attribute: the file is missing;
#: it is not a readable image; its compression has no installed decoder; its pixels cannot be used
#: (missing, not one grayscale frame, bad window tags); neither the manifest nor the file gives its
#: laterality; preprocessing finds no breast in it; anything else.
SKIP_CATEGORIES = ("missing file", "unreadable file", "unsupported transfer syntax", "unusable pixel data",
                   "laterality unknown", "no breast found", "other error")
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
    "step_mask": ("threshold = background + threshold_fraction * (Otsu - background), background = median of the "
                  "lowest of three Otsu classes, both without the film edge bands; edge bands removed (at each "
                  "position along each edge, the depth the foreground reaches in: straight pieces parallel to the "
                  "edge, at most 15% deep, or lines uniform along the whole edge; followed under the breast by their "
                  "brightness profile); largest 8-connected component; thin parts sticking out of its body (labels, "
                  "streaks) cut off; holes filled; on a copy of at most 512 px per side"),
    "step_orient": ("mirror so the chest wall is at the left (left-breast orientation); content first (the side where "
                    "the mask fills its bounding box's edge), laterality if ambiguous"),
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

    Returns (index, image or None, laterality, view, CropGeometry or None, :class:`Skipped` or None).
    Every exception becomes a :class:`Skipped`: one unreadable file must not stop a build of thousands.
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
        return index, None, laterality, view, None, Skipped(_skip_category(exc), f"{type(exc).__name__}: {exc}")


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


def crops_report_path(out_h5: str | os.PathLike) -> Path:
    """Where the build lists every image's crop measures: ``<out stem>.crops.csv`` next to ``out_h5``."""
    out_h5 = Path(out_h5)
    return out_h5.with_name(out_h5.stem + ".crops.csv")


def _fingerprint(rows: list[dict], settings: dict, findings_table: str | None = None) -> str:
    """SHA-256 of everything that decides the output: the manifest rows, the image files, the
    findings table and the settings.

    The image files and the findings table count by their size and modification time (ns), so an
    image corrected or re-exported at the same path makes a new build instead of returning the old
    dataset (reading every file's content would cost as much as the build). The settings include
    the step descriptions, so a changed algorithm never resumes old work.
    """
    keys = ("path", "image_path", "patient_id", "exam_id", "laterality", "view", "label", "source", "interval_cancer")
    payload = json.dumps({"rows": [[row[k] for k in keys] for row in rows],
                          "files": [_file_stat(row["path"]) for row in rows], "settings": settings,
                          "findings": _file_stat(findings_table) if findings_table else None}, sort_keys=True)
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


def _write_findings(f: h5py.File, chosen: list[dict], crops: dict, findings: dict[str, list[Finding]],
                    size: int, aspect: str) -> dict:
    """Store the findings of the kept images in group ``findings``, in original and stored pixels.

    Returns the attributes that count them: ``n_findings``, ``n_findings_outside`` (centre outside
    the stored image) and ``n_findings_of_skipped_images`` (their image is not in the file).
    """
    stored: list[tuple[int, StoredFinding]] = []
    for index, row in enumerate(chosen):
        stored += [(index, s) for s in to_stored_findings(
            findings.get(row["image_path"], []), crops["crop_box"][index], bool(crops["flipped"][index]),
            crops["original_shape"][index], size, aspect)]
    kept = {row["image_path"] for row in chosen}
    group = f.create_group("findings")
    strings, floats = h5py.string_dtype("utf-8"), h5py.vlen_dtype(np.float64)
    group["image_index"] = np.array([i for i, _ in stored], np.int32)
    for name in ("finding", "role", "shape"):
        group.create_dataset(name, data=[getattr(s, name) for _, s in stored], dtype=strings)
    for name, values in (("rows", [s.original.rows for _, s in stored]), ("cols", [s.original.cols for _, s in stored]),
                         ("stored_rows", [s.rows for _, s in stored]), ("stored_cols", [s.cols for _, s in stored])):
        ragged = np.empty(len(stored), object)
        ragged[:] = [np.asarray(v, np.float64) for v in values]
        group.create_dataset(name, data=ragged, dtype=floats)
    group["radius_px"] = np.array([s.radius_px for _, s in stored], np.float64)
    outside = sum(not all(0 <= v < size for v in s.centre) for _, s in stored)
    return {"n_findings": len(stored), "n_findings_outside": outside,
            "n_findings_of_skipped_images": sum(len(v) for k, v in findings.items() if k not in kept)}


def _assemble(out_h5: Path, partial: Path, rows: list[dict], done: dict, attrs: dict,
              findings: dict[str, list[Finding]]) -> None:
    """Gather the part files into ``out_h5`` (manifest order, failed images left out), atomically.

    Also writes the crop report (:func:`crops_report_path`), counts the crop outliers and stores
    the findings of the kept images (:func:`_write_findings`).
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
        f.attrs.update(_write_findings(f, chosen, crops, findings, size, attrs["aspect"]))
        f.attrs["n_images"] = kept.size
        f.attrs["n_crop_outliers"] = int(outlier.sum())
        f.attrs["crop_outlier_rule"] = f"breast_extent < {OUTLIER_EXTENT} or breast_fraction < {OUTLIER_FRACTION}"
        f.attrs["crops_report"] = report.name


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
    listed in :func:`errors_report_path` (every image's crop measures in :func:`crops_report_path`)
    and counted in the attributes ``n_errors``, ``skipped_by_reason`` (category of :data:`SKIP_CATEGORIES` -> count) and ``skipped_by_label``,
    next to ``n_manifest_rows`` and ``manifest_by_label``. The findings table beside a manifest file
    (:func:`data_prep.findings.findings_path`) is read first (a bad one raises before any image is
    read) and its findings are stored with the images they belong to (:func:`load_findings`).
    Raises :class:`DataPrepError` if no image at all could be prepared.
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
    table = findings_path(manifest_path) if manifest_path and findings_path(manifest_path).is_file() else None
    findings = read_findings(manifest_path) if table else {}
    out_h5 = Path(out_h5)
    settings = {"size": size, "aspect": aspect, "equalize": equalize, "threshold_fraction": THRESHOLD_FRACTION,
                "format_version": FORMAT_VERSION, "preprocess_version": PREPROCESS_VERSION}
    fingerprint = _fingerprint(rows, {**settings, **STEP_DESCRIPTIONS}, str(table) if table else None)
    if not rebuild and out_h5.exists() and _finished_fingerprint(out_h5) == fingerprint:
        return out_h5

    partial = out_h5.with_name(out_h5.name + ".partial")
    done = _open_partial(partial, fingerprint, resume and not rebuild)
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
        "manifest_path": manifest_path, "fingerprint": fingerprint, "findings_table": table.name if table else "",
        "n_manifest_rows": len(rows), "n_errors": len(errors), "errors_report": report.name,
        "manifest_by_label": _count_json(row["label"] for row in rows),
        "skipped_by_label": _count_json(rows[i]["label"] for i, _ in errors),
        "skipped_by_reason": json.dumps({c: by_reason[c] for c in SKIP_CATEGORIES if by_reason[c]}),
        "library_versions": json.dumps({"numpy": np.__version__, "scipy": scipy.__version__,
                                        "scikit-image": skimage.__version__, "pydicom": pydicom.__version__,
                                        "h5py": h5py.__version__}),
    }
    _assemble(out_h5, partial, rows, done, attrs, findings)
    shutil.rmtree(partial, ignore_errors=True)
    return out_h5


def load_dataset(path: str | os.PathLike) -> dict:
    """Load a built dataset into memory: a dict of NumPy arrays plus ``"attrs"`` (root attributes).

    String datasets come back as arrays of ``str``; ``images`` as (N, size, size) uint8. Files of
    format version 1 have no crop geometry or measures: those keys are simply absent. The findings
    are not among them: :func:`load_findings` reads them.
    """
    with h5py.File(path, "r") as f:
        data = {name: (f[name].asstr()[()].astype(str) if h5py.check_string_dtype(f[name].dtype) else f[name][()])
                for name in f if isinstance(f[name], h5py.Dataset)}
        data["attrs"] = {key: (value.item() if isinstance(value, np.generic) else value)
                         for key, value in f.attrs.items()}
    return data


def load_findings(path: str | os.PathLike) -> list[list[StoredFinding]]:
    """The findings of a built dataset, per image: element i lists image i's :class:`StoredFinding` records.

    Each record holds the finding's geometry in the stored image's pixels (``rows``/``cols``,
    ``scale``; :meth:`StoredFinding.mask` rasterises it) and, as ``original``, the
    :class:`data_prep.findings.Finding` as the findings table gave it (original pixels,
    ``image_path`` as the manifest names the image). A build without findings (none in its
    manifest's folder, or format version 1-2) gives empty lists.
    """
    with h5py.File(path, "r") as f:
        count = int(f["labels"].shape[0])
        per_image: list[list[StoredFinding]] = [[] for _ in range(count)]
        if "findings" not in f:
            return per_image
        g = f["findings"]
        paths = f["image_path"].asstr()[()]
        crop_box = f["crop_box"][()]
        names, roles, shapes = (g[k].asstr()[()] for k in ("finding", "role", "shape"))
        rows, cols, stored_rows, stored_cols = (g[k][()] for k in ("rows", "cols", "stored_rows", "stored_cols"))
        radius = g["radius_px"][()]
        size = int(f.attrs["size"])
        aspect = str(f.attrs.get("aspect", "stretch"))
        for i, index in enumerate(g["image_index"][()]):
            original = Finding(str(paths[index]), str(names[i]), str(roles[i]), str(shapes[i]),
                               tuple(rows[i].tolist()), tuple(cols[i].tolist()), float(radius[i]))
            scale = tuple(float(v) for v in stored_scale(crop_box[index], size, aspect))
            per_image[index].append(StoredFinding(original.finding, original.role, original.shape,
                                                  stored_rows[i].astype(np.float64), stored_cols[i].astype(np.float64),
                                                  original.radius_px, scale, original))
    return per_image


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
