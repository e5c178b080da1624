"""Manifest reading, writing and validation messages."""

import pytest

from data_prep.manifest import COLUMNS, ManifestError, read_manifest, write_manifest

HEADER = ",".join(COLUMNS)


def write(tmp_path, *lines, header=HEADER):
    path = tmp_path / "sub" / "manifest.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def test_round_trip_and_path_resolution(tmp_path):
    rows = [{"image_path": "img/a.png", "patient_id": "P1", "exam_id": "E1", "laterality": "L", "view": "CC",
             "label": "negative", "source": "ffdm"},
            {"image_path": str(tmp_path / "b.dcm"), "patient_id": "P2", "exam_id": "E2", "laterality": "",
             "view": "", "label": "malignant", "source": "ddsm", "interval_cancer": 1}]
    path = write_manifest(rows, tmp_path / "m.csv")
    back = read_manifest(path)
    assert [r["image_path"] for r in back] == ["img/a.png", str(tmp_path / "b.dcm")]
    assert back[0]["path"] == str((tmp_path / "img" / "a.png").resolve())    # relative to the CSV folder
    assert back[1]["path"] == str(tmp_path / "b.dcm")                          # absolute kept
    assert back[0]["interval_cancer"] == 0 and back[1]["interval_cancer"] == 1
    assert back[1]["laterality"] == "" and back[1]["view"] == ""             # filled from tags at build
    assert [r["line"] for r in back] == [2, 3]


def test_lower_case_values_are_normalised(tmp_path):
    row = read_manifest(write(tmp_path, "a.png,P1,E1,l,mlo,recalled_benign,ffdm,"))[0]
    assert (row["laterality"], row["view"], row["interval_cancer"]) == ("L", "MLO", 0)


def test_every_bad_row_is_reported_at_once(tmp_path):
    path = write(tmp_path,
                 "a.png,P1,E1,L,CC,negative,ffdm,0",
                 "b.png,P1,E1,X,CC,benign,ffdm,0",        # line 3: laterality and label
                 "c.png,,E1,L,LMO,negative,ffdm,0",        # line 4: patient_id and view
                 "d.png,P2,E2,R,CC,negative,ffdm,1",       # line 5: interval on a negative
                 "e.png,P3,E3,R,CC,malignant,ffdm,yes",    # line 6: interval value
                 "a.png,P1,E1,L,MLO,negative,ffdm,0",      # line 7: duplicate image
                 "f.png,P4,E1,L,CC,negative,ffdm,0")       # line 8: exam of another patient
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    found = {(p.line, p.column) for p in info.value.problems}
    assert found == {(3, "laterality"), (3, "label"), (4, "patient_id"), (4, "view"), (5, "interval_cancer"),
                     (6, "interval_cancer"), (7, "image_path"), (8, "exam_id")}
    message = str(info.value)
    assert "manifest.csv" in message and "line 3, column 'label': got 'benign', expected one of negative" in message
    assert "already on line 2" in message and "belongs to patient 'P1'" in message


def test_missing_columns_are_named(tmp_path):
    path = write(tmp_path, "a.png,P1,E1,L,CC", header="image_path,patient_id,exam_id,laterality,view")
    with pytest.raises(ManifestError, match=r"column 'label'.*\n.*column 'source'"):
        read_manifest(path)


def test_interval_column_is_optional(tmp_path):
    path = write(tmp_path, "a.png,P1,E1,L,CC,malignant,ffdm", header=",".join(COLUMNS[:-1]))
    assert read_manifest(path)[0]["interval_cancer"] == 0
