"""Turn an attenuation map into the files real data sets ship: FFDM DICOM or digitized-film PNG.

Both encoders receive a left-oriented attenuation map (chest wall at column 0) and mirror it for a
right breast, as a mammography unit stores it; the film encoder also mirrors at random, because
film scans are not stored consistently (the loader must orient by content, see
:func:`data_prep.preprocess.orient`).

FFDM-like DICOM (data_formats.md section 1 and 3): Digital Mammography X-Ray Image, 12 or 14
bits stored in 16, MONOCHROME2 or (25%) MONOCHROME1, rescale slope/intercept, two windows with
LINEAR or (20%) SIGMOID VOI LUT function, PixelPaddingValue on the background, laterality in
ImageLaterality (or only Laterality, 10%), view in ViewCodeSequence and usually ViewPosition,
ImagerPixelSpacing, and 8% raw "For Processing" images; 10% of files are RLE-compressed.

Digitized film (DDSM-like): attenuation -> exposure -> optical density through a film
characteristic (H&D) curve -> grey level through the inverse of a DDSM digitizer's calibration
(HOWTEK or LUMISYS, 12 bits), with film grain, digitizer noise and scan-line streaks, an unexposed
film-edge band, burned-in labels ("LCC", a case number), a lead marker, dust and scanner-edge
lines; in :data:`TOUCHING_FRACTION` of the films an unexposed border touching the breast and a
label across the skin line; written as a 16-bit PNG. The "scanned" film mode adds what real
digitized films show besides (:mod:`data_prep.synthetic.scanner`): edge bands whose brightness
rises towards the film's edge, full or partial, touching the breast or not; thin frame lines;
streaks along the scan direction; orientation markers across the skin line.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid
from scipy import ndimage

from ..fileio import atomic_output
from ..preprocess import mask_box
from .scanner import add_scanned_film_artifacts

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
#: ViewCodeSequence codes (DICOM CID 4014, SNOMED CT) of the views written.
VIEW_CODE = {"CC": ("399162004", "cranio-caudal"), "MLO": ("399368009", "medio-lateral oblique"),
             "XCCL": ("399192008", "cranio-caudal exaggerated laterally")}
#: PatientOrientation (row direction \\ column direction) of the views (an XCCL is a craniocaudal projection).
PATIENT_ORIENTATION = {("L", "CC"): ["A", "R"], ("R", "CC"): ["P", "L"], ("L", "MLO"): ["A", "F"], ("R", "MLO"): ["P", "F"],
                       ("L", "XCCL"): ["A", "R"], ("R", "XCCL"): ["P", "L"]}
#: Attenuation at the top of the default presentation window (a little above dense tissue).
WINDOW_TOP = 1.45
#: DDSM digitizers, grey level from optical density (inverse of the formulas in data_formats.md).
DIGITIZERS = {
    "HOWTEK": lambda od: (3.789 - od) / 0.00094568,
    "LUMISYS": lambda od: 4096.99 - 1009.01 * od,
}
#: Share of films whose unexposed border touches the breast and whose label crosses the skin line.
TOUCHING_FRACTION = 0.4


def _uid(*parts) -> str:
    """A deterministic UID from the parts (pydicom hashes them under its prefix)."""
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def write_ffdm_dicom(path: Path, attenuation: np.ndarray, info: dict, rng: np.random.Generator) -> dict:
    """Write an FFDM-like mammogram DICOM file; returns what was chosen (for the cohort summary).

    ``info`` holds patient_id, exam_id, laterality, view (CC, MLO or XCCL), spacing_mm, seed,
    study_date (a datetime.date) and instance (1-4 the standard views, 5-6 an XCCL). Stored values
    are linear in attenuation (a processed, log-domain image); the window centre and width are
    chosen so the breast fills the display.
    """
    bits = int(rng.choice([12, 14]))
    top = 2 ** bits - 1
    monochrome1 = rng.random() < 0.25
    for_processing = rng.random() < 0.08
    sigmoid = rng.random() < 0.2
    compress = rng.random() < 0.1
    gain = top * rng.uniform(0.78, 0.86) / WINDOW_TOP
    offset = top * rng.uniform(0.01, 0.03)
    image = attenuation[:, ::-1] if info["laterality"] == "R" else attenuation
    background = image <= 0
    noisy = image + rng.normal(0.0, 0.006, image.shape).astype(np.float32)
    stored = np.clip(np.rint(offset + gain * noisy), 1, top).astype(np.uint16)
    stored[background] = 0
    slope, intercept = 1.0, 0.0 if rng.random() < 0.7 else float(rng.integers(-200, 200))
    centre_stored = offset + gain * WINDOW_TOP * rng.uniform(0.47, 0.53)
    width_stored = gain * WINDOW_TOP * rng.uniform(0.95, 1.05)
    if monochrome1 or for_processing:  # raw data: lower value = less exposure (MONOCHROME1)
        stored = (top - stored).astype(np.uint16)
        centre_stored = top - centre_stored

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sop_class = MG_FOR_PROCESSING if for_processing else MG_FOR_PRESENTATION
    key = (info["seed"], info["patient_id"], info["laterality"], info["view"])
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = _uid("sop", *key)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = _uid("study", info["seed"], info["exam_id"])
    ds.SeriesInstanceUID = _uid("series", *key)
    ds.Modality = "MG"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PROCESSING" if for_processing else "FOR PRESENTATION"
    ds.Manufacturer, ds.ManufacturerModelName = "data_prep synthetic", "FFDM-like"
    ds.PatientID, ds.PatientName = info["patient_id"], f"SYNTHETIC^{info['patient_id']}"
    ds.AccessionNumber, ds.StudyID = info["exam_id"][-16:], "1"
    ds.StudyDate = ds.ContentDate = info["study_date"].strftime("%Y%m%d")
    ds.SeriesNumber, ds.InstanceNumber = info["instance"], 1
    ds.BodyPartExamined = "BREAST"
    if rng.random() < 0.9:
        ds.ImageLaterality = info["laterality"]
    else:  # older files: series-level Laterality only
        ds.Laterality = info["laterality"]
    if rng.random() < 0.75:
        ds.ViewPosition = info["view"]
    code, meaning = VIEW_CODE[info["view"]]
    view_code = Dataset()
    view_code.CodeValue, view_code.CodingSchemeDesignator, view_code.CodeMeaning = code, "SCT", meaning
    ds.ViewCodeSequence = Sequence([view_code])
    ds.PatientOrientation = PATIENT_ORIENTATION[(info["laterality"], info["view"])]
    ds.ImagerPixelSpacing = [round(info["spacing_mm"], 6)] * 2
    ds.DetectorType, ds.BreastImplantPresent = "DIRECT", "NO"
    ds.KVP = round(float(rng.uniform(26, 32)), 1)
    ds.BodyPartThickness = round(float(rng.uniform(35, 70)), 1)
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1 if (monochrome1 or for_processing) else -1
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "US"
    ds.PresentationLUTShape = "INVERSE" if (monochrome1 or for_processing) else "IDENTITY"
    if not for_processing:
        centre = centre_stored * slope + intercept
        ds.WindowCenter = [round(centre, 1), round(centre, 1)]
        ds.WindowWidth = [round(width_stored, 1), round(width_stored * 1.3, 1)]
        ds.WindowCenterWidthExplanation = ["NORMAL", "WIDE"]
        ds.VOILUTFunction = "SIGMOID" if sigmoid else "LINEAR"
    ds.PixelPaddingValue = top if (monochrome1 or for_processing) else 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if (monochrome1 or for_processing) else "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.BurnedInAnnotation = "NO"
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    if compress:
        ds.compress(RLELossless, np.ascontiguousarray(stored), generate_instance_uid=False)
    with atomic_output(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return {"bits_stored": bits, "photometric": ds.PhotometricInterpretation, "for_processing": for_processing,
            "voi": "" if for_processing else ds.VOILUTFunction, "rle": compress}


def _text_patch(text: str, height_px: float) -> np.ndarray:
    """White-on-black text as a float mask about ``height_px`` tall (Pillow's built-in bitmap font)."""
    canvas = Image.new("L", (7 * len(text) + 4, 13))
    ImageDraw.Draw(canvas).text((2, 1), text, fill=255)
    zoom = max(1, round(height_px / 13))
    return np.kron(np.asarray(canvas, np.float32) / 255.0, np.ones((zoom, zoom), np.float32))


def _stamp(image: np.ndarray, patch: np.ndarray, top: int, left: int, value: float) -> None:
    """Burn ``patch`` (0..1 mask) into ``image`` at (top, left) with the given grey value."""
    rows = slice(top, min(image.shape[0], top + patch.shape[0]))
    cols = slice(left, min(image.shape[1], left + patch.shape[1]))
    part = patch[: rows.stop - rows.start, : cols.stop - cols.start]
    image[rows, cols] = np.where(part > 0.5, value, image[rows, cols])


def film_grey_levels(attenuation: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Simulate film and digitizer: attenuation -> optical density -> 12-bit grey level.

    Exposure falls exponentially with attenuation (log10 E = -k A); the film's characteristic
    curve is a sigmoid in log exposure between base+fog (OD 0.18) and maximum density (OD 3.6);
    film grain adds OD noise; the digitizer maps OD to grey level by its calibration line; it adds
    its own noise and faint column streaks (scan lines).
    """
    k = rng.uniform(0.9, 1.1)
    gradient = rng.uniform(3.5, 4.5)
    log_exposure = -k * attenuation
    optical_density = 0.18 + 3.42 / (1.0 + np.exp(-gradient * (log_exposure + k * 0.5)))
    optical_density += rng.normal(0.0, 0.012, attenuation.shape).astype(np.float32)
    digitizer = str(rng.choice(sorted(DIGITIZERS)))
    grey = DIGITIZERS[digitizer](optical_density)
    grey += rng.normal(0.0, 4.0, grey.shape) + rng.normal(0.0, 3.0, (1, grey.shape[1]))
    return np.clip(grey, 0, 4095).astype(np.float32), digitizer


def write_film_png(path: Path, attenuation: np.ndarray, info: dict, rng: np.random.Generator,
                   scanner_rng: np.random.Generator | None = None) -> dict:
    """Write a DDSM-like digitized film mammogram as a 16-bit PNG (12 significant bits).

    Every film has the usual artefacts away from the breast: an unexposed film-edge band on the
    side opposite the chest wall (70%), a view label, a case number and a lead marker near that
    side, dust, and (30%) a thin saturated scanner-edge line along one image edge. A share
    :data:`TOUCHING_FRACTION` of the films also has what makes real CBIS-DDSM crops fail: the
    cassette's unexposed border as a bright strip along the chest-wall edge (so it touches the
    breast; slightly tilted), in half of them a second strip along the top or bottom edge, and the
    view label burned in across the skin line. With ``scanner_rng`` (the "scanned" film mode) the
    real-film artefacts of :func:`data_prep.synthetic.scanner.add_scanned_film_artifacts` are drawn
    on top, from that stream alone, so the film underneath is the same as without them.

    Returns the digitizer, whether the film was mirrored, the drawn artefacts (names relative to
    the breast: chest_wall, nipple_side, top, bottom), whether a border (band, frame line) or the
    label (marker) touches the breast, and ``breast_box``: (top, bottom, left, right), rows
    [top, bottom) and columns [left, right) of the written file that hold the breast's visible part
    (attenuation > 0, not covered by a border strip, band or frame line).
    """
    grey, digitizer = film_grey_levels(attenuation, rng)
    rows, cols = grey.shape
    visible = attenuation > 0
    unexposed = DIGITIZERS[digitizer](0.18 + rng.uniform(0.0, 0.1))  # base + fog: the brightest film
    artifacts, border = [], np.zeros(grey.shape, bool)
    if rng.random() < 0.7:
        band = int(cols * rng.uniform(0.015, 0.035))
        border[:, cols - band:] = True
        artifacts.append("film_edge_nipple_side")
    label = _text_patch(f"{info['laterality']}{info['view']}", rows * 0.045)
    case = _text_patch(f"{int(rng.integers(1000, 9999))}-{info['instance']}", rows * 0.03)
    near_top = rng.random() < 0.5
    right = int(cols * 0.93)
    label_at = (int(rows * (0.03 if near_top else 0.9)), right - label.shape[1])
    _stamp(grey, case, int(rows * (0.1 if near_top else 0.85)), right - case.shape[1], 4095.0)
    marker = int(rows * 0.02)
    top = int(rows * (0.85 if near_top else 0.1))
    grey[top: top + marker, right - 2 * marker: right - marker] = 4000.0
    if rng.random() < TOUCHING_FRACTION:
        # The breast lies against the cassette's chest-wall edge, whose unexposed border joins it.
        width = cols * rng.uniform(0.015, 0.04) + cols * rng.uniform(-0.01, 0.01) * np.linspace(-1, 1, rows)
        border |= np.arange(cols)[None, :] < width[:, None]
        artifacts.append("border_chest_wall")
        if rng.random() < 0.5:
            height = max(1, int(rows * rng.uniform(0.015, 0.035)))
            edge = str(rng.choice(["top", "bottom"]))
            border[:height] |= edge == "top"
            border[rows - height:] |= edge == "bottom"
            artifacts.append(f"border_{edge}")
        skin_label = _label_at_skin(visible & ~border, label, rng)
        if skin_label is not None:
            label_at = skin_label
            artifacts.append("label_at_skin")
    if rng.random() < 0.3:  # the scanner's edge: a thin saturated line along one image edge
        edge = str(rng.choice(["top", "bottom", "chest_wall", "nipple_side"]))
        line = np.zeros(grey.shape, bool)
        line[{"top": np.s_[:2], "bottom": np.s_[-2:], "chest_wall": np.s_[:, :2], "nipple_side": np.s_[:, -2:]}[edge]] = True
        grey[line] = 4095.0
        visible &= ~line
        artifacts.append(f"scanner_edge_{edge}")
    grey[border] = unexposed
    _stamp(grey, label, *label_at, 4095.0)
    touches_breast = ndimage.binary_dilation(visible)  # a pixel beside the breast touches it
    label_mask = np.zeros(grey.shape, bool)
    _stamp(label_mask, label > 0.5, *label_at, True)
    visible &= ~border
    border_touches = bool((border & touches_breast).any())
    if scanner_rng is not None:
        background = DIGITIZERS[digitizer](3.6)  # the film's maximum density: exposed film beside the breast
        bordered = {name.removeprefix("border_").removeprefix("film_edge_") for name in artifacts
                    if name.startswith(("border_", "film_edge_"))}
        scanned = add_scanned_film_artifacts(grey, visible, background, unexposed,
                                             _text_patch(info["laterality"], rows * 0.045), bordered, scanner_rng)
        visible &= ~scanned.covered
        artifacts += scanned.artifacts
        border_touches |= scanned.touches
        if scanned.marker is not None:
            label_mask |= scanned.marker
        np.clip(grey, 0.0, 4095.0, out=grey)  # streaks add to the grey levels; the file keeps 12 bits
    specks = rng.integers(0, [rows, cols], (int(rng.integers(5, 20)), 2))
    grey[specks[:, 0], specks[:, 1]] = rng.choice([0.0, 4095.0], len(specks))
    mirrored = (info["laterality"] == "R") != (rng.random() < 0.5)  # film scans face either way
    if mirrored:
        grey = grey[:, ::-1]
    with atomic_output(path) as tmp:
        Image.fromarray(np.rint(grey).astype(np.uint16)).save(tmp, format="PNG", compress_level=0)
    return {"digitizer": digitizer, "mirrored": bool(mirrored), "artifacts": artifacts,
            "border_touches": border_touches,
            "label_touches": bool((label_mask & touches_breast).any()),
            "breast_box": breast_box_in_file(visible, mirrored)}


def _label_at_skin(breast: np.ndarray, label: np.ndarray, rng: np.random.Generator):
    """(top, left) that puts the label's text across the breast's upper or lower skin line; None if no room.

    A column between 30% and 80% of the breast's depth is chosen; the text overlaps the breast by a
    few pixels there, above the breast if it has room above, else below.
    """
    columns = np.flatnonzero(breast.any(axis=0))
    if columns.size < 4:
        return None
    col = int(columns[0] + rng.uniform(0.3, 0.8) * (columns[-1] - columns[0]))
    inside = np.flatnonzero(breast[:, col])
    ink = np.flatnonzero((label > 0.5).any(axis=1))
    overlap = max(2, label.shape[0] // 6)
    top = inside[0] + overlap - ink[-1]            # the text's last row lies `overlap` rows inside
    if top >= 0:
        return int(top), col
    top = inside[-1] - overlap - ink[0]            # else the text's first row, below the breast
    if top + label.shape[0] <= breast.shape[0]:
        return int(top), col
    return None


def breast_box_in_file(visible: np.ndarray, mirrored: bool) -> tuple[int, int, int, int]:
    """Bounding box (top, bottom, left, right) of a left-oriented breast mask in the written file."""
    top, bottom, left, right = mask_box(visible)
    cols = visible.shape[1]
    return (top, bottom, cols - right, cols - left) if mirrored else (top, bottom, left, right)


def study_date(rng: np.random.Generator) -> datetime.date:
    """A screening date in the paper's FFDM collection period (2007-2014)."""
    return datetime.date(2007, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 8 * 365)))
