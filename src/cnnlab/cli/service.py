"""`cnnlab serve`, `ui`, `keys`, `audit` and `feedback`: the triage service, its web page, and the
administration of its keys, audit log and collected feedback."""

# The service is imported inside the commands: that keeps `cnnlab --help` fast and free of torch.
from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cnnlab.choices import ROLES
from cnnlab.cli.common import DeviceOpt, console, err, one_of, require_db_driver, require_extra
from cnnlab.errors import CnnlabError

app = typer.Typer()
StateDirOpt = Annotated[
    Path, typer.Option("--state-dir", help="The service's state: its SQLite database and kept images.")
]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="URL",
        # From the environment, a URL with a password stays off the command line (and out of `ps`).
        envvar="CNNLAB_SERVE_DB_URL",
        help="A SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (default: SQLite in --state-dir).",
    ),
]
DEFAULT_STATE_DIR = Path("serve-state")


def _serve_settings(state_dir: Path, db: str | None, **more: Any) -> Any:
    from pydantic import ValidationError

    from cnnlab.serve.settings import ServeSettings

    try:
        return ServeSettings(state_dir=state_dir, db_url=db, **more)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CnnlabError(f"--{'-'.join(str(p) for p in first['loc']).replace('_', '-')}: {first['msg']}") from None


def _needs_service(command: str, db: str | None) -> None:
    """Say which extra to install before the first import of the service's packages fails."""
    require_extra("serve", command)
    require_db_driver(db, command)


def _service_store(state_dir: Path, db: str | None, create: bool = False) -> Any:
    """The service's database; only `keys create` may start a new one."""
    from cnnlab.serve.settings import DB_FILE
    from cnnlab.serve.store import Store

    settings = _serve_settings(state_dir, db)
    if db is None and not create and not (state_dir / DB_FILE).is_file():
        raise CnnlabError(f"no service database in {state_dir}; pass the --state-dir or --db that `cnnlab serve` uses")
    state_dir.mkdir(parents=True, exist_ok=True)
    return Store(settings.database_url())


@app.command(
    epilog="Examples:  cnnlab serve runs/lite0-xray  |  cnnlab serve runs/xray-v1 runs/xray-v2 --gate-data "
    "data/xray-gate  |  cnnlab serve runs/xray-v1 --port 8443 --ssl-certfile cert.pem --ssl-keyfile key.pem"
)
def serve(
    runs: Annotated[
        list[Path],
        typer.Argument(
            help="Bundles to serve. On a new database the newest per model name starts active; a bundle added "
            "later waits for activation (the gate) or a canary."
        ),
    ],
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 exposes it to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    db: DbOpt = None,
    review_threshold: Annotated[
        float, typer.Option(help="Calibrated confidence under which a case goes to the review queue.")
    ] = 0.8,
    ssl_certfile: Annotated[Path | None, typer.Option("--ssl-certfile", help="TLS certificate (PEM).")] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option("--ssl-keyfile", help="TLS private key (PEM).")] = None,
    workers: Annotated[
        int, typer.Option(help="Worker processes sharing the database (use PostgreSQL, --db, across machines).")
    ] = 1,
    rate_limit: Annotated[
        int | None,
        typer.Option(
            "--rate-limit", help="Requests per minute per API key, across workers (0: no limit; default 120)."
        ),
    ] = None,
    device: DeviceOpt = None,
    gate_data: Annotated[
        Path | None,
        typer.Option(
            "--gate-data",
            help="A labelled class folder (patients no model trained on): activating or promoting a version runs "
            "the promotion gate on it (`cnnlab gate`); without it, activation needs an override reason.",
        ),
    ] = None,
) -> None:
    """Serve bundles over HTTP: predictions, Grad-CAM overlays, feedback, a review queue, and gated
    activation, canary and shadow rollouts of new versions (API keys needed)."""
    _needs_service("cnnlab serve", db)
    import os
    import tempfile

    import uvicorn

    from cnnlab.serve.app import create_app, settings_environment
    from cnnlab.serve.metrics import MULTIPROCESS_ENV

    if workers < 1:
        raise CnnlabError(f"--workers must be at least 1, not {workers}")
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise CnnlabError("--ssl-certfile and --ssl-keyfile go together")
    for path in (ssl_certfile, ssl_keyfile):
        if path is not None and not path.is_file():
            raise CnnlabError(f"{path}: no such file")
    limits = {} if rate_limit is None else {"rate_limit_per_minute": rate_limit}
    if device is not None:
        limits["device"] = device
    if gate_data is not None:
        if not gate_data.is_dir():
            raise CnnlabError(f"--gate-data {gate_data}: no such folder")
        limits["gate_data"] = gate_data.resolve()
    settings = _serve_settings(
        state_dir, db, runs=runs, host=host, port=port, review_threshold=review_threshold, **limits
    )
    check_port_free(host, port)
    application = create_app(settings)
    scheme = "https" if ssl_certfile else "http"
    names = ", ".join(f"{m.name}@{m.version}" for m in application.state.models.all())
    err.print(
        f"serving {names} on {scheme}://{host}:{port} on {application.state.models.device} (state in {state_dir}); "
        f"create a key: cnnlab keys create --role clinician --state-dir {state_dir}"
    )
    if workers > 1:  # each worker builds its own app from the same settings, passed by environment
        os.environ.update(settings_environment(settings))
        # prometheus_client's multiprocess mode: each worker writes its latency samples here, and
        # whichever worker is scraped sums them all (counts come from the database anyway).
        os.environ[MULTIPROCESS_ENV] = tempfile.mkdtemp(prefix="cnnlab-metrics-")
    uvicorn.run(
        "cnnlab.serve.app:create_app_from_environment" if workers > 1 else application,
        factory=workers > 1,
        workers=workers if workers > 1 else None,
        host=host,
        port=port,
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
        log_level="info",
    )


@app.command(
    epilog="Examples:  cnnlab ui --api http://127.0.0.1:8000 --port 8501   (then open http://127.0.0.1:8501)"
    "  |  cnnlab ui --api https://triage.example.org:8443 --host 0.0.0.0"
    " --ssl-certfile page.pem --ssl-keyfile page-key.pem"
)
def ui(
    api: Annotated[str, typer.Option(help="Base URL of `cnnlab serve`, e.g. http://127.0.0.1:8000.")],
    port: Annotated[int, typer.Option(help="TCP port of the page.")] = 8501,
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 exposes it to the network.")] = "127.0.0.1",
    ssl_certfile: Annotated[
        Path | None, typer.Option("--ssl-certfile", help="TLS certificate (PEM) for the page: serve it over https.")
    ] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option("--ssl-keyfile", help="Its private key (PEM).")] = None,
    api_ca_file: Annotated[
        Path | None,
        typer.Option(
            "--api-ca-file",
            help="CA certificate (PEM) that an https API's private or self-signed certificate is checked against.",
        ),
    ] = None,
    allow_plain_http: Annotated[
        bool,
        typer.Option(
            "--allow-plain-http",
            help="Allow plain http beyond this machine, to the page or the API: keys then cross the network in clear.",
        ),
    ] = False,
) -> None:
    """The clinician's web page: sign in with an API key, upload an X-ray, see the prediction and its
    Grad-CAM, give feedback, work the review queue, watch the monitor (a client of the API only)."""
    require_extra("ui", "cnnlab ui")
    from cnnlab.ui.launch import run_ui

    run_ui(
        api,
        host,
        port,
        warn=lambda line: err.print(line, soft_wrap=True),
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        api_ca_file=api_ca_file,
        allow_plain_http=allow_plain_http,
    )


keys_app = typer.Typer(help=f"API keys for `cnnlab serve`: roles {', '.join(ROLES)}.", no_args_is_help=True)


@keys_app.command("create", epilog="Example:  cnnlab keys create --role clinician --name dr-smith --expires-in 90")
def keys_create(
    role: Annotated[str, typer.Option(metavar="|".join(ROLES), help=f"{one_of(ROLES)}.")],
    name: Annotated[str, typer.Option(help="Who or what holds it.")] = "",
    expires_in: Annotated[
        float | None, typer.Option("--expires-in", help="Refuse the key after this many days (default: never).")
    ] = None,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    db: DbOpt = None,
) -> None:
    """Create a key and print it once: only its hash is stored."""
    _needs_service("cnnlab keys", db)
    from cnnlab.serve.security import create_key, expiry_after, parse_role

    parsed = parse_role(role)
    expires_at = expiry_after(expires_in)
    store = _service_store(state_dir, db, create=True)
    try:
        key_id, key = create_key(store, parsed, name, expires_at)
    finally:
        store.close()
    until = f", valid until {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else ""
    err.print(f"created {parsed.name} key {key_id}{until}; it is shown once, store it now:")
    console.print(key)


@keys_app.command("list", epilog="Example:  cnnlab keys list --state-dir serve-state")
def keys_list(state_dir: StateDirOpt = DEFAULT_STATE_DIR, db: DbOpt = None) -> None:
    """Every key's id, role, name and state (never the key)."""
    _needs_service("cnnlab keys", db)
    store = _service_store(state_dir, db)
    try:
        rows = store.list_keys()
    finally:
        store.close()
    table = Table("key id", "role", "name", "created", "state")
    for row in rows:
        if row.revoked_at:
            state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}"
        elif row.expires_at:
            state = f"{'expired' if row.expired() else 'active, expires'} {row.expires_at:%Y-%m-%d %H:%M}"
        else:
            state = "active"
        table.add_row(row.key_id, row.role, row.name, f"{row.created_at:%Y-%m-%d %H:%M}", state)
    console.print(table)


@keys_app.command("revoke", epilog="Example:  cnnlab keys revoke cnl_1a2b3c4d")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id `cnnlab keys list` shows.")],
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    db: DbOpt = None,
) -> None:
    """Revoke a key: requests with it are refused (401) from now on."""
    _needs_service("cnnlab keys", db)
    store = _service_store(state_dir, db)
    try:
        if not store.revoke_key(key_id):
            raise CnnlabError(f"no active key with id '{key_id}'")
    finally:
        store.close()
    console.print(f"revoked {key_id}")


audit_app = typer.Typer(help="The service's append-only, hash-chained audit log.", no_args_is_help=True)


@audit_app.command("verify", epilog="Example:  cnnlab audit verify --state-dir serve-state")
def audit_verify(state_dir: StateDirOpt = DEFAULT_STATE_DIR, db: DbOpt = None) -> None:
    """Recompute the hash chain; exit 1 naming the first edited row or the row after a deleted one."""
    _needs_service("cnnlab audit", db)
    store = _service_store(state_dir, db)
    try:
        count, problem = store.verify_audit()
    finally:
        store.close()
    if problem is not None:
        err.print(f"[red]audit log tampered:[/red] row {problem.row_id} ({problem.reason}); {count} rows read")
        raise typer.Exit(1)
    console.print(f"audit log intact: {count} rows, hash chain verified")


feedback_app = typer.Typer(help="Clinician feedback collected by `cnnlab serve`.", no_args_is_help=True)


@feedback_app.command(
    "export",
    epilog="Example:  cnnlab feedback export --out data/feedback-1  "
    "(then: cnnlab train xray --extra-data data/feedback-1 --out runs/xray-v2)",
)
def feedback_export(
    out: Annotated[Path, typer.Option("--out", help="A new folder for the class-folder data set.")],
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    db: DbOpt = None,
) -> None:
    """Write the reviewed images as OUT/<label>/*.png plus metadata.csv (the clinician's label, the patient's
    keyed hash, source `feedback`, the prediction and version it corrects, who confirmed it and when),
    ready for `cnnlab train RECIPE --extra-data OUT`."""
    _needs_service("cnnlab feedback", db)
    from cnnlab.serve.export import export_feedback

    store = _service_store(state_dir, db)
    try:
        written, missing = export_feedback(store, state_dir / "images", out)
    finally:
        store.close()
    console.print(f"exported {written} reviewed images to {out}" + (f" ({missing} images missing)" if missing else ""))


@app.command(
    epilog="Examples:  cnnlab purge --older-than 365 --state-dir serve-state  |  "
    "CNNLAB_SERVE_RETENTION_DAYS=90 cnnlab purge --yes"
)
def purge(
    older_than: Annotated[
        float | None,
        typer.Option(
            "--older-than",
            metavar="DAYS",
            envvar="CNNLAB_SERVE_RETENTION_DAYS",
            help="Delete predictions older than this many days (default: the service's retention period, "
            "CNNLAB_SERVE_RETENTION_DAYS).",
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Delete without asking.")] = False,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    db: DbOpt = None,
) -> None:
    """Delete kept images and predictions past the retention period, with their feedback, review items and
    shadow answers; the audit log keeps every row and gains one saying what was purged."""
    _needs_service("cnnlab purge", db)
    from datetime import timedelta

    from cnnlab.serve.store import OPERATOR_METHOD, utcnow

    if older_than is None:
        raise CnnlabError("say how old: --older-than DAYS (or set CNNLAB_SERVE_RETENTION_DAYS)")
    if older_than <= 0:
        raise CnnlabError(f"--older-than must be more than 0 days, not {older_than:g}")
    before = utcnow() - timedelta(days=older_than)
    question = f"delete every prediction and kept image from before {before:%Y-%m-%d %H:%M} UTC?"
    if not yes and not typer.confirm(question):
        raise typer.Exit(1)
    store = _service_store(state_dir, db)
    try:
        purged = store.purge_before(before)
        images = state_dir / "images"
        for name in purged.image_files:
            (images / name).unlink(missing_ok=True)
        store.append_audit(
            request_id=uuid.uuid4().hex, key_id=None, role="operator", method=OPERATOR_METHOD, route="cnnlab purge",
            model_version=None, input_sha256=None, outcome=f"purged {purged.predictions} older than {older_than:g} d",
            status=0,
        )  # fmt: skip
    finally:
        store.close()
    console.print(
        f"purged {purged.predictions} predictions and {len(purged.image_files)} kept images from before "
        f"{before:%Y-%m-%d %H:%M} UTC; the audit log keeps every row"
    )


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another process holds before anything says it is serving there."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle
            probe.bind((host, port))
    except OSError as exc:
        raise CnnlabError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (another process holds it?)"
        ) from None
