"""One --quick run of each recipe per test session, shared by every test module that reads it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from cnnlab.recipebook import run_recipe


@pytest.fixture(scope="session")
def quick_answer(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`quick_answer(name, **options)`: the output folder of `cnnlab recipe run NAME --quick` with
    those options, run the first time a test asks for it."""
    root = tmp_path_factory.mktemp("recipes")
    done: dict[str, Path] = {}

    def run(name: str, **options: object) -> Path:
        key = name + json.dumps(options, sort_keys=True)
        if key not in done:
            out = root / re.sub(r"[^A-Za-z0-9_.-]+", "-", key).strip("-")
            run_recipe(name, out, quick=True, **options)
            done[key] = out
        return done[key]

    return run
