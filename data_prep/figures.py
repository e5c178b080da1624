"""Figures for auditors: each preprocessing step side by side, and example images per class.

Both functions draw with matplotlib's object API and the Agg canvas (no display needed, no global
pyplot state) and write the PNG atomically.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from .build import load_dataset
from .fileio import atomic_output
from .manifest import LABELS, read_manifest
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


def _findings_by_image(manifest_path: Path) -> dict[str, list[dict]]:
    """Ground truth of a synthetic cohort (``findings.csv`` beside the manifest), if there is one."""
    truth = manifest_path.parent / "findings.csv"
    found: dict[str, list[dict]] = {}
    if truth.exists():
        with open(truth, newline="", encoding="utf-8") as f:
            for line in csv.DictReader(f):
                found.setdefault(line["image_path"], []).append(line)
    return found


def _pick(labels, per_class: int, seed: int) -> dict[str, np.ndarray]:
    """Up to ``per_class`` indices of each class, chosen reproducibly."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    return {name: rng.permutation(np.flatnonzero(labels == name))[:per_class] for name in LABELS}


def plot_examples(manifest_or_h5, out_png, per_class: int = 4, seed: int = 0) -> Path:
    """Example images, one row per (source, class), ``per_class`` images per row.

    ``manifest_or_h5`` is a manifest CSV (images shown as read, with the synthetic ground-truth
    findings circled in red when a ``findings.csv`` lies beside it), a built HDF5 dataset (the
    stored 227 x 227 images), or a list of such paths, one block of rows each.
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
            truth = _findings_by_image(source)
            for label, chosen in _pick([r["label"] for r in rows], per_class, seed).items():
                shown = []
                for i in chosen:
                    found = truth.get(rows[i]["image_path"], [])
                    caption = f"{rows[i]['patient_id']} {rows[i]['laterality']}{rows[i]['view']}"
                    if rows[i]["interval_cancer"]:
                        caption += " interval"
                    caption += "".join(f"\n{t['finding']}" for t in found if t["role"] != "incidental")
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
                ax.add_patch(Circle((float(t["col"]), float(t["row"])), 1.4 * float(t["radius_px"]), fill=False,
                                    lw=0.6, color="yellow" if t["role"] == "incidental" else "red"))
    return _save(fig, out_png)
