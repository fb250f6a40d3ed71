"""DICOM decoding: real files from ../shared/data and synthetic ones covering each rule."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, SecondaryCaptureImageStorage, generate_uid

from cnnlab.data.decode import decode_bytes, decode_image
from cnnlab.errors import DataError
from tests.conftest import SHARED_DATA

DICOM_DIR = SHARED_DATA / "chest-xray" / "dicom"


def make_dicom(
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    frames: int = 1,
    syntax=ExplicitVRLittleEndian,
    patient: str = "DOE^JANE",
) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.PatientName, ds.PatientID, ds.StudyDate = patient, "MRN-123456", "20240101"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    bits = 16 if pixels.dtype == np.uint16 else 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if syntax.is_compressed:
        ds.PixelData = encapsulate([pixels.tobytes()])  # frames in fragments, as the syntax requires
        ds["PixelData"].is_undefined_length = True
    else:
        ds.PixelData = pixels.tobytes()
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def ramp(dtype=np.uint16, hi: int = 4000) -> np.ndarray:
    return np.linspace(0, hi, 32 * 32).reshape(32, 32).astype(dtype)


def test_real_dicom_files_decode_and_monochrome1_is_inverted() -> None:
    normal = decode_image(DICOM_DIR / "siim_cr_pa_jpeg_baseline.dcm", 1)[:, :, 0].astype(int)
    inverted = decode_image(DICOM_DIR / "siim_cr_pa_jpeg_baseline_fake_monochrome1.dcm", 1)[:, :, 0].astype(int)
    assert normal.shape == (1024, 1024)
    assert np.abs((255 - normal) - inverted).max() <= 1  # same pixels, MONOCHROME1 shown inverted
    nih = decode_image(DICOM_DIR / "nih_dx_no_finding_implicit_vr_le.dcm", 3)
    assert nih.shape == (1024, 1024, 3) and nih.std() > 20
    # A chest film: the lung fields (mid-height, either side) are darker than the spine/mediastinum.
    lungs = nih[400:600, 200:350].mean() + nih[400:600, 680:830].mean()
    assert lungs / 2 < nih[400:600, 470:560].mean()


def test_16_bit_is_scaled_to_its_range() -> None:
    arr = decode_image(make_dicom(ramp()), 1)[:, :, 0]
    assert arr.min() == 0 and arr.max() == 255 and arr.dtype == np.uint8


def test_rescale_and_window_are_applied() -> None:
    pixels = ramp(hi=2000)
    # Hounsfield-like: value*1 - 1000; a window centred at -500, 200 wide saturates most of the ramp.
    windowed = decode_image(make_dicom(pixels, slope=1.0, intercept=-1000.0, window=(-500.0, 200.0)), 1)[:, :, 0]
    # The ramp spans -1000..1000; the window -600..-400 maps 20% of it to black and 70% to white.
    assert (windowed == 0).mean() > 0.15 and (windowed == 255).mean() > 0.6
    plain = decode_image(make_dicom(pixels), 1)[:, :, 0]
    assert (plain == 0).mean() < 0.01


def test_monochrome1_synthetic_is_inverted() -> None:
    a = decode_image(make_dicom(ramp()), 1).astype(int)
    b = decode_image(make_dicom(ramp(), photometric="MONOCHROME1"), 1).astype(int)
    assert np.abs(255 - a - b).max() <= 1


def test_multi_frame_is_refused() -> None:
    with pytest.raises(DataError, match="multi-frame DICOM"):
        decode_image(make_dicom(np.stack([ramp(), ramp()]), frames=2), 1)


def test_without_dicm_marker_is_refused() -> None:
    data = make_dicom(ramp())
    with pytest.raises(DataError, match="not an image in an allowed format"):
        decode_image(data[:128] + b"XXXX" + data[132:], 1)


def test_compressed_without_decoder_is_refused_clearly() -> None:
    data = make_dicom(ramp(np.uint8, 200), syntax=JPEG2000Lossless)  # declares J2K, holds raw bytes
    with pytest.raises(DataError, match=r"compressed DICOM .*cannot be decoded here; install a decoder"):
        decode_image(data, 1)


def test_huge_element_length_is_refused() -> None:
    # PatientName claims 65,535 bytes: it swallows the rest of the file, image tags included.
    data = bytearray(make_dicom(ramp()))
    at = data.find(b"\x10\x00\x10\x00PN")  # (0010,0010) PatientName, explicit VR
    data[at + 6 : at + 8] = (0xFFFF).to_bytes(2, "little")
    with pytest.raises(DataError, match="DICOM"):
        decode_image(bytes(data), 1)


def test_pixel_cap_is_checked_before_decoding() -> None:
    data = make_dicom(ramp(np.uint8, 200))
    from cnnlab.data import dicom

    with pytest.raises(DataError, match="pixel limit"):
        dicom.decode_dicom(data, "x.dcm", max_pixels=100)


def test_no_tag_value_leaks_into_results_or_errors() -> None:
    _image, info = decode_bytes(make_dicom(ramp()), "upload.dcm")
    assert "DOE" not in repr(info) and "MRN" not in repr(info)
    try:
        decode_image(make_dicom(np.stack([ramp(), ramp()]), frames=2, patient="SECRET^NAME"), 1)
    except DataError as exc:
        assert "SECRET" not in str(exc)


def test_shared_dicom_folder_exists() -> None:
    assert Path(DICOM_DIR).is_dir(), "../shared/data/chest-xray/dicom is part of the test data"
