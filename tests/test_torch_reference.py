"""alexnet_np against PyTorch, without PyTorch: the reference file tests/data/torch_reference.h5,
written with PyTorch by bench/torch_reference.py (llm.c's test_gpt2 recipe).

For bvlc_alexnet at 227 x 227 and at 119 x 119 (where ceil-mode pooling changes the sizes)
and torchvision's AlexNet at 224 x 224, at miniature widths, in float64: the training-mode
logits, the loss and every parameter gradient from the file's weights, inputs and dropout
masks, and the losses of four steps of Caffe's SGD. Each tensor's max difference is printed
(``pytest -s`` shows them), with both the fast CPU kernels (Winograd for conv3-conv5) and the
reference ones."""
from pathlib import Path

import h5py
import numpy as np
import pytest

from alexnet_np import SGD, AlexNet, SoftmaxCrossEntropy
from alexnet_np.backend import cpu_kernels_name, set_cpu_kernels
from alexnet_np.model import DEFAULT_WIDTHS
from alexnet_np.ops import conv_out_size, pool_out_size

REFERENCE = Path(__file__).parent / "data" / "torch_reference.h5"
CASES = ("caffe_227", "caffe_119", "torchvision_224")
TOLERANCE = 1e-10  # float64 against float64: sums in another order (Winograd: other sums); measured ~1e-15


def load(case):
    with h5py.File(REFERENCE, "r") as f:
        g = f[case]
        ref = {key: g[key][()] for key in ("x", "labels", "logits", "loss", "sgd_losses")}
        for group in ("masks", "params", "grads"):
            ref[group] = {k: v[()] for k, v in g[group].items()}
        ref.update(variant=str(g.attrs["variant"]), input_size=int(g.attrs["input_size"]),
                   widths=tuple(int(w) for w in g.attrs["widths"]), **dict(f.attrs))
    return ref


def build(ref):
    """The file's network in alexnet_np: its weights, dropout by its fixed masks."""
    net = AlexNet(int(ref["num_classes"]), variant=ref["variant"], dropout=float(ref["dropout"]),
                  input_size=ref["input_size"], widths=ref["widths"], dtype=np.float64)
    assert set(net.params) == set(ref["params"])
    for key, value in ref["params"].items():
        net.params[key][...] = value
    for name in ("drop6", "drop7"):
        net.layer(name).fixed_mask = ref["masks"][name]
    return net


def compare(what, ours, theirs):
    """Print the max difference of one tensor, and return it relative to the tensor's scale."""
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape, (what, ours.shape, theirs.shape)
    diff = float(np.abs(ours - theirs).max())
    scale = max(float(np.abs(theirs).max()), 1e-300)
    print(f"  {what:20s} max |ours - torch| = {diff:.3e}   (max |torch| = {scale:.3e})")
    return diff / scale


@pytest.fixture(params=["fast", "reference"])
def kernels(request):
    previous = cpu_kernels_name()
    set_cpu_kernels(request.param)
    yield request.param
    set_cpu_kernels(previous)


def test_reference_file_is_small_and_complete():
    assert REFERENCE.stat().st_size < 2e6
    for case in CASES:
        ref = load(case)
        assert ref["x"].dtype == np.float64 and ref["widths"] != DEFAULT_WIDTHS[ref["variant"]]
        assert set(ref["grads"]) == set(ref["params"]) and len(ref["params"]) == 16
        assert len(ref["sgd_losses"]) == int(ref["steps"]) >= 3
    # at 119 x 119, conv1's 28 x 28 output pools to 14 in Caffe's ceil mode, 13 in floor mode
    assert pool_out_size(conv_out_size(119, 11, 4, 0), 3, 2, 0, True) == 14
    assert pool_out_size(conv_out_size(119, 11, 4, 0), 3, 2, 0, False) == 13


@pytest.mark.parametrize("case", CASES)
def test_logits_loss_and_gradients_match_pytorch(case, kernels):
    ref = load(case)
    net = build(ref)
    print(f"\n{case}, {kernels} CPU kernels:")
    logits = net.forward(ref["x"], train=True)
    loss, dlogits = SoftmaxCrossEntropy()(logits, ref["labels"])
    net.backward(dlogits)
    errors = {"logits": compare("logits", logits, ref["logits"]),
              "loss": compare("loss", loss, ref["loss"])}
    for key in ref["grads"]:
        errors[key] = compare(f"d {key}", net.grads[key], ref["grads"][key])
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOLERANCE, (worst, errors[worst])


@pytest.mark.parametrize("case", CASES)
def test_caffe_sgd_losses_match_pytorch(case, kernels):
    """Caffe's update (lr inside the momentum history, lr_mult 2 and no decay for biases, the
    lr stepped down by gamma) from the same weights on the same batch gives the same losses."""
    ref = load(case)
    net = build(ref)
    opt = SGD(net, base_lr=float(ref["sgd_base_lr"]), momentum=float(ref["sgd_momentum"]),
              weight_decay=float(ref["sgd_weight_decay"]), gamma=float(ref["sgd_gamma"]),
              stepsize=int(ref["sgd_stepsize"]))
    lossf = SoftmaxCrossEntropy()
    losses = []
    for _ in range(int(ref["steps"])):
        loss, d = lossf(net.forward(ref["x"], train=True), ref["labels"])
        losses.append(float(loss))
        net.backward(d)
        opt.step()
    print(f"\n{case}, {kernels} CPU kernels: SGD losses {np.round(losses, 6).tolist()}")
    assert len(set(np.round(ref["sgd_losses"], 3))) == len(losses)  # every step changes the loss
    assert compare("SGD losses", losses, ref["sgd_losses"]) < TOLERANCE
