"""The one place where implementations are chosen, and the runtime state behind them.

Every layer is written once against an *array module* ``xp`` with NumPy's API.
Which module that is gets decided here, and only here:

* ``ALEXNET_NP_BACKEND=numpy`` (default) -- NumPy on the CPU;
* ``ALEXNET_NP_BACKEND=cupy`` -- CuPy on the current CUDA device (error if unavailable);
* ``ALEXNET_NP_BACKEND=auto`` -- CuPy when it imports and sees a GPU, else NumPy.

``set_backend(name)`` does the same from code (``run.py --device`` calls it).
Importing this package never imports CuPy unless one of those asks for it.

The primitives in ops.py are decorated with :func:`dispatched`: the function
body is the plain *reference* version (the readable definition, and the
tests' oracle), and the decorator picks, call by call, the implementation that
runs, from the type of the first argument and the settings (the op may be
called with positional or keyword arguments; the choice reads them by name):

* a CuPy array: the CUDA twin of the same name in :mod:`alexnet_np.cuda_kernels`;
* a NumPy array, ``ALEXNET_NP_CPU_KERNELS=fast`` (default): the fast CPU twin of
  the same name in :mod:`alexnet_np.cpu_kernels` when one exists;
* ``ALEXNET_NP_CPU_KERNELS=reference`` (or no twin): the reference body.

``set_cpu_kernels(name)`` does the same from code. No layer ever branches on
"am I on the GPU?". The convolution has one more implementation, a different
algorithm rather than a twin: with the fast CPU kernels, 3x3 stride-1
convolutions of NumPy arrays (conv3 to conv5) run Winograd's F(2x2, 3x3)
(:mod:`alexnet_np.winograd`) instead of im2col + GEMM; ``ALEXNET_NP_WINOGRAD=0``
or ``set_winograd(False)`` switches it off. Its results agree with im2col's to
float rounding, not bit for bit.

Every dispatched call is counted by (op, implementation): :func:`kernels_used`
says which implementations a run actually used (reference / fast CPU /
Winograd / CUDA).

All of this state -- the array module, the kernel choice, the Winograd switch,
the CPU worker threads, the scratch buffers and the counts -- lives in one
:class:`Runtime` object, ``RUNTIME``; the module-level functions below are thin
wrappers over it.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import os
import queue
import threading
from dataclasses import dataclass

import numpy as np

_VALID = ("numpy", "cupy", "auto")
_CPU_KERNELS = ("fast", "reference")
# What kernels_used() reports: the primitives' implementations, then the convolution's algorithms.
IMPLEMENTATIONS = ("reference", "fast CPU", "CUDA", "im2col + GEMM", "Winograd")


def _import_cupy():
    """Return the cupy module if it imports and a CUDA device is visible, else None."""
    try:
        cupy = importlib.import_module("cupy")
        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy
    except Exception:  # ImportError, CUDA driver errors, missing libraries ...
        return None
    return None


def usable_cores() -> int:
    """The number of CPU cores this process may run on (at least 1).

    That is the size of its affinity mask (``os.sched_getaffinity``), which a
    batch system's CPU binding, ``taskset`` or a container's cpuset narrow, and
    not the machine's core count: on a cluster node shared by several jobs the
    two differ, and threads beyond the mask only queue for the same cores.
    Where the platform has no affinity call (macOS, Windows): every core,
    ``os.cpu_count()``. OpenBLAS counts its default thread number the same way.
    """
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _thread_count() -> int:
    """As many threads as BLAS uses: OPENBLAS_NUM_THREADS or OMP_NUM_THREADS when set,
    else :func:`usable_cores` (OpenBLAS's own default)."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return usable_cores()


def is_gpu_array(a) -> bool:
    """True for a CuPy array; never imports CuPy to find out."""
    return type(a).__module__.startswith("cupy")


def array_module(a):
    """The module (numpy or cupy) that owns array ``a``."""
    if is_gpu_array(a):
        return importlib.import_module("cupy")
    return np


@dataclass(frozen=True)
class KernelUse:
    """How often one op ran one implementation (``implementation`` one of IMPLEMENTATIONS)."""
    op: str
    implementation: str
    calls: int


@dataclass(frozen=True)
class KernelsUsed:
    """Which implementation each dispatched op ran since the counts were last reset."""
    uses: tuple  # of KernelUse, sorted by op and implementation

    @property
    def implementations(self) -> tuple:
        """The implementations that ran at least once, in IMPLEMENTATIONS' order."""
        ran = {u.implementation for u in self.uses}
        return tuple(i for i in IMPLEMENTATIONS if i in ran)

    def ops(self, implementation: str) -> tuple:
        """The ops that ran ``implementation`` at least once."""
        return tuple(u.op for u in self.uses if u.implementation == implementation)

    def summary(self) -> str:
        """One line per implementation that ran, e.g. ``fast CPU: col2im, im2col, ...``."""
        if not self.uses:
            return "no dispatched op has run"
        return "\n".join(f"{i}: {', '.join(self.ops(i))}" for i in self.implementations)


class Runtime:
    """Everything alexnet_np decides or keeps at run time, in one object.

    Lifetime: one per process, ``RUNTIME``, made when alexnet_np is imported,
    with no setting resolved yet. Each setting is resolved at its first use --
    from its environment variable (ALEXNET_NP_BACKEND, ALEXNET_NP_CPU_KERNELS,
    ALEXNET_NP_WINOGRAD) unless a ``set_*`` call chose it first -- and holds
    until the next ``set_*``. The CPU worker threads start at the first
    :meth:`parallel` call and live as long as the process (a forked child starts
    its own). Scratch buffers are per thread, grow to the largest request and
    live as long as the process. The kernel counts grow from import (or from
    :meth:`reset_counts`).

    Arrays that must outlive a call (a layer's outputs, its cached tiles) are not
    kept here: each layer keeps them in its own ``buffers`` (see :func:`kept`).
    """

    def __init__(self):
        self.xp = None            # numpy or cupy
        self.cpu_kernels = None   # "fast" or "reference"
        self.winograd = None      # whether 3x3 stride-1 NumPy convolutions may use Winograd
        self.threads = _thread_count()
        self._twins = None        # op name -> fast CPU twin; rebuilt after set_cpu_kernels
        self._modules = {}        # "fast CPU" / "Winograd" / "CUDA" -> the module of those twins
        self._tasks = None        # queue of (work, lo, hi, done) read by the worker threads
        self._tasks_pid = None    # the process that started the workers
        self._scratch = threading.local()
        self._counts = {}         # (op, implementation) -> calls
        self._counts_lock = threading.Lock()

    # -------------------------------------------------------------- settings
    def set_backend(self, name: str):
        name = str(name).lower()
        name = {"cpu": "numpy", "gpu": "cupy", "cuda": "cupy"}.get(name, name)
        if name not in _VALID:
            raise ValueError(f"backend must be one of {_VALID} (or cpu/gpu), got {name!r}")
        if name == "numpy":
            self.xp = np
        else:
            cupy = _import_cupy()
            if cupy is None and name == "cupy":
                raise RuntimeError(
                    "backend 'cupy' requested but CuPy is not installed or sees no CUDA GPU; "
                    "install the wheel named in requirements-gpu.txt, or use the numpy backend")
            self.xp = cupy if cupy is not None else np
        return self.xp

    def array_module(self):
        if self.xp is None:
            self.set_backend(os.environ.get("ALEXNET_NP_BACKEND", "numpy"))
        return self.xp

    def set_cpu_kernels(self, name: str) -> str:
        name = str(name).lower()
        if name not in _CPU_KERNELS:
            raise ValueError(f"CPU kernels must be one of {_CPU_KERNELS}, got {name!r}")
        self.cpu_kernels, self._twins = name, None
        return name

    def cpu_kernels_name(self) -> str:
        if self.cpu_kernels is None:
            self.set_cpu_kernels(os.environ.get("ALEXNET_NP_CPU_KERNELS", "fast"))
        return self.cpu_kernels

    def set_winograd(self, enabled: bool) -> bool:
        self.winograd = bool(enabled)
        return self.winograd

    def winograd_enabled(self) -> bool:
        if self.winograd is None:
            value = os.environ.get("ALEXNET_NP_WINOGRAD", "").strip().lower()
            if value not in ("", "1", "on", "true", "yes", "0", "off", "false", "no"):
                raise ValueError(f"ALEXNET_NP_WINOGRAD must be 1/on/true/yes or 0/off/false/no, "
                                 f"got {value!r}")
            self.set_winograd(value not in ("0", "off", "false", "no"))
        return self.winograd

    # -------------------------------------------------------------- dispatch
    def conv_algorithm(self, a, kernel: int, stride: int) -> str:
        """``"winograd"`` for a NumPy array, 3x3 kernel, stride 1, the fast CPU kernels and
        Winograd allowed; else ``"im2col"`` (the reference, and the CuPy path)."""
        if (kernel == 3 and stride == 1 and not is_gpu_array(a) and self.winograd_enabled()
                and self.cpu_kernels_name() == "fast"):
            return "winograd"
        return "im2col"

    def implementation(self, op: OpSignature, reference, args, kwargs):
        """(function, implementation) that runs ``op`` on the call's ``args`` and ``kwargs``
        (see the module docstring); ``reference`` is the op's reference body. The arguments
        that decide are read by name, so positional and keyword calls choose alike."""
        lead = op.value(op.first, args, kwargs)
        if op.name in ("conv_forward", "conv_backward"):
            if op.name == "conv_backward":  # the algorithm its forward ran, as the cache records
                algorithm = op.value("cache", args, kwargs).algorithm
            else:
                algorithm = self.conv_algorithm(lead, op.value("w", args, kwargs).shape[-1],
                                                op.value("stride", args, kwargs))
            if algorithm == "winograd":
                return getattr(self._implementations("Winograd"), op.name), "Winograd"
            return reference, "im2col + GEMM"  # whose im2col and col2im are dispatched in turn
        if is_gpu_array(lead):
            return getattr(self._implementations("CUDA"), op.name), "CUDA"
        if self.cpu_kernels_name() == "reference":
            return reference, "reference"
        if self._twins is None:
            fast = self._implementations("fast CPU")
            self._twins = {n: getattr(fast, n) for n in fast.__all__}
        twin = self._twins.get(op.name)
        return (twin, "fast CPU") if twin is not None else (reference, "reference")

    def _implementations(self, family: str):
        """The module of one family of twins -- ``"fast CPU"`` (cpu_kernels), ``"Winograd"``
        (winograd) or ``"CUDA"`` (cuda_kernels) -- imported at its first use."""
        module = self._modules.get(family)
        if module is None:
            # The one place where this module reaches the implementations, and on purpose only
            # at the first call: they are written on ops.py (its sizes, its records, its
            # references as fallbacks), whose functions `dispatched` below decorates while
            # ops.py loads, so importing them while this module loads would be an import
            # cycle. cuda_kernels also imports CuPy: it loads only once a CuPy array reaches
            # an op, so a CPU-only install never touches CuPy.
            if family == "CUDA":
                from . import cuda_kernels as module
            else:
                from . import cpu_kernels, winograd
                module = cpu_kernels if family == "fast CPU" else winograd
            self._modules[family] = module
        return module

    def count(self, op: str, implementation: str):
        key = (op, implementation)
        with self._counts_lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def kernels_used(self) -> KernelsUsed:
        with self._counts_lock:
            uses = [KernelUse(op, impl, n) for (op, impl), n in sorted(self._counts.items())]
        return KernelsUsed(tuple(uses))

    def reset_counts(self):
        with self._counts_lock:
            self._counts.clear()

    # -------------------------------------------------------------- threads, scratch
    def parallel(self, work, n: int):
        """Run ``work(lo, hi)`` on ``threads`` contiguous shares of range(n), one per worker
        thread, and wait for all of them (NumPy releases the GIL in its loops and copies).
        With one thread, or nothing to share, the caller runs it."""
        if self.threads == 1 or n <= 1:
            work(0, n)
            return
        if self._tasks_pid != os.getpid():
            self._tasks, self._tasks_pid = queue.SimpleQueue(), os.getpid()
            for _ in range(self.threads):
                threading.Thread(target=_worker, args=(self._tasks,), daemon=True).start()
        done = queue.SimpleQueue()
        bounds = [n * t // self.threads for t in range(self.threads + 1)]
        for t in range(self.threads):
            self._tasks.put((work, bounds[t], bounds[t + 1], done))
        errors = [done.get() for _ in range(self.threads)]
        for e in errors:
            if e is not None:
                raise e

    def scratch(self, shape, dtype, m, slot: str):
        """A scratch array of this thread, array module, dtype and ``slot``, grown to the
        largest request (see the module-level :func:`scratch`)."""
        key = (m.__name__, np.dtype(dtype).str, slot)
        store = getattr(self._scratch, "buffers", None)
        if store is None:
            store = self._scratch.buffers = {}
        size = int(np.prod(shape))
        if key not in store or store[key].size < size:
            store[key] = m.empty(size, dtype=dtype)
        return store[key][:size].reshape(shape)


def _worker(tasks):
    while True:
        work, lo, hi, done = tasks.get()
        try:
            work(lo, hi)
            done.put(None)
        except BaseException as e:  # noqa: BLE001 -- handed to the caller, re-raised there
            done.put(e)


RUNTIME = Runtime()


# ----------------------------------------------------------------------------- thin wrappers
def set_backend(name: str):
    """Select the array module: ``"numpy"``, ``"cupy"`` or ``"auto"``; returns it."""
    return RUNTIME.set_backend(name)


def xp():
    """The array module chosen for new arrays (NumPy unless configured otherwise)."""
    return RUNTIME.array_module()


def backend_name() -> str:
    return "cupy" if xp() is not np else "numpy"


def cupy_available() -> bool:
    """Whether CuPy imports and sees a CUDA GPU (what ``set_backend("cupy")`` needs)."""
    return _import_cupy() is not None


def device_name() -> str | None:
    """The GPU's name when the backend is CuPy, else None (for the records of a run)."""
    if backend_name() != "cupy":
        return None
    cupy = xp()
    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def set_cpu_kernels(name: str) -> str:
    """Select the CPU primitives: ``"fast"`` (alexnet_np.cpu_kernels where a twin exists)
    or ``"reference"`` (the plain bodies in ops.py); returns the name."""
    return RUNTIME.set_cpu_kernels(name)


def cpu_kernels_name() -> str:
    """``"fast"`` or ``"reference"``: which CPU primitives NumPy arrays get."""
    return RUNTIME.cpu_kernels_name()


def set_winograd(enabled: bool) -> bool:
    """Let the 3x3, stride-1 convolutions of NumPy arrays use Winograd's F(2x2, 3x3)
    (alexnet_np.winograd; on by default with the fast CPU kernels, env
    ``ALEXNET_NP_WINOGRAD=0`` turns it off); returns the setting."""
    return RUNTIME.set_winograd(enabled)


def winograd_enabled() -> bool:
    """Whether Winograd is allowed (``set_winograd``, else ALEXNET_NP_WINOGRAD, default on)."""
    return RUNTIME.winograd_enabled()


def conv_algorithm(a, kernel: int, stride: int) -> str:
    """How a convolution of array ``a`` runs: ``"winograd"`` (F(2x2, 3x3), a fast CPU path:
    NumPy array, 3x3 kernel, stride 1, fast CPU kernels, Winograd not switched off) or
    ``"im2col"`` (im2col + GEMM: the reference, and the CuPy path with its CUDA kernels)."""
    return RUNTIME.conv_algorithm(a, kernel, stride)


def kernels_used() -> KernelsUsed:
    """Which implementation (reference / fast CPU / Winograd / CUDA) each dispatched op ran
    since import or the last :func:`reset_kernels_used`, with call counts."""
    return RUNTIME.kernels_used()


def reset_kernels_used():
    """Start the counts of :func:`kernels_used` afresh (e.g. at the start of a training run)."""
    RUNTIME.reset_counts()


class OpSignature:
    """Where the arguments of one dispatched op arrive: its reference's parameters, by name.

    Made once per op, when :func:`dispatched` decorates it, from the reference's
    signature (which every twin shares). :meth:`value` is how the dispatch reads
    an argument: a tuple index or a dict lookup, where ``inspect.Signature.bind``
    would cost several microseconds on every call of the hot path.
    """

    __slots__ = ("name", "first", "_position", "_defaults")

    def __init__(self, fn):
        params = inspect.signature(fn).parameters
        if any(p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params.values()):
            raise TypeError(f"{fn.__name__}: a dispatched op takes named parameters only "
                            f"(no *args, **kwargs or positional-only ones)")
        self.name = fn.__name__
        self.first = next(iter(params))   # the array whose type picks the implementation
        self._position = {n: i for i, (n, p) in enumerate(params.items())
                          if p.kind is p.POSITIONAL_OR_KEYWORD}
        self._defaults = {n: p.default for n, p in params.items() if p.default is not p.empty}

    def value(self, name: str, args: tuple, kwargs: dict):
        """The argument ``name`` of the call ``op(*args, **kwargs)``: passed by position, by
        keyword, or the default."""
        i = self._position.get(name, len(args))
        if i < len(args):
            return args[i]
        if name in kwargs:
            return kwargs[name]
        if name in self._defaults:
            return self._defaults[name]
        raise TypeError(f"{self.name}() missing required argument: {name!r}")


def dispatched(fn):
    """Decorator: the one place where an op's implementation is chosen, and counted.

    The decorated body is the reference. Each call runs the implementation that
    :meth:`Runtime.implementation` picks -- the CUDA twin for a CuPy first
    argument, the fast CPU twin, Winograd for the convolutions it applies to, or
    the reference -- and counts it for :func:`kernels_used`. The op takes its
    arguments by position, by keyword or both, as the reference's signature
    allows; the choice reads them by name (:class:`OpSignature`), and the chosen
    function gets them as they were passed. All twins have exactly the signature
    of the reference, so they can be tested against each other;
    ``dispatch.reference`` is the reference itself.
    """
    op = OpSignature(fn)

    @functools.wraps(fn)
    def dispatch(*args, **kwargs):
        impl, kind = RUNTIME.implementation(op, fn, args, kwargs)
        RUNTIME.count(op.name, kind)
        return impl(*args, **kwargs)

    dispatch.reference = fn
    return dispatch


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


def asarray(a, dtype=None):
    """Move/convert ``a`` to the chosen backend: a host array becomes a device array on CuPy,
    a device array comes back to the host on NumPy, an array already there is not copied
    (unless ``dtype`` asks for a conversion)."""
    m = xp()
    if m is np and is_gpu_array(a):
        a = a.get()
    return m.asarray(a, dtype=dtype)


def to_numpy(a) -> np.ndarray:
    """Bring an array back to the host as a NumPy array (no copy when it already is one)."""
    if is_gpu_array(a):
        return a.get()
    return np.asarray(a)


def parallel(a, work, n: int):
    """Run ``work(lo, hi)`` over all of range(n): for a NumPy array ``a`` split over the
    CPU worker threads (Runtime.parallel), for a CuPy array in one call (the GPU runs
    each operation in parallel already)."""
    if is_gpu_array(a):
        work(0, n)
        return
    RUNTIME.parallel(work, n)


def scratch(shape, dtype, m, slot: str = "gemm"):
    """A scratch array for a temporary that never outlives one call (the convolution's GEMM
    output, its transposed output gradient, Winograd's tile arrays, im2col's padded input).

    One buffer per thread, array module, dtype and ``slot`` (temporaries alive at
    the same time take different slots), shared by all layers and grown to the
    largest request: a fresh array of tens of megabytes costs a page fault and
    the kernel's zero-fill of every page, each step, more than the copy that
    fills it.
    """
    return RUNTIME.scratch(shape, dtype, m, slot)


def kept(buffers, key, shape, dtype, m):
    """``buffers[key]``, an array kept between calls by its owner (a layer's ``buffers``
    dict), allocated again only when the shape, dtype or array module changes; a fresh
    array when ``buffers`` is None.

    This is how the layers avoid a fresh array of tens of megabytes (a page fault
    and a zero-fill per page, each step) for their outputs: what a layer's forward
    or backward returns lives in its buffers and is overwritten by its next call
    of the same kind (copy it to keep it)."""
    if buffers is None:
        return m.empty(shape, dtype=dtype)
    a = buffers.get(key)
    if a is None or a.shape != tuple(shape) or a.dtype != dtype or array_module(a) is not m:
        a = buffers[key] = m.empty(shape, dtype=dtype)
    return a
