"""Checks of attribution maps against the truth and against the network.

* :func:`pointing_game` (Zhang et al. 2016): is the map's maximum inside a ground-truth finding
  of the image's class (within a tolerance in pixels of the original image)? Beside it the chance
  level, the share of the breast the findings' disks cover, a one-sided binomial test of the hits
  against it, and the share of the map's mass inside the findings (a map spread evenly over the
  breast scores the chance level on both).
* :func:`cascading_randomization` (Adebayo et al. 2018): re-initialize the layers from fc8 down,
  one more each time; the rank correlation with the trained model's maps must fall, or the map
  does not depend on what the network learned.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, rankdata

from .methods import compute_maps

#: Pointing-game tolerance in pixels of the original image (Zhang et al. 2016 used 15).
TOLERANCE_PX = 15.0
#: The randomization check passes when the fully randomized model's maps keep a rank
#: correlation below this with the trained model's (a map that survives randomization
#: of every layer shows the input's structure, not what the network learned).
RANDOMIZATION_PASS = 0.5


@dataclass
class PointingResult:
    n_images: int
    hits: int
    hit_rate: float | None
    chance: float | None        # mean share of the breast inside the (tolerance-widened) findings
    energy_share: float | None  # mean share of the map's mass inside the findings
    tolerance_px: float
    p_value: float | None       # one-sided binomial test of the hits against the mean chance level


def finding_mask(findings, size, tolerance_px):
    """(size, size) bool: the stored pixels inside any of one image's findings (data_prep.StoredFinding:
    circles, boxes or outlines), widened by ``tolerance_px`` pixels of the original image (a circle
    becomes an ellipse where the stored image stretches the crop differently along its two axes)."""
    inside = np.zeros((size, size), bool)
    for f in findings:
        inside |= f.mask(size, tolerance_px)
    return inside


def pointing_game(maps, findings, breast, tolerance_px=TOLERANCE_PX) -> PointingResult:
    """Pointing game over images with scored findings.

    maps (N, S, S) non-negative at the stored resolution; findings: per image a list of its scored
    findings (data_prep.StoredFinding), empty or None for an image without any (left out); breast
    (N, S, S) bool. A hit: the
    map's maximum lies inside a finding widened by ``tolerance_px``; a map that is zero everywhere
    has no maximum and misses.
    """
    hits, chance, energy = [], [], []
    size = maps.shape[-1]
    for i, f in enumerate(findings):
        if not f:
            continue
        inside = finding_mask(f, size, tolerance_px)
        m = maps[i]
        total = float(m.sum())
        hits.append(total > 0 and bool(inside.flat[int(np.argmax(m))]))
        chance.append(float((inside & breast[i]).sum()) / max(1, int(breast[i].sum())))
        energy.append(float(m[inside].sum()) / total if total > 0 else 0.0)
    n = len(hits)
    if n == 0:
        return PointingResult(0, 0, None, None, None, float(tolerance_px), None)
    p = binomtest(int(sum(hits)), n, float(np.mean(chance)), alternative="greater").pvalue
    return PointingResult(n, int(sum(hits)), float(np.mean(hits)), float(np.mean(chance)), float(np.mean(energy)),
                          float(tolerance_px), float(p))


def spearman(a, b):
    """Rank correlation of two maps (ties get mean ranks); 0 when either map is constant."""
    ra, rb = rankdata(np.ravel(a)), rankdata(np.ravel(b))
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass
class RandomizationCurve:
    method: str
    layers: list          # cumulatively randomized, from fc8 down
    correlation: list     # mean rank correlation with the trained model's maps, per step
    passes: bool


def cascading_randomization(model, x, target, method, seed=0, **kw) -> RandomizationCurve:
    """Adebayo et al. 2018: re-initialize fc8, then fc7, ... conv1 (cumulatively, with the model's
    own initializer); after each step, the mean Spearman correlation of each image's map with the
    trained model's. The trained weights are restored afterwards."""
    saved = {k: v.copy() for k, v in model.params.items()}
    rng = np.random.default_rng(seed)
    try:
        reference, _ = compute_maps(model, x, target, method, **kw)
        layers, corr = [], []
        for name in reversed(model.param_layers):
            model.reinitialize(name, rng)
            maps, _ = compute_maps(model, x, target, method, **kw)
            layers.append(name)
            corr.append(float(np.mean([spearman(a, b) for a, b in zip(reference, maps)])))
    finally:
        for k, v in saved.items():
            model.params[k][...] = v
    return RandomizationCurve(method, layers, corr, corr[-1] < RANDOMIZATION_PASS)
