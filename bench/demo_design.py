"""How the demo preset was chosen: train the same AlexNet on the demo's synthetic FFDM cohort with
different settings and report test AUC (malignant vs negative) and the time it took.

    python bench/demo_design.py [--size 99] [--lr 0.001 0.003 0.01] [--batch 32 50] [--iters 300 700]
                                [--init he caffe] [--scale 0.015625 1.0] [--patients 340]

Each line: settings, seconds of training, images/s, final training loss, test AUC with its DeLong CI.
The cohort is generated and built once (cached in --cache-dir), exactly as run.py does.
The findings and the chosen preset are written up in bench/demo_design.md.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import stats  # noqa: E402
from alexnet_np import SGD, AlexNet  # noqa: E402
from pipeline.data import ImageSet, split_holdout, synthetic_dataset, training_mean  # noqa: E402
from pipeline.scenarios import balance, get_scenario  # noqa: E402
from pipeline.train import predict, train  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, nargs="+", default=[99])
    ap.add_argument("--lr", type=float, nargs="+", default=[0.001, 0.003])
    ap.add_argument("--batch", type=int, nargs="+", default=[32])
    ap.add_argument("--iters", type=int, nargs="+", default=[300])
    ap.add_argument("--init", nargs="+", default=["he"])
    ap.add_argument("--scale", type=float, nargs="+", default=[1 / 64])
    ap.add_argument("--lr-step", type=int, default=100000)
    ap.add_argument("--patients", type=int, default=340)
    ap.add_argument("--difficulty", type=float, default=1.0)
    ap.add_argument("--scenario", default="malignant-vs-negative")
    ap.add_argument("--test-fraction", type=float, default=0.15,
                    help="larger than the paper's 5%% so that the AUC estimate is less noisy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default="data_cache")
    ap.add_argument("--out", default="/tmp/demo_design")
    args = ap.parse_args(argv)
    scenario = get_scenario(args.scenario)
    os.makedirs(args.out, exist_ok=True)
    print("size lr batch iters init scale | train_s img/s final_loss | test AUC (DeLong CI) n_test")
    for size in args.size:
        path = synthetic_dataset("ffdm", n_patients=args.patients, seed=args.seed, difficulty=args.difficulty,
                                 image_size=None, size=size, cache_dir=args.cache_dir, progress=False)
        ds = ImageSet.load("ffdm", path)
        tr_side, te_side = split_holdout(ds, args.test_fraction, args.seed)
        tr, ytr = balance(scenario, ds.labels, tr_side, np.random.default_rng(1))
        te, yte = balance(scenario, ds.labels, te_side, np.random.default_rng(2))
        mean = training_mean(ds, tr)
        for lr, batch, iters, init, scale in itertools.product(args.lr, args.batch, args.iters, args.init,
                                                               args.scale):
            net = AlexNet(scenario.num_classes, input_size=size, init=init, seed=args.seed)
            opt = SGD(net, base_lr=lr, stepsize=args.lr_step)
            tag = f"{size}_{lr}_{batch}_{iters}_{init}_{scale:g}"
            t0 = time.perf_counter()
            try:
                rows = train(net, opt, ds.images, tr, ytr, iters=iters, batch_size=batch, seed=args.seed,
                             mean=mean, scale=scale, checkpoint_path=f"{args.out}/{tag}.h5",
                             log_path=f"{args.out}/{tag}.csv", checkpoint_every=10 ** 9, resume=False,
                             progress=False)
            except Exception as e:  # a diverging setting is a result too
                print(f"{size} {lr} {batch} {iters} {init} {scale:g} | diverged: {e}")
                continue
            dt = time.perf_counter() - t0
            p = predict(net, ds.images, te, mean, scale)[:, 1]
            auc, lo, hi = stats.delong_ci(yte, p)
            loss = np.mean([float(r["loss"]) for r in rows[-20:]])
            print(f"{size} {lr} {batch} {iters} {init} {scale:g} | {dt:.0f} {iters * batch / dt:.1f} {loss:.3f} "
                  f"| {auc:.3f} ({lo:.2f}-{hi:.2f}) {len(te)}", flush=True)


if __name__ == "__main__":
    main()
