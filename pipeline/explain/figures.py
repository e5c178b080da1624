"""Pictures of attribution maps: a heat map over the stored image, with the findings circled
(red: the image's own class, yellow: incidental), one PNG per image or a panel of a run's most
confident correct and wrong test images."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse, Polygon

from alexnet_np.backend import to_numpy
from data_prep.fileio import atomic_output

from .methods import compute_maps


def draw_overlay(ax, gray, heat, title="", findings=(), incidental=()):
    """Gray stored image with a heat map over it (alpha 0.45, 'jet', scaled to its own maximum)
    and the findings (data_prep.StoredFinding) outlined: circles as ellipses, boxes and lesion
    outlines as polygons (red: the image's class's findings, yellow: incidental ones)."""
    ax.imshow(gray, cmap="gray", vmin=0, vmax=255)
    top = float(np.max(heat)) if np.size(heat) else 0.0
    ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=top if top > 0 else 1.0)
    for group, color in ((findings, "red"), (incidental, "yellow")):
        for f in group:
            if f.shape == "circle":
                ax.add_patch(Ellipse((f.cols[0], f.rows[0]), 2 * f.radius_px * f.scale[1], 2 * f.radius_px * f.scale[0],
                                     fill=False, color=color, lw=1.2))
            else:
                rows, cols = f.rows, f.cols
                if f.shape == "box":
                    (top_, bottom), (left, right) = rows, cols
                    rows, cols = [top_, top_, bottom, bottom], [left, right, right, left]
                ax.add_patch(Polygon(np.column_stack([cols, rows]), closed=True, fill=False, color=color, lw=1.2))
    ax.set_title(title, fontsize=7)
    ax.set_axis_off()


@dataclass
class Explanation:
    """What :func:`explain_images` hands back."""

    maps: np.ndarray        # (N, S, S) at the input resolution, non-negative
    proba: np.ndarray       # (N, num_classes)
    target: np.ndarray      # (N,)
    method: str
    paths: list = field(default_factory=list)  # overlay PNGs written


def explain_images(net, x_batch, target=None, method="gradcam", out_dir=None, gray=None, names=None, findings=None,
                   **kw):
    """Maps of ``method`` for network inputs ``x_batch`` (N, 3, S, S); ``target`` defaults to each
    image's predicted class. With ``out_dir``, one overlay PNG per image (over ``gray``, the
    (N, S, S) uint8 images, when given; else over the input's first channel) named after ``names``,
    with ``findings`` (per image a list of data_prep.StoredFinding) outlined: red, yellow if incidental."""
    proba = net.predict_proba(x_batch)
    target = proba.argmax(axis=1) if target is None else np.broadcast_to(np.asarray(target), (len(proba),))
    maps, _ = compute_maps(net, x_batch, target, method, **kw)
    result = Explanation(maps, proba, np.asarray(target), method)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        shown = gray if gray is not None else to_numpy(x_batch[:, 0])
        for i in range(len(maps)):
            name = names[i] if names is not None else f"image_{i:04d}"
            fig = Figure(figsize=(3, 3), dpi=100)
            ax = fig.subplots()
            img = np.asarray(shown[i], np.float32)
            if gray is None:  # network units: stretch to 0..255 for display
                img = 255 * (img - img.min()) / max(1e-12, float(img.max() - img.min()))
            mine = findings[i] if findings is not None else ()
            draw_overlay(ax, img, maps[i], f"{method}, class {int(result.target[i])}, "
                                            f"p = {proba[i, int(result.target[i])]:.2f}",
                         [f for f in mine if f.role != "incidental"], [f for f in mine if f.role == "incidental"])
            path = out_dir / f"{Path(name).stem}_{method}.png"
            with atomic_output(path) as tmp:
                fig.savefig(tmp, format="png", bbox_inches="tight")
            result.paths.append(path)
    return result


def panel_figure(path, ds, idx, maps, proba, y, picks, scored, incidental, class_names, title):
    """Rows of overlays: ``picks`` is [(row label, positions into idx)]; ``scored``/``incidental`` are
    per position lists of data_prep.StoredFinding (or None); written to ``path`` as a PNG."""
    cols = max(len(p) for _, p in picks) or 1
    fig = Figure(figsize=(2.6 * cols, 2.9 * len(picks)), dpi=110)
    axes = fig.subplots(len(picks), cols, squeeze=False)
    for row, (label, chosen) in enumerate(picks):
        for col in range(axes.shape[1]):
            ax = axes[row, col]
            ax.set_axis_off()
            if col >= len(chosen):
                continue
            k = chosen[col]
            pred = int(proba[k].argmax())
            draw_overlay(ax, ds.images[idx[k]], maps[k],
                         # three short lines: "recalled-benign" in two class names overran the next panel
                         f"{label}\ntrue {class_names[y[k]]},\ncalled {class_names[pred]} ({proba[k, pred]:.2f})",
                         scored[k] if scored else (), incidental[k] if incidental else ())
    fig.suptitle(title, fontsize=8)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
