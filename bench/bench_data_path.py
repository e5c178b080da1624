"""Cost of the training loop's data path (HDF5 read, mean subtraction, gray -> 3 channels, transfer).

    python bench/bench_data_path.py [--size 227] [--batch 50] [--iters 12] [--device cpu|gpu]

Writes a synthetic uint8 image dataset to a temporary HDF5 file (chunked per image, as
data_prep builds them), then measures
  1. the time to make one batch with pipeline.train.BatchStream's producer alone;
  2. a short training run of AlexNet reading from that HDF5 file through the prefetching
     BatchStream: the share of each step the loop spent waiting for data.
The data path "costs" the wait share (what the prefetch thread fails to hide) and, on the CPU,
also competes for the cores: item 1 divided by the step time bounds that.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from alexnet_np import SGD, AlexNet, set_backend  # noqa: E402
from pipeline.train import BatchStream, train  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=227)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--iters", type=int, default=12)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    args = ap.parse_args(argv)
    xp = set_backend("cupy" if args.device == "gpu" else "numpy")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "images.h5")
        with h5py.File(path, "w") as f:
            f.create_dataset("images", data=rng.integers(0, 256, (args.images, args.size, args.size), dtype=np.uint8),
                             chunks=(1, args.size, args.size))
        labels = rng.integers(0, 2, args.images)
        mean = np.full((args.size, args.size), 127.5, np.float32)
        with h5py.File(path, "r") as f:
            images = f["images"]
            idx = np.arange(args.images)
            stream = BatchStream(images, idx, labels, args.batch, 0, mean, 1.0, xp, 0, 0)
            produce = []
            for it in range(10):
                t0 = time.perf_counter()
                stream._make(it)
                produce.append(time.perf_counter() - t0)
            stream.close()
            net = AlexNet(2, input_size=args.size)
            opt = SGD(net)
            rows = train(net, opt, images, idx, labels, iters=args.iters, batch_size=args.batch, seed=0, mean=mean,
                         scale=1.0, checkpoint_path=os.path.join(tmp, "c.h5"), log_path=os.path.join(tmp, "l.csv"),
                         checkpoint_every=10 ** 9, resume=False, progress=False)
    rows = rows[2:]  # warm-up
    step = [args.batch / float(r["images_per_s"]) for r in rows]
    wait = [float(r["data_wait_s"]) for r in rows]
    t_make = statistics.median(produce)
    print(f"input {args.size}x{args.size}, batch {args.batch}, device {args.device}")
    print(f"making one batch from HDF5 (read + mean + 3 channels + transfer): {1e3 * t_make:.1f} ms")
    print(f"training step: {1e3 * statistics.median(step):.0f} ms; loop waited for data {100 * sum(wait) / sum(step):.2f}% "
          f"of the time; batch making is {100 * t_make / statistics.median(step):.1f}% of a step's duration")


if __name__ == "__main__":
    main()
