"""Image grids show float pixels (augmented batches) on the 0-255 scale, not clipped to white."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cnnlab.figures import plot_image_grid


def test_a_float_colour_image_is_drawn_with_its_colours(tmp_path: Path) -> None:
    brown = np.empty((8, 8, 3), dtype=np.float32)
    brown[...] = (200.4, 100.2, 50.0)  # what an augmentation returns: floats on 0-255
    plot_image_grid([("a", [brown])], tmp_path / "grid.png", "t", cell=3)
    pixels = np.asarray(Image.open(tmp_path / "grid.png").convert("RGB")).reshape(-1, 3).astype(int)
    close = np.abs(pixels - np.array([200, 100, 50])).max(axis=1) <= 2
    assert close.sum() > 1000  # the cell shows the image's colour (clipped to 0-1 it would be yellow-white)
