from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.data.decode import decode_image
from cnnlab.errors import DataError


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_mode_becomes_the_requested_channels(mode: str, channels: int) -> None:
    image = Image.new("RGB", (20, 10), (200, 100, 50)).convert(mode)
    fmt = "TIFF" if mode in ("CMYK", "I;16") else "PNG"
    arr = decode_image(png_bytes(image, fmt), channels)
    assert arr.shape == (10, 20, channels) and arr.dtype == np.uint8


def test_grey_and_colour_conversions_are_consistent() -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255
    grey = decode_image(rgb, 1)
    assert grey.shape == (4, 4, 1) and int(grey[0, 0, 0]) == 76  # ITU-R 601 luma of pure red
    back = decode_image(grey[:, :, 0], 3)
    assert (back == 76).all()


def test_paths_pil_and_arrays_agree(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (12, 9), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(arr).save(path)
    for source in (path, str(path), Image.open(path), arr, path.read_bytes()):
        assert np.array_equal(decode_image(source, 1)[:, :, 0], arr)


def test_exif_orientation_is_applied() -> None:
    image = Image.new("L", (30, 10), 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif)
    assert decode_image(buf.getvalue(), 1).shape == (30, 10, 1)


def test_text_named_png_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "digit.png"
    fake.write_text("hello, I am not an image")
    with pytest.raises(DataError, match="not an image in an allowed format"):
        decode_image(fake, 1)


def test_disallowed_format_is_refused() -> None:
    with pytest.raises(DataError, match="not an image in an allowed format"):
        decode_image(png_bytes(Image.new("L", (4, 4)), "GIF"), 1)


def test_decompression_bomb_is_refused_from_the_header() -> None:
    # A PNG whose header declares 60,000 x 60,000 pixels: rejected before any pixel is decoded.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 0, 0, 0, 0)
    bomb = (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    )
    with pytest.raises(DataError, match=r"(over the|exceeds).*limit|decompression bomb"):
        decode_image(bomb, 1)


def test_truncated_png_is_refused() -> None:
    data = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)))
    with pytest.raises(DataError):
        decode_image(data[: len(data) // 2], 1)


def test_bad_arrays_are_refused() -> None:
    with pytest.raises(DataError, match="must be uint8"):
        decode_image(np.zeros((4, 4), np.float32), 1)
    with pytest.raises(DataError, match="HxW or HxWxC"):
        decode_image(np.zeros((4, 4, 2), np.uint8), 1)
    with pytest.raises(DataError, match="no such image file"):
        decode_image("/nonexistent/x.png", 1)
