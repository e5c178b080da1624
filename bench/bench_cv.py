"""What cross-validation that chooses the training length (--cv-select iterations) costs, side by side.

    python bench/bench_cv.py [--steps 6] [--sizes 99 227]

Two things are measured here, in one process, on this machine: the full-width AlexNet's training
throughput and its scoring (test-mode forward) throughput at each input size. Two are counted: the
jobs a grid plans with and without cross-validation (pipeline.plan.Planner on stand-in image sets
of the paper's cohort sizes, no pixels), and the images they train on and score. The cost of a
grid is then

    training images / training throughput + scored images / scoring throughput,

with CV's extra work: k folds of ``iters`` iterations each, and each fold scoring its validation
patients at every checkpoint (``iters / checkpoint_every`` times). The report gives, per preset,
the hours with and without CV and their ratio; the ratio is what transfers to another machine.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from alexnet_np import SGD, AlexNet, SoftmaxCrossEntropy, to_network_input  # noqa: E402
from pipeline.config import resolve_config  # noqa: E402
from pipeline.data import ImageSet  # noqa: E402
from pipeline.study import Study  # noqa: E402


def throughput(size, batch, steps):
    """(training images/s, scoring images/s) of the full-width caffe AlexNet at ``size``."""
    rng = np.random.default_rng(0)
    net = AlexNet(2, input_size=size, init="he", seed=0)
    opt = SGD(net, base_lr=0.001, momentum=0.9, weight_decay=0.001, stepsize=2500)
    loss = SoftmaxCrossEntropy()
    x = to_network_input(rng.integers(0, 256, (batch, size, size), dtype=np.uint8), np.float32(128), 1 / 512)
    y = rng.integers(0, 2, batch)
    for timed in (False, True):       # the first pass allocates the layers' buffers
        t0 = time.perf_counter()
        for _ in range(steps if timed else 1):
            _, d = loss(net.forward(x, train=True), y)
            net.backward(d)
            opt.step()
        train = batch * (steps if timed else 1) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(steps):
        net.predict_proba(x, batch_size=batch)
    return train, batch * steps / (time.perf_counter() - t0)


def stand_in_set(name, per_class, seed):
    """An ImageSet with the paper's patients per class (negative, recalled-benign, malignant), four
    views a patient, 1-pixel images: what the planner needs to count jobs and images."""
    labels = np.repeat(np.arange(3), per_class)
    rng = np.random.default_rng(seed)
    plabel = rng.permutation(labels)
    n = 4 * len(plabel)
    return ImageSet(name, np.zeros((n, 1, 1), np.uint8), np.repeat(plabel, 4).astype(np.int64),
                    np.repeat([f"{name}:P{i}" for i in range(len(plabel))], 4), np.zeros(n, np.int8),
                    np.array([f"{name}{k}" for k in range(n)]), np.full(n, name), {},
                    np.tile(["L", "L", "R", "R"], len(plabel)))


def workload(cfg, tmp):
    """(images trained on, images scored) by every distinct job of ``cfg``'s grid."""
    sets = {"ffdm": stand_in_set("ffdm", (552, 376, 375), 1), "ddsm": stand_in_set("ddsm", (695, 850, 867), 2)}
    files = {}
    for name in sets:
        files[name] = tmp / f"{name}.h5"
        files[name].write_bytes(b"")
    study = Study(cfg, sets, tmp / "run", files, log=lambda *a: None)
    jobs = {}
    for tf in cfg.test_fractions:
        for e in cfg.experiments:
            for s in cfg.scenarios:
                for job in study.plan(s, e, tf).jobs():
                    jobs[job.key] = job
    trained = sum(j.iters * cfg.batch_size for j in jobs.values())
    scored = 0
    for j in jobs.values():
        for name, evals in j.eval_sets.items():
            every = j.iters // cfg.checkpoint_every if j.notes.get("validate_every_checkpoint") else 0
            scored += len(evals.index) * (1 + every)
    return len(jobs), trained, scored


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6, help="timed training steps per size (default 6)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[99, 227])
    args = ap.parse_args(argv)
    import tempfile
    rates = {size: throughput(size, 32, args.steps) for size in args.sizes}
    for size, (tr, sc) in rates.items():
        print(f"input {size}: training {tr:.1f} images/s, scoring {sc:.1f} images/s")
    everything = {"scenarios": ["all"], "experiments": ["all"], "progress": False}
    with tempfile.TemporaryDirectory() as tmp:
        for preset, extra in (("demo", {}), ("paper", {"test_fractions": [0.05, 0.10, 0.15]})):
            base = resolve_config(preset, dict(everything, **extra), "cpu")
            size = base.input_size if base.input_size in rates else max(rates)
            tr, sc = rates[size]
            rows = []
            for label, cfg in (("no CV", replace(base, cv=0, cv_select="none")),
                               ("6-fold CV, --cv-select iterations", replace(base, cv=6, cv_select="iterations"))):
                n, trained, scored = workload(cfg, Path(tmp))
                hours = (trained / tr + scored / sc) / 3600
                rows.append((label, n, trained, scored, hours))
            print(f"\n{preset} preset, every scenario and experiment, test fractions {base.test_fractions}, "
                  f"{base.iters} iterations, input {size}, on this machine's CPU:")
            for label, n, trained, scored, hours in rows:
                print(f"  {label:36s} {n:4d} jobs, {trained / 1e6:7.2f} M images trained, {scored / 1e6:6.2f} M scored:"
                      f" {hours:8.1f} h")
            print(f"  CV costs {rows[1][4] / rows[0][4]:.2f}x the grid without it (the reported models then train "
                  "at most as long; counted at the maximum here)")


if __name__ == "__main__":
    main()
