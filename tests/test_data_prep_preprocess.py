"""Preprocessing steps on hand-made images with known answers."""

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep.manifest import DataPrepError
from data_prep.preprocess import (
    bicubic_weights,
    breast_mask,
    chest_wall_side,
    crop_to_breast,
    equalize_histogram,
    keys_cubic,
    orient,
    pad_to_square,
    preprocess_image,
    preprocess_steps,
    resize_bicubic,
    resize_to,
    to_uint8,
)

sys.path.insert(0, str(Path(__file__).parent))
from data_prep_fixtures import breast_image


def test_breast_mask_keeps_breast_drops_label_fills_holes():
    image = breast_image(120, 90)
    truth = image > 0
    image[50:55, 10:15] = 0.0               # a dark hole inside the breast
    image[5:12, 75:88] = 1.0                # a burned-in label, separate from the breast
    image += 0.02 * (image == 0)            # film-like background level, not 0
    mask = breast_mask(image)
    assert not mask[5:12, 75:88].any()
    assert mask[50:55, 10:15].all()
    assert (mask == truth).mean() > 0.995


def test_breast_mask_of_blank_image_is_empty():
    assert not breast_mask(np.zeros((20, 20), np.float32)).any()


def test_chest_wall_side_and_orient():
    left = breast_image(chest_wall="left", lesion=True)
    right = breast_image(chest_wall="right", lesion=True)
    assert chest_wall_side(left > 0) == "left" and chest_wall_side(right > 0) == "right"
    flipped, mask = orient(right, "R")
    np.testing.assert_array_equal(flipped, left)      # a right breast comes back like a left one
    np.testing.assert_array_equal(mask, left > 0)
    unchanged, _ = orient(left, "L")
    assert unchanged is left
    # The content wins over the laterality: a right breast already stored chest-wall-left stays.
    assert orient(left, "R")[0] is left
    # Ambiguous content (a centred blob touching neither edge): the laterality decides.
    blob = np.zeros((40, 40), np.float32)
    blob[10:30, 10:30] = 1.0
    assert chest_wall_side(blob > 0) is None
    np.testing.assert_array_equal(orient(blob, "R")[0], blob[:, ::-1])
    assert orient(blob, "L")[0] is blob


def test_crop_to_breast_box_and_blanking():
    image = np.zeros((50, 60), np.float32)
    image[10:30, 0:25] = 0.6
    image[12, 20] = 0.9
    mask = image > 0
    image[35:38, 40:45] = 1.0  # outside the given mask: must not appear or widen the box
    cropped, cropped_mask = crop_to_breast(image, mask)
    assert cropped.shape == (20, 25) and cropped_mask.all()
    assert cropped[2, 20] == pytest.approx(0.9)
    with pytest.raises(DataPrepError, match="no breast found"):
        crop_to_breast(np.zeros((5, 5), np.float32), np.zeros((5, 5), bool))


def test_keys_kernel_values_and_partition_of_unity():
    np.testing.assert_allclose(keys_cubic(np.array([0.0, 1.0, 2.0, 2.5])), [1.0, 0.0, 0.0, 0.0])
    assert keys_cubic(np.array([0.5]))[0] == pytest.approx(0.5625)   # (a+2)/8 - (a+3)/4 + 1, a = -0.5
    assert keys_cubic(np.array([1.5]))[0] == pytest.approx(-0.0625)
    x = np.linspace(0, 1, 11)
    total = sum(keys_cubic(x - k) for k in range(-2, 4))
    np.testing.assert_allclose(total, 1.0, atol=1e-12)


@pytest.mark.parametrize("shape,size", [((300, 200), 64), ((57, 91), 227), ((97, 97), 31), ((40, 20), 99)])
def test_resize_matches_pillow_bicubic(shape, size):
    """Pillow's BICUBIC (Keys a=-0.5, support scaled when shrinking) is the reference."""
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    ours = resize_bicubic(image, size)
    reference = np.asarray(Image.fromarray(image, mode="F").resize((size, size), Image.BICUBIC))
    np.testing.assert_allclose(ours, reference, atol=2e-6)


def test_resize_weights_rows_sum_to_one_and_constant_survives():
    weights = bicubic_weights(1000, 37).toarray()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(resize_to(np.full((50, 80), 0.3, np.float32), (13, 77)), 0.3, atol=1e-6)


def test_pad_keeps_aspect_and_chest_wall():
    image = np.zeros((100, 50), np.float32)
    image[40:60, 0:20] = 1.0          # a 20 x 20 square at the chest wall (left)
    padded = pad_to_square(image)
    assert padded.shape == (100, 100) and padded[40:60, 0:20].all() and padded[:, 50:].sum() == 0
    out = resize_bicubic(image, 50, aspect="pad") > 0.5
    rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    assert len(rows) == len(cols) == 10 and cols[0] == 0   # still square, still at the left edge
    stretched = resize_bicubic(image, 50, aspect="stretch") > 0.5
    assert np.flatnonzero(stretched.any(axis=0)).size == 20  # stretch doubles the width
    with pytest.raises(ValueError, match="aspect"):
        resize_bicubic(image, 50, aspect="crop")


def test_global_equalization_known_answer():
    image = np.array([[0.1, 0.2], [0.3, 0.4], [0.9, 0.0]], np.float32)
    mask = np.array([[1, 1], [1, 1], [0, 0]], bool)
    out = equalize_histogram(image, "global", mask)
    np.testing.assert_allclose(out, [[0.25, 0.5], [0.75, 1.0], [0.0, 0.0]])


def test_global_equalization_flattens_and_keeps_order():
    rng = np.random.default_rng(1)
    image = (rng.random((64, 64)) ** 3).astype(np.float32)   # skewed histogram
    out = equalize_histogram(image, "global")
    np.testing.assert_allclose(np.quantile(out, [0.1, 0.5, 0.9]), [0.1, 0.5, 0.9], atol=0.01)
    order = np.argsort(image.ravel())
    assert np.all(np.diff(out.ravel()[order]) >= 0)


def test_clahe_and_none():
    rng = np.random.default_rng(2)
    image = (0.2 + 0.3 * rng.random((64, 64))).astype(np.float32)
    mask = np.zeros((64, 64), bool)
    mask[:, :40] = True
    clahe = equalize_histogram(image, "clahe", mask)
    assert clahe[:, 40:].max() == 0 and 0 <= clahe.min() and clahe.max() <= 1
    assert clahe[mask].std() > image[mask].std()           # contrast was stretched
    plain = equalize_histogram(image, "none", mask)
    np.testing.assert_allclose(plain[mask], image[mask])
    with pytest.raises(ValueError, match="equalize"):
        equalize_histogram(image, "gamma", mask)


def test_to_uint8_rounds_and_clips():
    np.testing.assert_array_equal(to_uint8(np.array([-1.0, 0.0, 0.5, 1.0, 2.0])), [0, 0, 128, 255, 255])


def test_preprocess_right_breast_equals_mirrored_left():
    left = breast_image(160, 120, "left", lesion=True)
    left += np.linspace(0, 0.2, 120, dtype=np.float32)[None, :] * (left > 0)   # some texture
    right = left[:, ::-1].copy()
    a = preprocess_image(left, "L", size=48)
    b = preprocess_image(right, "R", size=48)
    assert a.shape == (48, 48) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    steps = preprocess_steps(right, "R", size=48)
    assert steps["flipped"] and not preprocess_steps(left, "L", size=48)["flipped"]
    # The lesion (upper half, near the chest wall) is the brightest part after equalization.
    assert a[10:22, 5:25].max() == 255
