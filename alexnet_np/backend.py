"""The one place where the array module (NumPy or CuPy) is chosen.

Every layer is written once against an *array module* ``xp`` with NumPy's API.
Which module that is gets decided here, and only here:

* ``ALEXNET_NP_BACKEND=numpy`` (default) -- NumPy on the CPU;
* ``ALEXNET_NP_BACKEND=cupy`` -- CuPy on the current CUDA device (error if unavailable);
* ``ALEXNET_NP_BACKEND=auto`` -- CuPy when it imports and sees a GPU, else NumPy.

``set_backend(name)`` does the same from code (``run.py --device`` calls it).
Importing this package never imports CuPy unless one of those asks for it.

Operations that have a hand-written CUDA kernel are decorated with
:func:`gpu_twin`: the NumPy version is the function body, and the CuPy twin of
the same name in :mod:`alexnet_np.cuda_kernels` is picked *by the type of the
first argument*. No layer ever branches on "am I on the GPU?".

The same decorator picks the CPU version. The function bodies in ops.py are
the plain *reference* versions (the readable definitions, and the tests'
oracle); :mod:`alexnet_np.cpu_kernels` holds faster twins of some of them,
used for NumPy arrays by default:

* ``ALEXNET_NP_CPU_KERNELS=fast`` (default) -- the cpu_kernels twin when one exists;
* ``ALEXNET_NP_CPU_KERNELS=reference`` -- always the plain ops.py body (teaching, auditing).

``set_cpu_kernels(name)`` does the same from code.

One fast CPU path is a different algorithm rather than a twin: with the fast
kernels, the 3x3 stride-1 convolutions of NumPy arrays (conv3 to conv5) run
Winograd's F(2x2, 3x3) (:mod:`alexnet_np.winograd`) instead of im2col + GEMM;
:func:`conv_algorithm` decides, ``ALEXNET_NP_WINOGRAD=0`` or
``set_winograd(False)`` switches it off. The results agree with im2col's to
float rounding, not bit for bit.
"""
from __future__ import annotations

import functools
import importlib
import os
import threading

import numpy as np

_VALID = ("numpy", "cupy", "auto")
_xp = None  # the chosen module, resolved lazily on first use
_CPU_KERNELS = ("fast", "reference")
_cpu_kernels = None  # "fast" or "reference", resolved lazily on first use
_cpu_twins = None    # op name -> its cpu_kernels twin; built on first use, reset by set_cpu_kernels
_winograd = None     # whether NumPy 3x3 stride-1 convolutions use Winograd; resolved on first use
_scratch_store = threading.local()


def _import_cupy():
    """Return the cupy module if it imports and a CUDA device is visible, else None."""
    try:
        cupy = importlib.import_module("cupy")
        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy
    except Exception:  # ImportError, CUDA driver errors, missing libraries ...
        return None
    return None


def set_backend(name: str):
    """Select the array module: ``"numpy"``, ``"cupy"`` or ``"auto"``; returns it."""
    global _xp
    name = str(name).lower()
    if name in ("cpu",):
        name = "numpy"
    if name in ("gpu", "cuda"):
        name = "cupy"
    if name not in _VALID:
        raise ValueError(f"backend must be one of {_VALID} (or cpu/gpu), got {name!r}")
    if name == "numpy":
        _xp = np
    else:
        cupy = _import_cupy()
        if cupy is None and name == "cupy":
            raise RuntimeError(
                "backend 'cupy' requested but CuPy is not installed or sees no CUDA GPU; "
                "install the wheel named in requirements-gpu.txt, or use the numpy backend")
        _xp = cupy if cupy is not None else np
    return _xp


def xp():
    """The array module chosen for new arrays (NumPy unless configured otherwise)."""
    if _xp is None:
        set_backend(os.environ.get("ALEXNET_NP_BACKEND", "numpy"))
    return _xp


def enable_tf32(enabled: bool = True):
    """Let cuBLAS run float32 GEMMs on TF32 tensor cores (10-bit mantissa products, float32
    accumulation): faster, slightly less exact. Off by default; CuPy backend only."""
    cupy = _import_cupy()
    if cupy is None:
        raise RuntimeError("TF32 needs the CuPy backend and a CUDA GPU")
    from cupy_backends.cuda.libs import cublas
    # cuBLAS enum values; older CuPy builds do not export the TF32 name.
    mode = getattr(cublas, "CUBLAS_TF32_TENSOR_OP_MATH", 3) if enabled else getattr(cublas, "CUBLAS_DEFAULT_MATH", 0)
    cublas.setMathMode(cupy.cuda.device.get_cublas_handle(), mode)


def backend_name() -> str:
    return "cupy" if xp() is not np else "numpy"


def is_gpu_array(a) -> bool:
    """True for a CuPy array; never imports CuPy to find out."""
    return type(a).__module__.startswith("cupy")


def array_module(a):
    """The module (numpy or cupy) that owns array ``a``."""
    if is_gpu_array(a):
        return importlib.import_module("cupy")
    return np


def asarray(a, dtype=None):
    """Move/convert ``a`` to the chosen backend (a host array becomes a device array on CuPy)."""
    return xp().asarray(a, dtype=dtype)


def to_numpy(a) -> np.ndarray:
    """Bring an array back to the host as a NumPy array (no copy when it already is one)."""
    if is_gpu_array(a):
        return a.get()
    return np.asarray(a)


def set_cpu_kernels(name: str) -> str:
    """Select the CPU primitives: ``"fast"`` (alexnet_np.cpu_kernels where a twin exists)
    or ``"reference"`` (the plain bodies in ops.py); returns the name."""
    global _cpu_kernels, _cpu_twins
    name = str(name).lower()
    if name not in _CPU_KERNELS:
        raise ValueError(f"CPU kernels must be one of {_CPU_KERNELS}, got {name!r}")
    _cpu_kernels, _cpu_twins = name, None
    return name


def cpu_kernels_name() -> str:
    """``"fast"`` or ``"reference"``: which CPU primitives NumPy arrays get."""
    if _cpu_kernels is None:
        set_cpu_kernels(os.environ.get("ALEXNET_NP_CPU_KERNELS", "fast"))
    return _cpu_kernels


def _cpu_twin(name):
    """The fast CPU twin of op ``name``, or None (reference mode, or no twin).

    All twins are looked up at once, on the first call: after that every call
    takes the same path (the model's call-count test relies on that)."""
    global _cpu_twins
    if _cpu_twins is None:
        twins = {}
        if cpu_kernels_name() == "fast":
            from . import cpu_kernels  # imported once a NumPy array reaches an op
            twins = {n: getattr(cpu_kernels, n) for n in cpu_kernels.__all__}
        _cpu_twins = twins
    return _cpu_twins.get(name)


def gpu_twin(fn):
    """Decorator: the one place where an op's implementation is chosen.

    The decorated body is the NumPy reference. A CuPy first argument goes to the
    twin of the same name in ``alexnet_np.cuda_kernels``; a NumPy one to the twin
    in ``alexnet_np.cpu_kernels`` when it exists and the fast CPU kernels are
    selected (the default), else to the reference. All twins have exactly the
    signature of the reference, so they can be tested against each other;
    ``dispatch.numpy_impl`` is the reference itself.
    """
    name = fn.__name__

    @functools.wraps(fn)
    def dispatch(a, *args, **kwargs):
        if is_gpu_array(a):
            from . import cuda_kernels  # imported only once a CuPy array exists
            return getattr(cuda_kernels, name)(a, *args, **kwargs)
        return (_cpu_twin(name) or fn)(a, *args, **kwargs)

    dispatch.numpy_impl = fn
    return dispatch


def set_winograd(enabled: bool) -> bool:
    """Let the 3x3, stride-1 convolutions of NumPy arrays use Winograd's F(2x2, 3x3)
    (alexnet_np.winograd; on by default with the fast CPU kernels, env
    ``ALEXNET_NP_WINOGRAD=0`` turns it off); returns the setting."""
    global _winograd
    _winograd = bool(enabled)
    return _winograd


def winograd_enabled() -> bool:
    """Whether Winograd is allowed (``set_winograd``, else ALEXNET_NP_WINOGRAD, default on)."""
    if _winograd is None:
        value = os.environ.get("ALEXNET_NP_WINOGRAD", "").strip().lower()
        if value not in ("", "1", "on", "true", "yes", "0", "off", "false", "no"):
            raise ValueError(f"ALEXNET_NP_WINOGRAD must be 1/on/true/yes or 0/off/false/no, got {value!r}")
        set_winograd(value not in ("0", "off", "false", "no"))
    return _winograd


def conv_algorithm(a, kernel: int, stride: int) -> str:
    """How a convolution of array ``a`` runs: ``"winograd"`` (F(2x2, 3x3), a fast CPU path:
    NumPy array, 3x3 kernel, stride 1, fast CPU kernels, Winograd not switched off) or
    ``"im2col"`` (im2col + GEMM: the reference, and the CuPy path with its CUDA kernels)."""
    if (winograd_enabled() and kernel == 3 and stride == 1 and not is_gpu_array(a)
            and cpu_kernels_name() == "fast"):
        return "winograd"
    return "im2col"


def parallel(a, work, n: int):
    """Run ``work(lo, hi)`` over all of range(n): for a NumPy array ``a`` split over the
    CPU worker threads of alexnet_np.cpu_kernels (NumPy releases the GIL in its loops),
    for a CuPy array in one call (the GPU runs each operation in parallel already)."""
    if is_gpu_array(a):
        work(0, n)
        return
    from . import cpu_kernels
    cpu_kernels.parallel(work, n)


def scratch(shape, dtype, m, slot: str = "gemm"):
    """A scratch array for a temporary that never outlives one layer call (the convolution's
    GEMM output, its transposed output gradient, Winograd's tile arrays).

    One buffer per thread, array module, dtype and ``slot`` (temporaries alive at
    the same time take different slots), shared by all layers and grown to the
    largest request: a fresh array of tens of megabytes costs a page fault and
    the kernel's zero-fill of every page, each step, more than the copy that
    fills it.
    """
    key = (m.__name__, np.dtype(dtype).str, slot)
    store = getattr(_scratch_store, "buffers", None)
    if store is None:
        store = _scratch_store.buffers = {}
    size = int(np.prod(shape))
    if key not in store or store[key].size < size:
        store[key] = m.empty(size, dtype=dtype)
    return store[key][:size].reshape(shape)
