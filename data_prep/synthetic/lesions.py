"""Synthetic findings drawn into an attenuation map (see :mod:`.anatomy` for the units).

Kinds, by the class that produces them (data_formats.md section 3 and BI-RADS descriptors):

* malignant: ``spiculated_mass`` and ``irregular_mass`` (a Gaussian random-sphere-like outline with
  many harmonics and an ill-defined margin, with long spicules or a few short ones; de Sisternes
  et al., Med Phys 42:1098, 2015), ``fine_pleomorphic_calcs`` (20-45 small grains of varied shape
  in a cluster of 1 cm or less) and ``linear_calcs`` (fine grains along a branching line), ``distortion``
  (architectural distortion: spicules with no central mass, tissue pulled towards a point);
* recalled-benign: ``oval_mass`` (round/oval, circumscribed), ``coarse_calcs`` (popcorn, few
  large grains), ``rim_calcs`` (eggshell), ``punctate_calcs`` (a loose cluster of small round
  grains), ``asymmetry`` (a focal density without a mass's convex borders);
* incidental, in every class (so a bright spot alone does not give the class away):
  ``lymph_node`` (small oval with a fatty hilum) and ``vascular_calcs`` (tram-track lines).

A :class:`Lesion` fixes a finding's kind, size, contrast and shape seed; the same finding is drawn
in the CC and the MLO view of its breast, at a position each view chooses in its glandular zone.
Calcification grains are drawn with their integrated brightness preserved when they are smaller
than a pixel, so that a cluster still shows after downsampling to about 100-227 pixels; spicules
are about 2 mm wide at the base (real ones are thinner) for the same reason. A finding's ``scale``
draws it magnified, every length of it at once (outline, spicules, cluster extent, grains), as a
radiologist's magnification view shows a lesion's shape: at 99 px a pixel is about 1.5 mm of
breast, too coarse for the shapes that tell a benign finding from a malignant one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy import ndimage

MALIGNANT_KINDS = {"spiculated_mass": 0.35, "irregular_mass": 0.2, "fine_pleomorphic_calcs": 0.2,
                   "linear_calcs": 0.1, "distortion": 0.15}
BENIGN_KINDS = {"oval_mass": 0.4, "coarse_calcs": 0.12, "rim_calcs": 0.08, "punctate_calcs": 0.2, "asymmetry": 0.2}

#: Contrast (attenuation units; fibroglandular minus fat is 0.4) and diameter (mm) ranges at
#: difficulty 1. Calcification contrast is per grain: calcium attenuates far more than tissue.
CONTRAST = {"spiculated_mass": (0.36, 0.56), "irregular_mass": (0.36, 0.56), "oval_mass": (0.4, 0.6),
            "lymph_node": (0.28, 0.42), "asymmetry": (0.28, 0.4), "distortion": (0.22, 0.34),
            "fine_pleomorphic_calcs": (0.7, 1.1), "linear_calcs": (0.7, 1.1), "punctate_calcs": (0.8, 1.2),
            "coarse_calcs": (0.6, 0.9), "rim_calcs": (0.6, 0.9), "vascular_calcs": (0.5, 0.8)}
#: Findings made of grains; a cohort's ``grain_scale`` enlarges their grains.
CALC_KINDS = frozenset({"fine_pleomorphic_calcs", "linear_calcs", "punctate_calcs", "coarse_calcs", "rim_calcs",
                        "vascular_calcs"})
DIAMETER_MM = {"spiculated_mass": (8, 24), "irregular_mass": (10, 28), "oval_mass": (8, 24), "lymph_node": (6, 11),
               "asymmetry": (18, 35), "distortion": (20, 40), "fine_pleomorphic_calcs": (5, 10),
               "linear_calcs": (10, 20), "punctate_calcs": (6, 12), "coarse_calcs": (10, 25), "rim_calcs": (4, 9),
               "vascular_calcs": (30, 60)}


@dataclass(frozen=True)
class Lesion:
    """One finding of one breast, drawn identically (up to position) in its CC and MLO views."""

    kind: str
    diameter_mm: float
    contrast: float   # already divided by the difficulty
    seed: int         # fixes the shape: outline harmonics, spicules, grain layout
    role: str         # "malignant", "recalled_benign" or "incidental"
    grain_scale: float = 1.0   # calcification grains' radii are multiplied by it (see CALC_KINDS)
    scale: float = 1.0         # every length of the finding is drawn this many times its real size


def sample_finding(rng: np.random.Generator, kind: str, role: str, contrast_scale: float, size_scale: float = 1.0,
                   grain_scale: float = 1.0, finding_scale: float = 1.0) -> Lesion:
    """Draw a finding of ``kind``; ``contrast_scale`` is 1/difficulty (times 0.5 for interval cancers).

    ``grain_scale`` enlarges the grains of calcifications (not their cluster's extent); other kinds
    ignore it. ``finding_scale`` magnifies the whole finding when it is drawn (``Lesion.scale``); it
    draws nothing from ``rng``, so a cohort's findings stay the same ones at every scale.
    """
    lo, hi = CONTRAST[kind]
    dlo, dhi = DIAMETER_MM[kind]
    return Lesion(kind, float(rng.uniform(dlo, dhi) * size_scale), float(rng.uniform(lo, hi) * contrast_scale),
                   int(rng.integers(2 ** 31)), role, float(grain_scale) if kind in CALC_KINDS else 1.0,
                   float(finding_scale))


def _patch(image_shape, centre, radius_px):
    """Slices of the square patch of half-side ``radius_px`` around ``centre`` (clipped to the image)
    and the patch's coordinates (dy, dx) in pixels relative to the centre."""
    r0, c0 = round(centre[0]), round(centre[1])
    radius_px = int(np.ceil(radius_px))
    # Clamp both ends into the image: a patch entirely outside must be empty, not wrap around.
    top, bottom = np.clip([r0 - radius_px, r0 + radius_px + 1], 0, image_shape[0])
    left, right = np.clip([c0 - radius_px, c0 + radius_px + 1], 0, image_shape[1])
    dy = (np.arange(top, bottom, dtype=np.float32) - centre[0])[:, None]
    dx = (np.arange(left, right, dtype=np.float32) - centre[1])[None, :]
    return (slice(top, bottom), slice(left, right)), dy, dx


def _outline_profile(rng, dy, dx, radius, harmonics, amplitude, edge, aspect):
    """Filled blob with a harmonic-perturbed outline: 1 inside, 0 outside, a ramp of width ``edge``.

    ``radius``/``edge`` in pixels; the outline is r(t) = radius (1 + sum_k a_k cos(k t + p_k)) for
    k = 2..harmonics with a_k ~ N(0, amplitude / sqrt(k)), stretched by ``aspect`` along a random
    axis. The interior is slightly brighter towards the centre (denser core).
    """
    turn = rng.uniform(0, np.pi)
    u = (dx * np.cos(turn) + dy * np.sin(turn)) / aspect
    v = -dx * np.sin(turn) + dy * np.cos(turn)
    rho, theta = np.hypot(u, v), np.arctan2(v, u)
    outline = np.ones_like(theta)
    for k in range(2, harmonics + 1):
        outline += rng.normal(0.0, amplitude / np.sqrt(k)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    outline *= radius
    fill = np.clip((outline - rho) / edge + 0.5, 0.0, 1.0)
    return fill * (0.8 + 0.2 * np.sqrt(np.clip(1.0 - (rho / outline) ** 2, 0.0, 1.0)))


def _spicules(rng, dy, dx, count, inner, length, half_width):
    """Thin tapering lines radiating from a centre: the max over spicules of exp(-(d / w)^2).

    Spicule j starts at ``inner`` pixels from the centre and runs ``length * U(0.6, 1)`` pixels
    outwards; its half width falls from ``half_width`` to 0 along it. One spicule at a time (a few
    dozen), each over the whole patch at once, so memory stays at one patch whatever the resolution.
    """
    angles = rng.uniform(0, 2 * np.pi, count) + rng.normal(0, 0.05, count)
    lengths = length * rng.uniform(0.6, 1.0, count)
    lines = np.zeros(np.broadcast_shapes(dy.shape, dx.shape), np.float32)
    for angle, spicule_length in zip(angles, lengths):
        along = dy * np.sin(angle) + dx * np.cos(angle) - inner     # distance along the spicule
        across = -dy * np.cos(angle) + dx * np.sin(angle)           # distance from its axis
        t = np.clip(along / spicule_length, 0.0, 1.0)
        beyond = (along - t * spicule_length)                        # past either end
        width = half_width * (1.0 - t) + 1e-3
        np.maximum(lines, np.exp(-(across * across + beyond * beyond) / (width * width)), out=lines)
    return lines


def _add_grains(image, centre, offsets_mm, radii_mm, amplitude, spacing, rng, elongation=1.0, grain_scale=1.0):
    """Add calcification grains at ``centre`` + offsets (mm): anisotropic Gaussians, one per grain.

    A grain of radius r has integrated brightness ``amplitude * pi r^2`` (a disk). It is drawn as a
    Gaussian of std ``max(r / 2, 0.6 px)`` whose peak is capped at ``amplitude``: large grains look
    like dense disks, and a grain smaller than a pixel keeps its integrated brightness (a fainter,
    one-pixel dot) instead of vanishing, which is what makes clusters survive downsampling.
    ``grain_scale`` multiplies every radius after it was drawn, so the layout stays the same.
    """
    for (oy, ox), r in zip(offsets_mm, np.asarray(radii_mm) * grain_scale):
        sigma = max(r / 2.0, 0.6 * spacing)
        stretch = rng.uniform(1.0, elongation)
        peak = amplitude * min(1.0, r * r / (2.0 * sigma * sigma * stretch)) * rng.uniform(0.7, 1.0)
        where = (centre[0] + oy / spacing, centre[1] + ox / spacing)
        box, dy, dx = _patch(image.shape, where, 3.0 * sigma * stretch / spacing + 1)
        turn = rng.uniform(0, np.pi)
        u = (dx * np.cos(turn) + dy * np.sin(turn)) * spacing / stretch
        v = (-dx * np.sin(turn) + dy * np.cos(turn)) * spacing
        image[box] += peak * np.exp(-(u * u + v * v) / (2.0 * sigma * sigma))


def _branching_path(rng, length_mm, steps):
    """Points (mm) of a random walk with a slowly turning heading and one side branch (ducts)."""
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.25, steps))
    step = length_mm / steps
    trunk = np.cumsum(np.stack([np.sin(heading), np.cos(heading)], axis=1) * step, axis=0)
    trunk -= trunk[steps // 2]
    fork = steps // 3
    branch_heading = heading[fork] + rng.choice([-1, 1]) * rng.uniform(0.5, 1.0) + np.cumsum(rng.normal(0, 0.25, steps // 2))
    branch = trunk[fork] + np.cumsum(np.stack([np.sin(branch_heading), np.cos(branch_heading)], axis=1) * step, axis=0)
    return np.concatenate([trunk, branch])


def draw_finding(image: np.ndarray, finding: Lesion, centre: tuple[float, float], spacing: float) -> float:
    """Draw ``finding`` into ``image`` (attenuation, modified in place) at ``centre`` (row, col).

    Returns the radius in pixels of the drawn region (for the ground-truth file). The shape depends
    only on ``finding.seed``, so both views of a breast show the same lesion. ``finding.scale``
    magnifies it by drawing it as if the pixels were that many times smaller.
    """
    spacing = spacing / finding.scale
    rng = np.random.default_rng(finding.seed)
    kind, c = finding.kind, finding.contrast
    radius = finding.diameter_mm / 2.0 / spacing   # pixels
    if kind in ("oval_mass", "irregular_mass", "spiculated_mass", "lymph_node"):
        reach = radius * (3.5 if kind == "spiculated_mass" else 2.0) + 2
        box, dy, dx = _patch(image.shape, centre, reach)
        if kind in ("oval_mass", "lymph_node"):
            aspect = rng.uniform(1.0, 1.5) if kind == "oval_mass" else rng.uniform(1.4, 1.9)
            blob = _outline_profile(rng, dy, dx, radius / np.sqrt(aspect), 3, 0.04, max(0.3 / spacing, 0.7), aspect)
            if kind == "lymph_node":  # fatty hilum: a lucent notch on one side
                notch = np.hypot(dy - rng.normal(0, 0.2) * radius, dx - 0.55 * radius) < 0.35 * radius
                blob = blob * np.where(notch, 0.3, 1.0)
        else:
            blob = _outline_profile(rng, dy, dx, radius, 9, 0.25, max(2.0 / spacing, 1.0), rng.uniform(1.0, 1.3))
            spiculated = kind == "spiculated_mass"
            lines = _spicules(rng, dy, dx, int(rng.integers(10, 20) if spiculated else rng.integers(5, 9)),
                              0.6 * radius, (2.8 if spiculated else 1.3) * radius, max(1.1 / spacing, 1.0))
            blob = np.maximum(blob, 0.7 * lines)
        image[box] += c * blob
        return reach
    if kind == "distortion":
        box, dy, dx = _patch(image.shape, centre, radius)
        # Tissue pulled towards the centre: sample the patch further out than each pixel sits.
        pull = 1.0 + 0.6 * min(1.0, c / 0.13) * np.exp(-(dy * dy + dx * dx) / (2 * (0.35 * radius) ** 2))
        patch = image[box]
        rows = centre[0] - box[0].start + dy * pull
        cols = centre[1] - box[1].start + dx * pull
        image[box] = ndimage.map_coordinates(patch, np.broadcast_arrays(rows, cols), order=1, mode="nearest")
        lines = _spicules(rng, dy, dx, int(rng.integers(16, 28)), 1.0 / spacing, radius, max(0.8 / spacing, 0.8))
        core = np.exp(-(dy * dy + dx * dx) / (2 * (0.08 * radius) ** 2))
        image[box] += c * np.maximum(lines, 0.5 * core)
        return radius
    if kind == "asymmetry":
        box, dy, dx = _patch(image.shape, centre, radius * 1.5)
        blob = _outline_profile(rng, dy, dx, radius, 4, 0.12, max(6.0 / spacing, 2.0), rng.uniform(1.2, 2.0))
        mottle = ndimage.gaussian_filter(rng.standard_normal(blob.shape).astype(np.float32), 2.0 / spacing)
        image[box] += c * blob * (0.8 + 0.2 * mottle / (mottle.std() + 1e-6))
        return radius * 1.5
    return _draw_calcs(image, rng, kind, c, finding.diameter_mm / 2.0, centre, spacing, finding.grain_scale)


def _draw_calcs(image, rng, kind, amplitude, radius_mm, centre, spacing, grain_scale=1.0) -> float:
    """Calcification layouts (sizes in mm); returns the drawn radius in pixels."""
    add_grains = partial(_add_grains, grain_scale=grain_scale)
    if kind == "fine_pleomorphic_calcs":   # many small grains of varied size and shape, tightly clustered
        count = int(rng.integers(20, 45))
        offsets = rng.normal(0, radius_mm / 2.5, (count, 2))
        radii = rng.uniform(0.2, 0.6, count)
        add_grains(image, centre, offsets, radii, amplitude, spacing, rng, elongation=2.5)
    elif kind == "linear_calcs":           # fine grains along a branching duct
        path = _branching_path(rng, 2 * radius_mm, 24)
        picks = path[rng.random(len(path)) < 0.8]
        picks = picks + rng.normal(0, 0.3, picks.shape)
        add_grains(image, centre, picks, rng.uniform(0.15, 0.45, len(picks)), amplitude, spacing, rng, elongation=3.0)
    elif kind == "punctate_calcs":         # a loose cluster of small round grains
        count = int(rng.integers(8, 20))
        offsets = rng.uniform(-1, 1, (count, 2)) * radius_mm
        add_grains(image, centre, offsets, rng.uniform(0.35, 0.7, count), amplitude, spacing, rng)
    elif kind == "coarse_calcs":           # popcorn clumps and a few large scattered grains
        clumps = rng.uniform(-1, 1, (int(rng.integers(2, 5)), 2)) * radius_mm
        for clump in clumps:
            lobes = clump + rng.normal(0, 0.8, (int(rng.integers(3, 6)), 2))
            add_grains(image, centre, lobes, rng.uniform(0.6, 1.3, len(lobes)), amplitude, spacing, rng)
    elif kind == "rim_calcs":              # eggshell: grains on a circle around a lucent centre
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(14, 26))))
        ring = np.stack([np.sin(angles), np.cos(angles)], axis=1) * radius_mm
        add_grains(image, centre, ring, rng.uniform(0.35, 0.6, len(ring)), amplitude, spacing, rng, elongation=2.0)
    elif kind == "vascular_calcs":         # two parallel tracks along a vessel
        path = _branching_path(rng, 2 * radius_mm, 40)[:40]
        heading = np.diff(path, axis=0, append=path[-1:] + (path[-1] - path[-2]))
        normal = np.stack([heading[:, 1], -heading[:, 0]], axis=1)
        normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-9
        tracks = np.concatenate([path + 0.8 * normal, path - 0.8 * normal])
        add_grains(image, centre, tracks, rng.uniform(0.25, 0.45, len(tracks)), amplitude, spacing, rng, elongation=3.0)
    else:
        raise ValueError(f"unknown finding kind {kind!r}")
    return radius_mm / spacing + 2
