"""The `cnnlab` command: one module per command group, each parsing options, calling one task and
rendering what it returns. This module assembles them into one Typer app and runs it (`main`)."""

# Command modules import their tasks inside the commands: that keeps `cnnlab --help` fast and free of torch.
from __future__ import annotations

from typing import Annotated

import typer
from click import Context
from typer.core import TyperGroup

from cnnlab import __version__
from cnnlab.cli import data, evaluate, explain, export, gate, predict, recipe, service, shortcuts, train
from cnnlab.cli.common import HELP_OPTION_NAMES, console, run

# `cnnlab --help` lists the commands in the order a user meets them, not module by module.
HELP_ORDER = (
    "demo", "train", "evaluate", "calibrate", "crossval", "compare-models", "compare", "gate", "export", "predict",
    "models", "datasets", "filters", "featuremaps", "explain", "shortcuts", "summary", "calc", "serve", "ui",
    "data", "keys", "audit", "feedback", "recipe",
)  # fmt: skip


class _Commands(TyperGroup):
    def list_commands(self, ctx: Context) -> list[str]:
        rank = {name: i for i, name in enumerate(HELP_ORDER)}
        return sorted(super().list_commands(ctx), key=lambda name: rank.get(name, len(rank)))


app = typer.Typer(
    name="cnnlab",
    cls=_Commands,
    help="A workbench for convolutional neural networks: train, evaluate and compare image classifiers.",
    no_args_is_help=True,
    # -h as well as --help, on every command (subcommands inherit the root's context settings)
    context_settings={"help_option_names": HELP_OPTION_NAMES},
    # --install-completion / --show-completion: tab-completion of commands, options and recipe
    # names, answered by the click tree itself (offline, and without importing torch)
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
for module in (train, evaluate, gate, export, predict, data, explain, shortcuts, service):
    app.add_typer(module.app)
app.add_typer(data.data_app, name="data")
app.add_typer(service.keys_app, name="keys")
app.add_typer(service.audit_app, name="audit")
app.add_typer(service.feedback_app, name="feedback")
app.add_typer(recipe.recipe_app, name="recipe")


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        console.print(f"cnnlab {__version__}")
        raise typer.Exit()


def main() -> None:
    run(app)


__all__ = ["app", "main"]
