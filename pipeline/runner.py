"""run.py's engine: prepare data, run the grid of jobs, write results and the report, resumably."""
from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from alexnet_np import backend
from data_prep.fileio import atomic_output, write_csv_atomic

from . import report
from .config import StudyConfig, UserError, deviations, resolve_config
from .data import ImageSet, needed_datasets, synthetic_dataset, user_dataset
from .scenarios import LABEL_NAMES
from .study import Study


def write_json_atomic(path, obj):
    with atomic_output(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=_json_default)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray,)):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o)}")


def environment() -> dict:
    """Versions, array backend, BLAS and device: what a result depends on besides the code."""
    import importlib.metadata as md
    env = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "backend": backend.backend_name(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "blas_env": {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP_", "MKL_"))}}
    for pkg in ("numpy", "scipy", "h5py", "pydicom", "scikit-image", "matplotlib", "cupy", "cupy-cuda12x",
                "cupy-cuda13x"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        env["blas"] = f"{blas.get('name')} {blas.get('version', '')}".strip()
    except Exception:  # numpy < 1.25 has no dict mode
        env["blas"] = "unknown"
    if backend.backend_name() == "cupy":
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        env["gpu"] = name.decode() if isinstance(name, bytes) else name
    return env


def prepare_datasets(cfg: StudyConfig, cache_dir, workers=None, log=print) -> dict:
    """Load (building or generating first where needed) every dataset the experiments use."""
    out = {}
    for name in needed_datasets(cfg.experiments):
        t0 = time.perf_counter()
        if name in cfg.data:
            path = user_dataset(name, cfg.data[name], size=cfg.input_size, cache_dir=cache_dir,
                                workers=workers, progress=cfg.progress)
        else:
            n = cfg.ffdm_patients if name == "ffdm" else cfg.ddsm_patients
            log(f"synthetic {name.upper()}-like cohort: {n} patients (cached in {cache_dir})")
            path = synthetic_dataset(name, n_patients=n, seed=cfg.seed, difficulty=cfg.difficulty,
                                     image_size=None, size=cfg.input_size, cache_dir=cache_dir,
                                     workers=workers, progress=cfg.progress)
        out[name] = ImageSet.load(name, path)
        counts = np.bincount(out[name].labels, minlength=3)
        log(f"  {name}: {len(out[name])} images at {cfg.input_size}x{cfg.input_size} "
            f"({', '.join(f'{LABEL_NAMES[i]} {c}' for i, c in enumerate(counts))}) "
            f"from {path} [{time.perf_counter() - t0:.0f} s]")
    return out


def check_out_folder(out: Path, cfg: StudyConfig, resume: bool):
    """A new run needs a folder without a run in it; --resume needs the run, with the same settings."""
    saved = out / "config.json"
    if saved.exists():
        if not resume:
            raise UserError(f"--out {out}: already holds a run; expected --resume to continue it, or another --out")
        old = json.loads(saved.read_text())
        new = json.loads(json.dumps(cfg.to_dict(), default=_json_default))
        diff = sorted(k for k in set(old) | set(new) if k != "progress" and old.get(k) != new.get(k))
        if diff:
            raise UserError(f"--resume --out {out}: the run there has other settings ("
                            + ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
                            + "); expected the same options as the run it continues")
    elif resume:
        raise UserError(f"--resume --out {out}: no run there (no config.json); expected the folder of an "
                        "interrupted run")


def select_device(choice: str) -> str:
    """Point alexnet_np at the device (--device cpu, gpu or auto); returns "cpu" or "gpu"."""
    try:
        backend.set_backend({"cpu": "numpy", "gpu": "cupy", "auto": "auto"}[choice])
    except RuntimeError as e:
        raise UserError(f"--device {choice}: {e}") from None
    return "gpu" if backend.backend_name() == "cupy" else "cpu"


@dataclass
class RunRequest:
    """What run.py's command line asks for: a preset, the options that override it, and where to run."""

    preset: str
    overrides: dict                  # StudyConfig field -> value, None = the preset's
    device: str = "auto"             # cpu, gpu or auto
    out: str | None = None           # default runs/<timestamp>
    resume: bool = False
    cache_dir: str = "data_cache"
    workers: int | None = None
    argv: list = field(default_factory=list)   # the command line, for the report and the resume hint


def run_command(request: RunRequest) -> int:
    """run.py's study command: settings and inputs checked first, then the study; returns the exit code.

    A user error prints one line ``error: ...`` and returns 2 before any data are touched.
    """
    try:
        device = select_device(request.device)
        cfg = resolve_config(request.preset, request.overrides, device)
        out = Path(request.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
        check_out_folder(out, cfg, request.resume)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    command = "python run.py " + shlex.join(request.argv)
    report_path = run_study(cfg, out, resume=request.resume, cache_dir=request.cache_dir, workers=request.workers,
                            command=command)
    print(f"\nreport: {report_path}")
    print(f"results: {out / 'results.json'}")
    return 0


def write_predictions_csv(path, study: Study):
    """One row per (job, evaluated image): ids, true label, network class, class probabilities."""
    rows = []
    width = 0
    for rec in study.records:
        ds = study.dataset_for(rec.experiment)
        preds = Study._read_predictions(study.out / "jobs" / rec.job / "predictions.h5")
        for split, pred in preds.items():
            width = max(width, pred.proba.shape[1])
            for i, cls, p in zip(pred.index, pred.label, pred.proba):
                rows.append([rec.experiment, rec.scenario, rec.test_fraction, split, int(i),
                             ds.image_path[i], ds.patient_id[i], LABEL_NAMES[ds.labels[i]], int(cls)]
                            + [f"{v:.6f}" for v in p])
    header = ["experiment", "scenario", "test_fraction", "split", "image_index", "image_path", "patient_id",
              "true_label", "network_class"] + [f"p{k}" for k in range(width)]
    write_csv_atomic(path, header, rows)


def results_json(records, cfg: StudyConfig, env: dict, timings: dict) -> dict:
    """results.json's content (its schema is in the README): one entry per ModelResult, with its
    headline ``auc`` beside the nested parts."""
    return {"runs": [dict(auc=r.auc, **asdict(r)) for r in records], "config": cfg.to_dict(),
            "environment": env, "timings": timings}


def run_study(cfg: StudyConfig, out, resume=False, cache_dir="data_cache", workers=None, command="run.py"):
    """Run every (test fraction, experiment, scenario) of ``cfg`` into ``out``; returns report.md's path."""
    out = Path(out)
    check_out_folder(out, cfg, resume)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "config.json", cfg.to_dict())
    env = environment()
    write_json_atomic(out / "environment.json", env)
    print(f"alexnet_np reproduction of Aboutalib et al. 2018 -- preset {cfg.preset}, backend {env['backend']}"
          + (f" ({env['gpu']})" if "gpu" in env else ""))
    print("What this run changes from the paper's setting:")
    for line in deviations(cfg):
        print(f"  - {line}")
    t_start = time.perf_counter()
    datasets = prepare_datasets(cfg, cache_dir, workers)
    t_data = time.perf_counter() - t_start
    study = Study(cfg, datasets, out)
    timings = {"data_s": t_data}
    for tf in cfg.test_fractions:
        for experiment in cfg.experiments:
            for name in cfg.scenarios:
                t0 = time.perf_counter()
                record = study.run(name, experiment, tf)
                record.seconds = time.perf_counter() - t0
                write_json_atomic(out / "results.json", results_json(study.records, cfg, env, timings))
    timings["total_s"] = time.perf_counter() - t_start
    write_predictions_csv(out / "predictions.csv", study)
    write_json_atomic(out / "results.json", results_json(study.records, cfg, env, timings))
    return report.write_report(out, cfg, study.records, env, timings, command)
