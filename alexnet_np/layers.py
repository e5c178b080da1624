"""AlexNet's layers, each a small class with a forward pass and its manual backward pass.

Contract shared by every layer:

* ``forward(x, train)`` returns the output and, when ``train`` is true, keeps in
  ``self.cache`` exactly what ``backward`` needs (nothing at test time);
* ``backward(dout)`` returns the gradient with respect to the input (or ``None``
  for a layer marked ``needs_input_grad = False``, e.g. conv1, whose input is
  the image) and writes parameter gradients into ``self.grads`` (arrays made by
  the first backward and overwritten by every later one: copy them to keep a
  step's gradients);
* ``self.params`` / ``self.grads`` map ``"weight"`` / ``"bias"`` to arrays.
  The model exposes them as ``"conv1.weight"`` etc.;
* the large arrays a layer returns (and the ones it caches) may live in
  ``self.buffers``, the layer's own memory, kept between calls: each forward
  overwrites what the layer's previous forward returned, each backward what its
  previous backward returned (copy an activation or a gradient to keep it), and
  an inference forward between a training forward and its backward overwrites
  the cache.

Shapes: activations NCHW, conv weights OIHW, linear weights (out, in).
The array module is the one owning the input (NumPy or CuPy), see backend.py.
"""
from __future__ import annotations

import numpy as np

from . import ops
from .backend import array_module, kept, xp


class Layer:
    """Base class: parameter/gradient dicts and the input-gradient switch."""

    needs_input_grad = True

    def __init__(self):
        self.params: dict = {}
        self.grads: dict = {}
        self.buffers: dict = {}  # arrays kept between calls: outputs, caches (backend.kept)
        self.cache = None

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"

    def _grad_buffer(self, key, m):
        """The array that receives the gradient of parameter ``key``: allocated once, then
        overwritten by every backward (copy ``grads`` to keep a step's gradients)."""
        p = self.params[key]
        return kept(self.grads, key, p.shape, p.dtype, m)

    def extra_repr(self) -> str:
        return ""


class Conv2d(Layer):
    """2-D convolution with groups, as im2col + one GEMM per group.

    x: (N, C, H, W), weight: (K, C/groups, kh, kw), bias: (K,) -> y: (N, K, Ho, Wo),
    Ho = floor((H + 2*pad - kh)/stride) + 1.

    Forward:   cols = im2col(x)                      (C*kh*kw, N*Ho*Wo)
               Y_g  = W_g @ cols_g + b_g              per group g, W_g: (K/g, C/g*kh*kw)
    Backward:  dW_g = (cols_g @ dY_g^T)^T,   db = sum over (n, ho, wo) of dY,
               dcols_g = W_g^T @ dY_g,   dx = col2im(dcols)   (the adjoint of im2col).

    The two passes are ops.conv_forward and ops.conv_backward, written side by
    side there. They are dispatched like every primitive (backend.py): with the
    fast CPU kernels, the 3x3 stride-1 convolutions of NumPy arrays (conv3 to
    conv5) run Winograd's F(2x2, 3x3) instead (alexnet_np/winograd.py), the same
    function with 2.25x fewer multiplications.
    """

    def __init__(self, in_ch, out_ch, kernel, stride=1, padding=0, groups=1, dtype=np.float32):
        super().__init__()
        if in_ch % groups or out_ch % groups:
            raise ValueError(f"in_ch={in_ch} and out_ch={out_ch} must both be divisible by groups={groups}")
        self.in_ch, self.out_ch, self.kernel = in_ch, out_ch, kernel
        self.stride, self.padding, self.groups = stride, padding, groups
        m = xp()
        self.params = {"weight": m.zeros((out_ch, in_ch // groups, kernel, kernel), dtype=dtype),
                       "bias": m.zeros((out_ch,), dtype=dtype)}

    def extra_repr(self):
        return (f"{self.in_ch}, {self.out_ch}, kernel={self.kernel}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}")

    def output_shape(self, c, h, w):
        k, s, p = self.kernel, self.stride, self.padding
        return self.out_ch, ops.conv_out_size(h, k, s, p), ops.conv_out_size(w, k, s, p)

    def forward(self, x, train=True):
        if x.shape[1] != self.in_ch:
            raise ValueError(f"{self!r} got an input with {x.shape[1]} channels")
        out, self.cache = ops.conv_forward(x, self.params["weight"], self.params["bias"], self.stride,
                                           self.padding, self.groups, train, self.buffers)
        return out

    def backward(self, dout):
        m = array_module(dout)
        cache, self.cache = self.cache, None
        return ops.conv_backward(dout, cache, self.params["weight"], self.stride, self.padding,
                                 self.groups, self._grad_buffer("weight", m),
                                 self._grad_buffer("bias", m), self.needs_input_grad, self.buffers)


class ReLU(Layer):
    """Rectified linear unit, the paper's activation. x: any shape -> y: the same shape.

    Forward:   y = max(x, 0)
    Backward:  dx = dout * [y > 0]        (y > 0 exactly where x > 0)

    With ``inplace=True`` the output overwrites the input (the layer before,
    a convolution or linear layer, keeps no reference to its output), which
    saves one activation-sized allocation per layer.
    """

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x, train=True):
        y = ops.relu_forward(x, self.inplace)
        self.cache = y if train else None
        return y

    def backward(self, dout):
        dx = ops.relu_backward(dout, self.cache)
        self.cache = None
        return dx


class LocalResponseNorm(Layer):
    """Caffe LRN across channels (bvlc_alexnet: size 5, alpha 1e-4, beta 0.75, k 1).
    x: (N, C, H, W) -> y: (N, C, H, W), each pixel normalized over its neighbouring channels.

    Forward:   scale_c = k + alpha/size * sum_{|c'-c| <= size//2} x_{c'}^2,     y_c = x_c * scale_c^(-beta)
    Backward:  dx_c = dout_c scale_c^(-beta)
                      - (2 alpha beta / size) x_c sum_{|c'-c| <= size//2} dout_{c'} y_{c'} / scale_{c'}

    Note: Caffe divides alpha by ``size``; PyTorch's LocalResponseNorm does too
    (the two agree), cuda-convnet did not.
    """

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        if size % 2 != 1:
            raise ValueError(f"LRN size must be odd (Caffe), got {size}")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def extra_repr(self):
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"

    def forward(self, x, train=True):
        y, scale = ops.lrn_forward(x, self.size, self.alpha, self.beta, self.k, self.buffers)
        self.cache = (x, y, scale) if train else None
        return y

    def backward(self, dout):
        x, y, scale = self.cache
        self.cache = None
        return ops.lrn_backward(dout, x, y, scale, self.size, self.alpha, self.beta, self.buffers)


class MaxPool2d(Layer):
    """Max pooling with Caffe's ceil-mode output size (kernel 3, stride 2 in AlexNet).
    x: (N, C, H, W) -> y: (N, C, Ho, Wo), Ho = ceil((H - kernel)/stride) + 1 (likewise Wo;
    ``ceil_mode=False``: floor, as torchvision).

    Forward:   y[n,c,p,q] = max_{i,j < kernel} x[n, c, p*stride + i, q*stride + j]
               (window positions beyond the image do not take part)
    Backward:  dx[n, c, p*stride + i*, q*stride + j*] += dout[n,c,p,q], (i*, j*) the window's
               argmax; every other input pixel of the window gets nothing from it.
    Ties go to the first position in row-major order within the window (Caffe's rule).
    Inference (train=False) takes the maximum alone, without the argmax.
    """

    def __init__(self, kernel=3, stride=2, ceil_mode=True):
        super().__init__()
        self.kernel, self.stride, self.ceil_mode = kernel, stride, ceil_mode

    def extra_repr(self):
        return f"kernel={self.kernel}, stride={self.stride}, ceil_mode={self.ceil_mode}"

    def output_shape(self, c, h, w):
        k, s, cm = self.kernel, self.stride, self.ceil_mode
        return c, ops.pool_out_size(h, k, s, 0, cm), ops.pool_out_size(w, k, s, 0, cm)

    def forward(self, x, train=True):
        if not train:  # no backward to route: the maximum alone, without the argmax
            self.cache = None
            return ops.maxpool(x, self.kernel, self.stride, self.ceil_mode, self.buffers)
        y, argmax = ops.maxpool_forward(x, self.kernel, self.stride, self.ceil_mode, self.buffers)
        self.cache = (argmax, x.shape)
        return y

    def backward(self, dout):
        argmax, x_shape = self.cache
        self.cache = None
        return ops.maxpool_backward(dout, argmax, x_shape, self.kernel, self.stride, self.buffers)


class Dropout(Layer):
    """Inverted dropout. x: any shape -> y: the same shape.

    Forward:   train: y = x * mask / (1 - p), mask ~ Bernoulli(1 - p) per element;  test: y = x
    Backward:  dx = dout * mask / (1 - p)

    Masks come from ``self.rng``, a counter-based stream (:class:`~alexnet_np.ops.CounterRNG`)
    evaluated where the data lives: NumPy and CUDA draw the very same mask, and
    the stream's state is two integers, so a resumed run draws the masks an
    uninterrupted one would. Set ``fixed_mask`` to test with a known mask.
    """

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.rng = rng if rng is not None else ops.CounterRNG(0)
        self.fixed_mask = None

    def extra_repr(self):
        return f"p={self.p}"

    def forward(self, x, train=True):
        if not train or self.p == 0.0:
            self.cache = None
            return x
        if self.fixed_mask is not None:
            mask = array_module(x).asarray(self.fixed_mask, dtype=x.dtype)
        else:
            mask = ops.dropout_mask(x, self.rng.next_key(), self.p)
        self.cache = mask
        return ops.dropout_apply(x, mask, 1.0 / (1.0 - self.p))

    def backward(self, dout):
        if self.cache is None:
            return dout
        dx = ops.dropout_apply(dout, self.cache, 1.0 / (1.0 - self.p))
        self.cache = None
        return dx


class Linear(Layer):
    """Fully connected layer. x: (N, in), weight: (out, in), bias: (out,) -> y: (N, out).

    Forward:   y = x W^T + b
    Backward:  dW = dout^T x,   db = sum_n dout,   dx = dout W

    GEMM orientation: y and dx are computed transposed, y = (W x^T)^T and
    dx = (W^T dout^T)^T, which OpenBLAS runs 1.3-2.5x faster at AlexNet's shapes
    (a batch of 50 against a 4096 x 9216 weight); they come out as F-ordered
    (N, features) arrays, which the following layers accept as they are.
    """

    def __init__(self, in_features, out_features, dtype=np.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        m = xp()
        self.params = {"weight": m.zeros((out_features, in_features), dtype=dtype),
                       "bias": m.zeros((out_features,), dtype=dtype)}

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}"

    def forward(self, x, train=True):
        if x.shape[1] != self.in_features:
            raise ValueError(f"{self!r} got an input with {x.shape[1]} features")
        y = (self.params["weight"] @ x.T).T
        y += self.params["bias"]
        self.cache = x if train else None
        return y

    def backward(self, dout):
        m = array_module(dout)
        x = self.cache
        self.cache = None
        m.matmul(dout.T, x, out=self._grad_buffer("weight", m))
        dout.sum(axis=0, out=self._grad_buffer("bias", m))
        return (self.params["weight"].T @ dout.T).T if self.needs_input_grad else None


class Flatten(Layer):
    """x: (N, C, H, W) -> y: (N, C*H*W) in C order (Caffe's and PyTorch's fc6 input order).

    Forward:   y[n, (c*H + h)*W + w] = x[n, c, h, w]
    Backward:  dx = dout reshaped back to (N, C, H, W)   (a reshape moves values without changing them)
    """

    def forward(self, x, train=True):
        self.cache = x.shape if train else None
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        shape = self.cache
        self.cache = None
        return dout.reshape(shape)


class SoftmaxCrossEntropy:
    """Softmax followed by the (optionally class-weighted) mean cross-entropy: the loss of
    the paper's "final softmax function".

    ``loss, dlogits = SoftmaxCrossEntropy(class_weights)(logits, labels)``;
    logits z: (N, K), labels y: (N,) integers in [0, K) -> loss: a scalar, dlogits: (N, K).

    Forward:   loss = sum_n w[y_n] (-log softmax(z_n)[y_n]) / sum_n w[y_n]
    Backward:  dlogits[n] = w[y_n] (softmax(z_n) - onehot(y_n)) / sum_n w[y_n]
    (computed together, :func:`alexnet_np.ops.softmax_cross_entropy`); ``class_weights``
    w: (K,), all ones (the plain mean) when None.
    """

    def __init__(self, class_weights=None):
        self.class_weights = class_weights

    def __call__(self, logits, labels):
        m = array_module(logits)
        labels = m.asarray(labels).astype(np.int64)
        k = logits.shape[1]
        if self.class_weights is None:
            w = m.ones((k,), dtype=logits.dtype)
        else:
            w = m.asarray(self.class_weights, dtype=logits.dtype)
            if w.shape != (k,):
                raise ValueError(f"class_weights must have {k} entries, got shape {w.shape}")
        if labels.shape != (logits.shape[0],):
            raise ValueError(f"labels must have shape ({logits.shape[0]},), got {labels.shape}")
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= k:
            raise ValueError(f"labels must lie in [0, {k - 1}], got values in [{lo}, {hi}]")
        return ops.softmax_cross_entropy(logits, labels, w)
