"""The Keras peers of bench/train_vs_peers.py are the seeds' own code: every line not marked
`# changed` is a line of the seed, and the scripts are valid Python (TensorFlow not needed)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT.parent / "shared" / "seeds"
PEERS = {
    "keras_lenet5.py": "000_64128870b7b1bb67.txt",
    "keras_simple_cnn.py": "002_7e2d348d67883881.txt",
}


@pytest.mark.parametrize("script", sorted(PEERS))
def test_peer_keeps_the_seed_code(script: str) -> None:
    source = (ROOT / "bench" / "peers" / script).read_text()
    ast.parse(source)
    seed_file = SEEDS / PEERS[script]
    assert seed_file.is_file(), f"{seed_file} is missing: ../shared/seeds must be beside the checkout"
    seed_lines = {line.strip() for line in seed_file.read_text().splitlines()}
    body = source.split("EPOCHS = harness.setup(", 1)[1].splitlines()[1:]
    kept = [line.strip() for line in body if line.strip() and "# changed" not in line]
    assert len(kept) > 15
    assert [line for line in kept if line not in seed_lines] == []
