"""Predict: upload an image, see the model's answer and its CAM, and give feedback on it."""

from __future__ import annotations

from typing import Any

import streamlit as st

from cnnlab.ui.client import ApiClient, ApiError
from cnnlab.ui.views.widgets import (
    DEFAULT_OPACITY,
    KEPT_CASES,
    METHOD_NAMES,
    REASONS,
    api,
    b64,
    keep_recent,
    me,
    percent,
    picture,
    probability_chart,
    remembered,
    show_error,
)


def _new_case(client: ApiClient, data: bytes, method: str, patient_id: str) -> dict[str, Any]:
    """Predict once and fetch the kept image. No Streamlit call in here: a rerun cannot stop it
    between the POST and remembering its answer."""
    try:
        result = client.predict(data, explain=method, patient_id=patient_id or None)
    except ApiError as exc:
        return {"error": exc, "patient_id": patient_id}
    case: dict[str, Any] = {"result": result, "explanations": {}, "explain_errors": {}, "patient_id": patient_id}
    if result.get("explanation"):
        case["explanations"][method] = result["explanation"]
    try:
        case["image"] = b64(client.prediction_image(result["request_id"]))
    except ApiError as exc:
        case["image_error"] = exc
    return case


def predict_page() -> None:
    st.title("Predict")
    patient_id = st.text_input(
        "Patient id (optional)",
        key="patient_id",
        max_chars=200,
        help="Sent with the image so that the service can follow this patient's cases over time; "
        "it stores only a keyed hash of it. Fill it in before uploading.",
    ).strip()
    upload = st.file_uploader(
        "Chest X-ray: PNG, JPEG or DICOM",
        type=None,  # the API judges the bytes; a file-name filter would only refuse DICOMs without .dcm
        key="upload",
        help="Drag and drop a file here or browse. The service decodes it; this page never does.",
    )
    if upload is None:
        st.info("Upload an image to see the model's prediction, its Grad-CAM and to give feedback.")
        return
    cases = remembered("cases")
    if upload.file_id not in cases:
        method = st.session_state.get("cam_method", "gradcam")
        keep_recent(cases, KEPT_CASES)
        with st.spinner("The model is reading the image…"):
            cases[upload.file_id] = _new_case(api(), upload.getvalue(), method, patient_id)
    case = cases[upload.file_id]
    if case["patient_id"] != patient_id:
        _patient_changed(cases, upload.file_id, case["patient_id"])
    if "error" in case:
        show_error(case["error"], what="No prediction.")
        if st.button("Try again"):
            del cases[upload.file_id]
            st.rerun()
        return
    _show_case(case)
    st.divider()
    chart, assessment = st.columns(2, gap="large")
    with chart:
        st.subheader("Probabilities")
        probability_chart(case["result"]["probabilities"], case["result"]["calibrated"])
    with assessment:
        _feedback_form(case["result"])


def _show_case(case: dict[str, Any]) -> None:
    result = case["result"]
    model = result["model"]
    if result["needs_review"]:
        reasons = "; ".join(REASONS.get(r, r) for r in result["review_reasons"])
        st.warning(f"**Needs review**: {reasons}. The case is waiting in the review queue.", icon=":material/flag:")
    top = st.columns(3)
    top[0].metric("Predicted class", result["label"])
    top[1].metric("Calibrated probability" if result["calibrated"] else "Probability", percent(result["confidence"]))
    decision = result["decision"]
    top[2].metric("Operating-point decision", decision or "none", help=_operating_point_help(model["name"]))
    routed = result.get("routed")
    arm = f" · answered by the {routed} version" if routed else ""
    use = f"  \n**Intended use:** {result['intended_use']}" if result.get("intended_use") else ""
    st.caption(f"Model {model['name']}, version {model['version']} (sha256 {model['sha256'][:16]}…){arm} · "
               f"request {result['request_id']}{use}")  # fmt: skip

    methods = list(me().explain_methods)
    controls = st.columns(2, gap="large")
    method = controls[0].selectbox("CAM method", methods, key="cam_method", format_func=METHOD_NAMES.get)
    opacity = controls[1].slider("Heat-map opacity", 0.0, 1.0, DEFAULT_OPACITY, 0.05, key="cam_opacity")
    name = METHOD_NAMES.get(method, method)
    left, right = st.columns(2, gap="large")
    with left:
        st.subheader("As the model sees it")
        if "image" in case:
            picture([(case["image"], 1.0)], "the image as the model sees it", "decoded and windowed by the service")
        else:
            show_error(case["image_error"], what="The kept image could not be loaded.")
    with right:
        st.subheader(f"{name} overlay")
        explanation = _explanation(case, method)
        if explanation is not None and "image" in case:
            picture(
                [(case["image"], 1.0), (explanation["heatmap_png_base64"], opacity)],
                f"{name} overlay",
                f"where the model looked for '{result['label']}' (red: most)",
            )


def _patient_changed(cases: dict[str, Any], file_id: str, sent: str) -> None:
    """The box changed after the image went out: say so, and send it again only when asked (a
    rerun never posts an upload by itself)."""
    was = f"with patient id {sent}" if sent else "without a patient id"
    st.warning(f"This image was sent {was}; the box now says otherwise.", icon=":material/badge:")
    if st.button("Send the image again with this patient id", key=f"resend-{file_id}"):
        del cases[file_id]
        st.rerun()


def _explanation(case: dict[str, Any], method: str) -> dict[str, Any] | None:
    """The case's explanation by `method`, asked of the API the first time only (not by predicting again)."""
    explanations, errors = case["explanations"], case["explain_errors"]
    if method not in explanations and method not in errors:
        with st.spinner(f"Computing {METHOD_NAMES.get(method, method)}…"):
            try:
                explanations[method] = api().explanation(case["result"]["request_id"], method)
            except ApiError as exc:
                errors[method] = exc
    if method in errors:
        show_error(errors[method], what="No explanation.")
        if st.button("Try the explanation again"):
            del errors[method]
            st.rerun()
        return None
    return explanations[method]


def _operating_point_help(name: str) -> str:
    models = remembered("model_list")
    if "rows" not in models:
        try:
            models["rows"] = api().models()
        except ApiError:
            models["rows"] = []
    point = next((m.get("operating_point") for m in models["rows"] if m["name"] == name and m["active"]), None)
    if not point:
        return "The bundle has no operating point (`cnnlab calibrate --positive ...` sets one)."
    return f"positive when P({' or '.join(point['positive'])}) ≥ {float(point['value']):.3f}"


def _feedback_form(result: dict[str, Any]) -> None:
    request_id, predicted = result["request_id"], result["label"]
    sent = remembered("feedback_sent")
    st.subheader("Your assessment")
    done = sent.get(request_id)
    if isinstance(done, dict):
        verdict = "agrees with" if done["agrees"] else "corrects"
        st.success(f"Feedback saved, id {done['id']}: {done['label']} ({verdict} the prediction). Thank you.")
        return
    verdict = st.radio("The prediction is", ["Agree", "Disagree"], horizontal=True, key=f"verdict-{request_id}")
    label = predicted
    if verdict == "Disagree":
        others = [c for c in result["probabilities"] if c != predicted]
        label = st.selectbox("Correct class", others, key=f"label-{request_id}")
    note = st.text_area("Note (optional)", key=f"note-{request_id}", max_chars=4000, height=80)
    if st.button("Submit feedback", type="primary", key=f"submit-{request_id}") and request_id not in sent:
        # Marked before the request and answered before any Streamlit call: a second click, which
        # reruns the page, finds the mark and sends nothing.
        sent[request_id] = "sending"
        try:
            sent[request_id] = api().send_feedback(request_id, label, verdict == "Agree", note)
        except ApiError as exc:
            del sent[request_id]
            show_error(exc, what="Feedback not saved.")
            return
        remembered("review_media").pop(request_id, None)  # the review page shows feedback so far
        st.rerun()
