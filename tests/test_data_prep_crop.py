"""The breast crop on synthetic films with known breast boxes, a film built like the real CBIS-DDSM
failure, FFDM crops unchanged, and the crop geometry's coordinate mapping."""

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

from data_prep.parallel import parallel_map
from data_prep.manifest import read_manifest
from data_prep.preprocess import (THIN_RADIUS, breast_mask, edge_bands, mask_box, preprocess_steps, stored_scale,
                                  to_stored_coords)
from data_prep.readers import read_image
from data_prep.synthetic.anatomy import BreastShape, render_view
from data_prep.synthetic.cohort import synthesize

sys.path.insert(0, str(Path(__file__).parent))
from data_prep_fixtures import breast_image

#: Small films keep the test fast; below about 250 rows the bitmap font of the burned-in labels
#: (13 px at least) becomes a large share of the image.
FILM_SIZE = (256, 208)
FIXTURES = Path(__file__).parent / "data_prep_fixtures"


def box_iou(a, b) -> float:
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[2], b[2]))
    area = (a[1] - a[0]) * (a[3] - a[2]) + (b[1] - b[0]) * (b[3] - b[2])
    return inter / (area - inter)


def crop_one(task) -> tuple[dict, float, float]:
    """(truth row, IoU of the crop box with the true breast box in file coordinates, breast_extent)."""
    folder, row, cols = task
    image, _ = read_image(Path(folder) / row["image_path"])
    geometry = preprocess_steps(image, None, size=64)["geometry"]
    top, bottom, left, right = geometry.crop_box
    if geometry.flipped:  # the box is in the oriented image's columns
        left, right = cols - right, cols - left
    truth = [int(row[k]) for k in ("top", "bottom", "left", "right")]
    return row, box_iou((top, bottom, left, right), truth), geometry.breast_extent


def crop_results(folder: Path, cols: int, workers: int = 2) -> list[tuple[dict, float, float]]:
    with open(folder / "breast_box.csv", newline="") as f:
        truth = list(csv.DictReader(f))
    return list(parallel_map(crop_one, [(str(folder), row, cols) for row in truth], workers, progress=False))


def test_crop_holds_on_films_with_real_film_artifacts(tmp_path):
    """A few hundred DDSM-like films with what real digitized films carry: edge bands that brighten
    towards the edge (full, partial, with a gap, touching the breast), flat unexposed borders, frame
    lines, streaks across the breast, labels and markers across the skin line."""
    synthesize("ddsm", 70, seed=11, out_dir=tmp_path, image_size=FILM_SIZE, workers=2, progress=False)
    results = crop_results(tmp_path, FILM_SIZE[1])
    assert len(results) >= 200
    drawn = [set(r["artifacts"].split(";")) for r, _, _ in results]

    def films_with(test) -> int:
        return sum(any(test(name) for name in names) for names in drawn)

    # The cohort holds every kind of hard case, many times over.
    assert films_with(lambda a: a.startswith("band_") and a.endswith("_touching")) > 20
    assert films_with(lambda a: a.startswith("band_") and a.endswith("_partial")) > 20
    assert films_with(lambda a: a.startswith("band_") and a.endswith("_gap")) > 10
    assert films_with(lambda a: a.startswith("band_bottom")) > 50
    assert films_with(lambda a: a.startswith("frame_")) > 20
    assert films_with(lambda a: a == "streaks") > 20
    assert films_with(lambda a: a in ("marker_at_skin", "label_at_skin")) > 50
    assert sum(r["border_touches"] == "1" for r, _, _ in results) > 0.5 * len(results)
    bad = [(r["image_path"], r["artifacts"], round(iou, 3), round(extent, 3))
           for r, iou, extent in results if iou < 0.9 or extent < 0.9]
    assert not bad, bad


def reference_like_film(rows: int = 592, cols: int = 328) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A film like those of ``reference/real_film_crop_failure.png`` (1/8 of their 4,736 x 2,624 pixels).

    A left CC breast against the chest wall, large enough to reach the bottom edge there, on a
    black background; along the bottom a band 1.5% of the height, spanning the width, whose
    brightness rises from 0.4 at its inner edge to 0.9 at the film's edge, with film grain, and
    which the breast touches; the same band along the top; a thin bright line along the chest-wall
    edge; a view label. Returns (image as read, the true breast box: not covered by band or line).
    """
    spacing = 4736 * 0.05 / rows                               # 50 um digitizer pixels, 8x coarser
    shape = BreastShape(depth_mm=0.6 * cols * spacing, half_height_mm=0.52 * rows * spacing, density="c", beta=2.8)
    view = render_view(np.random.default_rng(3), shape, "CC", (rows, cols), spacing)
    breast = view.attenuation > 0
    rng = np.random.default_rng(4)
    image = np.where(breast, 0.25 + 0.7 * np.clip(view.attenuation, 0, 1), 0.0).astype(np.float32)
    image += rng.normal(0, 0.004, image.shape).astype(np.float32) * breast
    band = int(round(0.015 * rows))
    ramp = np.linspace(0.4, 0.9, band, dtype=np.float32)[:, None]     # rising towards the edge
    image[rows - band:] = ramp + rng.normal(0, 0.04, (band, cols))
    image[:band] = ramp[::-1] + rng.normal(0, 0.04, (band, cols))
    image[:, :3] = 0.85 + rng.normal(0, 0.04, (rows, 3))
    image[int(0.06 * rows): int(0.06 * rows) + 14, int(0.8 * cols): int(0.8 * cols) + 30] = 1.0  # "LCC"
    visible = breast.copy()
    visible[rows - band:] = visible[:band] = visible[:, :3] = False
    assert breast[rows - band - 1, :20].all()                # the breast touches the bottom band
    return np.clip(image, 0.0, 1.0), mask_box(visible)


def test_crop_of_a_film_like_the_real_failure():
    image, truth = reference_like_film()
    steps = preprocess_steps(image, "L", size=227)
    geometry = steps["geometry"]
    assert not geometry.flipped
    assert box_iou(geometry.crop_box, truth) >= 0.9
    assert geometry.breast_extent >= 0.9, geometry
    # Not one pixel of the bands beyond the breast is kept.
    mask = breast_mask(image)
    band = int(round(0.015 * image.shape[0]))
    assert not mask[-band:, truth[3]:].any() and not mask[:band, truth[3]:].any()
    # (The crop before edge bands were handled kept the bottom band: the whole film's width, extent 0.48.)


def test_edge_bands_cut_a_partial_band_with_a_gap_touching_the_breast():
    image = breast_image(200, 160, "left", level=0.5)            # the breast reaches rows 16..183
    image[192:] = np.linspace(0.4, 0.9, 8, dtype=np.float32)[:, None]  # bottom band, 8 rows, rising
    image[192:, 100:115] = 0.0                                    # a gap
    image[192:, 140:] = 0.0                                       # a partial band: it stops short
    image[:, :5] = 0.85                                           # a flat border along the chest wall
    bands = edge_bands(image, image > 0.2, 0.0)
    assert bands[192:, 5:100].all() and bands[192:, 115:140].all()  # the band, beyond and below the breast
    assert not bands[192:, 100:115].any() and not bands[192:, 140:].any()
    assert bands[:, :5].all() and not bands[100, 5:].any()        # the border, and the breast beside it
    assert not bands[20:190, 20:100].any()                        # the breast itself


def test_a_streak_and_a_label_across_the_skin_line_are_cut_off():
    clean = breast_image(200, 160, "left", level=0.5)           # rows 16..184, columns 0..112
    image = clean + 0.06 * (clean == 0)                           # scanned film: its base is not black
    image[:, 60:62] += 0.3                                        # a streak along the scan direction, film-long
    image[100, 108:136] = 1.0                                     # text strokes joined to the nipple
    image[95:106, 112:136:4] = 1.0
    top, bottom, left, right = mask_box(breast_mask(image))
    true_top, true_bottom, _, true_right = mask_box(clean > 0)
    stub = THIN_RADIUS + 1                       # what is left of a cut attachment beyond the breast's body
    assert true_top - stub <= top <= true_top and true_bottom <= bottom <= true_bottom + stub   # not 0 and 200
    assert true_right <= right <= true_right + 2 * stub                                          # not 136


def test_crop_of_ffdm_like_images_is_unchanged(tmp_path):
    """FFDM-like images get the very crop boxes and flips they got before edge bands and thin
    attachments were handled. ``ffdm_crop_boxes.csv`` was written by that code (preprocessing
    version 2, commit f29be0d) with ``preprocess_steps(image, laterality, size=64)`` on the cohorts it
    names: 16 patients of seed 4 at 256 x 208 and 5 of seed 5 at 640 x 512 (the mask subsampled)."""
    with open(FIXTURES / "ffdm_crop_boxes.csv", newline="") as f:
        before = list(csv.DictReader(f))
    changed = []
    for size, seed in sorted({(w["image_size"], int(w["seed"])) for w in before}):
        expected = [w for w in before if (w["image_size"], int(w["seed"])) == (size, seed)]
        patients = len({w["image_path"].split("/")[1] for w in expected})
        manifest = synthesize("ffdm", patients, seed=seed, out_dir=tmp_path / size, workers=2, progress=False,
                              image_size=tuple(int(v) for v in size.split("x")))
        rows = {r["image_path"]: r for r in read_manifest(manifest)}
        assert set(rows) == {w["image_path"] for w in expected}
        for w in expected:
            image, _ = read_image(rows[w["image_path"]]["path"])
            geometry = preprocess_steps(image, rows[w["image_path"]]["laterality"], size=64)["geometry"]
            want = (tuple(int(w[k]) for k in ("top", "bottom", "left", "right")), bool(int(w["flipped"])))
            if (tuple(geometry.crop_box), geometry.flipped) != want:
                changed.append((size, w["image_path"], want, geometry.crop_box, geometry.flipped))
    assert len(before) > 60 and not changed, changed


def test_crop_of_ffdm_like_images_still_matches_the_truth(tmp_path):
    synthesize("ffdm", 12, seed=4, out_dir=tmp_path, image_size=FILM_SIZE, workers=1, progress=False)
    results = crop_results(tmp_path, FILM_SIZE[1], workers=1)
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
