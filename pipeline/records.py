"""The results of a run, one typed record per (scenario, experiment, test fraction), computed from
the jobs' ``predictions.h5`` files: AUCs and CIs, cross-validation, the false-negative analyses, the
incremental comparison, and the flags that say when a number looks more solid than it is.

These records are what results.json, the console and report.md show (:mod:`pipeline.outputs`,
:mod:`pipeline.report`); nothing there recomputes them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import evaluate
from .evaluate import BinaryMetrics, IntervalCancerDetection, LevelAUC, PooledDetection, Predictions, TripleMetrics
from .jobs import PREDICTIONS, choose_iterations, job_info, read_predictions
from .plan import CellPlan, Job
from .pretrained import pretrained_origin


@dataclass
class CrossValidation:
    """The paper's internal validation inside the training set: one AUC per fold (at the selected
    iteration when the folds chose the training length, else at the end of their training), and with
    ``--cv-select iterations`` the mean validation AUC at every checkpoint and the iteration chosen."""

    folds: int
    aucs: list
    mean: float
    sd: float
    selected_iteration: int | None = None
    curve_iterations: list = field(default_factory=list)
    curve_mean: list = field(default_factory=list)
    curve_sd: list = field(default_factory=list)


@dataclass
class FalseNegativeAnalysis:
    """The interval cancers scored by the main model (``holdout``) or by one retrained without them
    (``separate``, as the paper did)."""

    mode: str
    n_patients: int
    detection: IntervalCancerDetection


@dataclass
class HalfFold:
    """One model of the second false-negative analysis: trained with one half of the interval-cancer
    patients, scored on the other half's images."""

    key: str                      # its job
    trained_with: list            # interval-cancer patients whose images were in its training set
    tested_on: list               # the other half: the patients whose images it scored
    detection: IntervalCancerDetection


@dataclass
class FalseNegativeHalves:
    """The paper's second false-negative analysis: "we retrained the CNN model by including 50% of the
    false negative cases and used the rest of the unseen 50% for testing" (72.8% and 68.4%).

    The interval-cancer patients are split in two halves by patient; each half is scored by the model
    whose training set is that of the ``separate`` analysis plus the *other* half's images, so every
    interval-cancer image is scored once by a model that never saw its patient, and the share is
    over all of them ("of the entire false negative images"; the paper does not say whether it
    swapped the halves). ``pooled``: both halves' images, each at its own model's rules.
    """

    n_patients: int
    folds: list                   # HalfFold, one per half
    pooled: PooledDetection


@dataclass
class IncrementalComparison:
    """DDSM -> FFDM fine-tuning against the FFDM-only model on the same test images (Fig. 4)."""

    baseline_job: str
    pretrained_on: str
    baseline_auc: float
    p_delong: float | None     # paired DeLong test; None for the triple scenario
    z_delong: float | None


#: A CI from fewer test patients than this in some class is marked as unreliable in the report.
MIN_TEST_PATIENTS_PER_CLASS = 10


@dataclass
class ResultFlags:
    """What makes a result look more solid than it is; the report marks it next to the number."""

    untrained: bool = False               # the model never took an SGD step on the task
    constant_scores: bool = False         # every test image got the same probabilities
    small_test_set: str | None = None     # e.g. "2 malignant test patients" (< MIN_TEST_PATIENTS_PER_CLASS)
    zero_width_cis: list = field(default_factory=list)   # "DeLong", "bootstrap (images)", ...

    def messages(self) -> list[str]:
        out = []
        if self.untrained:
            out.append("untrained model (0 iterations): its AUC says nothing about learning")
        if self.constant_scores:
            out.append("the model gives every test image the same score (a collapsed or untrained network)")
        if self.small_test_set:
            out.append(f"test set too small for its CIs: {self.small_test_set} (fewer than "
                       f"{MIN_TEST_PATIENTS_PER_CLASS} in a class)")
        if self.zero_width_cis:
            out.append(f"zero-width CI ({', '.join(self.zero_width_cis)}): a degenerate interval, not certainty")
        return out


@dataclass
class ModelResult:
    """One (scenario, experiment, test fraction): the reported model's test-set results.

    ``binary`` is set for the five binary scenarios, ``triple`` for the triple one; the other
    parts are None when the run did not compute them.
    """

    scenario: str
    experiment: str
    test_fraction: float
    job: str                          # folder under <out>/jobs
    n_train: int
    n_test: int
    n_train_per_class: list
    n_test_per_class: list
    n_test_patients: int
    binary: BinaryMetrics | None = None
    breast: LevelAUC | None = None        # binary scenarios with known laterality: per-breast scores
    patient: LevelAUC | None = None       # ... and per-patient ones (the image level stays the headline)
    triple: TripleMetrics | None = None
    cv: CrossValidation | None = None
    incremental: IncrementalComparison | None = None
    false_negative_analysis: FalseNegativeAnalysis | None = None
    false_negative_halves: FalseNegativeHalves | None = None
    flags: ResultFlags = field(default_factory=ResultFlags)
    seconds: float = 0.0

    @property
    def auc(self) -> float:
        """The headline AUC: the binary AUC, or the triple's mean pairwise AUC."""
        return self.binary.auc if self.binary is not None else self.triple.auc


def result_flags(scenario, job: Job, test: Predictions, binary: BinaryMetrics | None, pretrain_iters: int) -> ResultFlags:
    """What the report must mark about a test result (see :class:`ResultFlags`)."""
    patients = [len(np.unique(job.data.patient_id[test.index[test.label == c]])) for c in range(scenario.num_classes)]
    fewest = int(np.argmin(patients))
    cis = {} if binary is None else {"DeLong": binary.ci95_delong, "bootstrap (images)": binary.ci95_bootstrap,
                                     "bootstrap (patients)": binary.ci95_bootstrap_patient}
    return ResultFlags(
        untrained=job.iters == 0 and (job.init_weights is None or pretrain_iters == 0),
        constant_scores=bool(np.all(test.proba == test.proba[:1])),
        small_test_set=(f"{patients[fewest]} {scenario.class_names[fewest]} test patients"
                        if patients[fewest] < MIN_TEST_PATIENTS_PER_CLASS else None),
        zero_width_cis=[name for name, (lo, hi) in cis.items() if hi - lo == 0])


class Recorder:
    """Computes the result records of planned cells from the predictions under ``out/jobs``."""

    def __init__(self, cfg, out):
        self.cfg, self.out = cfg, Path(out)

    def predictions(self, job: Job) -> dict:
        return read_predictions(self.out / "jobs" / job.key / PREDICTIONS)

    def record(self, plan: CellPlan) -> ModelResult:
        """The result record of a planned cell, from its jobs' predictions."""
        scenario, main = plan.scenario, plan.main
        test = self.predictions(main)["test"]
        record = self._main(scenario, plan.experiment, plan.test_fraction, main, test)
        record.seconds = float(sum(job_info(self.out / "jobs" / j.key / PREDICTIONS).get("seconds", 0.0)
                                   for j in [main] + plan.cv + [j for j in [plan.fn] + plan.fn_halves if j]))
        if plan.cv:
            record.cv = self._cross_validation(plan.cv)
        if plan.fn_mode == "holdout" and "interval" in main.eval_sets:
            record.false_negative_analysis = self._fn(main, self.predictions(main)["interval"], "holdout",
                                                      record.binary.operating_point.threshold)
        if plan.fn is not None:
            p = self.predictions(plan.fn)
            record.false_negative_analysis = self._fn(plan.fn, p["interval"], "separate",
                                                      evaluate.operating_threshold(p["test"]))
        if plan.fn_halves:
            record.false_negative_halves = self._halves(plan.fn_halves)
        if plan.baseline is not None:
            record.incremental = self._incremental(plan)
        return record

    def _main(self, scenario, experiment, test_fraction, job, test: Predictions) -> ModelResult:
        ds = job.data
        rec = ModelResult(scenario=scenario.name, experiment=experiment, test_fraction=test_fraction, job=job.key,
                          n_train=int(len(job.train_idx)), n_test=int(len(test.index)),
                          n_train_per_class=np.bincount(job.train_y, minlength=scenario.num_classes).tolist(),
                          n_test_per_class=np.bincount(test.label, minlength=scenario.num_classes).tolist(),
                          n_test_patients=int(len(np.unique(ds.patient_id[test.index]))))
        if scenario.binary:
            rec.binary = evaluate.binary_metrics(test.label, test.positive_score, ds.patient_id[test.index],
                                                 self.cfg.n_boot, self.cfg.seed)
            if ds.laterality is not None:
                rec.breast, rec.patient = evaluate.aggregated_aucs(
                    test.label, test.positive_score, ds.patient_id[test.index], ds.laterality[test.index],
                    self.cfg.n_boot, self.cfg.seed)
        else:
            rec.triple = evaluate.triple_metrics(test.label, test.proba, scenario.class_names)
        rec.flags = result_flags(scenario, job, test, rec.binary, self.cfg.pretrain_iters)
        return rec

    def _cross_validation(self, folds) -> CrossValidation:
        curves = [job_info(self.out / "jobs" / j.key / PREDICTIONS).get("val_curve") for j in folds]
        if not all(curves):
            aucs = [evaluate.scenario_auc(self.predictions(j)["val"]) for j in folds]
            return CrossValidation(len(aucs), aucs, float(np.mean(aucs)), float(np.std(aucs, ddof=1)))
        chosen = choose_iterations(curves)
        at = curves[0]["iteration"].index(chosen)
        table = np.array([c["auc"] for c in curves])          # (folds, checkpoints)
        aucs = table[:, at].tolist()
        return CrossValidation(len(aucs), aucs, float(np.mean(aucs)), float(np.std(aucs, ddof=1)), chosen,
                               list(curves[0]["iteration"]), table.mean(axis=0).tolist(),
                               table.std(axis=0, ddof=1).tolist())

    def _fn(self, job: Job, interval: Predictions, mode, threshold) -> FalseNegativeAnalysis:
        """The interval cancers' P(malignant) (class 1 in both false-negative scenarios) at two rules."""
        n_patients = int(len(np.unique(job.data.patient_id[interval.index])))
        return FalseNegativeAnalysis(mode=mode, n_patients=n_patients,
                                     detection=evaluate.interval_cancer_detection(interval.positive_score, threshold))

    def _halves(self, jobs) -> FalseNegativeHalves:
        folds = []
        for job in jobs:
            p = self.predictions(job)
            folds.append(HalfFold(job.key, job.notes["interval_patients_trained_with"],
                                  job.notes["interval_patients_scored"],
                                  evaluate.interval_cancer_detection(p["interval"].positive_score,
                                                                     evaluate.operating_threshold(p["test"]))))
        return FalseNegativeHalves(n_patients=sum(len(f.tested_on) for f in folds), folds=folds,
                                   pooled=evaluate.pool_interval_detections([f.detection for f in folds]))

    def _incremental(self, plan: CellPlan) -> IncrementalComparison:
        cfg = self.cfg
        inc, base = self.predictions(plan.main)["test"], self.predictions(plan.baseline)["test"]
        if not np.array_equal(inc.index, base.index):
            raise RuntimeError("incremental and baseline models were not tested on the same images")
        pretrained_on = (f"{pretrained_origin(cfg.pretrained)} ({cfg.pretrained}), then DDSM" if cfg.pretrained
                         else "DDSM only (no ImageNet weights were given)")
        if plan.scenario.binary:
            cmp = evaluate.compare_paired(inc.label, inc.positive_score, base.positive_score)
            return IncrementalComparison(plan.baseline.key, pretrained_on, cmp.baseline_auc, cmp.p_delong, cmp.z)
        return IncrementalComparison(plan.baseline.key, pretrained_on, evaluate.scenario_auc(base), None, None)
