"""What every page shares: the session's memory (the client, the signed-in key, cached answers),
messages, and the pictures and charts the pages draw."""

from __future__ import annotations

import base64
import html
from typing import Any

import pandas as pd
import streamlit as st

from cnnlab.ui.client import ApiClient, ApiError, Me

HINTS = {
    401: "The API no longer accepts this key; sign out and sign in again.",
    403: "Your key's role may not do this.",
    404: "The API does not know this.",
    409: "Someone got there first.",
    413: "The file is larger than the service accepts.",
    415: "The service reads PNG, JPEG and DICOM images only.",
    422: "The service could not use this.",
    429: "Your key has made too many requests this minute; wait a moment and try again.",
    503: "The service is busy; try again shortly.",
    504: "The model took too long; try again.",
}
REASONS = {
    "low_confidence": "the calibrated confidence is below the service's review threshold",
    "near_operating_point": "the score is close to the operating point",
}
METHOD_NAMES = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "scorecam": "Score-CAM",
    "eigencam": "Eigen-CAM",
    "layercam": "Layer-CAM",
}
DEFAULT_OPACITY = 0.45
"""The API's own overlay blends at this alpha: the page starts where the API's picture is."""
KEPT_CASES = 20
"""Cases (with their images) a session remembers; older ones are dropped, so a long shift's memory stays flat."""


def remembered(name: str) -> dict[Any, Any]:
    """A dict kept for the browser session under `name`."""
    if name not in st.session_state:
        st.session_state[name] = {}
    return st.session_state[name]


def keep_recent(cache: dict[Any, Any], size: int) -> None:
    """Drop the oldest entries so that one more still fits in `size` (dicts keep insertion order)."""
    while len(cache) >= size:
        del cache[next(iter(cache))]


def api() -> ApiClient:
    return st.session_state["client"]


def me() -> Me:
    return st.session_state["me"]


def flash(kind: str, message: str) -> None:
    """A message for the next run of the page (shown after st.rerun)."""
    st.session_state.setdefault("flash", []).append((kind, message))


def show_flashes() -> None:
    for kind, message in st.session_state.pop("flash", []):
        getattr(st, kind)(message)


def show_error(exc: ApiError, what: str) -> None:
    """`what` failed, in bold, a hint for the status, then the API's own words."""
    hint = HINTS.get(exc.status or 0, "" if exc.status else "The API did not answer.")
    st.error(f"**{what}** {hint}  \nThe service said: {exc}.")


def picture(layers: list[tuple[str, float]], alt: str, caption: str = "") -> None:
    """Base64 PNGs stacked in one box, each at its opacity; the first sets the size. The browser
    blends them, so an opacity change costs the API nothing and the page decodes no image."""
    images = []
    for i, (b64, opacity) in enumerate(layers):
        place = "display:block" if i == 0 else "position:absolute;top:0;left:0;height:100%"
        label = alt if i == 0 else f"{alt}: heat map"
        images.append(
            f'<img src="data:image/png;base64,{b64}" alt="{html.escape(label)}" '
            f'style="{place};width:100%;opacity:{opacity:.2f}">'
        )
    note = f'<figcaption style="color:#555;font-size:0.85rem">{html.escape(caption)}</figcaption>' if caption else ""
    box = f'<div style="position:relative;width:100%">{"".join(images)}</div>'
    st.html(f'<figure style="margin:0">{box}{note}</figure>')


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def percent(value: float) -> str:
    return f"{value:.1%}"


def probability_chart(probabilities: dict[str, float], calibrated: bool) -> None:
    frame = pd.DataFrame({"class": list(probabilities), "probability": list(probabilities.values())})
    label = "calibrated probability" if calibrated else "probability (the bundle is not calibrated)"
    st.bar_chart(frame, x="class", y="probability", x_label="", y_label=label, horizontal=True, sort=False, height=180)
