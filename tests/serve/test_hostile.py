"""Hostile input through /v1/predict and /v1/feedback: every case answers 4xx with a clear message
(or 200 where the input is legitimately valid), never 5xx, leaves no temp file, stores no PHI.

Every file is generated here (PIL, numpy, pydicom) or mutated from the real DICOMs in
../shared/data/chest-xray/dicom, so nothing is downloaded and nothing hostile is checked in.
"""

from __future__ import annotations

import io
import re
import sqlite3
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin

from cnnlab.serve.app import create_app
from cnnlab.serve.settings import ServeSettings
from tests.conftest import SHARED_DATA
from tests.serve.conftest import Service, png_bytes

DICOM_DIR = SHARED_DATA / "chest-xray" / "dicom"
NIH = DICOM_DIR / "nih_dx_no_finding_implicit_vr_le.dcm"  # 1024x1024 8-bit, uncompressed, 1.05 MB
SIIM = DICOM_DIR / "siim_cr_pa_jpeg_baseline.dcm"  # JPEG Baseline: Pillow decodes it
LIMIT = 3_000_000
"""The upload limit of the service under test: above the largest legitimate case (the NIH DICOM)."""

# PHI planted in a real DICOM; the test reads them back with pydicom rather than trusting this table.
PHI = {
    "PatientName": "Hostile^Jane^Quincy",
    "PatientID": "MRN-HOSTILE-4471",
    "PatientBirthDate": "19230405",
    "PatientAddress": "12 Hostile Lane, Leeds",
    "OtherPatientIDs": "NHS-943-476-5919",
    "InstitutionName": "St Hostile Infirmary",
    "ReferringPhysicianName": "Dr^Plantedname",
    "AccessionNumber": "ACC77123981",
    "ImageComments": "bed 4, Jane Hostile, allergic to penicillin",
}
PHI_FILENAME = "Hostile_Jane_MRN-HOSTILE-4471.dcm"
# The undefined-length case makes pydicom warn while it looks for a delimiter that is not there.
pytestmark = pytest.mark.filterwarnings("ignore:End of file reached before delimiter:UserWarning")


# ---------------------------------------------------------------------------------------------- crafted files
def _png(image: Image.Image, **save: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", **save)
    return buf.getvalue()


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, fmt)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header declaring `width` x `height` over a few bytes of data: a decompression bomb's shape."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def png_text_bomb() -> bytes:
    """A tiny PNG whose zTXt chunk inflates to 20 MB (over Pillow's text-chunk limit)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "A" * 20_000_000, zip=True)
    return _png(Image.new("L", (8, 8)), pnginfo=info)


def png_16bit() -> bytes:
    return _png(Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16))


def png_palette() -> bytes:
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32), dtype=np.uint8)).convert("P")
    return _png(image)


def zip_bytes() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("image.png", png_bytes())
    return buf.getvalue()


def need(path: Path) -> bytes:
    assert path.is_file(), f"{path} is missing: ../shared/data must be beside the checkout"
    return path.read_bytes()


def _patch_length(data: bytes, tag: bytes, length: int) -> bytes:
    """Set the 32-bit length of the first implicit-VR element `tag` after the preamble."""
    at = data.index(tag, 132)
    return data[: at + 4] + struct.pack("<I", length) + data[at + 8 :]


def _rewrite(data: bytes, change: Callable[[pydicom.Dataset], None]) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    change(ds)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def dicom_with_phi() -> bytes:
    def plant(ds: pydicom.Dataset) -> None:
        for name, value in PHI.items():
            setattr(ds, name, value)
        block = ds.private_block(0x0011, "HOSTILE TEST", create=True)
        block.add_new(0x10, "LO", "PRIVATE-PHI-9931")

    return _rewrite(need(NIH), plant)


def dicom_with_phi_and_no_pixels() -> bytes:
    return _rewrite(dicom_with_phi(), lambda ds: delattr(ds, "PixelData"))


def dicom_huge(ds: pydicom.Dataset) -> None:
    ds.Rows, ds.Columns = 65535, 65535


def dicom_rgb(ds: pydicom.Dataset) -> None:
    ds.PhotometricInterpretation = "RGB"
    ds.SamplesPerPixel = 3


def dicom_frames(ds: pydicom.Dataset) -> None:
    ds.NumberOfFrames = 2


# ---------------------------------------------------------------------------------------------- the cases
@dataclass(frozen=True)
class Case:
    expect: int
    send: Callable[[Service], httpx.Response]
    says: str = ""
    """A piece of the `detail` a person needs to see (case-insensitive)."""
    phi: Callable[[], bytes] | None = None
    """The DICOM whose tag values must appear nowhere the service keeps or answers."""
    filename: str = "image.png"


def upload(
    data: Callable[[], bytes], expect: int, says: str = "", *, name: str = "image.png", ctype: str = "", query: str = ""
) -> Case:
    def send(service: Service) -> httpx.Response:
        file = (name, data(), ctype or "application/octet-stream")
        return service.client.post(f"/v1/predict{query}", files={"file": file}, headers=service.headers("clinician"))

    return Case(expect, send, says, filename=name)


def raw(body: bytes | Callable[[], Iterator[bytes]], headers: dict[str, str], expect: int, says: str = "") -> Case:
    def send(service: Service) -> httpx.Response:
        content = body() if callable(body) else body
        return service.client.post("/v1/predict", content=content, headers=headers | service.headers("clinician"))

    return Case(expect, send, says)


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "hostile") -> tuple[bytes, dict[str, str]]:
    """A hand-made multipart body: (field, filename or None, value) parts, with no client-side checks."""
    out = []
    for field, filename, value in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename is not None else "")
        out.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n")
    return b"".join(out) + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def parts_case(parts: list[tuple[str, str | None, bytes]], expect: int, says: str = "") -> Case:
    body, headers = multipart(parts)
    return raw(body, headers, expect, says)


def streamed_oversize() -> Iterator[bytes]:
    """A body without Content-Length (a generator makes httpx send it chunked), over the limit."""
    body, _ = multipart([("file", "big.png", png_bytes() + bytes(LIMIT))])
    for i in range(0, len(body), 64 * 1024):
        yield body[i : i + 64 * 1024]


def feedback(json_body: object = None, content: bytes | None = None, ctype: str = "", expect: int = 422) -> Case:
    def send(service: Service) -> httpx.Response:
        headers = service.headers("clinician") | ({"Content-Type": ctype} if ctype else {})
        if content is not None:
            return service.client.post("/v1/feedback", content=content, headers=headers)
        return service.client.post("/v1/feedback", json=json_body, headers=headers)

    return Case(expect, send)


def feedback_after_prediction(body: dict[str, object], expect: int, says: str = "") -> Case:
    def send(service: Service) -> httpx.Response:
        made = service.predict(png_bytes())
        assert made.status_code == 200
        fb = {"request_id": made.json()["request_id"], **body}
        return service.client.post("/v1/feedback", json=fb, headers=service.headers("clinician"))

    return Case(expect, send, says)


TINY = png_bytes(size=28)
MULTIPART = {"Content-Type": "multipart/form-data; boundary=hostile"}

CASES: dict[str, Case] = {
    # --- not images, or not an allowed format: 415 from the magic bytes, whatever the name says
    "zero-byte file": upload(lambda: b"", 422, "empty"),
    "text named .png": upload(lambda: b"I am not an image, only named like one.\n", 415, "PNG, JPEG or DICOM"),
    "html named .png": upload(lambda: b"<!doctype html><script>alert(1)</script>", 415, "PNG, JPEG or DICOM"),
    "svg with script": upload(
        lambda: b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', 415, "PNG, JPEG or DICOM"
    ),
    "gif": upload(lambda: _encoded("GIF"), 415, "PNG, JPEG or DICOM"),
    "webp": upload(lambda: _encoded("WEBP"), 415, "PNG, JPEG or DICOM"),
    "bmp (decoder knows it, service does not take it)": upload(lambda: _encoded("BMP"), 415, "PNG, JPEG or DICOM"),
    "tiff": upload(lambda: _encoded("TIFF"), 415, "PNG, JPEG or DICOM"),
    "zip holding a png": upload(zip_bytes, 415, "PNG, JPEG or DICOM", name="scan.zip"),
    "png claimed as image/png but is a pdf": upload(lambda: b"%PDF-1.7\n%\xe2\xe3", 415, "PNG", ctype="image/png"),
    # --- damaged or hostile images of an allowed format: 422 from the decoder
    "truncated png": upload(lambda: TINY[: len(TINY) // 2], 422, "damaged image data"),
    "png signature only": upload(lambda: b"\x89PNG\r\n\x1a\n", 422, "not a readable image"),
    "truncated jpeg": upload(lambda: _encoded("JPEG")[:200], 422, "not a readable image"),
    "png declaring 100000x100000 (bomb)": upload(lambda: png_declaring(100_000, 100_000), 422, "pixel limit"),
    "png declaring 9000x9000 (over the limit)": upload(lambda: png_declaring(9000, 9000), 422, "pixel limit"),
    "png with a 20 MB zTXt chunk (text bomb)": upload(png_text_bomb, 422, "not a readable image"),
    # --- legitimately valid images: 200, the service must not be stricter than the decoder contract
    "1x1 png (valid: resized to the input)": upload(lambda: _png(Image.new("L", (1, 1), 128)), 200),
    "1x3000 png (valid: centre-cropped then resized)": upload(lambda: _png(Image.new("L", (1, 3000), 7)), 200),
    "16-bit grey png (valid: used range scaled)": upload(png_16bit, 200),
    "palette png (valid: converted)": upload(png_palette, 200),
    "rgba png (valid: composited on black)": upload(lambda: _png(Image.new("RGBA", (30, 20), (9, 9, 9, 100))), 200),
    "filename with ../ and NUL (valid: the name is never used)": upload(
        lambda: TINY, 200, name="../../../etc/passwd\x00.png"
    ),
    "filename of 5000 characters (the multipart parser refuses the header)": upload(
        lambda: TINY, 400, "multipart", name="x" * 5000 + ".png"
    ),
    # --- size limits
    "oversized with Content-Length": upload(lambda: bytes(LIMIT + 1), 413, "3,000,000-byte limit"),
    "oversized streamed without Content-Length": raw(streamed_oversize, MULTIPART, 413, "3,000,000-byte limit"),
    # --- malformed requests
    "missing file field": parts_case([("image", "a.png", TINY)], 422, "file"),
    "two file fields (ambiguous)": parts_case([("file", "a.png", TINY), ("file", "b.png", TINY)], 422, "one file"),
    "file field without a filename (a plain form value)": parts_case([("file", None, TINY)], 422, "file"),
    "3000 form fields": parts_case([(f"f{i}", None, b"x") for i in range(3000)] + [("file", "a.png", TINY)], 400),
    "1500 file parts": parts_case([("file", f"{i}.png", b"x") for i in range(1500)], 400, "too many files"),
    "json body instead of multipart": raw(b'{"file": "aGVsbG8="}', {"Content-Type": "application/json"}, 422),
    "text/plain content type": raw(TINY, {"Content-Type": "text/plain"}, 422),
    "multipart without boundary": raw(TINY, {"Content-Type": "multipart/form-data"}, 400, "boundary"),
    "multipart with garbage body": raw(b"--hostile\r\n\x00\xff garbage", MULTIPART, 400, "multipart"),
    "unknown explain method": upload(lambda: TINY, 422, "explain must be one of", query="?explain=__import__"),
    "unknown model": upload(lambda: TINY, 404, "no model named", query="?model=../../etc"),
    # --- DICOM, real files mutated
    "real DICOM (valid)": upload(lambda: need(NIH), 200, name="study.dcm", ctype="application/dicom"),
    "JPEG Baseline DICOM (valid: Pillow decodes it)": upload(lambda: need(SIIM), 200, name="study.dcm"),
    "DICOM without the preamble and DICM marker": upload(lambda: need(NIH)[132:], 415, "DICM"),
    "DICOM with a 4 GB PatientName length": upload(
        lambda: _patch_length(need(NIH), b"\x10\x00\x10\x00", 0xFFFFFFF0), 422, "DICOM"
    ),
    "DICOM with an undefined-length text element": upload(  # pydicom warns: no delimiter before the end
        lambda: _patch_length(need(NIH), b"\x10\x00\x10\x00", 0xFFFFFFFF), 422, "DICOM"
    ),
    "DICOM with a 2 GB pixel length, truncated": upload(
        lambda: _patch_length(need(NIH), b"\xe0\x7f\x10\x00", 0x7FFFFFF0)[:600_000], 422, "DICOM pixel data"
    ),
    "DICOM marked JPEG-LS (no decoder installed)": upload(
        lambda: need(SIIM).replace(b"1.2.840.10008.1.2.4.50", b"1.2.840.10008.1.2.4.80"), 422, "install a decoder"
    ),
    "DICOM declaring 65535x65535": upload(lambda: _rewrite(need(NIH), dicom_huge), 422, "pixel limit"),
    "DICOM RGB": upload(lambda: _rewrite(need(NIH), dicom_rgb), 422, "only grey images"),
    "DICOM with two frames": upload(lambda: _rewrite(need(NIH), dicom_frames), 422, "multi-frame"),
    "truncated DICOM": upload(lambda: need(NIH)[:5000], 422, "DICOM"),
    # --- feedback
    "feedback: json nested 100000 deep": feedback(
        content=b"[" * 100_000 + b"]" * 100_000, ctype="application/json", expect=400
    ),
    "feedback: not json": feedback(content=b"\xff\xfe not json", ctype="application/json", expect=400),
    "feedback: form instead of json": feedback(
        content=b"request_id=x&label=1", ctype="application/x-www-form-urlencoded"
    ),
    "feedback: wrong types": feedback({"request_id": ["a"], "label": {"$ne": 1}, "agrees": "perhaps"}),
    "feedback: 1 MB note": feedback_after_prediction({"label": "1", "note": "n" * 1_000_000}, 422),
    "feedback: label not a class": feedback_after_prediction({"label": "<script>"}, 422, "one of the model's classes"),
    "feedback: unknown request id": feedback({"request_id": "' OR 1=1 --", "label": "1"}, expect=404),
}
# PHI cases: the answer is fine either way, but no tag value may be kept or echoed.
CASES["PHI-laden DICOM (valid: pixels only are used)"] = Case(
    200, upload(dicom_with_phi, 200, name=PHI_FILENAME).send, phi=dicom_with_phi, filename=PHI_FILENAME
)
CASES["PHI-laden DICOM without pixel data"] = Case(
    422, upload(dicom_with_phi_and_no_pixels, 422, name=PHI_FILENAME).send, "without pixel data",
    phi=dicom_with_phi_and_no_pixels, filename=PHI_FILENAME,
)  # fmt: skip


# ---------------------------------------------------------------------------------------------- the checks
KEPT = re.compile(r"[0-9a-f]{32}\.png")
PHI_VRS = {"PN", "LO", "SH", "DA", "DT", "TM", "UI", "AS", "ST", "LT", "UT", "AE", "IS"}


@cache
def tag_values(dicom: Callable[[], bytes]) -> tuple[str, ...]:
    """Every text value in the file outside the pixel description, as pydicom reads it."""
    ds = pydicom.dcmread(io.BytesIO(dicom()), stop_before_pixels=True)
    values = set()
    for elem in ds.iterall():
        if elem.tag.group in (0x0002, 0x0028) or elem.value is None:
            continue
        if elem.VR in PHI_VRS or (elem.VR == "UN" and isinstance(elem.value, bytes)):  # UN: private, implicit VR
            for v in elem.value if isinstance(elem.value, pydicom.multival.MultiValue) else [elem.value]:
                text = (v.decode("latin-1") if isinstance(v, bytes) else str(v)).strip(" \x00")
                # Short or all-digit values ("M", "81", a time) match numbers in any dump by chance.
                if len(text) >= 6 and not (text.isdigit() and len(text) < 8):
                    values.add(text)
    return tuple(sorted(values))


@pytest.fixture
def hostile(settings: ServeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    # Uploads over 1 MB spool to disk: send every spool file of this test into a folder we can inspect.
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    app = create_app(settings.model_copy(update={"max_upload_bytes": LIMIT}))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Service(client)
    assert not list(spool.iterdir()), "an upload's temp file was left behind"


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_hostile(hostile: Service, case: Case, caplog: pytest.LogCaptureFixture) -> None:
    response = case.send(hostile)
    text = response.text
    assert response.status_code < 500, text
    assert response.status_code == case.expect, text
    body = response.json()
    assert body["request_id"] == response.headers["x-request-id"]
    settings: ServeSettings = hostile.app.state.settings
    for leak in ("Traceback", 'File "', "site-packages", str(settings.state_dir), "/tmp/", "/work/"):
        assert leak not in text, leak
    if case.expect >= 400:
        detail = body["detail"]
        assert detail, text
        assert case.says.lower() in str(detail).lower(), detail

    # One audit row per request, with the status the client saw.
    audit = [r for r in hostile.app.state.store.audit_rows() if r.request_id == body["request_id"]]
    assert [r.status for r in audit] == [response.status_code]

    # The state directory holds the database and kept PNGs under generated names, nothing else.
    files = [p.relative_to(settings.state_dir).as_posix() for p in settings.state_dir.rglob("*") if p.is_file()]
    for name in files:
        assert name in ("serve.db", "serve.db-wal", "serve.db-shm") or (
            name.startswith("images/") and KEPT.fullmatch(name[7:])
        ), name
    kept = sorted(settings.images_dir.iterdir())
    if case.expect >= 400 and "feedback" not in case.send.__qualname__:
        assert not kept, "a refused upload left an image"

    conn = sqlite3.connect(settings.state_dir / "serve.db")
    database = "\n".join(conn.iterdump())
    conn.close()
    assert case.filename not in database and case.filename.split("/")[-1] not in database
    if case.phi is not None:
        values = tag_values(case.phi)
        assert set(PHI.values()) | {"PRIVATE-PHI-9931"} <= set(values)  # the test can fail: the file holds them
        pixels = b"".join(p.read_bytes() for p in kept)
        for value in values:
            assert value not in database, value
            assert value not in text, value
            assert value not in caplog.text, value
            assert value.encode() not in pixels, value


def test_the_suite_is_big_enough() -> None:
    assert len(CASES) >= 30
    assert sum(c.expect == 200 for c in CASES.values()) < len(CASES) // 3  # mostly refusals
