"""What a pretrained weights file brings to a fine-tuning: which layers it fills, which input units
and mean it expects, and what it was pretrained on.

The paper fine-tuned "a pre-trained AlexNet ... on ImageNet". Two kinds of files arrive here:
converted ImageNet weights (``python -m alexnet_np.convert``: 0-255 input units, a per-channel mean,
torchvision's also a per-channel std) and the offline stand-in for ImageNet (pipeline/standin.py:
FractalDB-style images, recording its own input scale and held-out accuracy as attributes).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from alexnet_np import load_weights
from alexnet_np.weights import fold_input_std, weights_info

#: The offline stand-in for ImageNet (pipeline/standin.py), committed: the demo fine-tunes it as the
#: paper fine-tuned ImageNet weights. Its conv layers fit the full-width caffe network at any input size.
STANDIN_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "standin_caffe_99.h5"


def pretrained_origin(path) -> str:
    """What pretrained weights were trained on, for the report: "ImageNet" (converted weights), or
    the formula-driven stand-in of pipeline/standin.py, which records itself in a ``standin``
    attribute."""
    try:
        info = weights_info(path)
    except (OSError, ValueError, KeyError):
        return "ImageNet"
    if "standin" not in info:
        return "ImageNet"
    return ("the offline stand-in for ImageNet (pipeline/standin.py: FractalDB-style fractal categories, "
            f"held-out pretraining accuracy {float(info.get('pretrain_accuracy', float('nan'))):.3f}, "
            f"chance {float(info.get('pretrain_chance', float('nan'))):.3f})")


def pretrained_new_layers(info: dict, input_size: int) -> tuple:
    """The layers a fine-tuning draws fresh instead of taking from pretrained weights (``info``:
    weights_info of the file): fc8 (the task's own classes), and fc6-fc7 too when the input size
    differs, since fc6's input follows from it: then only conv1..conv5 transfer."""
    return ("fc8",) if int(info["input_size"]) == input_size else ("fc6", "fc7", "fc8")


def pretrained_input_scale(path) -> float:
    """The input scale pretrained weights were trained with: their ``input_scale`` attribute (the
    stand-in records it), else 1 (converted ImageNet weights take 0-255 units). An unreadable file
    gives 1 here; pipeline.config.check_inputs reports it."""
    try:
        return float(weights_info(path).get("input_scale", 1.0))
    except (OSError, ValueError, KeyError):
        return 1.0


def pretrained_mean(path) -> np.ndarray:
    """The mean a weights file's network was trained to have subtracted: (3,) per channel, float32."""
    return np.asarray(weights_info(path)["mean"], dtype=np.float32)


def start_from_pretrained(net, path) -> tuple:
    """Load a pretrained file into ``net`` for fine-tuning; returns the layers drawn fresh.

    conv1..conv5 (and fc6-fc7 at the file's input size) come from the file, the rest keep ``net``'s
    initialization; torchvision's per-channel std is folded into conv1 (its inputs are divided by
    255 * std, ours are not), so the network sees the units it was trained on.
    """
    info = weights_info(path)
    new_layers = pretrained_new_layers(info, net.input_size)
    load_weights(net, path, exclude=new_layers)
    if "std" in info:
        fold_input_std(net, info["std"])
    return new_layers
