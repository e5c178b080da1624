"""What an explanation of one model measured: typed records, written to explain.json and read by the
report's section (pipeline.explain.report)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Completeness:
    """Integrated gradients' completeness error over the test images (sum IG vs the logit difference)."""

    steps: int
    median_relative_error: float
    max_relative_error: float
    share_within_1pct: float


@dataclass
class Verdict:
    """A method's two checks in a word each: None where the check could not run."""

    localizes_above_chance: bool | None
    passes_randomization: bool | None


@dataclass
class ModelExplanation:
    """What one model's maps show, measured."""

    scenario: str
    experiment: str
    test_fraction: float
    job: str
    n_test: int
    max_abs_proba_difference: float     # the reloaded model against the run's predictions
    ground_truth: bool
    figure: str
    pointing_game: dict = field(default_factory=dict)    # method -> PointingResult
    randomization: dict = field(default_factory=dict)    # method -> RandomizationCurve
    verdict: dict = field(default_factory=dict)          # method -> Verdict
    integrated_gradients_completeness: Completeness | None = None
