#!/usr/bin/env python
"""Reproduce Aboutalib et al., Clin Cancer Res 2018, end to end.

    python run.py --scenario malignant-vs-negative          # the demo, on synthetic data, CPU minutes
    python run.py --scenario all --experiment all --preset paper --data ffdm=ffdm.csv ddsm=ddsm.csv \\
                  --pretrained bvlc_alexnet.h5               # the paper's grid on real data
    python run.py explain RUN_DIR                            # where a finished run's models look (--help there)

Without --data, synthetic FFDM-like and DDSM-like cohorts are generated once and
cached (see --cache-dir). The run writes results.json, predictions.csv, training
logs, checkpoints, figures and report.md under --out and prints where they are.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from alexnet_np import backend  # before NumPy: importing alexnet_np configures OpenBLAS's threads
from pipeline.config import PAPER, PRESETS, StudyConfig
from pipeline.data import needed_datasets
from pipeline.scenarios import SCENARIOS
from pipeline.study import EXPERIMENTS


def parse_args(argv=None):
    demo = PRESETS["demo"]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", nargs="+", default=["malignant-vs-negative"], metavar="NAME",
                    help=f"one or more of {', '.join(SCENARIOS)}, or 'all' (default: malignant-vs-negative)")
    ap.add_argument("--experiment", nargs="+", default=["ffdm"], metavar="NAME",
                    help=f"one or more of {', '.join(EXPERIMENTS)}, or 'all' (default: ffdm)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="demo",
                    help="demo (default): sized for a laptop CPU, from scratch, synthetic data; "
                         "paper: the paper's hyperparameters, input 227, 6-fold CV and full cohort sizes")
    ap.add_argument("--data", nargs="+", default=[], metavar="DATASET=PATH",
                    help="ffdm=PATH and/or ddsm=PATH: a manifest CSV (built here and cached) or a dataset "
                         "HDF5 from `python -m data_prep build`; default: the synthetic cohorts")
    ap.add_argument("--pretrained", metavar="WEIGHTS.h5",
                    help="converted ImageNet weights (python -m alexnet_np.convert ...); fc8 is replaced "
                         "by a fresh layer with a 10x learning rate (paper: ImageNet-pretrained)")
    ap.add_argument("--test-fraction", nargs="+", type=float, default=None, metavar="F",
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
                         "continue from their last checkpoint")
    ap.add_argument("--patients", nargs="+", default=[], metavar="DATASET=N",
                    help=f"synthetic cohort sizes, e.g. ffdm=1303 ddsm=2412 (paper sizes; demo "
                         f"ffdm={demo['ffdm_patients']} ddsm={demo['ddsm_patients']})")
    ap.add_argument("--difficulty", type=float, default=None,
                    help=f"synthetic lesion subtlety, larger = harder: lesion contrast is divided by it "
                         f"(generator default 1.0, paper preset 1.0; demo {demo['difficulty']})")
    ap.add_argument("--fn-analysis", choices=("separate", "holdout", "off"), default=None,
                    help="false-negative (interval cancer) analysis: separate = retrain without the "
                         "interval-cancer patients as the paper did (paper preset); holdout = hold them "
                         "out of the main model (demo); off")
    ap.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates for the CIs (default 2000)")
    ap.add_argument("--checkpoint-every", type=int, default=None, help="iterations between checkpoints")
    ap.add_argument("--cache-dir", default="data_cache",
                    help="where synthetic cohorts and built datasets are kept (default ./data_cache)")
    ap.add_argument("--workers", type=int, default=None, help="processes for data generation/building")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in CI logs)")
    return ap.parse_args(argv)


def _pairs(items, what):
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in ("ffdm", "ddsm"):
            raise SystemExit(f"error: --{what} takes ffdm=... and/or ddsm=..., got {item!r}")
        out[name] = value
    return out


def _names(values, allowed, what):
    if "all" in values:
        return list(allowed)
    bad = [v for v in values if v not in allowed]
    if bad:
        raise SystemExit(f"error: unknown {what} {bad}; choose from {', '.join(allowed)} or 'all'")
    return list(dict.fromkeys(values))


def build_config(args, on_gpu: bool) -> StudyConfig:
    preset = dict(PRESETS[args.preset])
    if on_gpu and "gpu_input_size" in preset:  # a GPU affords the paper's input size
        preset["input_size"] = preset["gpu_input_size"]
        preset["augment_shift"] = preset["gpu_augment_shift"]
    pick = lambda name, value: preset[name] if value is None else value  # noqa: E731
    patients = {k: int(v) for k, v in _pairs(args.patients, "patients").items()}
    experiments = _names(args.experiment, EXPERIMENTS, "experiment")
    data = _pairs(args.data, "data")
    needed = needed_datasets(experiments)
    if data and not set(needed) <= set(data):
        raise SystemExit(f"error: experiments {experiments} need --data for {needed}; got {sorted(data)}")
    return StudyConfig(
        scenarios=_names(args.scenario, list(SCENARIOS), "scenario"), experiments=experiments,
        test_fractions=args.test_fraction or preset["test_fractions"], preset=args.preset,
        iters=pick("iters", args.iters), pretrain_iters=pick("pretrain_iters", args.pretrain_iters),
        batch_size=pick("batch_size", args.batch_size), lr=pick("lr", args.lr), lr_step=pick("lr_step", args.lr_step),
        momentum=pick("momentum", args.momentum), weight_decay=pick("weight_decay", args.weight_decay),
        gamma=preset["gamma"], input_size=pick("input_size", args.input_size), init=pick("init", args.init),
        cv=pick("cv", args.cv), seed=args.seed, device="gpu" if on_gpu else "cpu",
        fn_analysis=pick("fn_analysis", args.fn_analysis),
        checkpoint_every=pick("checkpoint_every", args.checkpoint_every),
        ffdm_patients=patients.get("ffdm", preset["ffdm_patients"]),
        ddsm_patients=patients.get("ddsm", preset["ddsm_patients"]),
        difficulty=pick("difficulty", args.difficulty), variant=args.variant, pretrained=args.pretrained,
        # pretrained weights expect the input units they were trained with (0-255, scale 1)
        input_scale=pick("input_scale", args.input_scale) if not args.pretrained or args.input_scale else 1.0,
        widths=args.widths,
        augment_flip=bool(pick("augment_flip", args.augment_flip)), augment_shift=pick("augment_shift", args.augment_shift),
        data=data, n_boot=args.n_boot, progress=not args.no_progress)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "explain":  # python run.py explain RUN_DIR: see pipeline/explain.py
        from pipeline.explain import main as explain_main
        return explain_main(argv[1:])
    args = parse_args(argv)
    backend.set_backend({"cpu": "numpy", "gpu": "cupy", "auto": "auto"}[args.device])
    cfg = build_config(args, on_gpu=backend.backend_name() == "cupy")
    out = Path(args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    from pipeline.runner import run_study
    command = "python run.py " + shlex.join(argv)
    report = run_study(cfg, out, resume=args.resume, cache_dir=args.cache_dir, workers=args.workers,
                       command=command)
    print(f"\nreport: {report}")
    print(f"results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
