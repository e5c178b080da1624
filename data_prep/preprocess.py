"""The paper's preprocessing as small ordered steps.

Paper (Materials and Methods): "images were preprocessed using standard techniques including
histogram equalization, mean subtracting, and downsampling using standard bicubic interpolation to
227 x 227 pixels from original resolution."

The order used here, each step one function:

1. :func:`breast_mask`     edge strips out, threshold, largest connected component (finds the breast);
2. :func:`orient`          every breast faces the same way, like a left breast (chest wall left);
3. :func:`crop_to_breast`  crop to the mask's bounding box, blank what is outside the mask
                           (removes film labels and markers);
4. :func:`resize_bicubic`  anti-aliased bicubic downsampling to size x size ("stretch" as the
                           paper, or "pad" to a square first);
5. :func:`equalize_histogram`  global histogram equalization (the paper) or CLAHE, over the breast;
6. :func:`to_uint8`        store as 8-bit.

Equalization comes after downsampling: it is a per-pixel mapping, so doing it last gives the
stored pixels an exactly flat histogram, and it costs 227^2 instead of ~10^7 pixels.
Mean subtraction is deliberately *not* done here: it uses the training split's mean, which the
training code computes (see :func:`data_prep.build.compute_mean`) and records.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
from scipy import ndimage
from skimage.exposure import equalize_adapthist
from skimage.filters import threshold_multiotsu, threshold_otsu

from .manifest import DataPrepError

ASPECTS = ("stretch", "pad")
EQUALIZE_METHODS = ("global", "clahe", "none")
#: The breast mask is found on a copy subsampled to at most this many pixels per side.
MASK_MAX_SIDE = 512
#: Keys' cubic convolution parameter; -0.5 is the "bicubic" of MATLAB imresize, Pillow and OpenCV.
KEYS_A = -0.5
#: Where the foreground threshold lies between the background level and Otsu's threshold (breast_mask).
THRESHOLD_FRACTION = 0.3
#: A film border is looked for up to this share of the image deep from each edge (edge_strips).
STRIP_MAX_WIDTH = 0.15
#: A strip line's 10th-90th percentile spread, as a share of its height above the background.
STRIP_FLATNESS = 0.15
#: Version of the preprocessing's output; builds record it and rebuild when it changes.
#: 2: film borders and scanner edges removed before thresholding, three-class background level.
PREPROCESS_VERSION = 2


def edge_strips(small: np.ndarray, otsu: float, background_level: float) -> np.ndarray:
    """Boolean map of bright, flat, straight strips anchored at the image edges.

    Film scans carry the cassette's unexposed border (base + fog, the brightest film there is) and
    the scanner's edge as straight strips along one or more image edges; where they touch the breast
    they join its connected component and the crop keeps the whole film. Seen from each edge, a
    line of pixels parallel to it is a strip line when at least 90% of it is above Otsu's threshold
    (it spans the edge, which the rounded breast does not) and it is flat: its 10th-90th percentile
    spread is under :data:`STRIP_FLATNESS` of its height above the background (tissue is textured;
    the unexposed film is uniform). The strip is the run of strip lines starting within the first 3
    lines, at most :data:`STRIP_MAX_WIDTH` of the image deep; it is then grown into the pixels of
    that edge band that are as bright as the strip (within the same tolerance) and connected to it,
    which takes in a tilted or ragged strip's inner edge.
    """
    strips = np.zeros(small.shape, bool)
    for turn in range(4):  # each image edge in turn is the first row of the rotated views
        lines, marks = np.rot90(small, turn), np.rot90(strips, turn)
        depth = max(1, int(STRIP_MAX_WIDTH * lines.shape[0]))
        p10, p50, p90 = np.percentile(lines[:depth], [10, 50, 90], axis=1)
        is_strip = (p10 > otsu) & (p90 - p10 < STRIP_FLATNESS * (p50 - background_level))
        starts = np.flatnonzero(is_strip[:3])
        if starts.size == 0:
            continue
        start = end = int(starts[0])
        while end < depth and is_strip[end]:
            end += 1
        level = np.median(lines[start:end])
        near, _ = ndimage.label(lines[:depth] >= level - STRIP_FLATNESS * (level - background_level))
        marks[:depth] |= np.isin(near, np.unique(near[start:end])) & (near > 0)
        marks[:end] = True
    return strips


def breast_mask(image: np.ndarray, threshold_fraction: float = THRESHOLD_FRACTION) -> np.ndarray:
    """Boolean mask of the breast: remove edge strips, threshold, keep the largest component, fill holes.

    1. Film borders and scanner edges (:func:`edge_strips`) are taken out first, so they can neither
       join the breast nor raise the thresholds.
    2. On the remaining pixels, Otsu's threshold separates background from tissue. The background
       level is the median of the lowest of three Otsu classes (background, fat, dense): on film,
       fat is close to the background, and in a large breast it outnumbers the background, so the
       two-class split would count fat as background. The threshold used lies
       ``threshold_fraction`` of the way from that level up to Otsu's threshold: at 0.3 it keeps the
       thin, dark breast periphery, yet stays above the background and its noise, which on film is
       far from 0.
    3. The largest 8-connected component is the breast; labels, markers and dust are smaller
       components and drop out. Holes (dark fatty regions enclosed by tissue) are filled.

    For speed the mask is computed on a copy subsampled to at most :data:`MASK_MAX_SIDE` pixels per
    side and expanded back by repetition; its coarser edge (a few pixels of the original) is
    invisible after downsampling to 227 pixels.
    """
    step = max(1, -(-max(image.shape) // MASK_MAX_SIDE))
    small = image[::step, ::step]
    if small.max() <= small.min():
        return np.zeros(image.shape, bool)
    sample = small[::2, ::2].ravel()  # a quarter of the pixels give the same histogram statistics
    otsu = threshold_otsu(sample)
    strips = edge_strips(small, otsu, np.median(sample[sample <= otsu]))
    sample = small[~strips][::4]
    if sample.size == 0 or sample.max() <= sample.min():
        return np.zeros(image.shape, bool)
    otsu = threshold_otsu(sample)
    try:
        low = min(otsu, threshold_multiotsu(sample, classes=3)[0])
    except ValueError:  # fewer than three grey levels: the two-class split is the background split
        low = otsu
    background_level = np.median(sample[sample <= low])
    foreground = (small > background_level + threshold_fraction * (otsu - background_level)) & ~strips
    labels, count = ndimage.label(foreground, structure=np.ones((3, 3), bool))
    if count == 0:
        return np.zeros(image.shape, bool)
    largest = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    # A hole is a background component that does not touch the image border.
    background, count = ndimage.label(~largest)
    is_hole = np.ones(count + 1, bool)
    is_hole[0] = False
    is_hole[np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])] = False
    filled = largest | is_hole[background]
    return np.repeat(np.repeat(filled, step, axis=0), step, axis=1)[: image.shape[0], : image.shape[1]]


def chest_wall_side(mask: np.ndarray) -> str | None:
    """'left' or 'right': the side of the breast that rests on the chest wall; None when the mask cannot tell.

    The chest wall is the breast's straight side: the mask reaches its own bounding box's edge
    there along much of its height, and hardly at all on the rounded nipple side. We compare the
    fraction of rows in which the mask reaches each side band (2% of the image width) of its
    bounding box; measured from the box, not the image, because a film border removed at the
    chest-wall edge leaves the breast a few pixels away from the image edge.
    """
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return None
    band = max(1, mask.shape[1] // 50)
    left = mask[:, cols[0]: cols[0] + band].any(axis=1).mean()
    right = mask[:, max(cols[-1] + 1 - band, 0): cols[-1] + 1].any(axis=1).mean()
    if abs(left - right) < 0.1:
        return None
    return "left" if left > right else "right"


def orient(image: np.ndarray, laterality: str | None, mask: np.ndarray | None = None):
    """Flip the image left-right so every breast is oriented like a left breast; returns (image, mask).

    The paper's preprocessing implies one orientation for all images (a CNN should not have to
    learn both); the issue asks to flip right breasts to the left. The DICOM display convention puts
    a left breast's chest wall on the image's left edge and a right breast's on the right edge, so a
    right breast is mirrored. Film scans (DDSM) and some vendors store breasts either way, so the
    image content decides first (:func:`chest_wall_side`); the laterality decides only when the
    content cannot tell. ``mask`` is flipped along (computed with :func:`breast_mask` if None).
    """
    if mask is None:
        mask = breast_mask(image)
    side = chest_wall_side(mask) or ("right" if laterality == "R" else "left")
    if side == "right":
        return image[:, ::-1], mask[:, ::-1]
    return image, mask


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (top, bottom, left, right) of a mask: rows [top, bottom), columns [left, right).

    Raises :class:`DataPrepError` when the mask is empty (no breast found).
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise DataPrepError("crop_to_breast: no breast found (no pixel above the threshold)")
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def crop_to_breast(image: np.ndarray, mask: np.ndarray | None = None):
    """Crop to the bounding box of the breast mask and set pixels outside the mask to 0.

    Returns (cropped image, cropped mask). Blanking outside the mask removes labels and markers
    that fall inside the bounding box. Raises :class:`DataPrepError` when no breast is found.
    """
    if mask is None:
        mask = breast_mask(image)
    top, bottom, left, right = mask_box(mask)
    box = (slice(top, bottom), slice(left, right))
    cropped_mask = mask[box]
    return np.where(cropped_mask, image[box], 0).astype(np.float32), cropped_mask


def keys_cubic(x: np.ndarray, a: float = KEYS_A) -> np.ndarray:
    """Keys' cubic convolution kernel (IEEE Trans ASSP 29:1153, 1981), support |x| < 2."""
    x = np.abs(x)
    inner = ((a + 2) * x - (a + 3)) * x * x + 1
    outer = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, inner, np.where(x < 2, outer, 0.0))


def bicubic_weights(n_in: int, n_out: int) -> scipy.sparse.csr_matrix:
    """Sparse (n_out, n_in) matrix of anti-aliased bicubic weights along one axis.

    Output pixel j is centred at input coordinate ``(j + 0.5) * n_in / n_out`` (pixel centres at
    i + 0.5). When shrinking, the kernel is stretched by the scale factor so that it averages over
    the input pixels one output pixel covers (anti-aliasing, as MATLAB's imresize and Pillow do).
    Taps outside the image are dropped and each row is renormalised to sum to 1.
    """
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale
    taps = int(np.ceil(2 * stretch)) + 1
    index = np.floor(centres)[:, None].astype(np.int64) + np.arange(-taps, taps + 1)[None, :]
    weight = keys_cubic((index + 0.5 - centres[:, None]) / stretch)
    weight[(index < 0) | (index >= n_in)] = 0.0
    weight /= weight.sum(axis=1, keepdims=True)
    keep = weight != 0
    rows = np.broadcast_to(np.arange(n_out)[:, None], index.shape)
    return scipy.sparse.csr_matrix((weight[keep], (rows[keep], index[keep])), shape=(n_out, n_in))


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """Pad with background (0) to a square: rows evenly above and below, columns on the right.

    After :func:`orient` the chest wall is the left edge, so padding on the right keeps it there.
    """
    rows, cols = image.shape
    side = max(rows, cols)
    top = (side - rows) // 2
    return np.pad(image, ((top, side - rows - top), (0, side - cols)))


def resize_bicubic(image: np.ndarray, size: int, aspect: str = "stretch") -> np.ndarray:
    """Anti-aliased bicubic resize to (size, size); the paper's "bicubic interpolation to 227 x 227".

    ``aspect="stretch"`` scales rows and columns independently (the paper gives one target size for
    every image, so the aspect ratio is not kept); ``"pad"`` first pads to a square with
    :func:`pad_to_square`, keeping the breast's shape. Returns float32 (see :func:`resize_to`).
    """
    if aspect not in ASPECTS:
        raise ValueError(f"aspect must be one of {ASPECTS}, got {aspect!r}")
    if aspect == "pad":
        image = pad_to_square(image)
    return resize_to(image, (size, size))


def resize_to(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Anti-aliased bicubic resize of a 2-D image to ``shape`` (rows, cols); float32.

    Separable: ``W_rows @ image @ W_cols.T`` with the sparse matrices of :func:`bicubic_weights`.
    Bicubic ringing may overshoot the input range slightly at sharp edges.
    """
    image = np.ascontiguousarray(image, dtype=np.float32)
    rows = bicubic_weights(image.shape[0], shape[0]).astype(np.float32)
    cols = bicubic_weights(image.shape[1], shape[1]).astype(np.float32)
    return np.asarray((cols @ (rows @ image).T).T, dtype=np.float32)


def equalize_histogram(image: np.ndarray, method: str = "global", mask: np.ndarray | None = None) -> np.ndarray:
    """Histogram equalization over the breast (the paper's "histogram equalization"); float32 in [0, 1].

    * ``"global"``: each breast pixel becomes the fraction of breast pixels not brighter than it
      (the empirical CDF), so the breast's histogram becomes flat. The background is excluded from
      the histogram and set to 0: otherwise a background covering 40% of the image would push
      every breast pixel above 0.4.
    * ``"clahe"``: contrast-limited adaptive equalization (scikit-image, tiles of 1/8 of the
      image, clip limit 0.01), background set to 0 afterwards. Not in the paper; an option.
    * ``"none"``: clip to [0, 1], background set to 0.

    ``mask`` selects the breast pixels; None means all pixels.
    """
    if method not in EQUALIZE_METHODS:
        raise ValueError(f"equalize must be one of {EQUALIZE_METHODS}, got {method!r}")
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    if mask is None:
        mask = np.ones(image.shape, bool)
    out = np.zeros(image.shape, np.float32)
    if not mask.any():
        return out
    if method == "global":
        values = image[mask]
        out[mask] = np.searchsorted(np.sort(values), values, side="right") / values.size
    elif method == "clahe":
        kernel = max(8, min(image.shape) // 8)
        out[mask] = equalize_adapthist(image, kernel_size=kernel, clip_limit=0.01)[mask]
    else:
        out[mask] = image[mask]
    return out


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Round [0, 1] floats to uint8 0..255 (values outside are clipped)."""
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


@dataclass(frozen=True)
class CropGeometry:
    """Where a stored image came from and how well the breast fills it; every build records it.

    ``crop_box`` = (top, bottom, left, right): rows [top, bottom) and columns [left, right) of the
    *oriented* image (after :func:`orient`'s mirror, if any) that were kept; ``flipped``: whether
    :func:`orient` mirrored the image left-right; ``original_shape``: (rows, cols) as read.
    ``breast_fraction`` and ``breast_extent``: see :func:`crop_measures`.
    """

    crop_box: tuple[int, int, int, int]
    flipped: bool
    original_shape: tuple[int, int]
    breast_fraction: float
    breast_extent: float


def stored_scale(crop_box, size: int, aspect: str = "stretch") -> tuple[float, float]:
    """(row scale, column scale): stored pixels per original pixel, e.g. to map a radius.

    ``"stretch"`` resizes the crop's h x w pixels to size x size; ``"pad"`` pads it to a square of
    side max(h, w) first, so both scales are size / max(h, w).
    """
    if aspect not in ASPECTS:
        raise ValueError(f"aspect must be one of {ASPECTS}, got {aspect!r}")
    top, bottom, left, right = (int(v) for v in crop_box)
    height, width = bottom - top, right - left
    if aspect == "pad":
        height = width = max(height, width)
    return size / height, size / width


def to_stored_coords(rows, cols, crop_box, flipped: bool, original_shape, size: int, aspect: str = "stretch"):
    """Map points from the original image's pixel coordinates (as read) to the stored size x size image's.

    Returns float arrays (rows, cols). The steps undone in order: :func:`orient`'s mirror
    (col -> cols - 1 - col), the crop (subtract the box's top-left corner), :func:`pad_to_square`'s
    rows above (``"pad"`` only), and the resize, whose output pixel j is centred at input coordinate
    (j + 0.5) / scale, so input index i lands at (i + 0.5) * scale - 0.5.
    """
    rows, cols = np.asarray(rows, np.float64), np.asarray(cols, np.float64)
    top, bottom, left, right = (int(v) for v in crop_box)
    if flipped:
        cols = int(original_shape[1]) - 1 - cols
    rows, cols = rows - top, cols - left
    if aspect == "pad":
        rows = rows + (max(bottom - top, right - left) - (bottom - top)) // 2
    row_scale, col_scale = stored_scale(crop_box, size, aspect)
    return (rows + 0.5) * row_scale - 0.5, (cols + 0.5) * col_scale - 0.5


def crop_measures(stored_mask: np.ndarray, crop_box, aspect: str = "stretch") -> tuple[float, float]:
    """(breast_fraction, breast_extent) of a stored image, from its size x size breast mask.

    ``breast_fraction``: the share of the stored image inside the breast mask. ``breast_extent``:
    the breast's width over the width the crop takes in the stored image (``size`` for
    ``"stretch"``): the 90th percentile, over the rows the mask reaches, of the number of mask
    pixels in the row. A good crop gives about 0.95-1; a crop that kept a film border gives about
    the breast's share of the film (0.5-0.6 on the real films of issue 12). Counting pixels, and
    the 90th percentile rather than the maximum, keep a thin strip joined to the mask (a row of
    film border across the top, a column at the far edge) from counting as breast.
    """
    size = stored_mask.shape[1]
    counts = stored_mask.sum(axis=1)
    counts = counts[counts > 0]
    if counts.size == 0:
        return 0.0, 0.0
    width = (crop_box[3] - crop_box[2]) * stored_scale(crop_box, size, aspect)[1]
    return float(stored_mask.mean()), float(np.percentile(counts, 90) / width)


def preprocess_steps(image: np.ndarray, laterality: str | None, size: int = 227, aspect: str = "stretch",
                     equalize: str = "global", threshold_fraction: float = THRESHOLD_FRACTION) -> dict:
    """Run the whole preprocessing and return every intermediate, for figures and audits.

    Keys: ``original`` (input), ``cropped`` (oriented and cropped, blanked outside the breast),
    ``resized`` (bicubic, float), ``equalized`` (float in [0, 1]), ``final`` (uint8, what is
    stored), ``flipped`` (bool: whether :func:`orient` mirrored the image), ``stored_mask``
    (size x size bool, the breast in the stored image), ``geometry`` (:class:`CropGeometry`).
    """
    mask = breast_mask(image, threshold_fraction)
    oriented, mask = orient(image, laterality, mask)
    box = mask_box(mask)
    cropped, mask = crop_to_breast(oriented, mask)
    resized = resize_bicubic(cropped, size, aspect)
    small_mask = resize_bicubic(mask.astype(np.float32), size, aspect) > 0.5
    equalized = equalize_histogram(resized, equalize, small_mask)
    flipped = oriented is not image
    geometry = CropGeometry(box, flipped, (int(image.shape[0]), int(image.shape[1])),
                            *crop_measures(small_mask, box, aspect))
    return {"original": image, "cropped": cropped, "resized": resized, "equalized": equalized,
            "final": to_uint8(equalized), "flipped": flipped, "stored_mask": small_mask, "geometry": geometry}


def preprocess_image(array: np.ndarray, laterality: str | None, size: int = 227, aspect: str = "stretch",
                     equalize: str = "global") -> np.ndarray:
    """Preprocess one image read by :func:`data_prep.readers.read_image` into a (size, size) uint8 array.

    ``laterality`` is ``"L"``, ``"R"`` or None (then only the image content orients it). See the
    module docstring for the steps and :func:`preprocess_steps` for the intermediates and the crop
    geometry.
    """
    return preprocess_steps(array, laterality, size, aspect, equalize)["final"]
