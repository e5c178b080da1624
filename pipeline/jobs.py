"""Running the planned jobs: a job's spec file, its training and scoring, its predictions file.

A job is what one training run needs, written to ``jobs/<key>/job.h5`` so that any process can run
it, here or on a Dask worker that loads the datasets from their HDF5 files (a shared file system).
Correctness lives in the job, not in whoever runs it: a job writes ``predictions.h5`` atomically,
last, is skipped when that file exists, and continues from its ``checkpoint.h5`` when it was
interrupted, so ``--resume`` after a crash, Ctrl-C or a killed worker loses at most
``checkpoint_every`` iterations of each running job.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import h5py
import numpy as np

from alexnet_np import SGD, AlexNet, load_weights
from data_prep.fileio import atomic_output

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
    if job.init_weights:
        load_weights(net, job.init_weights)
        mean = training_mean(job.data, job.train_idx)
    elif cfg.pretrained:  # checked against this network by pipeline.config.check_inputs
        new_layers = start_from_pretrained(net, cfg.pretrained)
        mean = pretrained_mean(cfg.pretrained)
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
