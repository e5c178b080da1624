"""Command line: synthesize -> build -> figures, adapters, and argument errors."""

import pytest

from data_prep.__main__ import main
from data_prep.build import load_dataset
from data_prep.manifest import read_manifest


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
