"""The breast crop on synthetic films with known breast boxes, and the crop geometry's coordinate mapping."""

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

from data_prep.preprocess import preprocess_steps, stored_scale, to_stored_coords
from data_prep.readers import read_image
from data_prep.synthetic.cohort import synthesize

sys.path.insert(0, str(Path(__file__).parent))
from data_prep_fixtures import breast_image

#: Small films keep the test fast; below about 250 rows the bitmap font of the burned-in labels
#: (13 px at least) becomes a large share of the image.
FILM_SIZE = (256, 208)


def box_iou(a, b) -> float:
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[2], b[2]))
    area = (a[1] - a[0]) * (a[3] - a[2]) + (b[1] - b[0]) * (b[3] - b[2])
    return inter / (area - inter)


def crop_results(folder: Path, cols: int) -> list[tuple[dict, float, float]]:
    """(truth row, IoU of the crop box with the true breast box in file coordinates, breast_extent) per image."""
    results = []
    with open(folder / "breast_box.csv", newline="") as f:
        for row in csv.DictReader(f):
            image, _ = read_image(folder / row["image_path"])
            geometry = preprocess_steps(image, None, size=64)["geometry"]
            top, bottom, left, right = geometry.crop_box
            if geometry.flipped:  # the box is in the oriented image's columns
                left, right = cols - right, cols - left
            truth = [int(row[k]) for k in ("top", "bottom", "left", "right")]
            results.append((row, box_iou((top, bottom, left, right), truth), geometry.breast_extent))
    return results


def test_crop_covers_the_breast_on_films_with_touching_borders_and_labels(tmp_path):
    synthesize("ddsm", 70, seed=11, out_dir=tmp_path, image_size=FILM_SIZE, workers=1, progress=False)
    results = crop_results(tmp_path, FILM_SIZE[1])
    assert len(results) >= 200
    touching = [r for r, _, _ in results if r["border_touches"] == "1"]
    labelled = [r for r, _, _ in results if r["label_touches"] == "1"]
    assert 0.25 * len(results) < len(touching) < 0.55 * len(results)     # the cohort holds the hard cases
    assert len(labelled) > 0.2 * len(results)
    bad = [(r["image_path"], r["artifacts"], round(iou, 3), round(extent, 3))
           for r, iou, extent in results if iou < 0.9 or extent < 0.9]
    assert not bad, bad


def test_crop_of_ffdm_like_images_still_matches_the_truth(tmp_path):
    synthesize("ffdm", 12, seed=4, out_dir=tmp_path, image_size=FILM_SIZE, workers=1, progress=False)
    results = crop_results(tmp_path, FILM_SIZE[1])
    assert min(iou for _, iou, _ in results) > 0.93 and min(extent for _, _, extent in results) > 0.9


@pytest.mark.parametrize("aspect", ["stretch", "pad"])
@pytest.mark.parametrize("chest_wall", ["left", "right"])
def test_to_stored_coords_puts_a_dot_where_it_lands(aspect, chest_wall):
    image = breast_image(90, 160, "left", level=0.4)  # wider than tall: "pad" adds rows above the breast
    dot = (33, 41)                                     # in the left-oriented drawing
    image[dot[0] - 1: dot[0] + 2, dot[1] - 1: dot[1] + 2] = 1.0
    col = dot[1]
    if chest_wall == "right":
        image, col = image[:, ::-1].copy(), image.shape[1] - 1 - dot[1]
    steps = preprocess_steps(image, None, size=48, aspect=aspect, equalize="none")
    geometry = steps["geometry"]
    assert geometry.flipped == (chest_wall == "right") and geometry.original_shape == (90, 160)
    row, mapped_col = to_stored_coords([dot[0]], [col], geometry.crop_box, geometry.flipped,
                                       geometry.original_shape, 48, aspect)
    found = np.unravel_index(np.argmax(steps["resized"]), steps["resized"].shape)
    assert abs(found[0] - row[0]) <= 1 and abs(found[1] - mapped_col[0]) <= 1, (found, row, mapped_col)


def test_stored_scale():
    assert stored_scale((10, 110, 0, 50), 227) == (2.27, 4.54)
    assert stored_scale((10, 110, 0, 50), 227, "pad") == (2.27, 2.27)
    with pytest.raises(ValueError, match="aspect"):
        stored_scale((0, 1, 0, 1), 8, "crop")
