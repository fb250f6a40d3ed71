"""The house rules of docs/ARCHITECTURE.md, checked on the source: no import cycles (module-level
and in-function imports alike), no module over 500 lines, and cnnlab's own modules imported
inside functions only by the CLI (which keeps `cnnlab --help` free of torch). The layer contract
itself is import-linter's (`lint-imports`, run by `make test`)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "cnnlab"
MAX_LINES = 500
# Only the CLI defers cnnlab imports: its commands load torch when they run, not for `--help`.
LAZY_ALLOWED = ("cnnlab.cli",)


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported cnnlab module, line, inside a function) for every import that runs."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def resolve(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # never runs
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in child.names]
            else:
                visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))
                continue
            for target in targets:
                module = resolve(target) if target.startswith("cnnlab") else None
                if module and module != name:
                    found.append((module, child.lineno, in_function))

    visit(ast.parse(path.read_text()), False)
    return found


def test_no_module_is_over_500_lines() -> None:
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these by concern: {long}"


def test_the_import_graph_has_no_cycle() -> None:
    modules = _modules()
    graph = {name: {m for m, _, _ in _imports(name, path, modules)} for name, path in modules.items()}
    # A package's __init__ re-exporting its children is not a cycle with them.
    graph = {a: {b for b in deps if not a.startswith(b + ".")} for a, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := walk(start)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))


def test_cnnlab_modules_are_imported_inside_functions_only_by_the_cli() -> None:
    modules = _modules()
    lazy = [
        f"{name}:{line} imports {module}"
        for name, path in modules.items()
        if not name.startswith(LAZY_ALLOWED)
        for module, line, in_function in _imports(name, path, modules)
        if in_function
    ]
    assert not lazy, "import at module level (nothing cycles now):\n" + "\n".join(lazy)
