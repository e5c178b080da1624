"""Training and inference speed of alexnet_np, optionally side by side with PyTorch.

    python bench/bench_alexnet.py [--variant caffe|torchvision] [--device cpu|gpu]
                                  [--batch 50 [256 ...]] [--vs-torch] [--vs-reference]
                                  [--vs-im2col] [--tf32] [--breakdown]

Prints, per batch size: training images/s (forward + backward + SGD step),
inference images/s, GFLOP/s, the share of the GEMM rate (the step's GEMMs, same
shapes and orientations, timed alone, over the whole step's time), peak memory,
and with --breakdown a per-layer table (training forward/backward, inference). GFLOP/s counts the
FLOPs of the direct convolution; on the CPU conv3 to conv5 run Winograd's
F(2x2, 3x3), which does fewer, so that figure is an effective rate. With
--vs-torch (PyTorch installed; it is not a project dependency) the same network
in PyTorch runs alternately with ours and the ratio is printed, and so do the
forward pass's GEMMs alone against PyTorch's inference (the ceiling of the
inference ratio for code built on these GEMMs). With
--vs-reference (CPU) our fast CPU kernels run alternately with the plain
reference versions (ALEXNET_NP_CPU_KERNELS=reference, im2col everywhere); with
--vs-im2col (CPU) the fast kernels with and without Winograd (ALEXNET_NP_WINOGRAD=0).
The run's BLAS, thread count and OPENBLAS_* / OMP_* settings are printed first,
since they change the numbers; the implementations that ran (reference / fast CPU /
CUDA / im2col + GEMM / Winograd, backend.kernels_used) are printed after each batch size.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from alexnet_np import backend  # noqa: E402 -- before NumPy: importing alexnet_np configures OpenBLAS's threads
import numpy as np  # noqa: E402

ENV_VARS = ("OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_THREAD_TIMEOUT",
            "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUPY_TF32",
            "ALEXNET_NP_BACKEND", "ALEXNET_NP_CPU_KERNELS", "ALEXNET_NP_WINOGRAD")


# ----------------------------------------------------------------------------- environment
def environment(device):
    info = {"python": platform.python_version(), "numpy": np.__version__,
            "machine": platform.machine(), "cpu": _cpu_name(), "cores": os.cpu_count(),
            "env": {k: os.environ.get(k) for k in ENV_VARS if os.environ.get(k) is not None}}
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        info["blas"] = f"{blas.get('name')} {blas.get('version', '')}".strip()
    except Exception:  # older numpy: no dict mode
        info["blas"] = "unknown"
    try:
        import threadpoolctl
        info["blas_threads"] = [f"{p['internal_api']}:{p['num_threads']}({p.get('architecture')})"
                                for p in threadpoolctl.threadpool_info()]
    except ImportError:
        pass
    if device == "cpu":
        info["cpu_kernels"] = backend.cpu_kernels_name()
        info["conv3x3"] = backend.conv_algorithm(np.empty(1), 3, 1)
        info["kernel_threads"] = backend.RUNTIME.threads
    if device == "gpu":
        import cupy as cp
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        info["cupy"] = cp.__version__
        info["cuda_runtime"] = cp.cuda.runtime.runtimeGetVersion()
    return info


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ----------------------------------------------------------------------------- FLOPs
def layer_flops(net, batch):
    """Forward FLOPs per layer for a batch (2 per multiply-add); conv and linear layers only."""
    from alexnet_np.layers import Conv2d, Linear
    shape = (3, net.input_size, net.input_size)
    out = {}
    for name, layer in net.layers:
        if isinstance(layer, Conv2d):
            k, ho, wo = layer.output_shape(*shape)
            out[name] = 2 * batch * k * (layer.in_ch // layer.groups) * layer.kernel ** 2 * ho * wo
        elif isinstance(layer, Linear):
            out[name] = 2 * batch * layer.in_features * layer.out_features
        if hasattr(layer, "output_shape"):
            shape = layer.output_shape(*shape)
    return out


def train_flops(net, batch):
    """Forward + weight gradient + input gradient (none for conv1, whose input is the image)."""
    f = layer_flops(net, batch)
    return sum(3 * v for v in f.values()) - f["conv1"]


# ----------------------------------------------------------------------------- timing helpers
class Clock:
    def __init__(self, device):
        self.device = device
        if device == "gpu":
            import cupy as cp
            self.cp = cp

    def sync(self):
        if self.device == "gpu":
            self.cp.cuda.Device().synchronize()

    def time(self, fn, repeats, warmup=1):
        for _ in range(warmup):
            fn()
        self.sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t0)
        return times


def make_ours(variant, batch, device, tf32=False, seed=0):
    from alexnet_np import SGD, AlexNet, SoftmaxCrossEntropy, set_backend
    from alexnet_np.backend import enable_tf32
    m = set_backend("cupy" if device == "gpu" else "numpy")
    if device == "gpu":
        enable_tf32(tf32)
    net = AlexNet(1000 if variant == "torchvision" else 2, variant=variant, seed=seed)
    opt = SGD(net)
    rng = np.random.default_rng(seed)
    x = m.asarray(rng.standard_normal((batch, 3, net.input_size, net.input_size), dtype=np.float32))
    y = m.asarray(rng.integers(0, net.num_classes, batch))
    lossf = SoftmaxCrossEntropy()

    def train_step():
        loss, d = lossf(net.forward(x, train=True), y)
        net.backward(d)
        opt.step()
        return loss

    def infer():
        return net.forward(x, train=False)

    return net, train_step, infer, x


def gemm_calls(net, batch):
    """A function that runs, once each, the very GEMMs of a training step (same shapes and
    transposes as in layers.py, Winograd's batched ones where the step uses Winograd) on
    random operands, into preallocated outputs as the layers do: the GEMM work alone.
    Returns (function, its FLOPs, a function that runs only the forward pass's GEMMs)."""
    from alexnet_np import winograd
    from alexnet_np.backend import conv_algorithm
    from alexnet_np.layers import Conv2d, Linear
    m = net.xp
    rng = np.random.default_rng(1)
    shape = (3, net.input_size, net.input_size)
    calls, forward, flops = [], [], 0

    def rand(*s):
        return m.asarray(rng.standard_normal(s, dtype=np.float32))

    for name, layer in net.layers:
        if isinstance(layer, Conv2d):
            k, ho, wo = layer.output_shape(*shape)
            g, c = layer.groups, layer.in_ch
            probe = m.empty((1, 1, 1, 1), np.float32)
            if conv_algorithm(probe, layer.kernel, layer.stride) == "winograd":
                t = winograd.tiles(ho) * winograd.tiles(wo) * batch
                v, mm, u = rand(16, t, c), rand(16, t, k), rand(16, g, k // g, c // g)
                vg, mg = winograd.grouped(v, g), winograd.grouped(mm, g)
                du = m.empty_like(u)
                forward.append(lambda vg=vg, u=u, mg=mg: m.matmul(vg, u.transpose(0, 1, 3, 2), out=mg))
                calls.append(forward[-1])
                calls.append(lambda vg=vg, mg=mg, du=du: m.matmul(mg.transpose(0, 1, 3, 2), vg, out=du))
                calls.append(lambda vg=vg, u=u, mg=mg: m.matmul(mg, u, out=vg))
                flops += 3 * 2 * 16 * t * c * k // g
            else:
                q, npix = c // g * layer.kernel ** 2, batch * ho * wo
                w, cols, dy = rand(g, k // g, q), rand(g, q, npix), rand(g, k // g, npix)
                y, dw, dcols = m.empty_like(dy), m.empty((g, q, k // g), np.float32), m.empty_like(cols)
                forward.append(lambda w=w, cols=cols, y=y: m.matmul(w, cols, out=y))
                calls.append(forward[-1])
                calls.append(lambda dy=dy, cols=cols, dw=dw: m.matmul(cols, dy.transpose(0, 2, 1), out=dw))
                flops += 2 * 2 * k * q * npix
                if name != "conv1":
                    calls.append(lambda w=w, dy=dy, dc=dcols: m.matmul(w.transpose(0, 2, 1), dy, out=dc))
                    flops += 2 * k * q * npix
        elif isinstance(layer, Linear):
            w, x, dy = rand(layer.out_features, layer.in_features), rand(batch, layer.in_features), \
                rand(batch, layer.out_features)
            y, dw = m.empty(dy.shape[::-1], np.float32), m.empty_like(w)
            dx = m.empty(x.shape[::-1], np.float32)
            forward.append(lambda w=w, x=x, y=y: m.matmul(w, x.T, out=y))
            calls += [forward[-1],
                      lambda x=x, dy=dy, dw=dw: m.matmul(dy.T, x, out=dw),
                      lambda w=w, dy=dy, dx=dx: m.matmul(w.T, dy.T, out=dx)]
            flops += 3 * 2 * batch * layer.in_features * layer.out_features
        if hasattr(layer, "output_shape"):
            shape = layer.output_shape(*shape)
    return (lambda: [c() for c in calls]), flops, (lambda: [c() for c in forward])


def breakdown(net, x, device, clock, repeats):
    """Median seconds per layer: forward and backward in training mode, forward in inference."""
    from alexnet_np import SoftmaxCrossEntropy
    labels = net.xp.asarray(np.arange(x.shape[0]) % net.num_classes)
    fwd = {n: [] for n, _ in net.layers}
    bwd = {n: [] for n, _ in net.layers}
    inf = {n: [] for n, _ in net.layers}
    for _ in range(repeats + 1):
        h = x
        for name, layer in net.layers:
            t0 = time.perf_counter()
            h = layer.forward(h, False)
            clock.sync()
            inf[name].append(time.perf_counter() - t0)
        h = x
        for name, layer in net.layers:
            t0 = time.perf_counter()
            h = layer.forward(h, True)
            clock.sync()
            fwd[name].append(time.perf_counter() - t0)
        _, d = SoftmaxCrossEntropy()(h, labels)
        for name, layer in reversed(net.layers):
            t0 = time.perf_counter()
            d = layer.backward(d)
            clock.sync()
            bwd[name].append(time.perf_counter() - t0)
    return {n: tuple(statistics.median(t[n][1:]) for t in (fwd, bwd, inf)) for n in fwd}


def peak_memory_step(train_step):
    """GPU: bytes in CuPy's memory pool after one training step (everything the step holds)."""
    import cupy as cp
    pool = cp.get_default_memory_pool()
    pool.free_all_blocks()
    train_step()
    cp.cuda.Device().synchronize()
    return pool.total_bytes()


def peak_memory_cpu(variant, batch):
    """CPU: peak bytes of all arrays from building the net and the optimizer through two
    training steps -- parameters, momentum, gradients, activations, and the buffers
    that the fast kernels and the layers keep for reuse (NumPy reports its allocations
    to tracemalloc). Run first, in a fresh process, so that no buffer predates it."""
    tracemalloc.start()
    try:
        _, train_step, _, _ = make_ours(variant, batch, "cpu")
        train_step()
        train_step()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# CPU settings compared by --vs-reference and --vs-im2col: (CPU kernels, Winograd allowed).
CPU_SETTINGS = {"fast": ("fast", True), "winograd": ("fast", True), "im2col": ("fast", False),
                "reference": ("reference", False)}


def compare_cpu_settings(a, b, label, train_step, infer, clock, repeats, batch, r):
    """Time training and inference under CPU settings ``a`` and ``b`` (keys of CPU_SETTINGS)
    alternately, record and print the ratios, and restore the settings found."""
    found = backend.cpu_kernels_name(), backend.winograd_enabled()

    def under(setting, fn):
        def run():
            backend.set_cpu_kernels(CPU_SETTINGS[setting][0])
            backend.set_winograd(CPU_SETTINGS[setting][1])
            return fn()
        return run
    try:
        ta, tb = alternate(under(a, train_step), under(b, train_step), clock, clock.sync, repeats)
        ia, ib = alternate(under(a, infer), under(b, infer), clock, clock.sync, repeats)
    finally:
        backend.set_cpu_kernels(found[0])
        backend.set_winograd(found[1])
    r.update({f"{a}_train_img_s": batch / ta, f"{b}_train_img_s": batch / tb,
              f"{a}_vs_{b}_train": tb / ta, f"{a}_infer_img_s": batch / ia,
              f"{b}_infer_img_s": batch / ib, f"{a}_vs_{b}_infer": ib / ia})
    print(f"{label}, alternating: train {batch / ta:.1f} vs {batch / tb:.1f} img/s -> {tb / ta:.2f}x; "
          f"inference {batch / ia:.1f} vs {batch / ib:.1f} img/s -> {ib / ia:.2f}x")


# ----------------------------------------------------------------------------- PyTorch twin
def make_torch(variant, batch, device, threads, seed=0):
    import torch
    import torch.nn as nn
    torch.manual_seed(seed)
    if device == "cpu":
        torch.set_num_threads(threads)
    dev = "cuda" if device == "gpu" else "cpu"
    if variant == "caffe":
        lrn = dict(size=5, alpha=1e-4, beta=0.75, k=1.0)
        feats = [nn.Conv2d(3, 96, 11, 4), nn.ReLU(True), nn.LocalResponseNorm(**lrn),
                 nn.MaxPool2d(3, 2, ceil_mode=True),
                 nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(True), nn.LocalResponseNorm(**lrn),
                 nn.MaxPool2d(3, 2, ceil_mode=True),
                 nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(True),
                 nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(True),
                 nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(True),
                 nn.MaxPool2d(3, 2, ceil_mode=True), nn.Flatten(),
                 nn.Linear(9216, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 4096),
                 nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 2)]
        size, classes = 227, 2
    else:
        feats = [nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(True), nn.MaxPool2d(3, 2),
                 nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(True), nn.MaxPool2d(3, 2),
                 nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(True),
                 nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(True),
                 nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(3, 2), nn.Flatten(),
                 nn.Dropout(), nn.Linear(9216, 4096), nn.ReLU(True), nn.Dropout(),
                 nn.Linear(4096, 4096), nn.ReLU(True), nn.Linear(4096, 1000)]
        size, classes = 224, 1000
    net = nn.Sequential(*feats).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-3)
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.randint(0, classes, (batch,), device=dev)
    lossf = nn.CrossEntropyLoss()

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = lossf(net(x), y)
        loss.backward()
        opt.step()

    def infer():
        with torch.no_grad():
            net.eval()
            net(x)
            net.train()

    def sync():
        if dev == "cuda":
            torch.cuda.synchronize()
    return train_step, infer, sync


def alternate(ours, theirs, clock, torch_sync, repeats):
    """Time ours and theirs alternately (A B A B ...) so that drifts hit both equally."""
    ours(), theirs()
    clock.sync(), torch_sync()
    a, b = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ours()
        clock.sync()
        a.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        theirs()
        torch_sync()
        b.append(time.perf_counter() - t0)
    return statistics.median(a), statistics.median(b)


# ----------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=("caffe", "torchvision"), default="caffe")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--batch", type=int, nargs="+", default=None,
                    help="batch sizes (default: 50 on CPU, 50 and 256 on GPU)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repetitions (default 5 CPU, 20 GPU)")
    ap.add_argument("--vs-torch", action="store_true", help="time the same net in PyTorch alternately")
    ap.add_argument("--vs-reference", action="store_true",
                    help="CPU: time the fast CPU kernels alternately with the reference ones")
    ap.add_argument("--vs-im2col", action="store_true",
                    help="CPU: time the fast kernels with Winograd alternately with im2col everywhere")
    ap.add_argument("--tf32", action="store_true",
                    help="GPU: allow TF32 GEMMs (cuBLAS math mode for ours, torch's allow_tf32 flags)")
    ap.add_argument("--breakdown", action="store_true",
                    help="per-layer table: training forward/backward, inference forward")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (match BLAS)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    batches = args.batch or ([50] if args.device == "cpu" else [50, 256])
    repeats = args.repeats or (5 if args.device == "cpu" else 20)
    env = environment(args.device)
    print("environment:", json.dumps(env))
    clock = Clock(args.device)
    results = {"environment": env, "variant": args.variant, "device": args.device,
               "tf32": args.tf32, "date": time.strftime("%Y-%m-%d"), "runs": []}
    for batch in batches:
        if args.device == "cpu":
            peak = peak_memory_cpu(args.variant, batch)
        net, train_step, infer, x = make_ours(args.variant, batch, args.device, args.tf32)
        t_train = statistics.median(clock.time(train_step, repeats))
        t_infer = statistics.median(clock.time(infer, repeats))
        flops = train_flops(net, batch)
        # The share of the GEMM rate compares the step with its GEMMs alone, timed alternately
        # (A B A B) so that a change of machine load hits both.
        gemms, gemm_flops, forward_gemms = gemm_calls(net, batch)
        t_step, t_gemm = alternate(train_step, gemms, clock, clock.sync, max(3, repeats // 2))
        gemm = gemm_flops / t_gemm / 1e9
        if args.device == "gpu":
            peak = peak_memory_step(train_step)
        r = {"batch": batch, "train_img_s": batch / t_train, "infer_img_s": batch / t_infer,
             "train_gflops": flops / t_train / 1e9, "gemm_gflops": gemm,
             "share_of_gemm_rate": t_gemm / t_step, "peak_mem_gb": peak / 1e9}
        print(f"\n[{args.variant} {args.device} batch {batch}] train {r['train_img_s']:.1f} img/s "
              f"({r['train_gflops']:.1f} GFLOP/s; {100 * r['share_of_gemm_rate']:.0f}% of the "
              f"{gemm:.1f} GFLOP/s its GEMMs reach alone, timed alternately); inference "
              f"{r['infer_img_s']:.1f} img/s; peak memory {r['peak_mem_gb']:.2f} GB")
        if args.breakdown:
            table = breakdown(net, x, args.device, clock, max(2, repeats // 2))
            total = sum(f + b for f, b, _ in table.values())
            print(f"{'layer':8s} {'fwd ms':>9s} {'bwd ms':>9s} {'share':>6s} {'infer ms':>9s}")
            for name, (f, b, i) in table.items():
                print(f"{name:8s} {1e3 * f:9.2f} {1e3 * b:9.2f} {100 * (f + b) / total:5.1f}% {1e3 * i:9.2f}")
            sums = [1e3 * sum(t[k] for t in table.values()) for k in range(3)]
            print(f"{'total':8s} {sums[0]:9.2f} {sums[1]:9.2f} {'':6s} {sums[2]:9.2f}")
            r["breakdown_ms"] = {n: [1e3 * v for v in t] for n, t in table.items()}
        if args.vs_reference and args.device == "cpu":
            compare_cpu_settings("fast", "reference", "fast vs reference CPU kernels",
                                 train_step, infer, clock, repeats, batch, r)
        if args.vs_im2col and args.device == "cpu":
            compare_cpu_settings("winograd", "im2col",
                                 "Winograd vs im2col for the 3x3 convolutions (fast kernels)",
                                 train_step, infer, clock, repeats, batch, r)
        if args.vs_torch:
            try:
                import torch
            except ImportError:
                print("--vs-torch: PyTorch is not installed; skipped")
            else:
                if args.device == "gpu":
                    torch.backends.cuda.matmul.allow_tf32 = args.tf32
                    torch.backends.cudnn.allow_tf32 = args.tf32
                    torch.backends.cudnn.benchmark = True
                t_step, t_inf, t_sync = make_torch(args.variant, batch, args.device, args.threads)
                ours_t, torch_t = alternate(train_step, t_step, clock, t_sync, repeats)
                ours_i, torch_i = alternate(infer, t_inf, clock, t_sync, repeats)
                # The most any inference code built on these GEMMs could reach: the forward's
                # GEMMs alone against PyTorch's whole inference, alternately.
                gemm_i, torch_i2 = alternate(forward_gemms, t_inf, clock, t_sync, repeats)
                r.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                         cudnn=torch.backends.cudnn.version() if args.device == "gpu" else None,
                         ours_train_img_s=batch / ours_t, torch_train_img_s=batch / torch_t,
                         train_ratio=torch_t / ours_t, ours_infer_img_s=batch / ours_i,
                         torch_infer_img_s=batch / torch_i, infer_ratio=torch_i / ours_i,
                         forward_gemms_img_s=batch / gemm_i, infer_gemm_ceiling=torch_i2 / gemm_i)
                print(f"vs PyTorch {torch.__version__} ({torch.get_num_threads()} threads"
                      f"{', cuDNN ' + str(r['cudnn']) if r['cudnn'] else ''}), alternating: "
                      f"train ours {batch / ours_t:.1f} vs torch {batch / torch_t:.1f} img/s "
                      f"-> {r['train_ratio']:.2f}x; inference ours {batch / ours_i:.1f} vs torch "
                      f"{batch / torch_i:.1f} img/s -> {r['infer_ratio']:.2f}x")
                print(f"  the forward's GEMMs alone: {batch / gemm_i:.1f} img/s = "
                      f"{r['infer_gemm_ceiling']:.2f}x PyTorch's inference, alternating (the ceiling "
                      f"of the inference ratio if nothing but the GEMMs took time)")
        used = backend.kernels_used()
        r["kernels_used"] = [[u.op, u.implementation, u.calls] for u in used.uses]
        print("kernels used (all timed runs):\n  " + used.summary().replace("\n", "\n  "))
        results["runs"].append(r)
        del net, train_step, infer, x
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
