"""Figures for auditors: each preprocessing step side by side, example images per class, and the worst crops.

All functions draw with matplotlib's object API and the Agg canvas (no display needed, no global
pyplot state) and write the PNG atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Polygon, Rectangle

from .build import FORMAT_NAME, OUTLIER_EXTENT, OUTLIER_FRACTION, load_dataset
from .fileio import atomic_output
from .findings import Finding, read_findings
from .manifest import LABELS, DataPrepError, read_manifest
from .preprocess import preprocess_steps
from .readers import read_image


def _save(fig: Figure, out_png) -> Path:
    out_png = Path(out_png)
    with atomic_output(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi)
    return out_png


def _show(ax, image, title: str = "") -> None:
    ax.imshow(image, cmap="gray", vmin=0, vmax=255 if image.dtype == np.uint8 else 1, interpolation="lanczos")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_preprocessing_steps(paths, out_png, lateralities=None, size: int = 227, aspect: str = "stretch",
                             equalize: str = "global") -> Path:
    """One row per image: original (as read), oriented + cropped, resized (bicubic), equalized (stored).

    ``paths`` are image files; ``lateralities`` (same length, "L"/"R"/None) default to the DICOM
    tags. The last column is exactly what :func:`data_prep.build.build_dataset` stores.
    """
    paths = [Path(p) for p in paths]
    lateralities = lateralities or [None] * len(paths)
    fig = Figure(figsize=(10, 2.8 * len(paths)), dpi=110, layout="constrained")
    axes = fig.subplots(len(paths), 4, squeeze=False)
    for row, (path, laterality) in zip(axes, zip(paths, lateralities)):
        image, meta = read_image(path)
        laterality = laterality or meta["laterality"]
        steps = preprocess_steps(image, laterality, size, aspect, equalize)
        _show(row[0], image, f"{path.name}\noriginal {image.shape[0]}x{image.shape[1]}, {laterality or '?'}")
        _show(row[1], np.clip(steps["cropped"], 0, 1),
              f"{'flipped, ' if steps['flipped'] else ''}cropped {steps['cropped'].shape[0]}x{steps['cropped'].shape[1]}")
        _show(row[2], np.clip(steps["resized"], 0, 1), f"bicubic {size}x{size} ({aspect})")
        _show(row[3], steps["final"], f"equalized ({equalize}), uint8")
    return _save(fig, out_png)


def _draw_finding(ax, finding: Finding) -> None:
    """Outline one finding on an image shown as read (red: it makes the image's class; yellow: incidental)."""
    style = {"fill": False, "lw": 0.6, "color": "yellow" if finding.role == "incidental" else "red"}
    row, col = finding.centre
    if finding.shape == "circle":
        ax.add_patch(Circle((col, row), 1.4 * max(finding.radius_px, 2.0), **style))
    elif finding.shape == "box":
        (top, bottom), (left, right) = finding.rows, finding.cols
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, **style))
    else:
        ax.add_patch(Polygon(np.column_stack([finding.cols, finding.rows]), closed=True, **style))


def _pick(labels, per_class: int, seed: int) -> dict[str, np.ndarray]:
    """Up to ``per_class`` indices of each class, chosen reproducibly."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    return {name: rng.permutation(np.flatnonzero(labels == name))[:per_class] for name in LABELS}


def plot_examples(manifest_or_h5, out_png, per_class: int = 4, seed: int = 0) -> Path:
    """Example images, one row per (source, class), ``per_class`` images per row.

    ``manifest_or_h5`` is a manifest CSV (images shown as read, with the findings of its findings
    table (:func:`data_prep.findings.read_findings`) drawn in red, incidental ones in yellow: circles,
    boxes or outlines as annotated), a built HDF5 dataset (the stored 227 x 227 images), or a list
    of such paths, one block of rows each.
    """
    sources = [manifest_or_h5] if isinstance(manifest_or_h5, (str, os.PathLike)) else list(manifest_or_h5)
    panels = []  # (row title, [(image, caption, circles)])
    for source in map(Path, sources):
        if source.suffix.lower() in (".h5", ".hdf5"):
            data = load_dataset(source)
            names = np.array(LABELS)[data["labels"]]
            for label, chosen in _pick(names, per_class, seed).items():
                panels.append((f"{source.name}\n{label}", [(data["images"][i], data["patient_id"][i], []) for i in chosen]))
        else:
            rows = read_manifest(source)
            truth = read_findings(source)
            for label, chosen in _pick([r["label"] for r in rows], per_class, seed).items():
                shown = []
                for i in chosen:
                    found = truth.get(rows[i]["image_path"], [])
                    caption = f"{rows[i]['patient_id']} {rows[i]['laterality']}{rows[i]['view']}"
                    if rows[i]["interval_cancer"]:
                        caption += " interval"
                    caption += "".join(f"\n{t.finding}" for t in found if t.role != "incidental")
                    shown.append((read_image(rows[i]["path"])[0], caption, found))
                panels.append((f"{source.parent.name}/{source.name}\n{label}", shown))
    columns = max(1, max(len(p[1]) for p in panels))
    fig = Figure(figsize=(2.3 * columns + 1.2, 3.0 * len(panels)), dpi=110, layout="constrained")
    axes = fig.subplots(len(panels), columns, squeeze=False)
    for row_axes, (row_title, shown) in zip(axes, panels):
        row_axes[0].set_ylabel(row_title, fontsize=8)
        for ax in row_axes:
            ax.set_xticks([])
            ax.set_yticks([])
        for ax, (image, caption, found) in zip(row_axes, shown):
            _show(ax, image, caption)
            for t in found:
                _draw_finding(ax, t)
    return _save(fig, out_png)


def plot_crops(build_h5, out_png, n: int = 16) -> Path:
    """The ``n`` worst crops of a build, as stored, each titled with its crop measures.

    Images are ranked by ``min(breast_extent / OUTLIER_EXTENT, breast_fraction / OUTLIER_FRACTION)``,
    lowest first, so the build's crop outliers (score < 1) come first, then the closest calls.
    Raises :class:`DataPrepError` for a missing file, a file that is not a build, or a build made
    before the crop measures were recorded (format version 1).
    """
    build_h5 = Path(build_h5)
    if not build_h5.is_file():
        raise DataPrepError(f"{build_h5}: no such file (expected a build from `python -m data_prep build`)")
    try:
        f = h5py.File(build_h5, "r")
    except OSError:
        raise DataPrepError(f"{build_h5}: not an HDF5 file (expected a build from `python -m data_prep build`)") from None
    with f:
        if f.attrs.get("format_name") != FORMAT_NAME:
            raise DataPrepError(f"{build_h5}: format_name is {f.attrs.get('format_name')!r}, expected {FORMAT_NAME!r} "
                                "(a build from `python -m data_prep build`)")
        if "breast_extent" not in f:
            raise DataPrepError(f"{build_h5}: format_version {f.attrs.get('format_version')} has no crop measures "
                                "(expected version 2 or later: rebuild it)")
        extent, fraction = f["breast_extent"][()], f["breast_fraction"][()]
        score = np.minimum(extent / OUTLIER_EXTENT, fraction / OUTLIER_FRACTION)
        worst = np.argsort(score, kind="stable")[: max(1, int(n))]
        images = f["images"][np.sort(worst)]
        names = {name: f[name].asstr()[()] for name in ("patient_id", "laterality", "view")}
        images = dict(zip(np.sort(worst), images))
    columns = min(4, worst.size)
    grid_rows = -(-worst.size // columns)
    fig = Figure(figsize=(2.6 * columns, 2.9 * grid_rows), dpi=110, layout="constrained")
    axes = fig.subplots(grid_rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, i in zip(axes, worst):
        flag = "  OUTLIER" if score[i] < 1 else ""
        _show(ax, images[i], f"{names['patient_id'][i]} {names['laterality'][i]}{names['view'][i]}{flag}\n"
                             f"extent {extent[i]:.2f}, fraction {fraction[i]:.2f}")
        if flag:
            ax.title.set_color("red")
    fig.suptitle(f"{build_h5.name}: the {worst.size} lowest crop scores of {extent.size} images "
                 f"(outlier: extent < {OUTLIER_EXTENT} or fraction < {OUTLIER_FRACTION})", fontsize=9)
    return _save(fig, out_png)
