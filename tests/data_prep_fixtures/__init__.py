"""Small helpers for the data_prep tests: DICOM files and breast-like images with known content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MG_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"


def write_dicom(path, stored: np.ndarray, bits_stored: int = 12, photometric: str = "MONOCHROME2",
                compress_rle: bool = False, **tags) -> Path:
    """Write a minimal MG DICOM with the given stored values (uint16, or uint8 with ``bits_stored`` 8) and extra tags.

    Tags whose value is a list of dicts become sequences, e.g.
    ``ViewCodeSequence=[{"CodeValue": "399368009", "CodingSchemeDesignator": "SCT"}]``.
    """
    path = Path(path)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = tags.pop("SOPClassUID", MG_PRESENTATION)
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    allocated = 8 if bits_stored == 8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = allocated, bits_stored, bits_stored - 1, 0
    for keyword, value in tags.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            items = []
            for fields in value:
                item = Dataset()
                for k, v in fields.items():
                    setattr(item, k, v)
                items.append(item)
            value = Sequence(items)
        setattr(ds, keyword, value)
    stored = np.ascontiguousarray(stored, dtype=np.uint8 if allocated == 8 else np.uint16)
    ds.PixelData = stored.tobytes()
    if compress_rle:
        from pydicom.uid import RLELossless
        ds.compress(RLELossless, stored)
    ds.save_as(path, enforce_file_format=True)
    return path


def breast_image(rows: int = 120, cols: int = 90, chest_wall: str = "left", level: float = 0.5,
                 lesion: bool = False) -> np.ndarray:
    """A half-ellipse "breast" of constant brightness against the chest-wall edge, background 0.

    With ``lesion`` a bright disc sits in the upper half (so a flip is visible). Returns float32 in
    [0, 1] with the chest wall on the requested side.
    """
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    breast = ((x / (0.7 * cols)) ** 2 + ((y - rows / 2) / (0.42 * rows)) ** 2) < 1
    image = np.where(breast, level, 0.0).astype(np.float32)
    if lesion:
        image[np.hypot(y - 0.35 * rows, x - 0.3 * cols) < 0.06 * rows] = 1.0
    return image[:, ::-1].copy() if chest_wall == "right" else image
