"""alexnet_np: a from-scratch AlexNet (Caffe bvlc_alexnet and torchvision variants)
with manual backprop and Caffe's SGD, on NumPy (CPU) or CuPy (GPU) from one code base.

    from alexnet_np import AlexNet, SGD, SoftmaxCrossEntropy, save_weights, load_weights
"""
from .backend import set_backend, backend_name, to_numpy
from .layers import (Conv2d, ReLU, LocalResponseNorm, MaxPool2d, Dropout, Linear, Flatten,
                     SoftmaxCrossEntropy)
from .model import AlexNet, to_network_input
from .optim import SGD
from .weights import save_weights, load_weights, save_checkpoint, load_checkpoint

__all__ = ["AlexNet", "SGD", "SoftmaxCrossEntropy", "Conv2d", "ReLU", "LocalResponseNorm",
           "MaxPool2d", "Dropout", "Linear", "Flatten", "to_network_input", "set_backend",
           "backend_name", "to_numpy"]
__all__ += ["save_weights", "load_weights", "save_checkpoint", "load_checkpoint"]
