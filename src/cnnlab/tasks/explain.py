"""`cnnlab explain`, `filters`, `featuremaps` and `summary`: what a bundle's (or a registry model's)
network looks at, learned and is made of. Heat maps run a batch at a time over a folder, each file
with its own error; every figure and report is written atomically."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from cnnlab.bundle.card import CARD
from cnnlab.bundle.classifier import Classifier, load
from cnnlab.config import did_you_mean
from cnnlab.data.decode import decode_image
from cnnlab.data.preprocess import image_to_input
from cnnlab.errors import CnnlabError, DataError
from cnnlab.explain.activations import feature_maps, plot_feature_maps, stage_layers
from cnnlab.explain.calc import dense_parameters
from cnnlab.explain.cam import CamExplainer, heat_on_image
from cnnlab.explain.filters import FilterGrid, conv_layer, plot_filters
from cnnlab.explain.folder import Faithfulness, faithfulness_areas, save_overlay
from cnnlab.explain.summary import LayerTable, dense_widths, layer_table
from cnnlab.explain.target import Target, input_pixels, model_target, parse_input
from cnnlab.fileio import atomic_write_json
from cnnlab.progress import progress
from cnnlab.tasks.inspect import slug
from cnnlab.tasks.predict import expand_inputs

Advance = Callable[[int], None]


def load_target(name_or_run: str, input_text: str | None = None, *, device: str | None = "cpu") -> Target:
    """A directory with a model card is a trained run; anything else is a registry model name
    (`timm:` included) at random initialisation. `input_text`: an `--input` shape. A run's model
    is loaded on `device` (the CPU by default: filters, feature maps and summaries read its
    tensors there)."""
    path = Path(name_or_run)
    shape = parse_input(input_text) if input_text else None
    if (path / CARD).is_file():
        clf = load(path, device=device)
        prep = clf.preprocessing
        title = f"{path.name} ({clf.card.architecture})"
        return Target(clf.network, title, shape or (prep.channels, *prep.pad_to), False, path, prep)
    if path.exists() and path.is_dir():
        raise CnnlabError(f"{path} is a folder without a model.json: not a run bundle")
    return model_target(name_or_run, shape)


def explain_dir(target: Target) -> Path:
    """Where explain figures go by default: the bundle's explain/, or runs/explain for a bare model."""
    return target.run_dir / "explain" if target.run_dir else Path("runs") / "explain"


# --------------------------------------------------------------------------- heat maps over files


@dataclass
class ExplainedImage:
    path: str
    label: str = ""
    probability: float = float("nan")
    """Calibrated probability of the explained class."""
    overlay: str = ""
    error: str = ""


def class_index(clf: Classifier, label: str | None) -> int | None:
    if label is None:
        return None
    if label in clf.classes:
        return clf.classes.index(label)
    raise CnnlabError(f"unknown class '{label}'{did_you_mean(label, clf.classes)}; classes: {', '.join(clf.classes)}")


def explainer_for(clf: Classifier, method: str, layer: str | None = None) -> CamExplainer:
    return CamExplainer(clf.network, layer or clf.cam_layer(), method, binary=clf.binary)


def _decode_batch(
    clf: Classifier, paths: list[Path]
) -> Iterator[tuple[Path, np.ndarray | None, torch.Tensor | None, str]]:
    prep = clf.preprocessing
    for path in paths:
        try:
            image = decode_image(path, prep.channels)
            pixels = image_to_input(image, prep.channels, prep.resize_to, prep.pad_to, prep.crop)
            yield path, image, pixels, ""
        except DataError as exc:
            yield path, None, None, str(exc).removeprefix(f"{path}: ")


def explain_files(
    clf: Classifier,
    paths: list[Path],
    out_dir: Path,
    method: str = "gradcam",
    label: str | None = None,
    layer: str | None = None,
    batch_size: int = 16,
    advance: Advance | None = None,
    write: bool = True,
) -> Iterator[ExplainedImage]:
    """Overlays for every file, a batch at a time; yields one result per file as it goes, so memory
    does not grow with the folder. Unreadable files get their reason; the others still run."""
    if not paths:
        raise DataError("no image files to explain")
    target = class_index(clf, label)
    with explainer_for(clf, method, layer) as cam:  # a bad method or layer fails before any folder exists
        if write:
            out_dir.mkdir(parents=True, exist_ok=True)
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
                        on_image = heat_on_image(h, image.shape[:2], clf.preprocessing)
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


def faithfulness(
    clf: Classifier,
    paths: list[Path],
    method: str = "gradcam",
    layer: str | None = None,
    steps: int = 10,
    batch_size: int = 16,
    seed: int = 0,
    advance: Advance | None = None,
) -> Faithfulness:
    """Deletion/insertion areas of the CAM and of random maps for the predicted class of every
    readable image (`cnnlab.explain.folder.faithfulness_areas`)."""
    generator = torch.Generator().manual_seed(seed)
    per_image: list[dict[str, float]] = []
    with explainer_for(clf, method, layer) as cam:
        for start in range(0, len(paths), batch_size):
            decoded = [d for d in _decode_batch(clf, paths[start : start + batch_size]) if d[2] is not None]
            if decoded:
                x = clf.normalized(torch.stack([d[2] for d in decoded]))
                areas, _ = faithfulness_areas(cam, clf.calibrated, x, steps, generator)
            if advance is not None:  # after the batch's work, so the rate and the estimate are real
                advance(min(batch_size, len(paths) - start))
            if not decoded:
                continue
            for i, d in enumerate(decoded):
                per_image.append({"path": str(d[0]), **{k: float(v[i]) for k, v in areas.items()}})  # type: ignore[dict-item]
    if not per_image:
        raise DataError("no readable images to score")
    return Faithfulness.from_images(method, per_image, steps)


@dataclass
class ExplainReport:
    """What `cnnlab explain` did: every file's result, in order, and the faithfulness score if asked."""

    method: str
    results: list[ExplainedImage]
    seconds: float
    folder: Path
    faithfulness: Faithfulness | None = None
    faithfulness_file: Path | None = None

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if r.error)


def explain_folder(
    run: Path,
    path: Path,
    method: str = "gradcam",
    label: str | None = None,
    layer: str | None = None,
    batch_size: int = 16,
    score_faithfulness: bool = False,
    out: Path | None = None,
    console: Console | None = None,
    *,
    device: str | None = None,
) -> ExplainReport:
    """Overlays for an image or a folder in `out` (default RUN/explain/METHOD); with
    `score_faithfulness`, the maps scored against random ones, in `out`/faithfulness.json. The
    network runs on `device` (default auto)."""
    clf = load(run, device=device)
    files = expand_inputs([str(path)])
    if not files:
        raise DataError(f"no image files found in {path}")
    folder = out or run / "explain" / method
    start = time.perf_counter()
    with progress(console, f"explaining ({method})", len(files)) as advance:
        results = list(explain_files(clf, files, folder, method, label, layer, batch_size, advance))
    report = ExplainReport(method, results, time.perf_counter() - start, folder)
    if score_faithfulness and report.failed < len(results):  # nothing readable: nothing to score
        with progress(console, "faithfulness", len(files)) as advance:
            report.faithfulness = faithfulness(clf, files, method, layer, batch_size=batch_size, advance=advance)
        report.faithfulness_file = folder / "faithfulness.json"
        atomic_write_json(report.faithfulness_file, report.faithfulness.to_json())
    return report


# --------------------------------------------------------------------------- what the network is made of


@dataclass
class FiltersFigure:
    grid: FilterGrid
    path: Path
    untrained: bool


def filters(target_name: str, layer: str | None = None, out: Path | None = None) -> FiltersFigure:
    """A grid of a conv layer's kernels (default: the first), in `out` or the target's explain folder."""
    t = load_target(target_name)
    name = conv_layer(t.model, layer)[0]
    path = out or explain_dir(t) / f"filters-{slug(target_name)}-{name}.png"
    grid = plot_filters(t.model, path, name, title=t.title, untrained=t.untrained)
    return FiltersFigure(grid, path, t.untrained)


@dataclass
class FeatureMapsFigure:
    shapes: dict[str, tuple[int, ...]]
    """Layer -> the shape of its output for the image (C, H, W)."""
    path: Path


def featuremaps(
    target_name: str, image: Path, layers: list[str] | None = None, all_stages: bool = False, out: Path | None = None
) -> FeatureMapsFigure:
    """The activations of `layers` (default: the first conv layer; `all_stages`: every stage's output)
    for one image, as grids beside the input."""
    t = load_target(target_name)
    pixels, normalised = input_pixels(t, image)
    names = stage_layers(t.model, t.input_shape) if all_stages else (layers or [conv_layer(t.model, None)[0]])
    maps = feature_maps(t.model, names, normalised)
    path = out or explain_dir(t) / f"featuremaps-{image.stem}.png"
    plot_feature_maps(pixels, maps, path, f"{t.title}: {image.name}" + (" (untrained)" if t.untrained else ""))
    return FeatureMapsFigure({name: tuple(fmap.shape) for name, fmap in maps.items()}, path)


@dataclass
class ModelSummary:
    title: str
    input_shape: tuple[int, int, int]
    table: LayerTable
    dense_widths: list[int] = field(default_factory=list)
    """With `compare_dense`: the widths of a fully connected network with the same layer sizes."""
    dense_parameters: int | None = None


def summary(target_name: str, input_text: str | None = None, compare_dense: bool = False) -> ModelSummary:
    """Every layer's geometry, parameters, multiply-adds and receptive field at the given input."""
    t = load_target(target_name, input_text)
    result = ModelSummary(t.title, t.input_shape, layer_table(t.model, t.input_shape))
    if compare_dense:
        result.dense_widths = dense_widths(result.table)
        result.dense_parameters = dense_parameters(result.dense_widths)
    return result
