"""Models: each model's versions and their roles, activating one through the release gate (or past
it, with a reason the governance log keeps), canary and shadow rollouts, promotion, rollback, and
the governance log itself.

Every write asks for a confirmation first. A 409 from activate or promote is the gate speaking (it
refused, or has no validation data to judge by): the refusal is remembered per model so that the
override box survives the reruns that typing into it causes."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from cnnlab.ui.client import ApiError
from cnnlab.ui.views.widgets import api, flash, remembered, show_error, show_flashes

MIN_OVERRIDE_CHARS = 10
"""The API's own minimum: an override reason is read by auditors, 'ok' is not a reason."""
MIN_ROLLBACK_CHARS = 3
DEFAULT_CANARY_FRACTION = 0.1
ROLE_MARKS = {"active": "●", "canary": "◐", "shadow": "○"}
FAILED = {"activate": "Not activated.", "promote": "Not promoted.", "rollout": "The run did not start."}
MODE_NAMES = {
    "canary": "Canary: a share of requests is answered by the candidate",
    "shadow": "Shadow: the candidate also reads every request; nobody sees its answers",
}


def role(model: dict[str, Any]) -> str:
    """active, canary, shadow or inactive; an API older than rollouts only says active or not."""
    return model.get("role") or ("active" if model.get("active") else "inactive")


def role_text(model: dict[str, Any]) -> str:
    """The role in words, with the canary's share of traffic; empty for an inactive version."""
    if role(model) == "canary" and model.get("fraction") is not None:
        return f"canary, {model['fraction']:.0%} of requests"
    return "" if role(model) == "inactive" else role(model)


def gate_summary(gate: dict[str, Any] | None) -> str:
    """One line for a gate result: its verdict, and its reasons when it refused."""
    if not gate:
        return ""
    verdict = "passed" if gate["passed"] else "refused"
    return f"{verdict}: {'; '.join(gate['reasons'])}" if gate.get("reasons") else verdict


def _when(stamp: str | None) -> str:
    return (stamp or "")[:16].replace("T", " ")


def models_page() -> None:
    st.title("Models")
    show_flashes()
    try:
        rows = api().models()
    except ApiError as exc:
        show_error(exc, what="The models could not be loaded.")
        return
    for name in sorted({m["name"] for m in rows}):
        versions = [m for m in rows if m["name"] == name]
        st.header(name, divider="gray")
        _versions_table(versions)
        _gate_refusal(name)
        _activation(name, versions)
        _rollout(name, versions)
        _governance_log(name)


def _versions_table(versions: list[dict[str, Any]]) -> None:
    table = pd.DataFrame(
        {
            "role": [f"{ROLE_MARKS.get(role(m), '')} {role_text(m)}".strip() for m in versions],
            "version": [m["version"] for m in versions],
            "created (UTC)": [m["created_at"][:19].replace("T", " ") for m in versions],
            "architecture": [m.get("architecture") or "" for m in versions],
            "calibrated": ["yes" if m.get("calibrated") else "no" for m in versions],
            "sha256": [m["sha256"] for m in versions],
        }
    )
    st.dataframe(table, hide_index=True, width="stretch")


def _activation(name: str, versions: list[dict[str, Any]]) -> None:
    st.subheader("Activate")
    active = next((m for m in versions if role(m) == "active"), None)
    others = [m for m in versions if role(m) != "active"]
    if not others:
        st.caption(f"{name}: only one version is loaded ({active['version'] if active else 'none'}).")
        return

    def describe(m: dict[str, Any]) -> str:
        older = active is not None and m["created_at"] < active["created_at"]
        return f"{m['version']}, created {_when(m['created_at'])}{' (roll back)' if older else ''}"

    chosen = st.selectbox(f"Version of {name} to make active", others, format_func=describe, key=f"pick-{name}")
    confirm = st.checkbox(
        f"I confirm: make {name} {chosen['version']} the active version. New predictions use it at once; "
        "requests already running finish on the current one.",
        key=f"confirm-{name}-{chosen['version']}",
    )
    if st.button("Activate", type="primary", disabled=not confirm, key=f"activate-{name}"):
        _gated(name, {"action": "activate", "version": chosen["version"]})


def _gated(name: str, change: dict[str, Any], override_reason: str | None = None) -> None:
    """Send one of the changes the release gate stands in front of (`change["action"]`: activate,
    promote, or rollout as a canary). A 409 from the gate is remembered so that the page offers
    an override; success clears it."""
    action, version = change["action"], change["version"]
    refusals = remembered("gate_refusals")
    try:
        if action == "activate":
            done = api().activate(name, version, override_reason=override_reason)
        elif action == "promote":
            done = api().promote(name, override_reason=override_reason)
        else:
            done = api().rollout(name, version, change["mode"], change["fraction"], override_reason=override_reason)
    except ApiError as exc:
        # A shadow's answers reach nobody, so it has no gate: its 409 (the version is the active one) is final.
        if exc.status != 409 or change.get("mode") == "shadow":
            show_error(exc, what=FAILED[action])
            return
        refusals[name] = {**change, "detail": str(exc)}
    else:
        refusals.pop(name, None)
        remembered("model_list").clear()  # the operating point shown on the predict page may change
        flash("success", _done(name, change, done))
    st.rerun()


def _done(name: str, change: dict[str, Any], done: dict[str, Any]) -> str:
    # "reason" is the governance log's own words (the gate passed, or the override); a rollout answers the gate.
    why = done.get("reason") or gate_summary(done.get("gate"))
    note = f" ({why})" if why else ""
    if change["action"] == "rollout":
        return f"{name} {change['version']}: {change['mode']} run started {_share(change)}{note}."
    return f"{name} {done.get('version', change['version'])} is now the active version{note}."


def _share(change: dict[str, Any]) -> str:
    return f"on {change['fraction']:.0%} of requests" if change["mode"] == "canary" else "beside every request"


def _gate_refusal(name: str) -> None:
    refusal = remembered("gate_refusals").get(name)
    if not refusal:
        return
    what = {"activate": "Activation", "promote": "Promotion", "rollout": "The canary run"}[refusal["action"]]
    st.error(f"**{what} of {name} {refusal['version']} refused.** The service said: {refusal['detail']}.",
             icon=":material/block:")  # fmt: skip
    reason = st.text_input(
        "Override with a reason",
        key=f"override-reason-{name}",
        max_chars=2000,
        placeholder="Why this version should go live despite the gate",
        help=f"At least {MIN_OVERRIDE_CHARS} characters. The governance log keeps it with your key's name.",
    )
    send, cancel = st.columns(2)
    # Enabled whatever the box holds: a button that a reason typed without Enter would enable is
    # still disabled when the click lands, and the click is lost.
    if send.button("Send with the override", type="primary", key=f"override-send-{name}"):
        if len(reason.strip()) < MIN_OVERRIDE_CHARS:
            st.error(f"An override needs a reason of at least {MIN_OVERRIDE_CHARS} characters.")
        else:
            _gated(name, refusal, override_reason=reason.strip())
    if cancel.button("Cancel", key=f"override-cancel-{name}"):
        remembered("gate_refusals").pop(name, None)
        st.rerun()


def _rollout(name: str, versions: list[dict[str, Any]]) -> None:
    st.subheader("Canary or shadow run")
    candidate = next((m for m in versions if role(m) in ("canary", "shadow")), None)
    if candidate is not None:
        st.info(f"In progress: {candidate['version']} as {role_text(candidate)}.",
                icon=":material/alt_route:")  # fmt: skip
        _promotion(name, candidate)
    _rollback(name, candidate)
    others = [m for m in versions if role(m) != "active"]
    if not others:
        st.caption("A rollout needs a second version of this model.")
        return
    st.markdown("**Start a run**" if candidate is None else "**Start another run** (it replaces the one in progress)")
    chosen = st.selectbox("Candidate version", others, format_func=lambda m: f"{m['version']}, created "
                          f"{_when(m['created_at'])}", key=f"rollout-pick-{name}")  # fmt: skip
    mode = st.radio("Mode", list(MODE_NAMES), format_func=MODE_NAMES.get, key=f"rollout-mode-{name}")
    fraction = st.slider(
        "Share of requests the candidate answers",
        0.0,
        1.0,
        DEFAULT_CANARY_FRACTION,
        0.01,
        key=f"rollout-fraction-{name}",
        disabled=mode == "shadow",
        help="The candidate's share of requests; the service splits them by patient, so one patient's cases stay "
        "on one version.",
    )
    # A shadow reads every request: its fraction is sent only because the body has the field.
    change = {"action": "rollout", "version": chosen["version"], "mode": mode,
              "fraction": fraction if mode == "canary" else 1.0}  # fmt: skip
    confirm = st.checkbox(
        f"I confirm: start a {mode} run of {name} {chosen['version']} {_share(change)}.",
        key=f"rollout-confirm-{name}-{chosen['version']}-{mode}",
    )
    if st.button(f"Start the {mode} run", disabled=not confirm, key=f"rollout-start-{name}"):
        _gated(name, change)


def _promotion(name: str, candidate: dict[str, Any]) -> None:
    confirm = st.checkbox(
        f"I confirm: promote {name} {candidate['version']} to the active version; the run ends.",
        key=f"promote-confirm-{name}-{candidate['version']}",
    )
    if st.button("Promote", type="primary", disabled=not confirm, key=f"promote-{name}"):
        _gated(name, {"action": "promote", "version": candidate["version"]})


def _rollback(name: str, candidate: dict[str, Any] | None) -> None:
    what = (
        f"end the run of {candidate['version']}: every request goes to the active version"
        if candidate is not None
        else "make the previously active version active again"
    )
    with st.expander("Roll back", icon=":material/undo:", expanded=candidate is not None):
        reason = st.text_input("Reason for the rollback", key=f"rollback-reason-{name}", max_chars=2000)
        confirm = st.checkbox(f"I confirm: roll back {name}, that is {what}.", key=f"rollback-confirm-{name}")
        if st.button("Roll back", disabled=not confirm, key=f"rollback-{name}"):
            if len(reason.strip()) < MIN_ROLLBACK_CHARS:
                st.error("A rollback needs a reason (the governance log keeps it).")
                return
            try:
                done = api().rollback(name, reason.strip())
            except ApiError as exc:
                show_error(exc, what="Not rolled back.")
                return
            remembered("model_list").clear()
            flash("success", f"{name}: {done.get('action', 'rolled back')}; the active version is {done['active']}.")
            st.rerun()


def _governance_log(name: str) -> None:
    st.subheader("Governance log")
    try:
        events = api().events(name)
    except ApiError as exc:
        if exc.status == 404:  # a service from before the clinical loop keeps none
            st.caption("This service keeps no governance log.")
        else:
            show_error(exc, what="The governance log could not be loaded.")
        return
    if not events:
        st.caption("Nothing has happened to this model yet.")
        return
    table = pd.DataFrame(
        {
            "when (UTC)": [_when(e.get("at")) for e in events],
            "action": [e.get("action") or "" for e in events],
            "version": [e.get("version") or "" for e in events],
            "previous": [e.get("previous") or "" for e in events],
            "by": [e.get("by") or "" for e in events],
            "reason": [e.get("reason") or "" for e in events],
            "gate": [gate_summary(e.get("gate")) for e in events],
        }
    )
    st.dataframe(table, hide_index=True, width="stretch")
