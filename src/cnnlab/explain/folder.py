"""Explain many images with a bundle: batched CAMs, overlays with the calibrated prediction, and a
faithfulness score that says whether the heat maps mean anything for this model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError, DataError
from cnnlab.explain.cam import CamExplainer, overlay, resolve_cam_layer


@dataclass
class ExplainedImage:
    path: str
    label: str = ""
    probability: float = float("nan")
    """Calibrated probability of the explained class."""
    overlay: str = ""
    error: str = ""


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


def class_index(clf: Any, label: str | None) -> int | None:
    if label is None:
        return None
    if label in clf.classes:
        return clf.classes.index(label)
    from cnnlab.config import did_you_mean

    raise CnnlabError(f"unknown class '{label}'{did_you_mean(label, clf.classes)}; classes: {', '.join(clf.classes)}")


def explainer_for(clf: Any, method: str, layer: str | None = None) -> CamExplainer:
    prep = clf.preprocessing
    shape = (prep.channels, *prep.pad_to)
    chosen = layer or resolve_cam_layer(clf.model, clf.card.get("cam_layer") or None, shape)
    return CamExplainer(clf.model, chosen, method, binary=clf.binary)


def _decode_batch(clf: Any, paths: list[Path]) -> Iterator[tuple[Path, np.ndarray | None, torch.Tensor | None, str]]:
    from cnnlab.data.decode import decode_image
    from cnnlab.data.preprocess import image_to_input

    prep = clf.preprocessing
    for path in paths:
        try:
            image = decode_image(path, prep.channels)
            pixels = image_to_input(image, prep.channels, prep.resize_to, prep.pad_to, prep.crop)
            yield path, image, pixels, ""
        except DataError as exc:
            yield path, None, None, str(exc).removeprefix(f"{path}: ")


def explain_files(
    clf: Any,
    paths: list[Path],
    out_dir: Path,
    method: str = "gradcam",
    label: str | None = None,
    layer: str | None = None,
    batch_size: int = 16,
    advance: Callable[[int], None] | None = None,
    write: bool = True,
) -> Iterator[ExplainedImage]:
    """Overlays for every file, a batch at a time; yields one result per file as it goes, so memory
    does not grow with the folder. Unreadable files get their reason; the others still run."""
    from cnnlab.export.predictor import _heat_on_image

    if not paths:
        raise DataError("no image files to explain")
    target = class_index(clf, label)
    if write:
        out_dir.mkdir(parents=True, exist_ok=True)
    with explainer_for(clf, method, layer) as cam:
        for start in range(0, len(paths), batch_size):
            decoded = list(_decode_batch(clf, paths[start : start + batch_size]))
            good = [(p, im, px) for p, im, px, _ in decoded if px is not None]
            results: dict[Path, ExplainedImage] = {}
            if good:
                x = clf.normalized(torch.stack([px for _, _, px in good]))
                heat, logits = cam.explain(x, None if target is None else [target] * len(good))
                proba = clf.calibrated(logits).numpy()
                for (path, image, _), h, row in zip(good, heat, proba, strict=True):
                    index = int(row.argmax()) if target is None else target
                    item = ExplainedImage(str(path), clf.classes[index], float(row[index]))
                    if write:
                        on_image = _heat_on_image(h, image.shape[:2], clf.preprocessing)
                        name = f"{path.stem}.{method}.{_safe(item.label)}.png"
                        caption = f"{item.label} {item.probability:.2f} ({method})"
                        if not float(h.max()) > 0:
                            caption += " no positive evidence"
                        save_overlay(image, on_image, out_dir / name, caption)
                        item.overlay = str(out_dir / name)
                    results[path] = item
            for path, _, _, error in decoded:
                yield results.get(path) or ExplainedImage(str(path), error=error)
            if advance is not None:
                advance(len(decoded))


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def save_overlay(image: np.ndarray, heat: np.ndarray, path: Path, caption: str) -> None:
    """The heat map over the image, enlarged to at least 224 px, with a caption bar below."""
    from PIL import Image, ImageDraw

    from cnnlab.fileio import atomic_write_bytes

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
    import io

    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def faithfulness(
    clf: Any,
    paths: list[Path],
    method: str = "gradcam",
    layer: str | None = None,
    steps: int = 10,
    batch_size: int = 16,
    seed: int = 0,
    advance: Callable[[int], None] | None = None,
) -> Faithfulness:
    """Deletion/insertion areas of the CAM and of random maps (smooth noise at the CAM layer's
    resolution, upsampled the same way) for the predicted class of every readable image."""

    generator = torch.Generator().manual_seed(seed)
    per_image: list[dict[str, float]] = []
    fractions = torch.linspace(0, 1, steps + 1)

    def curve_area(x: torch.Tensor, ranking: torch.Tensor, index: list[int], insert: bool) -> np.ndarray:
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
                p = clf.calibrated(clf.model(mixed).float())
                scores.append(p[torch.arange(n), index])
        curve = torch.stack(scores, dim=1).numpy()
        return np.trapezoid(curve, dx=1.0 / steps, axis=1)

    with explainer_for(clf, method, layer) as cam:
        for start in range(0, len(paths), batch_size):
            decoded = [d for d in _decode_batch(clf, paths[start : start + batch_size]) if d[2] is not None]
            if advance is not None:
                advance(min(batch_size, len(paths) - start))
            if not decoded:
                continue
            x = clf.normalized(torch.stack([d[2] for d in decoded]))
            heat, logits = cam.explain(x)
            index = [int(i) for i in clf.calibrated(logits).argmax(1)]
            cam_map = torch.from_numpy(heat)
            fh, fw = _layer_resolution(cam, x)
            noise = torch.rand(len(x), 1, fh, fw, generator=generator)
            random_map = F.interpolate(noise, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
            areas = {
                "deletion": curve_area(x, cam_map, index, False),
                "insertion": curve_area(x, cam_map, index, True),
                "random_deletion": curve_area(x, random_map, index, False),
                "random_insertion": curve_area(x, random_map, index, True),
            }
            for i, d in enumerate(decoded):
                per_image.append({"path": str(d[0]), **{k: float(v[i]) for k, v in areas.items()}})  # type: ignore[dict-item]
    if not per_image:
        raise DataError("no readable images to score")

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in per_image]))

    return Faithfulness(
        method=method,
        images=len(per_image),
        deletion=mean("deletion"),
        insertion=mean("insertion"),
        random_deletion=mean("random_deletion"),
        random_insertion=mean("random_insertion"),
        steps=steps,
        per_image=per_image,
    )


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
