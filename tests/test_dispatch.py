"""The dispatch (backend.dispatched) reads an op's arguments by name: every dispatched op of
alexnet_np.ops, called with positional, keyword or mixed arguments, picks the same
implementation and returns the same result, under the fast CPU kernels (Winograd included),
the reference kernels and, where a GPU is present, the CUDA kernels. Also: every twin has its
reference's parameters, so it receives keyword arguments as the reference would."""
import ast
import dataclasses
import inspect
import os

import numpy as np
import pytest

from alexnet_np import cpu_kernels, ops, winograd
from alexnet_np.backend import (RUNTIME, _import_cupy, cpu_kernels_name, dispatched, kernels_used,
                                reset_kernels_used, set_cpu_kernels, set_winograd, to_numpy)

DISPATCHED = sorted(name for name, f in vars(ops).items() if callable(f) and hasattr(f, "reference"))
cp = _import_cupy()


# ----------------------------------------------------------------------------- one call of each op
def _conv_forward_args(rng, dtype, to, variant):
    if variant == "3x3 stride 1":     # conv3-conv5's case: Winograd under the fast CPU kernels
        x, w = rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((6, 2, 3, 3))
        stride, pad, groups = 1, 1, 2
    else:                             # conv1's case: im2col + GEMM everywhere
        x, w = rng.standard_normal((2, 3, 23, 22)), rng.standard_normal((4, 3, 11, 11))
        stride, pad, groups = 4, 0, 1
    b = rng.standard_normal(w.shape[0])
    return dict(x=to(x, dtype), w=to(w, dtype), b=to(b, dtype), stride=stride, pad=pad, groups=groups,
                train=True, buffers={})


def _conv_backward_args(rng, dtype, to, variant):
    f = _conv_forward_args(rng, dtype, to, variant)
    out, cache = ops.conv_forward(**f)            # the cache of the algorithm this mode runs
    return dict(dout=to(rng.standard_normal(out.shape), dtype), cache=cache, w=f["w"],
                stride=f["stride"], pad=f["pad"], groups=f["groups"], dw=f["w"] * 0, db=f["b"] * 0,
                need_dx=True, buffers={})


def _pool_args(rng, dtype, to, variant):
    return dict(x=to(rng.standard_normal((2, 3, 8, 7)), dtype), kernel=3, stride=2, ceil_mode=True,
                buffers={})


def _maxpool_backward_args(rng, dtype, to, variant):
    x = rng.standard_normal((2, 3, 8, 7)).astype(dtype)
    out, argmax = ops.maxpool_forward.reference(x, 3, 2, True)
    return dict(dout=to(rng.standard_normal(out.shape), dtype), argmax=to(argmax, np.int8),
                x_shape=x.shape, kernel=3, stride=2, buffers={})


def _lrn_forward_args(rng, dtype, to, variant):
    return dict(x=to(rng.standard_normal((2, 7, 4, 5)), dtype), size=5, alpha=0.5, beta=0.75, k=2.0,
                buffers={})


def _lrn_backward_args(rng, dtype, to, variant):
    x = rng.standard_normal((2, 7, 4, 5)).astype(dtype)
    y, scale = ops.lrn_forward.reference(x, 5, 0.5, 0.75, 2.0)
    return dict(dout=to(rng.standard_normal(x.shape), dtype), x=to(x, dtype), y=to(y, dtype),
                scale=to(scale, dtype), size=5, alpha=0.5, beta=0.75, buffers={})


def _im2col_args(rng, dtype, to, variant):
    return dict(x=to(rng.standard_normal((2, 3, 7, 6)), dtype), kh=3, kw=3, stride=2, pad=1, buffers={})


def _col2im_args(rng, dtype, to, variant):     # x (2, 3, 7, 6) -> Ho, Wo = 4, 3
    return dict(cols=to(rng.standard_normal((27, 2 * 4 * 3)), dtype), x_shape=(2, 3, 7, 6), kh=3, kw=3,
                stride=2, pad=1, buffers={})


EXAMPLES = {  # op -> (its variants, the function that makes one call's arguments in signature order)
    "im2col": ((None,), _im2col_args),
    "col2im": ((None,), _col2im_args),
    "conv_forward": (("3x3 stride 1", "11x11 stride 4"), _conv_forward_args),
    "conv_backward": (("3x3 stride 1", "11x11 stride 4"), _conv_backward_args),
    "maxpool_forward": ((None,), _pool_args),
    "maxpool": ((None,), _pool_args),
    "maxpool_backward": ((None,), _maxpool_backward_args),
    "lrn_forward": ((None,), _lrn_forward_args),
    "lrn_backward": ((None,), _lrn_backward_args),
    "dropout_mask": ((None,), lambda rng, dtype, to, v: dict(
        x=to(rng.standard_normal((3, 50)), dtype), key=123456789, p=0.3)),
    "relu_forward": ((None,), lambda rng, dtype, to, v: dict(
        x=to(rng.standard_normal((4, 9)), dtype), inplace=True)),
    "relu_backward": ((None,), lambda rng, dtype, to, v: dict(
        dout=to(rng.standard_normal((4, 9)), dtype), y=to(np.maximum(rng.standard_normal((4, 9)), 0), dtype))),
    "dropout_apply": ((None,), lambda rng, dtype, to, v: dict(
        x=to(rng.standard_normal((4, 9)), dtype), mask=to(rng.integers(0, 2, (4, 9)), dtype), scale=2.5)),
    "softmax_cross_entropy": ((None,), lambda rng, dtype, to, v: dict(
        logits=to(rng.standard_normal((6, 3)), dtype), labels=to(rng.integers(0, 3, 6), np.int64),
        weights=to(rng.uniform(0.5, 2.0, 3), dtype))),
    "sgd_update": ((None,), lambda rng, dtype, to, v: dict(
        w=to(rng.standard_normal((5, 4)), dtype), grad=to(rng.standard_normal((5, 4)), dtype),
        v=to(rng.standard_normal((5, 4)), dtype), lr=0.01, momentum=0.9, weight_decay=5e-4)),
}
CASES = [(op, variant) for op in sorted(EXAMPLES) for variant in EXAMPLES[op][0]]


def test_every_dispatched_op_has_an_example():
    """DISPATCHED is read from the module: a new dispatched op without an example here fails."""
    assert len(DISPATCHED) >= 15
    assert set(EXAMPLES) == set(DISPATCHED)
    for name in DISPATCHED:  # the examples give every parameter, in the signature's order
        names = list(inspect.signature(getattr(ops, name).reference).parameters)
        for variant in EXAMPLES[name][0]:
            args = EXAMPLES[name][1](np.random.default_rng(0), np.float64, np.asarray, variant)
            assert list(args) == names, name


# ----------------------------------------------------------------------------- calling styles
MODES = ["fast", "reference", pytest.param("cuda", marks=pytest.mark.skipif(
    cp is None, reason="CuPy with a CUDA GPU is not available: the CUDA twins' dispatch is not exercised"))]


@pytest.fixture
def mode(request, monkeypatch):
    """Run under one kernel choice ("fast" with Winograd on, "reference", or CuPy arrays);
    the settings return after the test."""
    monkeypatch.setattr(RUNTIME, "winograd", RUNTIME.winograd)
    previous = cpu_kernels_name()
    set_cpu_kernels("reference" if request.param == "reference" else "fast")
    set_winograd(True)
    yield request.param
    set_cpu_kernels(previous)


def expected_implementation(op, variant, mode):
    if op in ("conv_forward", "conv_backward"):
        return "Winograd" if (mode, variant) == ("fast", "3x3 stride 1") else "im2col + GEMM"
    if mode == "cuda":
        return "CUDA"
    return "fast CPU" if mode == "fast" and op in cpu_kernels.__all__ else "reference"


def snapshot(value):
    """A host copy of a result (arrays, tuples, ConvCache records, scalars) to compare later."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [snapshot(v) for v in value]
    if dataclasses.is_dataclass(value):
        return {f.name: snapshot(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):   # buffers: their arrays are compared as the results they are
        return None
    return to_numpy(value).copy()


def assert_same(a, b, where):
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            assert_same(u, v, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b, where


STYLES = {
    "positional": lambda op, a: op(*a.values()),
    "keywords": lambda op, a: op(**dict(reversed(list(a.items())))),       # in another order, too
    "first positional, rest keywords": lambda op, a: op(*list(a.values())[:1], **dict(list(a.items())[1:])),
    "first half positional": lambda op, a: op(*list(a.values())[:len(a) // 2], **dict(list(a.items())[len(a) // 2:])),
}


@pytest.mark.parametrize("mode", MODES, indirect=True)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("op_name, variant", CASES, ids=[f"{o}-{v}" if v else o for o, v in CASES])
def test_positional_and_keyword_calls_run_the_same_implementation(op_name, variant, dtype, mode):
    """Each style gets fresh, identical inputs (some ops write into their arguments); results,
    the arguments written in place and the implementations counted must all agree, and the
    implementation must be the one this mode promises for this op."""
    op = getattr(ops, op_name)
    to = (lambda a, dt: cp.asarray(np.asarray(a, dt))) if mode == "cuda" else (lambda a, dt: np.asarray(a, dt))
    seen = {}
    for style, call in STYLES.items():
        args = EXAMPLES[op_name][1](np.random.default_rng(7), dtype, to, variant)
        reset_kernels_used()
        result = call(op, args)
        used = kernels_used()
        seen[style] = (snapshot(result), snapshot(list(args.values())), used.uses)
        assert (op_name, expected_implementation(op_name, variant, mode)) in \
            {(u.op, u.implementation) for u in used.uses}, f"{style}: {used.summary()}"
    (first, (result0, args0, uses0)), *rest = seen.items()
    for style, (result, args, uses) in rest:
        assert_same(result, result0, f"{style} vs {first}: result")
        assert_same(args, args0, f"{style} vs {first}: arguments after the call")
        assert uses == uses0, f"{style} vs {first}"


def test_reference_kernels_from_the_environment(monkeypatch):
    """ALEXNET_NP_CPU_KERNELS=reference, read at the first dispatch, sends keyword calls to the
    reference bodies as it does positional ones."""
    previous = cpu_kernels_name()
    monkeypatch.setenv("ALEXNET_NP_CPU_KERNELS", "reference")
    monkeypatch.setattr(RUNTIME, "cpu_kernels", None)
    try:
        x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
        reset_kernels_used()
        by_name = ops.maxpool_forward(x=x, kernel=3, stride=2)
        by_position = ops.maxpool_forward(x, 3, 2)
        assert {(u.op, u.implementation, u.calls) for u in kernels_used().uses} == {
            ("maxpool_forward", "reference", 2)}
        assert cpu_kernels_name() == "reference"
        for a, b in zip(by_name, by_position):
            np.testing.assert_array_equal(a, b)
    finally:
        set_cpu_kernels(previous)


# ----------------------------------------------------------------------------- errors
def test_a_missing_deciding_argument_is_a_type_error_naming_it():
    x = np.zeros((1, 1, 5, 5))
    with pytest.raises(TypeError, match="conv_forward.*'stride'"):
        ops.conv_forward(x, w=np.zeros((1, 1, 3, 3)), b=np.zeros(1), pad=1, groups=1)
    with pytest.raises(TypeError, match="conv_backward.*'cache'"):
        ops.conv_backward(x, w=np.zeros((1, 1, 3, 3)), stride=1, pad=1, groups=1, dw=None, db=None)
    with pytest.raises(TypeError, match="relu_forward.*'x'"):
        ops.relu_forward(inplace=True)
    with pytest.raises(TypeError):   # an unknown keyword reaches the implementation, which refuses it
        ops.relu_forward(np.zeros(3), in_place=True)


def test_dispatched_ops_must_name_their_parameters():
    with pytest.raises(TypeError, match="named parameters"):
        dispatched(lambda x, *rest: x)
    with pytest.raises(TypeError, match="named parameters"):
        dispatched(lambda x, **options: x)


# ----------------------------------------------------------------------------- twins' signatures
def parameters(fn):
    """(name, kind, default) of each parameter: what keyword calls depend on (not annotations)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_cpu_and_winograd_twins_take_the_references_parameters():
    for name in cpu_kernels.__all__:
        assert parameters(getattr(cpu_kernels, name)) == parameters(getattr(ops, name).reference), name
    for name in ("conv_forward", "conv_backward"):
        assert parameters(getattr(winograd, name)) == parameters(getattr(ops, name).reference), name


def test_cuda_twins_take_the_references_parameters():
    """Read from the source, so that it runs without CuPy: a CUDA twin whose parameter names
    or defaults differ from its reference's would break keyword calls on the GPU only."""
    path = os.path.join(os.path.dirname(ops.__file__), "cuda_kernels.py")
    tree = ast.parse(open(path, encoding="utf-8").read())
    twins = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef) and not f.name.startswith("_")}
    assert set(twins) == set(DISPATCHED) - {"conv_forward", "conv_backward"}
    for name, f in twins.items():
        ref = [(p.name, p.default) for p in inspect.signature(getattr(ops, name).reference).parameters.values()]
        args, required = f.args.args, len(f.args.args) - len(f.args.defaults)
        got = [(a.arg, inspect.Parameter.empty) for a in args[:required]] + \
              [(a.arg, ast.literal_eval(d)) for a, d in zip(args[required:], f.args.defaults)]
        assert got == ref and not f.args.kwonlyargs and f.args.vararg is None and f.args.kwarg is None, name
