"""Planning: which training jobs a (scenario, experiment, test fraction) needs, on which images.

The paper's design, job by job (every test set is held-out patients, balanced per class as Table 1):

* ``main``: the reported model, trained on the balanced training side, scored on the test side;
* ``cvK``: the 6-fold cross-validation inside the training side ("internal validation ... 6-fold
  cross validation of training data in the CNN model training phase");
* ``fn``, ``fn-halfK``: the false-negative (interval cancer) analyses, malignant-vs-negative and
  malignant-vs-benign, in every experiment with FFDM test images (FFDM, combined, incremental): a
  model retrained without the interval-cancer patients scores them all; two models each trained
  with one half of them score the other half ("The CNN models trained by other strategies (i.e.,
  experiments iii and iv ...) also achieved similar performance");
* incremental: the DDSM stage (``ddsm-pretrain``, shared by the test fractions), the FFDM fine-tune
  that starts from it (``main``), and the ``ffdm`` experiment's model on the same test images as
  the baseline of the paired DeLong test (Fig. 4).

Planning is cheap and trains nothing; :mod:`pipeline.jobs` runs the jobs and
:mod:`pipeline.records` turns their predictions into results.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

import data_prep

from .data import ImageSet, split_holdout
from .experiments import FN_EXPERIMENTS, FN_SCENARIOS, experiment_data
from .scenarios import MALIGNANT, Scenario, balance, get_scenario, scenario_labels


@dataclass
class EvalSet:
    """Images a job scores after training, with their network-class labels (None: no labels)."""

    index: np.ndarray
    label: np.ndarray | None


@dataclass
class Job:
    """One training run: what to train on, what to predict, where to keep its files."""

    key: str                      # folder under <out>/jobs, e.g. "ffdm/malignant-vs-negative/tf0.05/main"
    data: ImageSet
    scenario: Scenario
    train_idx: np.ndarray
    train_y: np.ndarray
    eval_sets: dict               # name ("test", "interval", "val") -> EvalSet
    iters: int
    init_weights: str | None = None   # start from these weights (incremental fine-tuning)
    notes: dict = field(default_factory=dict)
    deps: tuple = ()              # keys of the jobs whose results it reads (a fine-tune's DDSM stage)


@dataclass
class CellPlan:
    """The jobs one (scenario, experiment, test fraction) needs for its result record."""

    scenario: Scenario
    experiment: str
    test_fraction: float
    main: Job                                 # the reported model (incremental: the fine-tune)
    pretrain: Job | None = None               # incremental: its DDSM stage
    baseline: Job | None = None               # incremental: the ffdm model, same test images
    cv: list = field(default_factory=list)    # cross-validation folds of the main model
    baseline_cv: list = field(default_factory=list)   # incremental: the baseline's folds (the ffdm cell's)
    fn_mode: str = "off"
    fn: Job | None = None                     # separate: trained without the interval cancers
    fn_halves: list = field(default_factory=list)   # separate: trained with half of them (two)

    def jobs(self) -> list:
        """Every job of the cell, each after the jobs it depends on."""
        return ([j for j in (self.pretrain,) if j is not None] + self.baseline_cv + self.cv
                + [j for j in (self.baseline, self.main, self.fn) if j is not None] + self.fn_halves)


def seeded_rng(cfg, *parts):
    """A generator seeded by the run seed and the names of what it is for (stable across runs)."""
    return np.random.default_rng([cfg.seed] + [zlib.crc32(str(p).encode()) for p in parts])


def interval_patients(ds: ImageSet):
    """The patients with an interval cancer (the false negatives of screening)."""
    return np.unique(ds.patient_id[ds.interval_cancer == 1])


def interval_halves(cfg, interval) -> list:
    """The interval-cancer patients in two halves (the second false-negative analysis), the same for
    every scenario and test fraction of a run."""
    order = seeded_rng(cfg, "fn-halves").permutation(np.sort(np.asarray(interval)))
    return [np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2:])]


@dataclass
class Planner:
    """Plans the jobs of a run's cells. ``load(name)`` gives the ImageSet of "ffdm", "ddsm" or
    "combined"; ``out`` is the run folder (a fine-tune's job names its DDSM stage's model file)."""

    cfg: object
    out: Path
    load: Callable[[str], ImageSet]
    log: Callable = print

    def folder(self, job: Job) -> Path:
        return Path(self.out) / "jobs" / job.key

    def _select(self, ds, scenario, idx, exclude_patients, *tag):
        """Balanced images of one side of a split (Table 1: equal images per class). A set of several
        sources (the combined experiment's FFDM + DDSM) is balanced per source, then merged, so that
        each class has the same FFDM/DDSM share and the source cannot stand in for the class; the
        paper's combined counts are the sums of the per-dataset ones (4,161 = 1,520 + 2,641)."""
        idx = np.asarray(idx)
        if len(exclude_patients):
            idx = idx[~np.isin(ds.patient_id[idx], exclude_patients)]
        side = "test" if tag[-1].endswith("test") else "training"
        sources = np.unique(ds.source)
        if len(sources) == 1:
            return balance(scenario, ds.labels, idx, seeded_rng(self.cfg, *tag),
                           source=f"the {side} side of the {ds.name} data")
        parts = [balance(scenario, ds.labels, idx[ds.source[idx] == src], seeded_rng(self.cfg, *tag, src),
                         source=f"the {side} side of the {src} part of the {ds.name} data") for src in sources]
        chosen, classes = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        order = np.argsort(chosen)
        return chosen[order], classes[order]

    def plan(self, scenario_name, experiment, test_fraction) -> CellPlan:
        """Which jobs (scenario, experiment, test fraction) needs, with their images; trains nothing."""
        cfg = self.cfg
        scenario = get_scenario(scenario_name)
        base = "ffdm" if experiment == "incremental" else experiment
        ds = self.load(experiment_data(experiment))
        train_side, test_side = split_holdout(ds, test_fraction, cfg.seed)
        tag = f"tf{test_fraction:g}"
        fn = cfg.fn_analysis if (experiment in FN_EXPERIMENTS and scenario.name in FN_SCENARIOS) else "off"
        interval = interval_patients(ds) if fn != "off" else np.array([], dtype=str)
        held_out = interval if fn == "holdout" else np.array([], dtype=str)
        tr_idx, tr_y = self._select(ds, scenario, train_side, held_out, base, scenario.name, tag, "train")
        te_idx, te_y = self._select(ds, scenario, test_side, held_out, base, scenario.name, tag, "test")
        data_prep.check_no_patient_leakage(ds.patient_id, tr_idx, te_idx)
        interval_idx = np.flatnonzero(np.isin(ds.patient_id, interval) & (ds.labels == MALIGNANT))
        evals = {"test": EvalSet(te_idx, te_y)}
        if fn == "holdout" and len(interval_idx):
            evals["interval"] = EvalSet(interval_idx, None)
        main = Job(f"{base}/{scenario.name}/{tag}/main", ds, scenario, tr_idx, tr_y, evals, cfg.iters,
                   notes={"experiment": base})
        plan = CellPlan(scenario, experiment, test_fraction, main, fn_mode=fn)
        plan.cv = self._cross_validation(main)
        if experiment == "incremental":
            plan.baseline_cv = plan.cv
            self._plan_incremental(plan)
            plan.cv = self._cross_validation(plan.main)
        else:
            self.log(f"[{experiment} | {scenario.name} | test {test_fraction:g}] "
                     f"train {len(tr_idx)} images, test {len(te_idx)} images")
        main = plan.main   # incremental: every job below fine-tunes from the DDSM stage, as the main model
        if fn == "separate" and len(interval_idx):
            tr2, y2 = self._select(ds, scenario, train_side, interval, base, scenario.name, tag, "fn-train")
            te2, yt2 = self._select(ds, scenario, test_side, interval, base, scenario.name, tag, "fn-test")
            plan.fn = Job(main.key.replace("/main", "/fn"), ds, scenario, tr2, y2,
                          {"test": EvalSet(te2, yt2), "interval": EvalSet(interval_idx, None)}, cfg.iters,
                          init_weights=main.init_weights, deps=main.deps, notes=dict(main.notes))
            halves = interval_halves(cfg, interval)
            if all(len(h) for h in halves):
                for k, (with_, scored) in enumerate(((halves[0], halves[1]), (halves[1], halves[0])), 1):
                    plan.fn_halves.append(self._half_job(plan.fn, interval_idx, with_, scored, k))
        return plan

    def _cross_validation(self, main: Job) -> list:
        """The folds of ``main``'s training set ("6-fold cross validation of training data"), split by
        patient and stratified by class, each scoring its validation patients. With ``cv_select
        iterations`` they score them at every checkpoint too, and ``main`` (whose notes and
        dependencies this sets) trains for the iteration count with the best mean validation AUC."""
        cfg = self.cfg
        if cfg.cv < 2:
            return []
        ds, tr_idx, tr_y = main.data, main.train_idx, main.train_y
        folds = data_prep.kfold_split(ds.patient_id[tr_idx], ds.labels[tr_idx], k=cfg.cv, seed=cfg.seed)
        select = cfg.cv_select == "iterations"
        jobs = [Job(main.key.replace("/main", f"/cv{k}"), ds, main.scenario, tr_idx[tr], tr_y[tr],
                    {"val": EvalSet(tr_idx[va], tr_y[va])}, main.iters, init_weights=main.init_weights,
                    deps=main.deps, notes={"validate_every_checkpoint": select})
                for k, (tr, va) in enumerate(folds, 1)]
        if select:
            main.notes["iterations_from_cv"] = [j.key for j in jobs]
            main.deps = tuple(main.deps) + tuple(j.key for j in jobs)
        return jobs

    def _half_job(self, fn: Job, interval_idx, with_patients, scored_patients, k) -> Job:
        """The second false-negative analysis's model k: the ``separate`` model's training images plus
        the interval-cancer images of ``with_patients`` (as malignant), scoring those of ``scored_patients``."""
        ds = fn.data
        added = interval_idx[np.isin(ds.patient_id[interval_idx], with_patients)]
        scored = interval_idx[np.isin(ds.patient_id[interval_idx], scored_patients)]
        train_idx = np.concatenate([fn.train_idx, added])
        train_y = np.concatenate([fn.train_y, scenario_labels(fn.scenario, ds.labels[added])])
        for other in (scored, fn.eval_sets["test"].index):  # nothing it scores shares a patient with its training
            data_prep.check_no_patient_leakage(ds.patient_id, train_idx, other)
        return Job(fn.key.replace("/fn", f"/fn-half{k}"), ds, fn.scenario, train_idx, train_y,
                   {"test": fn.eval_sets["test"], "interval": EvalSet(scored, None)}, fn.iters,
                   init_weights=fn.init_weights, deps=fn.deps,
                   notes=dict(fn.notes, interval_patients_trained_with=sorted(map(str, with_patients)),
                              interval_patients_scored=sorted(map(str, scored_patients))))

    def _plan_incremental(self, plan: CellPlan):
        """ImageNet (if given) -> DDSM -> FFDM, versus the FFDM-only model on the same test images."""
        cfg, scenario, main = self.cfg, plan.scenario, plan.main
        ddsm = self.load("ddsm")
        tag = f"tf{plan.test_fraction:g}"
        pre_idx, pre_y = balance(scenario, ddsm.labels, np.arange(len(ddsm)),
                                 seeded_rng(cfg, "ddsm-pretrain", scenario.name), source="the ddsm data")
        plan.pretrain = Job(f"incremental/{scenario.name}/ddsm-pretrain", ddsm, scenario, pre_idx, pre_y, {},
                            cfg.pretrain_iters, notes={"stage": "DDSM pretraining"})
        self.log(f"[incremental | {scenario.name}] stage 1: pretrain on {len(pre_idx)} DDSM images")
        plan.baseline = main
        plan.main = Job(f"incremental/{scenario.name}/{tag}/main", main.data, scenario, main.train_idx, main.train_y,
                        main.eval_sets, cfg.iters, init_weights=str(self.folder(plan.pretrain) / "model.h5"),
                        notes={"stage": "FFDM fine-tuning"}, deps=(plan.pretrain.key,))
        self.log(f"[incremental | {scenario.name} | test {plan.test_fraction:g}] stage 2: fine-tune on "
                 f"{len(main.train_idx)} FFDM images; baseline: the ffdm experiment's model")
