"""`cnnlab shortcuts`: does a bundle's network recognise the hospital instead of the disease?

Two checks on data whose metadata.csv says where each image came from (a `source` column):
a linear probe of the source on the frozen penultimate embedding of every image of every split
(within each class of two or more sources, the real shortcut measure), and where Grad-CAM puts
its attribution on one split's images (the border band and outside a central chest box, against
the area they cover), overall and per source. Writes shortcuts.json and shortcuts.png."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from cnnlab.bundle.classifier import Classifier, load
from cnnlab.bundle.data import bundle_data, network_pixels
from cnnlab.choices import SPLITS
from cnnlab.data.sources import ArrayDataset, pooled_per_image
from cnnlab.errors import DataError
from cnnlab.evaluation.by_source import NO_SOURCE
from cnnlab.evaluation.metrics import clean
from cnnlab.evaluation.shortcuts import (
    BORDER,
    CENTRE,
    LocationStats,
    ProbeResult,
    location_shares,
    plot_shortcuts,
    source_probe,
    summarise_locations,
)
from cnnlab.explain.cam import CamExplainer
from cnnlab.fileio import atomic_write_json
from cnnlab.progress import progress

RESULT = "shortcuts.json"
FIGURE = "shortcuts.png"


@dataclass
class ShortcutSummary:
    """What `cnnlab shortcuts` found and wrote."""

    run: Path
    split: str
    probe: ProbeResult
    locations: dict[str, LocationStats]
    """"all", then one entry per source: where the split's Grad-CAM maps lie."""
    cam_layer: str
    cam_grid: tuple[int, int] | None
    """The CAM layer's output (H, W): the resolution the maps have before upsampling."""
    embedded: int
    """Images whose embedding the probe saw (every split)."""
    seconds: float
    json_path: Path
    figure_path: Path
    report: dict[str, Any] = field(default_factory=dict)
    """shortcuts.json as written."""


def embed_all(
    clf: Classifier, data: ArrayDataset, batch_size: int = 64, console: Console | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate embeddings and labels of every split's images, in `pooled`'s (SPLITS) order."""
    total = sum(len(data.splits[name][1]) for name in SPLITS)
    embeddings: list[np.ndarray] = []
    with progress(console, "embedding", total) as advance:
        for name in SPLITS:
            x, _ = data.splits[name]
            for start in range(0, len(x), batch_size):
                _, emb = clf.proba_and_embedding(network_pixels(clf, data, x[start : start + batch_size]))
                embeddings.append(np.asarray(emb, dtype=np.float32))
                advance(len(emb))
    labels = torch.cat([data.splits[name][1] for name in SPLITS]).numpy()
    return np.concatenate(embeddings), labels


@dataclass
class _CamPass:
    """Per image of the split: the two shares, the predicted class; per source: summed maps and images."""

    border: list[np.ndarray] = field(default_factory=list)
    outside: list[np.ndarray] = field(default_factory=list)
    predicted: list[np.ndarray] = field(default_factory=list)
    map_sums: dict[str, np.ndarray] = field(default_factory=dict)
    image_sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    grid: tuple[int, int] | None = None


def cam_pass(
    clf: Classifier,
    data: ArrayDataset,
    split: str,
    sources: np.ndarray,
    batch_size: int = 32,
    console: Console | None = None,
) -> tuple[_CamPass, str]:
    """Grad-CAM for the predicted class of every image of `split`, inside the resized image (the
    padding cut away), a batch at a time: memory does not grow with the split."""
    prep = clf.preprocessing
    (ph, pw), (rh, rw) = prep.pad_to, prep.resize_to
    top, left = (ph - rh) // 2, (pw - rw) // 2
    layer = clf.cam_layer()
    found = _CamPass()

    def grid(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        if found.grid is None and isinstance(output, torch.Tensor) and output.ndim == 4:
            found.grid = (int(output.shape[-2]), int(output.shape[-1]))

    hook = clf.network.get_submodule(layer).register_forward_hook(grid)
    x, _ = data.splits[split]
    try:
        with (
            CamExplainer(clf.network, layer, "gradcam", binary=clf.binary) as cam,
            progress(console, "Grad-CAM", len(x)) as advance,
        ):
            for start in range(0, len(x), batch_size):
                pixels = network_pixels(clf, data, x[start : start + batch_size])
                heat, logits = cam.explain(clf.normalized(pixels))
                heat = heat[:, top : top + rh, left : left + rw]
                grey = pixels[:, :, top : top + rh, left : left + rw].float().mean(dim=1).numpy()
                on_band, off_box = location_shares(heat)
                found.border.append(on_band)
                found.outside.append(off_box)
                found.predicted.append(clf.calibrated(logits).numpy().argmax(axis=1))
                for i, source in enumerate(sources[start : start + batch_size]):
                    key = str(source) or NO_SOURCE
                    found.map_sums[key] = found.map_sums.get(key, 0) + heat[i]
                    found.image_sums[key] = found.image_sums.get(key, 0) + grey[i]
                    found.counts[key] = found.counts.get(key, 0) + 1
                advance(len(pixels))
    finally:
        hook.remove()
    return found, layer


def shortcut_checks(
    run_dir: str | Path,
    data_dir: str | None = None,
    split: str = "test",
    out: str | Path | None = None,
    console: Console | None = None,
    folds: int = 5,
    seed: int = 0,
    batch_size: int = 32,
    *,
    device: str | None = None,
) -> ShortcutSummary:
    """The source probe on every split's embeddings and Grad-CAM location statistics on `split`;
    writes shortcuts.json and shortcuts.png in `out` (default RUN/shortcuts). The network runs on
    `device` (default auto)."""
    run_dir = Path(run_dir)
    clf = load(run_dir, device=device)
    data = bundle_data(run_dir, clf, data_dir)
    if data.sources is None or not any(s.size and (s != "").any() for s in data.sources.values()):
        raise DataError(
            f"no source column in metadata.csv: {data.origin} does not say where each image came from; "
            "add a `source` column (the hospital or scanner of each file) to check for shortcuts"
        )
    if split not in data.splits:
        raise DataError(f"no '{split}' split; choose one of {', '.join(data.splits)}")
    if folds < 2:
        raise DataError(f"the probe needs 2 or more folds, not {folds}")
    out_dir = Path(out) if out else run_dir / "shortcuts"
    start = time.perf_counter()

    embeddings, labels = embed_all(clf, data, batch_size, console)
    pooled_sources = pooled_per_image(data.sources)
    assert pooled_sources is not None
    probe = source_probe(
        embeddings, pooled_sources, labels, pooled_per_image(data.groups), clf.classes, folds=folds, seed=seed
    )

    split_sources = data.sources[split]
    found, layer = cam_pass(clf, data, split, split_sources, batch_size, console)
    border, outside = np.concatenate(found.border), np.concatenate(found.outside)
    shape = clf.preprocessing.resize_to
    locations = {"all": summarise_locations(border, outside, shape)}
    keys = np.array([str(s) or NO_SOURCE for s in split_sources])
    for key in sorted(found.counts):
        rows = keys == key
        locations[key] = summarise_locations(border[rows], outside[rows], shape)

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, figure_path = out_dir / RESULT, out_dir / FIGURE
    mean_maps = {k: found.map_sums[k] / found.counts[k] for k in sorted(found.counts)}
    mean_images = {k: found.image_sums[k] / found.counts[k] for k in sorted(found.counts)}
    title = f"{run_dir.parent.name}/{run_dir.name}: mean Grad-CAM per source on {split}"
    title += " (dotted: border band, dashed: central box)"
    plot_shortcuts(mean_maps, mean_images, {k: locations[k] for k in mean_maps}, probe, figure_path, title)
    report = _report(run_dir, split, data, clf, probe, locations, layer, found, keys, len(embeddings))
    atomic_write_json(json_path, report)
    return ShortcutSummary(
        run_dir, split, probe, locations, layer, found.grid, len(embeddings), time.perf_counter() - start, json_path,
        figure_path, report,
    )  # fmt: skip


def coarse_grid(grid: tuple[int, int] | None, shape: tuple[int, int], border: float = BORDER) -> bool:
    """Whether one cell of the CAM layer's grid is wider than the border band: the band's share is
    then mostly the upsampling's smoothing, not where the network looked."""
    return grid is not None and any(size / cells > border * size for size, cells in zip(shape, grid, strict=True))


def _report(
    run_dir: Path,
    split: str,
    data: ArrayDataset,
    clf: Classifier,
    probe: ProbeResult,
    locations: dict[str, LocationStats],
    layer: str,
    found: _CamPass,
    keys: np.ndarray,
    embedded: int,
) -> dict[str, Any]:
    y = data.splits[split][1].numpy()
    predicted = np.concatenate(found.predicted)
    border, outside = locations["all"].border_share, locations["all"].outside_share
    top, bottom, left, right = CENTRE
    return {
        "run": str(run_dir),
        "data": data.origin,
        "classes": clf.classes,
        "probe": {
            "images": embedded,
            "splits": list(SPLITS),
            "note": "every split's images, the training split included: the question is what the "
            "embedding holds, not how a model generalises",
            **probe.to_json(),
        },
        "cam": {
            "split": split,
            "method": "gradcam",
            "target": "predicted class",
            "layer": layer,
            "grid": list(found.grid) if found.grid else None,
            "coarse": coarse_grid(found.grid, clf.preprocessing.resize_to),
            "regions": {
                "border_band": BORDER,
                "centre_box": {"top": top, "bottom": bottom, "left": left, "right": right},
                "note": "fractions of the image (padding cut away); the central box approximates the lung "
                "fields and mediastinum of a centred chest film, it is not a segmentation",
            },
            "all": locations["all"].to_json(),
            "by_source": {k: v.to_json() for k, v in locations.items() if k != "all"},
            "per_image": [
                clean(
                    {
                        "index": i,
                        "label": clf.classes[int(y[i])],
                        "predicted": clf.classes[int(predicted[i])],
                        "source": str(keys[i]),
                        "border_share": border[i],
                        "outside_centre_share": outside[i],
                    }
                )
                for i in range(len(y))
            ],
        },
        "figure": FIGURE,
    }
