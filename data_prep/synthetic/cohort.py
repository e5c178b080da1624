"""Synthetic screening cohorts that stand in for the paper's FFDM and DDSM data sets.

:func:`synthesize` writes images and a manifest; the package's real loaders then read them, so the
synthetic data exercises the same code paths as real data. Cohort design (paper, Study cohort and
datasets):

* classes: negative, recalled-benign and malignant patients in the paper's proportions (FFDM
  552/376/375 of 1,303 patients; DDSM 695/850/867 of 2,412), scaled to ``n_patients``;
* four views per patient (L/R x CC/MLO), except that malignant patients contribute only the
  affected breast's two views, like the paper ("only images of the cancer-affected breast were
  used");
* a malignant patient has one malignant finding in both views of the affected breast (and, in
  20%, a benign finding beside it); a recalled-benign patient has one benign finding in both
  views of one breast and, in 75%, another in the other breast (benign calcifications and cysts
  are often bilateral, and all four views carry the recalled-benign label); negatives have none.
  Lymph nodes and vascular calcifications appear in every class (incidental findings);
* recalled-benign patients have denser breasts on average (density raises recall rates);
* FFDM only: 9% of malignant patients (the paper's 34 of 375) are interval cancers: a smaller,
  fainter lesion in a dense breast, flagged ``interval_cancer=1``. DDSM has no interval flag;
* the DDSM-like cohort differs from the FFDM-like one only by the film: its characteristic curve
  saturates bright findings, and it adds film noise and artefacts; ``film_artifacts="scanned"``
  (the default) adds those of real digitized films (ramp edge bands, frame lines, streaks, markers
  at the skin; :mod:`data_prep.synthetic.scanner`), ``"basic"`` leaves them out.

``difficulty`` divides every lesion's contrast: 1 is the default, 2 halves the contrast (harder),
0.5 doubles it (easier); the anatomy does not change with it, so it is a clean, monotone knob.
``grain_scale`` enlarges calcification grains and ``finding_scale`` magnifies whole findings, for
networks that see the breast at about 100 px (see :func:`synthesize`).
Everything is deterministic from ``seed`` (each patient has its own random stream), whatever the
number of workers.
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

from ..fileio import atomic_output, write_csv_atomic
from ..findings import Finding, findings_path, write_findings
from ..manifest import LABELS, write_manifest
from ..parallel import parallel_map
from .anatomy import BreastShape, render_view
from . import GENERATOR_VERSION
from .encode import breast_box_in_file, study_date, write_ffdm_dicom, write_film_png
from .lesions import (
    BENIGN_KINDS,
    MALIGNANT_KINDS,
    Lesion,
    draw_finding,
    sample_finding,
)

DATASETS = ("ffdm", "ddsm")
#: Film artefact sets of the DDSM-like cohort: the basic flat strips, labels and dust, or those plus
#: what real digitized films show (see :mod:`data_prep.synthetic.scanner`).
FILM_ARTIFACTS = ("basic", "scanned")
#: The scanned-film artefacts' random stream is the view's stream key plus this number, so the
#: film underneath them is the same as in the basic mode.
SCANNER_STREAM = 1
#: Patients per class in the paper's cohorts (negative, recalled_benign, malignant).
PAPER_COHORTS = {"ffdm": (552, 376, 375), "ddsm": (695, 850, 867)}
#: Default synthetic image (rows, cols): about 1/5 of a 3328 x 2560 detector, so a cohort is fast.
DEFAULT_IMAGE_SIZE = (640, 512)
#: Height of the detector field in mm (3328 rows of 70 um); the pixel spacing is this / rows.
FIELD_HEIGHT_MM = 3328 * 0.07
#: BI-RADS density mix (a, b, c, d) by class; recalled-benign breasts are denser.
DENSITY_MIX = {"negative": (0.10, 0.42, 0.38, 0.10), "recalled_benign": (0.05, 0.30, 0.45, 0.20),
               "malignant": (0.07, 0.37, 0.42, 0.14)}
INTERVAL_FRACTION = 34 / 375
DATASET_CODE = {"ffdm": 1, "ddsm": 2}
#: Columns ``findings.csv`` adds to the findings table's (:data:`data_prep.findings.FINDING_COLUMNS`).
TRUTH_EXTRA_COLUMNS = ("patient_id", "laterality", "view", "diameter_mm", "contrast")
#: Columns of ``breast_box.csv``: the breast's true bounding box in the written file's pixels
#: (rows [top, bottom), columns [left, right)), whether the file is mirrored, whether a film
#: border or a label touches the breast, and the artefacts drawn (``;``-separated).
BOX_COLUMNS = ("image_path", "top", "bottom", "left", "right", "mirrored", "border_touches", "label_touches",
               "artifacts")


def class_counts(dataset: str, n_patients: int) -> dict[str, int]:
    """Patients per class: the paper's cohort proportions scaled to ``n_patients``.

    Largest-remainder rounding keeps the total exact, e.g. FFDM with 100 patients gives
    42 negative, 29 recalled-benign and 29 malignant.
    """
    paper = np.array(PAPER_COHORTS[dataset], float)
    exact = paper / paper.sum() * n_patients
    counts = np.floor(exact).astype(int)
    counts[np.argsort(-(exact - counts), kind="stable")[: n_patients - counts.sum()]] += 1
    return dict(zip(LABELS, counts.tolist()))


def _choose(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = sorted(weights)
    p = np.array([weights[n] for n in names])
    return names[rng.choice(len(names), p=p / p.sum())]


def _findings(rng, label: str, interval: bool, difficulty: float, grain_scale: float = 1.0,
              finding_scale: float = 1.0):
    """Findings per breast side ('affected', 'other') for one patient."""
    sample = partial(sample_finding, grain_scale=grain_scale, finding_scale=finding_scale)
    scale = 1.0 / difficulty
    affected, other = [], []
    if label == "malignant":
        contrast = scale * (0.5 if interval else 1.0)
        affected.append(sample(rng, _choose(rng, MALIGNANT_KINDS), "malignant", contrast, 0.75 if interval else 1.0))
        if rng.random() < 0.2:
            affected.append(sample(rng, _choose(rng, BENIGN_KINDS), "recalled_benign", scale))
    elif label == "recalled_benign":
        affected.append(sample(rng, _choose(rng, BENIGN_KINDS), "recalled_benign", scale))
        if rng.random() < 0.75:
            other.append(sample(rng, _choose(rng, BENIGN_KINDS), "recalled_benign", scale))
    if rng.random() < 0.1:  # vascular calcifications are usually bilateral
        vessel = sample(rng, "vascular_calcs", "incidental", scale)
        affected.append(vessel)
        other.append(replace(vessel, seed=vessel.seed + 1))
    return affected, other


def _place(rng: np.random.Generator, zone: np.ndarray) -> tuple[float, float]:
    """A random pixel of the lesion zone, as (row, col)."""
    candidates = np.flatnonzero(zone)
    if candidates.size == 0:  # a tiny breast: fall back to mid-height near the chest wall
        return zone.shape[0] / 2, zone.shape[1] / 4
    row, col = np.unravel_index(candidates[rng.integers(candidates.size)], zone.shape)
    return float(row), float(col)


def _write_view(info: dict, shape: BreastShape, findings: list[Lesion], difficulty: float, finding_scale: float,
                image_shape, folder: Path, view_rng: np.random.Generator,
                scanner_rng: np.random.Generator | None = None) -> tuple[list[tuple], tuple]:
    """Draw one view with its findings, write its file; return its findings lines and its breast-box line.

    ``scanner_rng`` (film only) draws the scanned-film artefacts; None leaves them out."""
    drawn = render_view(view_rng, shape, info["view"], image_shape, info["spacing_mm"])
    image = drawn.attenuation
    if info["view"] == "MLO" and view_rng.random() < 0.15:  # axillary/intramammary lymph node
        node = sample_finding(view_rng, "lymph_node", "incidental", 1.0 / difficulty, finding_scale=finding_scale)
        findings = [*findings, node]
    placed = []
    for finding in findings:
        centre = _place(view_rng, drawn.lesion_zone)
        placed.append((finding, centre, draw_finding(image, finding, centre, info["spacing_mm"])))
    relative = f"images/{info['patient_id']}/{info['name']}"
    if info["dataset"] == "ffdm":
        write_ffdm_dicom(folder / info["name"], image, info, view_rng)
        mirrored = info["laterality"] == "R"
        box = (relative, *breast_box_in_file(image > 0, mirrored), int(mirrored), 0, 0, "")
    else:
        film = write_film_png(folder / info["name"], image, info, view_rng, scanner_rng)
        mirrored = film["mirrored"]
        box = (relative, *film["breast_box"], int(mirrored), int(film["border_touches"]), int(film["label_touches"]),
               ";".join(film["artifacts"]))
    return [(Finding(relative, lesion.kind, lesion.role, "circle", (round(row, 1),),
                     (round(image_shape[1] - 1 - col if mirrored else col, 1),), round(radius, 1)),
             (info["patient_id"], info["laterality"], info["view"], round(lesion.diameter_mm, 2),
              round(lesion.contrast, 4)))
            for lesion, (row, col), radius in placed], box


def _make_patient(task: tuple) -> tuple[list[dict], list[tuple], list[tuple]]:
    """Draw and write all images of one patient (runs in a worker). Returns (manifest rows, findings, boxes).

    The patient's random stream fixes density, breast size, affected side and findings; each view
    has its own stream (seed, dataset, patient, view), so views never shift each other's draws.
    """
    (dataset, index, label, interval, seed, difficulty, grain_scale, finding_scale, image_shape, out_dir,
     film_artifacts) = task
    rng = np.random.default_rng([seed, DATASET_CODE[dataset], index])
    patient_id = f"{dataset.upper()}{index:05d}"
    spacing = FIELD_HEIGHT_MM / image_shape[0]
    density = "abcd"[rng.choice(4, p=DENSITY_MIX[label])]
    if interval:
        density = str(rng.choice(["c", "d"]))
    depth = rng.uniform(0.5, 0.78) * image_shape[1] * spacing
    half_height = rng.uniform(0.3, 0.42) * FIELD_HEIGHT_MM
    affected_side = str(rng.choice(["L", "R"]))
    affected, other = _findings(rng, label, interval, difficulty, grain_scale, finding_scale)
    date = study_date(rng)
    folder = Path(out_dir) / "images" / patient_id
    folder.mkdir(parents=True, exist_ok=True)
    rows, truth, boxes = [], [], []
    for side in [affected_side] if label == "malignant" else ["L", "R"]:
        shape = BreastShape(depth * rng.uniform(0.95, 1.05), half_height * rng.uniform(0.95, 1.05), density,
                            float(rng.uniform(2.4, 3.2)))
        for view in ("CC", "MLO"):
            instance = 1 + 2 * (side == "R") + (view == "MLO")
            info = {"dataset": dataset, "patient_id": patient_id, "exam_id": f"{patient_id}_E1", "laterality": side,
                    "view": view, "spacing_mm": spacing, "seed": seed, "study_date": date, "instance": instance,
                    "name": f"{patient_id}_{side}_{view}." + ("dcm" if dataset == "ffdm" else "png")}
            stream = [seed, DATASET_CODE[dataset], index, instance]
            view_rng = np.random.default_rng(stream)
            scanner_rng = (np.random.default_rng([*stream, SCANNER_STREAM])
                           if dataset == "ddsm" and film_artifacts == "scanned" else None)
            found, box = _write_view(info, shape, affected if side == affected_side else other, difficulty,
                                     finding_scale, image_shape, folder, view_rng, scanner_rng)
            truth += found
            boxes.append(box)
            rows.append({"image_path": f"images/{patient_id}/{info['name']}", "patient_id": patient_id,
                         "exam_id": info["exam_id"], "laterality": side, "view": view, "label": label,
                         "source": dataset, "interval_cancer": int(interval)})
    return rows, truth, boxes


def synthesize(dataset: str, n_patients: int, seed: int, out_dir, difficulty: float = 1.0, image_size=None,
               workers: int | None = None, progress: bool = True, grain_scale: float = 1.0,
               finding_scale: float = 1.0, film_artifacts: str = "scanned") -> Path:
    """Generate a synthetic cohort into ``out_dir``; return the path of its manifest CSV.

    Parameters
    ----------
    dataset : "ffdm" (DICOM, full-field digital) or "ddsm" (16-bit PNG, digitized film).
    n_patients : number of patients; the class mix follows the paper's cohort (:func:`class_counts`).
    seed : everything is deterministic from it.
    difficulty : lesion subtlety, > 0. Every lesion's contrast is divided by it: 1 is the default
        (tuned so that lesions stay visible after downsampling to ~100-227 px), 2 is half the
        contrast (harder), 0.5 twice (easier). Anatomy and positions do not depend on it.
        Contrast alone cannot make calcifications show at ~100 px: their grains are smaller than
        a pixel there and their bright peaks are clipped by the display window (see grain_scale).
    grain_scale : multiplies the radius of every calcification grain (1 = real sizes, 0.15-1.3 mm);
        the clusters' extent, layout and every other finding do not change. At 1 the cohort is bit
        for bit the one made without it.
    finding_scale : draws every finding (lesions and incidental findings alike) magnified this many
        times: outline, spicules, cluster extent and grains (grains end up ``grain_scale *
        finding_scale`` times their real size), as a magnification view would show them. The
        findings themselves (kinds, sizes in ``findings.csv``'s ``diameter_mm``, contrast, places)
        do not change; ``radius_px`` is the drawn, magnified radius. At 1 the cohort is bit for bit
        the one made without it.
    image_size : (rows, cols) of the images, default :data:`DEFAULT_IMAGE_SIZE` (640 x 512, pixel
        spacing 0.364 mm). The field of view stays 233 mm high, so (3328, 2560) gives a
        full-resolution 70 um image; the spacing is written in ImagerPixelSpacing.
    film_artifacts : "scanned" (default) or "basic", the DDSM-like films' artefacts (:data:`FILM_ARTIFACTS`):
        "basic" draws flat unexposed strips, labels, a lead marker, dust and scanner-edge lines;
        "scanned" adds, from a random stream of their own (the films are otherwise the same), what
        real digitized films show: edge bands whose brightness rises towards the film's edge (full,
        partial or with a gap, touching the breast or not), thin frame lines, streaks along the scan
        direction and orientation markers across the skin line. The FFDM-like cohort ignores it.
    workers : processes (default all cores); progress : show a progress bar.

    Writes ``manifest.csv`` (read it with :func:`data_prep.manifest.read_manifest`),
    ``images/<patient>/<patient>_<L|R>_<CC|MLO>.<dcm|png>``, ``findings.csv`` (ground truth in the
    findings table format of :mod:`data_prep.findings`, read it with :func:`data_prep.read_findings`:
    each finding's kind, role, centre and drawn radius in the written file's pixels, plus
    :data:`TRUTH_EXTRA_COLUMNS`), ``breast_box.csv``
    (ground truth per image: the breast's bounding box in the file's pixels and the film artefacts
    drawn, see :data:`BOX_COLUMNS`) and ``cohort.json`` (parameters, counts, ``generator_version``). The manifest is written last, atomically: if it
    exists, the cohort is complete.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    if int(n_patients) < 1:
        raise ValueError(f"n_patients must be at least 1, got {n_patients}")
    if not difficulty > 0:
        raise ValueError(f"difficulty must be > 0 (1 = default, larger = subtler lesions), got {difficulty}")
    if not grain_scale > 0:
        raise ValueError(f"grain_scale must be > 0 (1 = real calcification grain sizes), got {grain_scale}")
    if not finding_scale > 0:
        raise ValueError(f"finding_scale must be > 0 (1 = findings at their real size), got {finding_scale}")
    if film_artifacts not in FILM_ARTIFACTS:
        raise ValueError(f"film_artifacts must be one of {FILM_ARTIFACTS}, got {film_artifacts!r}")
    image_shape = tuple(int(v) for v in (image_size or DEFAULT_IMAGE_SIZE))
    if len(image_shape) != 2 or min(image_shape) < 64:
        raise ValueError(f"image_size must be (rows, cols) of at least 64 pixels each, got {image_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = class_counts(dataset, int(n_patients))
    rng = np.random.default_rng([seed, DATASET_CODE[dataset]])
    labels = rng.permutation(np.repeat(LABELS, [counts[name] for name in LABELS]))
    malignant = np.flatnonzero(labels == "malignant")
    n_interval = round(INTERVAL_FRACTION * malignant.size) if dataset == "ffdm" else 0
    interval = np.zeros(labels.size, bool)
    interval[rng.choice(malignant, n_interval, replace=False)] = True

    tasks = [(dataset, i + 1, str(labels[i]), bool(interval[i]), int(seed), float(difficulty), float(grain_scale),
              float(finding_scale), image_shape, str(out_dir), film_artifacts)
             for i in range(labels.size)]
    results = dict(parallel_map(_make_patient_keyed, tasks, workers, progress, desc=f"synthesize {dataset}",
                                unit="patient"))
    rows = [row for i in sorted(results) for row in results[i][0]]
    truth = [line for i in sorted(results) for line in results[i][1]]
    write_findings(findings_path(out_dir / "manifest.csv"), [f for f, _ in truth], TRUTH_EXTRA_COLUMNS,
                   [extra for _, extra in truth])
    boxes = [line for i in sorted(results) for line in results[i][2]]
    write_csv_atomic(out_dir / "breast_box.csv", BOX_COLUMNS, boxes)
    summary = {"dataset": dataset, "n_patients": int(n_patients), "seed": int(seed), "difficulty": float(difficulty),
               "grain_scale": float(grain_scale), "finding_scale": float(finding_scale),
               "film_artifacts": film_artifacts if dataset == "ddsm" else None,
               "image_size": list(image_shape), "pixel_spacing_mm": FIELD_HEIGHT_MM / image_shape[0],
               "class_counts": counts, "interval_cancers": n_interval, "n_images": len(rows),
               "generator": "data_prep.synthetic", "generator_version": GENERATOR_VERSION,
               "films_with_touching_border": sum(int(b[6]) for b in boxes),
               "films_with_label_at_skin": sum(int(b[7]) for b in boxes), "paper_cohort": dict(zip(LABELS, PAPER_COHORTS[dataset]))}
    with atomic_output(out_dir / "cohort.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return write_manifest(rows, out_dir / "manifest.csv")


def _make_patient_keyed(task: tuple) -> tuple[int, tuple]:
    """:func:`_make_patient` tagged with the patient number, since workers finish out of order."""
    return task[1], _make_patient(task)
