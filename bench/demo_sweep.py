"""A fast sweep of demo-preset candidates on already built datasets (no data_prep import, so it also
runs on a GPU machine without pydicom): for each dataset and setting, train the AlexNet of
run.py's demo on malignant vs negative and print the test AUC at several iteration counts.

    python bench/demo_sweep.py DATASET.h5 [...] [--lr 0.001 0.002] [--flip 0 1] [--batch 32]
                               [--evaluate-at 300 700 1500] [--device gpu] [--json out.json]

The split is patient-level (20% of patients held out, by a hash of the patient id), classes are
balanced as in pipeline.scenarios. bench/demo_design.md records what this showed.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import h5py  # noqa: E402
import numpy as np  # noqa: E402

import stats  # noqa: E402
from alexnet_np import SGD, AlexNet, set_backend  # noqa: E402
from pipeline.scenarios import balance, get_scenario  # noqa: E402
from pipeline.train import predict, train  # noqa: E402


def load(path):
    with h5py.File(path, "r") as f:
        return f["images"][()], f["labels"][()].astype(np.int64), f["patient_id"].asstr()[()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--lr", type=float, nargs="+", default=[0.001, 0.002])
    ap.add_argument("--flip", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--batch", type=int, nargs="+", default=[32])
    ap.add_argument("--dropout", type=float, nargs="+", default=[0.5])
    ap.add_argument("--shift", type=int, nargs="+", default=[0])
    ap.add_argument("--weight-decay", type=float, nargs="+", default=[0.001])
    ap.add_argument("--fc", type=int, nargs="+", default=[4096], help="fc6/fc7 width")
    ap.add_argument("--evaluate-at", type=int, nargs="+", default=[300, 700, 1500])
    ap.add_argument("--lr-step", type=int, default=10 ** 6)
    ap.add_argument("--scale", type=float, default=1 / 64)
    ap.add_argument("--scenario", default="malignant-vs-negative")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    set_backend("cupy" if args.device == "gpu" else "numpy")
    scenario = get_scenario(args.scenario)
    results = []
    print("dataset settings iters | train_s | test AUC (DeLong CI) n_test")
    for path in args.datasets:
        images, labels, pid = load(path)
        test_patient = np.array([zlib.crc32(p.encode()) % 5 == 0 for p in pid])
        tr, ytr = balance(scenario, labels, np.flatnonzero(~test_patient), np.random.default_rng(1))
        te, yte = balance(scenario, labels, np.flatnonzero(test_patient), np.random.default_rng(2))
        mean = images[tr].mean(axis=0).astype(np.float32)
        size = images.shape[1]
        for lr, batch, flip, dropout, shift, wd, fc in itertools.product(
                args.lr, args.batch, args.flip, args.dropout, args.shift, args.weight_decay, args.fc):
            net = AlexNet(scenario.num_classes, input_size=size, init="he", dropout=dropout, seed=0,
                          widths=(96, 256, 384, 384, 256, fc, fc))
            opt = SGD(net, base_lr=lr, stepsize=args.lr_step, weight_decay=wd)
            tag = f"lr={lr} b={batch} flip={flip} drop={dropout} shift={shift} wd={wd} fc={fc}"
            ckpt = f"/tmp/sweep_{os.getpid()}.h5"
            if os.path.exists(ckpt):
                os.remove(ckpt)
            t0 = time.perf_counter()
            for iters in args.evaluate_at:
                try:
                    train(net, opt, images, tr, ytr, iters=iters, batch_size=batch, seed=0, mean=mean,
                          scale=args.scale, checkpoint_path=ckpt, log_path=f"/tmp/sweep_{os.getpid()}.csv",
                          checkpoint_every=10 ** 9, progress=False, flip=bool(flip), shift=shift)
                except Exception as e:  # divergence is a result too
                    print(f"{os.path.basename(path)} {tag} {iters} | diverged ({e})")
                    break
                p = predict(net, images, te, mean, args.scale)[:, 1]
                auc, lo, hi = stats.delong_ci(yte, p)
                dt = time.perf_counter() - t0
                results.append(dict(dataset=path, lr=lr, batch=batch, flip=flip, dropout=dropout, shift=shift,
                                    weight_decay=wd, fc=fc, iters=iters, seconds=dt, auc=auc, ci=[lo, hi],
                                    n_train=len(tr), n_test=len(te)))
                print(f"{os.path.basename(path)} {tag} it={iters} | {dt:.0f}s | {auc:.3f} ({lo:.2f}-{hi:.2f}) "
                      f"n_test={len(te)}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
