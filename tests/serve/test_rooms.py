"""The service's layout rules (DESIGN.md section 2): a route imports no other route, and only
serve/deps.py reads the app's state, so every route's signature says what it uses."""

from __future__ import annotations

import ast
from pathlib import Path

import cnnlab.serve

SERVE = Path(cnnlab.serve.__file__).parent
ROUTES = sorted(p for p in (SERVE / "routes").glob("*.py") if p.name != "__init__.py")


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_routes_import_no_other_route() -> None:
    assert len(ROUTES) >= 7
    for path in ROUTES:
        others = {m for m in imported_modules(path) if m.startswith("cnnlab.serve.routes")}
        assert not others, f"{path.name} imports {others}: move what they share to deps, schemas or triage"


def test_only_deps_reads_the_app_state() -> None:
    modules = SERVE.rglob("*.py")
    readers = sorted(p.relative_to(SERVE).as_posix() for p in modules if "request.app.state" in p.read_text())
    assert readers == ["deps.py"]


def test_the_roles_the_cli_offers_are_the_services_roles() -> None:
    from cnnlab.choices import ROLES
    from cnnlab.serve.security import ROLE_NAMES

    assert ROLE_NAMES == ROLES  # same names, least to most allowed
