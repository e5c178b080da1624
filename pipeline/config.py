"""Run configuration: the paper's settings, the laptop-sized demo preset, and what differs between them.

The paper gives: batch 50, momentum 0.9, weight decay 0.001, base lr 0.001
divided by 10 every 2,500 iterations, input 227 x 227, 6-fold cross-validation,
test fractions 5% (10%, 15% for robustness), ImageNet-pretrained AlexNet. It
does not give the number of iterations; the paper preset uses 7,500 (three lr
levels).

The demo preset is *designed* to show the whole study learning on a laptop CPU
in minutes: the same network at a smaller input, where a step costs far less,
fine-tuned from the committed offline stand-in for ImageNet (fractals,
pipeline/standin.py; no ImageNet weights can be downloaded here), with an input
scale, learning rate and warm-up found by experiment on a synthetic cohort made
learnable in minutes (bench/demo_design.md has the measurements). Everything it changes from the
paper is listed by :func:`deviations` and printed at the start of a run and in
the report.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Callable

from alexnet_np import AlexNet, backend, load_weights
from alexnet_np.weights import weights_info
from data_prep.synthetic.cohort import VIEW_MODES

from .data import check_user_data
from .errors import UserError
from .experiments import DATASETS, EXPERIMENTS, needed_datasets
from .pretrained import STANDIN_WEIGHTS, pretrained_input_scale, pretrained_new_layers, pretrained_origin
from .scenarios import SCENARIOS

PAPER = {"batch_size": 50, "lr": 0.001, "lr_step": 2500, "momentum": 0.9, "weight_decay": 0.001,
         "gamma": 0.1, "input_size": 227, "cv": 6, "test_fractions": [0.05],
         "ffdm_patients": 1303, "ddsm_patients": 2412}

PRESETS = {
    "paper": dict(PAPER, iters=7500, pretrain_iters=7500, init="caffe", input_scale=1.0, difficulty=1.0, cv_select="iterations",
                  grain_scale=1.0, finding_scale=1.0, augment_flip=False, augment_shift=0, fn_analysis="separate",
                  checkpoint_every=250, synthetic_views="table1"),
    # lr 0.008 at input scale 1/512 moves the weights as lr 0.001 at 1/64 did, with 8x smaller first
    # steps of the logits; weight decay 0.000625 keeps lr x decay as before. Findings drawn 2x (grains
    # 1.5x more, 3x in all): at 99 px the shapes that tell benign from malignant do not show otherwise
    # (bench/demo_design.md, sections 1, 2 and 6).
    "demo": dict(PAPER, iters=1000, pretrain_iters=600, init="he", input_scale=1 / 512, lr=0.008, lr_step=800,
                 batch_size=32, weight_decay=0.000625, augment_flip=True, augment_shift=8,
                 input_size=99, gpu_input_size=227, gpu_augment_shift=18, cv=0, cv_select="none", ffdm_patients=1000,
                 ddsm_patients=1000, difficulty=0.1, finding_scale=2.0, grain_scale=1.5, fn_analysis="holdout",
                 checkpoint_every=100, pretrained=str(STANDIN_WEIGHTS), new_layer_lr_mult=1.0, warmup=100),
}
# The whole pipeline in under a minute on a laptop (smoke tests, teaching): the demo's recipe on a
# miniature network (no pretrained weights fit it) and a tiny cohort, at the same input size on a GPU.
PRESETS["tiny"] = dict({k: v for k, v in PRESETS["demo"].items() if not k.startswith("gpu_")},
                       pretrained=None, widths=[8, 12, 12, 12, 8, 16, 16], input_size=67, augment_shift=4,
                       ffdm_patients=120, ddsm_patients=120, test_fractions=[0.25], iters=60, pretrain_iters=30, lr_step=50,
                       batch_size=8, checkpoint_every=20, warmup=10, n_boot=500)

LABELS = {"batch_size": "batch size", "lr": "base learning rate", "lr_step": "lr step (iterations)",
          "momentum": "momentum", "weight_decay": "weight decay", "input_size": "input size (pixels)",
          "cv": "cross-validation folds", "ffdm_patients": "FFDM patients", "ddsm_patients": "DDSM patients",
          "init": "initialization"}


@dataclass(frozen=True)
class Option:
    """How a StudyConfig setting is given on run.py's command line (argparse's arguments); run.py
    builds its study options from these, so the settings and the options cannot drift apart."""

    help: str
    flag: str = ""                    # default: --the-field-name
    type: Callable | None = None
    nargs: str | int | None = None
    choices: tuple | None = None
    metavar: str | None = None


def _cli(help, **kw) -> dict:
    return {"option": Option(help, **kw)}


@dataclass
class StudyConfig:
    """Every setting of a run. Fields with an :class:`Option` in their metadata are run.py's study
    options (the value None there means "the preset's"); the others follow from the preset, the device
    or another option."""

    scenarios: list = field(metadata=_cli(
        f"one or more of {', '.join(SCENARIOS)}, or 'all' (default: malignant-vs-negative)",
        flag="--scenario", nargs="+", metavar="NAME"))
    experiments: list = field(metadata=_cli(
        f"one or more of {', '.join(EXPERIMENTS)}, or 'all' (default: ffdm)", flag="--experiment", nargs="+",
        metavar="NAME"))
    test_fractions: list = field(metadata=_cli(
        "held-out test fraction(s) of patients (the paper: 0.05; 0.10 and 0.15 for its robustness analysis)",
        flag="--test-fraction", nargs="+", type=float, metavar="F"))
    preset: str
    iters: int = field(metadata=_cli("SGD iterations per model (the paper does not state its number)", type=int))
    pretrain_iters: int = field(metadata=_cli("iterations of the incremental experiment's DDSM stage", type=int))
    batch_size: int = field(metadata=_cli("minibatch size", type=int))
    lr: float = field(metadata=_cli("base learning rate", type=float))
    lr_step: int = field(metadata=_cli("divide the lr by 10 every this many iterations", type=int))
    momentum: float = field(metadata=_cli("SGD momentum", type=float))
    weight_decay: float = field(metadata=_cli("weight decay", type=float))
    gamma: float
    input_size: int = field(metadata=_cli(
        "network input in pixels (the demo uses the paper's 227 on a GPU)", type=int))
    init: str = field(metadata=_cli(
        "weight initialization when training from scratch: caffe = bvlc_alexnet's fillers, he = He et al.",
        choices=("caffe", "he")))
    cv: int = field(metadata=_cli(
        "cross-validation folds inside the training set, 0 = off (CV multiplies the training cost by the "
        "fold count)", type=int))
    cv_select: str = field(metadata=_cli(
        "what the cross-validation decides: iterations = the training length (each fold is scored on its "
        "validation patients at every checkpoint, the iteration with the best mean validation AUC over the "
        "folds is chosen, and the reported model trains that long on the whole training split: the paper's "
        "\"calibrating accuracy of the training process\"); none = the fold AUCs are only reported",
        choices=("iterations", "none")))
    seed: int = field(metadata=_cli("seed for data generation, splits, initialization and order (default 0)",
                                    type=int))
    device: str
    fn_analysis: str = field(metadata=_cli(
        "false-negative (interval cancer) analyses: separate = both of the paper's: retrain without the "
        "interval-cancer patients, and retrain with half of them, scoring the other half (two models, halves "
        "swapped); holdout = hold them out of the main model; off", choices=("separate", "holdout", "off")))
    checkpoint_every: int = field(metadata=_cli("iterations between checkpoints", type=int))
    ffdm_patients: int
    ddsm_patients: int
    difficulty: float = field(metadata=_cli(
        "synthetic lesion subtlety, larger = harder: lesion contrast is divided by it (generator default 1)",
        type=float))
    grain_scale: float = field(default=1.0, metadata=_cli(
        "synthetic calcification grains are drawn this many times their real size (generator default 1)",
        type=float))
    finding_scale: float = field(default=1.0, metadata=_cli(
        "synthetic findings are drawn magnified this many times, every length of them (calcification grains: "
        "both scales; generator default 1)", type=float))
    synthetic_views: str = field(default="standard", metadata=_cli(
        "views per exam of the synthetic cohorts: standard = four (the cancer-affected breast's two for "
        "malignant patients), as the paper's text says; table1 = an extra XCCL view or one view fewer for some "
        "patients, so that the --test-fraction 0.05 split holds exactly the paper's Table 1 image counts (at the "
        "paper's cohort sizes)", choices=VIEW_MODES))
    input_scale: float = field(default=1.0, metadata=_cli(
        "multiply the mean-subtracted input by this (Caffe's transform scale; bvlc_alexnet: 1; default: the "
        "--pretrained file's own scale, else the preset's)", type=float))
    augment_flip: bool = field(default=False, metadata=_cli(
        "1 = mirror a random half of each batch up-down (the paper: none)", type=int, choices=(0, 1)))
    augment_shift: int = field(default=0, metadata=_cli(
        "random translations of up to this many pixels (the paper: none; the demo scales it with the input)",
        type=int, metavar="PIXELS"))
    widths: list | None = field(default=None, metadata=_cli(
        "layer widths conv1..conv5 fc6 fc7 of a miniature AlexNet (smoke tests, teaching); default the "
        "variant's (96 256 384 384 256 4096 4096)", type=int, nargs=7, metavar="W"))
    variant: str = field(default="caffe", metadata=_cli(
        "network: caffe = bvlc_alexnet as in the paper (default), or torchvision's AlexNet",
        choices=("caffe", "torchvision")))
    dropout: float = 0.5
    pretrained: str | None = field(default=None, metadata=_cli(
        "converted ImageNet weights (python -m alexnet_np.convert ...; fine-tuned at lr 0.001, fresh layers at "
        "10x, as the paper's ImageNet-pretrained AlexNet), the stand-in of `python run.py standin`, or 'none' "
        "(from scratch)", metavar="WEIGHTS.h5"))
    new_layer_lr_mult: float = field(default=10.0, metadata=_cli(
        "with --pretrained: the freshly drawn layers learn at M times the lr (Caffe's fine-tuning recipe: 10; "
        "the paper does not say)", type=float, metavar="M"))
    warmup: int = field(default=0, metadata=_cli(
        "raise the lr linearly over this many first iterations (the paper: none)", type=int, metavar="ITERS"))
    data: dict = field(default_factory=dict, metadata=_cli(
        "ffdm=PATH and/or ddsm=PATH: a manifest CSV (built here and cached) or a dataset HDF5 from "
        "`python -m data_prep build`; default: the synthetic cohorts", nargs="+", metavar="DATASET=PATH"))
    n_boot: int = field(default=2000, metadata=_cli("bootstrap replicates for the CIs (default 2000)", type=int))
    progress: bool = True

    def to_dict(self):
        return asdict(self)


#: --patients sets ffdm_patients and ddsm_patients together.
PATIENTS_OPTION = Option("synthetic cohort sizes, e.g. ffdm=1303 ddsm=2412", flag="--patients", nargs="+",
                         metavar="DATASET=N")


def option_flag(name: str) -> str:
    """The command-line option of a setting, for messages: its Option's flag, else --the-name."""
    if name in ("ffdm_patients", "ddsm_patients", "patients"):
        return PATIENTS_OPTION.flag
    for f in fields(StudyConfig):
        if f.name == name and "option" in f.metadata and f.metadata["option"].flag:
            return f.metadata["option"].flag
    return "--" + name.replace("_", "-")


def _preset_values(name: str) -> str:
    def show(v):
        return " ".join(map(str, v)) if isinstance(v, list) else f"{v:g}" if isinstance(v, float) else str(v)
    keys = {"patients": ("ffdm_patients", "ddsm_patients")}.get(name, (name,))
    parts = []
    for preset in ("paper", "demo"):
        values = [f"{k.split('_')[0]}={PRESETS[preset][k]}" if name == "patients" else show(PRESETS[preset][k])
                  for k in keys if k in PRESETS[preset]]
        if values:
            parts.append(f"{preset}: {' '.join(values)}")
    return f" [{'; '.join(parts)}]" if parts else ""


def study_options() -> list[tuple[str, Option, str]]:
    """run.py's study options: (setting name, Option, help with the presets' values appended)."""
    out = [(f.name, f.metadata["option"], f.metadata["option"].help + _preset_values(f.name))
           for f in fields(StudyConfig) if "option" in f.metadata]
    return out + [("patients", PATIENTS_OPTION, PATIENTS_OPTION.help + _preset_values("patients"))]


def _pairs(items, option):
    """``["ffdm=a", "ddsm=b"]`` -> ``{"ffdm": "a", "ddsm": "b"}``."""
    out = {}
    for item in items:
        name, sep, value = str(item).partition("=")
        if not sep or name not in DATASETS or not value:
            raise UserError(f"{option} {item!r}: expected ffdm=VALUE and/or ddsm=VALUE")
        out[name] = value
    return out


def _names(values, allowed, option):
    if "all" in values:
        return list(allowed)
    bad = [v for v in values if v not in allowed]
    if bad:
        raise UserError(f"{option} {' '.join(bad)}: expected one or more of {', '.join(allowed)}, or 'all'")
    return list(dict.fromkeys(values))


def resolve_config(preset: str, overrides: dict, device: str) -> StudyConfig:
    """The run's settings: the preset's values, replaced by every override that is not None.

    ``overrides`` maps StudyConfig fields to the command line's values (``data`` and ``patients``
    as ``DATASET=VALUE`` strings, ``scenarios``/``experiments`` may say ``all``); ``device`` is
    ``"cpu"`` or ``"gpu"``, the array backend in use. Two rules depend on more than one setting:
    a GPU affords the demo the paper's input size (and shifts scaled to it), and pretrained
    weights expect the input units they were trained with (the file's ``input_scale`` attribute,
    e.g. the stand-in's 1/512; else 0-255 units, scale 1, as converted ImageNet weights) unless
    ``input_scale`` is given; under the demo preset, weights in other units than its 1/512 are
    fine-tuned at the paper's lr and weight decay, fresh layers at 10x. The demo fine-tunes the
    stand-in (:data:`STANDIN_WEIGHTS`) unless ``pretrained`` is ``"none"`` or the network is not the
    full-width caffe one it fits (then from scratch; :func:`deviations` says which). Raises
    :class:`UserError` on a bad value (see :func:`check_config`).
    """
    if preset not in PRESETS:
        raise UserError(f"--preset {preset!r}: expected one of {', '.join(sorted(PRESETS))}")
    values = dict(scenarios=["malignant-vs-negative"], experiments=["ffdm"], seed=0, data=[], **PRESETS[preset])
    if device == "gpu" and "gpu_input_size" in values:
        values["input_size"] = values["gpu_input_size"]
        values["augment_shift"] = values["gpu_augment_shift"]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - {f.name for f in fields(StudyConfig)} - {"patients"}
    if unknown:
        raise ValueError(f"resolve_config: no such settings {sorted(unknown)}")  # a caller's bug
    patients = _patients(overrides.pop("patients", []))
    values.update({f"{name}_patients": n for name, n in patients.items()})
    if str(overrides.get("pretrained", "")).lower() == "none":
        overrides["pretrained"] = None   # --pretrained none: from scratch
    elif overrides.get("pretrained") and "input_scale" not in overrides:
        values["input_scale"] = pretrained_input_scale(overrides["pretrained"])
        if preset == "demo" and values["input_scale"] != PRESETS["demo"]["input_scale"]:
            # the demo's lr, decay and fresh-layer multiplier suit its 1/512 inputs; weights in other
            # units (ImageNet's 0-255) get Caffe's fine-tuning recipe at the paper's settings
            values.update(lr=PAPER["lr"], weight_decay=PAPER["weight_decay"], new_layer_lr_mult=10.0)
    values.update(overrides)
    full_caffe = not values.get("widths") and values.get("variant", "caffe") == "caffe"
    if values.get("pretrained") == str(STANDIN_WEIGHTS) and not full_caffe:
        values["pretrained"] = None      # the stand-in's conv layers fit only the full-width caffe network
    values["scenarios"] = _names(values["scenarios"], list(SCENARIOS), "--scenario")
    values["experiments"] = _names(values["experiments"], EXPERIMENTS, "--experiment")
    values["data"] = _pairs(values["data"], "--data") if isinstance(values["data"], list) else dict(values["data"])
    values.update(preset=preset, device=device)
    cfg = StudyConfig(**{f.name: values[f.name] for f in fields(StudyConfig) if f.name in values})
    check_config(cfg)
    check_inputs(cfg)
    return cfg


def positive_int(text) -> int:
    """A whole number >= 1 written as ``text``; ValueError (saying what was expected) otherwise."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"got {text!r}, expected a whole number of at least 1")
    return value


def _patients(items) -> dict:
    """``--patients ffdm=N ddsm=N`` -> {"ffdm": N, "ddsm": N}."""
    out = {}
    for name, text in _pairs(items, "--patients").items():
        try:
            out[name] = positive_int(text)
        except ValueError:
            raise UserError(f"--patients {name}={text}: expected a whole number of patients >= 1") from None
    return out


def check_config(cfg: StudyConfig):
    """Every setting within what the study can run, before any data are generated or trained on."""
    def need(ok, name, value, expected):
        if not ok:
            raise UserError(f"{option_flag(name)} {value}: expected {expected}")

    for f in cfg.test_fractions:
        need(0 < f < 1, "test_fractions", f, "a fraction of the patients strictly between 0 and 1, e.g. 0.05")
    need(cfg.iters >= 0, "iters", cfg.iters, "0 or more iterations")
    need(cfg.pretrain_iters >= 0, "pretrain_iters", cfg.pretrain_iters, "0 or more iterations")
    need(cfg.batch_size >= 1, "batch_size", cfg.batch_size, "at least 1 image per minibatch")
    need(cfg.lr > 0, "lr", cfg.lr, "a learning rate above 0")
    need(cfg.lr_step >= 1, "lr_step", cfg.lr_step, "at least 1 iteration")
    need(0 <= cfg.momentum < 1, "momentum", cfg.momentum, "a momentum in [0, 1)")
    need(cfg.weight_decay >= 0, "weight_decay", cfg.weight_decay, "0 or more")
    need(cfg.cv == 0 or cfg.cv >= 2, "cv", cfg.cv, "0 (off) or at least 2 folds")
    need(cfg.cv_select == "none" or cfg.cv >= 2, "cv_select", cfg.cv_select,
         f"none, or --cv 2 or more folds to select with (--cv is {cfg.cv})")
    need(cfg.warmup >= 0, "warmup", cfg.warmup, "0 (off) or more iterations")
    need(cfg.new_layer_lr_mult > 0, "new_layer_lr_mult", cfg.new_layer_lr_mult, "a multiplier above 0")
    need(cfg.input_scale > 0, "input_scale", cfg.input_scale, "a scale above 0")
    need(0 <= cfg.augment_shift < cfg.input_size // 2, "augment_shift", cfg.augment_shift,
         f"0 or more pixels, less than half the input size ({cfg.input_size})")
    need(cfg.difficulty > 0, "difficulty", cfg.difficulty, "a value above 0 (1 = the generator's default)")
    need(cfg.grain_scale > 0, "grain_scale", cfg.grain_scale, "a value above 0 (1 = real calcification grain sizes)")
    need(cfg.finding_scale > 0, "finding_scale", cfg.finding_scale, "a value above 0 (1 = findings at their real size)")
    need(cfg.synthetic_views in VIEW_MODES, "synthetic_views", cfg.synthetic_views, f"one of {', '.join(VIEW_MODES)}")
    need(cfg.checkpoint_every >= 1, "checkpoint_every", cfg.checkpoint_every, "at least 1 iteration")
    need(cfg.n_boot >= 1, "n_boot", cfg.n_boot, "at least 1 bootstrap replicate")
    if cfg.widths is not None:
        need(all(w >= 1 for w in cfg.widths), "widths", " ".join(map(str, cfg.widths)), "7 widths of at least 1")
    try:  # two channels per layer give the real network's shapes at a negligible cost
        AlexNet(2, variant=cfg.variant, input_size=cfg.input_size, widths=cfg.widths or (2,) * 7)
    except ValueError as e:
        what = f"--input-size {cfg.input_size}" + (f" --widths {' '.join(map(str, cfg.widths))}" if cfg.widths else "")
        raise UserError(f"{what}: expected a network AlexNet can build ({e})") from None
    missing = [d for d in needed_datasets(cfg.experiments) if d not in cfg.data]
    if cfg.data and missing:
        raise UserError(f"--data {' '.join(f'{k}={v}' for k, v in cfg.data.items())}: --experiment "
                        f"{' '.join(cfg.experiments)} also needs {' and '.join(f'{d}=PATH' for d in missing)} "
                        "(or no --data at all, for the synthetic cohorts)")


def check_inputs(cfg: StudyConfig):
    """Every file the run will read (--data, --pretrained) exists and holds what it must."""
    for name, path in cfg.data.items():
        try:
            check_user_data(name, path, cfg.input_size)
        except ValueError as e:
            raise UserError(str(e)) from None
    if cfg.pretrained:
        try:
            info = weights_info(cfg.pretrained)
        except (FileNotFoundError, ValueError, KeyError) as e:
            raise UserError(f"--pretrained {cfg.pretrained}: {e}") from None
        if info.get("variant") != cfg.variant:
            raise UserError(f"--pretrained {cfg.pretrained}: holds {info.get('variant')!r} weights; expected "
                            f"weights of the network's --variant {cfg.variant}")
        # Load them into the network the jobs will build (seconds): a layer of another shape is found
        # here, not after the data are prepared.
        net = AlexNet(2, variant=cfg.variant, input_size=cfg.input_size, widths=cfg.widths)
        try:
            load_weights(net, cfg.pretrained, exclude=pretrained_new_layers(info, cfg.input_size))
        except ValueError as e:
            raise UserError(f"--pretrained {cfg.pretrained}: {str(e).splitlines()[0]}") from None


def deviations(cfg: StudyConfig) -> list[str]:
    """Plain statements of everything this run does differently from the paper's setting."""
    out = []
    synthetic = [f"{getattr(cfg, f'{d}_patients')} {d.upper()}-like patients (paper: {PAPER[f'{d}_patients']} real "
                 f"patients)" for d in needed_datasets(cfg.experiments) if d not in cfg.data]
    if synthetic:
        out.append("synthetic mammograms (data_prep's generator) stand in for the study's data: " + ", ".join(synthetic))
    if not cfg.pretrained:
        why = (" (the demo's stand-in weights fit only the full-width caffe network)"
               if cfg.preset == "demo" and (cfg.widths or cfg.variant != "caffe") else "")
        out.append("no ImageNet weights (none can be downloaded here): the network is trained from scratch "
                   f"with {'He' if cfg.init == 'he' else 'Caffe'} initialization{why}; the paper fine-tuned an "
                   "ImageNet-pretrained AlexNet")
    elif pretrained_origin(cfg.pretrained) != "ImageNet":
        out.append(f"pretrained on {pretrained_origin(cfg.pretrained)}, NOT on ImageNet (as the paper was): "
                   f"{cfg.pretrained}, conv1..conv5 transferred, fc6-fc8 drawn fresh")
    if cfg.pretrained:
        out.append(f"mean subtraction: the pretrained file's per-channel mean ({cfg.pretrained}) at every stage of "
                   "every chain that starts from it, the FFDM-only baseline and the incremental fine-tune alike, so "
                   "the paired comparison differs only in the DDSM stage (the paper says \"mean subtracting\" "
                   "without saying which mean; Caffe's fine-tuning example kept ImageNet's)")
    if cfg.pretrained and cfg.new_layer_lr_mult != 10.0:
        out.append(f"the freshly drawn layers learn at {cfg.new_layer_lr_mult:g}x the lr (Caffe's fine-tuning "
                   "recipe: 10x; the paper does not say)")
    for key in ("input_size", "batch_size", "lr", "lr_step", "momentum", "weight_decay", "cv"):
        if getattr(cfg, key) != PAPER[key]:
            out.append(f"{LABELS[key]} {getattr(cfg, key)} (paper: {PAPER[key]})")
    if cfg.augment_flip or cfg.augment_shift:
        what = [w for w, on in (("random up-down mirroring", cfg.augment_flip),
                                (f"random shifts of up to {cfg.augment_shift} pixels", cfg.augment_shift)) if on]
        out.append("training-time augmentation: " + " and ".join(what) + " (the paper reports none)")
    if not cfg.data and cfg.synthetic_views == "table1":
        out.append("synthetic exams with the views that give Table 1's image counts on the 5% split (some an "
                   "exaggerated CC view more, a few a view fewer): the paper's text says four views a patient, "
                   "the affected breast's two for malignant ones, which cannot give its Table 1 (1,504 < 1,600 "
                   "recalled-benign FFDM images)")
    if not cfg.data and cfg.difficulty != 1.0:
        out.append(f"synthetic lesions at difficulty {cfg.difficulty:g}, i.e. {1 / cfg.difficulty:g}x the generator's "
                   "default contrast, so that a network trained from scratch for minutes can find them")
    if not cfg.data and cfg.finding_scale != 1.0:
        out.append(f"synthetic findings drawn magnified {cfg.finding_scale:g}x (every length: outline, spicules, "
                   f"cluster, grains), as in a magnification view, because at {cfg.input_size} px a pixel is about "
                   "1.5 mm of breast and the shapes that tell benign from malignant findings do not show")
    if not cfg.data and cfg.grain_scale != 1.0:
        both = f", {cfg.grain_scale * cfg.finding_scale:g}x with the magnification" if cfg.finding_scale != 1 else ""
        out.append(f"synthetic calcification grains drawn {cfg.grain_scale:g}x their real size (0.15-1.3 mm){both}, "
                   f"because at {cfg.input_size} px real grains are a fraction of a pixel and clipped by the "
                   "display window, and a network trained for minutes misses them")
    if cfg.input_scale != 1.0:
        out.append(f"inputs are scaled by {cfg.input_scale:g} after mean subtraction (Caffe's transform scale): "
                   "He-initialized layers see small inputs, so the first SGD steps do not throw the softmax "
                   "into saturation; bvlc_alexnet takes 0-255 units")
    if cfg.input_size != PAPER["input_size"]:
        out.append("with a smaller input, fc6's input follows from pool5's output size, so fc6 is smaller "
                   "than AlexNet's 9216 x 4096")
    if cfg.cv >= 2 and cfg.cv_select == "none":
        out.append("the cross-validation's fold AUCs are reported but choose nothing (the paper: \"calibrating "
                   "accuracy of the training process\"; --cv-select iterations lets them choose the training length)")
    out.append(f"{cfg.iters} training iterations per model (the paper does not state its number)"
               + (", the most the cross-validation may choose" if cfg.cv >= 2 and cfg.cv_select == "iterations" else ""))
    if cfg.warmup:
        out.append(f"the lr rises linearly over the first {cfg.warmup} iterations (warm-up; the paper starts at "
                   "its base lr), so that the first steps cannot saturate the softmax")
    odd = [f for f in cfg.test_fractions if f not in (0.05, 0.10, 0.15)]
    if odd:
        out.append(f"test fraction {', '.join(f'{f:g}' for f in odd)} (the paper: 0.05, and 0.10 and 0.15 for "
                   "robustness)")
    if cfg.fn_analysis == "off":
        out.append("no false-negative analyses (--fn-analysis off; the paper ran two)")
    if cfg.fn_analysis == "holdout":
        out.append("false-negative analysis: interval-cancer patients are held out of the main model's training "
                   "and test sets and scored by it (the paper retrained a separate model without them)")
    if cfg.widths:
        out.append(f"a miniature AlexNet with layer widths {cfg.widths} (conv1..conv5, fc6, fc7)")
    if cfg.variant != "caffe":
        out.append(f"network variant {cfg.variant} (paper: Caffe's bvlc_alexnet)")
    return out


def select_device(choice: str) -> str:
    """Point alexnet_np at the device (--device cpu, gpu or auto); returns "cpu" or "gpu"."""
    try:
        backend.set_backend({"cpu": "numpy", "gpu": "cupy", "auto": "auto"}[choice])
    except RuntimeError as e:
        raise UserError(f"--device {choice}: {e}") from None
    return "gpu" if backend.backend_name() == "cupy" else "cpu"
