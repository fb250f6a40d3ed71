"""Running a served model: on an upload (decode, predict, explain) or on a kept image (explain again),
in a worker thread within the request timeout."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio
import numpy as np
from fastapi import HTTPException, Request
from PIL import Image

from cnnlab.data.decode import decode_bytes, decode_image, sniff_format
from cnnlab.explain.cam import METHODS, overlay
from cnnlab.serve.models import LoadedModel
from cnnlab.serve.schemas import Explanation

T = TypeVar("T")

ACCEPTED_FORMATS = ("PNG", "JPEG", "DICOM")
"""Narrower than the decoder's list: what a triage service receives, nothing else."""
UPLOAD_NAME = "upload"
"""What decoder messages call the file: the client's file name may itself be patient data."""
KEPT_NAME = "kept image"
"""What decoder messages call a kept image (never the client's file name)."""


class UnsupportedFormat(Exception):
    pass


@dataclass
class UploadResult:
    proba: np.ndarray
    embedding: np.ndarray
    """Penultimate-layer features, for drift monitoring."""
    kept_png: bytes
    explanation: Explanation | None


METHOD_ALIASES = {"gradcampp": "gradcam++"}
"""A `+` in a URL's query string is a space: `gradcampp` spares writing gradcam%2B%2B."""
_ALIAS_OF = {method: alias for alias, method in METHOD_ALIASES.items()}
METHODS_TEXT = ", ".join(f"{m} (or {_ALIAS_OF[m]})" if m in _ALIAS_OF else m for m in METHODS)
"""The methods as the API's descriptions and messages list them: gradcam, gradcam++ (or gradcampp), ..."""


def explain_method(name: str, parameter: str = "explain") -> str:
    """The CAM method the query parameter names (an alias gives its method); 422 for anything else."""
    method = METHOD_ALIASES.get(name, name)
    if method in METHODS:
        return method
    # `?explain=gradcam++` unencoded arrives as "gradcam" and two spaces: say why, and what to write.
    spaced = name != "gradcam" and name.rstrip() == "gradcam"
    hint = "; a '+' in a URL is a space: write gradcampp or gradcam%2B%2B" if spaced else ""
    raise HTTPException(422, f"{parameter} must be one of {METHODS_TEXT}, not '{name}'{hint}")


async def run_model_work(request: Request, timeout_s: float, work: Callable[[threading.Event], T]) -> T:
    """`work(cancel)` (forward passes) in a worker thread within `timeout_s`: 504 when it runs over.

    The request answers on time whatever the thread does; `cancel` is then set, so work that holds a
    model through `LoadedModel.running` stops at its next layer and the next request gets the model."""
    cancel = threading.Event()
    try:
        with anyio.fail_after(timeout_s):
            return await anyio.to_thread.run_sync(work, cancel, abandon_on_cancel=True)
    except TimeoutError:
        request.state.outcome = "timeout"
        raise HTTPException(504, f"the model did not answer within {timeout_s:g} s") from None
    finally:
        cancel.set()  # whyever this request stopped waiting (timeout, disconnect, shutdown), nobody will read it


def predict_upload(model: LoadedModel, data: bytes, method: str | None, cancel: threading.Event) -> UploadResult:
    """Decode, predict and explain; blocking, so run it through `run_model_work`."""
    clf = model.classifier
    if sniff_format(data[:132]) not in ACCEPTED_FORMATS:
        if _bare_dicom(data):
            raise UnsupportedFormat(
                "the upload looks like DICOM without its 128-byte preamble and DICM marker; "
                "send it as a DICOM Part 10 file (as a PACS or viewer exports it)"
            )
        raise UnsupportedFormat("the upload is not a PNG, JPEG or DICOM image")
    image, info = decode_bytes(data, UPLOAD_NAME)
    natural = decode_image(image, info.channels)
    pixels = decode_image(image, clf.preprocessing.channels)
    with model.running(cancel):
        probas, embeddings = clf.proba_and_embedding(clf.preprocess([pixels]))
        proba = probas[0]
        heat = clf.explain(pixels, method=method, class_index=int(proba.argmax())) if method else None
    explanation = None if heat is None or method is None else explanation_of(method, natural, heat)
    return UploadResult(proba, embeddings[0], png(natural), explanation)


def explain_kept(model: LoadedModel, kept_png: bytes, label: str, method: str, cancel: threading.Event) -> Explanation:
    """A CAM of class `label` on a kept image; blocking, so run it through `run_model_work`."""
    clf = model.classifier
    # The kept PNG is the decoded upload: decoding it again gives the pixels the prediction saw.
    image, info = decode_bytes(kept_png, KEPT_NAME)
    natural = decode_image(image, info.channels)
    pixels = decode_image(image, clf.preprocessing.channels)
    with model.running(cancel):
        heat = clf.explain(pixels, method=method, class_index=clf.classes.index(label))
    return explanation_of(method, natural, heat)


def explanation_of(method: str, image: np.ndarray, heat: np.ndarray) -> Explanation:
    """The overlay and the heat map alone, both in `overlay`'s colours (alpha 1: only the colours)."""
    return Explanation(
        method=method,
        overlay_png_base64=base64.b64encode(png(overlay(image, heat))).decode(),
        heatmap_png_base64=base64.b64encode(png(overlay(image, heat, alpha=1.0))).decode(),
    )


def png(pixels: np.ndarray) -> bytes:
    # A fresh image from the array alone: no text chunks, no metadata from the upload.
    buf = io.BytesIO()
    Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(buf, "PNG")
    return buf.getvalue()


def _bare_dicom(data: bytes) -> bool:
    """A data set written without the Part 10 header starts with a group 0002 or 0008 tag; only the message uses it."""
    return len(data) >= 8 and data[:2] in (b"\x02\x00", b"\x08\x00")


def predict_kept(model: LoadedModel, kept_png: bytes, timeout_s: float) -> np.ndarray:
    """Calibrated probabilities of `model` on a kept image, for a shadow run outside any request: it
    waits for the model at most `timeout_s` (then WorkCancelled), so a busy model drops shadow work."""
    clf = model.classifier
    image, _info = decode_bytes(kept_png, KEPT_NAME)
    pixels = decode_image(image, clf.preprocessing.channels)
    cancel = threading.Event()
    timer = threading.Timer(timeout_s, cancel.set)
    timer.start()
    try:
        with model.running(cancel):
            probas, _embeddings = clf.proba_and_embedding(clf.preprocess([pixels]))
    finally:
        timer.cancel()
    return probas[0]
