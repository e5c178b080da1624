"""Running the planned jobs: a job's spec file, its training and scoring, its predictions file.

A job is what one training run needs, written to ``jobs/<key>/job.h5`` so that any process can run
it, here or on a Dask worker that loads the datasets from their HDF5 files (a shared file system).
Correctness lives in the job, not in whoever runs it: a job writes ``predictions.h5`` atomically,
last, is skipped when that file exists, and continues from its ``checkpoint.h5`` when it was
interrupted, so ``--resume`` after a crash, Ctrl-C or a killed worker loses at most
``checkpoint_every`` iterations of each running job.
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np

from alexnet_np import SGD, AlexNet, load_weights
from data_prep.fileio import atomic_output, write_csv_atomic

from . import evaluate
from .cluster import GridJob, run_jobs
from .config import StudyConfig
from .data import image_set, training_mean
from .evaluate import Predictions
from .modelfile import job_card, save_model
from .plan import EvalSet, Job
from .pretrained import pretrained_mean, start_from_pretrained
from .scenarios import get_scenario
from .train import predict, train

JOB_SPEC = "job.h5"          # a job's spec in its folder: what a worker needs to run it
PREDICTIONS = "predictions.h5"


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


def read_job_spec(path) -> tuple[StudyConfig, Job]:
    """(StudyConfig, Job) from a spec file written by :func:`write_job_spec`, its dataset loaded."""
    with h5py.File(path, "r") as f:
        a = f.attrs
        cfg = StudyConfig(**json.loads(a["config"]))
        data = image_set(str(a["dataset"]), json.loads(a["files"]))
        evals = {name: EvalSet(g["index"][()], g["label"][()] if "label" in g else None)
                 for name, g in f["eval"].items()} if "eval" in f else {}
        job = Job(str(a["key"]), data, get_scenario(str(a["scenario"])), f["train_idx"][()], f["train_y"][()],
                  evals, int(a["iters"]), init_weights=str(a["init_weights"]) or None, notes=json.loads(a["notes"]),
                  deps=tuple(json.loads(a["deps"])))
    return cfg, job


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
    """What :func:`run_job` recorded about a finished job (its notes, iterations, seconds, ...)."""
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["job"])


#: The two input-normalization rules; a model file records which one made its mean.
MEAN_RULES = {"pretrained-file": "the pretrained weights file's per-channel mean, at every stage of the chain "
                                 "that starts from it (as Caffe's fine-tuning example kept ImageNet's mean)",
              "training-split": "the per-pixel mean image of the model's own training images (the paper's "
                                "\"mean subtracting\")"}


def input_mean(cfg, job: Job) -> tuple:
    """(mean, rule) that ``job``'s network subtracts from its inputs: one rule for a whole run, so the
    two arms of every paired comparison (the incremental fine-tune and the FFDM-only baseline) are
    normalized alike. With a pretrained file, its per-channel mean at every stage (DDSM stage,
    fine-tune, baseline): the network keeps the input units it was pretrained on. Without one, each
    model's training split's mean image, which the fine-tune and the baseline share (same images)."""
    if cfg.pretrained:
        return pretrained_mean(cfg.pretrained), "pretrained-file"
    return training_mean(job.data, job.train_idx), "training-split"


VAL_CURVE = "val_curve.csv"   # a cross-validation fold's validation AUC at every checkpoint


class ValidationCurve:
    """A fold's validation AUC at each checkpoint, kept in ``val_curve.csv`` (rewritten atomically, so
    a killed job resumes with the points up to its checkpoint and recomputes the rest identically)."""

    def __init__(self, path: Path, net, job: Job, mean, cfg):
        self.path, self.net, self.job, self.mean, self.cfg = Path(path), net, job, mean, cfg
        self.rows = []
        if self.path.exists():
            with open(self.path, newline="") as f:
                self.rows = [(int(r["iteration"]), float(r["auc"])) for r in csv.DictReader(f)]

    def add(self, iteration: int):
        """Score the validation images with the network as it is at ``iteration`` (test mode: no
        parameter, momentum or dropout stream changes)."""
        val = self.job.eval_sets["val"]
        proba = predict(self.net, self.job.data.images, val.index, self.mean, self.cfg.input_scale,
                        self.cfg.batch_size)
        auc = evaluate.scenario_auc(Predictions(val.index, val.label, proba))
        self.rows = [r for r in self.rows if r[0] < iteration] + [(iteration, auc)]
        write_csv_atomic(self.path, ("iteration", "auc"), [(i, f"{a:.9g}") for i, a in self.rows])

    def points(self) -> dict:
        return {"iteration": [i for i, _ in self.rows], "auc": [a for _, a in self.rows]}


def selected_iterations(jobs_dir: Path, job: Job) -> int:
    """How long ``job`` trains: its ``iters``, or, when cross-validation chooses (``iterations_from_cv``
    in its notes), the checkpoint with the best mean validation AUC over those folds (the earliest
    of ties), read from their predictions."""
    folds = job.notes.get("iterations_from_cv")
    if not folds:
        return job.iters
    return choose_iterations([job_info(Path(jobs_dir) / key / PREDICTIONS)["val_curve"] for key in folds])


def choose_iterations(curves: list) -> int:
    """The iteration whose mean validation AUC over the folds' ``curves`` ({"iteration", "auc"}) is
    highest; the earliest of equal ones. Every fold is scored at the same iterations."""
    its = curves[0]["iteration"]
    if any(c["iteration"] != its for c in curves):
        raise RuntimeError("cross-validation folds were scored at different iterations")
    mean = np.mean([c["auc"] for c in curves], axis=0)
    return int(its[int(np.argmax(mean))])


def train_job(spec_path, progress=False):
    """A study job as the engine runs it, here or on a Dask worker: read its spec, train (or continue
    from its checkpoint), write its predictions. Top level, small arguments: workers import it by name."""
    cfg, job = read_job_spec(spec_path)
    run_job(cfg, job, Path(spec_path).parent, progress)


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
    if job.init_weights:      # a later stage of a chain: the incremental fine-tune starts from the DDSM stage
        load_weights(net, job.init_weights)
    elif cfg.pretrained:      # checked against this network by pipeline.config.check_inputs
        new_layers = start_from_pretrained(net, cfg.pretrained)
    mean, mean_rule = input_mean(cfg, job)
    opt = SGD(net, base_lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
              gamma=cfg.gamma, stepsize=cfg.lr_step, new_layers=new_layers, new_layer_lr_mult=cfg.new_layer_lr_mult,
              warmup=cfg.warmup)
    jobs_dir = folder.parents[len(Path(job.key).parts) - 1]   # <out>/jobs, where the folds' results are
    iters = selected_iterations(jobs_dir, job)
    job = replace(job, iters=iters)     # what it trains, as its model card and predictions record it
    curve = ValidationCurve(folder / VAL_CURVE, net, job, mean, cfg) \
        if job.notes.get("validate_every_checkpoint") else None
    train(net, opt, job.data.images, job.train_idx, job.train_y, iters=job.iters,
          batch_size=cfg.batch_size, seed=cfg.seed, mean=mean, scale=cfg.input_scale,
          checkpoint_path=folder / "checkpoint.h5", log_path=folder / "train_log.csv",
          checkpoint_every=cfg.checkpoint_every, resume=True, progress=progress,
          desc=job.key, flip=cfg.augment_flip, shift=cfg.augment_shift,
          on_checkpoint=curve.add if curve else None)
    # model.h5 is a weights file too (load_weights reads it: the incremental fine-tuning starts from
    # it), plus all that `python run.py predict` needs; one file, not a second copy of the weights.
    save_model(folder / "model.h5", net, job_card(cfg, job, net, mean, mean_rule))
    # Scoring in training-sized batches reuses the layers' buffers of the training steps; another
    # batch size would allocate them again.
    results = {name: Predictions(s.index, s.label if s.label is not None else np.full(len(s.index), -1),
                                 predict(net, job.data.images, s.index, mean, cfg.input_scale, cfg.batch_size))
               for name, s in job.eval_sets.items()}
    info = dict(job.notes, key=job.key, iters=job.iters, n_train=int(len(job.train_idx)),
                mean_pixel=float(np.mean(mean)), mean_rule=mean_rule, init_weights=job.init_weights,
                pretrained=str(cfg.pretrained) if cfg.pretrained else None,
                seconds=time.perf_counter() - t0,  # this run of it: after a resume, the part since then
                val_curve=curve.points() if curve else None)
    write_predictions(pred_path, results, info)
    (folder / "checkpoint.h5").unlink(missing_ok=True)  # model.h5 + predictions are the result


def execute(cfg, jobs: list, out: Path, files: dict, where=None, slurm_options=None, client=None, progress=True,
            tls=None, dashboard=False):
    """Run ``jobs`` (distinct Job objects) in dependency order: here when ``where`` and ``client`` are
    None, else on Dask (:func:`pipeline.cluster.run_jobs`). Each job's spec is written first; jobs
    whose predictions exist are skipped."""
    grid = []
    for job in jobs:
        folder = Path(out) / "jobs" / job.key
        spec = folder / JOB_SPEC
        spec.parent.mkdir(parents=True, exist_ok=True)
        if not (folder / PREDICTIONS).exists():
            write_job_spec(spec, cfg, job, files)
        # training bars only here, one job after another; on workers they would interleave
        grid.append(GridJob(job.key, train_job, folder / PREDICTIONS,
                            args=(str(spec), progress and where is None and client is None), deps=job.deps))
    return run_jobs(grid, where=where, slurm_options=slurm_options, progress=progress, client=client, tls=tls,
                    dashboard=dashboard)
