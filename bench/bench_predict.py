"""Throughput of `run.py predict` on full-size FFDM DICOMs (4096 x 3328), and where its time goes.

    python bench/bench_predict.py [--patients 3] [--repeats 3] [--workers 1 2] [--out /tmp/bench_predict]

Generates (once, cached in --out) a synthetic FFDM-like cohort at 4096 x 3328 pixels (12/14-bit
DICOMs, about 27 MB each), writes an untrained full-width bvlc_alexnet model.h5 at 227 x 227 (the
weights do not change the cost), then measures:

* per image, in this process: reading the DICOM (data_prep.read_image), preprocessing it to
  227 x 227 (data_prep.preprocess_steps with the model's parameters), and scoring (the forward pass,
  in one batch of all images);
* the whole command, `run.py predict MODEL.h5 MANIFEST --out ...`, end to end (model loading,
  worker processes, CSV files) with each --workers value: images/s, best and median of --repeats.

Timings on a shared machine vary: the load average is printed before and after.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import alexnet_np  # noqa: E402 - before NumPy, so that OpenBLAS's thread settings apply
import numpy as np  # noqa: E402

import data_prep  # noqa: E402
from data_prep.preprocess import THRESHOLD_FRACTION  # noqa: E402
from pipeline import modelfile  # noqa: E402
import run  # noqa: E402
from pipeline.provenance import environment  # noqa: E402

FULL_SIZE = (4096, 3328)


def make_model(path, size=227):
    """An untrained bvlc_alexnet model file: what predict costs does not depend on the weights."""
    net = alexnet_np.AlexNet(2, variant="caffe", input_size=size, init="he", seed=0)
    commit, dirty = modelfile.git_version()
    card = modelfile.ModelCard(
        scenario="malignant-vs-negative", class_names=("negative", "malignant"), class_labels=((0,), (2,)),
        positive_class=1, variant=net.variant, input_size=net.input_size, widths=net.widths,
        mean=np.full((size, size), 100.0, np.float32), input_scale=1 / 64,
        preprocessing=modelfile.Preprocessing(size, "stretch", "global", THRESHOLD_FRACTION), seed=0,
        training_data={"note": "untrained, for bench_predict.py"}, training={}, environment=environment(),
        git_commit=commit, git_dirty=dirty)
    modelfile.save_model(path, net, card)
    return net, card


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=3, help="synthetic patients (4 images each; default 3)")
    ap.add_argument("--repeats", type=int, default=3, help="end-to-end runs per --workers value (default 3)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                    help="reading processes to compare (default 1 2)")
    ap.add_argument("--out", default="/tmp/bench_predict", help="cache and output folder")
    args = ap.parse_args(argv)
    out = Path(args.out)
    cohort = out / f"ffdm-full-p{args.patients}"
    manifest = cohort / "manifest.csv"
    if not manifest.exists():
        print(f"generating {args.patients} full-size patients (about 4 s per image per core) ...")
        data_prep.synthesize("ffdm", args.patients, 0, cohort, image_size=FULL_SIZE, workers=2, progress=False)
    rows = data_prep.read_manifest(manifest)
    net, card = make_model(out / "model.h5")
    pre = card.preprocessing
    print(f"{len(rows)} images of {FULL_SIZE[0]} x {FULL_SIZE[1]}, model {card.variant} at {card.input_size} px; "
          f"load average before: {os.getloadavg()[0]:.1f}")

    t_read, t_pre, grays = [], [], []
    for row in rows:
        t0 = time.perf_counter()
        image, meta = data_prep.read_image(row["path"])
        t1 = time.perf_counter()
        steps = data_prep.preprocess_steps(image, row["laterality"] or meta["laterality"], pre.size, pre.aspect,
                                           pre.equalize, pre.threshold_fraction)
        t_pre.append(time.perf_counter() - t1)
        t_read.append(t1 - t0)
        grays.append(steps["final"])
    gray = np.stack(grays)
    modelfile.score(net, card, gray[:2])  # warm-up: the fast kernels allocate their buffers once
    t0 = time.perf_counter()
    modelfile.score(net, card, gray, batch_size=50)
    t_score = (time.perf_counter() - t0) / len(rows)
    per_image = {"read": np.median(t_read), "preprocess": np.median(t_pre), "score": t_score}
    total = sum(per_image.values())
    print("\nper image, one process (median over images; scoring: one batch of all):")
    for name, value in per_image.items():
        print(f"  {name:<11} {1000 * value:8.1f} ms  {100 * value / total:5.1f}%")
    print(f"  {'sum':<11} {1000 * total:8.1f} ms  -> {1 / total:.2f} images/s if nothing overlaps")

    print(f"\nrun.py predict end to end ({args.repeats} runs each):")
    rates = {}
    for workers in args.workers:
        walls = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                code = run.main(["predict", str(out / "model.h5"), str(manifest), "--out", str(out / "scores.csv"),
                                     "--device", "cpu", "--workers", str(workers), "--no-progress", "--n-boot", "10"])
            walls.append(time.perf_counter() - t0)
            assert code == 0
        rates[workers] = [len(rows) / w for w in walls]
        print(f"  --workers {workers}: best {max(rates[workers]):.2f} images/s, median "
              f"{statistics.median(rates[workers]):.2f} images/s")
    if len(rates) > 1:
        base = args.workers[0]
        for workers in args.workers[1:]:
            print(f"  --workers {workers} / --workers {base}: best {max(rates[workers]) / max(rates[base]):.2f}x, "
                  f"median {statistics.median(rates[workers]) / statistics.median(rates[base]):.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
