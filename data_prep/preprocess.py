"""The paper's preprocessing as small ordered steps.

Paper (Materials and Methods): "images were preprocessed using standard techniques including
histogram equalization, mean subtracting, and downsampling using standard bicubic interpolation to
227 x 227 pixels from original resolution."

The order used here, each step one function:

1. :func:`breast_mask`     threshold, film edge bands out, largest connected component, thin
                           attachments cut off (finds the breast);
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
#: A film edge band is at most this share of the image deep (real bands: about 1.5%; edge_bands).
BAND_MAX_DEPTH = 0.15
#: ... and runs along at least this share of its edge (a partial band, or one piece of a band with a gap).
BAND_MIN_LENGTH = 0.05
#: ... and its inner edge is a straight line at most this steep (pixels of depth per pixel along the edge).
BAND_MAX_SLOPE = 0.05
#: A band running along the whole stretch has lines whose 10th-90th percentile spread is under this share
#: of their height above the background (the unexposed film is uniform; tissue is textured).
BAND_FLATNESS = 0.15
#: A band may start up to this many mask pixels in from the image edge (a dark scanner margin, dust).
BAND_EDGE_SLACK = 3
#: Radius in mask pixels of the opening that finds thin bright things joined to the breast (breast_mask step 4) ...
THIN_RADIUS = 2
#: ... which are cut off when they stick out farther than this share of the image from the breast's body.
THIN_REACH = 0.02
#: Version of the preprocessing's output; builds record it and rebuild when it changes.
#: 2: film borders and scanner edges removed before thresholding, three-class background level.
#: 3: edge bands found as straight runs from each edge (ramp bands, partial bands, frame lines),
#: thin attachments (text, lines, streaks) cut off the breast.
PREPROCESS_VERSION = 3


def _leading(flags: np.ndarray) -> np.ndarray:
    """Per column of a 2-D boolean array, how many rows from row 0 are True before the first False."""
    return np.where(flags.all(axis=0), flags.shape[0], np.argmin(flags, axis=0))


def _band_pieces(run: np.ndarray, max_depth: int, min_length: int) -> np.ndarray:
    """The positions along an edge where a band lies alone (bool).

    ``run``: at each position along the edge, how deep the foreground reaches in from it. A band
    lying alone reaches its own depth: a run of at most ``max_depth`` that changes little from one
    position to the next (by at most 2 pixels or a quarter of the run), along at least
    ``min_length`` positions, on a line nearly parallel to the edge (:data:`BAND_MAX_SLOPE`), less
    the positions where the run rises above that line (the breast's outline leaving the band).
    Where the breast reaches the edge the runs are long, or grow along the edge with its outline.
    """
    short = (run > 0) & (run <= max_depth)
    steady = np.abs(np.diff(run)) <= np.maximum(2.0, 0.25 * np.minimum(run[1:], run[:-1]))
    starts = short & ~np.concatenate([[False], short[:-1] & short[1:] & steady])
    label = np.cumsum(starts) * short  # piece number at each position, 0 outside the pieces
    on_band = np.zeros(run.size, bool)
    for number in np.flatnonzero(np.bincount(label)[1:] >= min_length) + 1:
        where = np.flatnonzero(label == number)
        slope, offset = np.polyfit(where, run[where], 1)
        if abs(slope) <= BAND_MAX_SLOPE:
            # where the breast's outline starts to rise from the band, the run outgrows the line
            above = run[where] - (offset + slope * where) > max(1.0, 0.1 * float(np.median(run[where])))
            on_band[where[~above]] = True
    return on_band


def _uniform_depth(values: np.ndarray, lines: np.ndarray, background: float) -> int:
    """How many lines parallel to an edge, from the edge in, are a band along the whole edge.

    A band running along all of an edge, over the breast too, makes each line parallel to the edge
    uniform: at least 90% foreground and a 10th-90th percentile spread under :data:`BAND_FLATNESS`
    of its median's height above ``background``; tissue is textured, and does not span the edge.
    The band ends where the lines' level jumps (by more than that share of the first line's
    height) -- its inner edge is sharp, while a ramp changes little from one line to the next --
    and the line at the edge must be brighter than what lies beyond the band (as deep again):
    unexposed film is the brightest film there is, while a uniform rim of fat along the chest wall
    is darker than the tissue behind it.
    """
    spanning = int(_leading((lines.mean(axis=1) >= 0.9)[:, None])[0])
    if spanning == 0:
        return 0
    p10, p50, p90 = np.percentile(values[:spanning], [10, 50, 90], axis=1)
    step = np.abs(np.diff(p50, prepend=p50[0]))
    uniform = (p90 - p10 <= BAND_FLATNESS * (p50 - background)) & (step <= BAND_FLATNESS * (p50[0] - background))
    depth = int(_leading(uniform[:, None])[0])
    beyond = values[depth: 2 * depth]
    return depth if depth and beyond.size and p50[0] > np.median(beyond) else 0


def _profile_match(values: np.ndarray, band: np.ndarray) -> np.ndarray:
    """At each position, how far in from the edge the pixels match a band's brightness profile.

    ``band``: (depth, n) pixels of the band (NaN outside it); its profile is their median at each
    distance from the edge. A pixel matches when it lies within the profile's range over a fifth of
    the band's depth either side (a tilted band) widened by 3 robust standard deviations (at least
    0.05); the profile goes on that far beyond the band along its last step (a ramp keeps ramping).
    """
    profile = np.nanmedian(band, axis=1)
    spread = max(0.05, 3 * 1.4826 * float(np.nanmedian(np.abs(band - profile[:, None]))))
    shift = max(1, int(np.ceil(0.2 * profile.size)))
    trend = profile[-1] - profile[-2] if profile.size > 1 else 0.0  # a ramp goes on as it went
    profile = np.concatenate([profile, profile[-1] + trend * np.arange(1, shift + 1)])[: values.shape[0]]
    low = ndimage.minimum_filter1d(profile, 2 * shift + 1, mode="nearest") - spread
    high = ndimage.maximum_filter1d(profile, 2 * shift + 1, mode="nearest") + spread
    window = values[: profile.size]
    return _leading((window >= low[:, None]) & (window <= high[:, None]))


def _edge_cut(values: np.ndarray, lines: np.ndarray, background: float) -> np.ndarray:
    """How deep to cut at each position along one image edge (0: no band there).

    ``values`` and ``lines`` (the foreground): (depth, positions), row 0 at the edge. At each
    position we measure how deep the foreground reaches in from the edge (starting within
    :data:`BAND_EDGE_SLACK` pixels of it). The pieces of band lying alone (:func:`_band_pieces`)
    are cut to that depth; at the other positions where the foreground reaches the edge -- where
    the breast touches the band, or a piece too short to judge -- the band is cut as far in as the
    pixels match the band's brightness profile (:func:`_profile_match`), and at most as deep as the
    pieces reach (interpolated between them, held beyond them) plus a fifth: where the band stops
    -- a partial band, a gap -- the breast is kept, and bright tissue under the band is not taken
    for more band. A band running along the whole edge, over the
    breast too, is found by its uniform lines (:func:`_uniform_depth`) and cut in the same way.
    """
    depth_count, length = lines.shape
    max_depth = max(2, int(BAND_MAX_DEPTH * depth_count))
    min_length = max(4, int(BAND_MIN_LENGTH * length))
    head = lines[:BAND_EDGE_SLACK]
    reaches = head.any(axis=0)
    start = np.where(reaches, head.argmax(axis=0), 0)
    depth_index = np.arange(depth_count)[:, None]
    run = np.where(reaches, _leading(lines | (depth_index < start[None, :])), 0).astype(np.float64)
    cut = np.zeros(length, np.int64)
    on_band = _band_pieces(run, max_depth, min_length)
    if on_band.any():
        depth = int(np.median(run[on_band]))  # deeper rows hold too few of the band's pixels to judge
        band = np.where(depth_index[:depth] < run[None, on_band], values[:depth, on_band], np.nan)
        position = np.arange(length)
        deepest = np.interp(position, position[on_band], run[on_band])  # held beyond the outer pieces
        tilt = max(1, int(np.ceil(0.2 * depth)))  # the band may deepen a little beyond the pieces
        matched = np.minimum(_profile_match(values, band), np.ceil(deepest) + tilt)
        cut = np.where(on_band, run, np.where(reaches, matched, 0)).astype(np.int64)
    depth = _uniform_depth(values[:max_depth], lines[:max_depth], background)
    if depth:
        cut = np.maximum(cut, np.minimum(_profile_match(values, values[:depth]), depth))
    # A dust speck on the band stops the match at one or two positions; the band goes on there.
    return np.maximum(cut, ndimage.median_filter(cut, 5, mode="nearest"))


def edge_bands(small: np.ndarray, foreground: np.ndarray, background: float) -> np.ndarray:
    """Boolean map of the bright bands and lines that film scans carry along the image edges.

    Film scans carry the film's unexposed edge as a band along one or more image edges -- flat, or
    brightening towards the edge; along all of it or part of it, sometimes with a gap -- and the
    cassette leaves thin frame lines; where these touch the breast they join its connected
    component and the crop keeps the whole film. The method in short:

    * at every position along an edge, measure how deep the foreground reaches in from it;
    * a band lying alone reaches a short depth (at most :data:`BAND_MAX_DEPTH` of the image) that
      stays on a straight line nearly parallel to the edge for at least :data:`BAND_MIN_LENGTH` of
      it -- the rounded breast's outline does not: cut those positions to their depth;
    * where the breast touches the band, cut as far in as the pixels still look like the band (its
      brightness at each distance from the edge), no deeper than the band reaches beside the
      breast (plus a fifth); a band along the whole edge over the breast shows as lines parallel to
      the edge that are uniform, which textured tissue is not.

    Each image edge in turn is examined by :func:`_edge_cut` (``small``: pixel values,
    ``foreground``: what lies above the threshold, ``background``: the background level); the four
    edges are examined twice, the second time without the bands found the first time, so that a
    band across a corner does not hide the one along the next edge.
    """
    bands = np.zeros(foreground.shape, bool)
    for _ in range(2):
        for turn in range(4):  # each image edge in turn is the first row of the rotated views
            lines, values, marks = np.rot90(foreground & ~bands, turn), np.rot90(small, turn), np.rot90(bands, turn)
            cut = _edge_cut(values, lines, background)
            reach = int(cut.max()) if cut.size else 0
            marks[:reach] |= np.arange(reach)[:, None] < cut[None, :]
        if not bands.any():  # nothing found: a second look would find nothing either
            break
    return bands


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean mask (all False when the mask is empty)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count == 0:
        return np.zeros(mask.shape, bool)
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def _disc(radius: int) -> np.ndarray:
    """Boolean disc structuring element: the pixels within ``radius`` of the centre, (2r + 1) x (2r + 1)."""
    y, x = np.mgrid[-radius: radius + 1, -radius: radius + 1]
    return x * x + y * y <= radius * radius


def _thin_attachments(component: np.ndarray, reach: float) -> np.ndarray:
    """The thin parts of ``component`` that stick out more than ``reach`` pixels from its body.

    The body is the largest component of the opening by a disc of radius :data:`THIN_RADIUS`
    (anything thinner disappears in it); the thin parts are what lies farther than that radius + 1
    from the body, in connected pieces. A piece is returned when it reaches more than ``reach``
    pixels from the body -- a label's strokes, a streak, a frame line's remnant -- and kept
    otherwise: the ragged, speckled periphery of a film's breast hugs the body.
    """
    body = _largest_component(ndimage.binary_opening(component, _disc(THIN_RADIUS)))
    loose = component & ~ndimage.binary_dilation(body, _disc(THIN_RADIUS + 1))
    if not body.any() or not loose.any():
        return np.zeros(component.shape, bool)
    pieces, count = ndimage.label(loose, structure=np.ones((3, 3), bool))
    distance = ndimage.distance_transform_edt(~body)
    far = np.asarray(ndimage.maximum(distance, pieces, np.arange(1, count + 1))) > reach
    return np.concatenate([[False], far])[pieces]


def breast_mask(image: np.ndarray, threshold_fraction: float = THRESHOLD_FRACTION) -> np.ndarray:
    """Boolean mask of the breast: threshold, remove edge bands, keep the largest component, cut thin parts.

    1. Otsu's threshold separates background from tissue. The background level is the median of
       the lowest of three Otsu classes (background, fat, dense): on film, fat is close to the
       background, and in a large breast it outnumbers the background, so the two-class split would
       count fat as background. The threshold used lies ``threshold_fraction`` of the way from that
       level up to Otsu's threshold: at 0.3 it keeps the thin, dark breast periphery, yet stays
       above the background and its noise, which on film is far from 0.
    2. Film edge bands and frame lines (:func:`edge_bands`) are found on a first foreground and left
       out of the thresholds' statistics (the thresholds are computed again without them), then
       found again on the final foreground and removed from it, so they cannot join the breast.
    3. The largest 8-connected component is the breast; labels, markers and dust are smaller
       components and drop out.
    4. On scanned film (edge bands found, or a background above black), thin bright things joined to
       the breast and sticking out of it -- the strokes of a label across the skin line, a streak along
       the scan direction, what is left of a frame line -- are cut off (:func:`_thin_attachments`);
       FFDM's black air has none, and its crops stay as they were. Holes (dark fatty regions enclosed by tissue) are
       filled.

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
    background_level = np.median(sample[sample <= otsu])
    bands = edge_bands(small, small > background_level + threshold_fraction * (otsu - background_level),
                       background_level)
    sample = small[~bands][::4]
    if sample.size == 0 or sample.max() <= sample.min():
        return np.zeros(image.shape, bool)
    otsu = threshold_otsu(sample)
    try:
        low = min(otsu, threshold_multiotsu(sample, classes=3)[0])
    except ValueError:  # fewer than three grey levels: the two-class split is the background split
        low = otsu
    background_level = np.median(sample[sample <= low])
    foreground = small > background_level + threshold_fraction * (otsu - background_level)
    final_bands = edge_bands(small, foreground, background_level)
    foreground &= ~final_bands
    largest = _largest_component(foreground)
    if not largest.any():
        return np.zeros(image.shape, bool)
    # Only on scanned film, where labels, streaks and the ends of frame lines touch the breast: a film
    # has edge bands, or a background above black (film base and fog). A digital detector's air is
    # black, and there the cut would only trim the breast's own edge (nipple, spiculated findings).
    if bands.any() or final_bands.any() or background_level > 0:
        largest &= ~_thin_attachments(largest, max(2 * THIN_RADIUS + 2, THIN_REACH * max(small.shape)))
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
    learn both), so every breast is made to look like a left one. The DICOM display convention puts
    a left breast's chest wall on the image's left edge and a right breast's on the right edge, so
    a right breast is mirrored. Film scans (DDSM) and some vendors store breasts either way, so the
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
    the breast's share of the film (0.56-0.62 on real CBIS-DDSM films). Counting pixels, and
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
