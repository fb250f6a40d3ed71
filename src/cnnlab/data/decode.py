"""The one place where untrusted bytes become pixels.

Data set files (IDX archives) and user images (paths, uploads, arrays) are decoded here and
nowhere else, with limits checked before any large allocation.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnlab.data.dicom import decode_dicom, scale_to_uint8
from cnnlab.errors import DataError

MAX_PIXELS = 50_000_000
"""Largest image (width x height) decoded; above it the header alone rejects the file."""
MAX_FILE_BYTES = 256 * 1024 * 1024
"""Largest image file read at all."""
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "DICOM")
_PIL_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "TIFF")  # MPO: phone JPEGs with a preview frame
_IDX_MAX_BYTES = 1 << 31
_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (MNIST's format), gzipped or not, validating its header against its size."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            header = fh.read(4)
            if len(header) != 4 or header[:2] != b"\x00\x00":
                raise DataError(f"{path}: not an IDX file (bad magic number)")
            dtype_code, ndim = header[2], header[3]
            if dtype_code not in _IDX_DTYPES or not 1 <= ndim <= 4:
                raise DataError(f"{path}: unsupported IDX type 0x{dtype_code:02x} with {ndim} dimensions")
            shape = struct.unpack(f">{ndim}I", fh.read(4 * ndim))
            count = int(np.prod(shape, dtype=np.int64))
            if count > _IDX_MAX_BYTES:
                raise DataError(f"{path}: IDX header declares {count} values, over the limit")
            payload = fh.read(count + 1)
    except (OSError, EOFError, struct.error, zlib.error) as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc})") from None
    if len(payload) != count:
        raise DataError(f"{path}: IDX header declares {count} values but the file holds {len(payload)}")
    # A bytearray keeps the array writable, so torch can share it without a copy.
    return np.frombuffer(bytearray(payload), dtype=_IDX_DTYPES[dtype_code]).reshape(shape)


@dataclass(frozen=True)
class ImageInfo:
    """What a file turned out to be, for the data set manifest."""

    format: str
    width: int
    height: int
    mode: str
    """PIL's mode of the stored pixels, or e.g. `MONOCHROME2 16-bit` for DICOM."""
    channels: int
    """1 when the stored image is grey, 3 when it has colour."""


def sniff_format(head: bytes) -> str | None:
    """The format from the first bytes of a file (extensions are not trusted)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if head[128:132] == b"DICM":
        return "DICOM"
    return None


def read_image_file(path: str | Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such image file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataError(f"{path}: {size:,} bytes is over the {MAX_FILE_BYTES:,}-byte limit")
    with open(path, "rb") as fh:
        return fh.read(MAX_FILE_BYTES + 1)


def decode_bytes(data: bytes, name: str = "<bytes>") -> tuple[Image.Image, ImageInfo]:
    """Decode a whole file into an `L` or `RGB` PIL image, with what it was stored as."""
    fmt = sniff_format(data[:132])
    if fmt is None:
        raise DataError(f"{name}: not an image in an allowed format ({', '.join(ALLOWED_FORMATS)})")
    if fmt == "DICOM":
        pixels, mode = decode_dicom(data, name, MAX_PIXELS)
        image = Image.fromarray(pixels, mode="L")
        return image, ImageInfo("DICOM", image.width, image.height, mode, 1)
    image = _open(io.BytesIO(data), name)
    info = ImageInfo(image.format or fmt, image.width, image.height, image.mode, _natural_channels(image))
    return _to_l_or_rgb(image), info


def decode_image(source: Any, channels: int) -> np.ndarray:
    """An image as an HxWxC uint8 array with C = `channels` (1 or 3).

    `source` is a path, raw bytes, a PIL image or an HxW / HxWxC uint8 array. Colour images
    become grey by ITU-R 601 luma, grey images become RGB by replication, alpha is composited
    on black, 16-bit grey is scaled from its used range.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    if isinstance(source, np.ndarray):
        image = _from_array(source)
    elif isinstance(source, Image.Image):
        _check_pixels(source.width, source.height, "<image>")
        image = _to_l_or_rgb(ImageOps.exif_transpose(source))  # as a file of it would be decoded
    elif isinstance(source, bytes | bytearray | memoryview):
        image, _ = decode_bytes(bytes(source))
    elif isinstance(source, str | Path):
        image, _ = decode_bytes(read_image_file(source), str(source))
    else:
        raise DataError(f"cannot read an image from {type(source).__name__}")
    image = image.convert("L" if channels == 1 else "RGB")
    arr = np.array(image, dtype=np.uint8)  # a writable copy, safe to hand to torch
    return arr[:, :, None] if channels == 1 else arr


def _check_pixels(width: int, height: int, name: str) -> None:
    if width * height > MAX_PIXELS:
        raise DataError(f"{name}: {width}x{height} pixels is over the {MAX_PIXELS:,}-pixel limit")


def _open(stream: io.BytesIO, name: str) -> Image.Image:
    try:
        image = Image.open(stream)
    except Image.DecompressionBombError:
        raise DataError(f"{name}: declares more than the {MAX_PIXELS:,}-pixel limit (decompression bomb)") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{name}: not a readable image ({exc.__class__.__name__})") from None
    except ValueError:  # Pillow reads text chunks while opening; one that inflates past its limit raises this
        raise DataError(f"{name}: not a readable image (a metadata chunk is damaged or too large)") from None
    if image.format not in _PIL_FORMATS:
        raise DataError(f"{name}: format {image.format} is not allowed ({', '.join(ALLOWED_FORMATS)})")
    _check_pixels(image.width, image.height, name)
    if getattr(image, "n_frames", 1) > 1 and image.format != "MPO":
        raise DataError(f"{name}: multi-frame images are not supported")
    try:
        image.load()  # the first frame (an MPO's main image)
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # decoders raise OSError, SyntaxError, ValueError, struct.error, ...
        raise DataError(f"{name}: damaged image data ({exc.__class__.__name__}: {exc})") from None


def _natural_channels(image: Image.Image) -> int:
    return 1 if image.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F") else 3


def _to_l_or_rgb(image: Image.Image) -> Image.Image:
    """Every mode to `L` or `RGB`, the same way for training and serving."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit grey: scale the used range to 8 bits instead of clipping at 255.
        return Image.fromarray(scale_to_uint8(np.asarray(image)), mode="L")
    if image.mode in ("RGBA", "LA", "P", "PA", "RGBa", "La"):
        # Composite on black; a palette image may carry transparency.
        rgba = image.convert("RGBA")
        flat = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
        return flat.convert("L" if image.mode in ("LA", "La") else "RGB")
    if image.mode in ("L", "RGB"):
        return image
    if image.mode == "1":
        return image.convert("L")
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.dtype != np.uint8:
        raise DataError(f"image arrays must be uint8, not {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise DataError(f"image arrays must be HxW or HxWxC with C in 1, 3, 4; got shape {arr.shape}")
    _check_pixels(arr.shape[1], arr.shape[0], "<array>")
    if arr.shape[2] == 1:
        return Image.fromarray(np.ascontiguousarray(arr[:, :, 0]), mode="L")
    return _to_l_or_rgb(Image.fromarray(np.ascontiguousarray(arr), mode="RGB" if arr.shape[2] == 3 else "RGBA"))
