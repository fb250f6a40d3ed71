from __future__ import annotations

import pytest
import torch

from cnnlab.data.loader import TensorBatches
from cnnlab.data.preprocess import channel_stats, fit_to_input, normalize, plan_resize, stats_tensors


def test_lenet_pads_digits_instead_of_interpolating() -> None:
    assert plan_resize((28, 28), 32, "auto") == ((28, 28), (32, 32))
    assert plan_resize((28, 28), 32, "resize") == ((32, 32), (32, 32))
    assert plan_resize((32, 32), 150, "auto") == ((150, 150), (150, 150))
    assert plan_resize((200, 180), 64, "auto") == ((64, 64), (64, 64))
    with pytest.raises(ValueError, match="cannot pad"):
        plan_resize((40, 40), 32, "pad")


def test_fit_to_input_pads_centred_and_keeps_pixels() -> None:
    x = torch.randint(1, 256, (2, 1, 28, 28), dtype=torch.uint8)
    y = fit_to_input(x, (28, 28), (32, 32))
    assert y.shape == (2, 1, 32, 32) and y.dtype == torch.uint8
    assert torch.equal(y[:, :, 2:30, 2:30], x)
    assert y[:, :, :2].sum() == 0 and y[:, :, :, 30:].sum() == 0


def test_fit_to_input_resizes() -> None:
    x = torch.full((1, 3, 40, 60), 200, dtype=torch.uint8)
    y = fit_to_input(x, (20, 30), (20, 30))
    assert y.shape == (1, 3, 20, 30) and (y == 200).all()


def test_normalize_standardises_with_the_card_statistics() -> None:
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    mean, std = channel_stats(x)
    m, s = stats_tensors(mean, std)
    z = normalize(x, m, s)
    assert z.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (z.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3
    assert normalize(x, m, s, channels_last=True).is_contiguous(memory_format=torch.channels_last)


def test_batches_cover_every_sample_once_in_a_seeded_order() -> None:
    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    y = torch.arange(10)
    m, s = stats_tensors((0.0,), (1 / 255,))
    batches = TensorBatches(x, y, 3, m, s, shuffle=True, seed=1)
    assert len(batches) == 4
    batches.set_epoch(0)
    first = torch.cat([b[1] for b in batches])
    assert sorted(first.tolist()) == list(range(10))
    assert torch.equal(first, torch.cat([b[1] for b in batches]))  # same epoch, same order
    batches.set_epoch(1)
    assert not torch.equal(first, torch.cat([b[1] for b in batches]))
    xb, yb = next(iter(TensorBatches(x, y, 4, m, s)))
    assert torch.equal(xb.view(-1), yb.float())  # pixels follow their labels
