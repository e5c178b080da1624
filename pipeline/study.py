"""The study, end to end: configuration -> plan -> jobs -> records -> report.

A run has three phases, so that the training can run anywhere (pipeline.cluster):

1. *planning* (:class:`pipeline.plan.Planner`, cheap, here): which jobs each (scenario, experiment,
   test fraction) needs, their training and evaluation images and their dependencies;
2. *execution* (:func:`pipeline.jobs.execute`): every job runs from its spec file, in this process
   or on Dask workers, and writes ``predictions.h5`` last;
3. *evaluation* (:class:`pipeline.records.Recorder`, cheap, here): the result records, from the jobs'
   predictions (comparisons need both of their models, so they come after both).

:func:`run_study` does all three into a run folder, then writes the outputs, the explanations and
the report. :class:`Study` holds one run's planner, jobs and records for code that drives the phases
itself (tests, notebooks).
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import data_prep
from alexnet_np import backend

from . import jobs as job_runner
from . import report
from .cluster import ClusterRequest, auto_cluster
from .config import StudyConfig, deviations
from .data import ImageSet, image_set, prepare_datasets, remember_datasets
from .errors import UserError
from .experiments import experiment_data
from .explain import ExplainOptions, ExplainTarget, explain_run
from .jobs import PREDICTIONS
from .outputs import as_json, results_json, write_json_atomic, write_predictions_csvs
from .plan import CellPlan, Planner
from .provenance import check_same_datasets, environment, provenance, user_data_now
from .records import ModelResult, Recorder


class Study:
    """Plans, runs and evaluates the jobs of a configuration (see ``python run.py --help``).

    ``datasets`` are the loaded ImageSets ({"ffdm": ..., "ddsm": ...}), ``files`` the built HDF5
    files they came from (workers load them from there).
    """

    def __init__(self, cfg, datasets: dict, out: Path, files: dict, log=print):
        self.cfg, self.out, self.log = cfg, Path(out), log
        self.files = {name: str(Path(path).resolve()) for name, path in files.items()}
        remember_datasets(self.files, datasets)
        self.planner = Planner(cfg, self.out, self.dataset, log)
        self.recorder = Recorder(cfg, self.out)
        self.records = []

    def folder(self, job) -> Path:
        """The job's folder, ``<out>/jobs/<key>``."""
        return self.planner.folder(job)

    def dataset(self, name) -> ImageSet:
        """The ImageSet "ffdm", "ddsm" or "combined" of this run."""
        return image_set(name, self.files)

    def dataset_for(self, experiment) -> ImageSet:
        return self.dataset(experiment_data(experiment))

    def plan(self, scenario_name, experiment, test_fraction) -> CellPlan:
        return self.planner.plan(scenario_name, experiment, test_fraction)

    def pending(self, plans) -> list[str]:
        """The keys of the distinct jobs of ``plans`` that have no predictions yet (still to train)."""
        keys = {job.key: job for plan in plans for job in plan.jobs()}
        return [key for key, job in keys.items() if not (self.folder(job) / PREDICTIONS).exists()]

    def execute(self, plans, where=None, slurm_options=None, client=None, progress=None, tls=None, dashboard=False):
        """Run every job of ``plans`` once (a job two cells share runs once), in dependency order:
        here, or on Dask (``where``: a pipeline.cluster.ClusterSpec, or a ``client``)."""
        distinct = {}
        for plan in plans:
            for job in plan.jobs():
                distinct.setdefault(job.key, job)
        return job_runner.execute(self.cfg, list(distinct.values()), self.out, self.files, where=where,
                                  slurm_options=slurm_options, client=client, tls=tls, dashboard=dashboard,
                                  progress=self.cfg.progress if progress is None else progress)

    def record(self, plan: CellPlan) -> ModelResult:
        """The result record of a planned cell (appended to ``records``)."""
        rec = self.recorder.record(plan)
        self.records.append(rec)
        return rec

    def run(self, scenario_name, experiment, test_fraction) -> ModelResult:
        """Plan, train (here) and evaluate one (scenario, experiment, test fraction); returns its record."""
        plan = self.plan(scenario_name, experiment, test_fraction)
        self.execute([plan], progress=False)
        return self.record(plan)


def check_out_folder(out: Path, cfg: StudyConfig, resume: bool):
    """A new run needs a folder without a run in it; --resume needs the run, with the same settings."""
    saved = out / "config.json"
    if saved.exists():
        if not resume:
            raise UserError(f"--out {out}: already holds a run; expected --resume to continue it, or another --out")
        old = json.loads(saved.read_text())
        new = as_json(cfg.to_dict())
        diff = sorted(k for k in set(old) | set(new) if k != "progress" and old.get(k) != new.get(k))
        if diff:
            raise UserError(f"--resume --out {out}: the run there has other settings ("
                            + ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
                            + "); expected the same options as the run it continues")
    elif resume:
        raise UserError(f"--resume --out {out}: no run there (no config.json); expected the folder of an "
                        "interrupted run")


def run_study(cfg: StudyConfig, out, resume=False, cache_dir="data_cache", workers=None, command="run.py",
              rebuild=False, cluster: ClusterRequest | None = None, client=None, log=print):
    """Run every (test fraction, experiment, scenario) of ``cfg`` into ``out``, then write predictions,
    results.json, the explanations and report.md; returns (the ModelResults, the datasets' CohortAttritions).

    ``cluster`` (run.py's checked ``--cluster`` options) or a Dask ``client`` says where the jobs run
    (kind "here": in this process, one after another); ``out`` and the data cache must then be on a
    file system the workers share. Without either, :func:`pipeline.cluster.auto_cluster` decides from
    the jobs still to train. Data found unusable while they are built raise UserError, after removing the
    run folder this call created.
    """
    out = Path(out)
    request = cluster or ClusterRequest()
    chosen = request.spec is not None or client is not None
    where = None if request.spec is None or request.spec.kind == "here" else request.spec
    check_out_folder(out, cfg, resume)
    if resume:  # before anything is built from data that changed
        check_same_datasets(out, user_data_now(cfg))
    created = not out.exists()
    log(f"run folder: {out}" + (" (resumed)" if resume else ""))
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "config.json", cfg.to_dict())
    env = environment()
    log(f"alexnet_np reproduction of Aboutalib et al. 2018 -- preset {cfg.preset}, backend {env['backend']}"
        + (f" ({env['gpu']})" if "gpu" in env else ""))
    log("What this run changes from the paper's setting:")
    for line in deviations(cfg):
        log(f"  - {line}")
    t_start = time.perf_counter()
    try:
        datasets, cohorts = prepare_datasets(cfg, cache_dir, workers, rebuild=rebuild, log=log)
    except data_prep.DataPrepError as e:  # the user's data, found unusable while they were built
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise UserError(str(e).splitlines()[0]) from None
    prov = provenance(cfg, datasets)
    if resume:
        check_same_datasets(out, prov)
    if not (out / "provenance.json").exists():  # the data the run started with, for --resume
        write_json_atomic(out / "provenance.json", prov)
    timings = {"data_s": time.perf_counter() - t_start}
    files = {a.dataset: a.built_file for a in cohorts}
    study = Study(cfg, datasets, out, files, log=log)
    backend.reset_kernels_used()  # count this run's training and scoring only
    plans = [study.plan(name, experiment, tf) for tf in cfg.test_fractions for experiment in cfg.experiments
             for name in cfg.scenarios]
    if not chosen:
        pending = len(study.pending(plans))
        where = auto_cluster(pending, cfg.device, full_size=cfg.widths is None)
        if where is not None:
            log(f"{pending} models to train: on {where.workers} local worker processes, one per "
                "core with one BLAS thread each (faster than one process with every core; --cluster here "
                "trains them in this process, one after another)")
    here = where is None and client is None
    env["cluster"] = "this process" if here else \
        (f"Dask {where.kind}" + (f" ({where.workers} workers)" if where.kind == "local" else "")
         if where else "a Dask client")
    study.execute(plans, where=where, slurm_options=request.slurm, client=client, tls=request.tls,
                  dashboard=request.dashboard)
    timings["jobs_s"] = time.perf_counter() - t_start - timings["data_s"]
    for plan in plans:
        study.record(plan)
    timings["total_s"] = time.perf_counter() - t_start
    # which implementation each op ran: counted in this process, so known only when the jobs ran here
    env["kernels_used"] = [asdict(u) for u in backend.kernels_used().uses] if here else None
    write_json_atomic(out / "environment.json", env)
    write_predictions_csvs(out, list(zip(study.records, plans)))
    # Where each model looks (Grad-CAM only: about one training step per batch of test images; the
    # other methods cost far more and are one `python run.py explain RUN_DIR` away).
    t0 = time.perf_counter()
    targets = [ExplainTarget(r.scenario, r.experiment, r.test_fraction, r.job, plan.main.data)
               for r, plan in zip(study.records, plans)]
    looks = explain_run(out, cfg, targets, files, ExplainOptions(methods=("gradcam",), progress=cfg.progress))
    timings["explain_s"] = time.perf_counter() - t0
    write_json_atomic(out / "results.json", results_json(study.records, cohorts, cfg, env, timings, prov))
    report.write_report(out, cfg, study.records, cohorts, env, timings, command, provenance=prov, explanations=looks,
                        explain_note=f"Computed at the end of the run in {timings['explain_s']:.0f} s. `python run.py "
                                     f"explain {out}` adds Grad-CAM++, the input gradient, integrated gradients and "
                                     "occlusion.")
    return study.records, cohorts
