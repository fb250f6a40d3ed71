"""Review queue: the pending cases, oldest first, each resolved with the clinician's label."""

from __future__ import annotations

from typing import Any

import streamlit as st

from cnnlab.ui.client import ApiError
from cnnlab.ui.views.widgets import (
    KEPT_CASES,
    REASONS,
    api,
    b64,
    flash,
    keep_recent,
    percent,
    picture,
    probability_chart,
    remembered,
    show_error,
    show_flashes,
)

REVIEW_PAGE_SIZE = 10


def review_page() -> None:
    st.title("Review queue")
    show_flashes()
    try:
        items = api().review_queue(limit=REVIEW_PAGE_SIZE + 1)
    except ApiError as exc:
        show_error(exc, what="The queue could not be loaded.")
        return
    if not items:
        st.success("No case is waiting for review.")
        return
    if len(items) > REVIEW_PAGE_SIZE:
        st.caption(f"The {REVIEW_PAGE_SIZE} oldest pending cases; resolve them to see the next.")
    else:
        st.caption(f"{len(items)} pending case{'s' if len(items) > 1 else ''}, oldest first.")
    for item in items[:REVIEW_PAGE_SIZE]:
        with st.container(border=True):
            _review_item(item)


def _review_media(request_id: str) -> dict[str, Any]:
    """A case's kept image, Grad-CAM overlay and feedback so far, asked of the API once per session."""
    media = remembered("review_media")
    if request_id not in media:
        entry: dict[str, Any] = {}
        try:
            entry["image"] = b64(api().prediction_image(request_id))
            entry["overlay"] = api().explanation(request_id, "gradcam")["overlay_png_base64"]
            entry["feedback"] = api().feedback(request_id)
        except ApiError as exc:
            entry["error"] = exc
        keep_recent(media, KEPT_CASES)
        media[request_id] = entry
    return media[request_id]


def _review_item(item: dict[str, Any]) -> None:
    reasons = "; ".join(REASONS.get(r, r) for r in item["reasons"])
    st.markdown(f"**Case {item['id']}** · {item['created_at'][:19].replace('T', ' ')} UTC · "
                f"predicted **{item['label']}** ({percent(item['confidence'])}) · model "
                f"{item['model_name']} {item['model_version']}")  # fmt: skip
    st.caption(f"Why: {reasons}")
    media = _review_media(item["request_id"])
    image_col, overlay_col, form_col = st.columns([1, 1, 1.3], gap="medium")
    if "error" in media:
        with image_col:
            show_error(media["error"], what="Images unavailable.")
    else:
        with image_col:
            picture([(media["image"], 1.0)], f"case {item['id']}: the image as the model sees it")
        with overlay_col:
            picture([(media["overlay"], 1.0)], f"case {item['id']}: Grad-CAM overlay", "Grad-CAM")
    feedback = media.get("feedback") or []
    with form_col:
        probability_chart(item["probabilities"], calibrated=True)
        if feedback:
            said = ", ".join(f"{f['label']} ({'agrees' if f['agrees'] else 'disagrees'})" for f in feedback)
            st.caption(f"Feedback so far: {said}")
        classes = list(item["probabilities"])
        # The latest feedback is the best first guess at the correct class, else the prediction.
        guess = feedback[-1]["label"] if feedback and feedback[-1]["label"] in classes else item["label"]
        with st.form(f"resolve-{item['id']}", border=False):
            label = st.selectbox("Correct class", classes, index=classes.index(guess))
            note = st.text_input("Note (optional)", max_chars=4000)
            if st.form_submit_button("Resolve", type="primary"):
                _resolve(item, label, note)


def _resolve(item: dict[str, Any], label: str, note: str) -> None:
    resolving = remembered("resolving")
    if item["id"] in resolving:  # a second click on the same case
        return
    resolving[item["id"]] = True
    try:
        api().resolve(item["id"], label, note)
    except ApiError as exc:
        del resolving[item["id"]]
        show_error(exc, what=f"Case {item['id']} not resolved.")
        return
    flash("success", f"Case {item['id']} resolved as {label}.")
    st.rerun()
