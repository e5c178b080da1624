"""Findings: each public set's annotations, written in its own file format, land on the right stored
pixels after the crop, flip and resize; the findings table format, its reader and the build's storage."""

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep import (Finding, ManifestError, build_dataset, findings_path, load_dataset, load_findings,
                       read_findings, to_stored_findings, write_findings)
from data_prep.__main__ import main
from data_prep.manifest import write_manifest

sys.path.insert(0, str(Path(__file__).parent))  # tests/ holds the data_prep_fixtures helpers
from data_prep_fixtures import breast_image, write_dicom

SIZE = 64
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CC = [{"CodeValue": "399162004", "CodingSchemeDesignator": "SCT"}]


def film_with_lesion(rows: int, cols: int, chest_wall: str, centre: tuple[int, int], radius: int):
    """A breast (level 0.5) against the chest-wall edge with a bright disc (1.0): (image, disc mask)."""
    image = breast_image(rows, cols, chest_wall, level=0.5)
    rr, cc = np.mgrid[0:rows, 0:cols]
    disc = np.hypot(rr - centre[0], cc - centre[1]) <= radius
    assert (image[disc] > 0).all()                       # the lesion lies in the breast
    image[disc] = 1.0
    return image, disc


def build(manifest: Path, tmp_path: Path) -> tuple[dict, list]:
    """Build without equalization (the stored pixels are the resized ones) and load images and findings."""
    out = build_dataset(manifest, tmp_path / "built.h5", size=SIZE, equalize="none", workers=1, progress=False)
    return load_dataset(out), load_findings(out)


def assert_lands_on_the_lesion(stored_image: np.ndarray, finding, tolerance_px: float = 0.0) -> None:
    """The stored lesion (the bright disc after crop, flip and resize) lies in the finding's stored pixels."""
    lesion = stored_image >= 200
    inside = finding.mask(SIZE, tolerance_px)
    centre = np.argwhere(lesion).mean(axis=0)
    assert lesion.sum() > 4 and inside[tuple(np.rint(centre).astype(int))], (centre, finding)
    overlap = (lesion & inside).sum() / (lesion | inside).sum()
    assert overlap > 0.5, (overlap, finding)


# ------------------------------------------------------------------------------------------------
# CBIS-DDSM: ROI mask DICOMs
# ------------------------------------------------------------------------------------------------

CBIS_HEADER = ("patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,"
               "mass shape,mass margins,assessment,pathology,subtlety,image file path,cropped image file path,"
               "ROI mask file path")


def test_cbis_ddsm_roi_mask_lands_on_the_lesion(tmp_path):
    root = tmp_path / "download"
    case = "Mass-Training_P_00007_RIGHT_CC"
    image, disc = film_with_lesion(150, 110, "right", (70, 85), 8)   # a right breast: stored mirrored
    full = root / "CBIS-DDSM" / case / "07-20-2016-DDSM-74994" / "1.000000-full mammogram images-24515" / "1-1.dcm"
    full.parent.mkdir(parents=True)
    write_dicom(full, np.rint(image * 65535).astype(np.uint16), bits_stored=16, SOPClassUID=SECONDARY_CAPTURE)
    roi = root / "CBIS-DDSM" / f"{case}_1" / "08-29-2017-DDSM-96004" / "1.000000-ROI mask images-14184"
    roi.mkdir(parents=True)
    # The lesion crop and the mask share the folder, as in the download; only the mask has the film's size.
    write_dicom(roi / "1-1.dcm", np.full((20, 20), 200, np.uint8), bits_stored=8, SOPClassUID=SECONDARY_CAPTURE)
    write_dicom(roi / "1-2.dcm", (disc * 255).astype(np.uint8), bits_stored=8, SOPClassUID=SECONDARY_CAPTURE)
    # The CSV's paths carry UIDs instead of the download's folder names; only the first part matches.
    uid = "1.3.6.1.4.1.9590.100.1.2.4221/1.3.6.1.4.1.9590.100.1.2.3423"
    (tmp_path / "mass.csv").write_text(
        CBIS_HEADER + "\n" + f"P_00007,2,RIGHT,CC,1,mass,OVAL,CIRCUMSCRIBED,4,MALIGNANT,4,{case}/{uid}/000000.dcm,"
        f"{case}_1/{uid}/000000.dcm,\"{case}_1/{uid}/000001.dcm\n\"\n")
    manifest = tmp_path / "cbis.csv"
    assert main(["adapt", "cbis-ddsm", str(root), str(tmp_path / "mass.csv"), "--out", str(manifest)]) == 0
    found = read_findings(manifest)
    (path, [finding]), = found.items()
    assert (finding.finding, finding.role, finding.shape) == ("mass", "malignant", "outline")
    assert abs(finding.centre[0] - 70) < 1.5 and abs(finding.centre[1] - 85) < 1.5
    assert abs(finding.area - disc.sum()) < 0.2 * disc.sum()
    data, stored = build(manifest, tmp_path)
    assert data["flipped"][0] == 1 and data["attrs"]["n_findings"] == 1
    assert_lands_on_the_lesion(data["images"][0], stored[0][0])


# ------------------------------------------------------------------------------------------------
# mini-MIAS: X Y RADIUS from the bottom-left corner
# ------------------------------------------------------------------------------------------------

def test_mini_mias_circle_from_the_bottom_left_origin_lands_on_the_lesion(tmp_path):
    # mdb001 is a right breast (odd number), mdb002 a left one; 8-bit PGM as mini-MIAS ships them.
    right, right_disc = film_with_lesion(128, 128, "right", (40, 90), 6)
    left, _ = film_with_lesion(128, 128, "left", (90, 30), 6)
    for name, image in (("mdb001", right), ("mdb002", left)):
        Image.fromarray(np.rint(image * 255).astype(np.uint8)).save(tmp_path / f"{name}.pgm")
    # Y counts up from the bottom row: row 40 of 128 is Y = 127 - 40 = 87.
    (tmp_path / "Info.txt").write_text("mdb001 G CIRC M 90 87 6\nmdb002 F SPIC B 30 37 6\n")
    manifest = tmp_path / "mias.csv"
    assert main(["adapt", "mini-mias", str(tmp_path / "Info.txt"), "--out", str(manifest)]) == 0
    found = read_findings(manifest)
    [first] = found["mdb001.pgm"]
    assert (first.finding, first.role, first.shape, first.rows, first.cols, first.radius_px) == (
        "CIRC", "malignant", "circle", (40.0,), (90.0,), 6.0)
    assert found["mdb002.pgm"][0].rows == (90.0,) and found["mdb002.pgm"][0].role == "recalled_benign"
    data, stored = build(manifest, tmp_path)
    index = list(data["image_path"]).index("mdb001.pgm")
    assert data["flipped"][index] == 1
    assert_lands_on_the_lesion(data["images"][index], stored[index][0], tolerance_px=1.0)
    other = 1 - index
    assert data["flipped"][other] == 0
    assert_lands_on_the_lesion(data["images"][other], stored[other][0], tolerance_px=1.0)


# ------------------------------------------------------------------------------------------------
# INbreast: XML ROI point lists (an OsiriX plist)
# ------------------------------------------------------------------------------------------------

def inbreast_xml(rois: list[tuple[str, list[tuple[float, float]]]]) -> str:
    """An INbreast AllXML file: ROIs with their Point_px lists of "(x, y)" strings."""
    parts = []
    for index, (name, points) in enumerate(rois):
        pixels = "".join(f"\t\t\t\t\t\t<string>({x:.2f}, {y:.2f})</string>\n" for x, y in points)
        parts.append(
            "\t\t\t\t<dict>\n\t\t\t\t\t<key>Area</key>\n\t\t\t\t\t<real>0</real>\n"
            f"\t\t\t\t\t<key>IndexInImage</key>\n\t\t\t\t\t<integer>{index}</integer>\n"
            f"\t\t\t\t\t<key>Name</key>\n\t\t\t\t\t<string>{name}</string>\n"
            f"\t\t\t\t\t<key>NumberOfPoints</key>\n\t\t\t\t\t<integer>{len(points)}</integer>\n"
            f"\t\t\t\t\t<key>Point_px</key>\n\t\t\t\t\t<array>\n{pixels}\t\t\t\t\t</array>\n"
            "\t\t\t\t\t<key>Type</key>\n\t\t\t\t\t<integer>15</integer>\n\t\t\t\t</dict>\n")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<!DOCTYPE plist PUBLIC "-//Apple Computer//DTD PLIST 1.0//EN" '
            '"http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n<plist version="1.0">\n<dict>\n'
            "\t<key>Images</key>\n\t<array>\n\t\t<dict>\n\t\t\t<key>ImageIndex</key>\n\t\t\t<integer>0</integer>\n"
            f"\t\t\t<key>NumberOfROIs</key>\n\t\t\t<integer>{len(rois)}</integer>\n"
            "\t\t\t<key>ROIs</key>\n\t\t\t<array>\n" + "".join(parts) +
            "\t\t\t</array>\n\t\t</dict>\n\t</array>\n</dict>\n</plist>\n")


def test_inbreast_xml_outline_lands_on_the_lesion(tmp_path):
    dicoms = tmp_path / "AllDICOMs"
    dicoms.mkdir()
    image, _ = film_with_lesion(140, 100, "right", (50, 70), 7)
    write_dicom(dicoms / "22678622_61b13c59bcba149e_MG_R_CC_ANON.dcm", np.rint(image * 4095).astype(np.uint16),
                ImageLaterality="R", ViewCodeSequence=CC, WindowCenter=2048, WindowWidth=4096)
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    outline = [(70 + 7 * np.cos(a), 50 + 7 * np.sin(a)) for a in angles]      # (x, y): x the column
    (tmp_path / "AllXML").mkdir()
    (tmp_path / "AllXML" / "22678622.xml").write_text(inbreast_xml([("Mass", outline), ("Calcification", [(60.0, 80.0)])]))
    (tmp_path / "INbreast.csv").write_text(
        "Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads\n"
        "removed;removed;R;CC;201001;22678622;2;4c\n")
    manifest = tmp_path / "inbreast.csv"
    assert main(["adapt", "inbreast", str(tmp_path / "INbreast.csv"), str(dicoms), "--out", str(manifest)]) == 0
    [(path, findings)] = read_findings(manifest).items()
    mass, calcification = findings
    assert (mass.finding, mass.role, mass.shape, len(mass.rows)) == ("Mass", "malignant", "outline", 24)
    assert (calcification.shape, calcification.rows, calcification.cols) == ("circle", (80.0,), (60.0,))
    data, stored = build(manifest, tmp_path)
    assert data["flipped"][0] == 1
    assert_lands_on_the_lesion(data["images"][0], stored[0][0])
    # The point: its stored pixel is where column 60, row 80 of the mirrored, cropped, resized film lands.
    point = stored[0][1]
    assert point.mask(SIZE, tolerance_px=1.5).any() and point.shape == "circle"


# ------------------------------------------------------------------------------------------------
# VinDr-Mammo: finding_annotations.csv boxes
# ------------------------------------------------------------------------------------------------

VINDR_BREAST = "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,breast_density,split"
VINDR_FINDINGS = ("image_id,study_id,series_id,laterality,view_position,height,width,breast_birads,breast_density,"
                  "finding_categories,finding_birads,xmin,ymin,xmax,ymax,split")


def test_vindr_box_lands_on_the_lesion(tmp_path, capsys):
    root = tmp_path / "vindr"
    image, _ = film_with_lesion(160, 120, "left", (100, 40), 9)
    (root / "images" / "s1").mkdir(parents=True)
    write_dicom(root / "images" / "s1" / "a.dicom", np.rint(image * 4095).astype(np.uint16), ImageLaterality="L",
                ViewCodeSequence=CC, WindowCenter=2048, WindowWidth=4096)
    write_dicom(root / "images" / "s1" / "b.dicom", np.rint(breast_image(160, 120, "right") * 4095).astype(np.uint16),
                ImageLaterality="R", ViewCodeSequence=CC, WindowCenter=2048, WindowWidth=4096)
    (root / "breast-level_annotations.csv").write_text(
        VINDR_BREAST + "\ns1,x,a,L,CC,160,120,BI-RADS 4,DENSITY C,training\ns1,x,b,R,CC,160,120,BI-RADS 1,DENSITY C,training\n")
    (root / "finding_annotations.csv").write_text(
        VINDR_FINDINGS + "\n"
        "a,s1,x,L,CC,160,120,BI-RADS 4,DENSITY C,\"['Mass', 'Suspicious Calcification']\",BI-RADS 4,31.0,91.0,49.0,109.0,training\n"
        "b,s1,x,R,CC,160,120,BI-RADS 1,DENSITY C,['No Finding'],,,,,,training\n")
    manifest = tmp_path / "vindr.csv"
    assert main(["adapt", "vindr", str(root / "breast-level_annotations.csv"), "--out", str(manifest)]) == 0
    assert f"{findings_path(manifest)}: 1 findings" in capsys.readouterr().err
    [(path, [box])] = read_findings(manifest).items()
    assert (box.finding, box.role, box.shape, box.rows, box.cols) == (
        "Mass; Suspicious Calcification", "malignant", "box", (91.0, 109.0), (31.0, 49.0))
    data, stored = build(manifest, tmp_path)
    index = list(data["image_path"]).index(path)
    assert data["flipped"][index] == 0 and stored[1 - index] == []
    assert_lands_on_the_lesion(data["images"][index], stored[index][0])
    bad = root / "bad_findings.csv"
    bad.write_text(VINDR_FINDINGS + "\na,s1,x,L,CC,160,120,BI-RADS 4,DENSITY C,['Mass'],BI-RADS 7,x,91,49,109,t\n")
    with pytest.raises(ManifestError) as info:
        from data_prep.adapters import vindr_manifest
        vindr_manifest(root / "breast-level_annotations.csv", out_csv=tmp_path / "v2.csv", findings_csv=bad)
    assert [(p.line, p.column) for p in info.value.problems] == [(2, "xmin"), (2, "finding_birads")]


# ------------------------------------------------------------------------------------------------
# The table format, the reader, the mapping and the build
# ------------------------------------------------------------------------------------------------

def test_findings_path_and_table_round_trip(tmp_path):
    assert findings_path(tmp_path / "manifest.csv") == tmp_path / "findings.csv"
    assert findings_path(tmp_path / "cbis.csv") == tmp_path / "cbis.findings.csv"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    write_manifest([{"image_path": "a.png", "patient_id": "p", "exam_id": "e", "laterality": "L", "view": "CC",
                     "label": "malignant", "source": "t"}], tmp_path / "set.csv")
    findings = [Finding("a.png", "mass", "malignant", "outline", (1.0, 1.0, 5.0), (1.0, 5.0, 1.0)),
                Finding("a.png", "calc", "incidental", "circle", (3.5,), (2.0,), 1.5),
                Finding("./a.png", "x", "recalled_benign", "box", (2.0, 6.0), (1.0, 3.0))]
    write_findings(findings_path(tmp_path / "set.csv"), findings, ["note"], [["n1"], ["n2"], ["n3"]])
    got = read_findings(tmp_path / "set.csv")["a.png"]         # "./a.png" is the manifest's "a.png"
    assert [(f.finding, f.shape, f.rows, f.cols, f.radius_px) for f in got] == [
        (f.finding, f.shape, f.rows, f.cols, f.radius_px) for f in findings]
    assert got[0].area == 8.0 and got[2].area == 15.0 and got[2].centre == (4.0, 2.0)
    with open(findings_path(tmp_path / "set.csv"), newline="") as f:
        written = list(csv.DictReader(f))
    assert written[0]["points"] == "1 1 1 5 5 1" and written[2]["points"] == "2 1 6 3"
    assert float(written[0]["radius_px"]) == pytest.approx(np.sqrt(8 / np.pi), abs=0.05)


def test_a_bad_findings_table_names_line_and_column(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    write_manifest([{"image_path": "a.png", "patient_id": "p", "exam_id": "e", "laterality": "L", "view": "CC",
                     "label": "negative", "source": "t"}], tmp_path / "manifest.csv")
    (tmp_path / "findings.csv").write_text(
        "image_path,finding,role,shape,row,col,radius_px,points\n"
        "a.png,mass,cancer,circle,1,2,3,\n"          # role
        "a.png,mass,malignant,box,,,,1 2 3\n"         # a box needs 4 numbers
        "b.png,mass,malignant,circle,1,2,-1,\n"       # not in the manifest; negative radius
        "a.png,mass,malignant,outline,,,,1 2\n")      # one vertex
    with pytest.raises(ManifestError) as info:
        read_findings(tmp_path / "manifest.csv")
    assert [(p.line, p.column) for p in info.value.problems] == [(2, "role"), (3, "points"), (4, "radius_px"),
                                                                 (5, "points")]
    (tmp_path / "findings.csv").write_text("image_path,finding,role,row,col,radius_px\nb.png,mass,malignant,1,2,3\n")
    with pytest.raises(ManifestError, match="line 2, column 'image_path': got 'b.png'"):
        read_findings(tmp_path / "manifest.csv")


def test_stored_finding_masks():
    crop_box, shape = (10, 110, 20, 70), (120, 80)                  # 100 rows x 50 columns kept
    circle = Finding("a", "m", "malignant", "circle", (60.0,), (45.0,), 10.0)
    box = Finding("a", "m", "malignant", "box", (40.0, 59.0), (30.0, 39.0))
    outline = Finding("a", "m", "malignant", "outline", (40.0, 40.0, 79.0), (30.0, 49.0, 30.0))
    stored = to_stored_findings([circle, box, outline], crop_box, True, shape, 50)   # 0.5 rows, 1 column per px
    c, b, o = stored
    assert c.scale == (0.5, 1.0)
    assert c.mask(50).sum() == pytest.approx(np.pi * 10 * 5, rel=0.1)        # an ellipse: 10 x 5 stored pixels
    assert c.mask(50, 2.0).sum() == pytest.approx(np.pi * 12 * 6, rel=0.1)
    # The mirror: original column 45 of 80 is 34 in the flipped image, 14 after the crop's 20.
    assert c.centre == pytest.approx(((60 - 10 + 0.5) * 0.5 - 0.5, 34 - 20))
    assert b.cols[0] < b.cols[1] and b.mask(50).sum() == pytest.approx(10 * 10, rel=0.25)
    assert o.mask(50).sum() == pytest.approx(0.5 * 40 * 20 * 0.5, rel=0.3)
    wider = o.mask(50, 4.0)
    assert wider.sum() > o.mask(50).sum() and (wider | o.mask(50)).sum() == wider.sum()


def test_build_stores_findings_and_rebuilds_when_the_table_changes(tmp_path, capsys):
    image, _ = film_with_lesion(100, 80, "left", (50, 20), 5)
    Image.fromarray(np.rint(image * 255).astype(np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.rint(breast_image(100, 80) * 255).astype(np.uint8)).save(tmp_path / "b.png")
    write_manifest([{"image_path": name, "patient_id": name, "exam_id": name, "laterality": "L", "view": "CC",
                     "label": "malignant", "source": "t"} for name in ("a.png", "b.png", "gone.png")],
                   tmp_path / "manifest.csv")
    lesion = Finding("a.png", "mass", "malignant", "circle", (50.0,), (20.0,), 5.0)
    write_findings(tmp_path / "findings.csv", [lesion, Finding("gone.png", "mass", "malignant", "circle", (5.0,),
                                                               (5.0,), 2.0)])
    out = tmp_path / "d.h5"
    assert main(["build", str(tmp_path / "manifest.csv"), str(out), "--size", str(SIZE), "--equalize", "none",
                 "--workers", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "1 findings from findings.csv stored with the images" in printed and "1 of skipped images" in printed
    stored = load_findings(out)
    assert [len(s) for s in stored] == [1, 0]
    assert stored[0][0].original == lesion
    assert_lands_on_the_lesion(load_dataset(out)["images"][0], stored[0][0], tolerance_px=1.0)
    write_findings(tmp_path / "findings.csv", [lesion, Finding("b.png", "calc", "incidental", "circle", (30.0,),
                                                               (10.0,), 1.0)])
    build_dataset(tmp_path / "manifest.csv", out, size=SIZE, equalize="none", workers=1, progress=False)
    assert [len(s) for s in load_findings(out)] == [1, 1]
