"""Why several full-size CPU models train on one single-threaded Dask worker per core, measured side
by side (pipeline.cluster.auto_cluster; docs/study.md, "How a run is organised").

Every arrangement trains the demo's full-size AlexNet (caffe variant, 99 x 99, batch 32, He
initialization, Caffe's SGD) on seeded random images for ``--steps`` steps after a few untimed
warm-up steps, and reports the training images per second of each model and of all of them:

* ``alone``: one plain process, one BLAS thread, nothing else running;
* ``threads``: one plain process with every core as BLAS threads (one model at a time: what
  ``--cluster here`` does);
* ``together``: one plain one-thread process per core, all at once;
* ``together, Dask's malloc``: the same with ``MALLOC_TRIM_THRESHOLD_=65536``, which Dask's nannies
  set in their workers' environment by default (pipeline.cluster's local workers unset it);
* ``local workers``: one one-thread Dask worker per core (``start_local_cluster``), each training one model.

``alone`` against ``together`` is what the cores cost each other (shared caches and memory
bandwidth); ``together`` against ``local workers`` is what Dask costs; ``threads`` against
``together`` (all models) is what one-model-per-core buys over BLAS threads.

    python bench/bench_workers.py [--steps 40] [--warmup 3]

Not a test: nothing fails. Rates move with the machine's load (the load average is printed); the
ratios between arrangements, measured in one run, are what counts.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cluster import BLAS_VARIABLES, open_client  # noqa: E402  (imports alexnet_np before NumPy)

SIZE, BATCH = 99, 32


def training_rate(steps: int, warmup: int, seed: int = 0) -> float:
    """Images per second of ``steps`` SGD steps of the full-size demo network (after ``warmup`` steps)."""
    from alexnet_np import SGD, AlexNet, SoftmaxCrossEntropy
    import numpy as np

    net = AlexNet(2, input_size=SIZE, init="he", seed=seed)
    opt = SGD(net, base_lr=0.001, momentum=0.9, weight_decay=0.001, stepsize=10_000)
    loss_fn = SoftmaxCrossEntropy()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, 3, SIZE, SIZE), dtype=np.float32) * 0.1
    y = rng.integers(0, 2, BATCH)
    t0 = None
    for step in range(warmup + steps):
        if step == warmup:
            t0 = time.perf_counter()
        _, dlogits = loss_fn(net.forward(x, train=True), y)
        net.backward(dlogits)
        opt.step()
    return steps * BATCH / (time.perf_counter() - t0)


def plain_processes(n: int, threads: int, steps: int, warmup: int, extra_env=None) -> list[float]:
    """Rates of ``n`` fresh Python processes started together, ``threads`` BLAS threads each."""
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    env.update({name: str(threads) for name in BLAS_VARIABLES}, **(extra_env or {}))
    cmd = [sys.executable, __file__, "--child", str(steps), str(warmup)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    return [json.loads(p.communicate()[0])["rate"] for p in procs]


def local_workers(n: int, steps: int, warmup: int) -> list[float]:
    """Rates of one model per one-thread Dask worker, ``n`` workers at once."""
    with open_client(f"local:{n}", cores=1) as client:
        client.wait_for_workers(n)
        futures = [client.submit(training_rate, steps, warmup, i, pure=False, workers=[w])
                   for i, w in enumerate(sorted(client.scheduler_info()["workers"]))]
        return client.gather(futures)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40, help="timed training steps per model (default 40)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    ap.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps({"rate": training_rate(*args.child)}))
        return
    if args.steps < 1 or args.warmup < 0:
        ap.error(f"--steps {args.steps} --warmup {args.warmup}: expected at least 1 timed step and 0 or more warm-up steps")
    from threadpoolctl import threadpool_info
    import numpy as np
    blas = next((p for p in threadpool_info() if p["user_api"] == "blas"), {})
    cores = os.cpu_count()
    settings = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    print(f"AlexNet (caffe) {SIZE}x{SIZE}, batch {BATCH}, {args.steps} timed steps per model; {cores} cores; "
          f"BLAS {blas.get('internal_api')} {blas.get('version')} ({blas.get('architecture')}), settings "
          f"{settings or 'none'}; NumPy {np.__version__}; load average before: {os.getloadavg()[0]:.1f}")
    rows = [("alone (1 process, 1 thread)", plain_processes(1, 1, args.steps, args.warmup)),
            (f"threads (1 process, {cores} threads)", plain_processes(1, cores, args.steps, args.warmup)),
            (f"together ({cores} processes, 1 thread each)", plain_processes(cores, 1, args.steps, args.warmup)),
            ("together, Dask's malloc setting", plain_processes(cores, 1, args.steps, args.warmup,
                                                                {"MALLOC_TRIM_THRESHOLD_": "65536"})),
            (f"local workers ({cores} Dask workers, 1 thread each)", local_workers(cores, args.steps, args.warmup))]
    alone = rows[0][1][0]
    print(f"{'arrangement':<52} {'images/s per model':>22} {'all models':>11} {'vs alone':>9}")
    for name, rates in rows:
        each = " ".join(f"{r:.1f}" for r in rates)
        print(f"{name:<52} {each:>22} {sum(rates):>11.1f} {sum(rates) / alone:>8.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
