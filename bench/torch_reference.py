"""Write, with PyTorch, the reference file that tests/test_torch_reference.py checks alexnet_np
against (in CI, without PyTorch): llm.c's test_gpt2 recipe.

    python bench/torch_reference.py [--out tests/data/torch_reference.h5]

For each case -- bvlc_alexnet (LRN, groups, ceil-mode pooling) at 227 x 227, the
same at 119 x 119 (where ceil-mode pooling gives pool1 and pool2 one more row and
column than floor mode would), and torchvision's AlexNet at 224 x 224, all at
miniature widths so that the file stays small -- it stores, in float64:

* the inputs ``x`` (N, 3, S, S) and ``labels``, the dropout masks ``masks/drop6``,
  ``masks/drop7``, and the initial weights ``params/conv1.weight`` ... ``params/fc8.bias``;
* the training-mode ``logits``, the mean softmax cross-entropy ``loss``, and every
  parameter gradient ``grads/<name>``;
* ``sgd_losses``: the losses of STEPS steps of Caffe's SGD from those weights on the
  same batch, the lr dropping by ``gamma`` every ``stepsize`` steps.

The network is written here from torch.nn.functional primitives, not from
alexnet_np, so that the file is an independent reference. Two things are spelled
out rather than taken from PyTorch, because PyTorch's versions differ from Caffe's:

* **Dropout** is deterministic: each dropout layer multiplies by a fixed 0/1 mask
  (stored in the file) and by 1/(1 - p), the inverted dropout of alexnet_np's
  Dropout, which the test gives the same mask through ``Dropout.fixed_mask``.
* **Caffe's SGD** is the update of alexnet_np/optim.py, written out:
  V <- m V + lr lr_mult (g + wd decay_mult W);  W <- W - V, with lr_mult/decay_mult
  1/1 for weights and 2/0 for biases, lr = base_lr gamma^floor(step / stepsize).
  (torch.optim.SGD keeps the lr outside the momentum history: V <- m V + g; W <- W - lr V.)

Large datasets are gzip-compressed (the inputs take 256 distinct values: (u - 128) / 64
for integers u in 0..255, exact in binary floating point).
"""
from __future__ import annotations

import argparse
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data_prep.fileio import atomic_output  # noqa: E402

# name -> (variant, input size, widths conv1..conv5, fc6, fc7)
CASES = {"caffe_227": ("caffe", 227, (8, 12, 16, 12, 8, 24, 16)),
         "caffe_119": ("caffe", 119, (8, 12, 16, 12, 8, 24, 16)),
         "torchvision_224": ("torchvision", 224, (8, 12, 16, 12, 8, 24, 16))}
NUM_CLASSES, BATCH, DROPOUT = 3, 2, 0.5
SGD = dict(base_lr=0.001, momentum=0.9, weight_decay=0.001, gamma=0.1, stepsize=2)
STEPS = 4
LRN = dict(size=5, alpha=1e-4, beta=0.75, k=1.0)
PARAMS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def conv_shapes(variant, w):
    """(name, out, in/groups, kernel, stride, padding, groups) of conv1..conv5."""
    if variant == "caffe":
        return [("conv1", w[0], 3, 11, 4, 0, 1), ("conv2", w[1], w[0] // 2, 5, 1, 2, 2),
                ("conv3", w[2], w[1], 3, 1, 1, 1), ("conv4", w[3], w[2] // 2, 3, 1, 1, 2),
                ("conv5", w[4], w[3] // 2, 3, 1, 1, 2)]
    return [("conv1", w[0], 3, 11, 4, 2, 1), ("conv2", w[1], w[0], 5, 1, 2, 1),
            ("conv3", w[2], w[1], 3, 1, 1, 1), ("conv4", w[3], w[2], 3, 1, 1, 1),
            ("conv5", w[4], w[3], 3, 1, 1, 1)]


def trunk(variant, widths, p, x):
    """conv1 .. pool5, flattened: (N, fc6's input size)."""
    h = x
    for name, _, _, _, stride, pad, groups in conv_shapes(variant, widths):
        h = F.relu(F.conv2d(h, p[name + ".weight"], p[name + ".bias"], stride, pad, 1, groups))
        if variant == "caffe" and name in ("conv1", "conv2"):
            h = F.local_response_norm(h, **LRN)
        if name in ("conv1", "conv2", "conv5"):
            h = F.max_pool2d(h, 3, 2, ceil_mode=variant == "caffe")
    return h.flatten(1)


def forward(variant, widths, p, x, masks):
    """The training-mode forward in torch (dropout by the given masks) -> logits."""
    h = trunk(variant, widths, p, x)

    def drop(t, key):
        return t * masks[key] / (1.0 - DROPOUT)
    if variant == "caffe":   # dropout after relu6 and relu7
        h = drop(F.relu(F.linear(h, p["fc6.weight"], p["fc6.bias"])), "drop6")
        h = drop(F.relu(F.linear(h, p["fc7.weight"], p["fc7.bias"])), "drop7")
    else:                    # torchvision: dropout before fc6 and before fc7
        h = F.relu(F.linear(drop(h, "drop6"), p["fc6.weight"], p["fc6.bias"]))
        h = F.relu(F.linear(drop(h, "drop7"), p["fc7.weight"], p["fc7.bias"]))
    return F.linear(h, p["fc8.weight"], p["fc8.bias"])


def make_case(variant, size, widths, seed):
    rng = np.random.default_rng(seed)
    shapes = {}
    for name, out, cin, k, _, _, _ in conv_shapes(variant, widths):
        shapes[name] = (out, cin, k, k)
    zeros = {n + ".weight": torch.zeros(s, dtype=torch.float64) for n, s in shapes.items()}
    zeros.update({n + ".bias": torch.zeros(s[0], dtype=torch.float64) for n, s in shapes.items()})
    with torch.no_grad():  # pool5's size, hence fc6's input, from a dry run of the trunk
        fc6_in = trunk(variant, widths, zeros, torch.zeros(1, 3, size, size, dtype=torch.float64)).shape[1]
    shapes.update(fc6=(widths[5], fc6_in), fc7=(widths[6], widths[5]), fc8=(NUM_CLASSES, widths[6]))
    params = {}
    for name in PARAMS:  # He-scaled weights (fc8: Caffe's std 0.01, for a loss near log 3), nonzero
        fan_in = int(np.prod(shapes[name][1:]))   # biases (keep pre-activations off ReLU's kink)
        std = 0.01 if name == "fc8" else np.sqrt(2.0 / fan_in)
        params[name + ".weight"] = rng.normal(0.0, std, shapes[name])
        params[name + ".bias"] = rng.normal(0.0, 0.1, shapes[name][0])
    x = (rng.integers(0, 256, (BATCH, 3, size, size)) - 128) / 64.0
    labels = np.array([0, 2])
    drop6_width = widths[5] if variant == "caffe" else fc6_in
    masks = {"drop6": (rng.random((BATCH, drop6_width)) >= DROPOUT).astype(np.float64),
             "drop7": (rng.random((BATCH, widths[5] if variant == "torchvision" else widths[6]))
                       >= DROPOUT).astype(np.float64)}
    return x, labels, masks, params


def run_case(variant, size, widths, seed):
    x, labels, masks, params = make_case(variant, size, widths, seed)
    tx = torch.from_numpy(x)
    tlabels = torch.from_numpy(labels)
    tmasks = {k: torch.from_numpy(v) for k, v in masks.items()}
    p = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    logits = forward(variant, widths, p, tx, tmasks)
    loss = F.cross_entropy(logits, tlabels)
    loss.backward()
    out = {"x": x, "labels": labels, "masks": masks, "params": params,
           "logits": logits.detach().numpy(), "loss": loss.item(),
           "grads": {k: v.grad.numpy().copy() for k, v in p.items()}}
    # Caffe's SGD, written out (see the module docstring).
    velocity = {k: torch.zeros_like(v) for k, v in p.items()}
    losses = []
    for step in range(STEPS):
        for v in p.values():
            v.grad = None
        loss = F.cross_entropy(forward(variant, widths, p, tx, tmasks), tlabels)
        loss.backward()
        losses.append(loss.item())
        lr = SGD["base_lr"] * SGD["gamma"] ** (step // SGD["stepsize"])
        with torch.no_grad():
            for k, w in p.items():
                lr_mult, decay_mult = (1.0, 1.0) if k.endswith(".weight") else (2.0, 0.0)
                velocity[k].mul_(SGD["momentum"]).add_(
                    lr * lr_mult * (w.grad + SGD["weight_decay"] * decay_mult * w))
                w.sub_(velocity[k])
    out["sgd_losses"] = np.array(losses)
    return out


def write(path):
    def dataset(g, name, data):  # compressed when large (a small one would grow)
        data = np.asarray(data)
        g.create_dataset(name, data=data, **(dict(compression="gzip", compression_opts=9, shuffle=True)
                                             if data.size >= 4096 else {}))

    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(torch=str(torch.__version__), numpy=np.__version__, num_classes=NUM_CLASSES,
                       dropout=DROPOUT, steps=STEPS, written_by="bench/torch_reference.py",
                       **{f"sgd_{k}": v for k, v in SGD.items()})
        for seed, (case, (variant, size, widths)) in enumerate(CASES.items()):
            r = run_case(variant, size, widths, seed)
            g = f.create_group(case)
            g.attrs.update(variant=variant, input_size=size, widths=widths)
            for key in ("x", "labels", "logits", "loss", "sgd_losses"):
                dataset(g, key, r[key])
            for group in ("masks", "params", "grads"):
                for k, v in r[group].items():
                    dataset(g, f"{group}/{k}", v)
            print(f"{case}: loss {r['loss']:.6f}, SGD losses {np.round(r['sgd_losses'], 6).tolist()}")
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                  "tests", "data", "torch_reference.h5"),
                    help="the HDF5 file to write (default tests/data/torch_reference.h5)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    write(args.out)


if __name__ == "__main__":
    main()
