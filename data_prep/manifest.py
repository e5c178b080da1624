"""The manifest: the one input format of the dataset build.

A manifest is a CSV file with one row per image and these columns (any order, extra columns are
ignored)::

    image_path, patient_id, exam_id, laterality, view, label, source[, interval_cancer]

* ``image_path``: relative to the CSV file's folder, or absolute.
* ``laterality``: ``L`` or ``R``; ``view``: ``CC`` or ``MLO``. Either may be left empty for DICOM
  files; the build then takes it from the DICOM tags (ImageLaterality/Laterality, ViewPosition or
  ViewCodeSequence).
* ``label``: ``negative``, ``recalled_benign`` or ``malignant`` -- the paper's three classes
  ("negative", "recalled-benign" and "malignant" images, Materials and Methods, Study cohort).
* ``interval_cancer``: optional ``0``/``1`` (empty means 0); only a malignant image can be 1. The
  paper's false-negative analysis used 34 interval-cancer patients.

:func:`read_manifest` checks every row and raises one :class:`ManifestError` that lists every
problem (line, column, value, what was expected), so a user fixes the whole file in one pass.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .fileio import write_csv_atomic

#: The paper's three classes, in label-code order (0, 1, 2).
LABELS = ("negative", "recalled_benign", "malignant")
#: Label name -> integer code stored in the HDF5 ``labels`` dataset.
LABEL_CODES = {name: code for code, name in enumerate(LABELS)}

REQUIRED_COLUMNS = ("image_path", "patient_id", "exam_id", "laterality", "view", "label", "source")
OPTIONAL_COLUMNS = ("interval_cancer",)
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

LATERALITIES = ("L", "R")
VIEWS = ("CC", "MLO")


class DataPrepError(Exception):
    """Base class of the errors this package raises on bad input data."""


@dataclass(frozen=True)
class ManifestProblem:
    """One problem in a manifest: where (line, column), what was found and what was expected."""

    line: int
    column: str
    value: str
    expected: str

    def __str__(self) -> str:
        where = f"line {self.line}, " if self.line else ""  # 0: not a line of a file (e.g. a folder)
        return f"{where}column {self.column!r}: got {self.value!r}, expected {self.expected}"


class ManifestError(DataPrepError):
    """A manifest (or a data set's label file read by an adapter) has bad rows; ``problems`` lists all."""

    def __init__(self, path: str | os.PathLike, problems: list[ManifestProblem]):
        self.path = Path(path)
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{self.path}: {len(problems)} problem(s):\n{lines}")


def require_columns(path, header: list[str], columns) -> None:
    """Raise :class:`ManifestError` naming every one of ``columns`` missing from ``header``."""
    missing = [c for c in columns if c not in header]
    if not missing:
        return
    expected = f"a comma-separated header line naming the columns {','.join(columns)}"
    if not any(header):
        raise ManifestError(path, [ManifestProblem(1, "header", "an empty file", expected)])
    for separator, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars")):
        if len(header) == 1 and separator in header[0]:
            raise ManifestError(path, [ManifestProblem(1, "header", f"columns separated by {name}", expected)])
    raise ManifestError(path, [ManifestProblem(1, c, "", "this column in the header") for c in missing])


def _check_row(raw: dict, line: int, problems: list[ManifestProblem]) -> dict:
    """Validate and normalise one CSV row; append a problem for every bad field."""

    def bad(column: str, expected: str) -> None:
        problems.append(ManifestProblem(line, column, raw.get(column) or "", expected))

    row = {column: (raw.get(column) or "").strip() for column in COLUMNS}
    for column in ("image_path", "patient_id", "exam_id", "source"):
        if not row[column]:
            bad(column, "a non-empty value")
    row["laterality"] = row["laterality"].upper()
    if row["laterality"] not in LATERALITIES + ("",):
        bad("laterality", "L, R, or empty (then taken from the DICOM tags)")
    row["view"] = row["view"].upper()
    if row["view"] not in VIEWS + ("",):
        bad("view", "CC, MLO, or empty (then taken from the DICOM tags)")
    if row["label"] not in LABELS:
        bad("label", "one of " + ", ".join(LABELS))
    if row["interval_cancer"] not in ("", "0", "1"):
        bad("interval_cancer", "0, 1 or empty")
    row["interval_cancer"] = int(row["interval_cancer"] == "1")
    if row["interval_cancer"] and row["label"] in LABELS and row["label"] != "malignant":
        bad("interval_cancer", "0 unless label is malignant (an interval cancer is a cancer)")
    row["line"] = line
    return row


def read_csv_records(path: str | os.PathLike, delimiter: str = ",") -> tuple[list[str], list[tuple[int, dict]]]:
    """Read a CSV table: (header names stripped, [(first line of the record, {column: raw value})]).

    Line numbers count the header as line 1 and point at a record's first line even when a quoted
    value spans several lines (as in CBIS-DDSM's ROI path column), so messages point where to look.
    Undecodable bytes are replaced rather than fatal: a label file with one odd character is still
    readable, and the odd value then fails validation with its line number.
    """
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        records, first_line = [], reader.line_num + 1
        for raw in reader:
            records.append((first_line, {k: v for k, v in raw.items() if k is not None}))
            first_line = reader.line_num + 1
    return header, records


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Read and validate a manifest CSV; return one dict per image.

    Each dict holds the manifest columns as normalised strings (``laterality``/``view`` upper
    case, possibly empty), ``interval_cancer`` as int 0/1, ``line`` (the row's line number in the
    file, header = line 1) and ``path`` (the absolute image path: ``image_path`` resolved against
    the CSV's folder).

    Raises :class:`ManifestError` listing every problem: missing columns, bad values, a duplicate
    image, or an exam id used by two patients. Files are not opened here (a missing image is
    reported by the build's error report, so one bad file never stops a build).
    """
    path = Path(path)
    header, records = read_csv_records(path)
    require_columns(path, header, REQUIRED_COLUMNS)
    problems: list[ManifestProblem] = []
    rows = [_check_row(raw, line, problems) for line, raw in records]

    first_line_of_path: dict[str, int] = {}
    patient_of_exam: dict[str, str] = {}
    for row in rows:
        row["path"] = str((path.parent / row["image_path"]).resolve())
        earlier = first_line_of_path.setdefault(row["path"], row["line"])
        if earlier != row["line"]:
            problems.append(ManifestProblem(row["line"], "image_path", row["image_path"],
                                            f"each image once (already on line {earlier})"))
        if not (row["exam_id"] and row["patient_id"]):  # already reported as empty
            continue
        owner = patient_of_exam.setdefault(row["exam_id"], row["patient_id"])
        if owner != row["patient_id"]:
            problems.append(ManifestProblem(row["line"], "exam_id", row["exam_id"],
                                            f"an exam of one patient (it belongs to patient {owner!r})"))
    if problems:
        raise ManifestError(path, sorted(problems, key=lambda p: p.line))
    return rows


def write_manifest(rows: Iterable[dict], path: str | os.PathLike) -> Path:
    """Write manifest rows (dicts with the manifest columns) to ``path`` atomically.

    ``image_path`` is written as given, so pass paths relative to ``path``'s folder for a portable
    manifest. ``interval_cancer`` defaults to 0.
    """
    lines = ([row[c] for c in REQUIRED_COLUMNS] + [int(row.get("interval_cancer", 0) or 0)] for row in rows)
    return write_csv_atomic(path, COLUMNS, lines)
