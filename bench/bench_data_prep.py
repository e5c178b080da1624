"""Benchmark and sanity check of data_prep: synthesis rate, build rate, class separability.

    python bench/bench_data_prep.py [--patients 150] [--workers 2] [--full-size-patients 3]
                                    [--difficulties 1.0] [--out /tmp/bench_data_prep]

Prints, for the FFDM-like and DDSM-like cohorts at the default image size:
* synthesis rate (patients/s, images/s) and build rate (images/s) to 227 x 227;
* build rate for full-size FFDM DICOMs (4096 x 3328, 12/14-bit; about 3000 x 4000 as in the issue);
* a separability check on 99 x 99 builds: a logistic regression on simple blob-detector features
  (difference-of-Gaussians and top-hat responses inside the breast), patient-level 5-fold
  cross-validated AUC for each pair of classes. A CNN should do better; this only shows that the
  classes differ, not trivially, and that the difficulty knob moves it;
* a shortcut check: the same regression on global image statistics (breast area, mean, spread of
  the image as read), which should sit near 0.5 for malignant vs negative.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import h5py
import numpy as np
from scipy import ndimage
from scipy.stats import rankdata

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep import (
    build_dataset,
    kfold_split,
    load_dataset,
    read_image,
    read_manifest,
    synthesize,
)

PAIRS = {"malignant-vs-negative": (2, 0), "negative-vs-benign": (1, 0), "malignant-vs-benign": (2, 1)}


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve by the Mann-Whitney rank formula (ties count one half)."""
    ranks = rankdata(scores)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logistic_fit(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 30) -> np.ndarray:
    """L2-regularised logistic regression by Newton's method; returns weights (bias last)."""
    x = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(x.shape[1])
    penalty = l2 * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-x @ w))
        gradient = x.T @ (p - y) + penalty @ w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + penalty
        w -= np.linalg.solve(hessian, gradient)
    return w


def cross_validated_auc(features, labels, patients, pair) -> float:
    """Patient-level 5-fold CV of a logistic regression on one pair of classes."""
    positive = pair[0]
    keep = np.isin(labels, pair)
    x, y, p = features[keep], (labels[keep] == positive).astype(float), patients[keep]
    scores = np.zeros(len(y))
    for train, test in kfold_split(p, np.where(y == 1, 2, 0), k=5, seed=0):
        mean, std = x[train].mean(0), x[train].std(0) + 1e-9
        w = logistic_fit((x[train] - mean) / std, y[train])
        scores[test] = np.hstack([(x[test] - mean) / std, np.ones((len(test), 1))]) @ w
    return auc(scores, y == 1)


def blob_features(images: np.ndarray) -> np.ndarray:
    """Per image: max and 99.5th percentile of DoG (sigma 1, 2, 4 px) and white top-hat (3, 7 px) inside the breast."""
    rows = []
    for image in images.astype(np.float32) / 255.0:
        breast = ndimage.binary_erosion(image > 0, iterations=3)
        if not breast.any():
            breast = image > 0
        values = []
        for sigma in (1.0, 2.0, 4.0):
            response = ndimage.gaussian_filter(image, sigma) - ndimage.gaussian_filter(image, 2 * sigma)
            values += [response[breast].max(), np.percentile(response[breast], 99.5)]
        for size in (3, 7):
            response = ndimage.white_tophat(image, size=size)
            values += [response[breast].max(), np.percentile(response[breast], 99.5)]
        rows.append(values)
    return np.array(rows)


def global_features(manifest: Path) -> np.ndarray:
    """Per image as read (before preprocessing): breast area fraction, mean and std inside it."""
    rows = []
    for row in read_manifest(manifest):
        image, _ = read_image(row["path"])
        breast = image > 0.05
        rows.append([breast.mean(), image[breast].mean(), image[breast].std()])
    return np.array(rows)


def timed(label: str, count: int, unit: str, func, *args, **kwargs):
    """Call ``func(*args, **kwargs)``, print how many ``unit`` per second it managed, return its result."""
    start = time.perf_counter()
    result = func(*args, **kwargs)
    seconds = time.perf_counter() - start
    print(f"{label:44s} {count:6d} {unit:8s} {seconds:7.1f} s  {count / seconds:7.1f} {unit}/s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=150)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--full-size-patients", type=int, default=3)
    parser.add_argument("--difficulties", type=float, nargs="+", default=[1.0])
    parser.add_argument("--out", default="/tmp/bench_data_prep")
    args = parser.parse_args()
    out = Path(args.out)

    print("== speed (default synthetic size 640 x 512) ==")
    manifests = {}
    for dataset in ("ffdm", "ddsm"):
        for difficulty in args.difficulties:
            folder = out / f"{dataset}_d{difficulty:g}"
            manifest = folder / "manifest.csv"
            manifest.unlink(missing_ok=True)
            manifest = timed(f"synthesize {dataset} difficulty {difficulty:g}", args.patients, "patients",
                             synthesize, dataset, args.patients, 0, folder, difficulty, workers=args.workers,
                             progress=False)
            n_images = len(read_manifest(manifest))
            print(f"{'':44s} {n_images:6d} images")
            manifests[dataset, difficulty] = manifest
        timed(f"build {dataset} 640x512 -> 227", n_images, "images", build_dataset, manifest,
              out / f"{dataset}_227.h5", 227, workers=args.workers, rebuild=True, progress=False)

    if args.full_size_patients:
        print("== speed (full-size FFDM DICOM, 4096 x 3328) ==")
        folder = out / "ffdm_full"
        manifest = timed("synthesize ffdm 4096x3328", args.full_size_patients, "patients", synthesize, "ffdm",
                         args.full_size_patients, 1, folder, image_size=(4096, 3328), workers=args.workers,
                         progress=False)
        n_images = len(read_manifest(manifest))
        timed("build ffdm 4096x3328 -> 227", n_images, "images", build_dataset, manifest, out / "ffdm_full.h5", 227,
              workers=args.workers, rebuild=True, progress=False)

    print("== separability: logistic regression on blob features of 99 x 99 builds, patient-level 5-fold AUC ==")
    for (dataset, difficulty), manifest in manifests.items():
        h5 = build_dataset(manifest, out / f"{dataset}_d{difficulty:g}_99.h5", 99, workers=args.workers, progress=False)
        data = load_dataset(h5)
        features = blob_features(data["images"])
        cells = [f"{name} {cross_validated_auc(features, data['labels'], data['patient_id'], pair):.3f}"
                 for name, pair in PAIRS.items()]
        print(f"{dataset} difficulty {difficulty:g}: " + ", ".join(cells), flush=True)
        if difficulty == args.difficulties[0]:
            shortcut = global_features(manifest)
            cells = [f"{name} {cross_validated_auc(shortcut, data['labels'], data['patient_id'], pair):.3f}"
                     for name, pair in PAIRS.items()]
            print(f"{dataset} shortcut check (global statistics of the images as read): " + ", ".join(cells))
            with h5py.File(h5, "r") as f:
                per_class = [f"{name} {f['images'][np.flatnonzero(f['labels'][()] == code)].mean():.1f}"
                             for code, name in enumerate(("negative", "benign", "malignant"))]
            print(f"{dataset} mean stored pixel per class: " + ", ".join(per_class))


if __name__ == "__main__":
    main()
