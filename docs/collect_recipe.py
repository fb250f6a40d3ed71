"""Copy a recipe's answer into docs/: its README as docs/recipes/NAME.md and the figures it shows
(only those: a run folder also holds weights, which do not belong in the repository).

    cnnlab recipe run lenet5-mnist --out runs/recipes/lenet5-mnist
    python docs/collect_recipe.py runs/recipes/lenet5-mnist
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

from PIL import Image

DOCS = Path(__file__).resolve().parent / "recipes"
MAX_SIDE = 1600
"""Figures wider than this are scaled down: the docs show them, they do not archive them."""


def collect(out: Path) -> Path:
    results = json.loads((out / "results.json").read_text())
    name = results["recipe"]
    target = DOCS / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    text = (out / "README.md").read_text()

    def figure(match: re.Match[str]) -> str:
        source = out / match.group(2)
        flat = match.group(2).replace("/", "-")
        image = Image.open(source)
        if max(image.size) > MAX_SIDE:
            image.thumbnail((MAX_SIDE, MAX_SIDE))
        image.convert("RGB").save(target / flat, optimize=True)  # lossless: a palette distorted photos and filters
        return f"![{match.group(1)}]({name}/{flat})"

    page = DOCS / f"{name}.md"
    page.write_text(re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", figure, text))
    shutil.copyfile(out / "results.json", target / "results.json")
    return page


def write_index() -> Path:
    """docs/recipes/README.md: one line per collected answer, from its results.json."""
    lines = [
        "# The recipes' answers",
        "",
        "Each page is the README.md that `cnnlab recipe run NAME` wrote on a 2-core CPU (no GPU), with its",
        "figures; `results.json` beside each holds the measurements. Regenerate one with",
        "`cnnlab recipe run NAME --out runs/recipes/NAME && python docs/collect_recipe.py runs/recipes/NAME`.",
        "",
        "| recipe | question | data | run | time | answer |",
        "|---|---|---|---|---|---|",
    ]
    from cnnlab.recipebook import REGISTRY  # the recipes' own record of their question and data

    for results_file in sorted(DOCS.glob("*/results.json")):
        r = json.loads(results_file.read_text())
        kind = "quick (see the page)" if r["quick"] else "full"
        name = r["recipe"]
        recipe = REGISTRY[name]
        lines.append(
            f"| [{name}]({name}.md) | {recipe.seed} | {recipe.data or '-'} | {kind} | {r['seconds']:.0f} s "
            f"| {r['summary']} |"
        )
    index = DOCS / "README.md"
    index.write_text("\n".join(lines) + "\n")
    return index


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        print(collect(Path(folder)))
    print(write_index())
