"""Synthetic screening cohorts that stand in for the paper's FFDM and DDSM data sets.

:func:`synthesize` writes images and a manifest; the package's real loaders then read them, so the
synthetic data exercises the same code paths as real data. Cohort design (paper, Study cohort and
datasets):

* classes: negative, recalled-benign and malignant patients in the paper's proportions (FFDM
  552/376/375 of 1,303 patients; DDSM 695/850/867 of 2,412), scaled to ``n_patients``;
* views (``views="standard"``, the paper's text): four per patient (L/R x CC/MLO), except that
  malignant patients contribute only the affected breast's two views, like the paper ("only images
  of the cancer-affected breast were used"). ``views="table1"``: the number of images per patient
  that reproduces Table 1's counts exactly (see below);
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

Views per exam for Table 1 (``views="table1"``). The paper's text and its Table 1 disagree: the
text gives four views per patient (FFDM "1,303 patients (5,212 mammogram images)", DDSM 9,648
images of 2,412 cases) and the affected breast only for malignant patients, which would make 750
FFDM malignant images and 1,504 recalled-benign ones; Table 1 uses 867 + 50 = 917 malignant and
1,520 + 80 = 1,600 recalled-benign FFDM images per category. Table 1 is what a reader compares, so
this mode gives each patient the number of images that makes the counts of the study's patient-level
5% split (:func:`data_prep.holdout_split` at ``seed``, the split the pipeline makes with the run's
seed) exactly Table 1's, for the paper's patients per class (:data:`PAPER_COHORTS`):

==========  ===============  =======================  ========================================
dataset     class            images (train / test)    views per patient
==========  ===============  =======================  ========================================
FFDM        negative         2,096 / 112 (4 x)        CC and MLO of both breasts (never the
                                                      scenario's smallest class: 1,520 / 80 used)
FFDM        recalled-benign  1,520 / 80 (Table 1)     the four, plus an XCCL of the breast with
                                                      the finding for 92 / 4 patients
FFDM        malignant        867 / 50 (Table 1)       affected breast's CC and MLO, plus its
                                                      XCCL for 155 / 12 patients
DDSM        negative         2,641 / 139 (Table 1)    the four; one training patient has an XCCL
                                                      more, one test patient lacks the right MLO
DDSM        recalled-benign  3,228 / 172 (4 x)        the four (never the smallest class)
DDSM        malignant        1,647 / 86 (Table 1)     affected breast's CC and MLO; one training
                                                      patient has the CC only
==========  ===============  =======================  ========================================

The balanced scenarios then take exactly Table 1's images per category (pipeline.scenarios.balance:
the smallest class of a scenario sets the count): negative vs recalled-benign 1,520 / 80 (FFDM) and
2,641 / 139 (DDSM), every other scenario the malignant count. The extra view is an exaggerated
craniocaudal view laterally (XCCL), the additional view taken at screening when the standard CC
misses lateral tissue; it is drawn as another CC projection of the same breast, with its own random
stream and its own placement of the breast's findings, written with ``ViewPosition`` XCCL and its
coded view, and listed in the manifest as ``CC`` (the manifest's views are CC and MLO; an XCCL is a
craniocaudal projection). A missing view is the last of the exam's standard views. Which patients of
a class and split side get the extra or lack a view is drawn from a stream of its own. At other
cohort sizes each class and side gets Table 1's images per patient (rounded to whole images), and at
other test fractions the split differs, so the counts are Table 1's only at the paper's sizes and 5%.
The images of the standard views are those of ``views="standard"`` bit for bit: every view has its
own random stream.

The image totals are then 4,725 FFDM (the paper's text: 5,212) and 7,913 DDSM (9,648);
:func:`cohort_composition` gives every patient's views without drawing an image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from ..fileio import atomic_output, write_csv_atomic
from ..findings import Finding, findings_path, write_findings
from ..manifest import LABELS, write_manifest
from ..parallel import parallel_map
from ..splits import holdout_split
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
#: Views per exam (:func:`synthesize`'s ``views``): the paper's text, or what Table 1's counts imply.
VIEW_MODES = ("standard", "table1")
#: The held-out test fraction of Table 1's counts (the paper's main 5% test set).
TABLE1_TEST_FRACTION = 0.05
#: Table 1's images per category (training, test) at 5%, for the classes whose count sets a
#: scenario's: FFDM negative vs recalled-benign (recalled-benign is the smaller class) and the
#: malignant class of the "Others"; DDSM negative vs recalled-benign (negative is the smaller) and
#: the malignant class. The other classes keep their standard views.
TABLE1_IMAGES = {"ffdm": {"recalled_benign": (1520, 80), "malignant": (867, 50)},
                 "ddsm": {"negative": (2641, 139), "malignant": (1647, 86)}}
#: The view added where a patient needs one more image than the standard views: an exaggerated
#: craniocaudal view laterally, listed in the manifest as the projection it is (CC).
EXTRA_VIEW = "XCCL"
MANIFEST_VIEW = {"CC": "CC", "MLO": "MLO", EXTRA_VIEW: "CC"}
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


@dataclass(frozen=True)
class PlannedView:
    """One image of a synthetic patient: breast side, projection, DICOM instance number (1-4 the
    standard views, 5-6 the XCCL of the left/right breast; also the view's random stream) and file."""

    laterality: str
    view: str            # CC, MLO or XCCL
    instance: int
    image_path: str      # relative to the cohort folder

    @property
    def manifest_view(self) -> str:
        """The manifest's view (CC or MLO): an XCCL is a craniocaudal projection."""
        return MANIFEST_VIEW[self.view]


@dataclass(frozen=True)
class PlannedPatient:
    """A synthetic patient as :func:`synthesize` writes it, known before any image is drawn."""

    index: int                  # 1-based patient number (the patient's random stream)
    patient_id: str
    label: str
    interval: bool
    affected_side: str          # the breast with the (first) finding; random for negatives
    views: tuple                # PlannedView, in the order of the manifest's rows


@dataclass(frozen=True)
class PatientBody:
    """The first draws of a patient's random stream: BI-RADS density, breast depth (a fraction of the
    image width) and half height (a fraction of :data:`FIELD_HEIGHT_MM`), and the affected side."""

    density: str
    depth_fraction: float
    height_fraction: float
    affected_side: str


def _patient_body(rng: np.random.Generator, label: str, interval: bool) -> PatientBody:
    """Draw a patient's :class:`PatientBody` from the start of its stream (the generator and
    :func:`cohort_composition` both read it from there)."""
    density = "abcd"[rng.choice(4, p=DENSITY_MIX[label])]
    if interval:
        density = str(rng.choice(["c", "d"]))
    depth_fraction = rng.uniform(0.5, 0.78)
    height_fraction = rng.uniform(0.3, 0.42)
    return PatientBody(density, depth_fraction, height_fraction, str(rng.choice(["L", "R"])))


def _breasts(label: str, affected_side: str) -> list[str]:
    """The breasts whose images are used: the affected one for a malignant patient, else both."""
    return [affected_side] if label == "malignant" else ["L", "R"]


def _standard_views(patient_id: str, sides, suffix: str) -> list[PlannedView]:
    return [PlannedView(side, view, 1 + 2 * (side == "R") + (view == "MLO"), f"images/{patient_id}/"
                        f"{patient_id}_{side}_{view}.{suffix}") for side in sides for view in ("CC", "MLO")]


def _table1_image_counts(dataset: str, labels: np.ndarray, patient_ids: np.ndarray, seed: int) -> np.ndarray:
    """Images per patient for ``views="table1"``: the standard count (4, malignant 2), changed by one
    for as few patients as make each class's images on each side of the 5% split Table 1's
    (:data:`TABLE1_IMAGES`; at other cohort sizes Table 1's images per patient, rounded)."""
    standard = np.where(labels == "malignant", 2, 4)
    counts = standard.copy()
    paper_labels = np.repeat(LABELS, PAPER_COHORTS[dataset])
    paper_sides = holdout_split(np.arange(paper_labels.size).astype(str), paper_labels, TABLE1_TEST_FRACTION, seed)
    sides = holdout_split(patient_ids, labels, TABLE1_TEST_FRACTION, seed)
    for label, images in TABLE1_IMAGES[dataset].items():
        for side, (paper_idx, idx, paper_images) in enumerate(zip(paper_sides, sides, images)):
            members = idx[labels[idx] == label]
            if members.size == 0:
                continue
            rate = paper_images / np.count_nonzero(paper_labels[paper_idx] == label)
            extra, remainder = divmod(round(rate * members.size) - int(standard[members].sum()), members.size)
            # a stream of its own (patient number 0 is no patient's), so no other draw moves
            rng = np.random.default_rng([seed, DATASET_CODE[dataset], 0, LABELS.index(label), side])
            order = rng.permutation(members)
            counts[members] += extra
            counts[order[:remainder]] += 1
    return counts


def _exam_views(patient_id: str, label: str, affected_side: str, n_images: int, suffix: str) -> tuple:
    """``n_images`` views of a patient: the standard ones, the last dropped where fewer are needed, or
    an XCCL of the affected then of the other breast added where more are."""
    sides = _breasts(label, affected_side)
    views = _standard_views(patient_id, sides, suffix)[:n_images]
    extras = [side for side in (affected_side, "LR".replace(affected_side, "")) if side in sides]
    if n_images > len(views) + len(extras):
        raise ValueError(f"{patient_id}: {n_images} images asked, at most {len(views) + len(extras)} views")
    for side in extras[: n_images - len(views)]:
        views.append(PlannedView(side, EXTRA_VIEW, 5 + (side == "R"),
                                 f"images/{patient_id}/{patient_id}_{side}_{EXTRA_VIEW}.{suffix}"))
    return tuple(sorted(views, key=lambda v: (sides.index(v.laterality), v.instance)))


def _check_cohort_args(dataset: str, n_patients: int, views: str):
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    if int(n_patients) < 1:
        raise ValueError(f"n_patients must be at least 1, got {n_patients}")
    if views not in VIEW_MODES:
        raise ValueError(f"views must be one of {VIEW_MODES}, got {views!r}")


def cohort_composition(dataset: str, n_patients: int, seed: int, views: str = "standard") -> list[PlannedPatient]:
    """Every patient of the cohort :func:`synthesize` writes (label, interval flag, affected side, and
    each image's side, view and file), computed without drawing an image; the generator writes
    exactly these. ``views``: "standard" or "table1" (see the module's docstring)."""
    _check_cohort_args(dataset, n_patients, views)
    counts = class_counts(dataset, int(n_patients))
    rng = np.random.default_rng([seed, DATASET_CODE[dataset]])
    labels = rng.permutation(np.repeat(LABELS, [counts[name] for name in LABELS]))
    malignant = np.flatnonzero(labels == "malignant")
    n_interval = round(INTERVAL_FRACTION * malignant.size) if dataset == "ffdm" else 0
    interval = np.zeros(labels.size, bool)
    interval[rng.choice(malignant, n_interval, replace=False)] = True
    patient_ids = np.array([f"{dataset.upper()}{i:05d}" for i in range(1, labels.size + 1)])
    n_images = (_table1_image_counts(dataset, labels, patient_ids, seed) if views == "table1"
                else np.where(labels == "malignant", 2, 4))
    suffix = "dcm" if dataset == "ffdm" else "png"
    out = []
    for i, (patient_id, label) in enumerate(zip(patient_ids, labels.tolist())):
        side = _patient_body(np.random.default_rng([seed, DATASET_CODE[dataset], i + 1]), label,
                             bool(interval[i])).affected_side
        out.append(PlannedPatient(i + 1, str(patient_id), label, bool(interval[i]), side,
                                  _exam_views(str(patient_id), label, side, int(n_images[i]), suffix)))
    return out


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
    has its own stream (seed, dataset, patient, view instance), so views never shift each other's draws.
    """
    (dataset, patient, seed, difficulty, grain_scale, finding_scale, image_shape, out_dir, film_artifacts) = task
    label, interval, patient_id = patient.label, patient.interval, patient.patient_id
    rng = np.random.default_rng([seed, DATASET_CODE[dataset], patient.index])
    spacing = FIELD_HEIGHT_MM / image_shape[0]
    body = _patient_body(rng, label, interval)
    depth = body.depth_fraction * image_shape[1] * spacing
    half_height = body.height_fraction * FIELD_HEIGHT_MM
    affected, other = _findings(rng, label, interval, difficulty, grain_scale, finding_scale)
    date = study_date(rng)
    folder = Path(out_dir) / "images" / patient_id
    folder.mkdir(parents=True, exist_ok=True)
    rows, truth, boxes = [], [], []
    for side in _breasts(label, body.affected_side):
        shape = BreastShape(depth * rng.uniform(0.95, 1.05), half_height * rng.uniform(0.95, 1.05), body.density,
                            float(rng.uniform(2.4, 3.2)))
        for planned in (v for v in patient.views if v.laterality == side):
            info = {"dataset": dataset, "patient_id": patient_id, "exam_id": f"{patient_id}_E1", "laterality": side,
                    "view": planned.view, "spacing_mm": spacing, "seed": seed, "study_date": date,
                    "instance": planned.instance, "name": Path(planned.image_path).name}
            stream = [seed, DATASET_CODE[dataset], patient.index, planned.instance]
            view_rng = np.random.default_rng(stream)
            scanner_rng = (np.random.default_rng([*stream, SCANNER_STREAM])
                           if dataset == "ddsm" and film_artifacts == "scanned" else None)
            found, box = _write_view(info, shape, affected if side == body.affected_side else other, difficulty,
                                     finding_scale, image_shape, folder, view_rng, scanner_rng)
            truth += found
            boxes.append(box)
            rows.append({"image_path": planned.image_path, "patient_id": patient_id, "exam_id": info["exam_id"],
                         "laterality": side, "view": planned.manifest_view, "label": label, "source": dataset,
                         "interval_cancer": int(interval)})
    return rows, truth, boxes


def synthesize(dataset: str, n_patients: int, seed: int, out_dir, difficulty: float = 1.0, image_size=None,
               workers: int | None = None, progress: bool = True, grain_scale: float = 1.0,
               finding_scale: float = 1.0, film_artifacts: str = "scanned", views: str = "standard") -> Path:
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
    views : "standard" (default): four views a patient, the affected breast's two for malignant
        patients, as the paper's text says; "table1": the images per patient that make the study's
        5% split (:func:`data_prep.holdout_split` with this ``seed``: run the study with the same
        seed) hold exactly the paper's Table 1 counts, an extra XCCL view or one view fewer for some
        patients (the module's docstring has the table). The standard views' images are the same in
        both modes.
    workers : processes (default all cores); progress : show a progress bar.

    Writes ``manifest.csv`` (read it with :func:`data_prep.manifest.read_manifest`),
    ``images/<patient>/<patient>_<L|R>_<CC|MLO|XCCL>.<dcm|png>``, ``findings.csv`` (ground truth in the
    findings table format of :mod:`data_prep.findings`, read it with :func:`data_prep.read_findings`:
    each finding's kind, role, centre and drawn radius in the written file's pixels, plus
    :data:`TRUTH_EXTRA_COLUMNS`), ``breast_box.csv``
    (ground truth per image: the breast's bounding box in the file's pixels and the film artefacts
    drawn, see :data:`BOX_COLUMNS`) and ``cohort.json`` (parameters, counts, ``generator_version``). The manifest is written last, atomically: if it
    exists, the cohort is complete.
    """
    _check_cohort_args(dataset, n_patients, views)
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
    patients = cohort_composition(dataset, int(n_patients), int(seed), views)
    tasks = [(dataset, patient, int(seed), float(difficulty), float(grain_scale), float(finding_scale), image_shape,
              str(out_dir), film_artifacts) for patient in patients]
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
               "class_counts": class_counts(dataset, int(n_patients)),
               "interval_cancers": sum(p.interval for p in patients), "n_images": len(rows),
               "generator": "data_prep.synthetic", "generator_version": GENERATOR_VERSION,
               "films_with_touching_border": sum(int(b[6]) for b in boxes),
               "films_with_label_at_skin": sum(int(b[7]) for b in boxes), "paper_cohort": dict(zip(LABELS, PAPER_COHORTS[dataset]))}
    if views != "standard":  # only then: a standard cohort's summary is the one written before the option
        summary["views"] = views
    with atomic_output(out_dir / "cohort.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return write_manifest(rows, out_dir / "manifest.csv")


def _make_patient_keyed(task: tuple) -> tuple[int, tuple]:
    """:func:`_make_patient` tagged with the patient number, since workers finish out of order."""
    return task[1].index, _make_patient(task)
