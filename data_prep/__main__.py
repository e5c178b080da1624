"""Command line: ``python -m data_prep {build,synthesize,validate,adapt,plot-steps,plot-examples,plot-crops} ...``.

Examples::

    python -m data_prep synthesize --dataset ffdm --patients 300 --seed 0 --out data/ffdm
    python -m data_prep build data/ffdm/manifest.csv data/ffdm.h5 --size 227 --workers 2
    python -m data_prep adapt inbreast INbreast.csv AllDICOMs --out inbreast.csv
    python -m data_prep plot-examples docs/figures/examples.png data/ffdm/manifest.csv data/ddsm/manifest.csv
    python -m data_prep plot-crops data/ddsm.h5 worst_crops.png --n 16
"""

from __future__ import annotations

import argparse
import sys

from . import adapters
from .build import build_dataset, errors_report_path, load_dataset
from .figures import plot_crops, plot_examples, plot_preprocessing_steps
from .manifest import DataPrepError, read_manifest
from .preprocess import ASPECTS, EQUALIZE_METHODS
from .synthetic.cohort import DATASETS, synthesize


def _image_size(text: str) -> tuple[int, int]:
    """Parse ``ROWSxCOLS`` (e.g. ``640x512``)."""
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROWSxCOLS such as 640x512, got {text!r}") from None
    return rows, cols


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_prep", description="Mammogram data preparation for the "
                                     "Aboutalib et al. 2018 reimplementation: synthetic cohorts, manifests, "
                                     "preprocessed HDF5 datasets, figures.")
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="preprocess every image of a manifest into one HDF5 file")
    build.add_argument("manifest")
    build.add_argument("out_h5")
    build.add_argument("--size", type=int, default=227, help="output side in pixels (paper: 227)")
    build.add_argument("--aspect", choices=ASPECTS, default="stretch", help="stretch (paper) or pad to square")
    build.add_argument("--equalize", choices=EQUALIZE_METHODS, default="global", help="histogram equalization")
    build.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    build.add_argument("--no-resume", action="store_true", help="discard earlier partial work and rebuild")
    build.add_argument("--quiet", action="store_true", help="no progress bar")

    synth = commands.add_parser("synthesize", help="generate a synthetic FFDM-like or DDSM-like cohort")
    synth.add_argument("--dataset", choices=DATASETS, required=True)
    synth.add_argument("--patients", type=int, required=True)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", required=True, help="output folder (manifest.csv, images/, findings.csv)")
    synth.add_argument("--difficulty", type=float, default=1.0, help="lesion contrast is divided by this (default 1)")
    synth.add_argument("--image-size", type=_image_size, default=None, help="ROWSxCOLS, default 640x512")
    synth.add_argument("--workers", type=int, default=None)
    synth.add_argument("--quiet", action="store_true")

    validate = commands.add_parser("validate", help="check a manifest and list every problem")
    validate.add_argument("manifest")

    adapt = commands.add_parser("adapt", help="write a manifest from a public data set's layout")
    sets = adapt.add_subparsers(dest="dataset", required=True)
    cbis = sets.add_parser("cbis-ddsm", help="CBIS-DDSM description CSVs + download folder")
    cbis.add_argument("root")
    cbis.add_argument("csvs", nargs="+")
    cbis.add_argument("--skip-missing", action="store_true", help="leave out images not found under root")
    mias = sets.add_parser("mini-mias", help="mini-MIAS Info.txt (+ folder of mdbNNN.pgm)")
    mias.add_argument("info_txt")
    mias.add_argument("--images", default=None, help="folder of the .pgm files (default: Info.txt's folder)")
    inbreast = sets.add_parser("inbreast", help="INbreast.csv + AllDICOMs folder")
    inbreast.add_argument("csv")
    inbreast.add_argument("dicom_dir")
    folders = sets.add_parser("folders", help="root/<class>/[<patient>/]<image> layout")
    folders.add_argument("root")
    folders.add_argument("--source", default=None)
    for sub in (cbis, mias, inbreast, folders):
        sub.add_argument("--out", required=True, help="manifest CSV to write")

    steps = commands.add_parser("plot-steps", help="figure: each preprocessing step side by side")
    steps.add_argument("out_png")
    steps.add_argument("images", nargs="+")
    steps.add_argument("--size", type=int, default=227)
    examples = commands.add_parser("plot-examples", help="figure: example images per class and source")
    examples.add_argument("out_png")
    examples.add_argument("sources", nargs="+", help="manifest CSVs and/or built .h5 files")
    examples.add_argument("--per-class", type=int, default=4)

    crops = commands.add_parser("plot-crops", help="figure: the worst crops of a build, with their crop measures")
    crops.add_argument("build_h5", help="a dataset from `python -m data_prep build`")
    crops.add_argument("out_png")
    crops.add_argument("--n", type=int, default=16, help="how many images, worst first (default 16)")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "build":
            out = build_dataset(args.manifest, args.out_h5, args.size, args.aspect, args.equalize, args.workers,
                                resume=not args.no_resume, progress=not args.quiet)
            attrs = load_dataset(out)["attrs"]
            print(f"{out}: {attrs['n_images']} images, {attrs['n_errors']} skipped (see {errors_report_path(out)})")
        elif args.command == "synthesize":
            manifest = synthesize(args.dataset, args.patients, args.seed, args.out, args.difficulty, args.image_size,
                                  args.workers, progress=not args.quiet)
            print(manifest)
        elif args.command == "validate":
            print(f"{args.manifest}: {len(read_manifest(args.manifest))} images, no problems")
        elif args.command == "adapt":
            if args.dataset == "cbis-ddsm":
                rows = adapters.cbis_ddsm_manifest(args.root, args.csvs, args.out, args.skip_missing)
            elif args.dataset == "mini-mias":
                rows = adapters.mini_mias_manifest(args.info_txt, args.images, args.out)
            elif args.dataset == "inbreast":
                rows = adapters.inbreast_manifest(args.csv, args.dicom_dir, args.out)
            else:
                rows = adapters.folder_manifest(args.root, args.out, args.source)
            print(f"{args.out}: {len(rows)} images")
        elif args.command == "plot-crops":
            print(plot_crops(args.build_h5, args.out_png, n=args.n))
        elif args.command == "plot-steps":
            print(plot_preprocessing_steps(args.images, args.out_png, size=args.size))
        else:
            print(plot_examples(args.sources, args.out_png, per_class=args.per_class))
    except DataPrepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
