"""Where the network looks: attribution maps, and whether they fall on the lesions.

The paper ends: "we are not yet able to clearly visualize and clinically interpret what the
identified nuanced imaging features are". The network's backward pass is written out here, and
the data know where the lesions are (the synthetic cohorts' findings, or a public set's
annotations), so this package draws attribution maps and *measures* them against the truth:

* :mod:`.methods`: Grad-CAM, Grad-CAM++, the input gradient, integrated gradients, occlusion;
* :mod:`.checks`: the pointing game against the findings, the cascading randomization check;
* :mod:`.findings`: each test image's findings in stored-image coordinates;
* :mod:`.figures`: overlays of maps and findings;
* :mod:`.run`: all of it over a run's models, one typed record each (:mod:`.records`, ``explain.json``);
* :mod:`.report`: the report's section.

``python run.py explain RUN_DIR`` runs it over a finished run; every run ends with its Grad-CAM part.
"""
from .checks import (RANDOMIZATION_PASS, TOLERANCE_PX, PointingResult, RandomizationCurve,
                     cascading_randomization, finding_mask, pointing_game, spearman)
from .figures import Explanation, draw_overlay, explain_images
from .methods import (METHODS, IntegratedGradients, compute_maps, grad_cam, grad_cam_pp, input_gradient,
                      input_gradients, integrated_gradients, occlusion, to_image)
from .records import Completeness, ModelExplanation, Verdict
from .report import markdown
from .run import (ExplainOptions, ExplainTarget, explain_finished_run, explain_model, explain_run,
                  finished_run_targets)

__all__ = ["RANDOMIZATION_PASS", "TOLERANCE_PX", "PointingResult", "RandomizationCurve",
           "cascading_randomization", "finding_mask", "pointing_game", "spearman", "Explanation", "draw_overlay",
           "explain_images", "METHODS", "IntegratedGradients", "compute_maps", "grad_cam", "grad_cam_pp",
           "input_gradient", "input_gradients", "integrated_gradients", "occlusion", "to_image", "markdown",
           "ExplainOptions", "ExplainTarget", "ModelExplanation", "Completeness", "Verdict", "explain_model",
           "explain_run", "explain_finished_run", "finished_run_targets"]
