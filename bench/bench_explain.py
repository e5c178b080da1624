"""Cost of the attribution maps of pipeline/explain/methods.py next to a training step, side by side.

    python bench/bench_explain.py [--size 227] [--batch 50] [--repeats 3] [--device cpu|gpu]

On one AlexNet (caffe, random weights) and one batch, the minimum over ``--repeats`` of:
  * a training step (forward with dropout, loss, backward, SGD update);
  * Grad-CAM and Grad-CAM++ at conv5 (one test-mode forward, a backward down to relu5 only);
  * the input gradient (forward, backward to the image: also one integrated-gradients step);
  * integrated gradients with ``--ig-steps`` steps, measured whole;
  * one test-mode forward (one occlusion position), and occlusion with ``--patch`` on the whole
    batch at 2 x 2 positions, scaled to the positions that ``--stride`` gives (its cost is linear
    in them: one test-mode forward of the batch each).
Every cost is printed as seconds and as a multiple of the training step.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from alexnet_np import SGD, AlexNet, SoftmaxCrossEntropy, set_backend  # noqa: E402
from pipeline import explain  # noqa: E402


def timed(fn, repeats, sync):
    best = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=227)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ig-steps", type=int, default=8, help="integrated-gradients steps timed whole (default 8)")
    ap.add_argument("--patch", type=int, default=None, help="occlusion patch (default size // 8)")
    ap.add_argument("--stride", type=int, default=None, help="occlusion stride (default patch // 2)")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    args = ap.parse_args(argv)
    xp = set_backend("cupy" if args.device == "gpu" else "numpy")
    sync = (lambda: xp.cuda.Stream.null.synchronize()) if args.device == "gpu" else (lambda: None)
    net = AlexNet(2, input_size=args.size, init="he")
    opt = SGD(net)
    lossf = SoftmaxCrossEntropy()
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32))
    labels = rng.integers(0, 2, args.batch)

    def step():
        _, d = lossf(net.forward(x, train=True), labels)
        net.backward(d)
        opt.step()

    patch = args.patch or args.size // 8
    stride = args.stride or max(1, patch // 2)
    positions = ((args.size - patch) // stride + 1) ** 2
    forward = timed(lambda: net.forward(x, train=False), args.repeats, sync)
    # occlusion = one unoccluded forward + one per position: time 4 positions, scale the positions' part
    four = timed(lambda: explain.occlusion(net, x, labels, patch, args.size - patch), 1, sync)
    rows = [("training step", timed(step, args.repeats, sync), ""),
            ("Grad-CAM (conv5)", timed(lambda: explain.grad_cam(net, x, labels), args.repeats, sync), ""),
            ("Grad-CAM++ (conv5)", timed(lambda: explain.grad_cam_pp(net, x, labels), args.repeats, sync), ""),
            ("input gradient (= 1 IG step)", timed(lambda: explain.input_gradient(net, x, labels), args.repeats, sync),
             ""),
            (f"integrated gradients, {args.ig_steps} steps",
             timed(lambda: explain.integrated_gradients(net, x, labels, steps=args.ig_steps), 1, sync), ""),
            ("test-mode forward (= 1 occlusion position)", forward, ""),
            (f"occlusion, patch {patch} stride {stride}: {positions} positions (4 timed, scaled)",
             forward + (four - forward) * positions / 4, "scaled")]
    print(f"AlexNet caffe, batch {args.batch}, {args.size} x {args.size}, device {args.device}, "
          f"min of {args.repeats} (IG and occlusion: one run)")
    base = rows[0][1]
    for name, seconds, _ in rows:
        print(f"  {name:<70s} {seconds:8.3f} s  {seconds / base:7.2f} x step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
