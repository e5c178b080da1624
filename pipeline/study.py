"""The study's grid: experiments x scenarios x test fractions, each a graph of training jobs.

The paper's four experiments (all test sets are held-out patients):

* ``ffdm``        train and test on FFDM;
* ``ddsm``        train and test on DDSM;
* ``combined``    FFDM and DDSM mixed for training and for testing;
* ``incremental`` pretrain on DDSM (after ImageNet when weights are given), then fine-tune and
                  test on FFDM; compared with the ``ffdm`` model on the same FFDM test images by
                  a paired DeLong test (Fig. 4).

A run has three phases, so that the training can run anywhere (pipeline.cluster):

1. *planning* (:meth:`Study.plan`, cheap, in the client): which jobs a (scenario, experiment, test
   fraction) needs, their training and evaluation images and their dependencies (a fine-tune
   after its DDSM stage); each job's spec is written to ``jobs/<key>/job.h5``;
2. *execution* (:meth:`Study.execute`): every job is :func:`train_job` on its spec file, run in
   this process or on Dask workers, which load the datasets from their HDF5 files (a shared file
   system); a job writes ``predictions.h5`` atomically, is skipped when that file exists and
   continues from its ``checkpoint.h5`` when it was interrupted;
3. *evaluation* (:meth:`Study.record`, cheap, in the client): the result records, from the jobs'
   ``predictions.h5`` files (comparisons need both of their models, so they come after both).

``--resume`` after a crash, Ctrl-C or a killed worker therefore loses at most
``checkpoint_every`` iterations of each running job.
"""
from __future__ import annotations

import json
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

import data_prep
from alexnet_np import SGD, AlexNet, load_weights
from alexnet_np.weights import fold_input_std, weights_info
from data_prep.fileio import atomic_output

from . import evaluate
from .data import ImageSet, split_holdout, training_mean
from .cluster import GridJob, run_jobs
from .evaluate import BinaryMetrics, IntervalCancerDetection, PooledDetection, Predictions, TripleMetrics
from .modelfile import job_card, save_model
from .scenarios import MALIGNANT, balance, get_scenario, scenario_labels
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
    deps: tuple = ()              # keys of the jobs whose results it reads (a fine-tune's DDSM stage)


def _rng(cfg, *parts):
    """A generator seeded by the run seed and the names of what it is for (stable across runs)."""
    return np.random.default_rng([cfg.seed] + [zlib.crc32(str(p).encode()) for p in parts])


def _interval_patients(ds: ImageSet):
    return np.unique(ds.patient_id[ds.interval_cancer == 1])


def _select(cfg, ds, scenario, idx, exclude_patients, *tag):
    idx = np.asarray(idx)
    if len(exclude_patients):
        idx = idx[~np.isin(ds.patient_id[idx], exclude_patients)]
    side = "test" if tag[-1].endswith("test") else "training"
    return balance(scenario, ds.labels, idx, _rng(cfg, *tag), source=f"the {side} side of the {ds.name} data")


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


# ------------------------------------------------------------------ a job: spec file, execution
JOB_SPEC = "job.h5"          # a job's spec in its folder: what a worker needs to run it
PREDICTIONS = "predictions.h5"

#: Datasets this process has loaded, for one set of dataset files: a worker loads each dataset once,
#: not once per job, and the client's sequential jobs use the datasets it loaded itself.
_LOADED: dict = {"files": None, "sets": {}}


def _files_id(files: dict) -> tuple:
    """The dataset files as they are now (path, size, modification time): a rebuilt file is another one."""
    out = []
    for name, path in sorted(files.items()):
        st = os.stat(path)
        out.append((name, str(Path(path).resolve()), st.st_size, st.st_mtime_ns))
    return tuple(out)


def remember_datasets(files: dict, datasets: dict):
    """Let this process's jobs use ``datasets`` (already loaded from ``files``) instead of reading them again."""
    _LOADED["files"], _LOADED["sets"] = _files_id(files), dict(datasets)


def experiment_data(name: str, files: dict) -> ImageSet:
    """The ImageSet of ``name`` ("ffdm", "ddsm" or "combined", the two stacked) from the built ``files``."""
    ident = _files_id(files)
    if _LOADED["files"] != ident:
        _LOADED["files"], _LOADED["sets"] = ident, {}
    sets = _LOADED["sets"]
    if name not in sets:
        sets[name] = (ImageSet.concat("combined", [experiment_data(p, files) for p in ("ffdm", "ddsm")])
                      if name == "combined" else ImageSet.load(name, files[name]))
    return sets[name]


def write_job_spec(path, cfg, job: Job, files: dict):
    """``jobs/<key>/job.h5``: the job's images (indices into its dataset), labels, evaluation sets and
    settings, the run's configuration and the dataset files; everything :func:`train_job` reads."""
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(key=job.key, scenario=job.scenario.name, dataset=job.data.name, iters=int(job.iters),
                       init_weights=job.init_weights or "", notes=json.dumps(job.notes),
                       deps=json.dumps(list(job.deps)), files=json.dumps({k: str(v) for k, v in files.items()}),
                       config=json.dumps(cfg.to_dict(), default=str))
        f["train_idx"] = np.asarray(job.train_idx, np.int64)
        f["train_y"] = np.asarray(job.train_y, np.int64)
        for name, s in job.eval_sets.items():
            g = f.create_group(f"eval/{name}")
            g["index"] = np.asarray(s.index, np.int64)
            if s.label is not None:
                g["label"] = np.asarray(s.label, np.int64)


def read_job_spec(path):
    """(StudyConfig, Job) from a spec file written by :func:`write_job_spec`, its dataset loaded."""
    from .config import StudyConfig  # config imports this module for EXPERIMENTS
    with h5py.File(path, "r") as f:
        a = f.attrs
        cfg = StudyConfig(**json.loads(a["config"]))
        data = experiment_data(str(a["dataset"]), json.loads(a["files"]))
        evals = {name: EvalSet(g["index"][()], g["label"][()] if "label" in g else None)
                 for name, g in f["eval"].items()} if "eval" in f else {}
        job = Job(str(a["key"]), data, get_scenario(str(a["scenario"])), f["train_idx"][()], f["train_y"][()],
                  evals, int(a["iters"]), init_weights=str(a["init_weights"]) or None, notes=json.loads(a["notes"]),
                  deps=tuple(json.loads(a["deps"])))
    return cfg, job


def pretrained_origin(path) -> str:
    """What pretrained weights were trained on, for the report: "ImageNet" (converted weights), or
    the formula-driven stand-in of pipeline/standin.py, which records itself in a ``standin``
    attribute."""
    try:
        info = weights_info(path)
    except (OSError, ValueError, KeyError):
        return "ImageNet"
    if "standin" not in info:
        return "ImageNet"
    return ("the offline stand-in for ImageNet (pipeline/standin.py: FractalDB-style fractal categories, "
            f"held-out pretraining accuracy {float(info.get('pretrain_accuracy', float('nan'))):.3f}, "
            f"chance {float(info.get('pretrain_chance', float('nan'))):.3f})")


def pretrained_new_layers(info: dict, input_size: int) -> tuple:
    """The layers a fine-tuning draws fresh instead of taking from pretrained weights (``info``:
    weights_info of the file): fc8 (the task's own classes), and fc6-fc7 too when the input size
    differs, since fc6's input follows from it: then only conv1..conv5 transfer."""
    return ("fc8",) if int(info["input_size"]) == input_size else ("fc6", "fc7", "fc8")


def train_job(spec_path, progress=False):
    """A study job as the engine runs it, here or on a Dask worker: read its spec, train (or continue
    from its checkpoint), write its predictions. Top level, small arguments: workers import it by name."""
    cfg, job = read_job_spec(spec_path)
    run_job(cfg, job, Path(spec_path).parent, progress)


def write_predictions(path, results: dict, info: dict):
    """A job's result: each evaluation set's indices, labels and probabilities, and what the job was."""
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["job"] = json.dumps(info)
        for name, pred in results.items():
            g = f.create_group(name)
            g["index"] = np.asarray(pred.index)
            g["label"] = np.asarray(pred.label)
            g["proba"] = pred.proba


def read_predictions(path) -> dict:
    """{evaluation set name: Predictions} of a job's ``predictions.h5``."""
    with h5py.File(path, "r") as f:
        return {name: Predictions(g["index"][()], g["label"][()], g["proba"][()]) for name, g in f.items()}


def job_info(path) -> dict:
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["job"])


def run_job(cfg, job: Job, folder: Path, progress=True):
    """Train (continuing from ``folder/checkpoint.h5`` if there is one) and score one job; writes
    model.h5 and, last and atomically, predictions.h5. Skipped when that file exists."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pred_path = folder / PREDICTIONS
    if pred_path.exists():
        return
    t0 = time.perf_counter()
    net = AlexNet(job.scenario.num_classes, variant=cfg.variant, input_size=cfg.input_size,
                  init=cfg.init, dropout=cfg.dropout, seed=cfg.seed, widths=cfg.widths)
    new_layers = ()
    if job.init_weights:
        load_weights(net, job.init_weights)
        mean = training_mean(job.data, job.train_idx)
    elif cfg.pretrained:
        info = weights_info(cfg.pretrained)  # checked against this network by pipeline.config.check_inputs
        new_layers = pretrained_new_layers(info, cfg.input_size)
        load_weights(net, cfg.pretrained, exclude=new_layers)
        if "std" in info:  # torchvision weights expect inputs divided by 255 * std
            fold_input_std(net, info["std"])
        mean = np.asarray(info["mean"], dtype=np.float32)  # per channel, from the weights file
    else:
        mean = training_mean(job.data, job.train_idx)
    opt = SGD(net, base_lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
              gamma=cfg.gamma, stepsize=cfg.lr_step, new_layers=new_layers, new_layer_lr_mult=cfg.new_layer_lr_mult,
              warmup=cfg.warmup)
    train(net, opt, job.data.images, job.train_idx, job.train_y, iters=job.iters,
          batch_size=cfg.batch_size, seed=cfg.seed, mean=mean, scale=cfg.input_scale,
          checkpoint_path=folder / "checkpoint.h5", log_path=folder / "train_log.csv",
          checkpoint_every=cfg.checkpoint_every, resume=True, progress=progress,
          desc=job.key, flip=cfg.augment_flip, shift=cfg.augment_shift)
    # model.h5 is a weights file too (load_weights reads it: the incremental fine-tuning starts from
    # it), plus all that `python run.py predict` needs; one file, not a second copy of the weights.
    save_model(folder / "model.h5", net, job_card(cfg, job, net, mean))
    # Scoring in training-sized batches reuses the layers' buffers of the training steps; another
    # batch size would allocate them again.
    results = {name: Predictions(s.index, s.label if s.label is not None else np.full(len(s.index), -1),
                                 predict(net, job.data.images, s.index, mean, cfg.input_scale, cfg.batch_size))
               for name, s in job.eval_sets.items()}
    info = dict(job.notes, key=job.key, iters=job.iters, n_train=int(len(job.train_idx)),
                mean_pixel=float(np.mean(mean)), init_weights=job.init_weights,
                pretrained=str(cfg.pretrained) if cfg.pretrained else None,
                seconds=time.perf_counter() - t0)  # this run of it: after a resume, the part since then
    write_predictions(pred_path, results, info)
    (folder / "checkpoint.h5").unlink(missing_ok=True)  # model.h5 + predictions are the result


# ------------------------------------------------------------------ planning
@dataclass
class CellPlan:
    """The jobs one (scenario, experiment, test fraction) needs for its result record."""

    scenario: object
    experiment: str
    test_fraction: float
    main: Job                                 # the reported model (incremental: the fine-tune)
    pretrain: Job | None = None               # incremental: its DDSM stage
    baseline: Job | None = None               # incremental: the ffdm model, same test images
    cv: list = field(default_factory=list)    # cross-validation folds
    fn_mode: str = "off"
    fn: Job | None = None                     # separate: trained without the interval cancers
    fn_halves: list = field(default_factory=list)   # separate: trained with half of them (two)

    def jobs(self) -> list:
        return [j for j in (self.pretrain, self.baseline, self.main, self.fn) if j is not None] + self.cv + self.fn_halves


def interval_halves(cfg, interval) -> list:
    """The interval-cancer patients in two halves (the second false-negative analysis), the same for
    every scenario and test fraction of a run."""
    order = _rng(cfg, "fn-halves").permutation(np.sort(np.asarray(interval)))
    return [np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2:])]


class Study:
    """Plans, runs and evaluates the jobs of a configuration (see run.py for every option).

    ``datasets`` are the loaded ImageSets ({"ffdm": ..., "ddsm": ...}), ``files`` the built HDF5
    files they came from (workers load them from there).
    """

    def __init__(self, cfg, datasets: dict, out: Path, files: dict, log=print):
        self.cfg, self.out, self.log = cfg, Path(out), log
        self.files = {name: str(Path(path).resolve()) for name, path in files.items()}
        remember_datasets(self.files, datasets)
        self.records = []

    def folder(self, job: Job) -> Path:
        return self.out / "jobs" / job.key

    def dataset_for(self, experiment) -> ImageSet:
        return experiment_data("combined" if experiment == "combined" else
                               "ffdm" if experiment == "incremental" else experiment, self.files)

    def predictions(self, job: Job) -> dict:
        return read_predictions(self.folder(job) / PREDICTIONS)

    # ------------------------------------------------------------------ planning
    def plan(self, scenario_name, experiment, test_fraction) -> CellPlan:
        """Which jobs (scenario, experiment, test fraction) needs, with their images; trains nothing."""
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
        plan = CellPlan(scenario, experiment, test_fraction, main, fn_mode=fn)
        if experiment == "incremental":
            self._plan_incremental(plan)
            return plan
        self.log(f"[{experiment} | {scenario.name} | test {test_fraction:g}] "
                 f"train {len(tr_idx)} images, test {len(te_idx)} images")
        if cfg.cv >= 2:
            folds = data_prep.kfold_split(ds.patient_id[tr_idx], ds.labels[tr_idx], k=cfg.cv, seed=cfg.seed)
            plan.cv = [Job(main.key.replace("/main", f"/cv{k}"), ds, scenario, tr_idx[tr], tr_y[tr],
                           {"val": EvalSet(tr_idx[va], tr_y[va])}, cfg.iters) for k, (tr, va) in enumerate(folds, 1)]
        if fn == "separate" and len(interval_idx):
            tr2, y2 = _select(cfg, ds, scenario, train_side, interval, base, scenario.name, tag, "fn-train")
            te2, yt2 = _select(cfg, ds, scenario, test_side, interval, base, scenario.name, tag, "fn-test")
            plan.fn = Job(f"{base}/{scenario.name}/{tag}/fn", ds, scenario, tr2, y2,
                          {"test": EvalSet(te2, yt2), "interval": EvalSet(interval_idx, None)}, cfg.iters)
            halves = interval_halves(cfg, interval)
            if all(len(h) for h in halves):
                for k, (with_, scored) in enumerate(((halves[0], halves[1]), (halves[1], halves[0])), 1):
                    plan.fn_halves.append(self._half_job(plan.fn, interval_idx, with_, scored, k))
        return plan

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
                   notes={"interval_patients_trained_with": sorted(map(str, with_patients)),
                          "interval_patients_scored": sorted(map(str, scored_patients))})

    def _plan_incremental(self, plan: CellPlan):
        """ImageNet (if given) -> DDSM -> FFDM, versus the FFDM-only model on the same test images."""
        cfg, scenario, main = self.cfg, plan.scenario, plan.main
        ddsm = self.dataset_for("ddsm")
        tag = f"tf{plan.test_fraction:g}"
        pre_idx, pre_y = balance(scenario, ddsm.labels, np.arange(len(ddsm)), _rng(cfg, "ddsm-pretrain", scenario.name),
                                 source="the ddsm data")
        plan.pretrain = Job(f"incremental/{scenario.name}/ddsm-pretrain", ddsm, scenario, pre_idx, pre_y, {},
                            cfg.pretrain_iters, notes={"stage": "DDSM pretraining"})
        self.log(f"[incremental | {scenario.name}] stage 1: pretrain on {len(pre_idx)} DDSM images")
        plan.baseline = main
        plan.main = Job(f"incremental/{scenario.name}/{tag}/main", main.data, scenario, main.train_idx, main.train_y,
                        main.eval_sets, cfg.iters, init_weights=str(self.folder(plan.pretrain) / "model.h5"),
                        notes={"stage": "FFDM fine-tuning"}, deps=(plan.pretrain.key,))
        self.log(f"[incremental | {scenario.name} | test {plan.test_fraction:g}] stage 2: fine-tune on "
                 f"{len(main.train_idx)} FFDM images; baseline: the ffdm experiment's model")

    # ------------------------------------------------------------------ execution
    def pending(self, plans) -> list[str]:
        """The keys of the distinct jobs of ``plans`` that have no predictions yet (still to train)."""
        keys = {job.key: job for plan in plans for job in plan.jobs()}
        return [key for key, job in keys.items() if not (self.folder(job) / PREDICTIONS).exists()]

    def execute(self, plans, where=None, slurm_options=None, client=None, progress=None):
        """Run every job of ``plans`` once (a job two cells share runs once), in dependency order:
        here when ``where`` and ``client`` are None, else on Dask (pipeline.cluster.run_jobs). Each
        job's spec is written first; jobs whose predictions exist are skipped."""
        progress = self.cfg.progress if progress is None else progress
        jobs = {}
        for plan in plans:
            for job in plan.jobs():
                jobs.setdefault(job.key, job)
        grid = []
        for job in jobs.values():
            spec = self.folder(job) / JOB_SPEC
            spec.parent.mkdir(parents=True, exist_ok=True)
            if not (self.folder(job) / PREDICTIONS).exists():
                write_job_spec(spec, self.cfg, job, self.files)
            # training bars only here, one job after another; on workers they would interleave
            grid.append(GridJob(job.key, train_job, self.folder(job) / PREDICTIONS,
                                args=(str(spec), progress and where is None and client is None), deps=job.deps))
        return run_jobs(grid, where=where, slurm_options=slurm_options, progress=progress, client=client)

    def run(self, scenario_name, experiment, test_fraction):
        """Plan, train (here) and evaluate one (scenario, experiment, test fraction); returns its record."""
        plan = self.plan(scenario_name, experiment, test_fraction)
        self.execute([plan], progress=False)
        return self.record(plan)

    # ------------------------------------------------------------------ evaluation
    def record(self, plan: CellPlan) -> ModelResult:
        """The result record of a planned cell, from its jobs' predictions (appended to ``records``)."""
        scenario, main = plan.scenario, plan.main
        test = self.predictions(main)["test"]
        record = self._record(scenario, plan.experiment, plan.test_fraction, main, test)
        record.seconds = float(sum(job_info(self.folder(j) / PREDICTIONS).get("seconds", 0.0)
                                   for j in [main] + plan.cv + [j for j in [plan.fn] + plan.fn_halves if j]))
        if plan.cv:
            aucs = [evaluate.scenario_auc(self.predictions(j)["val"]) for j in plan.cv]
            record.cv = CrossValidation(folds=len(aucs), aucs=aucs, mean=float(np.mean(aucs)),
                                        sd=float(np.std(aucs, ddof=1)))
        if plan.fn_mode == "holdout" and plan.baseline is None and "interval" in main.eval_sets:
            record.false_negative_analysis = self._fn_record(self.predictions(main)["interval"], "holdout",
                                                             record.binary.operating_point.threshold)
        if plan.fn is not None:
            p = self.predictions(plan.fn)
            record.false_negative_analysis = self._fn_record(p["interval"], "separate",
                                                             evaluate.operating_threshold(p["test"]))
        if plan.fn_halves:
            record.false_negative_halves = self._halves_record(plan.fn_halves)
        if plan.baseline is not None:
            self._compare_incremental(record, plan)
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

    def _fn_record(self, interval: Predictions, mode, threshold) -> FalseNegativeAnalysis:
        """The interval cancers' P(malignant) (class 1 in both false-negative scenarios) at two rules."""
        n_patients = int(len(np.unique(self.dataset_for("ffdm").patient_id[interval.index])))
        return FalseNegativeAnalysis(mode=mode, n_patients=n_patients,
                                     detection=evaluate.interval_cancer_detection(interval.positive_score, threshold))

    def _halves_record(self, jobs) -> FalseNegativeHalves:
        folds = []
        for job in jobs:
            p = self.predictions(job)
            folds.append(HalfFold(job.key, job.notes["interval_patients_trained_with"],
                                  job.notes["interval_patients_scored"],
                                  evaluate.interval_cancer_detection(p["interval"].positive_score,
                                                                     evaluate.operating_threshold(p["test"]))))
        return FalseNegativeHalves(n_patients=sum(len(f.tested_on) for f in folds), folds=folds,
                                   pooled=evaluate.pool_interval_detections([f.detection for f in folds]))

    def _compare_incremental(self, record: ModelResult, plan: CellPlan):
        cfg = self.cfg
        inc, base = self.predictions(plan.main)["test"], self.predictions(plan.baseline)["test"]
        if not np.array_equal(inc.index, base.index):
            raise RuntimeError("incremental and baseline models were not tested on the same images")
        pretrained_on = (f"{pretrained_origin(cfg.pretrained)} ({cfg.pretrained}), then DDSM" if cfg.pretrained
                         else "DDSM only (no ImageNet weights were given)")
        if plan.scenario.binary:
            cmp = evaluate.compare_paired(inc.label, inc.positive_score, base.positive_score)
            record.incremental = IncrementalComparison(plan.baseline.key, pretrained_on, cmp.baseline_auc,
                                                       cmp.p_delong, cmp.z)
        else:
            record.incremental = IncrementalComparison(plan.baseline.key, pretrained_on,
                                                       evaluate.scenario_auc(base), None, None)
