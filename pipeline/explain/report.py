"""The report's section on where the network looks, from the typed records of pipeline.explain.run."""
from __future__ import annotations

from .checks import RANDOMIZATION_PASS
from .records import ModelExplanation


def _cell(value, spec=".2f"):
    return "-" if value is None else format(value, spec)


def _verdict(v) -> str:
    if v.localizes_above_chance is False and v.passes_randomization is False:
        return "fails both checks"
    return ", ".join(t for t, ok in (("localizes", v.localizes_above_chance),
                                     ("randomization-sensitive", v.passes_randomization)) if ok) or "-"


def markdown(results: list[ModelExplanation], tolerance_px: float, note: str = "") -> list[str]:
    """The report section: the pointing-game table per model and method, the randomization curves'
    end points, and the figures; ``note`` (e.g. how the maps were computed) follows the heading."""
    lines = ["## Where the network looks", ""] + ([note, ""] if note else []) + [
        f"Pointing game: a hit when the map's maximum lies within {tolerance_px:g} original-image pixels of "
        "a finding of the image's own class (other findings -- incidental ones, a benign finding beside a "
        "cancer -- are not scored); chance = the share of the breast those widened findings cover. "
        "Mass inside = the share of the map's sum inside them. Randomization (Adebayo et al. 2018): "
        "rank correlation of the maps after re-initializing fc8 ... conv1 with the trained model's; it "
        f"should fall (passes below {RANDOMIZATION_PASS}).", ""]
    for r in results:
        lines += [f"### {r.scenario} ({r.experiment}, test fraction {r.test_fraction:g})", ""]
        if r.max_abs_proba_difference > 1e-3:
            lines += [f"Warning: the reloaded model's probabilities differ from the run's by up to "
                      f"{r.max_abs_proba_difference:.3g}.", ""]
        lines += ["| method | images | hit rate | chance | p (hits > chance) | mass inside | randomization: "
                  "correlation after fc8 ... all layers | verdict |", "|---|---|---|---|---|---|---|---|"]
        for method, v in r.verdict.items():
            pg = r.pointing_game.get(method)
            rnd = r.randomization.get(method)
            curve = f"{rnd.correlation[0]:.2f} ... {rnd.correlation[-1]:.2f}" if rnd else "not run"
            cells = ["-"] * 5 if pg is None else [
                _cell(pg.n_images, "d"), _cell(pg.hit_rate), _cell(pg.chance), _cell(pg.p_value, ".2g"),
                _cell(pg.energy_share)]
            lines.append(f"| {method} | {' | '.join(cells)} | {curve} | {_verdict(v)} |")
        ig = r.integrated_gradients_completeness
        if ig:
            lines += ["", f"Integrated gradients ({ig.steps} steps): completeness error median "
                          f"{100 * ig.median_relative_error:.2f}%, max {100 * ig.max_relative_error:.2f}%."]
        if not r.ground_truth:
            lines += ["", "No ground-truth findings (or no crop geometry in the dataset): overlays only."]
        lines += ["", f"![{r.scenario}: Grad-CAM on the most confident correct and wrong test images]({r.figure})", ""]
    return lines
