"""Adapters: build a manifest from public data sets' own layouts and label files.

Each adapter reads the data set's label file, finds the image files, maps the labels onto the
paper's three classes (the mapping is a module-level dict, documented in docs/data.md) and
returns manifest rows; with ``out_csv`` it also writes them (paths relative to the CSV's folder).
Bad label rows or unresolvable files are collected and raised together as a
:class:`~data_prep.manifest.ManifestError` naming the label file, line, column and value.

The sets that ship lesion annotations also write them, with ``out_csv``, as a findings table
beside the manifest (:mod:`data_prep.findings`, :func:`~data_prep.findings.findings_path`), in the
original image's pixels: CBIS-DDSM's ROI mask DICOMs as outlines, mini-MIAS's circles (its Y
counted from the bottom), INbreast's XML ROI point lists as outlines (one point: a circle of
radius 0), VinDr-Mammo's boxes. Annotations that cannot be used are counted by reason on stderr.

* :func:`cbis_ddsm_manifest`  CBIS-DDSM description CSVs + the TCIA download folder;
* :func:`mini_mias_manifest`  mini-MIAS ``Info.txt`` + ``mdbNNN.pgm`` files;
* :func:`inbreast_manifest`   INbreast's ``;``-separated ``INbreast.csv`` + ``AllDICOMs``;
* :func:`vindr_manifest`      VinDr-Mammo's ``breast-level_annotations.csv`` + ``images/``;
* :func:`cmmd_manifest`       CMMD's clinical table (xlsx or a CSV export) + the TCIA download;
* :func:`rsna_manifest`       RSNA Screening Mammography 2023's ``train.csv`` + ``train_images/``;
* :func:`folder_manifest`     any ``root/<class>/[<patient>/]<image>`` layout.
"""

from __future__ import annotations

import os
import plistlib
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.measure import find_contours

from .findings import Finding, findings_path, write_findings
from .manifest import (
    LABELS,
    DataPrepError,
    ManifestError,
    ManifestProblem,
    read_csv_records,
    require_columns,
    write_manifest,
)
from .parallel import parallel_map
from .readers import ImageReadError, dicom_laterality, dicom_view, open_dicom

#: CBIS-DDSM pathology -> class. BENIGN_WITHOUT_CALLBACK findings were benign-looking enough not to
#: be recalled at all, so their images count as negative.
CBIS_PATHOLOGY = {"MALIGNANT": "malignant", "BENIGN": "recalled_benign", "BENIGN_WITHOUT_CALLBACK": "negative"}
#: CBIS-DDSM pathology -> the role of the abnormality's finding (data_prep.findings.ROLES): a
#: benign finding without callback does not make its image's class.
CBIS_ROLE = {"MALIGNANT": "malignant", "BENIGN": "recalled_benign", "BENIGN_WITHOUT_CALLBACK": "incidental"}
#: A ROI mask is traced on a copy subsampled to at most this many pixels per side (outlines in
#: original pixels, to within the subsampling step) ...
MASK_TRACE_SIDE = 1024
#: ... and an outline keeps at most this many vertices (every k-th point of the traced contour).
OUTLINE_VERTICES = 256
#: mini-MIAS severity (NORM has none) -> class.
MIAS_SEVERITY = {"NORM": "negative", "B": "recalled_benign", "M": "malignant"}
#: mini-MIAS character of background tissue and class of abnormality (its Info.txt's columns 2 and 3).
MIAS_BACKGROUNDS = ("F", "G", "D")
MIAS_CLASSES = ("CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM", "NORM")
#: What a line of mini-MIAS's Info.txt looks like (error messages show it).
MIAS_EXAMPLE = "mdb001 G CIRC B 535 425 197"
#: INbreast BI-RADS -> class, following the ACR audit definition of a screening result (BI-RADS 1
#: and 2 are negative screens; 3, 4 and 5 are positive, i.e. recalled). INbreast has no pathology
#: for every case, so BI-RADS 4-6 stands in for malignant and 3 for recalled-benign.
INBREAST_BIRADS = {"1": "negative", "2": "negative", "3": "recalled_benign", "4": "malignant", "4a": "malignant",
                   "4b": "malignant", "4c": "malignant", "5": "malignant", "6": "malignant"}
#: VinDr-Mammo breast-level BI-RADS -> class, as for INbreast: VinDr-Mammo has no pathology, so
#: BI-RADS 4-5 stands in for malignant and 3 for recalled-benign.
VINDR_BIRADS = {"1": "negative", "2": "negative", "3": "recalled_benign", "4": "malignant", "5": "malignant"}
#: CMMD classification (of the breast's biopsied lesion) -> class. CMMD has no normal breasts.
CMMD_CLASSIFICATION = {"benign": "recalled_benign", "malignant": "malignant"}
#: RSNA views that are not the two screening views; their images are left out of the manifest.
RSNA_OTHER_VIEWS = ("ML", "LM", "AT", "LMO")
#: Class folder names accepted by folder_manifest (case-insensitive).
FOLDER_LABELS = {"negative": "negative", "normal": "negative", "recalled_benign": "recalled_benign",
                 "recalled-benign": "recalled_benign", "benign": "recalled_benign", "malignant": "malignant",
                 "cancer": "malignant"}
IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".tif", ".tiff", ".pgm")
SEVERITY = {name: rank for rank, name in enumerate(LABELS)}


def _check_inputs(files=(), folders=(), out_csv=None) -> None:
    """Before any work: every label file and image folder must exist, and ``out_csv`` must not be a label file."""
    for path in map(Path, files):
        if not path.is_file():
            raise DataPrepError(f"{path}: {'is a folder' if path.is_dir() else 'does not exist'} "
                                "(expected the data set's label file)")
    for path in map(Path, folders):
        if not path.is_dir():
            raise DataPrepError(f"{path}: {'is a file' if path.exists() else 'does not exist'} "
                                "(expected the data set's image folder)")
    if out_csv is not None and Path(out_csv).resolve() in {Path(f).resolve() for f in files}:
        raise DataPrepError(f"{out_csv}: is the adapter's input label file; the manifest would overwrite it "
                            "(expected another path)")


def _say_left_out(label_file: Path, left_out: Counter, what: str = "images left out of the manifest") -> None:
    """Print, on stderr, how many images (or annotations: ``what``) an adapter left out and why, by
    reason: nothing is dropped silently."""
    if sum(left_out.values()):
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(left_out.items()) if n)
        print(f"{label_file}: {sum(left_out.values())} {what} ({reasons})", file=sys.stderr)


def _annotations(out_csv, source: Path, option: str, read) -> list[Finding] | None:
    """The findings ``read()`` gets from ``source`` when a manifest is written (``out_csv``), else None;
    when ``source`` is missing, none, and a note on stderr naming the ``option`` that points at it."""
    if out_csv is None:
        return None
    if not source.exists():
        print(f"{source}: not found, so no annotations (pass {option})", file=sys.stderr)
        return []
    return read()


def _finish(rows: list[dict], out_csv, findings: list[Finding] | None = None) -> list[dict]:
    """Sort rows by path; if ``out_csv`` is given, write them with paths relative to its folder.

    ``findings`` (with the images' paths as in ``rows``): written beside the manifest as its
    findings table (:func:`data_prep.findings.findings_path`), even when empty, so a table of an
    earlier run is never read with this manifest; those of images not in ``rows`` are left out.
    """
    rows.sort(key=lambda r: r["image_path"])
    if out_csv is not None:
        target = Path(out_csv).resolve()
        clash = next((r["image_path"] for r in rows if Path(r["image_path"]).resolve() == target), None)
        if clash is not None:
            raise DataPrepError(f"{out_csv}: is one of the data set's images; the manifest would overwrite it "
                                "(expected another path)")
        folder = Path(out_csv).resolve().parent

        def relative(path):
            return Path(os.path.relpath(path, folder)).as_posix()

        write_manifest([{**r, "image_path": relative(r["image_path"])} for r in rows], out_csv)
        if findings is not None:
            listed = {str(r["image_path"]) for r in rows}
            kept = [f for f in findings if f.image_path in listed]
            table = write_findings(findings_path(out_csv), [Finding(relative(f.image_path), f.finding, f.role,
                                                                    f.shape, f.rows, f.cols, f.radius_px)
                                                            for f in kept])
            print(f"{table}: {len(kept)} findings", file=sys.stderr)
    return rows


def _row(path, patient, exam, laterality, view, label, source) -> dict:
    return {"image_path": str(path), "patient_id": patient, "exam_id": exam, "laterality": laterality,
            "view": view, "label": label, "source": source, "interval_cancer": 0}


def _read_table(path: Path, delimiter: str = ",") -> tuple[list[str], list[tuple[int, dict]]]:
    """A label table with values stripped and empty records dropped (see read_csv_records)."""
    header, records = read_csv_records(path, delimiter)
    records = [(line, {k: (v or "").strip() for k, v in raw.items()}) for line, raw in records]
    return header, [(line, row) for line, row in records if any(row.values())]


# ----------------------------------------------------------------------------------------------
# CBIS-DDSM
# ----------------------------------------------------------------------------------------------

def _cbis_full_image(root: Path, csv_path_value: str) -> Path | None:
    """Find the full-mammogram DICOM of a CBIS-DDSM CSV entry in the downloaded tree.

    The CSVs' paths do not match the downloaded folder names (data_formats.md), so only the first
    component (e.g. ``Mass-Training_P_00001_LEFT_CC``) is trusted: the DICOM file(s) below that
    folder are globbed, preferring one inside a "full mammogram images" folder. The ROI and crop
    folders end in ``_1``, ``_2``... and are never the first component of a full-image path.
    """
    first = csv_path_value.strip().replace("\\", "/").split("/")[0]
    for folder in (root / first, root / "CBIS-DDSM" / first):
        if folder.is_dir():
            files = sorted(folder.rglob("*.dcm"))
            full = [f for f in files if "full mammogram" in f.parent.name.lower()]
            if len(full) == 1 or len(files) == 1:
                return (full or files)[0]
    exact = root / csv_path_value.strip()
    return exact if exact.is_file() else None


def _cbis_roi_mask(root: Path, csv_path_value: str, shape: tuple[int, int]) -> Path | None:
    """The ROI mask DICOM of a CBIS-DDSM CSV entry (its ``ROI mask file path``), or None.

    As for the full image, only the path's first component (``..._LEFT_CC_1``) is trusted. That
    folder holds the mask and the cropped lesion, and the CSV's two columns are sometimes swapped
    (data_formats.md), so the mask is the DICOM whose Rows x Columns are the full image's ``shape``
    (the crop is small); one in a "ROI mask" folder is preferred when several are.
    """
    first = csv_path_value.strip().replace("\\", "/").split("/")[0]
    for folder in (root / first, root / "CBIS-DDSM" / first):
        if first and folder.is_dir():
            same = []
            for path in sorted(folder.rglob("*.dcm")):
                try:
                    ds = open_dicom(path, header_only=True)
                except ImageReadError:
                    continue
                if (int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) == shape:
                    same.append(path)
            named = [p for p in same if "roi mask" in p.parent.name.lower()]
            if same:
                return (named or same)[0]
    return None


def mask_outlines(mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Outlines (rows, cols) in ``mask``'s pixels of each connected region of a boolean mask.

    The mask is traced on a copy subsampled to at most :data:`MASK_TRACE_SIDE` pixels per side
    (scikit-image's marching squares at level 0.5, the longest contour of each 8-connected region,
    every k-th point kept so that at most :data:`OUTLINE_VERTICES` remain), so an outline follows
    the mask to within the step.
    """
    step = max(1, -(-max(mask.shape) // MASK_TRACE_SIDE))
    small = np.asarray(mask[::step, ::step], bool)
    labels, count = ndimage.label(small, structure=np.ones((3, 3), bool))
    outlines = []
    for number, box in enumerate(ndimage.find_objects(labels), start=1):
        region = np.pad(labels[box] == number, 1).astype(np.float32)
        contour = max(find_contours(region, 0.5), key=len)[:-1]  # closed: the last point repeats the first
        contour = contour[:: -(-len(contour) // OUTLINE_VERTICES)]
        rows = (contour[:, 0] - 1 + box[0].start) * step
        cols = (contour[:, 1] - 1 + box[1].start) * step
        outlines.append((rows, cols))
    return outlines


def _cbis_findings(task: tuple) -> tuple[list[Finding], str | None]:
    """Outline one CBIS-DDSM abnormality from its ROI mask (runs in a worker); (findings, why none or None).

    ``task``: (root, full image path, ROI mask column value, abnormality type, pathology).
    """
    root, image, roi_value, kind, pathology = task
    try:
        header = open_dicom(image, header_only=True)
        shape = (int(header.Rows), int(header.Columns))
    except (ImageReadError, AttributeError):
        return [], "full image unreadable"
    mask_path = _cbis_roi_mask(Path(root), roi_value, shape)
    if mask_path is None:
        return [], "ROI mask missing (no DICOM of the full image's size below its folder)"
    try:
        mask = open_dicom(mask_path).pixel_array > 0
    except Exception:  # noqa: BLE001 - pydicom raises several types; all mean "cannot decode"
        return [], "ROI mask unreadable"
    outlines = mask_outlines(mask)
    if not outlines:
        return [], "ROI mask empty"
    role = CBIS_ROLE[pathology]
    return [Finding(str(image), kind, role, "outline", tuple(r.tolist()), tuple(c.tolist())) for r, c in outlines], None


def cbis_ddsm_manifest(root, description_csvs, out_csv=None, skip_missing: bool = False, workers: int | None = None,
                       progress: bool = True) -> list[dict]:
    """Manifest rows from CBIS-DDSM's ``{mass,calc}_case_description_{train,test}_set.csv`` files.

    One row per full mammogram (patient, side, view). An image with several abnormalities takes the
    most severe class (:data:`CBIS_PATHOLOGY`: malignant > recalled_benign > negative); an image
    listed in both the mass and the calc files appears once. ``exam_id`` is the patient id (CBIS-DDSM
    has one screening exam per patient). Unresolvable images raise, unless ``skip_missing``.

    With ``out_csv``, every abnormality's ROI mask (``ROI mask file path``, :func:`_cbis_roi_mask`)
    is read and traced (:func:`mask_outlines`, in ``workers`` processes with a progress bar) into
    outline findings: ``finding`` the abnormality type (mass, calcification), ``role`` from its
    pathology (:data:`CBIS_ROLE`); masks that cannot be used are counted by reason on stderr.
    """
    root = Path(root)
    tables = [Path(description_csvs)] if isinstance(description_csvs, (str, os.PathLike)) else list(map(Path, description_csvs))
    _check_inputs(tables, [root], out_csv)
    images: dict[tuple, dict] = {}
    abnormalities = []
    problems = []
    left_out = Counter()
    for table in tables:
        header, rows = _read_table(table)
        require_columns(table, header, ("patient_id", "left or right breast", "image view", "pathology", "image file path"))
        for line, row in rows:
            label = CBIS_PATHOLOGY.get(row["pathology"].upper())
            side = {"LEFT": "L", "RIGHT": "R"}.get(row["left or right breast"].upper())
            view = row["image view"].upper()
            for column, ok, expected in (("pathology", label, ", ".join(CBIS_PATHOLOGY)),
                                         ("left or right breast", side, "LEFT or RIGHT"),
                                         ("image view", view in ("CC", "MLO"), "CC or MLO")):
                if not ok:
                    problems.append(ManifestProblem(line, column, row[column], expected))
            if not (label and side and view in ("CC", "MLO")):
                continue
            key = (row["patient_id"], side, view)
            known = images.get(key)
            if known is None:
                path = _cbis_full_image(root, row["image file path"])
                if path is None:
                    if not skip_missing:
                        problems.append(ManifestProblem(line, "image file path", row["image file path"],
                                                        f"a full-mammogram DICOM below {root}"))
                    left_out["image file missing (--skip-missing)"] += 1
                    continue
                known = images[key] = _row(path, row["patient_id"], row["patient_id"], side, view, label, "cbis-ddsm")
            elif SEVERITY[label] > SEVERITY[known["label"]]:
                known["label"] = label
            abnormalities.append((str(root), known["image_path"], row.get("ROI mask file path", ""),
                                  row.get("abnormality type", "").lower() or "abnormality", row["pathology"].upper()))
        if problems:
            raise ManifestError(table, problems)
    _say_left_out(tables[0] if len(tables) == 1 else root, left_out)
    findings = None
    if out_csv is not None:
        findings, unused = [], Counter()
        for found, reason in parallel_map(_cbis_findings, abnormalities, workers, progress, desc="trace ROI masks",
                                          unit="mask"):
            findings += found
            if reason:
                unused[reason] += 1
        _say_left_out(root, unused, f"of {len(abnormalities)} abnormalities without a finding")
        findings.sort(key=lambda f: (f.image_path, f.finding, f.rows[:1], f.cols[:1]))
    return _finish(list(images.values()), out_csv, findings)


# ----------------------------------------------------------------------------------------------
# mini-MIAS
# ----------------------------------------------------------------------------------------------

def _text_lines(path: Path, example: str) -> list[tuple[int, str]]:
    """(line number, text) of a plain-text label file; an empty, UTF-16 or binary file raises one
    :class:`DataPrepError` line naming what was found and ``example``, what a line should look like."""
    data = path.read_bytes()
    expected = f"plain ASCII text with lines such as {example!r}"
    if not data.strip():
        raise DataPrepError(f"{path}: is empty (expected {expected})")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data:
        what = "UTF-16 text" if data.startswith((b"\xff\xfe", b"\xfe\xff")) else "not text: it holds NUL bytes"
        raise DataPrepError(f"{path}: is {what} (expected {expected}; save it as ASCII or UTF-8)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataPrepError(f"{path}: byte {exc.start} ({data[exc.start]:#04x}) is not text "
                            f"(expected {expected})") from None
    return list(enumerate(text.splitlines(), start=1))


def _mias_records(info_txt: Path) -> list[tuple[int, list[str]]]:
    """The reference lines of Info.txt as (line, tokens), checked field by field.

    Lines not starting with ``mdb`` are notes (the file's header). Raises :class:`ManifestError`
    listing every bad field, or one :class:`DataPrepError` line when the file holds no reference
    line at all -- for a file whose fields are not separated by spaces, naming the separator.
    """
    records, problems, odd = [], [], []
    for line, text in _text_lines(info_txt, MIAS_EXAMPLE):
        tokens = text.split()
        if not tokens or not tokens[0].lower().startswith("mdb"):
            continue
        if not re.fullmatch(r"mdb\d{3}", tokens[0]):
            odd.append((line, tokens[0]))
            continue
        bad = [ManifestProblem(line, column, value, expected) for column, value, ok, expected in (
            ("BG", tokens[1] if len(tokens) > 1 else "", len(tokens) > 1 and tokens[1] in MIAS_BACKGROUNDS,
             " or ".join(MIAS_BACKGROUNDS)),
            ("CLASS", tokens[2] if len(tokens) > 2 else "", len(tokens) > 2 and tokens[2] in MIAS_CLASSES,
             ", ".join(MIAS_CLASSES))) if not ok]
        if len(tokens) > 2 and tokens[2] != "NORM":
            severity = tokens[3] if len(tokens) > 3 else ""
            if severity not in ("B", "M"):
                bad.append(ManifestProblem(line, "SEVERITY", severity, "B or M for an abnormality (CLASS other than NORM)"))
            place = tokens[4:7]
            if place and not place[0].startswith("*"):  # mini-MIAS omits the place of spread calcifications
                for column, value in zip(("X", "Y", "RADIUS"), place + [""] * (3 - len(place))):
                    if not re.fullmatch(r"\d+(\.\d*)?", value):
                        bad.append(ManifestProblem(line, column, value, "a number of pixels (X Y RADIUS all three, "
                                                                       "or none for spread calcifications)"))
        problems += bad
        records.append((line, tokens))
    if not records and odd:
        line, token = odd[0]
        separator = re.sub(r"^mdb\d*", "", token)[:1]
        raise DataPrepError(f"{info_txt}: line {line}: REFNUM {token[:30]!r}: fields separated by {separator!r} "
                            f"(expected fields separated by spaces, as in {MIAS_EXAMPLE!r})")
    problems += [ManifestProblem(line, "REFNUM", token[:30], f"mdbNNN followed by a space, as in {MIAS_EXAMPLE!r}")
                 for line, token in odd]
    if problems:
        raise ManifestError(info_txt, sorted(problems, key=lambda p: p.line))
    if not records:
        raise DataPrepError(f"{info_txt}: holds no reference line (expected lines such as {MIAS_EXAMPLE!r})")
    return records


def mini_mias_manifest(info_txt, image_dir=None, out_csv=None, skip_missing: bool = False) -> list[dict]:
    """Manifest rows from mini-MIAS's ``Info.txt`` (``REFNUM BG CLASS SEVERITY X Y RADIUS``).

    Films come in pairs per patient: even reference numbers are left breasts, odd ones right
    (mdb001 R and mdb002 L are patient 1). All are MLO views. NORM is negative, severity B
    recalled-benign and M malignant (:data:`MIAS_SEVERITY`); a reference listed twice (two
    abnormalities) takes the most severe. Lines not starting with ``mdb`` are notes. Every field is
    checked (:func:`_mias_records`): one error lists them all by line and field; an empty, binary,
    UTF-16 or ``;``-separated file is one error line. A reference whose ``mdbNNN.pgm`` is not in
    ``image_dir`` is an error too, unless ``skip_missing`` (then it is left out and counted).

    With ``out_csv``, each abnormality with a place becomes a circle finding (``finding`` its
    CLASS, ``role`` its severity): centre column X, row H - 1 - Y (mini-MIAS counts Y up from the
    image's bottom row; H from the .pgm's header), radius RADIUS.
    """
    info_txt = Path(info_txt)
    image_dir = Path(image_dir) if image_dir else info_txt.parent
    _check_inputs([info_txt], [image_dir], out_csv)
    records = _mias_records(info_txt)
    labels: dict[str, str] = {}
    problems, left_out, missing = [], Counter(), set()
    for line, tokens in records:
        ref = tokens[0]
        if ref not in labels and not (image_dir / f"{ref}.pgm").is_file():
            missing.add(ref)
            if skip_missing:
                left_out["image file missing (--skip-missing)"] += 1
            else:
                problems.append(ManifestProblem(line, "REFNUM", ref, f"a file {image_dir / f'{ref}.pgm'}"))
        label = MIAS_SEVERITY["NORM" if tokens[2] == "NORM" else tokens[3]]
        if SEVERITY[label] >= SEVERITY.get(labels.get(ref, ""), -1):
            labels[ref] = label
    if problems:
        raise ManifestError(info_txt, problems)
    _say_left_out(info_txt, left_out)
    rows = []
    for ref, label in labels.items():
        if ref in missing:
            continue
        number = int(ref[3:])
        patient = f"mias_{(number + 1) // 2:03d}"
        rows.append(_row(image_dir / f"{ref}.pgm", patient, patient, "L" if number % 2 == 0 else "R", "MLO", label,
                         "mini-mias"))
    findings = _mias_findings(info_txt, image_dir, records, missing) if out_csv is not None else None
    return _finish(rows, out_csv, findings)


def _mias_findings(info_txt: Path, image_dir: Path, records, missing: set[str]) -> list[Finding]:
    """Circle findings of the abnormalities that have a place (see :func:`mini_mias_manifest`)."""
    findings, unused, heights = [], Counter(), {}
    for line, tokens in records:
        if tokens[2] == "NORM" or tokens[0] in missing:
            continue
        if len(tokens) < 7 or tokens[4].startswith("*"):
            unused["abnormality without a place (spread calcifications)"] += 1
            continue
        path = image_dir / f"{tokens[0]}.pgm"
        if path not in heights:
            try:
                with Image.open(path) as im:
                    heights[path] = im.size[1]
            except (OSError, ValueError):
                heights[path] = None
        if heights[path] is None:
            unused["image unreadable"] += 1
            continue
        x, y, radius = (float(v) for v in tokens[4:7])
        findings.append(Finding(str(path), tokens[2], MIAS_SEVERITY[tokens[3]], "circle",
                                (heights[path] - 1 - y,), (x,), radius))
    _say_left_out(info_txt, unused, "abnormalities without a finding")
    return findings


# ----------------------------------------------------------------------------------------------
# INbreast
# ----------------------------------------------------------------------------------------------

def _inbreast_rois(xml_path: Path) -> list[tuple[str, list[tuple[float, float]]]]:
    """(ROI name, [(row, col), ...]) of every ROI of an INbreast XML file (an OsiriX plist).

    The file is ``plist > dict > Images > [dict > ROIs > [dict: Name, Point_px ...]]``; each
    ``Point_px`` entry is a string ``"(x, y)"``: x the column, y the row from the top, in pixels.
    Raises ValueError for a file that is not such a plist.
    """
    with open(xml_path, "rb") as f:
        try:
            document = plistlib.load(f, fmt=plistlib.FMT_XML)
        except Exception as exc:  # noqa: BLE001 - expat and plistlib raise several types for a bad file
            raise ValueError(f"not a readable plist: {exc}") from exc
    rois = []
    for image in document.get("Images", []) if isinstance(document, dict) else []:
        for roi in image.get("ROIs", []):
            points = []
            for text in roi.get("Point_px", []):
                x, y = (float(v) for v in str(text).strip().strip("()").split(","))
                points.append((y, x))
            rois.append((str(roi.get("Name", "")).strip() or "ROI", points))
    return rois


def _inbreast_findings(rows: list[dict], xml_dir: Path) -> list[Finding]:
    """The findings of INbreast images from their XML files ``{xml_dir}/{File Name}.xml``.

    An ROI of several points is an outline, one point (a single calcification) a circle of radius
    0. The XML gives no class per ROI, so every ROI takes the role of its image's class (BI-RADS),
    and those of negative images (BI-RADS 1-2) are incidental. An image without an XML file has
    no annotation; unreadable files and empty ROIs are counted by reason on stderr.
    """
    findings, unused = [], Counter()
    for row in rows:
        xml_path = xml_dir / f"{Path(row['image_path']).name.split('_')[0]}.xml"
        if not xml_path.is_file():
            continue
        try:
            rois = _inbreast_rois(xml_path)
        except (OSError, ValueError):
            unused["XML file unreadable"] += 1
            continue
        role = row["label"] if row["label"] != "negative" else "incidental"
        for name, points in rois:
            if not points:
                unused["ROI without points"] += 1
                continue
            r, c = (tuple(v) for v in zip(*points))
            findings.append(Finding(row["image_path"], name, role, "circle" if len(points) == 1 else "outline", r, c))
    _say_left_out(xml_dir, unused, "ROIs or files without a finding")
    return findings


def inbreast_manifest(csv_path, dicom_dir, out_csv=None, mapping: dict | None = None, xml_dir=None) -> list[dict]:
    """Manifest rows from INbreast's ``INbreast.csv`` (``;``-separated) and its ``AllDICOMs`` folder.

    Columns used: ``Laterality``, ``View``, ``File Name``, ``Bi-Rads``. Each file is
    ``{File Name}_{patient hash}_MG_{L|R}_{CC|ML}_ANON.dcm``; the patient is the hash (the CSV's
    ``Patient ID`` column is anonymised away). ``View`` MLO (the files say ML) is kept as MLO.
    Labels from BI-RADS through ``mapping`` (default :data:`INBREAST_BIRADS`). With ``out_csv``,
    the ROIs of the XML files in ``xml_dir`` (default: ``AllXML`` beside ``dicom_dir``, when it
    exists) become findings (:func:`_inbreast_findings`).
    """
    csv_path, dicom_dir = Path(csv_path), Path(dicom_dir)
    _check_inputs([csv_path], [dicom_dir] + ([xml_dir] if xml_dir else []), out_csv)
    xml_dir = Path(xml_dir) if xml_dir else dicom_dir.parent / "AllXML"
    mapping = mapping or INBREAST_BIRADS
    header, table = _read_table(csv_path, delimiter=";")
    require_columns(csv_path, header, ("Laterality", "View", "File Name", "Bi-Rads"))
    rows, problems = [], []
    for line, row in table:
        label = mapping.get(row["Bi-Rads"].lower())
        side, view = row["Laterality"].upper(), row["View"].upper()
        matches = sorted(dicom_dir.glob(f"{row['File Name']}_*.dcm")) if row["File Name"] else []
        for column, ok, expected in (("Bi-Rads", label, ", ".join(mapping)), ("Laterality", side in ("L", "R"), "L or R"),
                                     ("View", view in ("CC", "MLO"), "CC or MLO"),
                                     ("File Name", len(matches) == 1, f"exactly one {row['File Name']}_*.dcm in {dicom_dir}")):
            if not ok:
                problems.append(ManifestProblem(line, column, row.get(column, ""), expected))
        if label and side in ("L", "R") and view in ("CC", "MLO") and len(matches) == 1:
            parts = matches[0].stem.split("_")
            patient = parts[1] if len(parts) > 2 else row.get("Patient ID", "") or row["File Name"]
            rows.append(_row(matches[0], patient, patient, side, view, label, "inbreast"))
    if problems:
        raise ManifestError(csv_path, problems)
    findings = _annotations(out_csv, xml_dir, "--xml FOLDER", lambda: _inbreast_findings(rows, xml_dir))
    return _finish(rows, out_csv, findings)


# ----------------------------------------------------------------------------------------------
# VinDr-Mammo
# ----------------------------------------------------------------------------------------------

def _vindr_findings(findings_csv: Path, rows: list[dict]) -> list[Finding]:
    """Box findings from VinDr-Mammo's ``finding_annotations.csv`` for the images of ``rows``.

    Columns used: ``study_id``, ``image_id``, ``finding_categories`` (a list such as
    ``['Mass', 'Suspicious Calcification']``, joined by "; " into ``finding``), ``finding_birads``
    (the role, through :data:`VINDR_BIRADS`; BI-RADS 1-2 is incidental) and the box ``xmin``,
    ``ymin``, ``xmax``, ``ymax`` in pixels. Rows of ``No Finding`` have no box. Bad values raise one
    :class:`ManifestError` naming line and column; findings of images not in the manifest are
    counted on stderr.
    """
    header, table = _read_table(findings_csv)
    require_columns(findings_csv, header, ("study_id", "image_id", "finding_categories", "finding_birads", "xmin",
                                           "ymin", "xmax", "ymax"))
    images = {(Path(r["image_path"]).parent.name, Path(r["image_path"]).stem): r["image_path"] for r in rows}
    findings, problems, unused = [], [], Counter()
    for line, row in table:
        categories = re.findall(r"'([^']*)'", row["finding_categories"]) or [
            c.strip() for c in row["finding_categories"].strip("[]").split(",") if c.strip()]
        if not categories or categories == ["No Finding"]:
            continue
        birads = re.sub(r"^BI-?RADS\s*", "", row["finding_birads"], flags=re.IGNORECASE)
        role = VINDR_BIRADS.get(birads)
        corners = {}
        for column in ("ymin", "xmin", "ymax", "xmax"):
            try:
                corners[column] = float(row[column])
            except ValueError:
                problems.append(ManifestProblem(line, column, row[column], "a number of pixels (the finding's box)"))
        if role is None:
            problems.append(ManifestProblem(line, "finding_birads", row["finding_birads"], "BI-RADS 1, 2, 3, 4 or 5"))
        if role is None or len(corners) < 4:
            continue
        if corners["ymin"] > corners["ymax"] or corners["xmin"] > corners["xmax"]:
            problems.append(ManifestProblem(line, "xmax" if corners["xmin"] > corners["xmax"] else "ymax",
                                            row["xmax" if corners["xmin"] > corners["xmax"] else "ymax"],
                                            "a box with xmin <= xmax and ymin <= ymax"))
            continue
        image = images.get((row["study_id"], row["image_id"]))
        if image is None:
            unused["image not in the manifest"] += 1
            continue
        findings.append(Finding(image, "; ".join(categories), role if role != "negative" else "incidental", "box",
                                (corners["ymin"], corners["ymax"]), (corners["xmin"], corners["xmax"])))
    if problems:
        raise ManifestError(findings_csv, problems)
    _say_left_out(findings_csv, unused, "findings left out")
    return findings


def vindr_manifest(annotations_csv, image_dir=None, out_csv=None, skip_missing: bool = False,
                   findings_csv=None) -> list[dict]:
    """Manifest rows from VinDr-Mammo's ``breast-level_annotations.csv`` and its ``images`` folder.

    Columns used: ``study_id``, ``image_id``, ``laterality`` (L/R), ``view_position`` (CC/MLO),
    ``breast_birads`` (``BI-RADS 1`` ... ``BI-RADS 5``, mapped by :data:`VINDR_BIRADS`). The image
    is ``{image_dir}/{study_id}/{image_id}.dicom`` (``image_dir`` defaults to ``images`` next to
    the CSV). VinDr-Mammo gives no patient id, so the study is the patient and the exam. The set's
    own ``split`` column is not used (the study makes its own patient-level splits). Missing
    images are errors, unless ``skip_missing``. With ``out_csv``, the boxes of ``findings_csv``
    (default: ``finding_annotations.csv`` next to the CSV, when it exists) become findings
    (:func:`_vindr_findings`).
    """
    annotations_csv = Path(annotations_csv)
    image_dir = Path(image_dir) if image_dir else annotations_csv.parent / "images"
    _check_inputs([annotations_csv] + ([findings_csv] if findings_csv else []), [image_dir], out_csv)
    findings_csv = Path(findings_csv) if findings_csv else annotations_csv.parent / "finding_annotations.csv"
    header, table = _read_table(annotations_csv)
    require_columns(annotations_csv, header, ("study_id", "image_id", "laterality", "view_position", "breast_birads"))
    rows, problems = [], []
    for line, row in table:
        birads = re.sub(r"^BI-?RADS\s*", "", row["breast_birads"], flags=re.IGNORECASE)
        label = VINDR_BIRADS.get(birads)
        side, view = row["laterality"].upper(), row["view_position"].upper()
        path = image_dir / row["study_id"] / f"{row['image_id']}.dicom"
        found = path.is_file()
        for column, ok, expected in (("breast_birads", label, "BI-RADS 1, 2, 3, 4 or 5"),
                                     ("laterality", side in ("L", "R"), "L or R"),
                                     ("view_position", view in ("CC", "MLO"), "CC or MLO"),
                                     ("image_id", found or skip_missing, f"a file {path}")):
            if not ok:
                problems.append(ManifestProblem(line, column, row[column], expected))
        if label and side in ("L", "R") and view in ("CC", "MLO") and found:
            rows.append(_row(path, row["study_id"], row["study_id"], side, view, label, "vindr-mammo"))
    if problems:
        raise ManifestError(annotations_csv, problems)
    _say_left_out(annotations_csv, Counter({"image file missing (--skip-missing)": len(table) - len(rows)}))
    findings = _annotations(out_csv, findings_csv, "--findings FILE", lambda: _vindr_findings(findings_csv, rows))
    return _finish(rows, out_csv, findings)


# ----------------------------------------------------------------------------------------------
# CMMD
# ----------------------------------------------------------------------------------------------

def _read_xlsx(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """The first sheet of an .xlsx file as _read_table gives a CSV (the sheet's row numbers as lines)."""
    try:
        import openpyxl
    except ImportError:
        raise DataPrepError(f"{path}: reading .xlsx needs openpyxl (`pip install openpyxl`), or export the "
                            "sheet as CSV and pass that") from None
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises zipfile, KeyError and its own errors for a bad file
        raise DataPrepError(f"{path}: not a readable .xlsx file ({exc})") from exc
    try:
        cells = [["" if value is None else str(value).strip() for value in row]
                 for row in book.worksheets[0].iter_rows(values_only=True)]
    finally:
        book.close()
    header = cells[0] if cells else []
    records = [(line, dict(zip(header, values))) for line, values in enumerate(cells[1:], start=2)]
    return header, [(line, row) for line, row in records if any(row.values())]


def _cmmd_patient_files(dicom_dir: Path, patient: str) -> list[Path]:
    """The DICOM files of one CMMD patient: below ``{dicom_dir}/{ID1}`` or ``{dicom_dir}/CMMD/{ID1}``."""
    for folder in (dicom_dir / patient, dicom_dir / "CMMD" / patient):
        if folder.is_dir():
            return sorted(folder.rglob("*.dcm"))
    return []


def cmmd_manifest(clinical_table, dicom_dir, out_csv=None) -> list[dict]:
    """Manifest rows from CMMD's clinical table and the TCIA download (``CMMD/D1-0001/.../1-1.dcm``).

    ``clinical_table`` is ``CMMD_clinicaldata_revision.xlsx`` (needs openpyxl) or a CSV export of
    it. Columns used: ``ID1`` (the patient), ``LeftRight`` (L/R), ``classification`` (Benign or
    Malignant, mapped by :data:`CMMD_CLASSIFICATION`); one row per breast with a biopsied lesion.
    The table does not say which file is which breast, so every DICOM below the patient's folder
    is opened (header only) for its ImageLaterality/Laterality and view (ViewCodeSequence: CMMD
    files have no ViewPosition). An image of a breast the table does not list is left out: CMMD
    has no normal breasts. ``exam_id`` is the patient (one exam each).
    """
    clinical_table, dicom_dir = Path(clinical_table), Path(dicom_dir)
    _check_inputs([clinical_table], [dicom_dir], out_csv)
    if clinical_table.suffix.lower() in (".xlsx", ".xlsm"):
        header, table = _read_xlsx(clinical_table)
    else:
        header, table = _read_table(clinical_table)
    require_columns(clinical_table, header, ("ID1", "LeftRight", "classification"))
    labels: dict[tuple[str, str], str] = {}
    first_line: dict[str, int] = {}
    problems = []
    for line, row in table:
        label = CMMD_CLASSIFICATION.get(row["classification"].lower())
        side = row["LeftRight"].upper()
        for column, ok, expected in (("classification", label, "Benign or Malignant"),
                                     ("LeftRight", side in ("L", "R"), "L or R"),
                                     ("ID1", row["ID1"], "a patient id such as D1-0001")):
            if not ok:
                problems.append(ManifestProblem(line, column, row[column], expected))
        if label and side in ("L", "R") and row["ID1"]:
            first_line.setdefault(row["ID1"], line)
            if SEVERITY[label] > SEVERITY.get(labels.get((row["ID1"], side), ""), -1):
                labels[row["ID1"], side] = label
    rows, left_out = [], Counter()
    for patient, line in first_line.items():
        files = _cmmd_patient_files(dicom_dir, patient)
        if not files:
            problems.append(ManifestProblem(line, "ID1", patient, f"DICOM files below {dicom_dir / patient}"))
        for path in files:
            try:
                ds = open_dicom(path, header_only=True)
            except ImageReadError as exc:
                problems.append(ManifestProblem(line, "ID1", patient, f"readable DICOM files ({exc})"))
                continue
            side = dicom_laterality(ds)
            if side not in ("L", "R"):
                problems.append(ManifestProblem(line, "ID1", patient, f"ImageLaterality or Laterality L/R in {path}"))
            elif (patient, side) in labels:
                view = dicom_view(ds) or ""
                rows.append(_row(path, patient, patient, side, view if view in ("CC", "MLO") else "",
                                 labels[patient, side], "cmmd"))
            else:
                left_out["image of a breast the table does not list"] += 1
    if problems:
        raise ManifestError(clinical_table, sorted(problems, key=lambda p: p.line))
    _say_left_out(clinical_table, left_out)
    return _finish(rows, out_csv)


# ----------------------------------------------------------------------------------------------
# RSNA Screening Mammography 2023
# ----------------------------------------------------------------------------------------------

def _number(text: str, allowed: tuple[int, ...]) -> int | None:
    """An integer among ``allowed`` from ``1`` or ``1.0`` (pandas writes floats), else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value in allowed else None


def rsna_manifest(train_csv, image_dir=None, out_csv=None, skip_missing: bool = False) -> list[dict]:
    """Manifest rows from the RSNA Screening Mammography 2023 ``train.csv`` and ``train_images``.

    Columns used: ``patient_id``, ``image_id``, ``laterality``, ``view``, ``cancer``, ``biopsy``,
    ``BIRADS``. The class: ``cancer`` 1 is malignant; otherwise ``biopsy`` 1 or ``BIRADS`` 0 (the
    screen asked for a follow-up) is recalled-benign; otherwise negative. ``BIRADS`` may be empty
    (most sites do not give it). The image is ``{image_dir}/{patient_id}/{image_id}.dcm``
    (``image_dir`` defaults to ``train_images`` next to the CSV; the files are JPEG 2000: install
    ``requirements-jpeg.txt``). Images with a view other than CC or MLO
    (:data:`RSNA_OTHER_VIEWS`) are left out. The patient is the exam (one exam each). Missing
    images are errors, unless ``skip_missing``.
    """
    train_csv = Path(train_csv)
    image_dir = Path(image_dir) if image_dir else train_csv.parent / "train_images"
    _check_inputs([train_csv], [image_dir], out_csv)
    header, table = _read_table(train_csv)
    require_columns(train_csv, header, ("patient_id", "image_id", "laterality", "view", "cancer", "biopsy", "BIRADS"))
    rows, problems, left_out = [], [], Counter()
    for line, row in table:
        cancer, biopsy = _number(row["cancer"], (0, 1)), _number(row["biopsy"], (0, 1))
        birads = _number(row["BIRADS"], (0, 1, 2))
        side, view = row["laterality"].upper(), row["view"].upper()
        path = image_dir / row["patient_id"] / f"{row['image_id']}.dcm"
        screening_view = view in ("CC", "MLO")
        found = not screening_view or path.is_file()
        bad = [ManifestProblem(line, column, row[column], expected) for column, ok, expected in (
            ("cancer", cancer is not None, "0 or 1"), ("biopsy", biopsy is not None, "0 or 1"),
            ("BIRADS", birads is not None or row["BIRADS"] == "", "0, 1, 2 or empty"),
            ("laterality", side in ("L", "R"), "L or R"),
            ("view", screening_view or view in RSNA_OTHER_VIEWS,
             "CC, MLO, or one of " + ", ".join(RSNA_OTHER_VIEWS) + " (left out)"),
            ("image_id", found or skip_missing, f"a file {path}")) if not ok]
        problems += bad
        if not bad and not screening_view:
            left_out[f"view {view}"] += 1
        elif not bad and not found:
            left_out["image file missing (--skip-missing)"] += 1
        if bad or not (screening_view and found):
            continue
        label = "malignant" if cancer else "recalled_benign" if biopsy or birads == 0 else "negative"
        rows.append(_row(path, row["patient_id"], row["patient_id"], side, view, label, "rsna"))
    if problems:
        raise ManifestError(train_csv, problems)
    _say_left_out(train_csv, left_out)
    return _finish(rows, out_csv)


# ----------------------------------------------------------------------------------------------
# Folder per class
# ----------------------------------------------------------------------------------------------

def _side_and_view(stem: str) -> tuple[str, str]:
    """Laterality and view from file-name tokens such as ``P001_LEFT_CC`` or ``case7-R-MLO``."""
    tokens = {t.upper() for t in re.split(r"[_\-. ]+", stem)}
    side = "L" if tokens & {"L", "LEFT"} else "R" if tokens & {"R", "RIGHT"} else ""
    view = "CC" if "CC" in tokens else "MLO" if tokens & {"MLO", "ML"} else ""
    # LCC, RMLO... written as one token
    for token in tokens:
        match = re.fullmatch(r"([LR])(CC|MLO)", token)
        if match:
            side, view = side or match.group(1), view or match.group(2)
    return side, view


def folder_manifest(root, out_csv=None, source: str | None = None) -> list[dict]:
    """Manifest rows from a ``root/<class>/[<patient>/]<image>`` layout.

    Class folder names are mapped with :data:`FOLDER_LABELS` (negative/normal, recalled_benign/
    benign, malignant/cancer; any case). The patient is the first sub-folder inside the class
    folder; an image directly in the class folder is its own patient (its file stem), so such a
    layout cannot keep a patient's images together -- prefer patient folders. Laterality and view
    come from file-name tokens (``L``/``LEFT``/``R``/``RIGHT``, ``CC``/``MLO``/``ML``, or ``LCC``
    style); left empty when absent, the build then reads DICOM tags. ``source`` defaults to the
    root folder's name. Other top-level folders raise.
    """
    root = Path(root)
    _check_inputs(folders=[root])
    source = source or root.resolve().name
    rows, problems = [], []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        label = FOLDER_LABELS.get(class_dir.name.lower())
        if label is None:
            problems.append(ManifestProblem(0, "class folder", class_dir.name, ", ".join(FOLDER_LABELS)))
            continue
        for path in sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
            inner = path.relative_to(class_dir).parts
            patient = inner[0] if len(inner) > 1 else path.stem
            side, view = _side_and_view(path.stem)
            rows.append(_row(path, patient, patient, side, view, label, source))
    if problems:
        raise ManifestError(root, problems)
    return _finish(rows, out_csv)
