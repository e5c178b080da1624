"""Dataset build: HDF5 layout, error report, resume after a crash, parallel workers, CLI."""

import csv
import json
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

import data_prep.build as build_module
from data_prep.__main__ import main
from data_prep.build import (
    build_dataset,
    compute_mean,
    crops_report_path,
    errors_report_path,
    load_dataset,
)
from data_prep.manifest import DataPrepError, write_manifest
from data_prep.preprocess import preprocess_image

sys.path.insert(0, str(Path(__file__).parent))
from data_prep_fixtures import breast_image, write_dicom

LABEL_OF = ["negative", "recalled_benign", "malignant"]


def make_cohort(folder: Path, n: int = 6) -> Path:
    """n PNG breasts (alternating L/R, R stored chest-wall-right) + one DICOM with tags only."""
    rows = []
    for i in range(n):
        side = "LR"[i % 2]
        image = breast_image(80 + 4 * i, 60, "left" if side == "L" else "right", level=0.4 + 0.05 * i, lesion=i % 3 == 2)
        Image.fromarray(np.rint(image * 4095).astype(np.uint16)).save(folder / f"img{i}.png")
        rows.append({"image_path": f"img{i}.png", "patient_id": f"P{i // 2}", "exam_id": f"E{i // 2}",
                     "laterality": side, "view": "CC" if i % 4 < 2 else "MLO", "label": LABEL_OF[i % 3],
                     "source": "test", "interval_cancer": int(i % 3 == 2 and i > 3)})
    stored = np.rint(breast_image(90, 70, "right") * 3000).astype(np.uint16)
    write_dicom(folder / "tags.dcm", stored, ImageLaterality="R", ViewPosition="MLO", WindowCenter=1500,
                WindowWidth=3000)
    rows.append({"image_path": "tags.dcm", "patient_id": "PD", "exam_id": "ED", "laterality": "", "view": "",
                 "label": "malignant", "source": "dicom"})
    return write_manifest(rows, folder / "manifest.csv")


def test_build_layout_and_attributes(tmp_path):
    manifest = make_cohort(tmp_path)
    out = build_dataset(manifest, tmp_path / "out.h5", size=32, aspect="pad", equalize="clahe", workers=1,
                        progress=False)
    data = load_dataset(out)
    assert data["images"].shape == (7, 32, 32) and data["images"].dtype == np.uint8
    assert data["labels"].dtype == np.int8 and list(data["labels"]) == [0, 1, 2, 0, 1, 2, 2]
    assert list(data["interval_cancer"]) == [0, 0, 0, 0, 0, 1, 0]
    assert data["patient_id"][6] == "PD" and isinstance(data["patient_id"][0], str)
    assert (data["laterality"][6], data["view"][6]) == ("R", "MLO")        # from the DICOM tags
    assert list(data["manifest_line"]) == list(range(2, 9))
    attrs = data["attrs"]
    assert json.loads(attrs["label_names"]) == {"0": "negative", "1": "recalled_benign", "2": "malignant"}
    assert (attrs["size"], attrs["aspect"], attrs["equalize"], attrs["mean_subtracted"]) == (32, "pad", "clahe", False)
    assert attrs["format_name"] == "aboutalib2018-mammo-dataset" and attrs["n_errors"] == 0
    assert json.loads(attrs["build_parameters"])["aspect"] == "pad"
    assert not (tmp_path / "out.h5.partial").exists()
    # The stored pixels are exactly preprocess_image's output.
    from data_prep.readers import read_image
    image, _ = read_image(tmp_path / "img1.png")
    np.testing.assert_array_equal(data["images"][1], preprocess_image(image, "R", 32, "pad", "clahe"))


def test_bad_files_are_skipped_and_reported(tmp_path):
    manifest = make_cohort(tmp_path, n=3)
    (tmp_path / "img1.png").write_bytes(b"corrupt")
    (tmp_path / "img2.png").unlink()
    out = build_dataset(manifest, tmp_path / "out.h5", size=16, workers=1, progress=False)
    data = load_dataset(out)
    assert list(data["patient_id"]) == ["P0", "PD"] and data["attrs"]["n_errors"] == 2
    with open(errors_report_path(out), newline="") as f:
        report = list(csv.DictReader(f))
    assert [r["image_path"] for r in report] == ["img1.png", "img2.png"]
    assert "img1.png: file: is not a readable image" in report[0]["reason"]
    assert "does not exist" in report[1]["reason"] and report[1]["manifest_line"] == "4"


def test_unknown_laterality_is_an_error_not_a_guess(tmp_path):
    Image.fromarray(np.rint(breast_image() * 255).astype(np.uint8)).save(tmp_path / "a.png")
    rows = [{"image_path": "a.png", "patient_id": "P", "exam_id": "E", "laterality": "", "view": "CC",
             "label": "negative", "source": "x"}]
    manifest = write_manifest(rows, tmp_path / "m.csv")
    with pytest.raises(DataPrepError, match="none of the 1 images"):
        build_dataset(manifest, tmp_path / "out.h5", size=16, workers=1, progress=False)
    with open(errors_report_path(tmp_path / "out.h5"), newline="") as f:
        reason = next(csv.DictReader(f))["reason"]
    assert "laterality unknown" in reason and not (tmp_path / "out.h5").exists()


def test_resume_after_crash(tmp_path, monkeypatch):
    manifest = make_cohort(tmp_path, n=8)
    clean = load_dataset(build_dataset(manifest, tmp_path / "clean.h5", size=24, workers=1, progress=False))

    monkeypatch.setattr(build_module, "PART_SIZE", 2)
    real_write_part = build_module._write_part
    writes = []

    def crash_on_third_part(partial, results):
        if len(writes) == 2:
            raise KeyboardInterrupt("simulated kill")
        writes.append(len(results))
        real_write_part(partial, results)

    monkeypatch.setattr(build_module, "_write_part", crash_on_third_part)
    out = tmp_path / "out.h5"
    with pytest.raises(KeyboardInterrupt):
        build_dataset(manifest, out, size=24, workers=1, progress=False)
    assert not out.exists()                                       # nothing half-written
    assert len(list((tmp_path / "out.h5.partial").glob("part_*.h5"))) == 2

    monkeypatch.setattr(build_module, "_write_part", real_write_part)
    prepared = []
    real_prepare = build_module._prepare_one
    monkeypatch.setattr(build_module, "_prepare_one", lambda task: prepared.append(task[0]) or real_prepare(task))
    build_dataset(manifest, out, size=24, workers=1, progress=False)
    assert sorted(prepared) == [4, 5, 6, 7, 8]                    # only the images not yet done
    resumed = load_dataset(out)
    for name in ("images", "labels", "patient_id", "laterality", "view", "interval_cancer"):
        np.testing.assert_array_equal(resumed[name], clean[name])

    prepared.clear()
    build_dataset(manifest, out, size=24, workers=1, progress=False)
    assert prepared == []                                          # finished file reused as it is
    build_dataset(manifest, out, size=20, workers=1, progress=False)
    assert len(prepared) == 9 and load_dataset(out)["images"].shape[1:] == (20, 20)   # new parameters: rebuilt


def test_partial_from_other_parameters_is_discarded(tmp_path, monkeypatch):
    manifest = make_cohort(tmp_path, n=4)
    partial = tmp_path / "out.h5.partial"
    partial.mkdir()
    (partial / "fingerprint.txt").write_text("something else\n")
    with h5py.File(partial / "part_000000.h5", "w") as f:      # would break the build if it were reused
        f["index"] = np.array([0])
        f["images"] = np.zeros((1, 99, 99), np.uint8)
    data = load_dataset(build_dataset(manifest, tmp_path / "out.h5", size=16, workers=1, progress=False))
    assert data["images"].shape == (5, 16, 16)


def test_parallel_build_equals_serial(tmp_path):
    manifest = make_cohort(tmp_path, n=6)
    serial = load_dataset(build_dataset(manifest, tmp_path / "a.h5", size=24, workers=1, progress=False))
    parallel = load_dataset(build_dataset(manifest, tmp_path / "b.h5", size=24, workers=2, progress=False))
    np.testing.assert_array_equal(parallel["images"], serial["images"])
    np.testing.assert_array_equal(parallel["patient_id"], serial["patient_id"])


def test_compute_mean(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10, 8, 8)).astype(np.uint8)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["images"] = images
    np.testing.assert_allclose(compute_mean(tmp_path / "d.h5"), images.mean(axis=0))
    np.testing.assert_allclose(compute_mean(tmp_path / "d.h5", [7, 2, 2, 5], chunk=2), images[[2, 5, 7]].mean(axis=0))
    np.testing.assert_allclose(compute_mean(images, [1, 3]), images[[1, 3]].mean(axis=0))


def test_cli_build_and_validate(tmp_path, capsys):
    manifest = make_cohort(tmp_path, n=2)
    assert main(["build", str(manifest), str(tmp_path / "cli.h5"), "--size", "16", "--workers", "1", "--quiet"]) == 0
    assert "3 images, 0 skipped" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("image_path,patient_id,exam_id,laterality,view,label,source\na.png,P,E,Q,CC,negative,x\n")
    assert main(["validate", str(bad)]) == 2
    assert "line 2, column 'laterality'" in capsys.readouterr().err


def test_image_replaced_at_same_path_is_rebuilt(tmp_path):
    manifest = make_cohort(tmp_path, n=2)
    out = tmp_path / "out.h5"
    before = load_dataset(build_dataset(manifest, out, size=16, workers=1, progress=False))
    # A corrected export of the same image: other pixels, same path, same manifest.
    image = breast_image(70, 90, "left", level=0.8, lesion=True)
    Image.fromarray(np.rint(image * 4095).astype(np.uint16)).save(tmp_path / "img0.png")
    after = load_dataset(build_dataset(manifest, out, size=16, workers=1, progress=False))
    np.testing.assert_array_equal(after["images"][0], preprocess_image(image, "L", 16))
    assert not np.array_equal(after["images"][0], before["images"][0])
    assert after["attrs"]["fingerprint"] != before["attrs"]["fingerprint"]


def test_touched_file_changes_the_fingerprint_but_untouched_does_not(tmp_path):
    manifest = make_cohort(tmp_path, n=2)
    rows = build_module.read_manifest(manifest)
    settings = {"size": 16}
    first = build_module._fingerprint(rows, settings)
    assert build_module._fingerprint(rows, settings) == first
    stat = (tmp_path / "img1.png").stat()
    os.utime(tmp_path / "img1.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))   # same bytes, newer file
    assert build_module._fingerprint(rows, settings) != first


def test_rebuild_prepares_every_image_again(tmp_path, monkeypatch):
    manifest = make_cohort(tmp_path, n=2)
    out = tmp_path / "out.h5"
    build_dataset(manifest, out, size=16, workers=1, progress=False)
    prepared = []
    real_prepare = build_module._prepare_one
    monkeypatch.setattr(build_module, "_prepare_one", lambda task: prepared.append(task[0]) or real_prepare(task))
    build_dataset(manifest, out, size=16, workers=1, progress=False)
    assert prepared == []                                          # up to date: returned as it is
    build_dataset(manifest, out, size=16, workers=1, progress=False, rebuild=True)
    assert sorted(prepared) == [0, 1, 2]
    assert main(["build", str(manifest), str(out), "--size", "16", "--workers", "1", "--quiet", "--rebuild"]) == 0
    assert sorted(prepared) == [0, 0, 1, 1, 2, 2]


def test_attrition_attributes_count_skips_by_reason_and_label(tmp_path):
    manifest = make_cohort(tmp_path, n=6)          # labels: neg, benign, malignant, neg, benign, malignant, malignant
    (tmp_path / "img0.png").unlink()                                                  # negative: missing file
    (tmp_path / "img1.png").write_bytes(b"corrupt")                                   # benign: unreadable file
    Image.fromarray(np.zeros((40, 30), np.uint8)).save(tmp_path / "img4.png")         # benign: no breast found
    write_dicom(tmp_path / "tags.dcm", np.rint(breast_image(90, 70, "right") * 3000).astype(np.uint16),
                ViewPosition="MLO", WindowCenter=1500, WindowWidth=3000)              # malignant: no laterality
    out = build_dataset(manifest, tmp_path / "out.h5", size=16, workers=1, progress=False)
    attrs = load_dataset(out)["attrs"]
    assert (attrs["n_manifest_rows"], attrs["n_errors"], attrs["n_images"]) == (7, 4, 3)
    assert json.loads(attrs["manifest_by_label"]) == {"negative": 2, "recalled_benign": 2, "malignant": 3}
    assert json.loads(attrs["skipped_by_label"]) == {"negative": 1, "recalled_benign": 2, "malignant": 1}
    assert json.loads(attrs["skipped_by_reason"]) == {"missing file": 1, "unreadable file": 1,
                                                      "laterality unknown": 1, "no breast found": 1}
    assert set(json.loads(attrs["skipped_by_reason"])) <= set(build_module.SKIP_CATEGORIES)
    with open(errors_report_path(out), newline="") as f:
        categories = [row["category"] for row in csv.DictReader(f)]
    assert categories == ["missing file", "unreadable file", "no breast found", "laterality unknown"]


def test_skip_category_of_a_missing_decoder_and_of_anything_else(tmp_path):
    from data_prep.readers import ImageReadError
    missing_decoder = ImageReadError(tmp_path / "a.dcm", "TransferSyntaxUID", "no decoder plugin is installed")
    assert build_module._skip_category(missing_decoder) == "unsupported transfer syntax"
    assert build_module._skip_category(ImageReadError("a.dcm", "PixelData", "is missing")) == "unusable pixel data"
    assert build_module._skip_category(MemoryError()) == "other error"


def test_build_records_crop_geometry_measures_and_outliers(tmp_path, capsys):
    manifest = make_cohort(tmp_path)
    rows = list(csv.DictReader(open(manifest)))
    # A thick textured bar across the whole width joined to a breast, away from the image edges:
    # neither a film band nor a thin attachment, so the crop keeps the full width and the breast
    # fills only part of it -- a crop outlier.
    image = breast_image(100, 120, "left", level=0.5)
    image[20:27, :] = 0.3 + 0.6 * np.random.default_rng(0).random((7, 120))
    Image.fromarray(np.rint(image * 4095).astype(np.uint16)).save(tmp_path / "bar.png")
    rows.append({**rows[0], "image_path": "bar.png", "patient_id": "PB", "exam_id": "EB"})
    write_manifest(rows, manifest)
    out = build_dataset(manifest, tmp_path / "out.h5", size=32, workers=1, progress=False)
    data = load_dataset(out)
    assert data["crop_box"].shape == (8, 4) and data["crop_box"].dtype == np.int32
    assert list(data["flipped"]) == [0, 1, 0, 1, 0, 1, 1, 0]                 # R images stored chest-wall-right
    assert [tuple(s) for s in data["original_shape"][:2]] == [(80, 60), (84, 60)]
    top, bottom, left, right = data["crop_box"][0]
    assert (left, right) == (0, 42) and bottom - top == round(0.84 * 80)       # the fixture's half-ellipse
    assert (data["breast_extent"][:7] > 0.9).all() and (data["breast_fraction"][:7] > 0.6).all()
    assert data["breast_extent"][7] < 0.85 and data["attrs"]["n_crop_outliers"] == 1
    with open(crops_report_path(out), newline="") as f:
        report = list(csv.DictReader(f))
    assert [r["outlier"] for r in report] == ["0"] * 7 + ["1"] and report[7]["image_path"] == "bar.png"
    assert main(["plot-crops", str(out), str(tmp_path / "crops.png"), "--n", "3"]) == 0
    assert Image.open(tmp_path / "crops.png").size[0] > 300


def test_old_builds_load_and_plot_crops_rejects_them(tmp_path, capsys):
    old = tmp_path / "old.h5"
    with h5py.File(old, "w") as f:                       # format version 1: no crop fields
        f["images"] = np.zeros((2, 8, 8), np.uint8)
        f["labels"] = np.zeros(2, np.int8)
        f.attrs.update({"format_name": build_module.FORMAT_NAME, "format_version": 1})
    data = load_dataset(old)
    assert "crop_box" not in data and data["images"].shape == (2, 8, 8)
    (tmp_path / "text.h5").write_text("not hdf5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    for path, message in [(old, "no crop measures"), (tmp_path / "missing.h5", "no such file"),
                          (tmp_path / "text.h5", "not an HDF5 file"), (tmp_path / "other.h5", "format_name")]:
        assert main(["plot-crops", str(path), str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_a_new_preprocessing_version_rebuilds(tmp_path, monkeypatch):
    manifest = make_cohort(tmp_path, n=2)
    out = build_dataset(manifest, tmp_path / "out.h5", size=16, workers=1, progress=False)
    first = load_dataset(out)["attrs"]["fingerprint"]
    assert build_dataset(manifest, out, size=16, workers=1, progress=False) == out
    assert load_dataset(out)["attrs"]["fingerprint"] == first
    monkeypatch.setattr(build_module, "PREPROCESS_VERSION", build_module.PREPROCESS_VERSION + 1)
    build_dataset(manifest, out, size=16, workers=1, progress=False)
    attrs = load_dataset(out)["attrs"]
    assert attrs["fingerprint"] != first and attrs["preprocess_version"] == build_module.PREPROCESS_VERSION
