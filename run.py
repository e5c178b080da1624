#!/usr/bin/env python
"""Reproduce Aboutalib et al., Clin Cancer Res 2018, end to end.

    python run.py --scenario malignant-vs-negative          # the demo, on synthetic data, CPU minutes
    python run.py --scenario all --experiment all --preset paper --data ffdm=ffdm.csv ddsm=ddsm.csv \\
                  --pretrained bvlc_alexnet.h5               # the paper's grid on real data
    python run.py predict runs/X/jobs/ffdm/malignant-vs-negative/tf0.05/main/model.h5 IMAGES... --out scores.csv
                                                             # score new images (run.py predict --help)
    python run.py explain RUN_DIR                            # where a finished run's models look (--help there)

Without --data, synthetic FFDM-like and DDSM-like cohorts are generated once and
cached (see --cache-dir). The run writes results.json, predictions.csv, training
logs, checkpoints, figures and report.md under --out and prints where they are.
"""
from __future__ import annotations

import argparse
import sys

from pipeline.cluster import add_cluster_arguments, cluster_arguments
from pipeline.config import PAPER, PRESETS
from pipeline.runner import RunRequest, run_command
from pipeline.scenarios import SCENARIOS
from pipeline.study import EXPERIMENTS

# options that set the study's configuration (pipeline.config.StudyConfig's fields, plus "patients");
# None means "the preset's value"
CONFIG_OPTIONS = ("scenarios", "experiments", "test_fractions", "data", "pretrained", "cv", "iters",
                  "pretrain_iters", "batch_size", "lr", "lr_step", "momentum", "weight_decay", "input_size",
                  "augment_flip", "augment_shift", "input_scale", "new_layer_lr_mult", "warmup", "init", "variant", "widths", "seed",
                  "patients", "difficulty", "grain_scale", "finding_scale", "fn_analysis", "n_boot", "checkpoint_every")


def parse_args(argv=None):
    demo = PRESETS["demo"]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", dest="scenarios", nargs="+", default=["malignant-vs-negative"], metavar="NAME",
                    help=f"one or more of {', '.join(SCENARIOS)}, or 'all' (default: malignant-vs-negative)")
    ap.add_argument("--experiment", dest="experiments", nargs="+", default=["ffdm"], metavar="NAME",
                    help=f"one or more of {', '.join(EXPERIMENTS)}, or 'all' (default: ffdm)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="demo",
                    help="demo (default): sized for a laptop CPU, from scratch, synthetic data; "
                         "paper: the paper's hyperparameters, input 227, 6-fold CV and full cohort sizes")
    ap.add_argument("--data", nargs="+", default=[], metavar="DATASET=PATH",
                    help="ffdm=PATH and/or ddsm=PATH: a manifest CSV (built here and cached) or a dataset "
                         "HDF5 from `python -m data_prep build`; default: the synthetic cohorts")
    ap.add_argument("--pretrained", metavar="WEIGHTS.h5",
                    help="converted ImageNet weights (python -m alexnet_np.convert ...; fine-tuned at lr "
                         "0.001, fresh layers at 10x, as the paper's ImageNet-pretrained AlexNet), the "
                         "stand-in of python -m pipeline.standin, or 'none' (from scratch); demo default: "
                         "the committed stand-in weights/standin_caffe_99.h5 (not ImageNet)")
    ap.add_argument("--new-layer-lr-mult", type=float, default=None, metavar="M",
                    help="with --pretrained: the freshly drawn layers learn at M times the lr (Caffe's "
                         "fine-tuning recipe: 10; the paper does not say)")
    ap.add_argument("--warmup", type=int, default=None, metavar="ITERS",
                    help="raise the lr linearly over this many first iterations (paper: none, 0)")
    ap.add_argument("--test-fraction", dest="test_fractions", nargs="+", type=float, default=None, metavar="F",
                    help="held-out test fraction(s) of patients (paper: 0.05; 0.10 and 0.15 for its "
                         "robustness analysis)")
    ap.add_argument("--cv", type=int, default=None,
                    help=f"cross-validation folds inside the training set, 0 = off (paper: 6; "
                         f"demo: {demo['cv']}, since CV multiplies the training cost by the fold count)")
    ap.add_argument("--iters", type=int, default=None,
                    help=f"SGD iterations per model (paper: not stated, paper preset "
                         f"{PRESETS['paper']['iters']}; demo {demo['iters']})")
    ap.add_argument("--pretrain-iters", type=int, default=None,
                    help=f"iterations of the incremental experiment's DDSM stage "
                         f"(paper preset {PRESETS['paper']['pretrain_iters']}; demo {demo['pretrain_iters']})")
    ap.add_argument("--batch-size", type=int, default=None,
                    help=f"minibatch size (paper: {PAPER['batch_size']}; demo {demo['batch_size']})")
    ap.add_argument("--lr", type=float, default=None,
                    help=f"base learning rate (paper: {PAPER['lr']}; demo {demo['lr']})")
    ap.add_argument("--lr-step", type=int, default=None,
                    help=f"divide the lr by 10 every this many iterations (paper: {PAPER['lr_step']}; "
                         f"demo {demo['lr_step']})")
    ap.add_argument("--momentum", type=float, default=None, help=f"SGD momentum (paper: {PAPER['momentum']})")
    ap.add_argument("--weight-decay", type=float, default=None,
                    help=f"weight decay (paper: {PAPER['weight_decay']}; demo {demo['weight_decay']})")
    ap.add_argument("--input-size", type=int, default=None,
                    help=f"network input in pixels (paper: {PAPER['input_size']}; demo {demo['input_size']} "
                         f"on a CPU, {demo['gpu_input_size']} on a GPU)")
    ap.add_argument("--augment-flip", type=int, choices=(0, 1), default=None,
                    help=f"1 = mirror a random half of each batch up-down (paper: none; demo: {int(demo['augment_flip'])})")
    ap.add_argument("--augment-shift", type=int, default=None, metavar="PIXELS",
                    help=f"random translations of up to this many pixels (paper: none; demo: "
                         f"{demo['augment_shift']} at {demo['input_size']} px, {demo['gpu_augment_shift']} at "
                         f"{demo['gpu_input_size']} px)")
    ap.add_argument("--input-scale", type=float, default=None,
                    help="multiply the mean-subtracted input by this (Caffe transform scale; paper/bvlc: 1, "
                         f"demo: {demo['input_scale']:g} for He-initialized training from scratch)")
    ap.add_argument("--init", choices=("caffe", "he"), default=None,
                    help="weight initialization when training from scratch (paper preset: caffe, "
                         "bvlc_alexnet's fillers; demo: he)")
    ap.add_argument("--variant", choices=("caffe", "torchvision"), default="caffe",
                    help="network: caffe = bvlc_alexnet as in the paper (default), or torchvision's AlexNet")
    ap.add_argument("--widths", type=int, nargs=7, metavar="W",
                    help="layer widths conv1..conv5 fc6 fc7 of a miniature AlexNet (smoke tests, teaching); "
                         "default the variant's (96 256 384 384 256 4096 4096)")
    ap.add_argument("--seed", type=int, default=0, help="seed for data generation, splits, init, order")
    ap.add_argument("--device", choices=("cpu", "gpu", "auto"), default="auto",
                    help="auto (default) uses a CUDA GPU through CuPy when one is available")
    ap.add_argument("--out", help="output folder (default: runs/<timestamp>)")
    ap.add_argument("--resume", action="store_true",
                    help="continue the run in --out: finished models are reused, interrupted ones "
                         "continue from their last checkpoint, whoever ran them (the run folder is the "
                         "shared state); data changed since the run started are an error")
    ap.add_argument("--patients", nargs="+", default=[], metavar="DATASET=N",
                    help=f"synthetic cohort sizes, e.g. ffdm=1303 ddsm=2412 (paper sizes; demo "
                         f"ffdm={demo['ffdm_patients']} ddsm={demo['ddsm_patients']})")
    ap.add_argument("--difficulty", type=float, default=None,
                    help=f"synthetic lesion subtlety, larger = harder: lesion contrast is divided by it "
                         f"(generator default 1.0, paper preset 1.0; demo {demo['difficulty']})")
    ap.add_argument("--grain-scale", type=float, default=None,
                    help=f"synthetic calcification grains are drawn this many times their real size (generator "
                         f"default 1, paper preset 1; demo {demo['grain_scale']:g})")
    ap.add_argument("--finding-scale", type=float, default=None,
                    help=f"synthetic findings are drawn magnified this many times, every length of them "
                         f"(calcification grains: both scales) (generator default 1, paper preset 1; "
                         f"demo {demo['finding_scale']:g})")
    ap.add_argument("--fn-analysis", choices=("separate", "holdout", "off"), default=None,
                    help="false-negative (interval cancer) analyses: separate = both of the paper's: retrain "
                         "without the interval-cancer patients, and retrain with half of them, scoring the other "
                         "half (two models, halves swapped; paper preset); holdout = hold them out of the main "
                         "model (demo); off")
    ap.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates for the CIs (default 2000)")
    ap.add_argument("--checkpoint-every", type=int, default=None, help="iterations between checkpoints")
    ap.add_argument("--cache-dir", default="data_cache",
                    help="where synthetic cohorts and built datasets are kept (default ./data_cache)")
    ap.add_argument("--rebuild", action="store_true",
                    help="build the datasets again (from the cached synthetic images or your manifest) even "
                         "when a finished build with the same inputs is cached")
    ap.add_argument("--workers", type=int, default=None, help="processes for data generation/building")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in CI logs)")
    add_cluster_arguments(ap)
    args = ap.parse_args(argv)
    args.cluster, args.slurm = cluster_arguments(ap, args)
    return args


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["predict"]:  # python run.py predict MODEL.h5 INPUT... --out scores.csv
        from pipeline.predict import main as predict_main
        return predict_main(argv[1:])
    if argv[:1] == ["explain"]:  # python run.py explain RUN_DIR: see pipeline/explain.py
        from pipeline.explain import main as explain_main
        return explain_main(argv[1:])
    args = parse_args(argv)
    overrides = {name: getattr(args, name) for name in CONFIG_OPTIONS}
    overrides["progress"] = not args.no_progress
    return run_command(RunRequest(preset=args.preset, overrides=overrides, device=args.device, out=args.out,
                                  resume=args.resume, cache_dir=args.cache_dir, workers=args.workers,
                                  rebuild=args.rebuild, cluster=args.cluster, slurm=args.slurm, argv=argv))


if __name__ == "__main__":
    sys.exit(main())
