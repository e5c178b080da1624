"""Explaining a run's models: every method's maps over the test images, the pointing game against
the ground truth, the randomization check, and a figure, one typed record per reported model; the
whole run's records go to ``explain.json`` and into the report (pipeline.explain.report)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from alexnet_np import to_network_input
from data_prep.fileio import atomic_output

from ..config import StudyConfig
from ..data import ImageSet, image_set, prepare_datasets, remember_datasets
from ..experiments import experiment_data
from ..jobs import PREDICTIONS, read_predictions
from ..modelfile import load_model, score
from ..scenarios import get_scenario
from .checks import TOLERANCE_PX, cascading_randomization, pointing_game
from .figures import panel_figure
from .findings import findings_for, ground_truth
from .methods import METHODS, compute_maps
from .records import Completeness, ModelExplanation, Verdict
from .report import markdown


@dataclass
class ExplainOptions:
    methods: tuple = METHODS
    tolerance_px: float = TOLERANCE_PX
    per_row: int = 4
    steps: int = 32
    randomization_images: int = 16
    progress: bool = True


@dataclass
class ExplainTarget:
    """One reported model to explain: its job folder's key and the image set its test images index."""

    scenario: str
    experiment: str
    test_fraction: float
    job: str
    data: ImageSet


def explain_model(run_dir, cfg, target: ExplainTarget, truth, opts: ExplainOptions) -> ModelExplanation:
    """Maps, pointing game, randomization curves and the figure for one reported model."""
    job = Path(run_dir) / "jobs" / target.job
    scenario = get_scenario(target.scenario)
    ds = target.data
    test = read_predictions(job / PREDICTIONS)["test"]
    idx, y, proba = test.index, test.label, test.proba
    # model.h5 holds the network and the input mean and scale it trained with; scoring the test
    # images again checks that the maps explain the very model the run evaluated.
    net, card = load_model(job / "model.h5")
    mismatch = float(np.abs(score(net, card, ds.images[idx], batch_size=cfg.batch_size) - proba).max())
    scored, incidental = findings_for(truth, ds, idx)
    breast = ds.images[idx] > 0
    name = f"explain_{target.experiment}_{scenario.name}_tf{target.test_fraction:g}.png"
    out = ModelExplanation(target.scenario, target.experiment, target.test_fraction, target.job, int(len(idx)),
                           mismatch, scored is not None, name)
    maps_of = {}
    batch = cfg.batch_size
    bar = tqdm(total=len(opts.methods) * len(idx), desc=f"explain {target.job}", disable=not opts.progress)
    for method in opts.methods:
        parts, igs = [], []
        for start in range(0, len(idx), batch):
            sel = idx[start:start + batch]
            x = to_network_input(ds.images[sel], card.mean, card.input_scale)
            maps, ig = compute_maps(net, x, y[start:start + batch], method, steps=opts.steps)
            parts.append(maps)
            igs.append(ig)
            bar.update(len(sel))
        maps_of[method] = np.concatenate(parts)
        if method == "integrated-gradients":
            err = np.concatenate([g.relative_error for g in igs])
            out.integrated_gradients_completeness = Completeness(opts.steps, float(np.median(err)), float(err.max()),
                                                                 float(np.mean(err <= 0.01)))
        if scored is not None:
            out.pointing_game[method] = pointing_game(maps_of[method], scored, breast, opts.tolerance_px)
    bar.close()
    # the randomization check on the first test images of the scored class (or all, without findings)
    with_truth = [k for k in range(len(idx)) if scored is None or scored[k]]
    chosen = np.asarray(with_truth[:opts.randomization_images] or list(range(min(len(idx), opts.randomization_images))))
    x = to_network_input(ds.images[idx[chosen]], card.mean, card.input_scale)
    for method in opts.methods:
        if method == "occlusion":  # hundreds of forwards per step; the check stays with the gradient methods
            continue
        out.randomization[method] = cascading_randomization(net, x, y[chosen], method, seed=cfg.seed, steps=opts.steps)
    for method in opts.methods:
        pg = out.pointing_game.get(method)
        rnd = out.randomization.get(method)
        out.verdict[method] = Verdict(None if pg is None or pg.hit_rate is None else pg.p_value < 0.05,
                                      None if rnd is None else rnd.passes)
    # figure: the most confident correct and the most confident wrong test images
    shown = "gradcam" if "gradcam" in maps_of else opts.methods[0]
    pred = proba.argmax(axis=1)
    order = np.argsort(-proba.max(axis=1))
    correct = [k for k in order if pred[k] == y[k]][:opts.per_row]
    wrong = [k for k in order if pred[k] != y[k]][:opts.per_row]
    panel_figure(Path(run_dir) / name, ds, idx, maps_of[shown], proba, y,
                 [("confident, correct", correct), ("confident, wrong", wrong)], scored, incidental,
                 scenario.class_names,
                 f"{shown} for the true class -- {scenario.description} ({target.experiment}): the most confident "
                 f"correct and wrong test images; red: findings of the image's class, yellow: other findings")
    return out


def explain_run(run_dir, cfg, targets, files: dict, opts: ExplainOptions | None = None) -> list[ModelExplanation]:
    """Explain every target (:class:`ExplainTarget`) of a run whose datasets were built into ``files``
    ({dataset: HDF5}); writes the figures and ``explain.json`` into the run folder and returns the records."""
    opts = opts or ExplainOptions()
    truths = {}
    results = []
    for target in targets:
        name = experiment_data(target.experiment)
        if name not in truths:
            truths[name] = ground_truth(name, files)
        results.append(explain_model(run_dir, cfg, target, truths[name], opts))
    with atomic_output(Path(run_dir) / "explain.json") as tmp:
        tmp.write_text(json.dumps({"options": asdict(opts), "results": [asdict(r) for r in results]}, indent=2))
    return results


def finished_run_targets(run_dir, cache_dir="data_cache", workers=None) -> tuple:
    """(StudyConfig, targets, files) of a finished run folder: its config.json and results.json, with
    its datasets loaded from ``cache_dir`` as the run loaded them."""
    run_dir = Path(run_dir)
    cfg = StudyConfig(**json.loads((run_dir / "config.json").read_text()))
    runs = json.loads((run_dir / "results.json").read_text())["runs"]
    datasets, cohorts = prepare_datasets(cfg, cache_dir, workers, log=lambda *_: None)
    files = {c.dataset: c.built_file for c in cohorts}
    remember_datasets(files, datasets)
    targets = [ExplainTarget(r["scenario"], r["experiment"], r["test_fraction"], r["job"],
                             image_set(experiment_data(r["experiment"]), files)) for r in runs]
    return cfg, targets, files



def explain_finished_run(run_dir, cache_dir="data_cache", opts: ExplainOptions | None = None, workers=None) -> Path:
    """``python run.py explain RUN_DIR``: every method over a finished run's models; writes explain.json,
    the figures and explain.md (the report section) into the run folder and returns explain.md's path."""
    opts = opts or ExplainOptions()
    run_dir = Path(run_dir)
    cfg, targets, files = finished_run_targets(run_dir, cache_dir, workers)
    cfg.progress = opts.progress
    results = explain_run(run_dir, cfg, targets, files, opts)
    path = run_dir / "explain.md"
    with atomic_output(path) as tmp:
        tmp.write_text("\n".join(markdown(results, opts.tolerance_px)) + "\n")
    return path
