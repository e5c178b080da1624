"""Synthetic breast anatomy: outline, skin line, nipple, pectoral muscle and fibroglandular texture.

Everything is drawn for a left breast in the standard display orientation (chest wall at column 0,
nipple pointing right, pectoral muscle in the upper-left corner of an MLO view); the encoders
mirror right breasts. Sizes are in millimetres and converted with the pixel spacing, so changing
the image size changes the resolution, not the anatomy.

The image is an "attenuation" map ``A``: 0 is air, about 0.3 fat, 0.7 fibroglandular tissue. How the
model follows real mammograms (data_formats.md section 3):

* outline: a half-ellipse against the chest wall, its radius perturbed by a few low harmonics;
  tissue thins towards the edge (compressed-breast thickness profile) and a 1-2 mm skin line
  is slightly brighter;
* texture: power-law noise with spectrum 1/f^beta, beta 2.4-3.2 (measured on digitized film;
  Burgess, JOSA A 24:B52, 2007), plus strands converging on the nipple, thresholded so that the
  dense fraction matches the BI-RADS density category (a <25%, b 25-50%, c 50-75%, d >75%);
* MLO views: a bright pectoral triangle with a curved edge in the upper chest-wall corner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy import ndimage

from ..preprocess import resize_to

FAT = 0.30
GLAND = 0.70
PECTORAL = 0.78
SKIN = 0.05
#: Target dense (fibroglandular) fraction of each BI-RADS density category a-d.
DENSITY_FRACTION = {"a": 0.14, "b": 0.37, "c": 0.62, "d": 0.84}


@dataclass(frozen=True)
class BreastShape:
    """One breast's shape in mm, shared by its views (each view stretches it a little differently)."""

    depth_mm: float        # chest wall to nipple
    half_height_mm: float  # half the extent along the chest wall (CC view)
    density: str           # BI-RADS category a-d
    beta: float            # power-law exponent of the texture


def smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """0 below ``lo``, 1 above ``hi``, a smooth cubic in between."""
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def power_law_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float) -> np.ndarray:
    """Gaussian random field with power spectrum proportional to 1/f^beta, zero mean, unit std.

    White noise is shaped in the Fourier domain by the amplitude f^(-beta/2); the zero-frequency
    term is removed.
    """
    fy = np.fft.fftfreq(shape[0]).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
    f2 = fy * fy + fx * fx
    f2[0, 0] = 1.0
    amplitude = f2 ** np.float32(-beta / 4.0)
    amplitude[0, 0] = 0.0
    white = scipy.fft.rfft2(rng.standard_normal(shape, dtype=np.float32))
    field = scipy.fft.irfft2(white * amplitude, s=shape)
    return ((field - field.mean()) / field.std()).astype(np.float32)


@dataclass
class View:
    """A rendered view before lesions: attenuation and the maps lesions are placed with."""

    attenuation: np.ndarray      # A, float32, full resolution
    lesion_zone: np.ndarray      # bool, where a lesion centre may go (glandular zone, not pectoral)
    nipple: tuple[float, float]  # (row, col) in pixels
    spacing_mm: float


#: The smooth anatomy is drawn on a grid this many times coarser than the image and then resized
#: bicubically: the outline, thickness and a 1/f^beta texture have little detail at the finest
#: scale, and the coarse grid makes a view about four times faster to draw.
COARSE = 2


def render_view(rng: np.random.Generator, shape: BreastShape, view: str, image_shape: tuple[int, int],
                spacing_mm: float) -> View:
    """Draw one CC or MLO view of a left breast (chest wall at column 0) as an attenuation map."""
    coarse_shape = (-(-image_shape[0] // COARSE), -(-image_shape[1] // COARSE))
    step = spacing_mm * COARSE
    y = (np.arange(coarse_shape[0], dtype=np.float32) * step)[:, None]
    x = (np.arange(coarse_shape[1], dtype=np.float32) * step)[None, :]
    height_mm = image_shape[0] * spacing_mm
    if view == "MLO":  # the MLO projection shows more tissue, reaching into the axilla (top edge)
        a = shape.depth_mm * rng.uniform(1.0, 1.1)
        b = min(shape.half_height_mm * rng.uniform(1.3, 1.45), 0.62 * height_mm)
        centre = height_mm * rng.uniform(0.36, 0.44)
        tilt = np.deg2rad(rng.uniform(8.0, 18.0))
    else:
        a, b = shape.depth_mm, shape.half_height_mm
        centre = height_mm * rng.uniform(0.46, 0.54)
        tilt = np.deg2rad(rng.uniform(-4.0, 4.0))
    along = x * np.cos(tilt) + (y - centre) * np.sin(tilt)    # towards the nipple
    across = -x * np.sin(tilt) + (y - centre) * np.cos(tilt)
    angle = np.arctan2(across / b, along / a)
    amplitudes, phases = rng.normal(0.0, 0.025, 3), rng.uniform(0.0, 2 * np.pi, 3)
    harmonics = sum(c * np.cos(k * angle + p) for k, c, p in zip((2, 3, 4), amplitudes, phases))
    rho = np.sqrt((along / a) ** 2 + (across / b) ** 2) / (1.0 + harmonics)
    edge_mm = (1.0 - rho) * np.sqrt((a * np.cos(angle)) ** 2 + (b * np.sin(angle)) ** 2)

    tip = a * (1.0 + float(np.sum(amplitudes * np.cos(phases))))  # the outline's tip on the main axis
    nipple_y, nipple_x = centre + tip * np.sin(tilt), tip * np.cos(tilt)
    nipple = np.hypot(x - nipple_x, y - nipple_y) < rng.uniform(3.0, 5.0)
    inside = (rho < 1.0) | nipple
    thickness = np.sqrt(1.0 - (1.0 - np.clip(edge_mm / rng.uniform(6.0, 12.0), 0.0, 1.0)) ** 2)
    thickness = np.where(nipple & (rho >= 1.0), 0.6, thickness)
    texture = power_law_noise(rng, coarse_shape, shape.beta)
    # The glandular zone's border is scalloped, not parallel to the skin: shift it by the texture.
    zone = smoothstep(edge_mm + 6.0 * texture, 4.0, 22.0) * smoothstep(x, 2.0, 20.0)
    field = 0.9 * texture + 0.4 * _strands(rng, y - nipple_y, x - nipple_x)
    target = np.clip(DENSITY_FRACTION[shape.density] + rng.normal(0.0, 0.05), 0.05, 0.95)
    core = zone > 0.5
    level = np.quantile(field[core][::3], 1.0 - target)
    dense = zone / (1.0 + np.exp(-(field - level) / 0.45))

    skin = SKIN * np.exp(-(((edge_mm - 0.8) / 0.9) ** 2))
    fat = FAT + 0.03 * texture  # fat is not uniform either (ligaments, vessels)
    attenuation = np.where(inside, thickness * (fat + (GLAND - FAT) * dense) + skin, 0.0)
    lesion_zone = core & (edge_mm > 12.0)
    if view == "MLO":
        attenuation, lesion_zone = _add_pectoral(rng, attenuation, lesion_zone, texture, x, y, height_mm, inside)
    attenuation = np.maximum(resize_to(attenuation, image_shape), 0.0)
    lesion_zone = np.repeat(np.repeat(lesion_zone, COARSE, 0), COARSE, 1)[: image_shape[0], : image_shape[1]]
    return View(attenuation, lesion_zone, (nipple_y / spacing_mm, nipple_x / spacing_mm), spacing_mm)


def _strands(rng: np.random.Generator, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Linear structures (ducts, Cooper's ligaments) radiating from the nipple, unit std.

    Noise that is fine across angles and smooth along the radius, looked up in polar coordinates
    around the nipple, gives streaks that converge on it.
    """
    table = ndimage.gaussian_filter(rng.standard_normal((360, 64)).astype(np.float32), sigma=(1.5, 5.0), mode="wrap")
    table /= table.std()
    angle = ((np.arctan2(dy, dx) + np.pi) * (360 / (2 * np.pi))).astype(np.int64) % 360
    radius = np.minimum((np.hypot(dy, dx) / 4.0).astype(np.int64), 63)  # 4 mm per radial step
    return table[angle, radius]


def _add_pectoral(rng, attenuation, lesion_zone, texture, x, y, height_mm, inside):
    """Pectoral muscle of an MLO view: a bright triangle in the upper chest-wall corner.

    Its edge runs from (top, width w) to (chest wall, height h) with a slight convex curve
    (exponent g); the muscle has a faint texture of its own and replaces the breast tissue there.
    """
    width = rng.uniform(0.22, 0.36) * height_mm
    height = rng.uniform(0.45, 0.65) * height_mm
    curve = rng.uniform(0.7, 1.0)
    edge_x = width * np.clip(1.0 - y / height, 0.0, 1.0) ** curve
    muscle = np.clip((edge_x - x) / 1.5, 0.0, 1.0) * inside
    muscle_value = PECTORAL + 0.03 * np.roll(texture, texture.shape[0] // 2, axis=0)
    attenuation = attenuation * (1.0 - muscle) + muscle_value * muscle
    return attenuation, lesion_zone & (x > edge_x + 15.0)
