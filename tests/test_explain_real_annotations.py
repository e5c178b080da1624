"""Explanations scored against a public set's own annotations: a VinDr-Mammo-format cohort (DICOMs,
breast-level_annotations.csv and finding_annotations.csv with its lesion boxes), adapted by
`python -m data_prep adapt vindr`, trained on with `run.py --data`; the run's pointing game, `run.py
explain` and `run.py predict --explain` read the boxes as they read the synthetic findings."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import run
from data_prep import load_findings
from data_prep.__main__ import main as data_prep_main

sys.path.insert(0, str(Path(__file__).parent))
from data_prep_fixtures import breast_image, write_dicom  # noqa: E402

CC = [{"CodeValue": "399162004", "CodingSchemeDesignator": "SCT"}]
BREAST = "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,breast_density,split"
FINDINGS = ("image_id,study_id,series_id,laterality,view_position,height,width,breast_birads,breast_density,"
            "finding_categories,finding_birads,xmin,ymin,xmax,ymax,split")


def vindr_cohort(root: Path, n_studies=40, seed=0):
    """Half the studies BI-RADS 5 with a bright mass in the left breast (its box in finding_annotations.csv),
    half BI-RADS 1; two CC views a study (160 x 120), in VinDr-Mammo's own layout and columns."""
    rng = np.random.default_rng(seed)
    breast_rows, finding_rows = [BREAST], [FINDINGS]
    for s in range(n_studies):
        study = f"st{s:03d}"
        (root / "images" / study).mkdir(parents=True)
        for side, chest in (("L", "left"), ("R", "right")):
            image = breast_image(160, 120, chest, level=0.45) + rng.normal(0, 0.02, (160, 120)) * (
                breast_image(160, 120, chest) > 0)
            cancer = s % 2 == 0 and side == "L"
            if cancer:
                r, c = int(rng.integers(60, 110)), int(rng.integers(20, 45))
                rr, cc = np.mgrid[0:160, 0:120]
                image[np.hypot(rr - r, cc - c) <= 8] = 0.95
                finding_rows.append(f"{study}{side},{study},x,{side},CC,160,120,BI-RADS 5,DENSITY B,['Mass'],"
                                    f"BI-RADS 5,{c - 9}.0,{r - 9}.0,{c + 9}.0,{r + 9}.0,training")
            write_dicom(root / "images" / study / f"{study}{side}.dicom",
                        np.rint(np.clip(image, 0, 1) * 4095).astype(np.uint16), ImageLaterality=side,
                        ViewCodeSequence=CC, WindowCenter=2048, WindowWidth=4096)
            birads = 5 if s % 2 == 0 else 1
            breast_rows.append(f"{study},x,{study}{side},{side},CC,160,120,BI-RADS {birads},DENSITY B,training")
    (root / "breast-level_annotations.csv").write_text("\n".join(breast_rows) + "\n")
    (root / "finding_annotations.csv").write_text("\n".join(finding_rows) + "\n")


@pytest.fixture(scope="module")
def vindr_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vindr")
    vindr_cohort(tmp / "vindr")
    manifest = tmp / "vindr.csv"
    assert data_prep_main(["adapt", "vindr", str(tmp / "vindr" / "breast-level_annotations.csv"),
                           "--out", str(manifest)]) == 0
    out = tmp / "run"
    assert run.main(["--preset", "tiny", "--data", f"ffdm={manifest}", "--scenario", "malignant-vs-negative",
                     "--test-fraction", "0.3", "--iters", "20", "--fn-analysis", "off", "--n-boot", "50",
                     "--device", "cpu", "--no-progress", "--cluster", "here", "--workers", "2",
                     "--cache-dir", str(tmp / "cache"), "--out", str(out)]) == 0
    return tmp, manifest, out


def test_the_run_scores_its_maps_against_the_vindr_boxes(vindr_run):
    tmp, _, out = vindr_run
    built = next((tmp / "cache" / "built").glob("ffdm-*.h5"))
    boxes = [f for per_image in load_findings(built) for f in per_image]
    assert len(boxes) == 20 and {(f.shape, f.role) for f in boxes} == {("box", "malignant")}
    [result] = json.loads((out / "explain.json").read_text())["results"]
    pg = result["pointing_game"]["gradcam"]
    assert result["ground_truth"] and pg["n_images"] >= 3       # the malignant test images, each with its box
    assert 0 < pg["chance"] < 1 and pg["p_value"] is not None
    assert "| gradcam | " in (out / "report.md").read_text()


def test_run_py_explain_reads_the_same_boxes(vindr_run, capsys):
    tmp, _, out = vindr_run
    assert run.main(["explain", str(out), "--methods", "gradcam", "gradient", "--cache-dir", str(tmp / "cache"),
                     "--device", "cpu", "--no-progress", "--randomization-images", "4"]) == 0
    text = (out / "explain.md").read_text()
    assert "| gradient | " in text and "No ground-truth findings" not in text
    pg = json.loads((out / "explain.json").read_text())["results"][0]["pointing_game"]
    assert set(pg) == {"gradcam", "gradient"} and pg["gradient"]["n_images"] >= 3


def test_predict_explain_outlines_the_annotated_lesions(vindr_run, tmp_path, capsys):
    """The same image's overlay with and without the findings table: the only difference is the red box."""
    _, manifest, out = vindr_run
    model = out / "jobs/ffdm/malignant-vs-negative/tf0.3/main/model.h5"
    assert run.main(["predict", str(model), str(manifest), "--out", str(tmp_path / "a.csv"), "--explain",
                     str(tmp_path / "with"), "--device", "cpu", "--no-progress", "--workers", "1", "--n-boot", "20"]) == 0
    table = manifest.with_name("vindr.findings.csv")
    table.rename(table.with_suffix(".off"))
    try:
        assert run.main(["predict", str(model), str(manifest), "--out", str(tmp_path / "b.csv"), "--explain",
                         str(tmp_path / "without"), "--device", "cpu", "--no-progress", "--workers", "1",
                         "--n-boot", "20"]) == 0
    finally:
        table.with_suffix(".off").rename(table)
    name = "00000_st000L_gradcam.png"       # study 0's left breast holds a mass
    a = np.asarray(Image.open(tmp_path / "with" / name).convert("RGB")).astype(int)
    b = np.asarray(Image.open(tmp_path / "without" / name).convert("RGB")).astype(int)
    changed = np.abs(a - b).sum(axis=2) > 60
    assert changed.sum() > 20
    red = a[changed]
    assert np.mean((red[:, 0] > 150) & (red[:, 1] < 100) & (red[:, 2] < 100)) > 0.5
    no_mass = "00001_st000R_gradcam.png"
    assert np.array_equal(np.asarray(Image.open(tmp_path / "with" / no_mass)),
                          np.asarray(Image.open(tmp_path / "without" / no_mass)))
