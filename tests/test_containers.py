"""The container files (Dockerfile, compose.yaml) are honest without a container engine: every
command and flag they run exists in the CLI, secrets come from the environment, state lives in
volumes, and the image's entry commands, run directly on loopback beside a real PostgreSQL,
serve and answer (no container engine runs on this machine or in CI)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
import yaml

from cnnlab.cli import app
from tests.serve.conftest import free_port
from tests.serve.test_postgres import postgres_url  # noqa: F401  (the PostgreSQL fixture)

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
DB_ENV = "CNNLAB_SERVE_DB_URL"


def _instruction(name: str) -> str:
    """The last `NAME ...` instruction of the Dockerfile, continuation lines joined."""
    text = DOCKERFILE.replace("\\\n", " ")
    found = re.findall(rf"^{name}\s+(.+)$", text, flags=re.MULTILINE)
    assert found, f"the Dockerfile has no {name}"
    return found[-1]


def _exec_form(name: str) -> list[str]:
    return json.loads(_instruction(name))


def _resolve(args: list[str]) -> tuple[Any, list[str]]:
    """The command `cnnlab ARGS` runs (Typer's own click objects), and the arguments left for it."""
    command = typer.main.get_command(app)
    rest = list(args)
    while hasattr(command, "commands") and rest and rest[0] in command.commands:
        command = command.commands[rest.pop(0)]
    return command, rest


def _entry_commands() -> dict[str, list[str]]:
    """Every cnnlab command line the image and the compose file run (the entry point is `cnnlab`)."""
    assert _exec_form("ENTRYPOINT") == ["cnnlab"]
    commands = {"Dockerfile CMD": _exec_form("CMD")}
    for name, service in COMPOSE["services"].items():
        if "command" in service:
            commands[f"compose {name}"] = service["command"]
    return commands


def test_every_command_and_flag_the_containers_run_exists() -> None:
    commands = _entry_commands()
    assert {"compose api", "compose ui"} <= set(commands)
    for where, args in commands.items():
        command, rest = _resolve(args)
        assert not hasattr(command, "commands"), f"{where}: `cnnlab {shlex.join(args)}` names no command"
        options = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        flags = [a.split("=", 1)[0] for a in rest if a.startswith("--")]
        unknown = [f for f in flags if f not in options]
        assert not unknown, f"{where}: `cnnlab {command.name}` has no {unknown} (see --help)"


def test_the_database_url_comes_from_the_environment_the_cli_reads() -> None:
    serve, _ = _resolve(["serve"])
    db = next(p for p in serve.params if "--db" in p.opts)
    assert db.envvar == DB_ENV
    api = COMPOSE["services"]["api"]
    assert "--db" not in api["command"], "a URL with a password on the command line shows in `ps`"
    assert "${CNNLAB_DB_PASSWORD" in api["environment"][DB_ENV]
    assert COMPOSE["services"]["db"]["environment"]["POSTGRES_PASSWORD"].startswith("${CNNLAB_DB_PASSWORD:?")


def test_the_api_s_environment_names_settings_and_keeps_secrets_out_of_the_file() -> None:
    """Every CNNLAB_SERVE_* variable compose sets is a setting the service reads; the patient-id key
    comes from the host's environment, never from the file."""
    from cnnlab.serve.settings import ServeSettings

    environment = COMPOSE["services"]["api"]["environment"]
    fields = {f"CNNLAB_SERVE_{name.upper()}" for name in ServeSettings.model_fields}
    assert set(environment) <= fields
    assert environment["CNNLAB_SERVE_PATIENT_ID_KEY"].startswith("${CNNLAB_PATIENT_ID_KEY:?")
    gate = environment["CNNLAB_SERVE_GATE_DATA"]
    assert any(v.endswith(f":{gate}:ro") for v in COMPOSE["services"]["api"]["volumes"])


def test_non_root_health_checked_state_in_volumes_and_only_the_page_published() -> None:
    user = _instruction("USER").strip()
    assert user not in ("root", "0")
    assert "/state" in _instruction("VOLUME") and "/readyz" in _instruction("HEALTHCHECK")
    services = COMPOSE["services"]
    assert {"db", "api", "ui"} <= set(services)
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no health check"
    assert "state:/state" in services["api"]["volumes"] and "state" in COMPOSE["volumes"]
    assert any(v.endswith(":/models:ro") for v in services["api"]["volumes"])
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published == ["127.0.0.1:8501:8501"], "only the page, and on the host's loopback"
    assert services["api"]["depends_on"]["db"]["condition"] == "service_healthy"


def _on_loopback(args: list[str], replace: dict[str, str]) -> list[str]:
    return [sys.executable, "-m", "cnnlab.cli", *(replace.get(a, a) for a in args)]


def _wait(url: str, process: subprocess.Popen, seconds: float = 120) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, process.stderr.read() if process.stderr else "exited"
        assert time.monotonic() < deadline, f"{url} did not answer"
        try:
            answer = httpx.get(url, timeout=2)
            if answer.status_code == 200:
                return answer
        except httpx.TransportError:
            pass
        time.sleep(0.5)


@pytest.mark.slow
def test_the_images_entry_commands_serve_on_loopback_with_postgres(
    postgres_url: str,  # noqa: F811  (the fixture imported above)
    trained_bundle: Path,
    tmp_path: Path,
) -> None:
    """compose's API and page commands, with the container's paths and 0.0.0.0 swapped for a bundle,
    a temporary state folder and 127.0.0.1, and the database URL from the environment as compose
    passes it."""
    api_port, ui_port = free_port(), free_port()
    gate = tmp_path / "gate"  # the container's /gate, swapped like its other paths
    gate.mkdir()
    env = {
        **os.environ,
        DB_ENV: postgres_url,
        "CNNLAB_SERVE_PATIENT_ID_KEY": "k" * 32,
        "CNNLAB_SERVE_GATE_DATA": str(gate),
    }
    api_args = COMPOSE["services"]["api"]["command"]
    replace = {"/models": str(trained_bundle), "/state": str(tmp_path / "state"), "0.0.0.0": "127.0.0.1",
               "8000": str(api_port)}  # fmt: skip
    admin = subprocess.run(
        _on_loopback(["keys", "create", "--role", "admin", "--state-dir", "/state"], replace),
        env=env, capture_output=True, text=True, timeout=120, check=True,
    ).stdout.strip()  # fmt: skip
    ui_args = COMPOSE["services"]["ui"]["command"]
    ui_replace = {"http://api:8000": f"http://127.0.0.1:{api_port}", "0.0.0.0": "127.0.0.1", "8501": str(ui_port)}
    processes = []
    try:
        api = subprocess.Popen(_on_loopback(api_args, replace), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
        processes.append(api)
        ready = _wait(f"http://127.0.0.1:{api_port}/readyz", api).json()
        assert ready["status"] == "ready" and ready["device"] == "cpu"
        me = httpx.get(f"http://127.0.0.1:{api_port}/v1/me", headers={"X-API-Key": admin}, timeout=10)
        assert me.status_code == 200 and me.json()["role"] == "admin"  # the key lives in PostgreSQL
        page = subprocess.Popen(_on_loopback(ui_args, ui_replace), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        processes.append(page)
        assert _wait(f"http://127.0.0.1:{ui_port}/_stcore/health", page).text.strip() == "ok"
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
