"""Adapters on small fake files that mimic the public data sets' layouts."""

import pytest

from data_prep.adapters import (
    cbis_ddsm_manifest,
    folder_manifest,
    inbreast_manifest,
    mini_mias_manifest,
)
from data_prep.manifest import ManifestError, read_manifest

MASS_HEADER = ("patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,"
               "mass shape,mass margins,assessment,pathology,subtlety,image file path,cropped image file path,"
               "ROI mask file path")
CALC_HEADER = ("patient_id,breast density,left or right breast,image view,abnormality id,abnormality type,"
               "calc type,calc distribution,assessment,pathology,subtlety,image file path,cropped image file path,"
               "ROI mask file path")


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def cbis_tree(root):
    """Download layout: <case>/<date>-DDSM-N/1.000000-full mammogram images-N/1-1.dcm, ROI in <case>_1."""
    full = {}
    for case in ("Mass-Training_P_00001_LEFT_CC", "Calc-Training_P_00001_LEFT_CC", "Mass-Test_P_00002_RIGHT_MLO",
                 "Calc-Test_P_00003_LEFT_MLO"):
        full[case] = touch(root / "CBIS-DDSM" / case / "07-20-2016-DDSM-74994" / "1.000000-full mammogram images-24515" / "1-1.dcm")
        touch(root / "CBIS-DDSM" / f"{case}_1" / "08-29-2017-DDSM-96004" / "1.000000-ROI mask images-14184" / "1-1.dcm")
    return full


def csv_line(pid, side, view, pathology, case):
    # The CSV's path does not match the download (UIDs instead of dates); only the case folder does.
    return (f"{pid},3,{side},{view},1,mass,OVAL,CIRCUMSCRIBED,4,{pathology},4,"
            f"{case}/1.3.6.1.4.1.9590.100.1.2.4221/1.3.6.1.4.1.9590.100.1.2.3423/000000.dcm,x/1.dcm,\"x/2.dcm\n\"")


def test_cbis_ddsm(tmp_path):
    full = cbis_tree(tmp_path)
    mass = tmp_path / "mass_case_description_train_set.csv"
    mass.write_text("\n".join([MASS_HEADER,
                               csv_line("P_00001", "LEFT", "CC", "BENIGN", "Mass-Training_P_00001_LEFT_CC"),
                               csv_line("P_00002", "RIGHT", "MLO", "BENIGN_WITHOUT_CALLBACK", "Mass-Test_P_00002_RIGHT_MLO")]) + "\n")
    calc = tmp_path / "calc_case_description_train_set.csv"
    calc.write_text("\n".join([CALC_HEADER,
                               csv_line("P_00001", "LEFT", "CC", "MALIGNANT", "Calc-Training_P_00001_LEFT_CC"),
                               csv_line("P_00003", "LEFT", "MLO", "BENIGN", "Calc-Test_P_00003_LEFT_MLO")]) + "\n")
    out = tmp_path / "manifests" / "cbis.csv"
    rows = cbis_ddsm_manifest(tmp_path, [mass, calc], out)
    by_patient = {r["patient_id"]: r for r in rows}
    assert len(rows) == 3                                           # P_00001 LEFT CC listed in both files once
    assert by_patient["P_00001"]["label"] == "malignant"            # worst abnormality wins
    assert by_patient["P_00002"]["label"] == "negative"             # BENIGN_WITHOUT_CALLBACK
    assert by_patient["P_00003"]["label"] == "recalled_benign"
    assert by_patient["P_00002"]["image_path"] == str(full["Mass-Test_P_00002_RIGHT_MLO"])
    assert (by_patient["P_00002"]["laterality"], by_patient["P_00002"]["view"]) == ("R", "MLO")
    written = read_manifest(out)                                    # relative paths that resolve
    assert {r["path"] for r in written} == {str(p.resolve()) for p in (full["Mass-Training_P_00001_LEFT_CC"],
                                                                       full["Mass-Test_P_00002_RIGHT_MLO"],
                                                                       full["Calc-Test_P_00003_LEFT_MLO"])}


def test_cbis_ddsm_missing_and_bad_values(tmp_path):
    cbis_tree(tmp_path)
    table = tmp_path / "mass.csv"
    table.write_text("\n".join([MASS_HEADER,
                                csv_line("P_00009", "LEFT", "CC", "MALIGNANT", "Mass-Training_P_00009_LEFT_CC"),
                                csv_line("P_00002", "RIGHT", "MLO", "UNPROVEN", "Mass-Test_P_00002_RIGHT_MLO")]) + "\n")
    with pytest.raises(ManifestError) as info:
        cbis_ddsm_manifest(tmp_path, table)
    # Each record spans two lines (the ROI path cell ends with a newline, as in the real CSVs).
    assert {(p.line, p.column) for p in info.value.problems} == {(2, "image file path"), (4, "pathology")}
    table.write_text(MASS_HEADER + "\n" + csv_line("P_00009", "LEFT", "CC", "MALIGNANT", "Mass-Training_P_00009_LEFT_CC") + "\n")
    assert cbis_ddsm_manifest(tmp_path, table, skip_missing=True) == []


def test_mini_mias(tmp_path):
    (tmp_path / "Info.txt").write_text(
        "MIAS database, reference list\n"
        "mdb001 G CIRC B 535 425 197\n"
        "mdb002 G CIRC B 522 280 69\n"
        "mdb003 D NORM \n"
        "mdb005 F CIRC B 477 133 30\n"
        "mdb005 F CIRC M 500 168 26\n"
        "mdb004 D NORM\n")
    rows = {r["image_path"].split("/")[-1]: r for r in mini_mias_manifest(tmp_path / "Info.txt")}
    assert set(rows) == {"mdb001.pgm", "mdb002.pgm", "mdb003.pgm", "mdb004.pgm", "mdb005.pgm"}
    assert (rows["mdb001.pgm"]["laterality"], rows["mdb002.pgm"]["laterality"]) == ("R", "L")   # even = left
    assert rows["mdb001.pgm"]["patient_id"] == rows["mdb002.pgm"]["patient_id"] == "mias_001"
    assert rows["mdb003.pgm"]["patient_id"] == "mias_002"
    assert rows["mdb005.pgm"]["label"] == "malignant"               # listed twice: worst wins
    assert rows["mdb004.pgm"]["label"] == "negative" and rows["mdb001.pgm"]["label"] == "recalled_benign"
    assert {r["view"] for r in rows.values()} == {"MLO"}
    (tmp_path / "Info.txt").write_text("mdb006 F CALC X 1 2 3\n")
    with pytest.raises(ManifestError, match="line 1, column 'SEVERITY'"):
        mini_mias_manifest(tmp_path / "Info.txt")


def test_inbreast(tmp_path):
    dicoms = tmp_path / "AllDICOMs"
    names = {"20586908": "6c613a14b80a8591_MG_R_CC", "20586934": "6c613a14b80a8591_MG_R_ML",
             "22678622": "61b13c59bcba149e_MG_L_CC", "22678646": "61b13c59bcba149e_MG_L_ML",
             "24055274": "c1d8e4d2ef3b1b6a_MG_L_CC"}
    for number, rest in names.items():
        touch(dicoms / f"{number}_{rest}_ANON.dcm")
    (tmp_path / "INbreast.csv").write_text(
        "Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads\n"
        "removed;removed;R;CC;201001;20586908;4;1\n"
        "removed;removed;R;MLO;201001;20586934;4;2\n"
        "removed;removed;L;CC;201001;22678622;2;3\n"
        "removed;removed;L;MLO;201001;22678646;2;4a\n"
        "removed;removed;L;CC;201001;24055274;1;6\n"
        ";;;;;;;\n")
    rows = {r["image_path"].split("/")[-1][:8]: r for r in inbreast_manifest(tmp_path / "INbreast.csv", dicoms)}
    assert [rows[k]["label"] for k in sorted(rows)] == ["negative", "negative", "recalled_benign", "malignant",
                                                       "malignant"]
    assert rows["20586934"]["patient_id"] == "6c613a14b80a8591" and rows["20586934"]["view"] == "MLO"
    (tmp_path / "bad.csv").write_text("Laterality;View;File Name;Bi-Rads\nR;CC;20586908;0\nX;CC;99999999;1\n")
    with pytest.raises(ManifestError) as info:
        inbreast_manifest(tmp_path / "bad.csv", dicoms)
    assert {(p.line, p.column) for p in info.value.problems} == {(2, "Bi-Rads"), (3, "Laterality"), (3, "File Name")}


def test_folder_per_class(tmp_path):
    for path in ("Normal/p1/p1_L_CC.png", "Normal/p1/p1_R_CC.png", "benign/p2/case-RIGHT-mlo.dcm",
                 "Cancer/p3/LMLO.tif", "cancer/loose_image.pgm", "cancer/notes.txt"):
        touch(tmp_path / "set" / path)
    rows = folder_manifest(tmp_path / "set", tmp_path / "set.csv")
    got = {r["image_path"].split("/set/")[-1]: (r["patient_id"], r["label"], r["laterality"], r["view"]) for r in rows}
    assert got == {"Normal/p1/p1_L_CC.png": ("p1", "negative", "L", "CC"),
                   "Normal/p1/p1_R_CC.png": ("p1", "negative", "R", "CC"),
                   "benign/p2/case-RIGHT-mlo.dcm": ("p2", "recalled_benign", "R", "MLO"),
                   "Cancer/p3/LMLO.tif": ("p3", "malignant", "L", "MLO"),
                   "cancer/loose_image.pgm": ("loose_image", "malignant", "", "")}
    assert {r["source"] for r in rows} == {"set"} and len(read_manifest(tmp_path / "set.csv")) == 5
    touch(tmp_path / "set" / "unsure" / "x.png")
    with pytest.raises(ManifestError, match="'unsure'"):
        folder_manifest(tmp_path / "set")
