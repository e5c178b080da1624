"""Findings: where the lesions are, in one table format for every data set and for the generator.

Every public set we adapt ships lesion outlines or locations, and the synthetic generator knows
where it drew each lesion; explanations are scored against them (the pointing game, overlays,
per-finding hit rates). They all go into one *findings table*, a CSV file beside the manifest:
``findings.csv`` beside a manifest called ``manifest.csv`` (a synthetic cohort's folder), else
``<manifest stem>.findings.csv`` (:func:`findings_path`). One row per finding, columns::

    image_path, finding, role, shape, row, col, radius_px, points

* ``image_path``: the image, as the manifest's ``image_path`` names it (relative to the folder of
  the manifest, or absolute);
* ``finding``: what it is, in the data set's own words (CBIS-DDSM ``mass``/``calcification``,
  mini-MIAS ``CIRC``/``SPIC``/``CALC``..., the INbreast ROI name, the VinDr-Mammo finding
  categories, the generator's kind);
* ``role``: the class the finding stands for (:data:`ROLES`): ``malignant``, ``recalled_benign``,
  or ``incidental`` -- a finding that does not make the image's class (benign without callback,
  BI-RADS 1-2, lymph nodes, vascular calcifications);
* ``shape`` and its geometry, in pixels of the ORIGINAL image as read (:func:`data_prep.readers.read_image`:
  rows down from the top, columns right from the left, pixel centres at whole numbers):

  - ``circle``: centre ``row``, ``col`` and ``radius_px`` (0: a point);
  - ``box``: ``points`` = ``top left bottom right``, the centres of its corner pixels;
  - ``outline``: ``points`` = ``row col row col ...``, the vertices in order (closed).

  For a box or an outline, ``row``/``col`` (its centroid) and ``radius_px`` (the radius of the
  circle of the same area) are written too, for readers that want a point or a disc; reading
  computes them again from ``points``.

Other columns are allowed and ignored (the synthetic cohorts add ``patient_id``, ``laterality``,
``view``, ``diameter_mm`` and ``contrast``); a table without ``shape`` is read as circles (cohorts
from generator version 2).

:func:`read_findings` reads a table into :class:`Finding` records; :func:`to_stored_findings` carries
them through a build's crop, flip and resize (:func:`data_prep.preprocess.to_stored_coords`) into
:class:`StoredFinding` records, whose :meth:`StoredFinding.mask` rasterises them on the stored
image. A build stores them with the dataset (:func:`data_prep.build.load_findings`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.draw import polygon

from .fileio import write_csv_atomic
from .manifest import ManifestError, ManifestProblem, read_csv_records, read_manifest, require_columns
from .preprocess import stored_scale, to_stored_coords

#: The columns of a findings table, in the order they are written.
FINDING_COLUMNS = ("image_path", "finding", "role", "shape", "row", "col", "radius_px", "points")
#: The class a finding stands for; "incidental" findings do not make their image's class.
ROLES = ("malignant", "recalled_benign", "incidental")
SHAPES = ("circle", "box", "outline")


@dataclass(frozen=True)
class Finding:
    """One finding of one image, in the original image's pixels (see the module docstring).

    ``rows``/``cols``: a circle's centre (one value each), a box's corners ((top, bottom),
    (left, right)) or an outline's vertices; ``radius_px``: a circle's radius (0 for the others).
    """

    image_path: str
    finding: str
    role: str
    shape: str
    rows: tuple[float, ...]
    cols: tuple[float, ...]
    radius_px: float = 0.0

    @property
    def area(self) -> float:
        """Area in original pixels: pi r^2, the box's (h + 1)(w + 1), or the outline's (shoelace formula)."""
        if self.shape == "circle":
            return float(np.pi * self.radius_px ** 2)
        if self.shape == "box":
            return float((self.rows[1] - self.rows[0] + 1) * (self.cols[1] - self.cols[0] + 1))
        r, c = np.asarray(self.rows), np.asarray(self.cols)
        return float(0.5 * abs(np.dot(r, np.roll(c, -1)) - np.dot(c, np.roll(r, -1))))

    @property
    def centre(self) -> tuple[float, float]:
        """(row, col): the circle's centre, the box's centre, or the mean of the outline's vertices."""
        return float(np.mean(self.rows)), float(np.mean(self.cols))

    @property
    def radius(self) -> float:
        """The circle's radius; for a box or an outline, the radius of the circle of the same area."""
        return self.radius_px if self.shape == "circle" else float(np.sqrt(self.area / np.pi))


@dataclass(frozen=True, eq=False)
class StoredFinding:
    """A :class:`Finding` carried into a stored size x size image (:func:`to_stored_findings`).

    ``rows``/``cols``: the circle's centre, the box's corners (top-left, bottom-right) or the
    outline's vertices in stored pixels (float); ``radius_px``: the circle's radius in ORIGINAL
    pixels, ``scale``: (rows, cols) stored pixels per original pixel, so the circle is an ellipse
    of semi-axes ``radius_px * scale``; ``original``: the finding as it was in the original image.
    """

    finding: str
    role: str
    shape: str
    rows: np.ndarray
    cols: np.ndarray
    radius_px: float
    scale: tuple[float, float]
    original: Finding

    @property
    def centre(self) -> tuple[float, float]:
        """(row, col) in stored pixels: the circle's centre, the box's centre, the outline's vertex mean."""
        return float(np.mean(self.rows)), float(np.mean(self.cols))

    def mask(self, size: int, tolerance_px: float = 0.0) -> np.ndarray:
        """(size, size) bool: the stored pixels inside the finding, widened by ``tolerance_px`` ORIGINAL pixels.

        A circle becomes the ellipse ``((r - r0) / sr)^2 + ((c - c0) / sc)^2 <= (radius + tolerance)^2``;
        a box or an outline is filled (pixel centres inside the polygon; a degenerate one keeps
        at least the pixels its vertices fall in) and widened by the distance, measured in
        original pixels, from it.
        """
        rr, cc = np.mgrid[0:size, 0:size].astype(np.float64)
        if self.shape == "circle":
            d2 = ((rr - self.rows[0]) / self.scale[0]) ** 2 + ((cc - self.cols[0]) / self.scale[1]) ** 2
            return d2 <= (self.radius_px + tolerance_px) ** 2
        if self.shape == "box":
            (top, bottom), (left, right) = self.rows, self.cols
            rows, cols = np.array([top, top, bottom, bottom]), np.array([left, right, right, left])
        else:
            rows, cols = np.asarray(self.rows), np.asarray(self.cols)
        inside = np.zeros((size, size), bool)
        inside[polygon(rows, cols, (size, size))] = True
        r, c = np.rint(rows).astype(int), np.rint(cols).astype(int)
        keep = (r >= 0) & (r < size) & (c >= 0) & (c < size)
        inside[r[keep], c[keep]] = True
        if tolerance_px > 0 and inside.any():
            distance = ndimage.distance_transform_edt(~inside, sampling=(1 / self.scale[0], 1 / self.scale[1]))
            inside = distance <= tolerance_px
        return inside


def findings_path(manifest_path: str | os.PathLike) -> Path:
    """The findings table of a manifest: ``findings.csv`` beside ``manifest.csv``, else ``<stem>.findings.csv``."""
    manifest_path = Path(manifest_path)
    name = "findings.csv" if manifest_path.name == "manifest.csv" else manifest_path.stem + ".findings.csv"
    return manifest_path.with_name(name)


def _numbers(text: str) -> list[float] | None:
    """Space-separated numbers, or None when one of them is not a finite number."""
    try:
        values = [float(v) for v in text.split()]
    except ValueError:
        return None
    return values if all(np.isfinite(values)) else None


def _parse(raw: dict, line: int, problems: list[ManifestProblem]) -> Finding | None:
    """One table row into a :class:`Finding`; every bad field becomes a problem (then None)."""
    row = {k: (raw.get(k) or "").strip() for k in FINDING_COLUMNS}
    shape = row["shape"] or "circle"
    bad = len(problems)

    def need(ok, column, expected):
        if not ok:
            problems.append(ManifestProblem(line, column, row[column], expected))

    need(row["image_path"], "image_path", "the image's path as the manifest names it")
    need(row["role"] in ROLES, "role", " or ".join(ROLES))
    need(shape in SHAPES, "shape", " or ".join(SHAPES) + " (empty: circle)")
    rows = cols = ()
    radius = 0.0
    if shape == "circle":
        centre = [_numbers(row[k]) for k in ("row", "col", "radius_px")]
        for k, value in zip(("row", "col", "radius_px"), centre):
            need(value is not None and len(value) == 1 and (k != "radius_px" or value[0] >= 0), k,
                 "a number" + (" >= 0" if k == "radius_px" else "")
                 + " (the circle's centre and radius in original pixels)")
        if len(problems) == bad:
            rows, cols, radius = (centre[0][0],), (centre[1][0],), centre[2][0]
    elif shape in SHAPES:
        points = _numbers(row["points"])
        if shape == "box":
            need(points is not None and len(points) == 4 and points[0] <= points[2] and points[1] <= points[3],
                 "points", "top left bottom right (4 numbers, top <= bottom, left <= right)")
            if len(problems) == bad:
                rows, cols = (points[0], points[2]), (points[1], points[3])
        else:
            need(points is not None and len(points) >= 4 and len(points) % 2 == 0, "points",
                 "row col row col ... (at least 2 vertices)")
            if len(problems) == bad:
                rows, cols = tuple(points[0::2]), tuple(points[1::2])
    if len(problems) > bad:
        return None
    return Finding(row["image_path"], row["finding"], row["role"], shape, rows, cols, radius)


def read_findings_table(path: str | os.PathLike) -> list[tuple[int, Finding]]:
    """Read and check a findings table: [(line, Finding)], or :class:`ManifestError` listing every bad field."""
    path = Path(path)
    header, records = read_csv_records(path)
    require_columns(path, header, ("image_path", "finding", "role"))
    problems: list[ManifestProblem] = []
    parsed = [(line, _parse(raw, line, problems)) for line, raw in records
              if any((v or "").strip() for v in raw.values())]
    if problems:
        raise ManifestError(path, problems)
    return parsed


def read_findings(manifest_path: str | os.PathLike) -> dict[str, list[Finding]]:
    """The findings of a manifest's images: {image_path as the manifest names it: [Finding, ...]}.

    Reads the table at :func:`findings_path` (an empty dict when there is none). Each finding's
    image is matched to the manifest's row by its resolved path, so ``./images/a.png`` and
    ``images/a.png`` are one image; the keys and each :attr:`Finding.image_path` are the manifest's
    spelling. Raises :class:`ManifestError` listing every bad field, and every finding whose image
    is not in the manifest.
    """
    manifest_path = Path(manifest_path)
    table = findings_path(manifest_path)
    if not table.is_file():
        return {}
    by_path = {row["path"]: row["image_path"] for row in read_manifest(manifest_path)}
    found: dict[str, list[Finding]] = {}
    problems = []
    for line, finding in read_findings_table(table):
        name = by_path.get(str((manifest_path.parent / finding.image_path).resolve()))
        if name is None:
            problems.append(ManifestProblem(line, "image_path", finding.image_path, f"an image of {manifest_path}"))
            continue
        found.setdefault(name, []).append(replace(finding, image_path=name))
    if problems:
        raise ManifestError(table, problems)
    return found


def finding_row(finding: Finding) -> list:
    """The values of :data:`FINDING_COLUMNS` for one finding (numbers rounded to 0.1 pixel)."""
    row, col = finding.centre
    points = "" if finding.shape == "circle" else " ".join(
        f"{round(v, 1):g}" for r, c in zip(finding.rows, finding.cols) for v in (r, c))
    return [finding.image_path, finding.finding, finding.role, finding.shape, round(row, 1), round(col, 1),
            round(finding.radius, 1), points]


def write_findings(path: str | os.PathLike, findings: Iterable[Finding], extra_columns: Sequence[str] = (),
                   extra_values: Iterable[Sequence] | None = None) -> Path:
    """Write a findings table atomically: :data:`FINDING_COLUMNS`, then ``extra_columns`` (one value
    sequence per finding in ``extra_values``)."""
    findings = list(findings)
    extras = list(extra_values) if extra_values is not None else [()] * len(findings)
    return write_csv_atomic(path, FINDING_COLUMNS + tuple(extra_columns),
                            (finding_row(f) + list(e) for f, e in zip(findings, extras)))


def to_stored_findings(findings: Iterable[Finding], crop_box, flipped: bool, original_shape, size: int,
                       aspect: str = "stretch") -> list[StoredFinding]:
    """Carry findings into a stored image through its crop, flip and resize (:func:`to_stored_coords`).

    ``crop_box``, ``flipped``, ``original_shape``: the image's :class:`data_prep.preprocess.CropGeometry`
    (a build stores them); ``size``/``aspect``: the build's. A box's corners are sorted again after
    the flip (left and right swap). A finding outside the crop keeps its coordinates outside
    [0, size): nothing is clipped or dropped here.
    """
    scale = tuple(float(v) for v in stored_scale(crop_box, size, aspect))
    stored = []
    for f in findings:
        rows, cols = to_stored_coords(f.rows, f.cols, crop_box, flipped, original_shape, size, aspect)
        if f.shape == "box":
            rows, cols = np.sort(rows), np.sort(cols)
        stored.append(StoredFinding(f.finding, f.role, f.shape, rows, cols, f.radius_px, scale, f))
    return stored
