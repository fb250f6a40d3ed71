"""The committed answers in docs/recipes: each from a full run, with lossless figures that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

from PIL import Image

from cnnlab.recipebook import REGISTRY

DOCS = Path(__file__).resolve().parents[2] / "docs" / "recipes"


def test_every_committed_answer_comes_from_a_full_run_of_a_known_recipe() -> None:
    results = sorted(DOCS.glob("*/results.json"))
    assert results
    for path in results:
        r = json.loads(path.read_text())
        assert r["recipe"] in REGISTRY and path.parent.name == r["recipe"]
        assert r["quick"] is False, f"{path.parent.name}'s page came from --quick: run it in full"


def test_every_figure_a_page_shows_is_a_lossless_png_beside_it() -> None:
    for page in sorted(DOCS.glob("*.md")):
        for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text()):
            figure = DOCS / link
            assert figure.is_file(), f"{page.name} shows {link}, which is missing"
            with Image.open(figure) as image:
                assert image.format == "PNG" and image.mode in ("RGB", "RGBA", "L"), (
                    f"{link}: {image.format} {image.mode} (a palette reduces photos and filters to 256 colours)"
                )
