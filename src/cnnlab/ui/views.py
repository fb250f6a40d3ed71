"""The pages of `cnnlab ui`, each a function Streamlit runs top to bottom on every interaction.

Streamlit reruns the whole page whenever a widget changes, so anything that costs the API work or
writes to it (a prediction, an explanation, feedback, a resolution, an activation) happens once and
is remembered in `st.session_state`; a rerun only redraws. The API key lives there too and nowhere
else: not in the URL, not on disk. Images are shown as the API sends them (PNG bytes in an <img>),
never decoded here."""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from cnnlab.ui.client import ApiClient, ApiError, Me

log = logging.getLogger("cnnlab.ui")

HINTS = {
    401: "The API no longer accepts this key; sign out and sign in again.",
    403: "Your key's role may not do this.",
    404: "The API does not know this.",
    409: "Someone got there first.",
    413: "The file is larger than the service accepts.",
    415: "The service reads PNG, JPEG and DICOM images only.",
    422: "The service could not use this.",
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
REVIEW_PAGE_SIZE = 10
KEPT_CASES = 20
"""Cases (with their images) a session remembers; older ones are dropped, so a long shift's memory stays flat."""


# --------------------------------------------------------------------------- session helpers
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


# --------------------------------------------------------------------------- sign-in
def sign_in_page(api_url: str) -> None:
    st.title("cnnlab triage")
    st.write("Sign in with the API key you were given (`cnnlab keys create`).")
    with st.form("sign-in", width=560):
        key = st.text_input("API key", type="password", placeholder="cnl_…", help="Kept in this browser tab only.")
        submitted = st.form_submit_button("Sign in", type="primary")
    st.caption(f"Service: {api_url}")
    if not submitted:
        return
    key = key.strip()
    if not key:
        st.error("Sign-in failed: enter an API key.")
        return
    client = ApiClient(api_url, key)
    try:
        who = client.me()
    except ApiError as exc:
        st.error(f"Sign-in failed: {exc}")
        return
    st.session_state["client"], st.session_state["me"] = client, who
    st.rerun()


def sign_out() -> None:
    # Everything goes: the key, and every cached image and answer of this session.
    st.session_state.clear()


# --------------------------------------------------------------------------- predict and feedback
def _new_case(client: ApiClient, data: bytes, method: str) -> dict[str, Any]:
    """Predict once and fetch the kept image. No Streamlit call in here: a rerun cannot stop it
    between the POST and remembering its answer."""
    try:
        result = client.predict(data, explain=method)
    except ApiError as exc:
        return {"error": exc}
    case: dict[str, Any] = {"result": result, "explanations": {}, "explain_errors": {}}
    if result.get("explanation"):
        case["explanations"][method] = result["explanation"]
    try:
        case["image"] = b64(client.prediction_image(result["request_id"]))
    except ApiError as exc:
        case["image_error"] = exc
    return case


def predict_page() -> None:
    st.title("Predict")
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
            cases[upload.file_id] = _new_case(api(), upload.getvalue(), method)
    case = cases[upload.file_id]
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
    st.caption(f"Model {model['name']}, version {model['version']} (sha256 {model['sha256'][:16]}…) · "
               f"request {result['request_id']}")  # fmt: skip

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


# --------------------------------------------------------------------------- review queue
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


# --------------------------------------------------------------------------- monitor
def monitor_page() -> None:
    st.title("Monitor")
    try:
        names = sorted({m["name"] for m in api().models()})
        name = st.selectbox("Model", names) if len(names) > 1 else (names[0] if names else None)
        report = api().monitor(name)
    except ApiError as exc:
        show_error(exc, what="The monitor could not be loaded.")
        return
    st.button("Refresh", icon=":material/refresh:")
    model, window = report["model"], report["window"]
    st.caption(f"Model {model['name']}, version {model['version']}. Latency and the prediction mix are over the "
               f"last {window['requests']} requests this API process served (up to {window['size']}); the counts "
               "per minute are every worker's, from the database. Times in UTC.")  # fmt: skip

    latency = report["latency_ms"]
    cells = st.columns(4)
    cells[0].metric("Requests in the window", window["requests"])
    for cell, q in zip(cells[1:], ("p50", "p95", "p99"), strict=True):
        value = latency.get(q)
        cell.metric(f"Latency {q}", "–" if value is None else f"{value:.1f} ms")

    activity = report["activity"]
    minutes = pd.to_datetime(activity["minutes"], utc=True)
    left, right = st.columns(2, gap="large")
    with left:
        st.subheader("Requests per minute, by outcome")
        _counts_chart(activity["requests"], minutes, "requests", "No request in the last hour.")
    with right:
        st.subheader("Predictions per minute, by class")
        _counts_chart(activity["predictions"], minutes, "predictions", "No prediction in the last hour.")

    left, right = st.columns(2, gap="large")
    with left:
        st.subheader("Predicted classes: recent vs validation")
        predictions = report["predictions"]
        mix = pd.DataFrame({"recent": predictions["recent"]})
        if predictions.get("validation"):
            mix["validation"] = pd.Series(predictions["validation"])
        mix = mix.rename_axis("class").reset_index().melt("class", var_name="sample", value_name="share")
        st.bar_chart(mix, x="class", y="share", color="sample", stack=False, horizontal=True, x_label="",
                     y_label="share of predictions", height=260)  # fmt: skip
        if not predictions.get("validation"):
            st.caption("This bundle carries no validation distribution (retrain it to get one).")
    with right:
        st.subheader("Input drift")
        _drift(report["drift"])


def _counts_chart(series: dict[str, list[int]], minutes: pd.DatetimeIndex, unit: str, empty: str) -> None:
    if not series:
        st.info(empty)
        return
    frame = pd.DataFrame(series, index=minutes).rename_axis("minute")
    st.bar_chart(frame, x_label="minute (UTC)", y_label=unit, stack=True, height=260)


def _drift(drift: dict[str, Any]) -> None:
    verdict = drift.get("verdict", "unavailable")
    if "statistic" in drift:
        cells = st.columns(3)
        cells[0].metric("Verdict", verdict)
        cells[1].metric("MMD²", f"{drift['statistic']:.4f}")
        cells[2].metric("p-value", f"{drift['p_value']:.3f}")
        (st.error if verdict == "drifted" else st.success)(
            f"{verdict.capitalize()} at α = {drift['alpha']}: {drift['recent']} recent inputs against "
            f"{drift['reference']} validation inputs ({drift['method']})."
        )
    else:
        st.metric("Verdict", verdict)
        st.info(drift.get("reason", "no drift test for this model"))


# --------------------------------------------------------------------------- models
def models_page() -> None:
    st.title("Models")
    show_flashes()
    try:
        rows = api().models()
    except ApiError as exc:
        show_error(exc, what="The models could not be loaded.")
        return
    table = pd.DataFrame(
        {
            "active": ["● active" if m["active"] else "" for m in rows],
            "name": [m["name"] for m in rows],
            "version": [m["version"] for m in rows],
            "created (UTC)": [m["created_at"][:19].replace("T", " ") for m in rows],
            "architecture": [m.get("architecture") or "" for m in rows],
            "calibrated": ["yes" if m.get("calibrated") else "no" for m in rows],
            "sha256": [m["sha256"] for m in rows],
        }
    )
    st.dataframe(table, hide_index=True, width="stretch")
    st.subheader("Activate or roll back")
    for name in sorted({m["name"] for m in rows}):
        _activation(name, [m for m in rows if m["name"] == name])


def _activation(name: str, versions: list[dict[str, Any]]) -> None:
    active = next((m for m in versions if m["active"]), None)
    others = [m for m in versions if not m["active"]]
    if not others:
        st.caption(f"{name}: only one version is loaded ({active['version'] if active else 'none'}).")
        return

    def describe(m: dict[str, Any]) -> str:
        older = active is not None and m["created_at"] < active["created_at"]
        return f"{m['version']}, created {m['created_at'][:16].replace('T', ' ')}{' (roll back)' if older else ''}"

    chosen = st.selectbox(f"Version of {name} to make active", others, format_func=describe, key=f"pick-{name}")
    confirm = st.checkbox(
        f"I confirm: make {name} {chosen['version']} the active version. New predictions use it at once; "
        "requests already running finish on the current one.",
        key=f"confirm-{name}-{chosen['version']}",
    )
    if st.button("Activate", type="primary", disabled=not confirm, key=f"activate-{name}"):
        try:
            done = api().activate(name, chosen["version"])
        except ApiError as exc:
            show_error(exc, what="Not activated.")
            return
        remembered("model_list").clear()  # the operating point shown on the predict page may change
        flash("success", f"{name} {done['version']} is now the active version.")
        st.rerun()


# --------------------------------------------------------------------------- navigation
PAGES: list[tuple[str, str, str, str, Callable[[], None]]] = [
    # (least role, title, url path, icon, page)
    ("clinician", "Predict", "predict", ":material/radiology:", predict_page),
    ("clinician", "Review queue", "review", ":material/fact_check:", review_page),
    ("viewer", "Monitor", "monitor", ":material/monitoring:", monitor_page),
    ("admin", "Models", "models", ":material/deployed_code:", models_page),
]


def main(api_url: str) -> None:
    """The page for this run: sign-in without a key, else the pages the key's role may see (the
    others are not hidden behind a disabled button: they do not exist for it)."""
    if not api_url:
        st.error("Start the page with `cnnlab ui --api URL`: it needs the address of `cnnlab serve`.")
        return
    who: Me | None = st.session_state.get("me")
    if who is None:
        page = st.navigation([st.Page(lambda: sign_in_page(api_url), title="Sign in", url_path="sign-in")],
                             position="hidden")  # fmt: skip
    else:
        allowed = [(t, p, i, f) for least, t, p, i, f in PAGES if who.may(least)]
        page = st.navigation([st.Page(f, title=t, url_path=p, icon=i) for t, p, i, f in allowed])
        with st.sidebar:
            st.markdown(f"Signed in as **{who.name or who.key_id}**")
            st.markdown(f"Role: **{who.role}**")
            if who.expires_at:
                st.caption(f"Key valid until {who.expires_at[:16].replace('T', ' ')} UTC")
            st.caption(f"Service: {api_url}")
            if st.button("Sign out", icon=":material/logout:"):
                sign_out()
                st.rerun()
    try:
        page.run()
    except Exception:  # Streamlit's own rerun/stop signals are BaseExceptions and pass through
        log.exception("the page failed")
        st.error("Something went wrong on this page; the details are in the server's log. Reload to try again.")
