"""Score new mammograms with a trained model:

    python run.py predict MODEL.h5 INPUT... --out scores.csv

MODEL.h5 is a run's ``jobs/<experiment>/<scenario>/<test fraction>/main/model.h5``
(pipeline/modelfile.py). An INPUT is an image file (DICOM, PNG, TIFF, PGM), a folder (searched
recursively for those) or a manifest CSV (the data_prep format, with patients and labels). Every
image is read with data_prep's readers and preprocessed with the parameters stored in the model
(size, aspect, equalization, mask threshold: those of the dataset it was trained on), then scored
as the training run scored its test images.

Writes, one row per image, the path, patient/laterality/view when known, each class's probability
and ``score`` (the scenario's positive class's probability, e.g. P(malignant)); unreadable files go
to ``<out stem>.errors.csv`` with the reason and do not stop the rest. With a manifest it also
writes ``<out stem>_breast.csv`` (per breast: the mean over its images, i.e. its views) and
``<out stem>_patient.csv`` (per patient: the maximum over their breasts), and prints the
image-level AUC with its DeLong and patient-level bootstrap 95% CIs. With ``--explain DIR``, a
Grad-CAM overlay per image, with the lesions of the manifest's findings table (its adapter's
annotations, or a synthetic cohort's findings) outlined: red where they make the image's class,
yellow where incidental.
"""
from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import data_prep
from alexnet_np import backend, to_network_input
from data_prep.adapters import IMAGE_SUFFIXES
from data_prep.fileio import write_csv_atomic
from data_prep.parallel import default_workers, parallel_map

from . import evaluate
from .config import select_device
from .errors import UserError
from .evaluate import Predictions
from .explain import explain_images
from .modelfile import load_model, read_card, score


@dataclass
class InputImage:
    """One image to score; patient, laterality, view and label are "" when unknown."""

    path: str
    patient_id: str = ""
    laterality: str = ""
    view: str = ""
    label: str = ""
    findings: tuple = ()     # data_prep.Finding records of its manifest's findings table (original pixels)


@dataclass
class ScoredBatch:
    """Scored images: positions in the input list, their preprocessed pixels and probabilities.

    ``gray`` is exactly what the network saw before mean subtraction, so a caller can explain or
    display the scores (e.g. saliency maps) without preprocessing again.
    """

    index: np.ndarray        # (N,) positions in the list of InputImage
    gray: np.ndarray         # (N, S, S) uint8
    proba: np.ndarray        # (N, classes) float32
    laterality: list         # as read: the manifest's, else the DICOM tags', else ""
    view: list
    geometry: list           # data_prep.CropGeometry per image: where its stored pixels came from


# ------------------------------------------------------------------ inputs
def collect_inputs(inputs, findings: bool = False) -> tuple[list[InputImage], bool]:
    """Expand files, folders and manifests into images (first mention wins); returns (images, any manifest).
    With ``findings``, each manifest's findings table (its lesion annotations) is read too, for the
    overlays of ``--explain``; scoring alone does not read it.

    Raises UserError for a missing input, a folder without images, a bad manifest or findings table.
    """
    images, from_manifest, seen = [], False, set()
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise UserError(f"input {raw}: no {'/'.join(IMAGE_SUFFIXES)} files in this folder or below it")
            items = [InputImage(str(p.resolve())) for p in found]
        elif path.is_file() and path.suffix.lower() == ".csv":
            try:
                rows = data_prep.read_manifest(path)
                annotated = data_prep.read_findings(path) if findings else {}
            except data_prep.ManifestError as e:
                more = f" (and {len(e.problems) - 1} more)" if len(e.problems) > 1 else ""
                raise UserError(f"{e.path}: {e.problems[0]}{more}") from None
            items = [InputImage(r["path"], r["patient_id"], r["laterality"], r["view"], r["label"],
                                tuple(annotated.get(r["image_path"], ()))) for r in rows]
            from_manifest = True
        elif path.is_file():
            items = [InputImage(str(path.resolve()))]
        else:
            raise UserError(f"input {raw}: no such file or folder (expected an image, a folder or a manifest .csv)")
        for item in items:
            if item.path not in seen:
                seen.add(item.path)
                images.append(item)
    return images, from_manifest


def output_paths(out) -> dict:
    """The files predict writes: scores, errors, and (with a manifest) per breast and per patient."""
    out = Path(out)
    return {"scores": out, "errors": out.with_name(out.stem + ".errors.csv"),
            "breast": out.with_name(out.stem + "_breast.csv"), "patient": out.with_name(out.stem + "_patient.csv")}


# ------------------------------------------------------------------ reading and scoring
def _prepare(task):
    """Read and preprocess one image (runs in a worker process); any failure becomes its reason.

    Laterality comes from the manifest, else the DICOM tags; when neither gives it the image content
    alone orients the breast (data_prep.orient), so plain PNGs can be scored too.
    """
    index, path, laterality, view, pre = task
    try:
        image, meta = data_prep.read_image(path)
        laterality = laterality or meta["laterality"] or ""
        view = view or meta["view"] or ""
        steps = data_prep.preprocess_steps(image, laterality or None, pre.size, pre.aspect, pre.equalize,
                                           pre.threshold_fraction)
        return index, steps["final"], laterality, view, steps["geometry"], None
    except Exception as exc:  # noqa: BLE001 - one unreadable file must not stop the others
        return index, None, laterality, view, None, f"{type(exc).__name__}: {exc}"


def scored_batches(net, card, images, batch_size=50, workers=None, progress=True, errors=None):
    """Read, preprocess and score ``images`` (InputImage list); yields a ScoredBatch per ``batch_size`` images.

    Reading and preprocessing run in ``workers`` processes (data_prep.parallel_map) while this
    process scores the previous batch. Images arrive in completion order, so with several workers a
    batch's composition varies from run to run, and the probabilities with it by float32 rounding
    (with ``workers=1`` and the training run's batch size they equal predictions.h5 bit for bit).
    A failed image is appended to ``errors`` as (position, reason).
    """
    pre = card.preprocessing
    tasks = [(i, item.path, item.laterality, item.view, pre) for i, item in enumerate(images)]
    batch = []

    def flush():
        index, gray, lat, view, geometry = (list(column) for column in zip(*batch))
        gray = np.stack(gray)
        batch.clear()
        return ScoredBatch(np.asarray(index), gray, score(net, card, gray, batch_size), lat, view, geometry)

    for index, gray, laterality, view, geometry, error in parallel_map(_prepare, tasks, workers, progress,
                                                                       desc="predict", unit="img"):
        if error is not None:
            if errors is not None:
                errors.append((index, error))
            continue
        batch.append((index, gray, laterality, view, geometry))
        if len(batch) == batch_size:
            yield flush()
    if batch:
        yield flush()


# ------------------------------------------------------------------ tables
def _label_text(labels):
    """The distinct labels of a group of images, in data_prep's order, joined by '+'."""
    return "+".join(name for name in data_prep.LABELS if name in set(labels))


def _group_scores(keys, proba, score_col, labels):
    """Mean probabilities and score per key (in first-seen order); returns (keys, counts, mean proba, mean score, labels)."""
    uniq, counts, mean_p = evaluate.group_mean(keys, proba)
    _, _, mean_s = evaluate.group_mean(keys, score_col)
    group_labels = {k: [] for k in uniq}
    for k, lab in zip(keys, labels):
        group_labels[k].append(lab)
    return list(uniq), counts, mean_p, mean_s, [_label_text(group_labels[k]) for k in uniq]


def write_tables(paths, card, images, proba_by_image, from_manifest):
    """Write the per-image scores and, with a manifest, the per-breast and per-patient ones."""
    fmt = lambda v: f"{v:.9g}"  # noqa: E731 - float32 round-trips through 9 significant digits
    classes = [f"p_{name}" for name in card.class_names]
    scored = [i for i in range(len(images)) if i in proba_by_image]
    header = ["image_path", "patient_id", "laterality", "view"] + (["label"] if from_manifest else []) \
        + classes + ["score"]
    rows = []
    for i in scored:
        item, p = images[i], proba_by_image[i]
        rows.append([item.path, item.patient_id, item.laterality, item.view] + ([item.label] if from_manifest else [])
                    + [fmt(v) for v in p] + [fmt(p[card.positive_class])])
    write_csv_atomic(paths["scores"], header, rows)
    scored = [i for i in scored if images[i].patient_id]  # images from a manifest
    if not (from_manifest and scored):
        return
    proba = np.stack([proba_by_image[i] for i in scored]).astype(np.float64)
    score_col = proba[:, card.positive_class]
    labels = [images[i].label for i in scored]
    breast_keys = [f"{images[i].patient_id}\t{images[i].laterality}" for i in scored]
    keys, counts, mean_p, mean_s, group_labels = _group_scores(breast_keys, proba, score_col, labels)
    write_csv_atomic(paths["breast"], ["patient_id", "laterality", "n_images", "labels"] + classes + ["score"],
                     [k.split("\t") + [int(n), lab] + [fmt(v) for v in p] + [fmt(s)]
                      for k, n, p, s, lab in zip(keys, counts, mean_p, mean_s, group_labels)])
    patients = {}
    for k, n, s, lab in zip(keys, counts, mean_s, group_labels):
        patient, side = k.split("\t")
        best = patients.setdefault(patient, {"breasts": 0, "images": 0, "labels": [], "score": -1.0, "side": ""})
        best["breasts"] += 1
        best["images"] += int(n)
        best["labels"] += lab.split("+")
        if s > best["score"]:
            best["score"], best["side"] = s, side
    write_csv_atomic(paths["patient"], ["patient_id", "n_breasts", "n_images", "labels", "score", "max_breast"],
                     [[pid, b["breasts"], b["images"], _label_text(b["labels"]), fmt(b["score"]), b["side"]]
                      for pid, b in patients.items()])


def auc_summary(card, images, proba_by_image, n_boot=2000, seed=0) -> str:
    """The AUC of the scored manifest images, as text; labels outside the scenario are left out, and counted.

    Binary scenarios: label 1 for the scenario's positive class, AUC of ``score`` with the DeLong and
    the patient-level bootstrap 95% CIs (pipeline/evaluate.py). Triple: the mean of the pairwise AUCs.
    """
    code_to_class = {code: k for k, group in enumerate(card.class_labels) for code in group}
    labelled = [i for i in sorted(proba_by_image) if images[i].label]
    keep = [i for i in labelled if data_prep.LABEL_CODES[images[i].label] in code_to_class]
    y = [code_to_class[data_prep.LABEL_CODES[images[i].label]] for i in keep]
    left_out = len(labelled) - len(keep)
    note = f"; {left_out} scored images with labels outside the scenario left out" if left_out else ""
    y = np.asarray(y)
    counts = np.bincount(y, minlength=card.num_classes) if len(y) else np.zeros(card.num_classes, int)
    if counts.min() < 2:
        return (f"AUC not computed: it needs at least 2 scored images of each class "
                f"({', '.join(f'{n} {c}' for n, c in zip(counts, card.class_names))}){note}")
    proba = np.stack([proba_by_image[i] for i in keep]).astype(np.float64)
    patients = np.asarray([images[i].patient_id for i in keep])
    head = f"AUC over {len(keep)} images of {len(np.unique(patients))} patients{note}: "
    if card.num_classes > 2:
        auc = evaluate.scenario_auc(Predictions(np.asarray(keep), y, proba))
        return head + f"{auc:.3f} (mean of the pairwise AUCs; no CI)"
    m = evaluate.binary_metrics(y, proba[:, card.positive_class], patients, n_boot, seed)
    (d_lo, d_hi), (p_lo, p_hi) = m.ci95_delong, m.ci95_bootstrap_patient
    return head + (f"{m.auc:.3f} (DeLong 95% CI {d_lo:.3f}-{d_hi:.3f}; patient-level bootstrap 95% CI "
                   f"{p_lo:.3f}-{p_hi:.3f}, {n_boot} replicates)")


# ------------------------------------------------------------------ the command
@dataclass
class PredictOptions:
    """What ``python run.py predict`` is asked for (its options, checked by run.py's parser)."""

    model: str
    inputs: list
    out: str
    device: str = "auto"
    batch_size: int = 50
    workers: int | None = None
    n_boot: int = 2000
    seed: int = 0
    explain: str | None = None
    progress: bool = True


def _check_writable(path: Path, option: str):
    """The folder of an output file exists (or can be made), is a folder and takes a new file."""
    folder = path.parent
    for p in [folder, *folder.parents]:
        if p.exists():
            if not p.is_dir():
                raise UserError(f"{option} {path}: {p} is a file, not a folder; expected a path whose folders "
                                "are folders")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as e:
        raise UserError(f"{option} {path}: cannot write into {folder} ({e.strerror or e}); expected a writable "
                        "folder") from None


def check_request(opts: PredictOptions):
    """Everything that can be checked before reading a single image; returns (card, images,
    from_manifest, paths). Raises UserError (the model file, an input, an output path)."""
    card = read_card(opts.model)
    images, from_manifest = collect_inputs(opts.inputs, findings=bool(opts.explain))
    paths = output_paths(opts.out)
    if Path(opts.out).is_dir():
        raise UserError(f"--out {opts.out} is a folder; expected a .csv file name")
    if opts.explain and Path(opts.explain).exists() and not Path(opts.explain).is_dir():
        raise UserError(f"--explain {opts.explain} is a file; expected a folder for the overlay PNGs")
    taken = {os.path.realpath(p) for p in [opts.model, *opts.inputs, *(item.path for item in images)]}
    for name, path in paths.items():
        if os.path.realpath(path) in taken:
            raise UserError(f"--out {opts.out}: the {name} file {path} would overwrite an input")
    _check_writable(Path(opts.out), "--out")
    if opts.explain:
        _check_writable(Path(opts.explain) / "overlay.png", "--explain")
    return card, images, from_manifest, paths


def predict_command(opts: PredictOptions, log=print) -> int:
    """``run.py predict``: returns the exit status (0 done, 1 no image could be scored); bad input
    raises UserError before any image is read."""
    card, images, from_manifest, paths = check_request(opts)
    select_device(opts.device)
    net, card = load_model(opts.model)
    workers = opts.workers or default_workers()
    log(f"model {opts.model}: {card.scenario} ({', '.join(card.class_names)}), score = {card.score_name}; "
        f"{len(images)} images, preprocessed to {card.preprocessing.size} px ({card.preprocessing.equalize} "
        f"equalization, {card.preprocessing.aspect}); backend {backend.backend_name()}, {workers} reading workers")
    for stale in (paths["breast"], paths["patient"]):  # a previous run's tables must not pass for this one's
        stale.unlink(missing_ok=True)
    errors, proba_by_image = [], {}
    for batch in scored_batches(net, card, images, opts.batch_size, workers, opts.progress, errors):
        for i, p, lat, view in zip(batch.index, batch.proba, batch.laterality, batch.view):
            images[i].laterality, images[i].view = lat, view
            proba_by_image[int(i)] = p
        if opts.explain:
            x = to_network_input(batch.gray, card.mean, card.input_scale)
            pre = card.preprocessing
            findings = [data_prep.to_stored_findings(images[i].findings, g.crop_box, g.flipped, g.original_shape,
                                                     pre.size, pre.aspect) for i, g in zip(batch.index, batch.geometry)]
            explain_images(net, x, card.positive_class, "gradcam", opts.explain, gray=batch.gray,
                           names=[f"{i:05d}_{Path(images[i].path).stem}" for i in batch.index], findings=findings)
    errors.sort()
    write_csv_atomic(paths["errors"], ("image_path", "reason"), [(images[i].path, reason) for i, reason in errors])
    if not proba_by_image:
        print(f"error: none of the {len(images)} images could be read; reasons in {paths['errors']}", file=sys.stderr)
        return 1
    write_tables(paths, card, images, proba_by_image, from_manifest)
    log(f"scored {len(proba_by_image)} images; {len(errors)} unreadable"
        + (f" (reasons in {paths['errors']})" if errors else ""))
    if from_manifest:
        log(auc_summary(card, images, proba_by_image, opts.n_boot, opts.seed))
    written = [paths["scores"]] + ([paths["breast"], paths["patient"]] if from_manifest else [])
    log("wrote " + ", ".join(str(p) for p in written)
        + (f", and {len(proba_by_image)} Grad-CAM overlays in {opts.explain}" if opts.explain else ""))
    return 0
