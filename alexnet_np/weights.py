"""AlexNet weights and training checkpoints in HDF5 (no pickle anywhere).

Weights file layout (``format_version`` 1)::

    /conv1/weight   float32 (out, in/groups, kH, kW)   -- OIHW
    /conv1/bias     float32 (out,)
    ...             conv2 .. conv5 alike
    /fc6/weight     float32 (out, in)                  -- in = C*H*W of pool5, C order
    /fc6/bias       float32 (out,)
    ...             fc7, fc8 alike

    root attributes:
      format         "alexnet_np-weights"
      format_version 1
      variant        "caffe" | "torchvision"
      input_size     side of the square input the weights were made for (227 / 224)
      channel_order  "RGB" | "BGR": the order of conv1's three input planes
      mean           3 floats, per-channel mean in 0-255 units, in channel_order
      source         free text: where the weights came from
      (a converter may add more, e.g. ``std`` for torchvision weights)

A training checkpoint is a weights file (so :func:`load_weights` reads its
weights too) with the parameters in the model's own dtype, plus::

    /optimizer/velocity/<param name>   momentum buffers, e.g. /optimizer/velocity/conv1.weight
    /optimizer attributes              iteration, base_lr, momentum, weight_decay, gamma,
                                       stepsize, warmup (0 when absent), mults (JSON: name ->
                                       [lr_mult, decay_mult])
    root attribute rng_state           JSON of the state of model.rng (the dropout masks' stream)
    root attribute extra               JSON of the caller's ``extra`` dict

Every write goes to a temporary file in the destination's directory and is
then renamed over the destination (``os.replace``), so a crash or an error
mid-write leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import json
import os
import secrets

import h5py
import numpy as np

from .backend import to_numpy

FORMAT = "alexnet_np-weights"
FORMAT_VERSION = 1
CHANNEL_ORDERS = ("RGB", "BGR")
OPTIMIZER_HYPERPARAMETERS = ("base_lr", "momentum", "weight_decay", "gamma", "stepsize")


# ------------------------------------------------------------------ writing
def _atomic_h5_write(path, fill):
    """Create ``path`` as an HDF5 file written by ``fill(h5file)``, atomically.

    The temporary name is unique (pid + random) so concurrent writers of the same
    destination cannot clobber each other's half-written file.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with h5py.File(tmp, "x") as f:
            fill(f)
        with open(tmp, "rb") as fh:  # on disk before the rename, so a power cut cannot lose it
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_weights(path, params, variant, input_size, channel_order="RGB", mean=(0.0, 0.0, 0.0),
                  source="alexnet_np", **extra_attrs):
    """Write ``params`` ({"conv1.weight": array, ...}, host or device arrays) as a float32 weights file.

    The converters call this directly (they have arrays, not a model);
    ``extra_attrs`` become further root attributes.
    """
    mean = _checked_mean(channel_order, mean)

    def fill(f):
        _fill_weights(f, params, variant, input_size, channel_order, mean, source, np.float32,
                      extra_attrs)

    _atomic_h5_write(path, fill)


def _checked_mean(channel_order, mean):
    """Validate the preprocessing attributes; returns ``mean`` as a float64 (3,) array."""
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
    mean = np.asarray(mean, dtype=np.float64)
    if mean.shape != (3,):
        raise ValueError(f"mean must be 3 per-channel values (0-255 units), got shape {mean.shape}")
    return mean


def _fill_weights(f, params, variant, input_size, channel_order, mean, source, dtype, extra_attrs):
    for key, value in params.items():
        layer, kind = key.split(".")
        f.create_dataset(f"{layer}/{kind}", data=to_numpy(value).astype(dtype, copy=False))
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["variant"] = variant
    f.attrs["input_size"] = int(input_size)
    f.attrs["channel_order"] = channel_order
    f.attrs["mean"] = mean
    f.attrs["source"] = source
    for key, value in extra_attrs.items():
        f.attrs[key] = value


def save_weights(model, path, channel_order="RGB", mean=(0.0, 0.0, 0.0), source="alexnet_np"):
    """Save every parameter of ``model`` (float32) with the root attributes above.

    ``channel_order`` and ``mean`` describe the preprocessing the weights expect, so a
    later :func:`load_weights` can tell the caller.
    """
    write_weights(path, model.params, model.variant, model.input_size, channel_order, mean, source)


# ------------------------------------------------------------------ reading
def _open(path):
    """Open a weights/checkpoint file for reading, with errors that name the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path} is not an HDF5 weights file (h5py: {e})") from None
    fmt = f.attrs.get("format")
    version = f.attrs.get("format_version")
    if fmt != FORMAT or version is None:
        f.close()
        raise ValueError(f"{path} is an HDF5 file but not an alexnet_np weights file: its root "
                         f"attribute 'format' is {fmt!r}, expected {FORMAT!r} "
                         f"(convert other weights with `python -m alexnet_np.convert`)")
    if int(version) > FORMAT_VERSION:
        f.close()
        raise ValueError(f"{path} has format_version {int(version)}, newer than this code reads "
                         f"({FORMAT_VERSION}); update alexnet_np")
    return f


def _root_attrs(f):
    """Root attributes as plain Python values (str, int, float, tuple of floats)."""
    out = {}
    for key, value in f.attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, np.ndarray):
            value = tuple(value.tolist())
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def _read_params(f, path, model, layers):
    """Read and check the parameters of ``layers`` from open file ``f``; returns {name: host array}.

    Everything is checked before anything is returned, so a bad file never
    leaves a half-loaded model.
    """
    file_input = int(f.attrs["input_size"])
    out = {}
    for name in layers:
        for kind in ("weight", "bias"):
            key = f"{name}.{kind}"
            want = tuple(model.params[key].shape)
            if f"{name}/{kind}" not in f:
                raise KeyError(f"{path} has no {name}/{kind} (model {key} has shape {want}); "
                               f"pass exclude=({name!r},) to keep this layer as initialized")
            data = f[name][kind]
            if data.shape != want:
                raise ValueError(_shape_message(path, key, data.shape, want, f.attrs["variant"],
                                                file_input, model))
            out[key] = data[...]
    return out


def _shape_message(path, key, got, want, file_variant, file_input, model):
    msg = (f"{key}: {path} has shape {tuple(got)} (variant {file_variant}, input_size {file_input}), "
           f"the model has {want} (variant {model.variant}, input_size {model.input_size})")
    if key.startswith("fc6") and file_input != model.input_size:
        msg += (f". fc6's input size follows from input_size (it is the flattened pool5 output, "
                f"{model.pool5_shape} here), so pretrained fc6 weights cannot load at another input "
                f"size: load with exclude=('fc6', 'fc7', 'fc8') to keep only the convolutional "
                f"layers, or build the model with input_size={file_input}")
    elif key.startswith("fc8"):
        msg += (". To fine-tune with a new output layer, pass exclude=('fc8',) "
                "(fc8 then stays as initialized)")
    return msg


def _assign(model, arrays):
    xp = model.xp
    for key, value in arrays.items():
        model.params[key][...] = xp.asarray(value)


def weights_info(path):
    """The root attributes of a weights file (variant, input_size, channel_order, mean, ...),
    read without loading any array; raises the same clear errors as :func:`load_weights`."""
    with _open(os.fspath(path)) as f:
        return _root_attrs(f)


def fold_input_std(model, std):
    """Make a model whose weights expect (x - mean) / (255 * std) accept (x - mean) instead.

    torchvision's ImageNet weights were trained on inputs divided by 255 * std per
    channel; dividing conv1's weights W[:, c] by 255 * std[c] gives the same conv1
    output for undivided inputs (conv1 is linear and its zero padding stays zero).
    """
    w = model.params["conv1.weight"]
    scale = model.xp.asarray(255.0 * np.asarray(std, dtype=np.float64), dtype=w.dtype)
    w /= scale[None, :, None, None]


def load_weights(model, path, exclude=()):
    """Load the parameters of every layer except ``exclude`` from ``path`` into ``model`` in place.

    Returns the file's root attributes as a dict (``mean``, ``channel_order``,
    ``variant``, ``input_size``, ``source``, ...), so the caller can set up its
    preprocessing to match. A missing layer raises KeyError, a shape mismatch
    ValueError; both name the layer, the file and the shapes. A file with no fully
    connected layer at all (conv1..conv5 only, e.g. pipeline/standin.py's) loads
    the convolutional layers and leaves fc6..fc8 as initialized. Works for NumPy
    and CuPy models (values are moved to the model's array module).
    """
    exclude = (exclude,) if isinstance(exclude, str) else tuple(exclude)
    unknown = sorted(set(exclude) - set(model.param_layers))
    if unknown:
        raise KeyError(f"exclude names layers the model does not have: {unknown}; "
                       f"its layers are {model.param_layers}")
    with _open(path) as f:
        layers = [n for n in model.param_layers if n not in exclude]
        if not any(n in f for n in model.param_layers if n.startswith("fc")):  # a conv-only file
            layers = [n for n in layers if not n.startswith("fc")]
        arrays = _read_params(f, os.fspath(path), model, layers)
        attrs = _root_attrs(f)
    _assign(model, arrays)
    return attrs


# ------------------------------------------------------------------ checkpoints
def save_checkpoint(path, model, optimizer, extra=None, channel_order="RGB", mean=(0.0, 0.0, 0.0)):
    """Atomically save everything a killed run needs to resume exactly.

    Parameters (model dtype, so float64 runs resume bit for bit too), the SGD
    momentum buffers, iteration and hyperparameters, the dropout RNG state and
    ``extra`` (a dict of JSON-serializable values: the data sampler's RNG state,
    the position in the data order, metrics ...). ``channel_order``/``mean``
    record the preprocessing, as in :func:`save_weights`.
    """
    extra_json = json.dumps({} if extra is None else extra)  # fails before anything is written
    rng_json = json.dumps(model.rng.state)  # ops.CounterRNG: seed and counter
    state = optimizer.state_dict()
    mean = _checked_mean(channel_order, mean)

    def fill(f):
        _fill_weights(f, model.params, model.variant, model.input_size, channel_order, mean,
                      "alexnet_np checkpoint", model.dtype,
                      {"rng_state": rng_json, "extra": extra_json})
        group = f.create_group("optimizer")
        for name, v in state["velocity"].items():
            group.create_dataset(f"velocity/{name}", data=v)
        group.attrs["iteration"] = int(state["iteration"])
        for key in OPTIMIZER_HYPERPARAMETERS + ("warmup",):
            group.attrs[key] = state[key]
        group.attrs["mults"] = json.dumps(optimizer.mults)

    _atomic_h5_write(path, fill)


def load_checkpoint(path, model, optimizer):
    """Restore a :func:`save_checkpoint` file into ``model`` and ``optimizer``; returns ``extra``.

    ``optimizer`` must be built with the checkpoint's hyperparameters (a
    difference raises ValueError naming it), so the resumed run is the run that
    was saved.
    """
    path = os.fspath(path)
    with _open(path) as f:
        if "optimizer" not in f or "rng_state" not in f.attrs:
            raise ValueError(f"{path} holds weights but no training state (no /optimizer group "
                             f"or rng_state attribute): it is not a checkpoint from save_checkpoint")
        arrays = _read_params(f, path, model, model.param_layers)
        group = f["optimizer"]
        saved = {key: group.attrs[key] for key in OPTIMIZER_HYPERPARAMETERS}
        saved["warmup"] = int(group.attrs.get("warmup", 0))  # checkpoints from before the warm-up had none
        for key in saved:
            if saved[key] != getattr(optimizer, key):
                raise ValueError(f"{path}: the checkpoint was trained with {key}={saved[key]}, "
                                 f"the optimizer has {key}={getattr(optimizer, key)}; build SGD "
                                 f"with the checkpoint's settings to resume exactly")
        saved_mults = {k: tuple(v) for k, v in json.loads(group.attrs["mults"]).items()}
        if saved_mults != {k: tuple(v) for k, v in optimizer.mults.items()}:
            raise ValueError(f"{path}: the checkpoint's per-parameter (lr_mult, decay_mult) differ "
                             f"from the optimizer's (check new_layers / mults)")
        missing = sorted(set(optimizer.velocity) - set(group["velocity"]))
        if missing:
            raise KeyError(f"{path} has no momentum buffer for {missing}")
        velocity = {name: data[...] for name, data in group["velocity"].items()}
        iteration = int(group.attrs["iteration"])
        rng_state = json.loads(f.attrs["rng_state"])
        extra = json.loads(f.attrs["extra"])
    _assign(model, arrays)
    optimizer.load_state_dict({"iteration": iteration, "velocity": velocity})
    model.rng.set_state(rng_state)
    return extra
