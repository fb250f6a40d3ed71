"""`cnnlab ui`: check the arguments, then become `python -m streamlit run` on the page's script."""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from cnnlab.errors import CnnlabError
from cnnlab.ui.client import ApiClient, ApiError

API_ENV = "CNNLAB_UI_API"
"""How the page's script learns the API's URL (Streamlit passes no arguments of ours to it)."""
API_CA_ENV = "CNNLAB_UI_API_CA"
"""Likewise for the CA file the page verifies an https API with (a self-signed or private certificate)."""
PLAIN_HTTP_HINT = "or pass --allow-plain-http if this network is trusted"
APP = Path(__file__).with_name("app.py")
MAX_UPLOAD_MB = 64
"""Streamlit's own cap on an upload; above the API's default 20 MB on purpose, so that the API, which
knows its configured limit, is the one to refuse a large file, with its message."""


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (127.0.0.0/8, ::1, localhost): traffic to it never leaves it."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # another name, or 0.0.0.0 / :: (every interface)


def check_api_url(url: str, allow_plain_http: bool = False) -> str:
    """The API's base URL without a trailing slash; a CnnlabError for anything else, and for plain http
    to another machine unless `allow_plain_http` (every request carries the key)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CnnlabError(f"--api must be an http(s) URL such as http://127.0.0.1:8000, not '{url}'")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise CnnlabError(f"--api takes the service's base URL alone (no query, fragment or credentials), not '{url}'")
    try:
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise CnnlabError(f"--api has an invalid port: '{url}'") from None
    if parts.scheme == "http" and not allow_plain_http and not is_loopback(parts.hostname):
        raise CnnlabError(
            f"--api {url.strip()} is plain http to another machine, so every API key would cross the network "
            f"unencrypted: use https:// (cnnlab serve --ssl-certfile/--ssl-keyfile), {PLAIN_HTTP_HINT}"
        )
    return url.strip().rstrip("/")


def check_page_tls(
    host: str, ssl_certfile: Path | None, ssl_keyfile: Path | None, allow_plain_http: bool = False
) -> None:
    """A CnnlabError unless the page's own TLS options make sense: both files or neither, files that
    exist, and TLS whenever the page listens beyond this machine (the key is typed into it)."""
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise CnnlabError("--ssl-certfile and --ssl-keyfile go together")
    for path in (ssl_certfile, ssl_keyfile):
        if path is not None and not path.is_file():
            raise CnnlabError(f"{path}: no such file")
    if ssl_certfile is None and not allow_plain_http and not is_loopback(host):
        raise CnnlabError(
            f"--host {host} serves the page beyond this machine over plain http, so API keys typed into it "
            f"would cross the network unencrypted: give --ssl-certfile and --ssl-keyfile, {PLAIN_HTTP_HINT}"
        )


def api_problem(api: str, timeout_s: float = 3.0, ca_file: Path | None = None) -> str | None:
    """Why the API does not answer its health probe, or None when it does."""
    try:
        ApiClient(api, timeout_s=timeout_s, ca_file=ca_file).health()
    except ApiError as exc:
        return str(exc)
    return None


def streamlit_command(
    api: str, host: str, port: int, ssl_certfile: Path | None = None, ssl_keyfile: Path | None = None
) -> list[str]:
    tls = ["--server.sslCertFile", str(ssl_certfile), "--server.sslKeyFile", str(ssl_keyfile)] if ssl_certfile else []
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
        *tls,
    ]  # fmt: skip


def run_ui(
    api: str,
    host: str,
    port: int,
    warn: Callable[[str], object] = print,
    ssl_certfile: Path | None = None,
    ssl_keyfile: Path | None = None,
    api_ca_file: Path | None = None,
    allow_plain_http: bool = False,
) -> None:
    """Replace this process by Streamlit serving the page (so a signal to it reaches Streamlit): over
    https with `ssl_certfile` and `ssl_keyfile`; an https API verified against `api_ca_file` when given.
    Plain http beyond this machine, to the page or to the API, only with `allow_plain_http`."""
    api = check_api_url(api, allow_plain_http)
    if not 0 < port < 65536:
        raise CnnlabError(f"--port must be between 1 and 65535, not {port}")
    check_page_tls(host, ssl_certfile, ssl_keyfile, allow_plain_http)
    if api_ca_file is not None and not api_ca_file.is_file():
        raise CnnlabError(f"{api_ca_file}: no such file")
    problem = api_problem(api, ca_file=api_ca_file)
    if problem:  # the API may well start after the page: say so, and serve anyway
        warn(f"warning: {problem}; the page will say so until it answers")
    scheme = "https" if ssl_certfile else "http"
    warn(f"the page is on {scheme}://{host}:{port} (API {api}); stop with Ctrl-C")
    command = streamlit_command(api, host, port, ssl_certfile, ssl_keyfile)
    env = {**os.environ, API_ENV: api}
    if api_ca_file is not None:
        env[API_CA_ENV] = str(api_ca_file.resolve())
    os.execve(sys.executable, command, env)
