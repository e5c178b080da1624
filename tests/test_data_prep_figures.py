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
