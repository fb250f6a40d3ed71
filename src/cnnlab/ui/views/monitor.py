"""Monitor: latency, counts per minute, the prediction mix against validation, and input drift."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from cnnlab.ui.client import ApiError
from cnnlab.ui.views.widgets import api, show_error


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
