"""What every command module shares: the consoles, the option types, the check for a missing
extra, the help's labels, and the one place errors become one line and an exit code. The choices
the help offers come from `cnnlab.choices`."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from cnnlab.errors import CnnlabError

# Epoch lines stay one line in logs; tables get room when output is not a terminal (80 columns).
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False)

HELP_OPTION_NAMES = ["-h", "--help"]
"""Every command answers both (the root's context settings pass them down to each subcommand)."""

OutOpt = Annotated[Path | None, typer.Option("--out", help="Output run directory (default: runs/<name>).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing bundle in --out.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="KEY=VALUE", help="Override any config key, e.g. --set optim.lr=3e-4 (repeatable)."),
]
DataDirOpt = Annotated[str | None, typer.Option("--data-dir", help="Folder holding the data set's files.")]
DeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--device",
        metavar="auto|cpu|cuda|cuda:N",
        help="Where the network runs: auto (default: a CUDA GPU if there is one, else the CPU), cpu, cuda or cuda:N.",
    ),
]


def one_of(choices: Any) -> str:
    """`a, b or c`."""
    names = list(choices)
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else "".join(names)


def choice_metavar(choices: Any) -> str:
    """`a|b|c`: what the help shows in an option's type column, so a user sees what to type."""
    return "|".join(choices)


# ------------------------------------------------------------------ optional dependencies (extras)

EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "serve": (
        "the service's packages",
        ("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "pydantic_settings", "prometheus_client"),
    ),
    "ui": ("the web page's packages", ("streamlit", "requests", "pandas")),
    "postgres": ("PostgreSQL's driver", ("psycopg",)),
}
"""pyproject's extras: what each brings, as a user reads it, and the modules that show it is installed."""


def require_extra(extra: str, command: str) -> None:
    """Refuse `command` in one line naming the pip extra to install when a package of `extra` is missing,
    before anything imports it (the traceback of a failed import names a module, not what to install)."""
    what, modules = EXTRAS[extra]
    # find_spec, not import: `cnnlab ui` hands over to a new process and must not load Streamlit twice.
    # A module set to None in sys.modules (a blocked import) counts as missing, as `import` treats it.
    if any(importlib.util.find_spec(name) is None for name in modules):
        raise CnnlabError(f"{command} needs {what}: pip install 'cnnlab[{extra}]'")


def require_db_driver(db: str | None, command: str) -> None:
    """A PostgreSQL --db needs the postgres extra's driver (psycopg 3); SQLite needs nothing more."""
    scheme = (db or "").partition("://")[0].lower()
    if scheme == "postgresql+psycopg":
        require_extra("postgres", f"{command} --db {scheme}://...")
    elif scheme == "postgresql" and importlib.util.find_spec("psycopg2") is None:
        # SQLAlchemy reads a bare postgresql:// as psycopg2, which no extra installs
        raise CnnlabError(
            f"{command} --db postgresql://... means the psycopg2 driver, which is not installed: "
            "pip install 'cnnlab[postgres]' and write the URL as postgresql+psycopg://..."
        )


# ------------------------------------------------------------------ the help's labels


def tidy_help(command: Any, ctx: Any) -> None:
    """Label what follows each option in the help with what a user types there, for `command` and
    every subcommand. Typer (0.29) labels a flag `<bool>`, as if it took true or false, and a
    repeatable option or argument `<list[str]>`: a flag shows nothing here, a repeatable one the
    type of one value (the help text or the argument's `...` says it repeats). A label set with
    `metavar=` (such as `train|val|test`) is kept."""
    help_option = command.get_help_option(ctx)  # made now with -h/--help, as parsing would make it
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        label = param.display_type(ctx) if hasattr(param, "display_type") else None
        if label is None or (param.metavar is not None and param.param_type_name == "option"):
            continue  # an older Typer labels these well itself; or cnnlab chose the label
        one = re.fullmatch(r"<list\[(.+)\]>", label)
        if param.param_type_name == "option" and getattr(param, "is_flag", False):
            param.metavar = ""
        elif one and param.param_type_name == "option":
            param.metavar = f"<{one[1].lower()}>"
        elif one:  # an argument's metavar is its name, so its type label is replaced instead
            param.display_type_rich = lambda ctx, shown=f"<{one[1].lower()}>": shown
    for name, sub in getattr(command, "commands", {}).items():
        tidy_help(sub, typer.Context(sub, info_name=name, parent=ctx))


def run(app: typer.Typer) -> None:
    """Run the command line; cnnlab's own errors end as one line and exit code 2."""
    # Typer's standalone mode already answers usage errors with exit code 2; what reaches here
    # is cnnlab's own one-line errors and an interrupted run.
    command = typer.main.get_command(app)  # what `app()` runs, built here so its help can be tidied
    tidy_help(command, typer.Context(command, info_name="cnnlab", help_option_names=HELP_OPTION_NAMES))
    try:
        command()
    except CnnlabError as exc:  # escaped: the message is text, and `cnnlab[serve]` is not markup
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)
    except OSError as exc:  # a full disk or a vanished folder mid-run: say so in one line
        err.print(
            f"[red]error:[/red] {escape(str(exc.strerror or exc))}: {escape(str(exc.filename or ''))}", soft_wrap=True
        )
        sys.exit(1)


# Commands over many inputs tell a script by their exit code whether everything was read: a
# pipeline must not carry on as if a folder of corrupt files had been classified. 2 is also
# what bad input (a one-line error) exits with: in both cases nothing usable came out.
NONE_SUCCEEDED = 2
SOME_FAILED = 3
EXIT_CODES = (
    f"Exit codes: 0 every input done, {SOME_FAILED} some inputs unreadable (each listed with its reason), "
    f"{NONE_SUCCEEDED} none readable or bad input."
)


def exit_for(done: int, failed: int, what: str) -> None:
    """Exit with the code for `done` inputs that worked and `failed` that did not (0: return)."""
    if not done:
        err.print(f"[red]error:[/red] none of the {failed} files could be {what}")
        raise typer.Exit(NONE_SUCCEEDED)
    if failed:
        raise typer.Exit(SOME_FAILED)
