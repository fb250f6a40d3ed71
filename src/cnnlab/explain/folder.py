"""What explaining a folder of images needs that works on a network and arrays alone: the captioned
overlay file, and the deletion/insertion curves that say whether heat maps mean anything for a model.
Reading a bundle's images and running its classifier over a folder is `cnnlab.tasks.explain`."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from cnnlab.explain.cam import CamExplainer, overlay
from cnnlab.fileio import atomic_write_bytes

Probabilities = Callable[[torch.Tensor], torch.Tensor]
"""Logits (N, K) -> the probabilities a prediction reports (calibrated, when the model is)."""
AREAS = ("deletion", "insertion", "random_deletion", "random_insertion")


@dataclass
class Faithfulness:
    """Deletion and insertion curves (Petsiuk et al. 2018) of the CAM against random maps.

    Deletion: the most salient pixels first replaced by the mean pixel; the faster the class
    probability falls, the lower (better) its area. Insertion: the most salient pixels first put
    back into a blurred image; the faster it rises, the higher (better) its area. `score` is
    insertion - deletion; a map is informative when its score clearly beats the random one."""

    method: str
    images: int
    deletion: float
    insertion: float
    random_deletion: float
    random_insertion: float
    steps: int
    per_image: list[dict[str, float]] = field(default_factory=list)

    @property
    def score(self) -> float:
        return self.insertion - self.deletion

    @property
    def random_score(self) -> float:
        return self.random_insertion - self.random_deletion

    @classmethod
    def from_images(cls, method: str, per_image: list[dict[str, float]], steps: int) -> Faithfulness:
        """The mean areas over images (each a dict with `AREAS` and its path)."""
        means = {key: float(np.mean([r[key] for r in per_image])) for key in AREAS}
        return cls(method=method, images=len(per_image), steps=steps, per_image=per_image, **means)

    def to_json(self) -> dict[str, object]:
        return {**vars(self), "score": self.score, "random_score": self.random_score}


def save_overlay(image: np.ndarray, heat: np.ndarray, path: Path, caption: str) -> None:
    """The heat map over the image, enlarged to at least 224 px, with a caption bar below."""
    picture = Image.fromarray(overlay(image, heat))
    short = min(picture.size)
    if short < 224:
        scale = 224 / short
        picture = picture.resize(
            (round(picture.width * scale), round(picture.height * scale)), Image.Resampling.NEAREST
        )
    canvas = Image.new("RGB", (picture.width, picture.height + 22), (0, 0, 0))
    canvas.paste(picture, (0, 0))
    ImageDraw.Draw(canvas).text((4, picture.height + 5), caption, fill=(255, 255, 255))
    save_png(canvas, path)


def save_png(picture: Image.Image | np.ndarray, path: Path) -> None:
    """A PNG written atomically: an interrupted write leaves the previous file, never half an image."""
    if isinstance(picture, np.ndarray):
        picture = Image.fromarray(picture)
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def faithfulness_areas(
    cam: CamExplainer,
    proba: Probabilities,
    x: torch.Tensor,
    steps: int,
    generator: torch.Generator,
) -> tuple[dict[str, np.ndarray], list[int]]:
    """Deletion/insertion areas (one per image, for each of `AREAS`) of the CAM and of random maps
    (smooth noise at the CAM layer's resolution, upsampled the same way) on normalised inputs `x`,
    for each image's predicted class; and those classes."""
    heat, logits = cam.explain(x)
    index = [int(i) for i in proba(logits).argmax(1)]
    cam_map = torch.from_numpy(heat)
    fh, fw = _layer_resolution(cam, x)
    noise = torch.rand(len(x), 1, fh, fw, generator=generator)
    random_map = F.interpolate(noise, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    fractions = torch.linspace(0, 1, steps + 1)

    def curve_area(ranking: torch.Tensor, insert: bool) -> np.ndarray:
        n, _c, h, w = x.shape
        canvas = _blur(x) if insert else torch.zeros_like(x)  # 0 is the mean pixel after normalisation
        order = ranking.flatten(1).argsort(dim=1, descending=True)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(h * w).expand(n, -1))
        ranks = ranks.view(n, 1, h, w)
        scores = []
        with torch.inference_mode():
            for f in fractions:
                keep = ranks < round(float(f) * h * w)
                mixed = torch.where(keep, x, canvas) if insert else torch.where(keep, canvas, x)
                p = proba(cam.model(mixed).float())
                scores.append(p[torch.arange(n), index])
        curve = torch.stack(scores, dim=1).numpy()
        return np.trapezoid(curve, dx=1.0 / steps, axis=1)

    areas = {
        "deletion": curve_area(cam_map, False),
        "insertion": curve_area(cam_map, True),
        "random_deletion": curve_area(random_map, False),
        "random_insertion": curve_area(random_map, True),
    }
    return areas, index


def _layer_resolution(cam: CamExplainer, x: torch.Tensor) -> tuple[int, int]:
    seen: dict[str, tuple[int, int]] = {}
    hook = cam.module.register_forward_hook(lambda m, i, o: seen.__setitem__("hw", tuple(o.shape[-2:])))
    try:
        with torch.inference_mode():
            cam.model(x[:1])
    finally:
        hook.remove()
    return seen.get("hw", (7, 7))


def _blur(x: torch.Tensor) -> torch.Tensor:
    """A heavy blur (down to 1/16 the side and back) as the insertion canvas."""
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, h // 16), max(1, w // 16)), mode="area")
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
