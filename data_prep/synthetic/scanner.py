"""What real digitized screen films carry around the breast, beyond the flat strips of the basic film mode.

Seen on real CBIS-DDSM films (``reference/real_film_crop_failure.png``): the unexposed edge of the
film is not a flat strip but a band whose brightness *rises* towards the film's edge (about 1.5% of
the film deep, from 0.4 to 0.9 of the read range over ~60 of 4,700 rows) and that the breast
touches at the chest wall; such bands lie along any edge, some only along part of it or with a gap;
the cassette leaves thin bright frame lines a few pixels wide; the digitizer adds bright streaks
along its scan direction across the whole film, breast included; and orientation markers are laid
on the film against the skin line. :func:`add_scanned_film_artifacts` draws all of these into a
film's grey levels (left-oriented: chest wall at column 0) and says which pixels of the breast they
cover, so the true breast box (what a crop should keep) stays known.

Every artifact is drawn from its own random stream (``rng``), so the basic film underneath -- the
breast, its findings and the basic artefacts -- is the same with or without them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Edges of a left-oriented film, and the np.rot90 turn that brings each to row 0.
EDGE_TURNS = {"top": 0, "nipple_side": 1, "bottom": 2, "chest_wall": 3}
#: Chance that a film has a ramp band along each edge.
BAND_CHANCE = {"bottom": 0.45, "top": 0.35, "chest_wall": 0.35, "nipple_side": 0.2}
#: Band depth as a share of the image along the band's normal (real films: about 1.5%).
BAND_DEPTH = (0.008, 0.03)
#: A band is drawn into the breast (touching it) only when the breast comes this close to the edge.
TOUCH_REACH = 0.06
FRAME_CHANCE = 0.3
STREAK_CHANCE = 0.25
MARKER_CHANCE = 0.3


@dataclass(frozen=True)
class ScannedFilm:
    """What :func:`add_scanned_film_artifacts` drew: ``covered`` (bool, the pixels where the film shows
    no breast any more: bands and frame lines), ``artifacts`` (names, e.g. ``band_bottom_partial``),
    ``touches`` (whether a band or frame line covers or borders the breast) and ``marker`` (bool mask
    of the marker's ink, None without one)."""

    covered: np.ndarray
    artifacts: tuple[str, ...]
    touches: bool
    marker: np.ndarray | None


def _extent(rng: np.random.Generator, length: int, names: list[str], name: str) -> np.ndarray:
    """Which positions along an edge a band or line covers: all (60%), one stretch of 30-80% (partial),
    and in a quarter of the cases a gap of 5-20% of the length in what is covered."""
    along = np.ones(length, bool)
    if rng.random() < 0.4:
        part = int(length * rng.uniform(0.3, 0.8))
        start = int(rng.choice([0, length - part, int(rng.integers(0, length - part + 1))]))
        along[:] = False
        along[start: start + part] = True
        names.append(f"{name}_partial")
    if rng.random() < 0.25:
        covered = np.flatnonzero(along)
        gap = max(2, int(length * rng.uniform(0.05, 0.2)))
        if covered.size > 3 * gap:
            start = int(covered[0] + rng.integers(gap, covered.size - 2 * gap))
            along[start: start + gap] = False
            names.append(f"{name}_gap")
    return along


def _ramp_band(grey, covered, visible, edge, background, unexposed, rng, names) -> None:
    """A band along ``edge`` whose brightness rises from its inner edge towards the film's edge.

    Depth ``BAND_DEPTH`` of the image, tilted by up to 15% of it from one end to the other; when the
    breast comes within :data:`TOUCH_REACH` of the edge, half the bands reach 0.5-2% into it. The
    level rises from 30-60% of the way from the exposed background to the unexposed film at the
    inner edge (a sharp step, as on the real films) to the unexposed level at the edge, with grain.
    """
    turn = EDGE_TURNS[edge]
    g, cov, vis = np.rot90(grey, turn), np.rot90(covered, turn), np.rot90(visible, turn)
    rows, length = g.shape
    depth = rng.uniform(*BAND_DEPTH) * rows
    near = vis.any(axis=1)
    gap = int(near.argmax()) if near.any() else rows
    name = f"band_{edge}"
    if gap < TOUCH_REACH * rows and rng.random() < 0.5:
        depth = gap + rng.uniform(0.005, 0.02) * rows
        name += "_touching"
    names.append(name)
    depths = depth * (1.0 + rng.uniform(-0.15, 0.15) * np.linspace(-1.0, 1.0, length))
    along = _extent(rng, length, names, f"band_{edge}")
    reach = int(np.ceil(depths.max())) + 1
    row = np.arange(reach, dtype=np.float32)[:, None]
    inside = (row < depths[None, :]) & along[None, :]
    inner = background + rng.uniform(0.3, 0.6) * (unexposed - background)
    rise = np.clip(1.0 - (row + 0.5) / depths[None, :], 0.0, 1.0) ** rng.uniform(0.6, 1.5)
    level = inner + (unexposed - inner) * rise + rng.normal(0.0, 12.0, (reach, length))
    g[:reach][inside] = level[inside]
    cov[:reach] |= inside


def _frame_line(grey, covered, edge, background, unexposed, rng, names) -> None:
    """A thin bright line parallel to ``edge``, 0-2% of the image in from it, 0.2-0.6% wide (>= 1 px)."""
    turn = EDGE_TURNS[edge]
    g, cov = np.rot90(grey, turn), np.rot90(covered, turn)
    rows, length = g.shape
    start = int(rng.uniform(0.0, 0.02) * rows)
    width = max(1, int(round(rng.uniform(0.002, 0.006) * rows)))
    names.append(f"frame_{edge}")
    along = _extent(rng, length, names, f"frame_{edge}")
    band = np.zeros((start + width, length), bool)
    band[start:, :] = along[None, :]
    g[: start + width][band] = background + rng.uniform(0.6, 1.0) * (unexposed - background)
    cov[: start + width] |= band


def _streaks(grey, background, unexposed, rng, names) -> None:
    """One to three bright streaks along the scan direction (image columns) across the whole film."""
    cols = grey.shape[1]
    for _ in range(int(rng.integers(1, 4))):
        width = max(1, int(round(rng.uniform(0.002, 0.006) * cols)))
        left = int(rng.integers(0, cols - width))
        grey[:, left: left + width] += rng.uniform(0.15, 0.4) * (unexposed - background)
    names.append("streaks")


def _marker_at_skin(grey, breast, marker, value, rng, names) -> np.ndarray | None:
    """Burn ``marker`` (a text mask) in across the nipple-side skin line; return its ink mask, None if no room.

    A row in the middle 60% of the breast's height is chosen; the text starts a few pixels inside
    the breast's last column in that row, so its ink touches the skin line.
    """
    rows = np.flatnonzero(breast.any(axis=1))
    if rows.size < 10:
        return None
    row = int(rows[0] + rng.uniform(0.2, 0.8) * (rows[-1] - rows[0]))
    inside = np.flatnonzero(breast[row])
    ink = marker > 0.5
    ink_cols = np.flatnonzero(ink.any(axis=0))
    if inside.size == 0 or ink_cols.size == 0:
        return None
    left = int(inside[-1] - max(2, marker.shape[1] // 12) - ink_cols[0])
    top = row - marker.shape[0] // 2
    if left + marker.shape[1] > grey.shape[1] or top < 0 or top + marker.shape[0] > grey.shape[0]:
        return None
    placed = np.zeros(grey.shape, bool)
    placed[top: top + marker.shape[0], left: left + marker.shape[1]] = ink
    grey[placed] = value
    names.append("marker_at_skin")
    return placed


def add_scanned_film_artifacts(grey: np.ndarray, visible: np.ndarray, background: float, unexposed: float,
                               marker: np.ndarray, bordered: set[str], rng: np.random.Generator) -> ScannedFilm:
    """Draw real-film artefacts into ``grey`` (left-oriented grey levels, modified in place).

    ``visible``: the breast's pixels; ``background``/``unexposed``: grey levels of the exposed film
    beside the breast and of unexposed film; ``marker``: a text mask (e.g. the view) for an
    orientation marker; ``bordered``: the edges that already carry a flat unexposed border (a film
    has one unexposed edge per side, so they get no band). Drawn, each from ``rng``: ramp bands
    (:data:`BAND_CHANCE` per edge; full, partial or with a gap; touching the breast or not), thin
    frame lines along one to four edges without a band (:data:`FRAME_CHANCE`), streaks along the
    scan direction (:data:`STREAK_CHANCE`) and a marker across the nipple-side skin line
    (:data:`MARKER_CHANCE`). Returns a :class:`ScannedFilm`.
    """
    covered = np.zeros(grey.shape, bool)
    names: list[str] = []
    banded = set(bordered)
    for edge, chance in BAND_CHANCE.items():
        if rng.random() < chance and edge not in banded:
            _ramp_band(grey, covered, visible, edge, background, unexposed, rng, names)
            banded.add(edge)
    if rng.random() < FRAME_CHANCE:
        edges = rng.permutation(list(EDGE_TURNS))[: int(rng.integers(1, 5))]
        for edge in edges:
            if edge not in banded:  # a frame line on unexposed film would not show
                _frame_line(grey, covered, str(edge), background, unexposed, rng, names)
    if rng.random() < STREAK_CHANCE:
        _streaks(grey, background, unexposed, rng, names)
    placed = None
    if rng.random() < MARKER_CHANCE:
        placed = _marker_at_skin(grey, visible & ~covered, marker, unexposed, rng, names)
    touches = bool((covered & ndimage.binary_dilation(visible)).any())  # a pixel beside the breast touches it
    return ScannedFilm(covered, tuple(names), touches, placed)
