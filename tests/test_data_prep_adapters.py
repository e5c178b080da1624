"""Adapters on small fake files that mimic the public data sets' layouts."""

import sys
from pathlib import Path

import numpy as np
import pytest

from data_prep.__main__ import main
from data_prep.adapters import (
    cbis_ddsm_manifest,
    cmmd_manifest,
    folder_manifest,
    inbreast_manifest,
    mini_mias_manifest,
    rsna_manifest,
    vindr_manifest,
)
from data_prep.manifest import DataPrepError, ManifestError, read_manifest

sys.path.insert(0, str(Path(__file__).parent))  # tests/ holds the data_prep_fixtures helpers
from data_prep_fixtures import write_dicom

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
    for number in range(1, 6):
        touch(tmp_path / f"mdb{number:03d}.pgm")
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


VINDR_HEADER = "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,breast_density,split"


def test_vindr(tmp_path, capsys):
    root = tmp_path / "vindr"
    lines = [("s1", "a", "L", "CC", "BI-RADS 1"), ("s1", "b", "R", "MLO", "BI-RADS 2"), ("s2", "c", "L", "CC", "BI-RADS 3"),
             ("s3", "d", "R", "MLO", "BI-RADS 4"), ("s3", "e", "R", "CC", "BI-RADS 5")]
    for study, image, *_ in lines:
        touch(root / "images" / study / f"{image}.dicom")
    csv = root / "breast-level_annotations.csv"
    csv.write_text(VINDR_HEADER + "\n" + "".join(f"{s},ser,{i},{side},{view},3518,2800,{b},DENSITY C,training\n"
                                                 for s, i, side, view, b in lines))
    rows = vindr_manifest(csv, out_csv=tmp_path / "vindr.csv")
    got = {Path(r["image_path"]).stem: (r["patient_id"], r["exam_id"], r["laterality"], r["view"], r["label"])
           for r in rows}
    assert got == {"a": ("s1", "s1", "L", "CC", "negative"), "b": ("s1", "s1", "R", "MLO", "negative"),
                   "c": ("s2", "s2", "L", "CC", "recalled_benign"), "d": ("s3", "s3", "R", "MLO", "malignant"),
                   "e": ("s3", "s3", "R", "CC", "malignant")}
    written = read_manifest(tmp_path / "vindr.csv")
    assert [r["path"] for r in written] == [str((root / "images" / s / f"{i}.dicom").resolve()) for s, i, *_ in lines]
    assert {r["source"] for r in written} == {"vindr-mammo"}

    bad = root / "bad.csv"
    bad.write_text(VINDR_HEADER + "\ns1,x,a,L,CC,3518,2800,BI-RADS 0,D,test\ns9,x,zz,B,XCC,1,1,BI-RADS 2,D,test\n")
    with pytest.raises(ManifestError) as info:
        vindr_manifest(bad)
    assert [(p.line, p.column, p.value) for p in info.value.problems] == [
        (2, "breast_birads", "BI-RADS 0"), (3, "laterality", "B"), (3, "view_position", "XCC"), (3, "image_id", "zz")]
    (root / "missing.csv").write_text(VINDR_HEADER + "\ns1,x,a,L,CC,1,1,BI-RADS 1,D,t\ns9,x,zz,L,CC,1,1,BI-RADS 1,D,t\n")
    capsys.readouterr()
    assert [Path(r["image_path"]).stem for r in vindr_manifest(root / "missing.csv", skip_missing=True)] == ["a"]
    assert "1 images left out of the manifest (image file missing (--skip-missing): 1)" in capsys.readouterr().err


RSNA_HEADER = ("site_id,patient_id,image_id,laterality,view,age,cancer,biopsy,invasive,BIRADS,implant,density,"
               "machine_id,difficult_negative_case")


def test_rsna(tmp_path, capsys):
    root = tmp_path / "rsna"
    #           patient, image, side, view, cancer, biopsy, BIRADS -> expected class (None: left out)
    cases = [("10006", "1", "L", "CC", "0", "0", "", "negative"),
             ("10006", "2", "L", "MLO", "0", "0", "0.0", "recalled_benign"),     # BI-RADS 0: called back
             ("10006", "3", "R", "CC", "1", "1", "0", "malignant"),
             ("10007", "4", "R", "MLO", "0", "1", "", "recalled_benign"),         # biopsied, benign
             ("10007", "5", "L", "AT", "1", "1", "", None),                       # not a screening view
             ("10007", "6", "R", "CC", "0", "0", "1", "negative"),
             ("10007", "7", "L", "CC", "0.0", "0.0", "2.0", "negative")]
    text = RSNA_HEADER + "\n"
    for patient, image, side, view, cancer, biopsy, birads, label in cases:
        if label:
            touch(root / "train_images" / patient / f"{image}.dcm")
        text += f"2,{patient},{image},{side},{view},61.0,{cancer},{biopsy},0,{birads},0,,29,False\n"
    (root / "train.csv").write_text(text)
    rows = rsna_manifest(root / "train.csv", out_csv=tmp_path / "rsna.csv")
    assert "train.csv: 1 images left out of the manifest (view AT: 1)" in capsys.readouterr().err
    got = {Path(r["image_path"]).stem: (r["patient_id"], r["laterality"], r["view"], r["label"]) for r in rows}
    assert got == {image: (patient, side, view, label)
                   for patient, image, side, view, _, _, _, label in cases if label}
    assert len(read_manifest(tmp_path / "rsna.csv")) == 6

    bad = ["2,10008,8,L,CC,50,2,0,0,,0,,1,False", "2,10008,9,B,XX,50,0,0,0,5,0,,1,False",
           "2,10008,10,R,CC,50,0,,0,,0,,1,False"]
    (root / "bad.csv").write_text(RSNA_HEADER + "\n" + "\n".join(bad) + "\n")
    with pytest.raises(ManifestError) as info:
        rsna_manifest(root / "bad.csv", root / "train_images")
    assert [(p.line, p.column) for p in info.value.problems] == [
        (2, "cancer"), (2, "image_id"), (3, "BIRADS"), (3, "laterality"), (3, "view"), (4, "biopsy"), (4, "image_id")]
    assert main(["adapt", "rsna", str(root / "train.csv"), "--out", str(tmp_path / "cli.csv")]) == 0
    assert (tmp_path / "cli.csv").read_bytes() == (tmp_path / "rsna.csv").read_bytes()


CC = [{"CodeValue": "399162004", "CodingSchemeDesignator": "SCT"}]
MLO = [{"CodeValue": "399368009", "CodingSchemeDesignator": "SCT"}]


def cmmd_tree(root):
    """TCIA layout: CMMD/<ID1>/<date>-NA-NA-N/1.000000-NA-N/1-k.dcm; the breast is known only from the tags."""
    pixels = np.zeros((8, 8), np.uint16)
    for patient, images in (("D1-0001", [("L", CC), ("L", MLO)]), ("D1-0002", [("L", CC), ("L", MLO), ("R", CC), ("R", MLO)])):
        folder = root / "CMMD" / patient / "07-18-2010-NA-NA-79377" / "1.000000-NA-70244"
        folder.mkdir(parents=True)
        for k, (side, view) in enumerate(images, start=1):
            write_dicom(folder / f"1-{k}.dcm", pixels, ImageLaterality=side, ViewCodeSequence=view)


CMMD_TABLE = [["ID1", "LeftRight", "Age", "number", "abnormality", "classification", "subtype"],
              ["D1-0001", "L", "44", "2", "calcification", "Malignant", "Luminal A"],
              ["D1-0002", "R", "51", "2", "mass", "Benign", ""]]


def check_cmmd_rows(rows):
    got = sorted((r["patient_id"], Path(r["image_path"]).name, r["laterality"], r["view"], r["label"]) for r in rows)
    assert got == [("D1-0001", "1-1.dcm", "L", "CC", "malignant"), ("D1-0001", "1-2.dcm", "L", "MLO", "malignant"),
                   ("D1-0002", "1-3.dcm", "R", "CC", "recalled_benign"),
                   ("D1-0002", "1-4.dcm", "R", "MLO", "recalled_benign")]   # D1-0002's left breast is not listed


def test_cmmd_from_csv_export(tmp_path, capsys):
    cmmd_tree(tmp_path / "download")
    (tmp_path / "clinical.csv").write_text("\n".join(",".join(row) for row in CMMD_TABLE) + "\n")
    check_cmmd_rows(cmmd_manifest(tmp_path / "clinical.csv", tmp_path / "download", tmp_path / "cmmd.csv"))
    assert "2 images left out of the manifest (image of a breast the table does not list: 2)" in capsys.readouterr().err
    assert len(read_manifest(tmp_path / "cmmd.csv")) == 4
    write_dicom(tmp_path / "download" / "CMMD" / "D1-0001" / "extra.dcm", np.zeros((8, 8), np.uint16))  # no laterality
    (tmp_path / "bad.csv").write_text("ID1,LeftRight,classification\nD1-0001,L,Malignant\nD1-0009,R,Benign\n"
                                      "D1-0002,X,Unknown\n")
    with pytest.raises(ManifestError) as info:
        cmmd_manifest(tmp_path / "bad.csv", tmp_path / "download")
    problems = [(p.line, p.column, p.value) for p in info.value.problems]
    assert problems == [(2, "ID1", "D1-0001"), (3, "ID1", "D1-0009"), (4, "classification", "Unknown"),
                        (4, "LeftRight", "X")]
    assert "extra.dcm" in info.value.problems[0].expected


def test_cmmd_from_xlsx(tmp_path):
    openpyxl = pytest.importorskip("openpyxl", reason="openpyxl is not installed (pip install openpyxl): "
                                   "the .xlsx path of the CMMD adapter is not tested")
    cmmd_tree(tmp_path / "download")
    book = openpyxl.Workbook()
    for row in CMMD_TABLE:
        book.active.append([int(v) if v.isdigit() else v for v in row])    # numbers as Excel stores them
    book.save(tmp_path / "CMMD_clinicaldata_revision.xlsx")
    check_cmmd_rows(cmmd_manifest(tmp_path / "CMMD_clinicaldata_revision.xlsx", tmp_path / "download"))
    (tmp_path / "broken.xlsx").write_bytes(b"not a zip")
    with pytest.raises(DataPrepError, match="broken.xlsx: not a readable .xlsx file"):
        cmmd_manifest(tmp_path / "broken.xlsx", tmp_path / "download")


def test_cmmd_xlsx_without_openpyxl_names_the_pip_command(tmp_path, monkeypatch):
    cmmd_tree(tmp_path / "download")
    (tmp_path / "table.xlsx").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "openpyxl", None)       # import openpyxl now raises ImportError
    with pytest.raises(DataPrepError, match=r"table.xlsx: reading .xlsx needs openpyxl \(`pip install openpyxl`\)"):
        cmmd_manifest(tmp_path / "table.xlsx", tmp_path / "download")
