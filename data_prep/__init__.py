"""data_prep: mammograms in, HDF5 datasets out -- for the Aboutalib et al. 2018 reimplementation.

Reading real mammograms (DICOM, PNG/TIFF/PGM), the paper's preprocessing (orientation, breast crop,
bicubic downsampling to 227 x 227, histogram equalization), HDF5 dataset builds, patient-level
splits, adapters for public data sets (with their lesion annotations as findings, see
:mod:`data_prep.findings`), and a synthetic FFDM/DDSM cohort generator that stands in for the
study's private data. docs/data.md documents it all.
"""

from .adapters import (cbis_ddsm_manifest, cmmd_manifest, folder_manifest, inbreast_manifest, mini_mias_manifest,
                       rsna_manifest, vindr_manifest)
from .build import build_dataset, compute_mean, crops_report_path, errors_report_path, load_dataset, load_findings
from .figures import plot_crops, plot_examples, plot_preprocessing_steps
from .findings import (FINDING_COLUMNS, ROLES, Finding, StoredFinding, findings_path, read_findings,
                       to_stored_findings, write_findings)
from .manifest import LABEL_CODES, LABELS, DataPrepError, ManifestError, read_manifest, write_manifest
from .preprocess import (CropGeometry, breast_mask, crop_to_breast, equalize_histogram, orient, preprocess_image,
                         preprocess_steps, resize_bicubic, stored_scale, to_stored_coords, to_uint8)
from .readers import ImageReadError, check_image_file, read_dicom, read_image, read_raster
from .splits import check_no_patient_leakage, holdout_split, kfold_split
from .synthetic.cohort import class_counts, synthesize

__all__ = [
    "FINDING_COLUMNS", "LABELS", "LABEL_CODES", "ROLES", "CropGeometry", "DataPrepError", "Finding", "ImageReadError",
    "ManifestError", "StoredFinding", "breast_mask", "build_dataset", "cbis_ddsm_manifest", "check_image_file",
    "check_no_patient_leakage", "class_counts", "cmmd_manifest", "compute_mean", "crop_to_breast",
    "crops_report_path", "equalize_histogram", "errors_report_path", "findings_path", "folder_manifest",
    "holdout_split", "inbreast_manifest", "kfold_split", "load_dataset", "load_findings", "mini_mias_manifest",
    "orient", "plot_crops", "plot_examples", "plot_preprocessing_steps", "preprocess_image", "preprocess_steps",
    "read_dicom", "read_findings", "read_image", "read_manifest", "read_raster", "resize_bicubic", "rsna_manifest",
    "stored_scale", "synthesize", "to_stored_coords", "to_stored_findings", "to_uint8", "vindr_manifest",
    "write_findings", "write_manifest",
]
