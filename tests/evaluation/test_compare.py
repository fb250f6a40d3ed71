from __future__ import annotations

from pathlib import Path

import pytest

from cnnlab.errors import ModelError
from cnnlab.explain.target import parse_input
from cnnlab.tasks.compare import compare_models, compare_runs, plot_comparison


def test_compare_models_measures_what_the_seeds_compare(tmp_path: Path) -> None:
    rows = {r.name: r for r in compare_models(["lenet5", "alexnet", "vgg16"], (1, 224, 224))}
    lenet, alex, vgg = rows["lenet5"].stats, rows["alexnet"].stats, rows["vgg16"].stats
    assert alex.largest_kernel == "11x11" and vgg.largest_kernel == "3x3" and lenet.largest_kernel == "5x5"
    assert vgg.depth == 16 and alex.depth == 8 and lenet.depth == 5
    assert lenet.parameters < alex.parameters < vgg.parameters
    assert vgg.macs > 10 * alex.macs  # VGG16 ~15.5 GMACs vs AlexNet ~0.7 at 224 px
    assert 14e9 < vgg.macs < 17e9
    plot_comparison(list(rows.values()), tmp_path / "c.png", "t")
    assert (tmp_path / "c.png").stat().st_size > 5000


def test_compare_runs(trained_bundle: Path, tmp_path: Path) -> None:
    (row,) = compare_runs([trained_bundle])
    assert row.name == "lenet5" and row.stats.parameters == 61_706 and row.test_accuracy > 0.8
    assert row.stats.macs == 416_520  # LeNet-5 at 32x32: C1 117,600 + C3 240,000 + C5 48,000 + F6 10,080 + out 840
    plot_comparison([row], tmp_path / "r.png", "t")


def test_input_shapes() -> None:
    assert parse_input("224") == (3, 224, 224)  # one side: a square RGB input
    assert parse_input("224x112") == (1, 224, 112)  # H x W: one channel
    assert parse_input("3x224x224") == (3, 224, 224)
    for bad in ("3x224x224x2", "3x", "axb", "0x224x224"):
        with pytest.raises(ModelError, match="3x224x224"):
            parse_input(bad)
