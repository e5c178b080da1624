"""Synthetic cohort generator: tags, class mix, lesions per side, interval flags, determinism, difficulty,
calcification grain scale, finding magnification, scanned-film artefacts, Table 1's views per exam."""

import csv
import json
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from data_prep.build import build_dataset, load_dataset
from data_prep.manifest import read_manifest
from data_prep.readers import read_image
from data_prep.synthetic import GENERATOR_VERSION
from data_prep.synthetic.cohort import (
    FIELD_HEIGHT_MM,
    PAPER_COHORTS,
    class_counts,
    cohort_composition,
    synthesize,
)

SIZE = (160, 128)   # tiny images keep the tests fast; the anatomy is in mm, so only resolution changes


@pytest.fixture(scope="module")
def ffdm(tmp_path_factory):
    out = tmp_path_factory.mktemp("ffdm")
    return synthesize("ffdm", 24, seed=5, out_dir=out, image_size=SIZE, workers=1, progress=False)


def findings_of(manifest):
    with open(manifest.parent / "findings.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_class_counts_follow_the_paper():
    assert tuple(class_counts("ffdm", 1303).values()) == PAPER_COHORTS["ffdm"]
    assert tuple(class_counts("ddsm", 2412).values()) == PAPER_COHORTS["ddsm"]
    assert class_counts("ffdm", 100) == {"negative": 42, "recalled_benign": 29, "malignant": 29}
    assert sum(class_counts("ddsm", 7).values()) == 7


def test_views_per_patient_and_class_mix(ffdm):
    rows = read_manifest(ffdm)
    by_patient = defaultdict(list)
    for row in rows:
        by_patient[row["patient_id"]].append(row)
    labels = {p: r[0]["label"] for p, r in by_patient.items()}
    assert sorted(labels.values()) == sorted(np.repeat(list(class_counts("ffdm", 24)), list(class_counts("ffdm", 24).values())))
    for patient, images in by_patient.items():
        views = sorted((r["laterality"], r["view"]) for r in images)
        if labels[patient] == "malignant":   # only the cancer-affected breast, like the paper
            assert len(views) == 2 and views[0][0] == views[1][0] and {v for _, v in views} == {"CC", "MLO"}
        else:
            assert views == [("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")]
    summary = json.loads((ffdm.parent / "cohort.json").read_text())
    assert summary["n_images"] == len(rows) and summary["class_counts"] == class_counts("ffdm", 24)


def test_findings_by_class_and_side(ffdm):
    rows = read_manifest(ffdm)
    findings = defaultdict(list)
    for f in findings_of(ffdm):
        findings[f["image_path"]].append(f)
    for row in rows:
        roles = {f["role"] for f in findings[row["image_path"]]}
        if row["label"] == "negative":
            assert roles <= {"incidental"}
        elif row["label"] == "malignant":
            assert "malignant" in roles                   # both views of the affected breast
        else:
            assert "malignant" not in roles
    benign_patients = {r["patient_id"] for r in rows if r["label"] == "recalled_benign"}
    for patient in benign_patients:
        shown = {(f["laterality"], f["view"]) for path, fs in findings.items() for f in fs
                 if f["patient_id"] == patient and f["role"] == "recalled_benign"}
        assert any({(side, "CC"), (side, "MLO")} <= shown for side in "LR")   # seen in both views of a breast


def test_interval_cancers_are_flagged_malignant(ffdm):
    rows = read_manifest(ffdm)
    flagged = {r["patient_id"] for r in rows if r["interval_cancer"]}
    assert all(r["label"] == "malignant" for r in rows if r["interval_cancer"])
    assert len(flagged) == round(34 / 375 * class_counts("ffdm", 24)["malignant"])


def test_dicom_tags(ffdm):
    rows = read_manifest(ffdm)
    photometric, bits = set(), set()
    for row in rows:
        ds = pydicom.dcmread(row["path"])
        assert ds.Modality == "MG" and ds.SOPClassUID.startswith("1.2.840.10008.5.1.4.1.1.1.2")
        assert ds.get("ImageLaterality", ds.get("Laterality")) == row["laterality"]
        code = {"CC": "399162004", "MLO": "399368009"}[row["view"]]
        assert ds.ViewCodeSequence[0].CodeValue == code and ds.get("ViewPosition", row["view"]) == row["view"]
        assert float(ds.ImagerPixelSpacing[0]) == pytest.approx(FIELD_HEIGHT_MM / SIZE[0], rel=1e-5)
        assert (ds.Rows, ds.Columns) == SIZE and ds.PatientID == row["patient_id"]
        assert ds.BitsStored in (12, 14) and ds.HighBit == ds.BitsStored - 1
        photometric.add(ds.PhotometricInterpretation)
        bits.add(ds.BitsStored)
        image, meta = read_image(row["path"])
        assert meta["laterality"] == row["laterality"] and meta["view"] == row["view"]
        assert image[image > 0].size > 0.2 * image.size                      # a breast is there
    assert photometric == {"MONOCHROME1", "MONOCHROME2"} and bits == {12, 14}


def test_deterministic_from_seed_whatever_the_workers(tmp_path, ffdm):
    again = synthesize("ffdm", 24, seed=5, out_dir=tmp_path / "a", image_size=SIZE, workers=2, progress=False)
    assert again.read_text() == ffdm.read_text()
    for row in read_manifest(ffdm)[:6]:
        a = pydicom.dcmread(row["path"]).pixel_array
        b = pydicom.dcmread(again.parent / row["image_path"]).pixel_array
        np.testing.assert_array_equal(a, b)
    other = synthesize("ffdm", 24, seed=6, out_dir=tmp_path / "b", image_size=SIZE, workers=1, progress=False)
    assert other.read_text() != ffdm.read_text()


def test_ddsm_film_files_and_orientation(tmp_path):
    manifest = synthesize("ddsm", 6, seed=1, out_dir=tmp_path / "ddsm", image_size=SIZE, workers=1, progress=False)
    rows = read_manifest(manifest)
    assert {r["source"] for r in rows} == {"ddsm"} and not any(r["interval_cancer"] for r in rows)
    saturated = 0
    for row in rows:
        pixels = np.asarray(Image.open(row["path"]))
        assert pixels.dtype == np.uint16 and pixels.max() <= 4095          # 12-bit film scan in 16-bit PNG
        saturated += int((pixels == 4095).sum() > 0)                        # burned-in labels
    assert saturated == len(rows)
    data = load_dataset(build_dataset(manifest, tmp_path / "d.h5", size=32, workers=1, progress=False))
    assert data["attrs"]["n_errors"] == 0
    # Films are stored facing either way; every built image has its chest wall on the left.
    images = data["images"].astype(float)
    assert (images[:, :, :4].mean(axis=(1, 2)) > images[:, :, -4:].mean(axis=(1, 2))).all()


def test_difficulty_is_a_monotone_contrast_knob(tmp_path):
    """Anatomy is identical across difficulties; the lesion signal shrinks as difficulty grows."""
    images = {}
    for difficulty in (0.5, 1.0, 2.0, 8.0):
        manifest = synthesize("ffdm", 6, seed=3, out_dir=tmp_path / str(difficulty), difficulty=difficulty,
                              image_size=SIZE, workers=1, progress=False)
        rows = [r for r in read_manifest(manifest) if r["label"] != "negative"]
        images[difficulty] = np.stack([read_image(r["path"])[0] for r in rows])
    signal = [np.abs(images[d] - images[8.0]).sum() for d in (0.5, 1.0, 2.0)]
    assert signal[0] > signal[1] > signal[2] > 0


def test_grain_scale_enlarges_calcifications_only(tmp_path):
    """grain_scale 1 is the default cohort bit for bit; above 1, only views with calcifications change,
    and their calcifications add more signal (larger grains) around the same places."""
    images, truth = {}, {}
    for scale in (None, 1.0, 3.0):
        extra = {} if scale is None else {"grain_scale": scale}
        manifest = synthesize("ffdm", 16, seed=2, out_dir=tmp_path / str(scale), image_size=SIZE, workers=1,
                              progress=False, difficulty=0.5, **extra)
        rows = read_manifest(manifest)
        images[scale] = {r["image_path"]: read_image(r["path"])[0] for r in rows}
        truth[scale] = findings_of(manifest)
    assert all(np.array_equal(images[None][k], images[1.0][k]) for k in images[None])
    assert truth[None] == truth[3.0]   # same findings, positions and sizes: only grains grow
    calcified = {t["image_path"] for t in truth[3.0] if t["finding"].endswith("_calcs")}
    assert calcified and len(calcified) < len(images[3.0])
    for path, image in images[3.0].items():
        diff = image.astype(float) - images[1.0][path].astype(float)
        if path not in calcified:
            assert not diff.any(), path
        else:
            assert np.abs(diff).sum() > 0, path
    # Larger grains mean more bright area: the calcified views get brighter on the whole.
    gain = [(images[3.0][p].astype(float) - images[1.0][p].astype(float)).sum() for p in calcified]
    assert np.mean(np.array(gain) > 0) > 0.8


def test_finding_scale_magnifies_every_finding_and_nothing_else(tmp_path):
    """finding_scale 1 is the default cohort bit for bit; at 2 the same findings sit at the same places,
    drawn twice as large (every kind's drawn radius doubles, up to its fixed 2-pixel margin), and views
    without findings do not change."""
    images, truth = {}, {}
    for scale in (None, 1.0, 2.0):
        extra = {} if scale is None else {"finding_scale": scale}
        manifest = synthesize("ffdm", 16, seed=2, out_dir=tmp_path / str(scale), image_size=SIZE, workers=1,
                              progress=False, difficulty=0.5, **extra)
        images[scale] = {r["image_path"]: read_image(r["path"])[0] for r in read_manifest(manifest)}
        truth[scale] = findings_of(manifest)
    assert all(np.array_equal(images[None][k], images[1.0][k]) for k in images[None])
    assert json.loads((tmp_path / "2.0" / "cohort.json").read_text())["finding_scale"] == 2.0
    assert len(truth[2.0]) == len(truth[1.0]) > 0
    for small, large in zip(truth[1.0], truth[2.0]):
        same = ("image_path", "finding", "role", "row", "col", "diameter_mm", "contrast")
        assert [small[k] for k in same] == [large[k] for k in same]
        r1, r2 = float(small["radius_px"]), float(large["radius_px"])
        assert 2 * r1 - 2.2 <= r2 <= 2 * r1 + 0.2, (small["finding"], r1, r2)
    with_findings = {t["image_path"] for t in truth[2.0]}
    assert with_findings and len(with_findings) < len(images[2.0])
    for path, image in images[2.0].items():
        changed = np.abs(image.astype(float) - images[1.0][path].astype(float)).sum() > 0
        assert changed == (path in with_findings), path


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="dataset"):
        synthesize("mri", 5, 0, tmp_path)
    with pytest.raises(ValueError, match="difficulty"):
        synthesize("ffdm", 5, 0, tmp_path, difficulty=0)
    with pytest.raises(ValueError, match="image_size"):
        synthesize("ffdm", 5, 0, tmp_path, image_size=(32, 32))
    with pytest.raises(ValueError, match="grain_scale"):
        synthesize("ffdm", 5, 0, tmp_path, grain_scale=0)
    with pytest.raises(ValueError, match="finding_scale"):
        synthesize("ffdm", 5, 0, tmp_path, finding_scale=-1)
    with pytest.raises(ValueError, match="views"):
        synthesize("ffdm", 5, 0, tmp_path, views="six")


def test_breast_box_truth_and_generator_version(ffdm, tmp_path):
    summary = json.loads((ffdm.parent / "cohort.json").read_text())
    assert summary["generator_version"] == GENERATOR_VERSION >= 2
    with open(ffdm.parent / "breast_box.csv", newline="") as f:
        boxes = {r["image_path"]: r for r in csv.DictReader(f)}
    rows = read_manifest(ffdm)
    assert set(boxes) == {r["image_path"] for r in rows}
    for row in rows[:8]:  # FFDM background is padding (0): the true box is the non-zero region as read
        image, _ = read_image(row["path"])
        inside_rows, inside_cols = np.flatnonzero((image > 0).any(axis=1)), np.flatnonzero((image > 0).any(axis=0))
        box = boxes[row["image_path"]]
        # The window may clip the breast's faintest rim (a pixel or two) to 0.
        np.testing.assert_allclose([int(box[k]) for k in ("top", "bottom", "left", "right")],
                                   [inside_rows[0], inside_rows[-1] + 1, inside_cols[0], inside_cols[-1] + 1], atol=3)
        assert box["mirrored"] == str(int(row["laterality"] == "R")) and box["artifacts"] == ""


def test_scanned_film_artifacts_leave_the_film_underneath_unchanged(tmp_path):
    """The scanned-film artefacts come from a random stream of their own: the breast, its findings and
    the basic artefacts are those of the basic film mode, and only the artefacts' pixels change."""
    basic = synthesize("ddsm", 6, seed=2, out_dir=tmp_path / "basic", image_size=SIZE, workers=1, progress=False,
                       film_artifacts="basic")
    scanned = synthesize("ddsm", 6, seed=2, out_dir=tmp_path / "scanned", image_size=SIZE, workers=1, progress=False)
    assert basic.read_text() == scanned.read_text() and findings_of(basic) == findings_of(scanned)
    assert json.loads((scanned.parent / "cohort.json").read_text())["film_artifacts"] == "scanned"
    boxes = {}
    for name in ("basic", "scanned"):
        with open(tmp_path / name / "breast_box.csv", newline="") as f:
            boxes[name] = {r["image_path"]: r for r in csv.DictReader(f)}
    changed = 0
    for row in read_manifest(scanned):
        before = np.asarray(Image.open(tmp_path / "basic" / row["image_path"]), np.int32)
        after = np.asarray(Image.open(row["path"]), np.int32)
        b, s = boxes["basic"][row["image_path"]], boxes["scanned"][row["image_path"]]
        assert s["artifacts"].startswith(b["artifacts"]) and s["mirrored"] == b["mirrored"]
        extra = s["artifacts"][len(b["artifacts"]):].strip(";")
        assert (before != after).any() == bool(extra), (row["image_path"], extra)
        if extra:
            changed += 1
            assert (before != after).mean() < 0.3                  # edges, lines, streaks: not the breast
        if "_touching" in extra:                                    # a band drawn into the breast touches it
            assert s["border_touches"] == "1"
    assert changed > 0.5 * len(read_manifest(scanned)) and after.max() <= 4095
    with pytest.raises(ValueError, match="film_artifacts"):
        synthesize("ddsm", 2, 0, tmp_path / "x", film_artifacts="dusty")


def test_table1_views_are_written_as_the_composition_says(ffdm, tmp_path):
    """``views="table1"`` writes exactly the images :func:`cohort_composition` lists (the composition
    test_table1.py checks against Table 1), an XCCL tagged as such, and the standard views' files of
    the standard cohort bit for bit."""
    manifest = synthesize("ffdm", 24, seed=5, out_dir=tmp_path / "t1", image_size=SIZE, workers=1, progress=False,
                          views="table1")
    plan = cohort_composition("ffdm", 24, 5, "table1")
    rows = read_manifest(manifest)
    assert [(r["image_path"], r["patient_id"], r["laterality"], r["view"], r["label"], r["interval_cancer"])
            for r in rows] == [(v.image_path, p.patient_id, v.laterality, v.manifest_view, p.label, int(p.interval))
                               for p in plan for v in p.views]
    # the same patients as the standard cohort; at this size no patient lacks a view, some have an XCCL more
    assert cohort_composition("ffdm", 24, 5) == [
        replace(p, views=tuple(v for v in p.views if v.view != "XCCL")) for p in plan]
    standard = {r["image_path"]: r for r in read_manifest(ffdm)}
    extra = [r for r in rows if r["image_path"] not in standard]
    # 7 recalled-benign and 7 malignant training patients: Table 1's 1,520 / 357 and 867 / 356 images
    # per patient give 30 and 17 images, 2 and 3 XCCL views, on the breast with the finding
    assert len(extra) == 5 and all(r["image_path"].endswith("_XCCL.dcm") and r["view"] == "CC" for r in extra)
    sides = {p.patient_id: p.affected_side for p in plan}
    findings = {f["image_path"] for f in findings_of(manifest) if f["role"] != "incidental"}
    uids = set()
    for row in extra:
        assert row["laterality"] == sides[row["patient_id"]] and row["image_path"] in findings
        ds = pydicom.dcmread(row["path"])
        assert ds.ViewCodeSequence[0].CodeValue == "399192008" and ds.get("ViewPosition", "XCCL") == "XCCL"
        uids.add(ds.SOPInstanceUID)
    for row in rows:
        if row["image_path"] in standard:
            assert (tmp_path / "t1" / row["image_path"]).read_bytes() == Path(standard[row["image_path"]]["path"]).read_bytes()
            uids.add(pydicom.dcmread(row["path"], stop_before_pixels=True).SOPInstanceUID)
    assert len(uids) == len(rows)                                       # every file its own instance
    assert json.loads((manifest.parent / "cohort.json").read_text())["views"] == "table1"
    assert "views" not in json.loads((ffdm.parent / "cohort.json").read_text())
