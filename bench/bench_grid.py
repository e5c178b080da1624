"""Benchmark of the grid engine: the same grid of small AlexNet trainings run one after
another in this process, then on `local:N` Dask workers (pipeline/cluster.py); wall times, speedup
and parallel efficiency (speedup / workers).

Each job trains a miniature AlexNet (alexnet_np, reduced widths) for a few iterations on seeded
random images and writes its loss curve and final fc8 weights (.npz). Sequentially the process
uses every core through BLAS and the fast CPU kernels' threads; on `local:N` each worker owns
cores/N of them. The cluster's start is timed apart from the jobs; a worker's first job pays for
its imports, while this process warms up (one step) before the sequential run. The two runs' result files are
compared byte for byte: they are identical when this process and the workers use the same number of
BLAS threads (run with OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 and --workers N=cores), and differ
in the last bits otherwise (threads split the float sums differently).

    python bench/bench_grid.py [--jobs 8] [--iters 20] [--workers 2] [--blas]

With --blas it also runs the grid on `local:1` twice, the worker given every core as BLAS threads
(what pipeline/cluster.py does) and given one (Dask's default), to measure what the setting is worth.

Not a test: nothing fails. On a shared machine the wall times move with the load; the ratios,
measured in one run side by side, are what counts (the load average is printed).
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Running as a script puts bench/ first on sys.path; the packages live one level up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alexnet_np import SGD, AlexNet, SoftmaxCrossEntropy  # noqa: E402  (before NumPy: see alexnet_np/__init__)
import numpy as np  # noqa: E402

from data_prep.fileio import atomic_output  # noqa: E402
from pipeline.cluster import GridJob, cores_per_worker, open_client, run_jobs  # noqa: E402

SIZE, BATCH = 99, 16
WIDTHS = (24, 64, 96, 96, 64, 256, 256)     # conv1..conv5, fc6, fc7: about 1/4 of AlexNet's


def train_tiny(out, seed, iters):
    """One job: a miniature AlexNet trained for ``iters`` steps of Caffe's SGD on seeded random data."""
    net = AlexNet(2, input_size=SIZE, init="he", widths=WIDTHS, seed=seed)
    opt = SGD(net, base_lr=0.01, momentum=0.9, weight_decay=0.001, stepsize=1000)
    loss_fn = SoftmaxCrossEntropy()
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(iters):
        x = rng.standard_normal((BATCH, 3, SIZE, SIZE), dtype=np.float32)
        y = rng.integers(0, 2, BATCH)
        loss, dlogits = loss_fn(net.forward(x, train=True), y)
        net.backward(dlogits)
        opt.step()
        losses.append(loss)
    with atomic_output(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, losses=np.asarray(losses), fc8=net.params["fc8.weight"])


def grid(folder: Path, n_jobs: int, iters: int):
    return [GridJob(f"job{i}", train_tiny, folder / f"job{i}.npz", args=(folder / f"job{i}.npz", i, iters))
            for i in range(n_jobs)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=8, help="jobs in the grid (default 8)")
    ap.add_argument("--iters", type=int, default=20, help="training steps per job (default 20)")
    ap.add_argument("--workers", type=int, default=2, help="Dask workers of the local cluster (default 2)")
    ap.add_argument("--blas", action="store_true",
                    help="also compare local:1 with every core as BLAS threads against Dask's default of one")
    args = ap.parse_args(argv)
    cores = os.cpu_count()
    print(f"{args.jobs} jobs x {args.iters} steps (AlexNet widths {WIDTHS}, {SIZE}x{SIZE}, batch {BATCH}); "
          f"{cores} cores; load average before: {os.getloadavg()[0]:.1f}")

    work = Path(tempfile.mkdtemp(prefix="bench_grid_"))
    try:
        train_tiny(work / "warm-up.npz", 0, 1)     # first calls (allocations, imports) outside the timing
        t0 = time.perf_counter()
        sequential = run_jobs(grid(work / "sequential", args.jobs, args.iters), progress=False)
        t_seq = time.perf_counter() - t0

        t0 = time.perf_counter()
        with open_client(f"local:{args.workers}") as client:
            t_start = time.perf_counter() - t0
            t0 = time.perf_counter()
            parallel = run_jobs(grid(work / "local", args.jobs, args.iters), client=client, progress=False)
            t_par = time.perf_counter() - t0
        if args.blas:
            t_blas = {}
            for threads in (cores, 1):
                with open_client("local:1", cores=threads) as client:
                    t0 = time.perf_counter()
                    run_jobs(grid(work / f"blas{threads}", args.jobs, args.iters), client=client, progress=False)
                    t_blas[threads] = time.perf_counter() - t0
        same = all(sequential[k].read_bytes() == parallel[k].read_bytes() for k in sequential)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    from threadpoolctl import threadpool_info
    here = max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
    speedup = t_seq / t_par
    print(f"sequential, {here} BLAS thread(s):                     {t_seq:7.1f} s  ({t_seq / args.jobs:.2f} s/job)")
    print(f"local:{args.workers}, {cores_per_worker(args.workers)} BLAS thread(s) per worker, jobs only: "
          f"{t_par:7.1f} s  speedup {speedup:.2f}x, efficiency {speedup / args.workers:.0%}")
    print(f"local:{args.workers} with the cluster's start ({t_start:.1f} s):            "
          f"{t_par + t_start:7.1f} s  speedup {t_seq / (t_par + t_start):.2f}x")
    if args.blas:
        print(f"local:1, {cores} BLAS threads: {t_blas[cores]:.1f} s; 1 BLAS thread (Dask's default): "
              f"{t_blas[1]:.1f} s; ratio {t_blas[1] / t_blas[cores]:.2f}x")
    print(f"result files identical: {'yes' if same else 'no'}; load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
