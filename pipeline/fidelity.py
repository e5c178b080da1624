"""The fidelity table: every setting and step of the paper, the value a run uses, and where it comes from.

Each :class:`FidelityRow` quotes the paper's own words (short exact quotes, so that a text search
finds them in the paper), gives the value of *this* configuration (computed from the StudyConfig,
so the table cannot drift from the run), and its kind:

* ``as the paper``: the paper states it and the run does the same;
* ``assumption``: the paper is silent (or vague); the reason for the choice is given;
* ``departure``: the run differs from the paper; the reason is the line of
  :func:`pipeline.config.deviations` that says so, the same list a run prints at its start and in
  its report, so the table and that list cannot disagree. The few settings ``deviations`` does not
  cover (gamma, test fractions other than the paper's, the false-negative analyses switched off)
  give their own reason.

:func:`fidelity_markdown` renders the table for the report; :func:`write_docs`
writes docs/fidelity.md (the paper and demo presets), which a test keeps current.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import data_prep
from alexnet_np import AlexNet
from alexnet_np.model import DEFAULT_WIDTHS
from alexnet_np.weights import weights_info
from data_prep.fileio import atomic_output

from .config import LABELS, PAPER, StudyConfig, deviations, resolve_config
from .evaluate import BREAST_RULE, PATIENT_RULE, RADIOLOGIST_SENSITIVITY
from .experiments import FN_EXPERIMENTS, FN_SCENARIOS, needed_datasets
from .jobs import MEAN_RULES
from .pretrained import pretrained_new_layers, pretrained_origin
from .scenarios import SCENARIOS

AS_PAPER, ASSUMPTION, DEPARTURE = "as the paper", "assumption", "departure"

#: data_prep.preprocess.preprocess_steps's functions in the order it calls them, with what each does
#: (a test reads that function's source and checks the order).
PREPROCESSING_ORDER = (("breast_mask", "breast mask"), ("orient", "orientation (chest wall left)"),
                       ("crop_to_breast", "crop to the breast"), ("resize_bicubic", "bicubic downsampling"),
                       ("equalize_histogram", "histogram equalization over the breast"),
                       ("to_uint8", "8-bit storage"))
#: The paper's robustness analysis: "using 10% and 15% of the data as independent sets for testing".
ROBUSTNESS_FRACTIONS = (0.10, 0.15)
REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS_PATH = REPO_ROOT / "docs" / "fidelity.md"


@dataclass(frozen=True)
class FidelityRow:
    """One setting or step: the paper's words (empty: the paper does not state it), the value here,
    its kind (AS_PAPER, ASSUMPTION or DEPARTURE) and its source (the reason, or deviations' line)."""

    topic: str
    paper: tuple
    here: str
    kind: str
    source: str


def _row(topic, paper, here, kind, reason="", said=()) -> FidelityRow:
    """A row; its source is ``said`` (the lines of deviations() about it, one per line) when there are
    any, else ``reason``, else the paper's words."""
    return FidelityRow(topic, tuple(paper), here, kind, "\n".join(said) or reason or "the paper's words")


def _departs(said, usual, reason="", differs=False, own_reason=""):
    """(kind, reason): a departure when deviations() says so (``said``) or, for a setting it does not
    cover, when ``differs`` (with ``own_reason``); else ``usual`` with ``reason``."""
    if said:
        return DEPARTURE, ""
    if differs:
        return DEPARTURE, own_reason
    return usual, reason


def _default(function, name):
    """A parameter's default: the pipeline builds every dataset with data_prep's defaults."""
    return inspect.signature(function).parameters[name].default


def _network(cfg) -> str:
    widths = list(cfg.widths or DEFAULT_WIDTHS[cfg.variant])
    # two channels per layer give pool5's spatial size at a negligible cost
    _, h, w = AlexNet(2, variant=cfg.variant, input_size=cfg.input_size, widths=(2,) * 7).pool5_shape
    kind = ("Caffe's bvlc_alexnet: LRN after conv1 and conv2, conv2/conv4/conv5 in two groups"
            if cfg.variant == "caffe" else "torchvision's AlexNet: no LRN, no groups")
    return (f"{kind}; ReLU; widths conv1..conv5, fc6, fc7 = {widths}; fc6 {widths[4] * h * w} -> {widths[5]}; "
            f"dropout {cfg.dropout:g} on fc6 and fc7; fc8 = the scenario's 2 or 3 classes, softmax")


def _start(cfg) -> tuple[str, str]:
    """(what the models start from, in a few words; the file or initialization)."""
    if not cfg.pretrained:
        return "from scratch", f"{'He' if cfg.init == 'he' else 'Caffe'} initialization"
    origin = pretrained_origin(cfg.pretrained)
    return ("ImageNet" if origin == "ImageNet" else "the offline stand-in for ImageNet"), str(cfg.pretrained)


def fidelity_rows(cfg: StudyConfig) -> list[FidelityRow]:
    """The fidelity table of ``cfg``: every setting and step of the paper, grouped as the paper's
    Materials and Methods (data, preprocessing, network and pretraining, training, design, statistics)."""
    devs = deviations(cfg)

    def said(*phrases):
        return [d for d in devs if any(p in d for p in phrases)]

    def paper_number(key, quote, here=None):
        value, s = getattr(cfg, key), said(f"{LABELS[key]} ")
        return _row(LABELS[key], [quote], str(value) if here is None else here,
                    *_departs(s, AS_PAPER, differs=value != PAPER[key], own_reason=f"paper: {PAPER[key]}"), said=s)

    rows = []
    # --- data
    datasets = needed_datasets(cfg.experiments)
    here = "; ".join(f"{d.upper()}: " + (f"the user's data, {cfg.data[d]}" if d in cfg.data else
                                         f"synthetic, {getattr(cfg, f'{d}_patients')} patients") for d in datasets)
    if any(d not in cfg.data for d in datasets):
        here += (f"; synthetic lesion difficulty {cfg.difficulty:g}, findings magnified {cfg.finding_scale:g}x, "
                 f"calcification grains {cfg.grain_scale:g}x")
    s = said("synthetic ")
    rows.append(_row("data", ["cohort of 1,303 patients (5,212 mammogram images)",
                              "9,648 images consisting of 2,412 patient cases"], here,
                     *_departs(s, AS_PAPER, "the user's own screening mammograms (--data)"), said=s))

    synthetic = [d for d in datasets if d not in cfg.data]
    s = said("synthetic exams")
    if synthetic:
        here = ("views per exam chosen so that the 5% patient-level split holds Table 1's image counts exactly: the "
                "four (the affected breast's CC and MLO for malignant patients), some exams an XCCL more or a view "
                "fewer" if cfg.synthetic_views == "table1" else
                "four views a patient, the affected breast's two for malignant patients")
        rows.append(_row("views per exam (synthetic data)", ["the standard four screening mammography views",
                                                             "only images of the cancer-affected breast were used"],
                         here, *_departs(s, AS_PAPER), said=s))

    # --- preprocessing
    size = cfg.input_size
    steps = [f"{what} to {size} x {size}" if fn == "resize_bicubic" else what for fn, what in PREPROCESSING_ORDER]
    here = (" -> ".join(steps) + f" (aspect {_default(data_prep.build_dataset, 'aspect')}, equalization "
            f"{_default(data_prep.build_dataset, 'equalize')}); mean subtraction when the network reads an image")
    rows.append(_row("preprocessing steps and their order",
                     ["images were preprocessed using standard techniques including histogram equalization, mean "
                      "subtracting, and downsampling using standard bicubic interpolation to 227"], here, ASSUMPTION,
                     "The paper lists the techniques, not their order. Equalization comes after downsampling: a "
                     "per-pixel mapping, so the stored pixels get an exactly flat histogram (and it costs 227^2, "
                     "not ~10^7 pixels). The orientation and the crop to the breast (which removes film labels "
                     "and markers) are read as among the 'standard techniques'."))
    rows.append(paper_number("input_size", "bicubic interpolation to 227", f"{size} x {size}"))
    rule = "pretrained-file" if cfg.pretrained else "training-split"
    rows.append(_row("mean subtraction", ["mean subtracting"], f"{MEAN_RULES[rule]} (rule {rule!r}, recorded in "
                     "each model.h5)", ASSUMPTION, "The paper does not say which mean. One rule for the whole run, "
                     "so both arms of every paired comparison are normalized alike.", said("mean subtraction:")))
    s = said("inputs are scaled by")
    rows.append(_row("input scale", [], f"(image - mean) x {cfg.input_scale:g}",
                     *_departs(s, ASSUMPTION, "bvlc_alexnet takes 0-255 units (scale 1); the paper does not say."),
                     said=s))
    s = said("training-time augmentation")
    augment = [w for w, on in (("random up-down mirroring", cfg.augment_flip),
                               (f"random shifts of up to {cfg.augment_shift} pixels", cfg.augment_shift)) if on]
    rows.append(_row("augmentation", ["trained with the goal of increasing variation of the data and avoiding "
                                      "overfitting"], " and ".join(augment) or "none",
                     *_departs(s, ASSUMPTION, "The paper names no augmentation."), said=s))

    # --- network and pretraining
    s = said("fc6 is smaller", "miniature AlexNet", "network variant")
    rows.append(_row("network", ["a modified version of the AlexNet", "five convolutional layers (includes "
                                 "max-pooling in the 1st, 2nd, and 5th convolutional layers)",
                                 "rectified linear units"], _network(cfg),
                     *_departs(s, ASSUMPTION, "'Modified' is read as a new output layer fc8 with the scenario's "
                               "classes; the paper does not say what else, if anything, it changed."), said=s))
    s = said("no ImageNet weights", "NOT on ImageNet")
    rows.append(_row("pretraining", ["We pretrained all the CNN models with a large existing image dataset"],
                     "{} ({})".format(*_start(cfg)), *_departs(s, AS_PAPER), said=s))
    if cfg.pretrained:
        fresh = pretrained_new_layers(weights_info(cfg.pretrained), cfg.input_size)
        here = (f"drawn fresh: {', '.join(fresh)} (and any layer the file lacks), learning at "
                f"{cfg.new_layer_lr_mult:g}x the lr; the other layers from the file")
        s = said("freshly drawn layers")
        kind, reason = _departs(s, ASSUMPTION, "Caffe's fine-tuning recipe (10x); the paper does not say.")
    else:
        s, here, kind, reason = said("no ImageNet weights"), "nothing to fine-tune: trained from scratch", DEPARTURE, ""
    rows.append(_row("fine-tuning", ["then fine-tuned the models with our own mammography dataset"], here, kind,
                     reason, s))

    # --- training
    rows.append(paper_number("batch_size", "batch size of 50 for stochastic gradient descent"))
    rows.append(paper_number("lr", "we started with 0.001"))
    s = said(f"{LABELS['lr_step']} ")
    rows.append(_row("lr schedule", ["dropped the rate by a factor of 10 every 2,500 iterations"],
                     f"multiplied by {cfg.gamma:g} every {cfg.lr_step} iterations",
                     *_departs(s, AS_PAPER, differs=cfg.gamma != PAPER["gamma"],
                               own_reason=f"the lr is multiplied by {cfg.gamma:g} (paper: 0.1)"), said=s))
    rows.append(paper_number("momentum", "a momentum of 0.9"))
    rows.append(paper_number("weight_decay", "a weight decay of 0.001"))
    s = said("the lr rises linearly")
    rows.append(_row("warm-up", ["we started with 0.001"],
                     f"the lr rises linearly over {cfg.warmup} iterations" if cfg.warmup else "none",
                     *_departs(s, AS_PAPER), said=s))
    select = getattr(cfg, "cv_select", "none")
    here = f"{cfg.iters} per model, {cfg.pretrain_iters} for the incremental DDSM stage"
    if cfg.cv >= 2 and select == "iterations":
        here += f"; the final models train as long as the cross-validation chooses (at most {cfg.iters})"
    rows.append(_row("iterations", [], here, ASSUMPTION, "The paper does not state them.",
                     said("training iterations per model")))

    # --- design
    rows.append(_row("scenarios", ["six classification scenarios"],
                     f"{len(cfg.scenarios)} of the {len(SCENARIOS)} in this run: {', '.join(cfg.scenarios)}", AS_PAPER,
                     "A run does the scenarios its --scenario names."))
    rows.append(_row("class balancing", ["images per category"],
                     "each class of a scenario gets n images, n = the smallest count among the labels the scenario "
                     "uses (a merged class draws n / its members from each), on the training and the test side "
                     "separately", ASSUMPTION,
                     "Table 1 lists equal 'images per category' and the same count (867 on FFDM) for all five "
                     "'Others' scenarios, benign vs rest included: the malignant images' number, the smallest label."))
    rows.append(_row("experiments", ["(i) using the FFDM dataset only for training and testing",
                                     "(ii) using the DDSM dataset only for training and testing"],
                     f"this run: {', '.join(cfg.experiments)}", AS_PAPER,
                     "A run does the experiments its --experiment names."))
    def absent(experiment):
        return "" if experiment in cfg.experiments else " (not in this run)"

    rows.append(_row("combined experiment", ["combining the datasets (mixing up) for both training and testing"],
                     "each source balanced per class, then merged: every class has the same FFDM/DDSM share"
                     + absent("combined"), ASSUMPTION,
                     "Mixed so that the source cannot stand in for the class; Table 1's combined counts are the "
                     "sums of the per-dataset ones (4,161 = 1,520 + 2,641)."))
    s = said("no ImageNet weights", "NOT on ImageNet")
    rows.append(_row("incremental transfer", ["first pretraining the network using ImageNet and then continuing "
                                              "with the DDSM dataset, and finally fine-tuning and testing on the "
                                              "Full-field Digital Mammography (FFDM) dataset"],
                     f"{_start(cfg)[0]} -> DDSM ({cfg.pretrain_iters} iterations, every DDSM patient, "
                     f"balanced) -> FFDM ({cfg.iters} iterations); compared with the FFDM-only model on the same test "
                     "images" + absent("incremental"), *_departs(s, AS_PAPER), said=s))
    tf = cfg.test_fractions
    s = said("test fraction")
    rows.append(_row("test fractions", ["approximately 5% of our datasets was used for testing",
                                        "using 10% and 15% of the data as independent sets for testing"],
                     ", ".join(f"{f:g}" for f in tf),
                     *_departs(s, AS_PAPER, differs=not set(tf) <= {*PAPER["test_fractions"], *ROBUSTNESS_FRACTIONS},
                               own_reason="test fractions chosen with --test-fraction (paper: 0.05; 0.10 and 0.15 "
                                          "for its robustness analysis)"), said=s))
    rows.append(_row("train/test split", ["In all settings, testing data did not include any images used in "
                                          "training."],
                     "by patient, stratified by class, within each source dataset; checked: no patient on both sides",
                     ASSUMPTION, "Whole patients, as 'an independent test cohort' implies: a patient's views are "
                                 "alike, so splitting images would leak."))
    s = said(f"{LABELS['cv']} ")
    rows.append(_row("cross-validation", ["6-fold cross validation of training data in the CNN model training phase"],
                     f"{cfg.cv} folds by patient inside the training side" if cfg.cv >= 2 else "off",
                     *_departs(s, AS_PAPER, differs=cfg.cv != PAPER["cv"], own_reason=f"paper: {PAPER['cv']}"),
                     said=s))
    if cfg.cv < 2:
        here, kind, reason = "nothing: no cross-validation", DEPARTURE, ""
    elif select == "iterations":
        s, here = [], ("chooses the training length: the iteration with the best mean validation AUC across the "
                       "folds; the final model trains that long on the whole training side (incremental: its "
                       "fine-tuning stage)")
        kind, reason = ASSUMPTION, "Our reading of 'calibrating accuracy of the training process'."
    else:
        s, here, kind, reason = said("choose nothing"), "nothing: the folds' AUCs are reported only", DEPARTURE, ""
    rows.append(_row("what cross-validation does", ["calibrating accuracy of the training process"], here, kind,
                     reason, s))
    s = said("false-negative analys")
    fn_here = {"separate": "both of the paper's designs: a model retrained without the interval-cancer patients "
                           "scores them all; two models each trained with one half of them score the other half",
               "holdout": "the interval-cancer patients are held out of the main model, which scores them",
               "off": "not run"}[cfg.fn_analysis]
    if cfg.fn_analysis != "off":
        ran = [e for e in FN_EXPERIMENTS if e in cfg.experiments], [n for n in FN_SCENARIOS if n in cfg.scenarios]
        fn_here += (f"; for {', '.join(FN_SCENARIOS)} in the {', '.join(FN_EXPERIMENTS)} experiments (this run: "
                    + (" x ".join(", ".join(r) for r in ran) if all(ran) else "none") + ")")
    rows.append(_row("false-negative analyses", ["on the FFDM dataset only and excluding those interval cancer "
                                                 "patients", "including 50% of the false negative cases and used the "
                                                 "rest of the unseen 50% for testing", "(i.e., experiments iii and iv"],
                     fn_here, *_departs(s, AS_PAPER, "The paper also ran them for experiments iii and iv "
                                                     "(results not shown).", differs=cfg.fn_analysis == "off",
                                        own_reason="--fn-analysis off"), said=s))
    rows.append(_row("repetitions", [], f"one model per setting, seed {cfg.seed}", ASSUMPTION,
                     "The paper reports one model per setting."))

    # --- statistics
    rows.append(_row("AUC", ["The ROC curve (29) was generated and AUC was calculated"],
                     "image-level AUC of the positive class's probability (Mann-Whitney)", AS_PAPER))
    rows.append(_row("triple scenario", ["generating an ROC curve for each binary-class combination and then "
                                         "reporting the average of the AUCs"],
                     "mean of the three pairwise AUCs (Hand & Till)", AS_PAPER))
    rows.append(_row("confidence intervals", ["calculated for AUC values using bootstrapping methods"],
                     f"95% bootstrap CIs from {cfg.n_boot} replicates, resampling images (stratified by class) and, "
                     "beside them, whole patients; DeLong's CI beside both", ASSUMPTION,
                     "The paper does not say what its bootstrap resampled nor how often; a patient's views are "
                     "correlated, so the image bootstrap is too narrow and the patient bootstrap is shown too."))
    rows.append(_row("comparison test", ["DeLong test (31) was used to evaluate the statistical significance when "
                                         "comparing differences of AUCs", "All statistical tests were two-sided."],
                     "paired two-sided DeLong test: the incremental model against the FFDM-only model on the same "
                     "test images", AS_PAPER))
    rows.append(_row("operating point", ["radiologists' overall sensitivity 86.9% as a reference threshold"],
                     f"the best specificity among the ROC points with sensitivity >= {RADIOLOGIST_SENSITIVITY:.1%}, "
                     "on every binary scenario's test set", AS_PAPER))
    rows.append(_row("breast- and patient-level AUCs", [],
                     f"breast score: the {BREAST_RULE}; patient score: the {PATIENT_RULE}; each with DeLong and "
                     "patient-bootstrap CIs", ASSUMPTION,
                     "An addition (how screening is read and recent benchmarks score); the image level stays the "
                     "headline, as in the paper."))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def fidelity_markdown(cfg: StudyConfig) -> list[str]:
    """The fidelity table of ``cfg`` as markdown lines: a one-line introduction and the table."""
    lines = ["Every setting and step of the paper, the value this configuration uses, and where it comes from: "
             "the paper's words, an assumption where the paper is silent, or a departure (those a run prints at "
             "its start and lists in its report).", "",
             "| topic | the paper's words | here | kind | source |", "|---|---|---|---|---|"]
    for r in fidelity_rows(cfg):
        paper = " ... ".join(f'"{q}"' for q in r.paper) or "(not stated)"
        lines.append("| " + " | ".join(_cell(c) for c in (r.topic, paper, r.here, r.kind, r.source)) + " |")
    return lines


#: The configurations docs/fidelity.md shows: (preset, a note), each with every experiment and scenario.
DOCS_RUNS = (("paper", ""), ("demo", " (on a CPU; a GPU runs it at 227 x 227)"))


def docs_text() -> str:
    """docs/fidelity.md: the fidelity tables of the paper and demo presets, every experiment and
    scenario, with paths under the repository shown relative to it (the file is the same on every
    checkout)."""
    lines = ["# Fidelity to the paper", "",
             "Generated by `pipeline.fidelity` from the configurations below; the report of every run holds the "
             "table of its own settings. Regenerate with "
             "`python3 -c \"from pipeline.fidelity import write_docs; write_docs()\"`.", ""]
    for preset, note in DOCS_RUNS:
        cfg = resolve_config(preset, {"experiments": ["all"], "scenarios": ["all"]}, "cpu")
        lines += [f"## `python run.py --preset {preset} --experiment all --scenario all`{note}", ""]
        lines += fidelity_markdown(cfg) + [""]
    return "\n".join(lines).replace(f"{REPO_ROOT}/", "")


def write_docs(path=DOCS_PATH):
    """Write :func:`docs_text` to ``path`` (default docs/fidelity.md), atomically."""
    with atomic_output(path) as tmp:
        Path(tmp).write_text(docs_text())
