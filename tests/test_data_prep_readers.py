"""Readers: DICOM grayscale pipeline and PNG/TIFF/PGM, on files the tests write."""

import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_voi_lut, get_decoder
from pydicom.uid import JPEGLosslessSV1

from data_prep.readers import ImageReadError, read_image, robust_window, window

sys.path.insert(0, str(Path(__file__).parent))  # tests/ holds the data_prep_fixtures helpers
from data_prep_fixtures import write_dicom

RAMP = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16)  # 12-bit values, all different


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_window_matches_pydicom(tmp_path, function):
    """Our [0, 1] window equals pydicom's apply_voi_lut scaled by its output range (12 bits)."""
    path = write_dicom(tmp_path / "w.dcm", RAMP, WindowCenter=2000, WindowWidth=1500, VOILUTFunction=function)
    image, meta = read_image(path)
    ds = pydicom.dcmread(path)
    expected = apply_voi_lut(ds.pixel_array, ds) / 4095.0
    np.testing.assert_allclose(image, expected, atol=1e-5)
    assert meta["voi"].startswith(f"window {function}")


def test_linear_window_formula():
    """PS3.3 C.11.2.1.2.1: below c - 0.5 - (w-1)/2 -> 0, above c - 0.5 + (w-1)/2 -> 1, linear between."""
    x = np.array([0.0, 49.0, 49.5, 99.5, 150.0, 151.0])  # c - 0.5 = 99.5, (w - 1) / 2 = 50.5
    out = window(x, center=100.0, width=102.0, function="LINEAR")
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5 / 101, 0.5, 1.0, 1.0], atol=1e-6)
    with pytest.raises(ValueError, match="LINEAR window width"):
        window(x, 100.0, 0.5, "LINEAR")
    with pytest.raises(ValueError, match="unknown VOI LUT function"):
        window(x, 100.0, 10.0, "GAMMA")


def test_rescale_applied_before_window(tmp_path):
    """Window centre/width are in rescaled units: slope 2, intercept -100."""
    path = write_dicom(tmp_path / "r.dcm", RAMP, RescaleSlope=2, RescaleIntercept=-100,
                       WindowCenter=3000, WindowWidth=2001, VOILUTFunction="LINEAR_EXACT")
    image, _ = read_image(path)
    expected = np.clip((2.0 * RAMP - 100 - 3000) / 2001 + 0.5, 0, 1)
    np.testing.assert_allclose(image, expected, atol=1e-5)


def test_monochrome1_comes_back_inverted(tmp_path):
    """The same anatomy stored as MONOCHROME2 and as MONOCHROME1 reads back identically."""
    top = 4095
    mono2 = write_dicom(tmp_path / "m2.dcm", RAMP, WindowCenter=2048, WindowWidth=3000, VOILUTFunction="LINEAR_EXACT")
    mono1 = write_dicom(tmp_path / "m1.dcm", (top - RAMP).astype(np.uint16), photometric="MONOCHROME1",
                        WindowCenter=top - 2048, WindowWidth=3000, VOILUTFunction="LINEAR_EXACT",
                        PresentationLUTShape="INVERSE")
    a, _ = read_image(mono2)
    b, meta = read_image(mono1)
    assert meta["photometric"] == "MONOCHROME1"
    np.testing.assert_allclose(b, a, atol=1e-6)
    assert b[-1, -1] > b[0, 0]  # the lowest stored value is the brightest pixel


def test_sigmoid_monochrome1_without_window_inversion_error(tmp_path):
    """SIGMOID on MONOCHROME1: a dense (low stored value) region reads brighter than fat."""
    stored = np.full((8, 8), 3000, np.uint16)
    stored[2:5, 2:5] = 1000  # dense: less exposure, lower value in MONOCHROME1
    path = write_dicom(tmp_path / "s.dcm", stored, photometric="MONOCHROME1", WindowCenter=2000, WindowWidth=2000,
                       VOILUTFunction="SIGMOID")
    image, _ = read_image(path)
    assert image[3, 3] == pytest.approx(1 - 1 / (1 + np.exp(-4 * (1000 - 2000) / 2000)), abs=1e-5)
    assert image[3, 3] > 0.8 and image[0, 0] < 0.2


def test_voi_lut_sequence(tmp_path):
    """A VOI LUT (descriptor [entries, first value, bits]) maps values, clamped at both ends."""
    lut = np.arange(0, 256 * 16, 16).astype("<u2").tobytes()  # 256 entries, 12-bit output, stored as OW
    stored = np.array([[0, 100, 100 + 128, 100 + 300]], np.uint16)
    path = write_dicom(tmp_path / "lut.dcm", stored,
                       VOILUTSequence=[{"LUTDescriptor": [256, 100, 12], "LUTData": lut}])
    image, meta = read_image(path)
    np.testing.assert_allclose(image[0], [0.0, 0.0, 128 * 16 / 4095, 255 * 16 / 4095], atol=1e-6)
    assert meta["voi"] == "VOILUTSequence[0]"


def test_bits_above_bits_stored_are_ignored(tmp_path):
    """A 12-bit image with junk in bits 12-15 (old overlays) reads like the clean image."""
    clean = write_dicom(tmp_path / "c.dcm", RAMP, WindowCenter=2048, WindowWidth=4096)
    dirty = write_dicom(tmp_path / "d.dcm", RAMP | np.uint16(0xF000), WindowCenter=2048, WindowWidth=4096)
    np.testing.assert_array_equal(read_image(dirty)[0], read_image(clean)[0])


def test_for_processing_uses_robust_window_and_padding(tmp_path):
    """Raw MONOCHROME1 LOG data: percentile window, inverted; padding pixels become 0."""
    rng = np.random.default_rng(0)
    stored = rng.integers(1000, 3000, (40, 40)).astype(np.uint16)
    stored[:, :10] = 4095  # padding
    path = write_dicom(tmp_path / "raw.dcm", stored, photometric="MONOCHROME1", PixelPaddingValue=4095,
                       PresentationIntentType="FOR PROCESSING", PixelIntensityRelationship="LOG",
                       WindowCenter=1, WindowWidth=2)  # a window must be ignored for raw data
    image, meta = read_image(path)
    assert meta["for_processing"] and meta["voi"].startswith("robust window")
    assert image.dtype == np.float32  # as the docs say (the percentiles' float64 once made it float64)
    assert np.all(image[:, :10] == 0)
    tissue = stored[:, 10:].astype(float)
    sample = stored[::4, ::4]
    lo, hi = np.percentile(sample[sample != 4095], [0.5, 99.5])
    expected = 1 - np.clip((tissue - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(image[:, 10:], expected, atol=1e-5)


def test_robust_window_ignores_outliers():
    values = np.linspace(0, 1, 400 * 400).reshape(400, 400).astype(np.float32)
    values[0, 0] = 1000.0  # one hot pixel must not squash the contrast
    out = robust_window(values)
    assert out.dtype == np.float32 and robust_window(values.astype(np.float64)).dtype == np.float32
    assert out.max() == 1.0 and np.median(out) == pytest.approx(0.5, abs=0.01)


def test_laterality_and_view_from_tags(tmp_path):
    stored = RAMP
    a = read_image(write_dicom(tmp_path / "a.dcm", stored, ImageLaterality="R", ViewPosition="CC"))[1]
    assert (a["laterality"], a["view"]) == ("R", "CC")
    code = [{"CodeValue": "399368009", "CodingSchemeDesignator": "SCT", "CodeMeaning": "medio-lateral oblique"}]
    b = read_image(write_dicom(tmp_path / "b.dcm", stored, Laterality="L", ViewCodeSequence=code))[1]
    assert (b["laterality"], b["view"]) == ("L", "MLO")  # Laterality and ViewCodeSequence fallbacks
    old = [{"CodeValue": "R-10242", "CodingSchemeDesignator": "SRT"}]
    c = read_image(write_dicom(tmp_path / "c.dcm", stored, ImageLaterality="B", Laterality="L", ViewCodeSequence=old))[1]
    assert (c["laterality"], c["view"]) == ("L", "CC")
    d = read_image(write_dicom(tmp_path / "d.dcm", stored))[1]
    assert (d["laterality"], d["view"]) == (None, None)


def test_rle_file_reads_like_uncompressed(tmp_path):
    plain = write_dicom(tmp_path / "p.dcm", RAMP, WindowCenter=2048, WindowWidth=4096)
    rle = write_dicom(tmp_path / "rle.dcm", RAMP, WindowCenter=2048, WindowWidth=4096, compress_rle=True)
    assert pydicom.dcmread(rle).file_meta.TransferSyntaxUID.is_compressed
    np.testing.assert_array_equal(read_image(rle)[0], read_image(plain)[0])


def hide_decoders(monkeypatch, uid):
    """Make every decoding plugin of ``uid`` unavailable, with the dependencies pydicom itself lists for it."""
    import importlib

    decoder = get_decoder(uid)
    unavailable = {}
    for name in ("gdcm", "pylibjpeg", "pillow"):
        needs = importlib.import_module(f"pydicom.pixels.decoders.{name}").DECODER_DEPENDENCIES
        if uid in needs:
            unavailable[name] = needs[uid]
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", unavailable)


def write_compressed_stub(path, uid, codestream_start: bytes):
    """A DICOM whose pixel data claims transfer syntax ``uid``: only its first bytes are a codestream."""
    write_dicom(path, RAMP)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = uid
    ds.PixelData = encapsulate([codestream_start + bytes(40)])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_missing_decoder_names_the_plugin(tmp_path, monkeypatch):
    hide_decoders(monkeypatch, JPEGLosslessSV1)
    path = write_compressed_stub(tmp_path / "jl.dcm", JPEGLosslessSV1, b"\xff\xd8\xff\xc3")
    with pytest.raises(ImageReadError, match=r"JPEG Lossless.*pip install .*pylibjpeg-libjpeg") as info:
        read_image(path)
    assert str(path) in str(info.value) and "TransferSyntaxUID" in str(info.value)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".pgm"])
def test_raster_8_and_16_bit(tmp_path, suffix):
    ramp8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(ramp8).save(tmp_path / f"a{suffix}")
    image, meta = read_image(tmp_path / f"a{suffix}")
    np.testing.assert_allclose(image, ramp8 / 255.0, atol=1e-7)
    Image.fromarray(RAMP).save(tmp_path / f"b{suffix}")  # 12 significant bits in a 16-bit file
    image, meta = read_image(tmp_path / f"b{suffix}")
    np.testing.assert_allclose(image, RAMP / 4095.0, atol=1e-7)
    assert meta["bits_stored"] == 12 and meta["laterality"] is None


def test_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(ImageReadError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not a dicom file at all")
    with pytest.raises(ImageReadError, match="bad.dcm"):
        read_image(bad)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ImageReadError, match="junk.png: file"):
        read_image(junk)


def test_jpeg2000_lossless_dicom_reads_like_uncompressed(tmp_path):
    from pydicom.pixels import get_encoder
    from pydicom.uid import JPEG2000Lossless

    encoder = get_encoder(JPEG2000Lossless)
    if not (encoder.is_available and get_decoder(JPEG2000Lossless).available_plugins):
        pytest.skip("no JPEG 2000 encoder/decoder plugin here: pip install -r requirements-jpeg.txt "
                    f"({'; '.join(encoder.missing_dependencies)})")
    stored = (np.random.default_rng(3).integers(0, 4096, (40, 32)) | 1).astype(np.uint16)   # 12 bits, noisy
    plain = write_dicom(tmp_path / "plain.dcm", stored, WindowCenter=2048, WindowWidth=4096, ImageLaterality="R")
    ds = pydicom.dcmread(plain)
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    ds.save_as(tmp_path / "j2k.dcm")
    image, meta = read_image(tmp_path / "j2k.dcm")
    assert meta["transfer_syntax"] == JPEG2000Lossless and meta["laterality"] == "R"
    np.testing.assert_array_equal(pydicom.dcmread(tmp_path / "j2k.dcm").pixel_array, stored)   # lossless
    np.testing.assert_array_equal(image, read_image(plain)[0])


def test_missing_jpeg2000_decoder_names_the_pip_commands(tmp_path, monkeypatch):
    from pydicom.uid import JPEG2000Lossless

    from data_prep.readers import check_image_file

    hide_decoders(monkeypatch, JPEG2000Lossless)
    path = write_compressed_stub(tmp_path / "j2k.dcm", JPEG2000Lossless, b"\xff\x4f\xff\x51")
    for read in (read_image, check_image_file):
        with pytest.raises(ImageReadError, match=r"JPEG 2000.*no decoder plugin") as info:
            read(path)
        message = str(info.value)
        assert "`pip install pylibjpeg pylibjpeg-openjpeg`" in message and "`pip install python-gdcm`" in message
        assert str(path) in message
