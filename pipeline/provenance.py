"""What a result came from besides the code's logic: the code's commit, the software and hardware,
and a fingerprint of every dataset, so that an auditor can tell whether two results are comparable
and ``--resume`` can refuse data that changed under a run."""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

from alexnet_np import backend

from .data import built_attrs
from .errors import UserError

#: Packages whose versions a result depends on (those absent are left out).
PACKAGES = ("numpy", "scipy", "h5py", "pydicom", "scikit-image", "matplotlib", "cupy", "cupy-cuda12x",
            "cupy-cuda13x")


def environment() -> dict:
    """Versions, array backend, BLAS and device: what a result depends on besides the code."""
    env = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "backend": backend.backend_name(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "blas_env": {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP_", "MKL_"))}}
    for pkg in PACKAGES:
        try:
            env[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        env["blas"] = f"{blas.get('name')} {blas.get('version', '')}".strip()
    except (TypeError, KeyError):  # numpy < 1.25 has no dict mode
        env["blas"] = "unknown"
    gpu = backend.device_name()
    if gpu:
        env["gpu"] = gpu
    return env


def git_version() -> tuple[str, str]:
    """(commit, dirty) of the checkout this code runs from; ("unknown", "unknown") outside one.

    Dirty means tracked files differ from the commit; untracked files (runs/, data caches) do not
    count. The checkout must be this package's own: an installed copy inside some other repository
    would otherwise report that repository's commit.
    """
    root = Path(__file__).resolve().parent.parent

    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)

    try:
        top = git("rev-parse", "--show-toplevel")
        if top.returncode or Path(top.stdout.strip()).resolve() != root:
            return "unknown", "unknown"
        commit = git("rev-parse", "HEAD").stdout.strip()
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"
    if not commit or status.returncode:
        return "unknown", "unknown"
    return commit, "yes" if status.stdout.strip() else "no"


def file_sha256(path) -> str | None:
    """SHA-256 of a file's bytes; None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def provenance(cfg, datasets: dict) -> dict:
    """What the results came from: the code's commit (and whether tracked files had uncommitted
    changes) and, per dataset ({name: ImageSet}), its build fingerprint (manifest rows, image files'
    sizes and times, preprocessing settings) and the SHA-256 of its manifest; for user data (``cfg.data``)
    the manifest's path."""
    commit, dirty = git_version()
    out = {"git_commit": commit, "git_dirty": dirty, "datasets": {}}
    for name, ds in datasets.items():
        manifest = ds.attrs.get("manifest_path") or None
        out["datasets"][name] = {"fingerprint": ds.attrs.get("fingerprint", "unknown"),
                                 "manifest_sha256": file_sha256(manifest) if manifest else None,
                                 "manifest_path": str(manifest) if name in cfg.data and manifest else None,
                                 "user_data": name in cfg.data}
    return out


def user_data_now(cfg) -> dict:
    """What can be known of the user's datasets (``cfg.data``) before any work: a manifest's SHA-256,
    a built file's fingerprint (its attributes only). For :func:`check_same_datasets` on --resume."""
    out = {}
    for name, path in cfg.data.items():
        if Path(path).suffix.lower() == ".csv":
            out[name] = {"manifest_sha256": file_sha256(path)}
        else:
            out[name] = {"fingerprint": built_attrs(path).get("fingerprint", "unknown")}
    return {"datasets": out}


def check_same_datasets(out: Path, now: dict):
    """On --resume: every dataset must be the one the run started with (build fingerprint and manifest
    hash; ``now`` may hold only some of them). Raises UserError naming the dataset and what changed."""
    saved = Path(out) / "provenance.json"
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
