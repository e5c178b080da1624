#!/usr/bin/env python
"""Reproduce Aboutalib et al., Clin Cancer Res 2018, end to end.

    python run.py --scenario malignant-vs-negative          # the study (the demo preset, synthetic data)
    python run.py --preset tiny                              # the whole pipeline in under a minute
    python run.py --scenario all --experiment all --preset paper --data ffdm=ffdm.csv ddsm=ddsm.csv \\
                  --pretrained bvlc_alexnet.h5               # the paper's grid on real data
    python run.py predict MODEL.h5 IMAGES... --out scores.csv   # score new images with a trained model
    python run.py explain RUN_DIR                            # where a finished run's models look
    python run.py standin --out weights/standin_caffe_99.h5  # pretrain the offline stand-in for ImageNet

Without --data, synthetic FFDM-like and DDSM-like cohorts are generated once and cached (see
--cache-dir). A run writes results.json, predictions.csv, training logs, the trained models,
figures and report.md under --out and prints where they are. `python run.py SUBCOMMAND --help`
describes each subcommand.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path

import pipeline.predict
from pipeline.cluster import JobsFailed, add_cluster_arguments, check_reachable, cluster_arguments
from pipeline.config import PRESETS, positive_int, resolve_config, select_device, study_options
from pipeline.console import resume_command, summary_lines
from pipeline.errors import UserError
from pipeline.explain import METHODS, TOLERANCE_PX, ExplainOptions, explain_finished_run
from pipeline.predict import PredictOptions, predict_command
from pipeline.standin import EPILOG as STANDIN_EPILOG
from pipeline.standin import StandinConfig, check_config as check_standin, pretrain
from pipeline.study import run_study
from pipeline.train import TrainingDiverged


class Parser(argparse.ArgumentParser):
    """argparse, but a bad option is a UserError: printed by :func:`main` as one ``error:`` line."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


def _positive(text):
    try:
        return positive_int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _device_option(parser, what="runs"):
    parser.add_argument("--device", choices=("cpu", "gpu", "auto"), default="auto",
                        help=f"auto (default) {what} on a CUDA GPU through CuPy when one is available")


def build_parser() -> Parser:
    ap = Parser(prog="run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.set_defaults(command=study_command)
    study = ap.add_argument_group("the study (no subcommand); [paper: ...; demo: ...] are the presets' values")
    study.add_argument("--preset", choices=sorted(PRESETS), default="demo",
                       help="demo (default): a laptop CPU's minutes, fine-tuning the offline stand-in for ImageNet "
                            "on synthetic data; tiny: a miniature network on a tiny cohort, under a minute (smoke "
                            "test, teaching); paper: the paper's hyperparameters, input 227, 6-fold CV, full cohorts")
    for name, opt, help_text in study_options():
        study.add_argument(opt.flag or "--" + name.replace("_", "-"), dest=name, type=opt.type, nargs=opt.nargs,
                           choices=opt.choices, metavar=opt.metavar, default=None, help=help_text)
    _device_option(study)
    study.add_argument("--out", help="output folder (default: runs/<timestamp>)")
    study.add_argument("--resume", action="store_true",
                       help="continue the run in --out: finished models are reused, interrupted ones continue from "
                            "their last checkpoint, whoever ran them (the run folder is the shared state); data "
                            "changed since the run started are an error")
    study.add_argument("--cache-dir", default="data_cache",
                       help="where synthetic cohorts and built datasets are kept (default ./data_cache)")
    study.add_argument("--rebuild", action="store_true",
                       help="build the datasets again (from the cached synthetic images or your manifest) even "
                            "when a finished build with the same inputs is cached")
    study.add_argument("--workers", type=_positive, default=None, help="processes for data generation/building")
    study.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in CI logs)")
    add_cluster_arguments(ap)

    sub = ap.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    p = sub.add_parser("predict", help="score new images with a trained model.h5",
                       description=pipeline.predict.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(command=predict_subcommand)
    p.add_argument("model", metavar="MODEL.h5", help="a run's jobs/.../model.h5")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files (DICOM, PNG, TIFF, PGM), folders (searched recursively) or manifest CSVs")
    p.add_argument("--out", required=True, metavar="SCORES.csv",
                   help="where to write the scores; <stem>.errors.csv, and with a manifest <stem>_breast.csv and "
                        "<stem>_patient.csv, go next to it")
    _device_option(p, "scores")
    p.add_argument("--batch-size", type=_positive, default=50,
                   help="images per forward pass (default 50); the training run's batch size reproduces its "
                        "predictions bit for bit with --workers 1, another one to float32 rounding")
    p.add_argument("--workers", type=_positive, default=None,
                   help="processes that read and preprocess images while the network scores (default: every "
                        "core this process may use)")
    p.add_argument("--n-boot", type=_positive, default=2000,
                   help="bootstrap replicates of the AUC's patient-level CI, with a manifest (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.add_argument("--explain", metavar="DIR",
                   help="also write, per image, a PNG of its Grad-CAM map for the positive class over the "
                        "preprocessed image, into DIR (named <row>_<file stem>_gradcam.png, row = the image's "
                        "position in the inputs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser("explain", help="attribution maps of a finished run's models, checked against the findings",
                       description="Attribution maps and their checks for a finished run: writes explain.json, "
                                   "explain_*.png and explain.md into RUN_DIR and prints the markdown section.")
    e.set_defaults(command=explain_subcommand)
    e.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder (results.json, jobs/...)")
    e.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, metavar="NAME",
                   help=f"attribution methods, any of {', '.join(METHODS)} (default: all)")
    e.add_argument("--tolerance", type=float, default=TOLERANCE_PX, metavar="PX",
                   help=f"pointing-game tolerance in original-image pixels (default {TOLERANCE_PX:g})")
    e.add_argument("--steps", type=_positive, default=32, help="integrated-gradients steps (default 32)")
    e.add_argument("--per-row", type=_positive, default=4, help="images per figure row (default 4)")
    e.add_argument("--randomization-images", type=_positive, default=16,
                   help="test images for the randomization check (default 16)")
    e.add_argument("--cache-dir", default="data_cache", help="the run's --cache-dir (default ./data_cache)")
    _device_option(e)
    e.add_argument("--no-progress", action="store_true", help="no progress bars")

    s = sub.add_parser("standin", help="pretrain the offline stand-in for ImageNet (FractalDB-style images)",
                       description="Pretrain AlexNet (caffe variant) on formula-made images, an offline stand-in "
                                   "for ImageNet, and write its conv layers for run.py --pretrained.",
                       epilog=STANDIN_EPILOG)
    s.set_defaults(command=standin_subcommand)
    for f in fields(StandinConfig):
        if "option" in f.metadata:
            opt = f.metadata["option"]
            s.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=opt.type, nargs=opt.nargs,
                           metavar=opt.metavar, required=f.name == "out", default=None if f.name == "out" else f.default,
                           help=opt.help + ("" if f.default is None or f.name == "out" else f" (default {f.default:g})"
                                            if isinstance(f.default, float) else f" (default {f.default})"))
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    return ap


# ----------------------------------------------------------------------------- the commands
def study_command(args, argv) -> int:
    """The study: settings and inputs checked first (UserError before any work), then the run."""
    if args.resume and not args.out:
        raise UserError("--resume: expected --out FOLDER, the folder of the run to continue")
    device = select_device(args.device)
    overrides = {name: getattr(args, name) for name, _, _ in study_options()}
    overrides["progress"] = not args.no_progress
    cfg = resolve_config(args.preset, overrides, device)
    cluster = cluster_arguments(args)
    check_reachable(cluster)
    out = Path(args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    try:
        records, cohorts = run_study(cfg, out, resume=args.resume, cache_dir=args.cache_dir, workers=args.workers,
                                     command="python run.py " + " ".join(argv), rebuild=args.rebuild,
                                     cluster=cluster)
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: {resume_command(argv, out)}", file=sys.stderr)
        return 130
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except JobsFailed as e:  # on a cluster: the other jobs ran to the end; --resume retries these
        print(f"error: {e}\ncontinue with: {resume_command(argv, out)}", file=sys.stderr)
        return 1
    for line in summary_lines(out, records, cohorts):
        print(line)
    return 0


def predict_subcommand(args, argv) -> int:
    return predict_command(PredictOptions(model=args.model, inputs=args.inputs, out=args.out, device=args.device,
                                          batch_size=args.batch_size, workers=args.workers, n_boot=args.n_boot,
                                          seed=args.seed, explain=args.explain, progress=not args.no_progress))


def explain_subcommand(args, argv) -> int:
    run_dir = Path(args.run_dir)
    if not (run_dir / "results.json").is_file():
        raise UserError(f"RUN_DIR {run_dir}: no results.json there; expected a finished run folder of run.py")
    if args.tolerance < 0:
        raise UserError(f"--tolerance: got {args.tolerance}, expected a number >= 0")
    select_device(args.device)
    opts = ExplainOptions(tuple(args.methods), args.tolerance, args.per_row, args.steps, args.randomization_images,
                          not args.no_progress)
    path = explain_finished_run(run_dir, args.cache_dir, opts)
    print(path.read_text())
    print(f"written: {run_dir / 'explain.json'}, {path}")
    return 0


def standin_subcommand(args, argv) -> int:
    cfg = StandinConfig(**{f.name: getattr(args, f.name) for f in fields(StandinConfig) if "option" in f.metadata},
                        progress=not args.no_progress)
    check_standin(cfg)
    pretrain(cfg)
    return 0


def main(argv=None) -> int:
    """run.py's entry point: returns the exit status. Every user error, whichever subcommand found it,
    is printed here as one line ``error: ...`` with status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        return args.command(args, argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
