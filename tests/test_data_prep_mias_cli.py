"""mini-MIAS adapter tried as a new user would, through ``python -m data_prep adapt mini-mias``: files
that are not an Info.txt, bad fields and missing images are one clear error each, nothing is written."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
GOOD = "mdb001 G CIRC B 60 40 9\nmdb002 F NORM\nmdb003 D CALC M\n"


def adapt(folder: Path, *options: str) -> subprocess.CompletedProcess:
    """Run the documented command on ``folder/Info.txt``, writing ``folder/mias.csv``."""
    return subprocess.run([sys.executable, "-m", "data_prep", "adapt", "mini-mias", str(folder / "Info.txt"),
                           "--out", str(folder / "mias.csv"), *options], cwd=ROOT, capture_output=True, text=True)


def with_images(folder: Path, numbers=(1, 2, 3)) -> Path:
    for number in numbers:
        Image.fromarray(np.zeros((128, 128), np.uint8)).save(folder / f"mdb{number:03d}.pgm")
    return folder


NOT_AN_INFO_TXT = {
    "empty": (b"", "is empty"),
    "binary": (bytes(np.random.default_rng(0).integers(128, 256, 400, dtype=np.uint8)), "is not text"),
    "utf16": (GOOD.encode("utf-16"), "is UTF-16 text"),
    "semicolons": (GOOD.replace(" ", ";").encode(),
                   "line 1: REFNUM 'mdb001;G;CIRC;B;60;40;9': fields separated by ';'"),
    "notes only": (b"MIAS database, reference list\nno reference lines here\n", "holds no reference line"),
}


def test_a_file_that_is_not_an_info_txt_is_one_error_line(tmp_path):
    runs = {}
    for case, (content, _) in NOT_AN_INFO_TXT.items():  # started together: each is a fresh Python process
        folder = tmp_path / case.replace(" ", "_")
        folder.mkdir()
        (with_images(folder) / "Info.txt").write_bytes(content)
        runs[case] = (folder, subprocess.Popen(
            [sys.executable, "-m", "data_prep", "adapt", "mini-mias", str(folder / "Info.txt"), "--out",
             str(folder / "mias.csv")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for case, (folder, run) in runs.items():
        _, stderr = run.communicate()
        says = NOT_AN_INFO_TXT[case][1]
        assert run.returncode == 2, (case, stderr)
        assert stderr.count("\n") == 1 and stderr.startswith(f"error: {folder / 'Info.txt'}: "), (case, stderr)
        assert says in stderr and "expected" in stderr, (case, stderr)
        assert not (folder / "mias.csv").exists()


def test_bad_fields_are_named_by_line_and_field(tmp_path):
    (with_images(tmp_path) / "Info.txt").write_text("mdb001 X CIRC B 60 40\nmdb002 F NORM\nmdb003 D LUMP Q\n")
    done = adapt(tmp_path)
    assert done.returncode == 2 and not (tmp_path / "mias.csv").exists()
    assert "line 1, column 'BG': got 'X', expected F or G or D" in done.stderr
    assert "line 1, column 'RADIUS': got ''" in done.stderr
    assert "line 3, column 'CLASS': got 'LUMP'" in done.stderr and "line 3, column 'SEVERITY': got 'Q'" in done.stderr


def test_a_missing_image_is_an_error_or_left_out_and_counted(tmp_path):
    (with_images(tmp_path, numbers=(1, 2)) / "Info.txt").write_text(GOOD)
    done = adapt(tmp_path)
    assert done.returncode == 2 and not (tmp_path / "mias.csv").exists()
    assert f"line 3, column 'REFNUM': got 'mdb003', expected a file {tmp_path / 'mdb003.pgm'}" in done.stderr
    done = adapt(tmp_path, "--skip-missing")
    assert done.returncode == 0, done.stderr
    assert "1 images left out of the manifest (image file missing (--skip-missing): 1)" in done.stderr
    assert done.stdout.strip() == f"{tmp_path / 'mias.csv'}: 2 images"
    assert "mias.findings.csv: 1 findings" in done.stderr        # mdb001's circle; mdb003 is left out
