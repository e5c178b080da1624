"""The study's grid: experiments x scenarios x test fractions, each a training job with its evaluation.

The paper's four experiments (all test sets are held-out patients):

* ``ffdm``        train and test on FFDM;
* ``ddsm``        train and test on DDSM;
* ``combined``    FFDM and DDSM mixed for training and for testing;
* ``incremental`` pretrain on DDSM (after ImageNet when weights are given), then fine-tune and
                  test on FFDM; compared with the ``ffdm`` model on the same FFDM test images by
                  a paired DeLong test (Fig. 4).

Every training run is a *job* with its own folder (checkpoint, training log,
final weights, predictions). A job whose predictions exist is never run again,
and a job with a checkpoint continues from it, so ``--resume`` after a crash or
Ctrl-C loses at most ``checkpoint_every`` iterations of one job.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

import data_prep
from alexnet_np import SGD, AlexNet, load_weights, save_weights
from alexnet_np.weights import fold_input_std, weights_info
from data_prep.fileio import atomic_output

from . import evaluate
from .data import ImageSet, split_holdout, training_mean
from .evaluate import BinaryMetrics, IntervalCancerDetection, Predictions, TripleMetrics
from .modelfile import job_card, save_model
from .scenarios import MALIGNANT, balance, get_scenario
from .train import predict, train

EXPERIMENTS = ("ffdm", "ddsm", "combined", "incremental")
FN_SCENARIOS = ("malignant-vs-negative", "malignant-vs-benign")  # the paper's false-negative analysis


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
    scenario: object
    train_idx: np.ndarray
    train_y: np.ndarray
    eval_sets: dict               # name ("test", "interval", "val") -> EvalSet
    iters: int
    init_weights: str | None = None   # start from these weights (incremental fine-tuning)
    notes: dict = field(default_factory=dict)


def _rng(cfg, *parts):
    """A generator seeded by the run seed and the names of what it is for (stable across runs)."""
    return np.random.default_rng([cfg.seed] + [zlib.crc32(str(p).encode()) for p in parts])


def _interval_patients(ds: ImageSet):
    return np.unique(ds.patient_id[ds.interval_cancer == 1])


def _select(cfg, ds, scenario, idx, exclude_patients, *tag):
    idx = np.asarray(idx)
    if len(exclude_patients):
        idx = idx[~np.isin(ds.patient_id[idx], exclude_patients)]
    return balance(scenario, ds.labels, idx, _rng(cfg, *tag))


@dataclass
class CrossValidation:
    """The paper's internal validation inside the training set: one AUC per fold."""

    folds: int
    aucs: list
    mean: float
    sd: float


@dataclass
class FalseNegativeAnalysis:
    """The interval cancers scored by the main model (``holdout``) or by one retrained without them
    (``separate``, as the paper did)."""

    mode: str
    n_patients: int
    detection: IntervalCancerDetection


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
    triple: TripleMetrics | None = None
    cv: CrossValidation | None = None
    incremental: IncrementalComparison | None = None
    false_negative_analysis: FalseNegativeAnalysis | None = None
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


class Study:
    """Runs jobs for a configuration (see run.py for every option) and collects result records."""

    def __init__(self, cfg, datasets: dict, out: Path, log=print):
        self.cfg, self.datasets, self.out, self.log = cfg, datasets, Path(out), log
        self.records = []

    # ------------------------------------------------------------------ one job
    def run_job(self, job: Job):
        """Train (or resume, or skip when done) one job; returns {eval set name: Predictions}."""
        cfg = self.cfg
        folder = self.out / "jobs" / job.key
        folder.mkdir(parents=True, exist_ok=True)
        pred_path = folder / "predictions.h5"
        if pred_path.exists():
            return self._read_predictions(pred_path)
        net = AlexNet(job.scenario.num_classes, variant=cfg.variant, input_size=cfg.input_size,
                      init=cfg.init, dropout=cfg.dropout, seed=cfg.seed, widths=cfg.widths)
        new_layers = ()
        if job.init_weights:
            load_weights(net, job.init_weights)
            mean = training_mean(job.data, job.train_idx)
        elif cfg.pretrained:
            info = weights_info(cfg.pretrained)  # its variant was checked by pipeline.config.check_inputs
            # fc6's input follows from the input size: at another size only conv1..conv5 transfer
            new_layers = ("fc8",) if int(info["input_size"]) == cfg.input_size else ("fc6", "fc7", "fc8")
            load_weights(net, cfg.pretrained, exclude=new_layers)
            if "std" in info:  # torchvision weights expect inputs divided by 255 * std
                fold_input_std(net, info["std"])
            mean = np.asarray(info["mean"], dtype=np.float32)  # per channel, from the weights file
        else:
            mean = training_mean(job.data, job.train_idx)
        opt = SGD(net, base_lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                  gamma=cfg.gamma, stepsize=cfg.lr_step, new_layers=new_layers)
        train(net, opt, job.data.images, job.train_idx, job.train_y, iters=job.iters,
              batch_size=cfg.batch_size, seed=cfg.seed, mean=mean, scale=cfg.input_scale,
              checkpoint_path=folder / "checkpoint.h5", log_path=folder / "train_log.csv",
              checkpoint_every=cfg.checkpoint_every, resume=True, progress=cfg.progress,
              desc=job.key, flip=cfg.augment_flip, shift=cfg.augment_shift)
        save_weights(net, folder / "weights.h5", mean=(float(np.mean(mean)),) * 3,
                     source=f"trained by run.py job {job.key} (input mean: the training images' mean image)")
        save_model(folder / "model.h5", net, job_card(cfg, job, net, mean))  # self-contained: python run.py predict
        # Scoring in training-sized batches reuses the memory the training steps used (the fast
        # CPU kernels recycle outputs by shape); batches of another size would hold a second set.
        results = {name: Predictions(s.index, s.label if s.label is not None else np.full(len(s.index), -1),
                                     predict(net, job.data.images, s.index, mean, cfg.input_scale, cfg.batch_size))
                   for name, s in job.eval_sets.items()}
        info = dict(job.notes, key=job.key, iters=job.iters, n_train=int(len(job.train_idx)),
                    mean_pixel=float(np.mean(mean)), init_weights=job.init_weights,
                    pretrained=str(cfg.pretrained) if cfg.pretrained else None)
        with atomic_output(pred_path) as tmp, h5py.File(tmp, "w") as f:
            f.attrs["job"] = json.dumps(info)
            for name, pred in results.items():
                g = f.create_group(name)
                g["index"] = np.asarray(pred.index)
                g["label"] = np.asarray(pred.label)
                g["proba"] = pred.proba
        (folder / "checkpoint.h5").unlink(missing_ok=True)  # weights.h5 + predictions are the result
        return results

    @staticmethod
    def _read_predictions(path):
        with h5py.File(path, "r") as f:
            return {name: Predictions(g["index"][()], g["label"][()], g["proba"][()]) for name, g in f.items()}

    # ------------------------------------------------------------------ experiments
    def dataset_for(self, experiment):
        if experiment == "combined":
            if "combined" not in self.datasets:
                self.datasets["combined"] = ImageSet.concat("combined", [self.datasets["ffdm"],
                                                                         self.datasets["ddsm"]])
            return self.datasets["combined"]
        return self.datasets["ffdm" if experiment == "incremental" else experiment]

    def run(self, scenario_name, experiment, test_fraction):
        """Train and evaluate one (scenario, experiment, test fraction); returns its result record."""
        cfg = self.cfg
        scenario = get_scenario(scenario_name)
        base = "ffdm" if experiment == "incremental" else experiment
        ds = self.dataset_for(experiment)
        train_side, test_side = split_holdout(ds, test_fraction, cfg.seed)
        tag = f"tf{test_fraction:g}"
        fn = cfg.fn_analysis if (base == "ffdm" and scenario.name in FN_SCENARIOS) else "off"
        interval = _interval_patients(ds) if fn != "off" else np.array([], dtype=str)
        held_out = interval if fn == "holdout" else np.array([], dtype=str)
        tr_idx, tr_y = _select(cfg, ds, scenario, train_side, held_out, base, scenario.name, tag, "train")
        te_idx, te_y = _select(cfg, ds, scenario, test_side, held_out, base, scenario.name, tag, "test")
        data_prep.check_no_patient_leakage(ds.patient_id, tr_idx, te_idx)
        interval_idx = np.flatnonzero(np.isin(ds.patient_id, interval) & (ds.labels == MALIGNANT))
        evals = {"test": EvalSet(te_idx, te_y)}
        if fn == "holdout" and len(interval_idx):
            evals["interval"] = EvalSet(interval_idx, None)
        main = Job(f"{base}/{scenario.name}/{tag}/main", ds, scenario, tr_idx, tr_y, evals, cfg.iters,
                   notes={"experiment": base})
        if experiment == "incremental":
            return self._incremental(scenario, main, test_fraction)
        self.log(f"[{experiment} | {scenario.name} | test {test_fraction:g}] "
                 f"train {len(tr_idx)} images, test {len(te_idx)} images")
        preds = self.run_job(main)
        record = self._record(scenario, experiment, test_fraction, main, preds["test"])
        if cfg.cv >= 2:
            record.cv = self._cross_validate(scenario, main)
        if fn == "holdout" and "interval" in preds:
            record.false_negative_analysis = self._fn_record(preds["interval"], "holdout",
                                                             record.binary.operating_point.threshold)
        elif fn == "separate" and len(interval_idx):
            tr2, y2 = _select(cfg, ds, scenario, train_side, interval, base, scenario.name, tag, "fn-train")
            te2, yt2 = _select(cfg, ds, scenario, test_side, interval, base, scenario.name, tag, "fn-test")
            job = Job(f"{base}/{scenario.name}/{tag}/fn", ds, scenario, tr2, y2,
                      {"test": EvalSet(te2, yt2), "interval": EvalSet(interval_idx, None)}, cfg.iters)
            p = self.run_job(job)
            record.false_negative_analysis = self._fn_record(p["interval"], "separate",
                                                             evaluate.operating_threshold(p["test"]))
        self.records.append(record)
        return record

    def _record(self, scenario, experiment, test_fraction, job, test: Predictions) -> ModelResult:
        ds = job.data
        rec = ModelResult(scenario=scenario.name, experiment=experiment, test_fraction=test_fraction, job=job.key,
                          n_train=int(len(job.train_idx)), n_test=int(len(test.index)),
                          n_train_per_class=np.bincount(job.train_y, minlength=scenario.num_classes).tolist(),
                          n_test_per_class=np.bincount(test.label, minlength=scenario.num_classes).tolist(),
                          n_test_patients=int(len(np.unique(ds.patient_id[test.index]))))
        if scenario.binary:
            rec.binary = evaluate.binary_metrics(test.label, test.positive_score, ds.patient_id[test.index],
                                                 self.cfg.n_boot, self.cfg.seed)
        else:
            rec.triple = evaluate.triple_metrics(test.label, test.proba, scenario.class_names)
        rec.flags = result_flags(scenario, job, test, rec.binary, self.cfg.pretrain_iters)
        return rec

    def _cross_validate(self, scenario, main: Job) -> CrossValidation:
        """6-fold CV inside the training set (the paper's "internal validation"): each fold trains on
        five sixths of the training patients and is scored on the sixth. It estimates how stable
        training is; it selects nothing -- the reported model is the one trained on all of it."""
        ds = main.data
        folds = data_prep.kfold_split(ds.patient_id[main.train_idx], ds.labels[main.train_idx],
                                      k=self.cfg.cv, seed=self.cfg.seed)
        aucs = []
        for k, (tr, va) in enumerate(folds, 1):
            job = Job(main.key.replace("/main", f"/cv{k}"), ds, scenario, main.train_idx[tr], main.train_y[tr],
                      {"val": EvalSet(main.train_idx[va], main.train_y[va])}, main.iters)
            aucs.append(evaluate.scenario_auc(self.run_job(job)["val"]))
        return CrossValidation(folds=len(aucs), aucs=aucs, mean=float(np.mean(aucs)), sd=float(np.std(aucs, ddof=1)))

    def _fn_record(self, interval: Predictions, mode, threshold) -> FalseNegativeAnalysis:
        """The interval cancers' P(malignant) (class 1 in both false-negative scenarios) at two rules."""
        n_patients = int(len(np.unique(self.datasets["ffdm"].patient_id[interval.index])))
        return FalseNegativeAnalysis(mode=mode, n_patients=n_patients,
                                     detection=evaluate.interval_cancer_detection(interval.positive_score, threshold))

    def _incremental(self, scenario, main: Job, test_fraction):
        """ImageNet (if given) -> DDSM -> FFDM, versus the FFDM-only model on the same test images."""
        cfg = self.cfg
        ddsm = self.datasets["ddsm"]
        tag = f"tf{test_fraction:g}"
        pre_idx, pre_y = balance(scenario, ddsm.labels, np.arange(len(ddsm)), _rng(cfg, "ddsm-pretrain", scenario.name))
        stage1 = Job(f"incremental/{scenario.name}/ddsm-pretrain", ddsm, scenario, pre_idx, pre_y, {},
                     cfg.pretrain_iters, notes={"stage": "DDSM pretraining"})
        self.log(f"[incremental | {scenario.name}] stage 1: pretrain on {len(pre_idx)} DDSM images")
        self.run_job(stage1)
        stage2 = Job(f"incremental/{scenario.name}/{tag}/main", main.data, scenario, main.train_idx, main.train_y,
                     main.eval_sets, cfg.iters, init_weights=str(self.out / "jobs" / stage1.key / "weights.h5"),
                     notes={"stage": "FFDM fine-tuning"})
        self.log(f"[incremental | {scenario.name} | test {test_fraction:g}] stage 2: fine-tune on "
                 f"{len(main.train_idx)} FFDM images; baseline: the ffdm experiment's model")
        inc = self.run_job(stage2)["test"]
        base = self.run_job(main)["test"]
        if not np.array_equal(inc.index, base.index):
            raise RuntimeError("incremental and baseline models were not tested on the same images")
        record = self._record(scenario, "incremental", test_fraction, stage2, inc)
        pretrained_on = ("ImageNet weights " + str(cfg.pretrained) + " then DDSM") if cfg.pretrained \
            else "DDSM only (no ImageNet weights were given)"
        if scenario.binary:
            cmp = evaluate.compare_paired(inc.label, inc.positive_score, base.positive_score)
            record.incremental = IncrementalComparison(main.key, pretrained_on, cmp.baseline_auc, cmp.p_delong, cmp.z)
        else:
            record.incremental = IncrementalComparison(main.key, pretrained_on, evaluate.scenario_auc(base), None, None)
        self.records.append(record)
        return record
