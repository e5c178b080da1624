"""AlexNet as the paper used it (Caffe's bvlc_alexnet), and torchvision's variant.

The paper: "five convolutional layers (includes max-pooling in the 1st, 2nd,
and 5th convolutional layers) followed by two fully connected layers and a
fully connected output layer with a final softmax function", ReLU activations,
input 227 x 227.

``variant="caffe"`` (bvlc_alexnet's train_val.prototxt)::

    conv1 96x11x11 /4      relu1  norm1 (LRN 5, 1e-4, 0.75)  pool1 3/2
    conv2 256x5x5 p2 g2    relu2  norm2                      pool2 3/2
    conv3 384x3x3 p1       relu3
    conv4 384x3x3 p1 g2    relu4
    conv5 256x3x3 p1 g2    relu5                             pool5 3/2
    fc6 9216->4096 relu6 drop6 | fc7 4096->4096 relu7 drop7 | fc8 4096->num_classes

``variant="torchvision"``: 64/192/384/256/256 filters, conv1 padding 2, no LRN,
no groups, floor-mode pooling, dropout *before* fc6 and fc7, input 224.

Grayscale mammograms enter as the gray image replicated to three channels
(:func:`to_network_input`), so ImageNet weights for RGB inputs apply unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import ops
from .backend import array_module, asarray, to_numpy
from .layers import Conv2d, Dropout, Flatten, Linear, LocalResponseNorm, MaxPool2d, ReLU

VARIANTS = ("caffe", "torchvision")
DEFAULT_INPUT_SIZE = {"caffe": 227, "torchvision": 224}
# Output widths of conv1..conv5, fc6, fc7.
DEFAULT_WIDTHS = {"caffe": (96, 256, 384, 384, 256, 4096, 4096),
                  "torchvision": (64, 192, 384, 256, 256, 4096, 4096)}

# bvlc_alexnet's filler settings: (weight std, bias value) per layer.
CAFFE_INIT = {"conv1": (0.01, 0.0), "conv2": (0.01, 0.1), "conv3": (0.01, 0.0), "conv4": (0.01, 0.1),
              "conv5": (0.01, 0.1), "fc6": (0.005, 0.1), "fc7": (0.005, 0.1), "fc8": (0.01, 0.0)}


def _features(variant, w):
    """The convolutional trunk as (name, layer) pairs; ``w`` = widths (conv1..conv5, fc6, fc7)."""
    if variant == "caffe":
        lrn = dict(size=5, alpha=1e-4, beta=0.75, k=1.0)
        return [
            ("conv1", Conv2d(3, w[0], 11, stride=4)), ("relu1", ReLU(inplace=True)),
            ("norm1", LocalResponseNorm(**lrn)), ("pool1", MaxPool2d(3, 2)),
            ("conv2", Conv2d(w[0], w[1], 5, padding=2, groups=2)), ("relu2", ReLU(inplace=True)),
            ("norm2", LocalResponseNorm(**lrn)), ("pool2", MaxPool2d(3, 2)),
            ("conv3", Conv2d(w[1], w[2], 3, padding=1)), ("relu3", ReLU(inplace=True)),
            ("conv4", Conv2d(w[2], w[3], 3, padding=1, groups=2)), ("relu4", ReLU(inplace=True)),
            ("conv5", Conv2d(w[3], w[4], 3, padding=1, groups=2)), ("relu5", ReLU(inplace=True)),
            ("pool5", MaxPool2d(3, 2)),
        ]
    return [
        ("conv1", Conv2d(3, w[0], 11, stride=4, padding=2)), ("relu1", ReLU(inplace=True)),
        ("pool1", MaxPool2d(3, 2, ceil_mode=False)),
        ("conv2", Conv2d(w[0], w[1], 5, padding=2)), ("relu2", ReLU(inplace=True)),
        ("pool2", MaxPool2d(3, 2, ceil_mode=False)),
        ("conv3", Conv2d(w[1], w[2], 3, padding=1)), ("relu3", ReLU(inplace=True)),
        ("conv4", Conv2d(w[2], w[3], 3, padding=1)), ("relu4", ReLU(inplace=True)),
        ("conv5", Conv2d(w[3], w[4], 3, padding=1)), ("relu5", ReLU(inplace=True)),
        ("pool5", MaxPool2d(3, 2, ceil_mode=False)),
    ]


def _classifier(variant, fc6_in, w, num_classes, dropout, rng):
    fc = [("fc6", Linear(fc6_in, w[5])), ("relu6", ReLU(inplace=True)),
          ("fc7", Linear(w[5], w[6])), ("relu7", ReLU(inplace=True)),
          ("fc8", Linear(w[6], num_classes))]
    if variant == "caffe":  # dropout after relu6 and relu7
        fc.insert(2, ("drop6", Dropout(dropout, rng)))
        fc.insert(5, ("drop7", Dropout(dropout, rng)))
    else:  # torchvision: dropout before fc6 and before fc7
        fc.insert(0, ("drop6", Dropout(dropout, rng)))
        fc.insert(3, ("drop7", Dropout(dropout, rng)))
    return [("flatten", Flatten())] + fc


@dataclass
class LayerGradient:
    """What :meth:`AlexNet.activation_gradient` hands back for a batch of N images."""

    logits: object      # (N, num_classes), pre-softmax, dropout off (test mode)
    activation: object  # the chosen layer's output, (N, ...)
    gradient: object    # d(sum_n seed[n] . logits[n]) / d activation, same shape as activation


class AlexNet:
    """AlexNet with manual backprop.

    AlexNet(num_classes, variant="caffe", dropout=0.5, input_size=None, init="caffe", seed=0,
            dtype=float32, widths=None)

    * ``input_size`` defaults to the variant's (227 caffe, 224 torchvision); any size
      that survives the trunk works, fc6's input size following from pool5's output
      (ImageNet fc6 weights then cannot be loaded, and load_weights says why).
    * ``init="caffe"``: gaussian weights with bvlc_alexnet's std (0.01; fc6/fc7 0.005)
      and its bias constants; ``init="he"``: Kaiming normal std sqrt(2/fan_in), zero biases
      (for training from scratch, where the Caffe init learns very slowly).
    * ``widths``: the seven layer widths (conv1..conv5, fc6, fc7), default the variant's.
      Smaller widths give the same architecture in miniature (gradient checks, teaching).
    * ``params`` / ``grads``: dicts keyed ``"conv1.weight"``, ``"conv1.bias"``, ... ``"fc8.bias"``;
      the arrays are the layers' own, so updating them in place updates the model.
    * ``forward(x, train)`` -> logits (N, num_classes); ``backward(dlogits)`` fills ``grads``.
    * ``activation_gradient(x, seed, layer)``: a layer's output and the gradient of chosen
      logits with respect to it, at test time (attribution maps, pipeline/explain/).
    """

    def __init__(self, num_classes, variant="caffe", dropout=0.5, input_size=None, init="caffe",
                 seed=0, dtype=np.float32, widths=None):
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if init not in ("caffe", "he"):
            raise ValueError(f"init must be 'caffe' or 'he', got {init!r}")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.num_classes, self.variant, self.init = int(num_classes), variant, init
        self.input_size = int(input_size or DEFAULT_INPUT_SIZE[variant])
        self.dropout = dropout
        self.rng = ops.CounterRNG(seed + 1)  # dropout masks; its state is part of a checkpoint
        self.widths = tuple(int(v) for v in (widths or DEFAULT_WIDTHS[variant]))
        if len(self.widths) != 7:
            raise ValueError(f"widths must give 7 numbers (conv1..conv5, fc6, fc7), got {widths}")
        features = _features(variant, self.widths)
        shape = (3, self.input_size, self.input_size)
        for name, layer in features:
            if hasattr(layer, "output_shape"):
                try:
                    shape = layer.output_shape(*shape)
                except ValueError as e:
                    raise ValueError(f"input_size={self.input_size} is too small for AlexNet "
                                     f"({variant}): at {name}, {e}") from None
        self.pool5_shape = shape
        fc6_in = int(np.prod(shape))
        self.layers = features + _classifier(variant, fc6_in, self.widths, self.num_classes,
                                             dropout, self.rng)
        self.layers[0][1].needs_input_grad = False  # conv1's input is the image
        self.dtype = np.dtype(dtype)
        self.params, self.grads = {}, {}
        for name, layer in self.layers:
            for key in layer.params:
                layer.params[key] = layer.params[key].astype(self.dtype)
                self.params[f"{name}.{key}"] = layer.params[key]
        self._initialize(np.random.default_rng(seed))

    # -------------------------------------------------------------- construction helpers
    def layer(self, name):
        """The layer object called ``name`` (e.g. ``"conv2"``)."""
        for n, layer in self.layers:
            if n == name:
                return layer
        raise KeyError(f"no layer {name!r}; layers are {[n for n, _ in self.layers]}")

    @property
    def param_layers(self):
        """Names of the layers that own parameters, in order (conv1 .. fc8)."""
        return [n for n, layer in self.layers if layer.params]

    def _initialize(self, rng):
        for name in self.param_layers:
            self.reinitialize(name, rng)

    def reinitialize(self, name, rng=None):
        """Draw fresh weights for one layer (fine-tuning replaces fc8 this way)."""
        rng = rng if rng is not None else np.random.default_rng()
        layer = self.layer(name)
        w = layer.params["weight"]
        if self.init == "caffe":
            std, bias = CAFFE_INIT[name]
        else:
            std, bias = float(np.sqrt(2.0 / np.prod(w.shape[1:]))), 0.0
        w[...] = array_module(w).asarray(rng.normal(0.0, std, size=w.shape).astype(w.dtype))
        layer.params["bias"][...] = bias

    @property
    def xp(self):
        """The array module holding this model's parameters (numpy or cupy)."""
        return array_module(self.params["conv1.weight"])

    # -------------------------------------------------------------- passes
    def forward(self, x, train=True):
        """x: (N, 3, S, S) float -> logits (N, num_classes). ``train`` enables dropout and caching."""
        self._check_input(x)
        for _, layer in self.layers:
            x = layer.forward(x, train)
        return x

    def backward(self, dlogits):
        """Backpropagate dL/dlogits through every layer, filling ``self.grads``."""
        d = dlogits
        for name, layer in reversed(self.layers):
            d = layer.backward(d)
            for key, g in layer.grads.items():
                self.grads[f"{name}.{key}"] = g
        return d

    def activation_gradient(self, x, seed, layer=None) -> LayerGradient:
        """One test-mode forward and one backward, from ``seed`` down to the output of ``layer``.

        seed: (N, num_classes), the weights of the logits whose gradient is wanted (a one-hot
        row picks one logit per image). Returns the logits, the output A of ``layer`` and
        dF/dA with F = sum_n seed[n] . logits[n]. Dropout is off, as at test time, and no
        layer mixes images, so row n of dF/dA is the gradient of image n's own selected logit.

        ``layer`` names an entry of ``self.layers``. The ReLUs run in place, so a convolution's
        output array *is* its ReLU's output: ask for ``"relu5"`` (not ``"conv5"``) to get A after
        the ReLU with its gradient. ``layer=None`` means the input x itself; that needs
        ``layer("conv1").needs_input_grad = True`` (it is off because training never needs it),
        which the caller sets and restores. Parameter gradients of the layers passed through are
        overwritten; the backward stops at ``layer``, and the caches below it are dropped.
        """
        self._check_input(x)
        names = [n for n, _ in self.layers]
        if layer is not None and layer not in names:
            raise KeyError(f"no layer {layer!r}; layers are {names}")
        activation = x if layer is None else None
        a = x
        for name, lay in self.layers:
            # train=True keeps what backward needs; Dropout alone reads train as "drop"
            a = lay.forward(a, train=not isinstance(lay, Dropout))
            if name == layer:
                activation = a
        logits = a
        d = self.xp.asarray(seed, dtype=logits.dtype)
        if d.shape != logits.shape:
            raise ValueError(f"seed must have the logits' shape {tuple(logits.shape)}, got {tuple(d.shape)}")
        stop = names.index(layer) if layer is not None else -1
        for i in range(len(self.layers) - 1, stop, -1):
            d = self.layers[i][1].backward(d)
            if d is None:
                raise ValueError("the input gradient needs conv1.needs_input_grad = True for this call")
        for _, lay in self.layers[:stop + 1]:
            lay.cache = None
        return LayerGradient(logits, activation, d)

    def _check_input(self, x):
        if x.ndim != 4 or x.shape[1:] != (3, self.input_size, self.input_size):
            raise ValueError(f"AlexNet({self.variant}, input_size={self.input_size}) expects input "
                             f"of shape (N, 3, {self.input_size}, {self.input_size}), got {tuple(x.shape)}")

    def predict_proba(self, x, batch_size=100):
        """Softmax probabilities (host NumPy array, (N, num_classes)) in test mode, batch by batch:
        :func:`alexnet_np.ops.softmax` of the logits (the paper's "final softmax function")."""
        m = self.xp
        out = []
        for start in range(0, len(x), batch_size):
            logits = self.forward(m.asarray(x[start:start + batch_size]), train=False)
            out.append(to_numpy(ops.softmax(logits, axis=1)))
        return np.concatenate(out) if out else np.zeros((0, self.num_classes), np.float32)

    def __repr__(self):
        body = "\n".join(f"  ({n}): {layer!r}" for n, layer in self.layers)
        return f"AlexNet(variant={self.variant!r}, input_size={self.input_size}, " \
               f"num_classes={self.num_classes})\n{body}"


def to_network_input(gray, mean=0.0, scale=1.0, dtype=np.float32):
    """Grayscale images (N, H, W) in 0..255 -> network input (N, 3, H, W) = (gray - mean) * scale.

    This is where a mammogram becomes AlexNet input: the gray image is replicated
    into the three input channels, then ``mean`` is subtracted -- a scalar, a
    per-channel (3,) mean (as ImageNet weights record it), or a (H, W) mean image
    (the paper's "mean subtracting", computed on the training split). ``scale`` is
    Caffe's transform_param scale: 1 for bvlc_alexnet (inputs in 0..255 units); a
    small factor, such as the pipeline's demo preset's 1/512, for training from
    scratch with He initialization, which expects inputs of unit size.

    ``gray`` and ``mean`` may be host (NumPy) or device (CuPy) arrays, in any
    numeric dtype (uint8 images need no conversion first): the result is a new
    ``dtype`` array on the chosen backend's array module (:func:`backend.xp`),
    the one the network's parameters live on, so callers pass host arrays as
    they read them. On CuPy, ``gray`` crosses to the device in its own dtype
    (a quarter of float32's bytes for uint8) and is converted there.
    """
    gray = asarray(gray)
    m = array_module(gray)
    g = gray.astype(dtype, copy=False)
    mean = asarray(mean, dtype=dtype)
    out = m.empty((g.shape[0], 3) + g.shape[1:], dtype=dtype)
    if mean.ndim == 1:  # per-channel
        m.subtract(g[:, None], mean[None, :, None, None], out=out)
    else:  # scalar or (H, W) image
        m.subtract(g[:, None], mean, out=out)
    if scale != 1.0:
        out *= dtype(scale)
    return out
