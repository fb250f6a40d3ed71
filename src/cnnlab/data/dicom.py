"""DICOM pixel data -> 8-bit grey, the way a radiology viewer shows it.

Called only by `decode.decode_bytes` (the one place bytes become pixels). No tag other than
those describing the pixels is read, so no patient data leaves this function.
"""

from __future__ import annotations

import io

import numpy as np

from cnnlab.errors import DataError

_COMPRESSED_HINT = "install a decoder for it (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg)"


def scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """The used range of any grey values, stretched to 0-255 (16-bit images, DICOM)."""
    values = values.astype(np.float64)
    lo, hi = float(values.min()), float(values.max())
    scaled = (values - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(values)
    return np.clip(scaled.round(), 0, 255).astype(np.uint8)


def decode_dicom(data: bytes, name: str, max_pixels: int) -> tuple[np.ndarray, str]:
    """(HxW uint8 pixels, a mode description) for a single-frame grey DICOM image."""
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pragma: no cover - pydicom is a dependency
        raise DataError(f"{name}: reading DICOM needs pydicom (pip install pydicom)") from None
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=False)
    except InvalidDicomError:
        raise DataError(f"{name}: not a DICOM file (no DICM marker)") from None
    except Exception as exc:  # pydicom raises many types for malformed element data
        raise DataError(f"{name}: malformed DICOM ({exc.__class__.__name__})") from None
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1))
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
        bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)))
    except (AttributeError, TypeError, ValueError):
        raise DataError(f"{name}: DICOM without readable image dimensions") from None
    if "PixelData" not in ds:
        raise DataError(f"{name}: DICOM without pixel data")
    if rows * cols > max_pixels:
        raise DataError(f"{name}: {cols}x{rows} pixels is over the {max_pixels:,}-pixel limit")
    if frames > 1:
        raise DataError(f"{name}: multi-frame DICOM ({frames} frames) is not supported; export one frame")
    if samples != 1 or not photometric.startswith("MONOCHROME"):
        raise DataError(f"{name}: DICOM {photometric} with {samples} samples per pixel; only grey images")
    syntax = ds.file_meta.get("TransferSyntaxUID")
    try:
        compressed = syntax is not None and bool(syntax.is_compressed)
    except Exception:  # an unknown transfer syntax UID
        compressed = False
    try:
        raw = ds.pixel_array
    except Exception as exc:
        if compressed:
            raise DataError(
                f"{name}: compressed DICOM ({syntax.name}) cannot be decoded here; {_COMPRESSED_HINT}"
            ) from None
        raise DataError(f"{name}: damaged DICOM pixel data ({exc.__class__.__name__})") from None
    if raw.ndim != 2:
        raise DataError(f"{name}: DICOM pixel array of shape {raw.shape}; expected one grey frame")
    try:
        values = apply_modality_lut(raw, ds).astype(np.float64)  # RescaleSlope / RescaleIntercept
        if "WindowCenter" in ds and "WindowWidth" in ds:
            values = apply_voi_lut(values, ds, index=0).astype(np.float64)
    except Exception as exc:  # malformed rescale or window values
        raise DataError(f"{name}: unusable DICOM rescale/window values ({exc.__class__.__name__})") from None
    pixels = scale_to_uint8(values)
    if photometric == "MONOCHROME1":  # high values are dark: invert to the usual display
        pixels = 255 - pixels
    return pixels, f"{photometric} {bits}-bit"
