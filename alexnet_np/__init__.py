"""alexnet_np: a from-scratch AlexNet (Caffe bvlc_alexnet and torchvision variants)
with manual backprop and Caffe's SGD, on NumPy (CPU) or CuPy (GPU) from one code base.

    from alexnet_np import AlexNet, SGD, SoftmaxCrossEntropy, save_weights, load_weights
"""
import os

# After each GEMM, OpenBLAS's idle threads keep spinning on their cores (sched_yield, about
# 2^28 cycles by default) while the fast CPU kernels' threads need those cores for the next
# layer; on the 2-core development machine the training step took 7-23% less time with the
# spin cut to 2^4 cycles (back-to-back runs, bench/RESULTS.md). OpenBLAS reads this when it
# loads, so it takes effect only if this package is imported before NumPy (run.py and the
# benchmarks do that); a value set by the user wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from .backend import set_backend, backend_name, to_numpy, usable_cores
from .layers import (Conv2d, ReLU, LocalResponseNorm, MaxPool2d, Dropout, Linear, Flatten,
                     SoftmaxCrossEntropy)
from .model import AlexNet, to_network_input
from .ops import softmax
from .optim import SGD
from .weights import save_weights, load_weights, save_checkpoint, load_checkpoint

__all__ = ["AlexNet", "SGD", "SoftmaxCrossEntropy", "Conv2d", "ReLU", "LocalResponseNorm",
           "MaxPool2d", "Dropout", "Linear", "Flatten", "to_network_input", "set_backend",
           "backend_name", "to_numpy", "softmax", "usable_cores"]
__all__ += ["save_weights", "load_weights", "save_checkpoint", "load_checkpoint"]
