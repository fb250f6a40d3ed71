from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlab.data.augment import PRESETS, build_augment, build_mix
from cnnlab.data.splits import check_no_group_leak, grouped_holdout, kfold
from cnnlab.errors import DataError


def test_grouped_holdout_keeps_patients_whole_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(60), 3)
    labels = np.repeat(rng.integers(0, 3, 60), 3)
    kept, held = grouped_holdout(labels, groups, 0.2, seed=1)
    assert not set(groups[kept]) & set(groups[held])
    assert 0.1 < len(held) / len(labels) < 0.3
    again = grouped_holdout(labels, groups, 0.2, seed=1)
    assert np.array_equal(held, again[1])


@pytest.mark.parametrize("grouped", [True, False])
def test_kfold_partitions_every_sample_once(grouped: bool) -> None:
    labels = np.arange(100) % 4
    groups = np.arange(100) // 5 if grouped else None
    folds = kfold(labels, 5, seed=0, groups=groups)
    tests = np.concatenate([t for _, t in folds])
    assert sorted(tests.tolist()) == list(range(100))
    for train, test in folds:
        assert not set(train) & set(test)
        if grouped:
            assert not set(groups[train]) & set(groups[test])


def test_group_leak_detection() -> None:
    groups = np.array(["a", "b", "c", "a"])
    check_no_group_leak({"train": np.array([0, 1]), "test": np.array([2])}, groups)
    with pytest.raises(DataError, match="'a' appears in both train and test"):
        check_no_group_leak({"train": np.array([0, 1]), "test": np.array([2, 3])}, groups)


@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "none"])
@pytest.mark.parametrize("channels", [1, 3])
def test_presets_keep_shape_and_dtype_and_vary_per_sample(preset: str, channels: int) -> None:
    torch.manual_seed(0)
    augment = build_augment(preset, 32)
    base = torch.randint(0, 256, (channels, 32, 32), dtype=torch.uint8)
    out = augment(base.expand(6, -1, -1, -1).contiguous())
    assert out.shape == (6, channels, 32, 32) and out.dtype in (torch.uint8, torch.float32)
    assert float(out.min()) >= 0 and float(out.max()) <= 255
    assert len({out[i].numpy().tobytes() for i in range(6)}) > 1  # each image its own parameters


def test_none_preset_is_no_work() -> None:
    assert build_augment("none", 32) is None
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        build_augment("wild", 32)


def test_xray_preset_never_flips() -> None:
    torch.manual_seed(0)
    image = torch.zeros(1, 64, 64, dtype=torch.uint8)
    image[:, :, :16] = 255  # a bright band on the left
    out = build_augment("xray", 64)(image.expand(20, -1, -1, -1).contiguous()).float()
    assert (out[:, :, :, :20].mean(dim=(1, 2, 3)) > out[:, :, :, 44:].mean(dim=(1, 2, 3))).all()


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_mixing_gives_probability_targets(mode: str) -> None:
    torch.manual_seed(0)
    mix = build_mix(mode, 1.0, 4)
    x = torch.randn(8, 3, 16, 16)
    y = torch.arange(8) % 4
    mixed, target = mix(x, y)
    assert mixed.shape == x.shape and target.shape == (8, 4)
    assert torch.allclose(target.sum(1), torch.ones(8))
    assert build_mix("none", 1.0, 4) is None
