"""Command line: synthesize -> build -> figures, adapters, validate, argument errors, inputs never overwritten."""

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep.__main__ import main
from data_prep.build import load_dataset
from data_prep.manifest import read_manifest, write_manifest

sys.path.insert(0, str(Path(__file__).parent))  # tests/ holds the data_prep_fixtures helpers
from data_prep_fixtures import breast_image, write_dicom


def test_synthesize_build_and_plot(tmp_path, capsys):
    out = tmp_path / "cohort"
    assert main(["synthesize", "--dataset", "ddsm", "--patients", "3", "--seed", "4", "--out", str(out),
                 "--difficulty", "0.8", "--image-size", "96x80", "--workers", "1", "--quiet"]) == 0
    manifest = out / "manifest.csv"
    assert capsys.readouterr().out.strip() == str(manifest)
    rows = read_manifest(manifest)
    assert main(["build", str(manifest), str(tmp_path / "d.h5"), "--size", "24", "--aspect", "pad",
                 "--equalize", "none", "--workers", "1", "--quiet"]) == 0
    attrs = load_dataset(tmp_path / "d.h5")["attrs"]
    assert (attrs["n_images"], attrs["aspect"], attrs["equalize"]) == (len(rows), "pad", "none")
    assert main(["plot-examples", str(tmp_path / "e.png"), str(manifest), "--per-class", "1"]) == 0
    assert main(["plot-steps", str(tmp_path / "s.png"), rows[0]["path"], "--size", "24"]) == 0
    assert (tmp_path / "e.png").stat().st_size > 0 and (tmp_path / "s.png").stat().st_size > 0


def test_adapt_folders(tmp_path, capsys):
    (tmp_path / "set" / "normal" / "p1").mkdir(parents=True)
    (tmp_path / "set" / "normal" / "p1" / "p1_L_CC.png").write_bytes(b"")
    assert main(["adapt", "folders", str(tmp_path / "set"), "--out", str(tmp_path / "m.csv")]) == 0
    assert "1 images" in capsys.readouterr().out
    assert read_manifest(tmp_path / "m.csv")[0]["label"] == "negative"


def test_bad_arguments_exit_with_usage(tmp_path):
    with pytest.raises(SystemExit):
        main(["synthesize", "--dataset", "mri", "--patients", "3", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["synthesize", "--dataset", "ffdm", "--patients", "3", "--out", str(tmp_path), "--image-size", "big"])


@pytest.mark.parametrize("option", ["--grain-scale", "--finding-scale"])
def test_a_scale_of_zero_is_one_error_line_before_any_image(tmp_path, capsys, option):
    out = tmp_path / "cohort"
    assert main(["synthesize", "--dataset", "ffdm", "--patients", "3", "--out", str(out), option, "0",
                 "--quiet"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{option}: got 0.0, expected a number > 0" in err[0], err
    assert not (out / "images").exists()


def small_manifest(folder):
    """Two PNG breasts and their manifest."""
    rows = []
    for i, side in enumerate("LR"):
        image = breast_image(60, 50, "left" if side == "L" else "right")
        Image.fromarray(np.rint(image * 255).astype(np.uint8)).save(folder / f"img{i}.png")
        rows.append({"image_path": f"img{i}.png", "patient_id": "P", "exam_id": "E", "laterality": side,
                     "view": "CC", "label": "negative", "source": "t"})
    return write_manifest(rows, folder / "m.csv")


def one_error_line(capsys, *fragments):
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    for fragment in fragments:
        assert fragment in captured.err, captured.err


def test_build_never_writes_over_its_inputs(tmp_path, capsys):
    manifest = small_manifest(tmp_path)
    text = manifest.read_bytes()
    assert main(["build", str(manifest), str(manifest), "--quiet"]) == 2
    one_error_line(capsys, "is the manifest")
    image = (tmp_path / "img1.png").read_bytes()
    assert main(["build", str(manifest), str(tmp_path / "img1.png"), "--quiet"]) == 2
    one_error_line(capsys, "is the image on manifest line 3")
    # The error report of OUT_H5 = m.h5 would be m.errors.csv: a manifest of that name is protected too.
    renamed = tmp_path / "m.errors.csv"
    renamed.write_bytes(text)
    assert main(["build", str(renamed), str(tmp_path / "m.h5"), "--quiet"]) == 2
    one_error_line(capsys, "error report")
    assert manifest.read_bytes() == text and (tmp_path / "img1.png").read_bytes() == image
    assert renamed.read_bytes() == text and not (tmp_path / "m.h5").exists()


def test_build_and_validate_bad_arguments_are_one_line_errors(tmp_path, capsys):
    manifest = small_manifest(tmp_path)
    assert main(["build", str(tmp_path / "none.csv"), str(tmp_path / "o.h5")]) == 2
    one_error_line(capsys, "none.csv: does not exist")
    assert main(["build", str(manifest), str(tmp_path / "o.h5"), "--size", "0"]) == 2
    one_error_line(capsys, "--size: got 0, expected an integer of at least 8")
    assert main(["validate", str(tmp_path)]) == 2
    one_error_line(capsys, "is a folder")
    assert main(["build", str(manifest), str(tmp_path)]) == 2
    one_error_line(capsys, "OUT_H5", "is a folder")
    assert not (tmp_path / "o.h5").exists()


def test_validate_opens_every_image_file(tmp_path, capsys):
    manifest = small_manifest(tmp_path)
    assert main(["validate", str(manifest), "--quiet"]) == 0
    assert "2 images, every file opens" in capsys.readouterr().out
    rows = read_manifest(manifest)
    write_dicom(tmp_path / "ok.dcm", np.full((8, 8), 100, np.uint16), ImageLaterality="L")
    write_dicom(tmp_path / "rgb.dcm", np.full((8, 8), 100, np.uint16), photometric="RGB")
    (tmp_path / "img0.png").write_bytes(b"not a png")
    extra = [{**rows[0], "image_path": name, "exam_id": "E"} for name in ("gone.png", "ok.dcm", "rgb.dcm")]
    bad = write_manifest([*rows, *extra], tmp_path / "bad.csv")
    assert main(["validate", str(bad), "--quiet"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in err[:-1]] == ["line 2", "line 4", "line 6"]   # every bad row, in order
    assert "is not a readable image" in err[0] and "gone.png: file: does not exist" in err[1]
    assert "PhotometricInterpretation" in err[2]
    assert err[-1] == f"{bad}: 3 of 5 image files cannot be read"


def test_adapt_never_writes_over_its_inputs(tmp_path, capsys):
    (tmp_path / "Info.txt").write_text("mdb001 G CIRC B 535 425 197\n")
    before = (tmp_path / "Info.txt").read_bytes()
    assert main(["adapt", "mini-mias", str(tmp_path / "Info.txt"), "--out", str(tmp_path / "Info.txt")]) == 2
    one_error_line(capsys, "is the adapter's input label file")
    assert (tmp_path / "Info.txt").read_bytes() == before
    assert main(["adapt", "mini-mias", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "m.csv")]) == 2
    one_error_line(capsys, "missing.txt: does not exist")
    (tmp_path / "set" / "normal").mkdir(parents=True)
    image = tmp_path / "set" / "normal" / "p1_L_CC.png"
    image.write_bytes(b"png bytes")
    assert main(["adapt", "folders", str(tmp_path / "set"), "--out", str(image)]) == 2
    one_error_line(capsys, "is one of the data set's images")
    assert image.read_bytes() == b"png bytes"


def test_synthesize_refuses_a_folder_that_is_not_a_cohort(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["synthesize", "--dataset", "ffdm", "--patients", "1", "--out", str(tmp_path), "--quiet"]) == 2
    one_error_line(capsys, "notes.txt", "not a synthetic cohort's")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert main(["synthesize", "--dataset", "ffdm", "--patients", "0", "--out", str(tmp_path / "c"), "--quiet"]) == 2
    one_error_line(capsys, "--patients: got 0")
    assert main(["synthesize", "--dataset", "ffdm", "--patients", "2", "--out", str(tmp_path / "notes.txt")]) == 2
    one_error_line(capsys, "is a file")


def test_build_summary_names_the_crop_outliers_and_the_command_to_look_at_them(tmp_path, capsys):
    breast = breast_image(100, 120, "left", level=0.5)
    barred = breast.copy()
    barred[20:27, :] = 0.3 + 0.6 * np.random.default_rng(0).random((7, 120))   # thick, textured, film-wide
    rows = []
    for name, image in (("a.png", breast), ("b.png", breast[:, ::-1]), ("bar.png", barred)):
        Image.fromarray(np.rint(image * 4095).astype(np.uint16)).save(tmp_path / name)
        rows.append({"image_path": name, "patient_id": name, "exam_id": name, "laterality": "L", "view": "CC",
                     "label": "negative", "source": "t"})
    write_manifest(rows, tmp_path / "m.csv")
    out = tmp_path / "d.h5"
    assert main(["build", str(tmp_path / "m.csv"), str(out), "--size", "32", "--workers", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "1 crop outliers (breast_extent < 0.85 or breast_fraction < 0.3" in printed
    command = printed.split("look at the worst crops with: ")[1].split()
    assert command[:4] == ["python", "-m", "data_prep", "plot-crops"] and command[4] == str(out)
    assert main(command[3:]) == 0 and Path(command[5]).stat().st_size > 0        # the command as printed works
