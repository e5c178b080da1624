"""run.py's engine: prepare data, run the grid of jobs, write results and the report, resumably."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from alexnet_np import backend
import data_prep
from data_prep.fileio import atomic_output, write_csv_atomic

from . import report
from .cluster import ClusterSpec, JobsFailed, SlurmOptions, auto_cluster
from .config import StudyConfig, UserError, deviations, resolve_config
from .data import (SKIPPED_WARN_SHARE, CohortAttrition, ImageSet, _built_attrs, attrition, needed_datasets,
                   synthetic_dataset, user_dataset)
from .explain import ExplainOptions, explain_run
from .modelfile import git_version
from .scenarios import LABEL_NAMES, ScenarioDataError, get_scenario, scenario_labels
from .study import Study, read_predictions
from .train import TrainingDiverged


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


def _counts(by_label: dict) -> str:
    return ", ".join(f"{label} {n}" for label, n in by_label.items())


def attrition_lines(a: CohortAttrition) -> list[str]:
    """The console's account of one dataset: manifest, read, skipped by reason, used by class."""
    if a.n_manifest is None:
        return [f"  {a.dataset}: {a.n_read} images ({_counts(a.read_by_label)}); the build recorded no skipped "
                "images count (built by an older data_prep)"]
    lines = [f"  {a.dataset}: {a.n_manifest} images in the manifest, {a.n_read} read ({_counts(a.read_by_label)}), "
             f"{a.n_skipped} skipped"
             + (f" ({_counts(a.skipped_by_reason)}; by class: {_counts(a.skipped_by_label)}; list: {a.errors_report})"
                if a.n_skipped else "")]
    if a.too_many_skipped:
        lines.append(attrition_warning(a))
    return lines


def attrition_warning(a: CohortAttrition) -> str:
    return (f"WARNING: {a.dataset}: {a.n_skipped} of {a.n_manifest} images ({100 * a.skipped_share:.1f}%, more than "
            f"{100 * SKIPPED_WARN_SHARE:g}%) could not be used; the study runs on the rest. Reasons: {a.errors_report}")


def prepare_datasets(cfg: StudyConfig, cache_dir, workers=None, rebuild=False, log=print):
    """Load (building or generating first where needed) every dataset the experiments use.

    Returns ({name: ImageSet}, [CohortAttrition]); ``rebuild`` builds the datasets again.
    """
    out, cohorts = {}, []
    for name in needed_datasets(cfg.experiments):
        t0 = time.perf_counter()
        if name in cfg.data:
            origin = f"your data: --data {name}={cfg.data[name]}"
            path = user_dataset(name, cfg.data[name], size=cfg.input_size, cache_dir=cache_dir,
                                workers=workers, progress=cfg.progress, rebuild=rebuild)
        else:
            n = cfg.ffdm_patients if name == "ffdm" else cfg.ddsm_patients
            origin = (f"synthetic {name.upper()}-like cohort from data_prep's generator ({n} patients, seed {cfg.seed}, "
                      f"difficulty {cfg.difficulty:g}" + (f", findings drawn x{cfg.finding_scale:g}" if cfg.finding_scale != 1 else "")
                      + (f", calcification grains x{cfg.grain_scale:g}" if cfg.grain_scale != 1 else "") + ")")
            log(f"{origin}, cached in {cache_dir}")
            path = synthetic_dataset(name, n_patients=n, seed=cfg.seed, difficulty=cfg.difficulty,
                                     grain_scale=cfg.grain_scale, finding_scale=cfg.finding_scale, image_size=None, size=cfg.input_size, cache_dir=cache_dir,
                                     workers=workers, progress=cfg.progress, rebuild=rebuild)
        out[name] = ImageSet.load(name, path)
        cohorts.append(attrition(out[name], origin, path))
        log(f"  {name}: {cfg.input_size}x{cfg.input_size} images from {path} [{time.perf_counter() - t0:.0f} s]")
        for line in attrition_lines(cohorts[-1]):
            log(line)
    return out, cohorts


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


def _sha256(path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def provenance(cfg: StudyConfig, datasets: dict) -> dict:
    """What the results came from: the code's commit (and whether tracked files had uncommitted
    changes) and, per dataset, its build fingerprint (manifest rows, image files' sizes and times,
    preprocessing settings) and the SHA-256 of its manifest; for user data the manifest's path."""
    commit, dirty = git_version()
    out = {"git_commit": commit, "git_dirty": dirty, "datasets": {}}
    for name, ds in datasets.items():
        manifest = ds.attrs.get("manifest_path") or None
        out["datasets"][name] = {"fingerprint": ds.attrs.get("fingerprint", "unknown"),
                                 "manifest_sha256": _sha256(manifest) if manifest else None,
                                 "manifest_path": str(manifest) if name in cfg.data and manifest else None,
                                 "user_data": name in cfg.data}
    return out


def user_data_now(cfg: StudyConfig) -> dict:
    """What can be known of the user's datasets before any work: a manifest's SHA-256, a built file's
    fingerprint (its attributes only). For :func:`check_same_datasets` on --resume."""
    out = {}
    for name, path in cfg.data.items():
        if Path(path).suffix.lower() == ".csv":
            out[name] = {"manifest_sha256": _sha256(path)}
        else:
            out[name] = {"fingerprint": _built_attrs(path).get("fingerprint", "unknown")}
    return {"datasets": out}


def check_same_datasets(out: Path, now: dict):
    """On --resume: every dataset must be the one the run started with (build fingerprint and manifest
    hash; ``now`` may hold only some of them). Raises UserError naming the dataset and what changed."""
    saved = out / "provenance.json"
    if not saved.exists():
        return
    before = json.loads(saved.read_text())["datasets"]
    for name, was in before.items():
        is_ = now["datasets"].get(name, {})
        changed = [key for key in ("fingerprint", "manifest_sha256") if key in is_ and is_[key] != was.get(key)]
        if changed:
            raise UserError(f"--resume --out {out}: the {name} dataset changed since the run started ("
                            + ", ".join(f"{k} {str(was.get(k))[:12]}... -> {str(is_[k])[:12]}..." for k in changed)
                            + "); expected the data the run started with, or a new --out for the new data")


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
    rebuild: bool = False            # build the datasets again
    cluster: ClusterSpec | None = None   # where the jobs run (None: pipeline.cluster.auto_cluster decides)
    slurm: SlurmOptions | None = None    # --slurm-* options, with --cluster slurm
    argv: list = field(default_factory=list)   # the command line, for the report and the resume hint


def resume_command(argv, out) -> str:
    """The command that continues this run: the same options with ``--resume --out OUT``."""
    keep, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--out":
            skip = True
        elif arg != "--resume" and not arg.startswith("--out="):
            keep.append(arg)
    return "python run.py " + shlex.join(keep + ["--resume", "--out", str(out)])


def run_command(request: RunRequest) -> int:
    """run.py's study command: settings and inputs checked first, then the study; returns the exit code.

    A user error prints one line ``error: ...`` and returns 2 before any data are touched; data that
    turn out unusable while they are built do the same and remove the run folder this call made.
    Ctrl-C prints the command that continues the run and returns 130.
    """
    try:
        device = select_device(request.device)
        cfg = resolve_config(request.preset, request.overrides, device)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(request.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    created = not out.exists()
    try:
        records, cohorts = run_study(cfg, out, resume=request.resume, cache_dir=request.cache_dir,
                                     workers=request.workers, command="python run.py " + shlex.join(request.argv),
                                     rebuild=request.rebuild, cluster=request.cluster, slurm=request.slurm)
    except (UserError, ScenarioDataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: {resume_command(request.argv, out)}", file=sys.stderr)
        return 130
    except data_prep.DataPrepError as e:  # the user's data, found unusable while they were built
        if created and not (out / "jobs").exists():
            shutil.rmtree(out, ignore_errors=True)
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except JobsFailed as e:  # on a cluster: the other jobs ran to the end; --resume retries these
        print(f"error: {e}\ncontinue with: {resume_command(request.argv, out)}", file=sys.stderr)
        return 1
    for line in summary_lines(out, records, cohorts):
        print(line)
    return 0


def summary_lines(out: Path, records, cohorts) -> list[str]:
    """The run's last console lines: where the outputs are, the loud warnings, each model's AUC and CI."""
    lines = ["", f"report: {out / 'report.md'}", f"results: {out / 'results.json'}"]
    lines += [attrition_warning(a) for a in cohorts if a.too_many_skipped]
    lines.append("test AUCs (95% CI: DeLong; bootstrap over patients):")
    for r in records:
        what = f"  {r.experiment} / {r.scenario} / test {r.test_fraction:g}: AUC {r.auc:.3f}"
        if r.binary is not None:
            what += (f" (DeLong {r.binary.ci95_delong[0]:.2f}-{r.binary.ci95_delong[1]:.2f}; patients "
                     f"{r.binary.ci95_bootstrap_patient[0]:.2f}-{r.binary.ci95_bootstrap_patient[1]:.2f})")
        else:
            what += " (mean of the pairwise AUCs; no CI)"
        lines.append(what)
        lines += [f"    WARNING: {m}" for m in r.flags.messages()]
    return lines


PREDICTION_COLUMNS = ("experiment", "scenario", "test_fraction", "model", "image_index", "image_path", "patient_id",
                      "dataset_label", "interval_cancer", "y_true", "score")


def write_predictions_csvs(out: Path, study: Study):
    """predictions.csv: one row per test image of every reported model; predictions_interval.csv: the
    interval cancers the main models scored (false-negative analysis, holdout mode).

    ``y_true`` is the image's class in the scenario (binary: 1 = the positive class, 0 = the other;
    triple: 0/1/2 in the scenario's class order), ``score`` the positive class's probability (binary
    scenarios; empty for the triple one), ``p0..pK`` every class's probability. For one binary model,
    ``python -m stats predictions.csv --label-col y_true --score-col score --group-col patient_id``
    recomputes its AUC and CIs.
    """
    rows = {"test": [], "interval": []}
    width = 0
    for rec in study.records:
        ds = study.dataset_for(rec.experiment)
        scenario = get_scenario(rec.scenario)
        for split, pred in read_predictions(study.out / "jobs" / rec.job / "predictions.h5").items():
            width = max(width, pred.proba.shape[1])
            y_true = scenario_labels(scenario, ds.labels[pred.index])
            for i, y, p in zip(pred.index, y_true, pred.proba):
                rows[split].append([rec.experiment, rec.scenario, rec.test_fraction, rec.job, int(i), ds.image_path[i],
                                    ds.patient_id[i], LABEL_NAMES[ds.labels[i]], int(ds.interval_cancer[i]), int(y),
                                    f"{p[1]:.6f}" if scenario.binary else ""] + [f"{v:.6f}" for v in p])
    header = list(PREDICTION_COLUMNS) + [f"p{k}" for k in range(width)]
    write_csv_atomic(out / "predictions.csv", header, rows["test"])
    if rows["interval"]:
        write_csv_atomic(out / "predictions_interval.csv", header, rows["interval"])


def results_json(records, cohorts, cfg: StudyConfig, env: dict, timings: dict, prov: dict) -> dict:
    """results.json's content (its schema is in the README): one entry per ModelResult, with its
    headline ``auc`` beside the nested parts, each dataset's attrition, and the provenance."""
    return {"runs": [dict(auc=r.auc, **asdict(r)) for r in records],
            "cohorts": [dict(asdict(a), skipped_share=a.skipped_share) for a in cohorts], "config": cfg.to_dict(),
            "provenance": prov, "environment": env, "timings": timings}


def run_study(cfg: StudyConfig, out, resume=False, cache_dir="data_cache", workers=None, command="run.py",
              rebuild=False, cluster: ClusterSpec | None = None, slurm: SlurmOptions | None = None, client=None):
    """Run every (test fraction, experiment, scenario) of ``cfg`` into ``out``, then write predictions,
    results.json and report.md; returns (the ModelResults, the datasets' CohortAttritions).

    ``cluster`` (or a Dask ``client``) says where the jobs run (pipeline.cluster; kind "here": in this
    process, one after another); ``out`` and the data cache must then be on a file system the workers
    share. Without either, :func:`pipeline.cluster.auto_cluster` decides from the jobs still to train.
    """
    out = Path(out)
    chosen = cluster is not None or client is not None
    if cluster is not None and cluster.kind == "here":
        cluster = None
    check_out_folder(out, cfg, resume)
    if resume:  # before anything is built from data that changed
        check_same_datasets(out, user_data_now(cfg))
    print(f"run folder: {out}" + (" (resumed)" if resume else ""))
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
    datasets, cohorts = prepare_datasets(cfg, cache_dir, workers, rebuild=rebuild)
    prov = provenance(cfg, datasets)
    if resume:
        check_same_datasets(out, prov)
    if not (out / "provenance.json").exists():  # the data the run started with, for --resume
        write_json_atomic(out / "provenance.json", prov)
    t_data = time.perf_counter() - t_start
    study = Study(cfg, datasets, out, files={a.dataset: a.built_file for a in cohorts})
    timings = {"data_s": t_data}
    backend.reset_kernels_used()  # count this run's training and scoring only
    plans = [study.plan(name, experiment, tf) for tf in cfg.test_fractions for experiment in cfg.experiments
             for name in cfg.scenarios]
    if not chosen:
        pending = len(study.pending(plans))
        cluster = auto_cluster(pending, cfg.device, full_size=cfg.widths is None)
        if cluster is not None:
            print(f"{pending} models to train: on {cluster.workers} local worker processes, one per "
                  "core with one BLAS thread each (faster than one process with every core; --cluster here "
                  "trains them in this process, one after another)")
    env["cluster"] = "this process" if cluster is None and client is None else \
        (f"Dask {cluster.kind}" + (f" ({cluster.workers} workers)" if cluster and cluster.kind == "local" else "")
         if cluster else "a Dask client")
    write_json_atomic(out / "environment.json", env)
    study.execute(plans, where=cluster, slurm_options=slurm, client=client)
    timings["jobs_s"] = time.perf_counter() - t_start - t_data
    for plan in plans:
        study.record(plan)
    timings["total_s"] = time.perf_counter() - t_start
    # which implementation each op ran: counted in this process, so known only when the jobs ran here
    env["kernels_used"] = [asdict(u) for u in backend.kernels_used().uses] if cluster is None and client is None \
        else None
    write_json_atomic(out / "environment.json", env)
    write_predictions_csvs(out, study)
    write_json_atomic(out / "results.json", results_json(study.records, cohorts, cfg, env, timings, prov))
    # Where each model looks (Grad-CAM only: about one training step per batch of test images; the
    # other methods cost far more and are one `python run.py explain RUN_DIR` away).
    t0 = time.perf_counter()
    looks = explain_run(out, cache_dir, ExplainOptions(methods=("gradcam",), progress=cfg.progress), workers,
                        datasets=datasets, files={a.dataset: a.built_file for a in cohorts})
    timings["explain_s"] = time.perf_counter() - t0
    looks[1:1] = ["", f"Computed at the end of the run in {timings['explain_s']:.0f} s. `python run.py explain "
                      f"{out}` adds Grad-CAM++, the input gradient, integrated gradients and occlusion."]
    write_json_atomic(out / "results.json", results_json(study.records, cohorts, cfg, env, timings, prov))
    report.write_report(out, cfg, study.records, cohorts, env, timings, command, provenance=prov, explain=looks)
    return study.records, cohorts
