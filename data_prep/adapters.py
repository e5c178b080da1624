"""Adapters: build a manifest from public data sets' own layouts and label files.

Each adapter reads the data set's label file, finds the image files, maps the labels onto the
paper's three classes (the mapping is a module-level dict, documented in the README section) and
returns manifest rows; with ``out_csv`` it also writes them (paths relative to the CSV's folder).
Bad label rows or unresolvable files are collected and raised together as a
:class:`~data_prep.manifest.ManifestError` naming the label file, line, column and value.

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
import re
from pathlib import Path

from .manifest import (
    LABELS,
    DataPrepError,
    ManifestError,
    ManifestProblem,
    read_csv_records,
    require_columns,
    write_manifest,
)
from .readers import ImageReadError, dicom_laterality, dicom_view, open_dicom

#: CBIS-DDSM pathology -> class. BENIGN_WITHOUT_CALLBACK findings were benign-looking enough not to
#: be recalled at all, so their images count as negative.
CBIS_PATHOLOGY = {"MALIGNANT": "malignant", "BENIGN": "recalled_benign", "BENIGN_WITHOUT_CALLBACK": "negative"}
#: mini-MIAS severity (NORM has none) -> class.
MIAS_SEVERITY = {"NORM": "negative", "B": "recalled_benign", "M": "malignant"}
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


def _finish(rows: list[dict], out_csv) -> list[dict]:
    """Sort rows by path; if ``out_csv`` is given, write them with paths relative to its folder."""
    rows.sort(key=lambda r: r["image_path"])
    if out_csv is not None:
        target = Path(out_csv).resolve()
        clash = next((r["image_path"] for r in rows if Path(r["image_path"]).resolve() == target), None)
        if clash is not None:
            raise DataPrepError(f"{out_csv}: is one of the data set's images; the manifest would overwrite it "
                                "(expected another path)")
        folder = Path(out_csv).resolve().parent
        relative = [{**r, "image_path": Path(os.path.relpath(r["image_path"], folder)).as_posix()} for r in rows]
        write_manifest(relative, out_csv)
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


def cbis_ddsm_manifest(root, description_csvs, out_csv=None, skip_missing: bool = False) -> list[dict]:
    """Manifest rows from CBIS-DDSM's ``{mass,calc}_case_description_{train,test}_set.csv`` files.

    One row per full mammogram (patient, side, view). An image with several abnormalities takes the
    most severe class (:data:`CBIS_PATHOLOGY`: malignant > recalled_benign > negative); an image
    listed in both the mass and the calc files appears once. ``exam_id`` is the patient id (CBIS-DDSM
    has one screening exam per patient). Unresolvable images raise, unless ``skip_missing``.
    """
    root = Path(root)
    tables = [Path(description_csvs)] if isinstance(description_csvs, (str, os.PathLike)) else list(map(Path, description_csvs))
    _check_inputs(tables, [root], out_csv)
    images: dict[tuple, dict] = {}
    problems = []
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
                    continue
                images[key] = _row(path, row["patient_id"], row["patient_id"], side, view, label, "cbis-ddsm")
            elif SEVERITY[label] > SEVERITY[known["label"]]:
                known["label"] = label
        if problems:
            raise ManifestError(table, problems)
    return _finish(list(images.values()), out_csv)


# ----------------------------------------------------------------------------------------------
# mini-MIAS
# ----------------------------------------------------------------------------------------------

def mini_mias_manifest(info_txt, image_dir=None, out_csv=None) -> list[dict]:
    """Manifest rows from mini-MIAS's ``Info.txt`` (``REFNUM BG CLASS SEVERITY X Y RADIUS``).

    Films come in pairs per patient: even reference numbers are left breasts, odd ones right
    (mdb001 R and mdb002 L are patient 1). All are MLO views. NORM is negative, severity B
    recalled-benign and M malignant (:data:`MIAS_SEVERITY`); a reference listed twice (two
    abnormalities) takes the most severe. Lines not starting with ``mdbNNN`` (notes) are ignored.
    """
    info_txt = Path(info_txt)
    image_dir = Path(image_dir) if image_dir else info_txt.parent
    _check_inputs([info_txt], [image_dir], out_csv)
    labels: dict[str, str] = {}
    problems = []
    for line, text in enumerate(info_txt.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        tokens = text.split()
        if not tokens or not re.fullmatch(r"mdb\d{3}", tokens[0]):
            continue
        if len(tokens) < 3:
            problems.append(ManifestProblem(line, "CLASS", text.strip(), "REFNUM BG CLASS [SEVERITY X Y RADIUS]"))
            continue
        key = "NORM" if tokens[2] == "NORM" else (tokens[3] if len(tokens) > 3 else "")
        label = MIAS_SEVERITY.get(key)
        if label is None:
            problems.append(ManifestProblem(line, "SEVERITY", key, "B or M for an abnormality (CLASS other than NORM)"))
            continue
        if SEVERITY[label] >= SEVERITY.get(labels.get(tokens[0], ""), -1):
            labels[tokens[0]] = label
    if problems:
        raise ManifestError(info_txt, problems)
    rows = []
    for ref, label in labels.items():
        number = int(ref[3:])
        patient = f"mias_{(number + 1) // 2:03d}"
        rows.append(_row(image_dir / f"{ref}.pgm", patient, patient, "L" if number % 2 == 0 else "R", "MLO", label,
                         "mini-mias"))
    return _finish(rows, out_csv)


# ----------------------------------------------------------------------------------------------
# INbreast
# ----------------------------------------------------------------------------------------------

def inbreast_manifest(csv_path, dicom_dir, out_csv=None, mapping: dict | None = None) -> list[dict]:
    """Manifest rows from INbreast's ``INbreast.csv`` (``;``-separated) and its ``AllDICOMs`` folder.

    Columns used: ``Laterality``, ``View``, ``File Name``, ``Bi-Rads``. Each file is
    ``{File Name}_{patient hash}_MG_{L|R}_{CC|ML}_ANON.dcm``; the patient is the hash (the CSV's
    ``Patient ID`` column is anonymised away). ``View`` MLO (the files say ML) is kept as MLO.
    Labels from BI-RADS through ``mapping`` (default :data:`INBREAST_BIRADS`).
    """
    csv_path, dicom_dir = Path(csv_path), Path(dicom_dir)
    _check_inputs([csv_path], [dicom_dir], out_csv)
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
    return _finish(rows, out_csv)


# ----------------------------------------------------------------------------------------------
# VinDr-Mammo
# ----------------------------------------------------------------------------------------------

def vindr_manifest(annotations_csv, image_dir=None, out_csv=None, skip_missing: bool = False) -> list[dict]:
    """Manifest rows from VinDr-Mammo's ``breast-level_annotations.csv`` and its ``images`` folder.

    Columns used: ``study_id``, ``image_id``, ``laterality`` (L/R), ``view_position`` (CC/MLO),
    ``breast_birads`` (``BI-RADS 1`` ... ``BI-RADS 5``, mapped by :data:`VINDR_BIRADS`). The image
    is ``{image_dir}/{study_id}/{image_id}.dicom`` (``image_dir`` defaults to ``images`` next to
    the CSV). VinDr-Mammo gives no patient id, so the study is the patient and the exam. The set's
    own ``split`` column is not used (the study makes its own patient-level splits). Missing
    images are errors, unless ``skip_missing``.
    """
    annotations_csv = Path(annotations_csv)
    image_dir = Path(image_dir) if image_dir else annotations_csv.parent / "images"
    _check_inputs([annotations_csv], [image_dir], out_csv)
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
    return _finish(rows, out_csv)


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
    rows = []
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
    if problems:
        raise ManifestError(clinical_table, sorted(problems, key=lambda p: p.line))
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
    rows, problems = [], []
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
        if bad or not (screening_view and found):
            continue
        label = "malignant" if cancer else "recalled_benign" if biopsy or birads == 0 else "negative"
        rows.append(_row(path, row["patient_id"], row["patient_id"], side, view, label, "rsna"))
    if problems:
        raise ManifestError(train_csv, problems)
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
