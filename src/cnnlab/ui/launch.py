"""`cnnlab ui`: check the arguments, then become `python -m streamlit run` on the page's script."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from cnnlab.errors import CnnlabError
from cnnlab.ui.client import ApiClient, ApiError

API_ENV = "CNNLAB_UI_API"
"""How the page's script learns the API's URL (Streamlit passes no arguments of ours to it)."""
APP = Path(__file__).with_name("app.py")
MAX_UPLOAD_MB = 64
"""Streamlit's own cap on an upload; above the API's default 20 MB on purpose, so that the API, which
knows its configured limit, is the one to refuse a large file, with its message."""


def check_api_url(url: str) -> str:
    """The API's base URL without a trailing slash; a CnnlabError for anything else."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CnnlabError(f"--api must be an http(s) URL such as http://127.0.0.1:8000, not '{url}'")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise CnnlabError(f"--api takes the service's base URL alone (no query, fragment or credentials), not '{url}'")
    try:
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise CnnlabError(f"--api has an invalid port: '{url}'") from None
    return url.strip().rstrip("/")


def api_problem(api: str, timeout_s: float = 3.0) -> str | None:
    """Why the API does not answer its health probe, or None when it does."""
    try:
        ApiClient(api, timeout_s=timeout_s).health()
    except ApiError as exc:
        return str(exc)
    return None


def streamlit_command(api: str, host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",  # a served page, not a development session
        "--server.runOnSave", "false",
        "--server.maxUploadSize", str(MAX_UPLOAD_MB),
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",
        "--client.showErrorDetails", "none",  # an unexpected error must not show a traceback in the page
        "--theme.base", "light",
        "--theme.primaryColor", "#1f6feb",
    ]  # fmt: skip


def run_ui(api: str, host: str, port: int, warn: Callable[[str], object] = print) -> None:
    """Replace this process by Streamlit serving the page (so a signal to it reaches Streamlit)."""
    api = check_api_url(api)
    if not 0 < port < 65536:
        raise CnnlabError(f"--port must be between 1 and 65535, not {port}")
    problem = api_problem(api)
    if problem:  # the API may well start after the page: say so, and serve anyway
        warn(f"warning: {problem}; the page will say so until it answers")
    warn(f"the page is on http://{host}:{port} (API {api}); stop with Ctrl-C")
    command = streamlit_command(api, host, port)
    os.execve(sys.executable, command, {**os.environ, API_ENV: api})
