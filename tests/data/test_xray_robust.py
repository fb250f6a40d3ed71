"""The `xray-robust` preset: acquisition cues varied, anatomy kept."""

from __future__ import annotations

import torch

from cnnlab.data.augment import _border_bands, build_augment


def test_xray_robust_keeps_shape_and_range_and_varies_each_image() -> None:
    torch.manual_seed(0)
    x = torch.full((16, 1, 64, 64), 128, dtype=torch.uint8)
    x[:, :, 16:48, 16:48] = 220
    out = build_augment("xray-robust", 64)(x)
    assert out.shape == x.shape
    assert float(out.min()) >= 0 and float(out.max()) <= 255
    assert len({round(float(o.mean()), 3) for o in out}) == 16  # every image differently changed


def test_border_bands_black_out_only_the_edges_of_chosen_images() -> None:
    torch.manual_seed(1)
    x = torch.full((4, 1, 50, 50), 200.0)
    out = _border_bands(x, 0.1, torch.tensor([True, True, False, False]))
    assert torch.equal(out[2:], x[2:])  # unchosen: untouched
    assert torch.equal(out[:, :, 5:45, 5:45], x[:, :, 5:45, 5:45])  # the centre is never masked
    assert float(out[:2].sum()) <= float(x[:2].sum())
