"""Caffe's SGD solver (sgd_solver.cpp) with the paper's settings.

The paper: "batch size of 50 for stochastic gradient descent, a weight decay of
0.001, and a momentum of 0.9. For the learning rate, we started with 0.001 and
dropped the rate by a factor of 10 every 2,500 iterations."

Caffe's update differs from PyTorch's: the learning rate sits *inside* the
momentum history,

    V <- momentum * V + lr * lr_mult * (grad + weight_decay * decay_mult * W)
    W <- W - V

with the "step" policy lr = base_lr * gamma ^ floor(iteration / stepsize). An optional linear
warm-up (not in the paper, nor in Caffe's step policy) multiplies it by min(1, (iteration + 1) / warmup),
so the first steps, whose size the fresh layers' large activations set, cannot throw the softmax
into saturation (bench/demo_design.md, "the loss clue").
bvlc_alexnet gives weights lr_mult 1 / decay_mult 1 and biases lr_mult 2 /
decay_mult 0 (no decay on biases).
"""
from __future__ import annotations

import numpy as np

from . import ops
from .backend import array_module, to_numpy

DEFAULT_MULTS = {"weight": (1.0, 1.0), "bias": (2.0, 0.0)}


class SGD:
    """SGD(model, base_lr=0.001, momentum=0.9, weight_decay=0.001, gamma=0.1, stepsize=2500,
    mults=None, new_layers=(), new_layer_lr_mult=10.0, warmup=0)

    * ``step()`` applies one update from ``model.grads`` and advances ``iteration``;
    * ``lr`` is the rate the *next* step uses;
    * ``mults`` maps a parameter name to ``(lr_mult, decay_mult)``; by default weights
      get (1, 1) and biases (2, 0) as in bvlc_alexnet;
    * ``new_layers`` (e.g. ``("fc8",)`` when fine-tuning with a fresh output layer) get
      their lr_mult multiplied by ``new_layer_lr_mult``, Caffe's usual fine-tuning recipe.
    * ``warmup`` > 0 ramps the lr linearly over that many first iterations (0: off, Caffe's step).
    * ``state_dict()`` / ``load_state_dict()``: momentum buffers and the iteration.
    """

    def __init__(self, model, base_lr=0.001, momentum=0.9, weight_decay=0.001, gamma=0.1,
                 stepsize=2500, mults=None, new_layers=(), new_layer_lr_mult=10.0, warmup=0):
        if base_lr <= 0 or not np.isfinite(base_lr):
            raise ValueError(f"base_lr must be a positive number, got {base_lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if stepsize < 1:
            raise ValueError(f"stepsize must be >= 1, got {stepsize}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0 iterations, got {warmup}")
        self.model = model
        self.base_lr, self.momentum, self.weight_decay = base_lr, momentum, weight_decay
        self.gamma, self.stepsize, self.warmup = gamma, int(stepsize), int(warmup)
        self.iteration = 0
        self.mults = {}
        for name in model.params:
            layer, kind = name.rsplit(".", 1)
            lr_mult, decay_mult = DEFAULT_MULTS[kind]
            if layer in new_layers:
                lr_mult *= new_layer_lr_mult
            self.mults[name] = (lr_mult, decay_mult)
        if mults:
            unknown = set(mults) - set(model.params)
            if unknown:
                raise KeyError(f"mults name parameters the model does not have: {sorted(unknown)}")
            self.mults.update(mults)
        self.velocity = {name: array_module(p).zeros_like(p) for name, p in model.params.items()}

    @property
    def lr(self):
        """Caffe "step" policy: base_lr * gamma ^ floor(iteration / stepsize), times the warm-up's
        min(1, (iteration + 1) / warmup) when there is one."""
        lr = self.base_lr * self.gamma ** (self.iteration // self.stepsize)
        return lr * min(1.0, (self.iteration + 1) / self.warmup) if self.warmup else lr

    def step(self):
        """One update of every parameter from ``model.grads``, then iteration += 1."""
        lr = self.lr
        for name, w in self.model.params.items():
            if name not in self.model.grads:
                raise KeyError(f"no gradient for {name}: call model.backward() before step()")
            lr_mult, decay_mult = self.mults[name]
            ops.sgd_update(w, self.model.grads[name], self.velocity[name],
                           lr * lr_mult, self.momentum, self.weight_decay * decay_mult)
        self.iteration += 1

    def state_dict(self):
        """Host copies of the momentum buffers plus the scalars needed to resume exactly."""
        return {"iteration": self.iteration, "base_lr": self.base_lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "gamma": self.gamma, "stepsize": self.stepsize, "warmup": self.warmup,
                "velocity": {k: to_numpy(v) for k, v in self.velocity.items()}}

    def load_state_dict(self, state):
        self.iteration = int(state["iteration"])
        for name, v in state["velocity"].items():
            if name not in self.velocity:
                raise KeyError(f"optimizer state has a buffer for unknown parameter {name!r}")
            if tuple(v.shape) != tuple(self.velocity[name].shape):
                raise ValueError(f"momentum buffer {name}: state has shape {tuple(v.shape)}, "
                                 f"model has {tuple(self.velocity[name].shape)}")
            self.velocity[name][...] = array_module(self.velocity[name]).asarray(v)
