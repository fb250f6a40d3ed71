"""Models: the loaded versions, and activating one (a rollback is activating an older one)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from cnnlab.ui.client import ApiError
from cnnlab.ui.views.widgets import api, flash, remembered, show_error, show_flashes


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
