"""The one place where untrusted bytes become pixels.

Data set files (IDX archives) and user images (paths, uploads, arrays) are decoded here and
nowhere else, with limits checked before any large allocation.
"""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnlab.errors import DataError

MAX_PIXELS = 50_000_000
"""Largest image (width x height) decoded; above it the header alone rejects the file."""
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")
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
    except (OSError, EOFError, struct.error) as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc})") from None
    if len(payload) != count:
        raise DataError(f"{path}: IDX header declares {count} values but the file holds {len(payload)}")
    # A bytearray keeps the array writable, so torch can share it without a copy.
    return np.frombuffer(bytearray(payload), dtype=_IDX_DTYPES[dtype_code]).reshape(shape)


def decode_image(source: Any, channels: int) -> np.ndarray:
    """An image as an HxWxC uint8 array with C = `channels` (1 or 3).

    `source` is a path, raw bytes, a PIL image or an HxW / HxWxC uint8 array. Colour images
    become grey by ITU-R 601 luma, grey images become RGB by replication, alpha is dropped.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    if isinstance(source, np.ndarray):
        return _from_array(source, channels)
    if isinstance(source, Image.Image):
        return _from_pil(source, channels)
    if isinstance(source, bytes | bytearray | memoryview):
        return _from_pil(_open(io.BytesIO(bytes(source)), "<bytes>"), channels)
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{path}: no such image file")
        with open(path, "rb") as fh:
            return _from_pil(_open(io.BytesIO(fh.read()), str(path)), channels)
    raise DataError(f"cannot read an image from {type(source).__name__}")


def _open(stream: io.BytesIO, name: str) -> Image.Image:
    try:
        image = Image.open(stream)
    except Image.DecompressionBombError:
        raise DataError(f"{name}: declares more than the {MAX_PIXELS:,}-pixel limit (decompression bomb)") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{name}: not a readable image ({exc.__class__.__name__})") from None
    if image.format not in ALLOWED_FORMATS:
        raise DataError(f"{name}: format {image.format} is not allowed ({', '.join(ALLOWED_FORMATS)})")
    if image.width * image.height > MAX_PIXELS:
        raise DataError(f"{name}: {image.width}x{image.height} pixels is over the {MAX_PIXELS:,} limit")
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{name}: damaged image data ({exc})") from None
    return ImageOps.exif_transpose(image)


def _from_pil(image: Image.Image, channels: int) -> np.ndarray:
    if image.width * image.height > MAX_PIXELS:
        raise DataError(f"{image.width}x{image.height} pixels is over the {MAX_PIXELS:,} limit")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: scale the used range to 8 bits instead of clipping at 255.
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        image = Image.fromarray(arr.round().astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "P", "PA"):
        # Composite on black, the background of the digit sets; P may carry transparency.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
    image = image.convert("L" if channels == 1 else "RGB")
    arr = np.array(image, dtype=np.uint8)  # a writable copy, safe to hand to torch
    return arr[:, :, None] if channels == 1 else arr


def _from_array(arr: np.ndarray, channels: int) -> np.ndarray:
    if arr.dtype != np.uint8:
        raise DataError(f"image arrays must be uint8, not {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise DataError(f"image arrays must be HxW or HxWxC with C in 1, 3, 4; got shape {arr.shape}")
    if arr.shape[0] * arr.shape[1] > MAX_PIXELS:
        raise DataError(f"{arr.shape[1]}x{arr.shape[0]} pixels is over the {MAX_PIXELS:,} limit")
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    return _from_pil(Image.fromarray(arr.squeeze(2) if mode == "L" else arr, mode=mode), channels)
