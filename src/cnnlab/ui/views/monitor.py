"""Monitor: the service's alerts first, then latency, the versions side by side with their live
accuracy against validation, counts per minute, the prediction mix against validation, and input
drift. Fields from after the clinical loop are optional: an older API's report still draws."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from cnnlab.ui.client import ApiError
from cnnlab.ui.views.widgets import api, percent, show_error

NONE = "–"
VERSION_ROWS = (
    "role",
    "requests",
    "prediction mix",
    "latency p50",
    "latency p95",
    "review rate",
    "feedback",
    "agreement",
    "live accuracy (95% CI)",
    "live sensitivity",
    "shadow agreement",
)


def monitor_page() -> None:
    st.title("Monitor")
    alerts = st.container()  # filled once the report is in, but drawn above everything else
    try:
        names = sorted({m["name"] for m in api().models()})
        name = st.selectbox("Model", names) if len(names) > 1 else (names[0] if names else None)
        report = api().monitor(name)
    except ApiError as exc:
        show_error(exc, what="The monitor could not be loaded.")
        return
    with alerts:
        for line in report.get("alerts") or []:
            st.error(line, icon=":material/warning:")
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

    if report.get("versions"):
        st.subheader("Versions side by side")
        _versions(report["versions"], report.get("validation"))
        st.subheader("Live accuracy per week")
        _live_accuracy(report.get("live") or {}, report.get("validation"))

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


def _share(value: float | None) -> str:
    return NONE if value is None else percent(value)


def _accuracy(value: float | None, ci: list[float | None] | None) -> str:
    if value is None:
        return NONE
    if not ci or None in ci:  # an interval the service could not compute
        return percent(value)
    return f"{percent(value)} ({percent(ci[0])}–{percent(ci[1])})"


def _role(row: dict[str, Any]) -> str:
    if row.get("role") == "canary" and row.get("fraction") is not None:
        return f"canary, {row['fraction']:.0%} of requests"
    return row.get("role") or ""


def _shadow(row: dict[str, Any]) -> str:
    if row.get("role") != "shadow":
        return ""
    answers = row.get("shadow_answers")
    return _share(row.get("shadow_agreement")) + (f" of {answers} answers" if answers else "")


def _mix(predictions: dict[str, float] | None) -> str:
    ranked = sorted((predictions or {}).items(), key=lambda item: -item[1])
    return " · ".join(f"{label} {share:.0%}" for label, share in ranked) or NONE


def _versions(versions: list[dict[str, Any]], validation: dict[str, Any] | None) -> None:
    """One column per version (and one for validation), one row per figure: read across to compare."""
    columns: dict[str, list[Any]] = {}
    for v in versions:
        latency = v.get("latency_ms") or {}
        p50, p95 = latency.get("p50"), latency.get("p95")
        columns[v["version"]] = [
            _role(v),
            str(v.get("requests", 0)),
            _mix(v.get("predictions")),
            NONE if p50 is None else f"{p50:.1f} ms",
            NONE if p95 is None else f"{p95:.1f} ms",
            _share(v.get("review_rate")),
            str(v.get("feedback", 0)),
            _share(v.get("agreement")),
            _accuracy(v.get("live_accuracy"), v.get("live_ci")),
            _share(v.get("live_sensitivity")),
            _shadow(v),
        ]
    if validation:
        cells = [""] * len(VERSION_ROWS)
        cells[0] = f"validation set (n = {validation.get('n', '?')})"
        cells[VERSION_ROWS.index("live accuracy (95% CI)")] = _accuracy(validation["accuracy"], validation.get("ci"))
        columns["validation"] = cells
    st.dataframe(pd.DataFrame(columns, index=list(VERSION_ROWS)), width="stretch")
    st.caption("Agreement: the share of clinicians' assessments that agree with the answer. Live accuracy is "
               "measured on assessed cases only; live sensitivity is the share of assessed positive cases the "
               "operating point called positive. Shadow agreement: how often the shadow's answer equals the one "
               "served.")  # fmt: skip


def _live_accuracy(live: dict[str, Any], validation: dict[str, Any] | None) -> None:
    points = [
        {"week": p["week"], "version": version, "accuracy": p["accuracy"], "feedback": p.get("feedback", 0)}
        for version, weekly in (live.get("by_version") or {}).items()
        for p in weekly
        if p.get("accuracy") is not None
    ]
    if not points:
        st.info("No assessed case yet: live accuracy needs clinicians' feedback.")
        return
    frame = pd.DataFrame(points)
    weeks = live.get("weeks") or sorted(frame["week"].unique())
    x = alt.X("week:O", sort=list(weeks), title="ISO week")
    y = alt.Y("accuracy:Q", title="live accuracy", scale=alt.Scale(zero=False), axis=alt.Axis(format="%"))
    tooltip = ["version", "week", alt.Tooltip("accuracy:Q", format=".1%"),
               alt.Tooltip("feedback:Q", title="assessed cases")]  # fmt: skip
    lines = alt.Chart(frame).mark_line(point=True).encode(x=x, y=y, color="version:N", tooltip=tooltip)
    layers: list[alt.Chart] = []
    if validation and validation.get("ci") and None not in validation["ci"]:
        lo, hi = validation["ci"]
        # A rect with only y and y2 spans the chart's width: the interval as a band behind the lines.
        band = pd.DataFrame({"lo": [lo], "hi": [hi]})
        layers.append(alt.Chart(band).mark_rect(opacity=0.15, color="gray").encode(y="lo:Q", y2="hi:Q"))
    if validation and validation.get("accuracy") is not None:
        rule = pd.DataFrame({"accuracy": [validation["accuracy"]]})
        layers.append(alt.Chart(rule).mark_rule(strokeDash=[4, 4], color="gray").encode(y="accuracy:Q"))
    st.altair_chart(alt.layer(*layers, lines), width="stretch")
    if validation:
        st.caption(f"Grey: the validation accuracy (dashed) and its 95% interval (band), n = {validation.get('n')}. "
                   "A week with few assessed cases is noisy: hover a point for its count.")  # fmt: skip
