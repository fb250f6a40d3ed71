"""What every command module shares: the consoles, the option types, and the one place errors
become one line and an exit code. The choices the help offers come from `cnnlab.choices`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from cnnlab.errors import CnnlabError

# Epoch lines stay one line in logs; tables get room when output is not a terminal (80 columns).
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False)

OutOpt = Annotated[Path | None, typer.Option("--out", help="Output run directory (default: runs/<name>).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing bundle in --out.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override any config key, e.g. --set optim.lr=3e-4 (repeatable)."),
]
DataDirOpt = Annotated[str | None, typer.Option("--data-dir", help="Folder holding the data set's files.")]


def one_of(choices: Any) -> str:
    """`a, b or c`."""
    names = list(choices)
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else "".join(names)


def run(app: typer.Typer) -> None:
    """Run the command line; cnnlab's own errors end as one line and exit code 2."""
    # Typer's standalone mode already answers usage errors with exit code 2; what reaches here
    # is cnnlab's own one-line errors and an interrupted run.
    try:
        app()
    except CnnlabError as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        sys.exit(2)
    except OSError as exc:  # a full disk or a vanished folder mid-run: say so in one line
        err.print(f"[red]error:[/red] {exc.strerror or exc}: {exc.filename or ''}", soft_wrap=True)
        sys.exit(1)
