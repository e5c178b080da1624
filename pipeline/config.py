"""Run configuration: the paper's settings, the laptop-sized demo preset, and what differs between them.

The paper gives: batch 50, momentum 0.9, weight decay 0.001, base lr 0.001
divided by 10 every 2,500 iterations, input 227 x 227, 6-fold cross-validation,
test fractions 5% (10%, 15% for robustness), ImageNet-pretrained AlexNet. It
does not give the number of iterations; the paper preset uses 7,500 (three lr
levels).

The demo preset is *designed* to show the whole pipeline working on a laptop
CPU in minutes: from-scratch training (no ImageNet weights can be downloaded
here) of the same network at a smaller input, where a step costs far less, with
He initialization and a learning rate found by experiment
(bench/demo_design.md has the measurements). Everything it changes from the
paper is listed by :func:`deviations` and printed at the start of a run and in
the report.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .data import needed_datasets

PAPER = {"batch_size": 50, "lr": 0.001, "lr_step": 2500, "momentum": 0.9, "weight_decay": 0.001,
         "gamma": 0.1, "input_size": 227, "cv": 6, "test_fractions": [0.05],
         "ffdm_patients": 1303, "ddsm_patients": 2412}

PRESETS = {
    "paper": dict(PAPER, iters=7500, pretrain_iters=7500, init="caffe", input_scale=1.0, difficulty=1.0,
                  augment_flip=False, augment_shift=0, fn_analysis="separate", checkpoint_every=250),
    "demo": dict(PAPER, iters=1000, pretrain_iters=600, init="he", input_scale=1 / 64, lr=0.001, lr_step=800,
                 batch_size=32, weight_decay=0.005, augment_flip=True, augment_shift=8,
                 input_size=99, gpu_input_size=227, gpu_augment_shift=18, cv=0, ffdm_patients=1000,
                 ddsm_patients=1000, difficulty=0.1, fn_analysis="holdout", checkpoint_every=100),
}

LABELS = {"batch_size": "batch size", "lr": "base learning rate", "lr_step": "lr step (iterations)",
          "momentum": "momentum", "weight_decay": "weight decay", "input_size": "input size (pixels)",
          "cv": "cross-validation folds", "ffdm_patients": "FFDM patients", "ddsm_patients": "DDSM patients",
          "init": "initialization"}


@dataclass
class StudyConfig:
    scenarios: list
    experiments: list
    test_fractions: list
    preset: str
    iters: int
    pretrain_iters: int
    batch_size: int
    lr: float
    lr_step: int
    momentum: float
    weight_decay: float
    gamma: float
    input_size: int
    init: str
    cv: int
    seed: int
    device: str
    fn_analysis: str
    checkpoint_every: int
    ffdm_patients: int
    ddsm_patients: int
    difficulty: float
    input_scale: float = 1.0
    augment_flip: bool = False
    augment_shift: int = 0
    widths: list | None = None
    variant: str = "caffe"
    dropout: float = 0.5
    pretrained: str | None = None
    data: dict = field(default_factory=dict)
    n_boot: int = 2000
    progress: bool = True

    def to_dict(self):
        return asdict(self)


def deviations(cfg: StudyConfig) -> list[str]:
    """Plain statements of everything this run does differently from the paper's setting."""
    out = []
    synthetic = [f"{getattr(cfg, f'{d}_patients')} {d.upper()}-like patients (paper: {PAPER[f'{d}_patients']} real "
                 f"patients)" for d in needed_datasets(cfg.experiments) if d not in cfg.data]
    if synthetic:
        out.append("synthetic mammograms (data_prep's generator) stand in for the study's data: " + ", ".join(synthetic))
    if not cfg.pretrained:
        out.append("no ImageNet weights (none can be downloaded here): the network is trained from scratch "
                   f"with {'He' if cfg.init == 'he' else 'Caffe'} initialization; the paper fine-tuned an "
                   "ImageNet-pretrained AlexNet")
    for key in ("input_size", "batch_size", "lr", "lr_step", "momentum", "weight_decay", "cv"):
        if getattr(cfg, key) != PAPER[key]:
            out.append(f"{LABELS[key]} {getattr(cfg, key)} (paper: {PAPER[key]})")
    if cfg.augment_flip or cfg.augment_shift:
        what = [w for w, on in (("random up-down mirroring", cfg.augment_flip),
                                (f"random shifts of up to {cfg.augment_shift} pixels", cfg.augment_shift)) if on]
        out.append("training-time augmentation: " + " and ".join(what) + " (the paper reports none)")
    if not cfg.data and cfg.difficulty != 1.0:
        out.append(f"synthetic lesions at difficulty {cfg.difficulty:g}, i.e. {1 / cfg.difficulty:g}x the generator's "
                   "default contrast, so that a network trained from scratch for minutes can find them")
    if cfg.input_scale != 1.0:
        out.append(f"inputs are scaled by {cfg.input_scale:g} after mean subtraction (Caffe's transform scale), "
                   "so that He-initialized layers start with unit-size activations; bvlc_alexnet takes 0-255 units")
    if cfg.input_size != PAPER["input_size"]:
        out.append("with a smaller input, fc6's input follows from pool5's output size, so fc6 is smaller "
                   "than AlexNet's 9216 x 4096")
    out.append(f"{cfg.iters} training iterations per model (the paper does not state its number)")
    if cfg.fn_analysis == "holdout":
        out.append("false-negative analysis: interval-cancer patients are held out of the main model's training "
                   "and test sets and scored by it (the paper retrained a separate model without them)")
    if cfg.widths:
        out.append(f"a miniature AlexNet with layer widths {cfg.widths} (conv1..conv5, fc6, fc7)")
    if cfg.variant != "caffe":
        out.append(f"network variant {cfg.variant} (paper: Caffe's bvlc_alexnet)")
    return out
