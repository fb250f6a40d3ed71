"""`cnnlab recipe`: every exercise of the course documents as one command, answered from its run."""

# The recipe book is imported inside the commands: that keeps `cnnlab --help` fast and free of torch.
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cnnlab.cli.common import DataDirOpt, OverwriteOpt, console

recipe_app = typer.Typer(
    help="Every exercise of the course documents as one command, answered in a README from the run. "
    "These are exercise recipes; the training recipes that configure one run are `cnnlab train NAME` "
    "(listed by `cnnlab train --list`).",
    no_args_is_help=True,
)


@recipe_app.command("list", epilog="Example:  cnnlab recipe list")
def recipe_list() -> None:
    """The exercise recipes, the exercise each answers, and the data it reads."""
    from cnnlab.recipebook.core import in_document_order

    table = Table("recipe", "exercise", "answers", "data", title="exercise recipes: cnnlab recipe run NAME")
    for r in in_document_order():
        table.add_row(r.name, r.seed, r.title, r.data or "none (measures models)")
    console.print(table)
    console.print("run one: cnnlab recipe run NAME [--quick]; the answer is OUT/README.md")
    console.print("training recipes, one run each (cnnlab train NAME), are another kind: cnnlab train --list")


@recipe_app.command(
    "run",
    epilog="Examples:  cnnlab recipe run lenet5-mnist  |  cnnlab recipe run xray-triage --folds 5"
    "  |  cnnlab recipe run alexnet-filters --quick --out runs/q8",
)
def recipe_run(
    name: Annotated[str, typer.Argument(help="An exercise recipe from `cnnlab recipe list`.")],
    quick: Annotated[
        bool, typer.Option("--quick", help="Fewer epochs and images: about a minute on 2 cores, for a smoke test.")
    ] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: runs/recipes/NAME).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the training runs.")] = 0,
    folds: Annotated[int, typer.Option("--folds", help="xray-triage: also k-fold cross-validation by patient.")] = 0,
    data_dir: DataDirOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Run an exercise end to end and write OUT/README.md answering it with this run's numbers and figures."""
    import time

    from cnnlab.recipebook import read_results, run_recipe

    target = out or Path("runs") / "recipes" / name
    started = time.perf_counter()
    readme = run_recipe(
        name, target, quick=quick, seed=seed, data_dir=data_dir, folds=folds, overwrite=overwrite, console=console
    )
    console.print(f"\n{read_results(target)['summary']}")
    console.print(f"answered in {time.perf_counter() - started:.1f} s: {readme} (and README.html beside it)")
