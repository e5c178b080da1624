"""Figures: written as PNGs with one row per image / per (source, class)."""

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep.build import build_dataset
from data_prep.figures import plot_examples, plot_preprocessing_steps
from data_prep.readers import ImageReadError
from data_prep.synthetic.cohort import synthesize

sys.path.insert(0, str(Path(__file__).parent))
from data_prep_fixtures import breast_image, write_dicom


def test_preprocessing_steps_figure(tmp_path):
    dicom = write_dicom(tmp_path / "r.dcm", np.rint(breast_image(90, 70, "right") * 3000).astype(np.uint16),
                        ImageLaterality="R", WindowCenter=1500, WindowWidth=3000)
    Image.fromarray(np.rint(breast_image() * 255).astype(np.uint8)).save(tmp_path / "l.png")
    one = Image.open(plot_preprocessing_steps([dicom], tmp_path / "one.png", size=32))
    two = Image.open(plot_preprocessing_steps([dicom, tmp_path / "l.png"], tmp_path / "two.png", ["R", "L"], size=32))
    assert one.size[0] == two.size[0] and two.size[1] > 1.8 * one.size[1]   # one row per image, 4 columns
    with pytest.raises(ImageReadError):
        plot_preprocessing_steps([tmp_path / "missing.dcm"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_examples_figure_from_manifest_and_h5(tmp_path):
    manifest = synthesize("ffdm", 6, seed=0, out_dir=tmp_path / "c", image_size=(128, 104), workers=1, progress=False)
    h5 = build_dataset(manifest, tmp_path / "c.h5", size=32, workers=1, progress=False)
    single = Image.open(plot_examples(manifest, tmp_path / "m.png", per_class=2))
    both = Image.open(plot_examples([manifest, h5], tmp_path / "both.png", per_class=2))
    assert both.size[1] > 1.8 * single.size[1]                                 # 3 class rows per source


def test_examples_figure_draws_each_annotation_as_annotated(tmp_path, monkeypatch):
    from matplotlib.patches import Circle, Polygon, Rectangle

    from data_prep import figures
    from data_prep.findings import Finding, findings_path, write_findings
    from data_prep.manifest import write_manifest

    Image.fromarray(np.rint(breast_image(90, 70) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    write_manifest([{"image_path": "a.png", "patient_id": "p", "exam_id": "e", "laterality": "L", "view": "CC",
                     "label": "malignant", "source": "t"}], tmp_path / "set.csv")
    write_findings(findings_path(tmp_path / "set.csv"), [
        Finding("a.png", "mass", "malignant", "outline", (20.0, 20.0, 40.0), (10.0, 30.0, 10.0)),
        Finding("a.png", "calc", "incidental", "circle", (50.0,), (20.0,), 3.0),
        Finding("a.png", "box", "malignant", "box", (60.0, 70.0), (5.0, 25.0))])
    drawn = []
    original = figures._draw_finding
    monkeypatch.setattr(figures, "_draw_finding", lambda ax, f: (original(ax, f), drawn.append(ax.patches[-1])))
    figures.plot_examples(tmp_path / "set.csv", tmp_path / "e.png", per_class=1)
    assert [type(p) for p in drawn] == [Polygon, Circle, Rectangle]
    assert [p.get_edgecolor()[:3] for p in drawn] == [(1.0, 0.0, 0.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0)]
    assert drawn[2].get_xy() == (4.5, 59.5) and (drawn[2].get_width(), drawn[2].get_height()) == (21.0, 11.0)
