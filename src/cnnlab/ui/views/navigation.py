"""The pages a signed-in key's role may see, the sidebar, and the sign-in page for everyone else."""

from __future__ import annotations

import logging
from collections.abc import Callable

import streamlit as st

from cnnlab.ui.client import Me
from cnnlab.ui.views.models import models_page
from cnnlab.ui.views.monitor import monitor_page
from cnnlab.ui.views.predict import predict_page
from cnnlab.ui.views.review import review_page
from cnnlab.ui.views.sign_in import sign_in_page, sign_out

log = logging.getLogger("cnnlab.ui")

PAGES: list[tuple[str, str, str, str, Callable[[], None]]] = [
    # (least role, title, url path, icon, page)
    ("clinician", "Predict", "predict", ":material/radiology:", predict_page),
    ("clinician", "Review queue", "review", ":material/fact_check:", review_page),
    ("viewer", "Monitor", "monitor", ":material/monitoring:", monitor_page),
    ("admin", "Models", "models", ":material/deployed_code:", models_page),
]


def main(api_url: str, ca_file: str | None = None) -> None:
    """The page for this run: sign-in without a key, else the pages the key's role may see (the
    others are not hidden behind a disabled button: they do not exist for it). `ca_file`: what an
    https API's certificate is verified against, when not the usual authorities."""
    if not api_url:
        st.error("Start the page with `cnnlab ui --api URL`: it needs the address of `cnnlab serve`.")
        return
    who: Me | None = st.session_state.get("me")
    if who is None:
        page = st.navigation([st.Page(lambda: sign_in_page(api_url, ca_file), title="Sign in", url_path="sign-in")],
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
