"""Command line: ``python -m data_prep {build,synthesize,validate,adapt,plot-steps,plot-examples,plot-crops} ...``.

Examples::

    python -m data_prep synthesize --dataset ffdm --patients 300 --seed 0 --out data/ffdm
    python -m data_prep build data/ffdm/manifest.csv data/ffdm.h5 --size 227 --workers 2
    python -m data_prep adapt inbreast INbreast.csv AllDICOMs --out inbreast.csv
    python -m data_prep adapt rsna train.csv --out rsna.csv
    python -m data_prep validate rsna.csv
    python -m data_prep plot-examples docs/figures/examples.png data/ffdm/manifest.csv data/ddsm/manifest.csv
    python -m data_prep plot-crops data/ddsm.h5 worst_crops.png --n 16
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from . import adapters
from .build import OUTLIER_EXTENT, OUTLIER_FRACTION, build_dataset, crops_report_path, errors_report_path, load_dataset
from .figures import plot_crops, plot_examples, plot_preprocessing_steps
from .manifest import DataPrepError, read_manifest
from .preprocess import ASPECTS, EQUALIZE_METHODS
from .readers import check_image_file
from .synthetic.cohort import DATASETS, FILM_ARTIFACTS, VIEW_MODES, synthesize


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
    build.add_argument("--no-resume", action="store_true", help="start an interrupted build over (discard its partial work)")
    build.add_argument("--rebuild", action="store_true", help="build every image again, even when OUT_H5 is up to date "
                       "with the manifest, the image files (size, modification time) and the settings")
    build.add_argument("--quiet", action="store_true", help="no progress bar")

    synth = commands.add_parser("synthesize", help="generate a synthetic FFDM-like or DDSM-like cohort")
    synth.add_argument("--dataset", choices=DATASETS, required=True)
    synth.add_argument("--patients", type=int, required=True)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", required=True, help="output folder (manifest.csv, images/, findings.csv)")
    synth.add_argument("--difficulty", type=float, default=1.0, help="lesion contrast is divided by this (default 1)")
    synth.add_argument("--grain-scale", type=float, default=1.0,
                       help="calcification grains are drawn this many times their real size (default 1)")
    synth.add_argument("--finding-scale", type=float, default=1.0,
                       help="every finding is drawn magnified this many times (default 1; grains grow by both scales)")
    synth.add_argument("--image-size", type=_image_size, default=None, help="ROWSxCOLS, default 640x512")
    synth.add_argument("--film-artifacts", choices=FILM_ARTIFACTS, default="scanned",
                       help="DDSM-like films: 'scanned' (default) adds real digitized films' edge bands that "
                            "brighten towards the edge, frame lines, streaks and markers at the skin line to the "
                            "'basic' flat strips, labels and dust")
    synth.add_argument("--views", choices=VIEW_MODES, default="standard",
                       help="standard (default): four views a patient (the affected breast's two for malignant "
                            "ones), as the paper's text; table1: the views that give the paper's Table 1 counts on "
                            "the 5%% patient-level split with this --seed (some exams an XCCL more, a few a view fewer)")
    synth.add_argument("--workers", type=int, default=None)
    synth.add_argument("--quiet", action="store_true")

    validate = commands.add_parser("validate", help="check a manifest and that every image file exists and opens; "
                                   "list every problem (exit 1 when a file fails)")
    validate.add_argument("manifest")
    validate.add_argument("--quiet", action="store_true", help="no progress bar")

    adapt = commands.add_parser("adapt", help="write a manifest from a public data set's layout")
    sets = adapt.add_subparsers(dest="dataset", required=True)
    cbis = sets.add_parser("cbis-ddsm", help="CBIS-DDSM description CSVs + download folder")
    cbis.add_argument("root")
    cbis.add_argument("csvs", nargs="+")
    cbis.add_argument("--skip-missing", action="store_true", help="leave out images not found under root")
    mias = sets.add_parser("mini-mias", help="mini-MIAS Info.txt (+ folder of mdbNNN.pgm); findings from X Y RADIUS")
    mias.add_argument("info_txt")
    mias.add_argument("--images", default=None, help="folder of the .pgm files (default: Info.txt's folder)")
    inbreast = sets.add_parser("inbreast", help="INbreast.csv + AllDICOMs folder; findings from AllXML/*.xml")
    inbreast.add_argument("csv")
    inbreast.add_argument("dicom_dir")
    inbreast.add_argument("--xml", default=None, help="folder of the ROI files {File Name}.xml "
                          "(default: AllXML next to the DICOM folder, when it exists)")
    vindr = sets.add_parser("vindr", help="VinDr-Mammo breast-level_annotations.csv + images/ folder "
                            "(BI-RADS 1-2 negative, 3 recalled_benign, 4-5 malignant)")
    vindr.add_argument("csv")
    vindr.add_argument("--images", default=None, help="folder of {study_id}/{image_id}.dicom "
                       "(default: images/ next to the CSV)")
    vindr.add_argument("--findings", default=None, help="finding_annotations.csv (default: the one next to the CSV, "
                       "when it exists): boxes with finding categories and BI-RADS")
    cmmd = sets.add_parser("cmmd", help="CMMD clinical table (.xlsx, needs openpyxl, or a CSV export) + TCIA download "
                           "(Benign recalled_benign, Malignant malignant)")
    cmmd.add_argument("clinical_table")
    cmmd.add_argument("dicom_dir")
    rsna = sets.add_parser("rsna", help="RSNA Screening Mammography 2023 train.csv + train_images/ (cancer 1 "
                           "malignant; else biopsy 1 or BIRADS 0 recalled_benign; else negative)")
    rsna.add_argument("csv")
    rsna.add_argument("--images", default=None, help="folder of {patient_id}/{image_id}.dcm "
                      "(default: train_images/ next to the CSV)")
    for sub in (vindr, rsna, mias):
        sub.add_argument("--skip-missing", action="store_true", help="leave out images not found in the folder")
    folders = sets.add_parser("folders", help="root/<class>/[<patient>/]<image> layout")
    folders.add_argument("root")
    folders.add_argument("--source", default=None)
    for sub in (cbis, mias, inbreast, vindr, cmmd, rsna, folders):
        sub.add_argument("--out", required=True, help="manifest CSV to write (CBIS-DDSM, mini-MIAS, INbreast and "
                         "VinDr-Mammo also write their annotations beside it, see data_prep.findings)")

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


def _input_file(path: str, what: str) -> Path:
    """``path`` if it is an existing file, else an error naming ``what`` (e.g. "manifest")."""
    if not Path(path).is_file():
        state = "is a folder" if Path(path).is_dir() else "does not exist"
        raise DataPrepError(f"{what} {path}: {state} (expected a {what} file)")
    return Path(path)


def _refuse_overwrite(written, inputs: dict[Path, str], what: str) -> None:
    """Error if ``written`` is one of the command's inputs (``inputs``: resolved path -> description)."""
    hit = inputs.get(Path(written).resolve())
    if hit is not None:
        raise DataPrepError(f"{what} {written}: is {hit}; a command never writes over its inputs "
                            "(expected another path)")


def _check_build(args) -> None:
    """Reject bad build arguments before any image is read."""
    if args.size < 8:
        raise DataPrepError(f"--size: got {args.size}, expected an integer of at least 8 pixels (the paper: 227)")
    manifest = _input_file(args.manifest, "manifest")
    if Path(args.out_h5).is_dir():
        raise DataPrepError(f"OUT_H5 {args.out_h5}: is a folder (expected the path of the HDF5 file to write)")
    inputs = {manifest.resolve(): "the manifest"}
    inputs.update((Path(row["path"]), f"the image on manifest line {row['line']}") for row in read_manifest(manifest))
    _refuse_overwrite(args.out_h5, inputs, "OUT_H5")
    _refuse_overwrite(errors_report_path(args.out_h5), inputs, "OUT_H5's error report")


#: What synthesize writes into its folder; a folder holding anything else is not a cohort folder.
COHORT_ENTRIES = {"images", "manifest.csv", "findings.csv", "breast_box.csv", "cohort.json"}


def _check_synthesize(args) -> None:
    """Reject bad synthesize arguments, and an --out folder that holds other files than a cohort's."""
    if args.patients < 1:
        raise DataPrepError(f"--patients: got {args.patients}, expected an integer of at least 1")
    if not args.difficulty > 0:
        raise DataPrepError(f"--difficulty: got {args.difficulty}, expected a number > 0 (1 = default)")
    if not args.grain_scale > 0:
        raise DataPrepError(f"--grain-scale: got {args.grain_scale}, expected a number > 0 (1 = real grain sizes)")
    if not args.finding_scale > 0:
        raise DataPrepError(f"--finding-scale: got {args.finding_scale}, expected a number > 0 (1 = real sizes)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise DataPrepError(f"--out {out}: is a file (expected a folder for the cohort)")
    # Names starting with a dot are atomic writes' temporary files (fileio.atomic_output).
    foreign = sorted(p.name for p in out.iterdir()
                     if p.name not in COHORT_ENTRIES and not p.name.startswith(".")) if out.is_dir() else []
    if foreign:
        raise DataPrepError(f"--out {out}: holds files that are not a synthetic cohort's ({', '.join(foreign[:3])}"
                            f"{', ...' if len(foreign) > 3 else ''}); expected a new or empty folder or a cohort folder")


def _validate(manifest_arg: str, progress: bool) -> int:
    """Check the manifest, then open every image file's header; print every bad row; exit status."""
    manifest = _input_file(manifest_arg, "manifest")
    rows = read_manifest(manifest)
    bad = 0
    # delay: the bar appears only when the check takes a while (large manifests).
    for row in tqdm(rows, desc=f"validate {manifest.name}", unit="img", disable=not progress, delay=2):
        try:
            check_image_file(row["path"])
        except DataPrepError as exc:
            bad += 1
            print(f"line {row['line']}: {exc}", file=sys.stderr)
    if bad:
        print(f"{manifest}: {bad} of {len(rows)} image files cannot be read", file=sys.stderr)
        return 1
    print(f"{manifest}: {len(rows)} images, every file opens, no problems")
    return 0


def _build_summary(out: Path) -> str:
    """What a build made, on a few lines: images, skipped ones, crop outliers (and how to look at them), findings."""
    attrs = load_dataset(out)["attrs"]
    lines = [f"{out}: {attrs['n_images']} images, {attrs['n_errors']} skipped (see {errors_report_path(out)})",
             f"{attrs['n_crop_outliers']} crop outliers (breast_extent < {OUTLIER_EXTENT} or breast_fraction < "
             f"{OUTLIER_FRACTION}; every image's crop in {crops_report_path(out)}); look at the worst crops with: "
             f"python -m data_prep plot-crops {out} {out.with_name(out.stem + '.worst_crops.png')}"]
    if attrs.get("findings_table"):
        lines.append(f"{attrs['n_findings']} findings from {attrs['findings_table']} stored with the images "
                     f"({attrs['n_findings_outside']} centred outside the stored image, "
                     f"{attrs['n_findings_of_skipped_images']} of skipped images left out)")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "build":
            _check_build(args)
            out = build_dataset(args.manifest, args.out_h5, args.size, args.aspect, args.equalize, args.workers,
                                resume=not args.no_resume, progress=not args.quiet, rebuild=args.rebuild)
            print(_build_summary(out))
        elif args.command == "synthesize":
            _check_synthesize(args)
            manifest = synthesize(args.dataset, args.patients, args.seed, args.out, args.difficulty, args.image_size,
                                  args.workers, progress=not args.quiet, grain_scale=args.grain_scale,
                                  finding_scale=args.finding_scale, film_artifacts=args.film_artifacts,
                                  views=args.views)
            print(manifest)
        elif args.command == "validate":
            return _validate(args.manifest, progress=not args.quiet)
        elif args.command == "adapt":
            if args.dataset == "cbis-ddsm":
                rows = adapters.cbis_ddsm_manifest(args.root, args.csvs, args.out, args.skip_missing)
            elif args.dataset == "mini-mias":
                rows = adapters.mini_mias_manifest(args.info_txt, args.images, args.out, args.skip_missing)
            elif args.dataset == "inbreast":
                rows = adapters.inbreast_manifest(args.csv, args.dicom_dir, args.out, xml_dir=args.xml)
            elif args.dataset == "vindr":
                rows = adapters.vindr_manifest(args.csv, args.images, args.out, args.skip_missing, args.findings)
            elif args.dataset == "cmmd":
                rows = adapters.cmmd_manifest(args.clinical_table, args.dicom_dir, args.out)
            elif args.dataset == "rsna":
                rows = adapters.rsna_manifest(args.csv, args.images, args.out, args.skip_missing)
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
