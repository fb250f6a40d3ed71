"""The page without a key: sign in with one (and signing out, which forgets the whole session)."""

from __future__ import annotations

import streamlit as st

from cnnlab.ui.client import ApiClient, ApiError


def sign_in_page(api_url: str, ca_file: str | None = None) -> None:
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
    client = ApiClient(api_url, key, ca_file=ca_file)
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
