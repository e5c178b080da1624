"""Reading mammograms into float images in [0, 1] where brighter means denser tissue.

DICOM files go through the DICOM grayscale pipeline (PS3.3 C.11 and PS3.4 N.2): stored values
(BitsStored) -> Modality LUT (rescale) -> VOI LUT or window -> MONOCHROME1 inversion. PNG, TIFF and
PGM files (converted DDSM, mini-MIAS and similar) are read with Pillow and scaled by their
significant bit depth.

The paper does not describe its reading step (its FFDM images came from one institution's PACS);
these functions reproduce what a radiologist's display shows, which is the "mammogram image" the
paper's preprocessing starts from.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, get_decoder
from pydicom.pixels.processing import apply_voi

from .manifest import DataPrepError

#: SOP classes of raw detector images: Digital Mammography and Digital X-Ray "For Processing".
FOR_PROCESSING_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.1.2.1", "1.2.840.10008.5.1.4.1.1.1.1.1"}
#: ViewCodeSequence codes (DICOM CID 4014; SNOMED CT and the older SNOMED-RT "R-" codes) -> view.
VIEW_CODES = {
    "399162004": "CC", "R-10242": "CC",
    "399368009": "MLO", "R-10226": "MLO",
    "399260004": "ML", "R-10224": "ML",
    "399192008": "XCCL", "R-1024A": "XCCL",
}
#: Percentiles of the robust window used when a file carries no usable VOI (see robust_window).
ROBUST_PERCENTILES = (0.5, 99.5)


class ImageReadError(DataPrepError):
    """An image file could not be read; the message names the file, the field and the expectation."""

    def __init__(self, path: str | os.PathLike, field: str, problem: str, expected: str | None = None):
        self.path, self.field, self.problem = Path(path), field, problem
        message = f"{path}: {field}: {problem}"
        super().__init__(message + (f" (expected {expected})" if expected else ""))


# ----------------------------------------------------------------------------------------------
# VOI transforms, each returning values in [0, 1]
# ----------------------------------------------------------------------------------------------

def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Apply a DICOM window (PS3.3 C.11.2.1.2) and return float32 in [0, 1].

    * LINEAR (C.11.2.1.2.1): ``(x - (c - 0.5)) / (w - 1) + 0.5``, clipped; width must be >= 1.
    * LINEAR_EXACT (C.11.2.1.3.2): ``(x - c) / w + 0.5``, clipped; width must be > 0.
    * SIGMOID (C.11.2.1.3.1): ``1 / (1 + exp(-4 (x - c) / w))``; width must be > 0.

    The standard maps onto the output range [ymin, ymax]; we use [0, 1] directly.
    """
    x = np.asarray(values, dtype=np.float32)
    function = (function or "LINEAR").upper()
    if function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"SIGMOID window width must be > 0, got {width}")
        return (1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))).astype(np.float32)
    if function == "LINEAR":
        if width < 1:
            raise ValueError(f"LINEAR window width must be >= 1, got {width}")
        center, width = center - 0.5, width - 1.0
        if width == 0:  # a width of 1 is a pure threshold at c - 0.5
            return (x > center).astype(np.float32)
    elif function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"LINEAR_EXACT window width must be > 0, got {width}")
    else:
        raise ValueError(f"unknown VOI LUT function {function!r}, expected LINEAR, LINEAR_EXACT or SIGMOID")
    out = x - np.float32(center)  # in place from here: these arrays can be 13 megapixels
    out *= np.float32(1.0 / width)
    out += np.float32(0.5)
    return np.clip(out, 0.0, 1.0, out=out)


def robust_window(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Linear window between the 0.5th and 99.5th percentiles of the valid pixels, into [0, 1].

    Used for "For Processing" images (raw detector data has no presentation window) and for files
    without any VOI tags (e.g. CBIS-DDSM's Secondary Capture files). Percentiles instead of min/max
    keep a few dead or saturated pixels from compressing the contrast of the whole image. Only
    every 4th row and column is sampled: the percentiles of 1/16 of millions of pixels are the same
    to within one grey level, and four times faster.
    """
    sample = values[::4, ::4] if valid is None else values[::4, ::4][valid[::4, ::4]]
    if sample.size == 0:
        sample = values.ravel()
    lo, hi = (float(v) for v in np.percentile(sample, ROBUST_PERCENTILES))  # Python floats keep float32 float32
    if hi <= lo:
        return np.zeros(values.shape, np.float32)
    return np.clip((values.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# DICOM
# ----------------------------------------------------------------------------------------------

def _first(value) -> float:
    """First of a multi-valued DICOM element (WindowCenter/Width may hold several windows)."""
    return float(value[0]) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else float(value)


def _pip_commands(missing: list[str]) -> list[str]:
    """Turn pydicom's "gdcm - requires gdcm>=3.0.10" style notes into pip install commands."""
    commands = []
    for note in missing:
        names = re.findall(r"([A-Za-z][\w\-]*)\s*>=", note.split(" - ", 1)[-1])
        names = ["python-gdcm" if n == "gdcm" else n for n in names if n != "numpy"]
        commands.append("`pip install " + " ".join(names) + "`" if names else note)
    return commands


def _missing_decoder(ds: pydicom.Dataset, path) -> ImageReadError | None:
    """The error for a compressed transfer syntax that no installed plugin decodes (naming the pip
    command), or None when the pixel data is uncompressed or decodable here."""
    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    if syntax is None or not syntax.is_compressed:
        return None
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return ImageReadError(path, "TransferSyntaxUID", f"{syntax.name} ({syntax}) has no pydicom decoder",
                              "an uncompressed, RLE, JPEG, JPEG-LS or JPEG 2000 file")
    if decoder.available_plugins:
        return None
    return ImageReadError(path, "TransferSyntaxUID",
                          f"pixel data compressed as {syntax.name} ({syntax}) but no decoder plugin is installed",
                          "a decoder: " + " or ".join(_pip_commands(decoder.missing_dependencies)))


def _decode_stored_values(ds: pydicom.Dataset, path) -> np.ndarray:
    """Decode PixelData to the stored values; name the missing plugin for compressed syntaxes."""
    try:
        stored = ds.pixel_array
    except Exception as exc:  # pydicom raises several types; all mean "cannot decode"
        missing = _missing_decoder(ds, path)
        if missing is not None:
            raise missing from exc
        raise ImageReadError(path, "PixelData", f"cannot be decoded: {exc}") from exc
    if stored.ndim != 2:
        raise ImageReadError(path, "PixelData", f"has shape {stored.shape}",
                             "one 2-D grayscale frame (SamplesPerPixel 1, NumberOfFrames 1)")
    bits_stored = int(ds.get("BitsStored", stored.dtype.itemsize * 8))
    if stored.dtype.kind == "u" and bits_stored < stored.dtype.itemsize * 8:
        # PS3.5 8.1.1: bits above BitsStored are not pixel data (old files keep overlays there).
        stored = stored & np.asarray((1 << bits_stored) - 1, dtype=stored.dtype)
    return stored


def _padding_mask(ds: pydicom.Dataset, stored: np.ndarray) -> np.ndarray:
    """Pixels marked as padding (PixelPaddingValue [.. PixelPaddingRangeLimit], PS3.3 C.7.5.1.1.2)."""
    if "PixelPaddingValue" not in ds:
        return np.zeros(stored.shape, bool)
    value = int(ds.PixelPaddingValue)
    limit = int(ds.get("PixelPaddingRangeLimit", value))
    if limit == value:
        return stored == value
    lo, hi = min(value, limit), max(value, limit)
    return (stored >= lo) & (stored <= hi)


def modality_values(ds: pydicom.Dataset, stored: np.ndarray) -> np.ndarray:
    """Modality LUT (PS3.3 C.11.1): RescaleSlope * stored + RescaleIntercept, as float32.

    A ModalityLUTSequence goes through pydicom's ``apply_modality_lut``. The common rescale is done
    here in float32 and in place, because pydicom's float64 result doubles the memory traffic for a
    13-megapixel mammogram (about 100 ms per image) and the 12-16-bit data need no more precision.
    """
    if ds.get("ModalityLUTSequence"):
        return apply_modality_lut(stored, ds).astype(np.float32)
    values = stored.astype(np.float32)
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    if slope != 1.0:
        values *= slope
    if intercept != 0.0:
        values += intercept
    return values


def is_for_processing(ds: pydicom.Dataset) -> bool:
    """True for raw detector images (PresentationIntentType or SOP Class "For Processing")."""
    intent = str(ds.get("PresentationIntentType", "")).upper()
    return intent == "FOR PROCESSING" or str(ds.get("SOPClassUID", "")) in FOR_PROCESSING_SOP_CLASSES


def dicom_laterality(ds: pydicom.Dataset) -> str | None:
    """Breast side from ImageLaterality (0020,0062, type 1 in the MG IOD), else Laterality (0020,0060)."""
    for keyword in ("ImageLaterality", "Laterality"):
        value = str(ds.get(keyword, "")).strip().upper()
        if value in ("L", "R"):
            return value
    return None


def dicom_view(ds: pydicom.Dataset) -> str | None:
    """View from ViewPosition (0018,5101, type 3), else ViewCodeSequence (0054,0220, type 1).

    ViewPosition is optional in the MG IOD (CMMD files lack it), so the coded view is the fallback;
    codes are mapped with :data:`VIEW_CODES`. Views other than CC and MLO are returned as found.
    """
    position = str(ds.get("ViewPosition", "")).strip().upper()
    if position:
        return position
    for item in ds.get("ViewCodeSequence", []):
        code = str(item.get("CodeValue", "")).strip()
        if code:
            return VIEW_CODES.get(code, code)
    return None


def open_dicom(path, header_only: bool = False) -> pydicom.Dataset:
    """dcmread with this module's errors (:class:`ImageReadError`); ``header_only`` stops before the pixel data."""
    try:
        return pydicom.dcmread(path, force=True, stop_before_pixels=header_only)
    except FileNotFoundError:
        raise ImageReadError(path, "file", "does not exist") from None
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise ImageReadError(path, "file", f"is not a readable DICOM file: {exc}") from exc


def _check_photometric(ds: pydicom.Dataset, path) -> str:
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageReadError(path, "PhotometricInterpretation", f"is {photometric!r}", "MONOCHROME1 or MONOCHROME2")
    return photometric


def read_dicom(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read one mammogram DICOM file into a float32 image in [0, 1] (bright = dense) and its meta.

    Steps (DICOM grayscale pipeline, PS3.4 N.2):
    1. stored values, bits above BitsStored cleared;
    2. Modality LUT: RescaleSlope/RescaleIntercept or ModalityLUTSequence (:func:`modality_values`);
    3. VOI: for "For Processing" images a LIN relationship is made logarithmic and the
       :func:`robust_window` is used (raw data has no presentation window); otherwise the first
       VOILUTSequence item, else the first WindowCenter/WindowWidth pair with VOILUTFunction
       (LINEAR, LINEAR_EXACT or SIGMOID; :func:`window`), else the robust window;
    4. MONOCHROME1 (minimum = white) is inverted, ``1 - x``. PresentationLUTShape INVERSE is the
       MG IOD's required companion of MONOCHROME1, not a second inversion, so it is not applied;
    5. padding pixels (PixelPaddingValue) are set to 0, the background.

    ``meta`` holds ``format``, ``laterality`` and ``view`` from the tags (None if absent),
    ``photometric``, ``bits_stored``, ``voi`` (which window was used), ``for_processing``,
    ``pixel_spacing_mm`` (ImagerPixelSpacing, else PixelSpacing, else None) and
    ``transfer_syntax``.
    """
    ds = open_dicom(path)
    if "PixelData" not in ds:
        raise ImageReadError(path, "PixelData", "is missing", "a DICOM image with pixel data")
    photometric = _check_photometric(ds, path)

    stored = _decode_stored_values(ds, path)
    padding = _padding_mask(ds, stored)
    values = modality_values(ds, stored)

    if is_for_processing(ds):
        if str(ds.get("PixelIntensityRelationship", "")).upper() == "LIN":
            values = np.log1p(values - values.min())  # LIN: proportional to exposure; LOG is what we want
        image, voi = robust_window(values, ~padding), "robust window (For Processing)"
    elif ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        image = apply_voi(np.rint(values).astype(np.int64), ds, 0).astype(np.float32)
        image /= float(2 ** int(item.LUTDescriptor[2]) - 1)
        voi = "VOILUTSequence[0]"
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        function = str(ds.get("VOILUTFunction", "LINEAR")).upper() or "LINEAR"
        try:
            image = window(values, center, width, function)
        except ValueError as exc:
            raise ImageReadError(path, "WindowCenter/WindowWidth/VOILUTFunction", str(exc)) from exc
        voi = f"window {function} center={center:g} width={width:g}"
    else:
        image, voi = robust_window(values, ~padding), "robust window (no VOI tags)"

    if photometric == "MONOCHROME1":
        image = 1.0 - image
    image[padding] = 0.0

    spacing = ds.get("ImagerPixelSpacing") or ds.get("PixelSpacing")
    meta = {
        "format": "dicom",
        "laterality": dicom_laterality(ds),
        "view": dicom_view(ds),
        "photometric": photometric,
        "bits_stored": int(ds.get("BitsStored", 0)),
        "voi": voi,
        "for_processing": is_for_processing(ds),
        "pixel_spacing_mm": float(spacing[0]) if spacing else None,
        "transfer_syntax": str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "")),
    }
    return image, meta


# ----------------------------------------------------------------------------------------------
# PNG / TIFF / PGM
# ----------------------------------------------------------------------------------------------

def _open_raster(path):
    """Image.open with the package's errors (Pillow reads the header here, the pixels later)."""
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise ImageReadError(path, "file", "does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(path, "file", f"is not a readable image: {exc}", "PNG, TIFF, PGM or DICOM") from exc


def read_raster(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read an 8- or 16-bit grayscale PNG, TIFF or PGM into float32 in [0, 1].

    8-bit images are divided by 255. A 16-bit container often holds fewer significant bits (DDSM
    digitizers give 12 bits), so 16-bit images are divided by ``2**b - 1`` where ``b`` is the bit
    length of the image's maximum (at least 8): the same film reads the same from a 12-bit or a
    16-bit file. Bright is assumed to mean dense, as in converted DDSM and mini-MIAS files.
    Colour files are converted to luminance (some converted data sets store grey as RGB).
    """
    try:
        with _open_raster(path) as im:
            if im.mode in ("RGB", "RGBA", "P", "LA"):
                im = im.convert("L")
            pixels = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt pixels
        raise ImageReadError(path, "file", f"is not a readable image: {exc}", "PNG, TIFF, PGM or DICOM") from exc
    if pixels.ndim != 2:
        raise ImageReadError(path, "pixels", f"have shape {pixels.shape}", "a 2-D grayscale image")
    if pixels.dtype.kind == "f":
        lo, hi = float(pixels.min()), float(pixels.max())
        image = (pixels - lo) / (hi - lo) if hi > lo else np.zeros_like(pixels)
        bits = 32
    else:
        bits = 8 if pixels.dtype == np.uint8 else max(8, int(pixels.max()).bit_length())
        image = pixels / float(2 ** bits - 1)
    meta = {"format": Path(path).suffix.lower().lstrip(".") or "raster", "laterality": None, "view": None,
            "photometric": "MONOCHROME2", "bits_stored": bits, "voi": f"divided by 2**{bits}-1",
            "for_processing": False, "pixel_spacing_mm": None, "transfer_syntax": ""}
    return image.astype(np.float32), meta


def _is_dicom(path: Path) -> bool:
    """DICOM Part 10 files carry 'DICM' at byte 128; .dcm/.dicom files without a preamble also count."""
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read any supported mammogram file: returns (float32 image in [0, 1], bright = dense; meta).

    DICOM (by extension or the 'DICM' marker) goes to :func:`read_dicom`, everything else to
    :func:`read_raster`. Raises :class:`ImageReadError` naming the file and the problem.
    """
    path = Path(path)
    return read_dicom(path) if _is_dicom(path) else read_raster(path)


def check_image_file(path: str | os.PathLike) -> None:
    """Check that an image file exists and opens, reading only its header (fast, for validation).

    DICOM: readable, with Rows and Columns, a grayscale PhotometricInterpretation and, when
    compressed, an installed decoder. PNG/TIFF/PGM: Pillow recognises the file. Raises the
    :class:`ImageReadError` that :func:`read_image` would raise for the same fault; corrupt pixel
    data further in the file is found only by reading it (the build's error report).
    """
    path = Path(path)
    if not _is_dicom(path):
        _open_raster(path).close()
        return
    ds = open_dicom(path, header_only=True)
    if "Rows" not in ds or "Columns" not in ds:
        raise ImageReadError(path, "Rows/Columns", "are missing", "a DICOM image")
    _check_photometric(ds, path)
    missing = _missing_decoder(ds, path)
    if missing is not None:
        raise missing
