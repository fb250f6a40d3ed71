"""Shortcut checks: could a network tell the hospital instead of the disease, and where does it look?

`source_probe` asks whether the source (the hospital, the scanner) is linearly readable from a
frozen embedding: a logistic regression on standardised embeddings, cross-validated with folds
grouped by patient. Overall, source is confounded with class wherever one source holds a class
alone (covid19 only from one hospital), so the telling figure is the probe *within* each class
that comes from two or more sources: among normal images only, a probe far above chance means
acquisition cues (a scanner, a population, a preprocessing chain) are in the embedding.

`cam_location_stats` asks where the attribution of heat maps lies: the share of each map's mass
in the outer border band (labels, markers, collimation edges) and outside a central chest box,
next to the share of the image those regions cover (what a uniform map would give). The box is a
fixed rectangle in relative coordinates, an approximation of the lung fields and mediastinum of a
centred PA/AP film, not a segmentation.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.errors import DataError
from cnnlab.evaluation.metrics import Interval, clean, percentile_interval, resample_weights
from cnnlab.figures import save_figure

BORDER = 0.1
"""The border band: this share of the height (top and bottom) and width (left and right)."""
CENTRE = (0.15, 0.85, 0.2, 0.8)
"""The central chest box as (top, bottom, left, right) fractions of the height and width: about
where the lung fields and the mediastinum of a centred chest film lie (not a segmentation)."""
RESAMPLES = 1000

# --------------------------------------------------------------------------- the source probe


def probe_folds(
    sources: np.ndarray, groups: np.ndarray | None, folds: int = 5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, score) index pairs: stratified by source, and every patient (group) wholly in one part
    of each pair. At most `folds`, fewer when there are fewer patients."""
    from sklearn.model_selection import StratifiedGroupKFold

    units = np.asarray(groups).astype(str) if groups is not None else np.arange(len(sources)).astype(str)
    k = min(folds, len(np.unique(units)))
    if k < 2:
        raise DataError(f"a source probe needs two or more patients/images, not {k}")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a source with fewer patients than folds is fine here
        warnings.simplefilter("ignore", UserWarning)
        pairs = [(np.sort(a), np.sort(b)) for a, b in splitter.split(np.zeros(len(sources)), sources, units)]
    return [(a, b) for a, b in pairs if len(b)]


@dataclass
class ProbeScore:
    """The cross-validated probe on one set of images (all, or one class)."""

    images: int
    patients: int
    folds: int
    counts: dict[str, int]
    """Images per source."""
    balanced_accuracy: float
    accuracy: float
    chance_balanced_accuracy: float
    """1 / number of sources: what a constant guess scores."""
    chance_accuracy: float
    """The majority source's share: what always guessing it scores."""
    interval: Interval
    """Percentile bootstrap interval of the balanced accuracy, resampling patients."""
    recall: dict[str, float] = field(default_factory=dict)
    """Per source: the share of its images the probe called right."""

    def to_json(self) -> dict[str, Any]:
        return clean({
            "images": self.images, "patients": self.patients, "folds": self.folds, "sources": self.counts,
            "balanced_accuracy": self.balanced_accuracy, "balanced_accuracy_interval": self.interval,
            "chance_balanced_accuracy": self.chance_balanced_accuracy, "accuracy": self.accuracy,
            "chance_accuracy": self.chance_accuracy, "recall": self.recall,
        })  # fmt: skip


@dataclass
class ProbeResult:
    overall: ProbeScore
    within_class: dict[str, ProbeScore]
    """Per class with two or more sources: the probe among that class's images only."""
    single_source: dict[str, str]
    """Classes from one source only (no within-class probe): class -> its source."""
    features: int
    unit: str
    """What a fold keeps together and the bootstrap resamples: patient or image."""
    unknown_source: int = 0
    """Images without a source, left out."""

    def to_json(self) -> dict[str, Any]:
        return {
            "method": "logistic regression on standardised embeddings (balanced class weights), "
            f"cross-validated with folds by {self.unit}",
            "features": self.features,
            "unit": self.unit,
            "unknown_source": self.unknown_source,
            "overall": self.overall.to_json(),
            "within_class": {name: score.to_json() for name, score in self.within_class.items()},
            "single_source_classes": self.single_source,
        }


def _probe_predictions(
    x: np.ndarray, y: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]], seed: int
) -> np.ndarray:
    """Out-of-fold predicted source codes."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    predicted = np.full(len(y), -1, dtype=np.int64)
    for fit, score in pairs:
        seen = np.unique(y[fit])
        if len(seen) < 2:  # the fitting part holds one source only: that is all it can say
            predicted[score] = seen[0]
            continue
        probe = make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            probe.fit(x[fit], y[fit])
        predicted[score] = probe.predict(x[score])
    return predicted


def _balanced(y: np.ndarray, predicted: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) balanced accuracy under each row of `weights` (B, n); sources not drawn are skipped."""
    k = int(y.max()) + 1
    member = np.eye(k)[y]  # (n, K)
    hit = member * (predicted == y)[:, None]
    total, right = weights @ member, weights @ hit
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = right / total
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(recall, axis=1)


def _score(
    x: np.ndarray, names: np.ndarray, groups: np.ndarray | None, folds: int, seed: int, resamples: int
) -> ProbeScore:
    sources, y = np.unique(names, return_inverse=True)
    pairs = probe_folds(y, groups, folds, seed)
    predicted = _probe_predictions(x, y, pairs, seed)
    counts = np.bincount(y, minlength=len(sources))
    ones = np.ones((1, len(y)))
    weights = resample_weights(len(y), groups, resamples, seed) if resamples else np.zeros((0, len(y)))
    return ProbeScore(
        images=len(y),
        patients=len(np.unique(groups)) if groups is not None else len(y),
        folds=len(pairs),
        counts={str(s): int(c) for s, c in zip(sources, counts, strict=True)},
        balanced_accuracy=float(_balanced(y, predicted, ones)[0]),
        accuracy=float(np.mean(predicted == y)),
        chance_balanced_accuracy=1.0 / len(sources),
        chance_accuracy=float(counts.max() / len(y)),
        interval=percentile_interval(_balanced(y, predicted, weights)) if resamples else Interval(np.nan, np.nan),
        recall={str(s): float(np.mean(predicted[y == i] == i)) for i, s in enumerate(sources)},
    )


def source_probe(
    embeddings: np.ndarray,
    sources: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    classes: list[str] | None = None,
    folds: int = 5,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> ProbeResult:
    """How well a linear probe reads the source from `embeddings` (N, D): overall, and within each
    class of two or more sources. `sources`: per image ("" where unknown, left out); `labels`: class
    indices (names from `classes`); `groups`: patient ids, never split between fit and score."""
    x = np.asarray(embeddings, dtype=np.float64)
    names = np.asarray(sources).astype(str)
    labels = np.asarray(labels)
    if x.ndim != 2 or not len(x) == len(names) == len(labels) or (groups is not None and len(groups) != len(x)):
        raise DataError(f"embeddings {x.shape}, {len(names)} sources and {len(labels)} labels do not match")
    known = names != ""
    if len(np.unique(names[known])) < 2:
        raise DataError(f"a source probe needs two or more sources, not {sorted(set(names[known].tolist()))}")
    x, names, labels = x[known], names[known], labels[known]
    grouped = np.asarray(groups).astype(str)[known] if groups is not None else None
    overall = _score(x, names, grouped, folds, seed, resamples)
    within: dict[str, ProbeScore] = {}
    single: dict[str, str] = {}
    for c in np.unique(labels):
        name = classes[int(c)] if classes is not None else str(c)
        rows = labels == c
        present = np.unique(names[rows])
        units = grouped[rows] if grouped is not None else None
        if len(present) < 2:
            single[name] = str(present[0])
        elif len(np.unique(units if units is not None else np.flatnonzero(rows))) >= 2:
            within[name] = _score(x[rows], names[rows], units, folds, seed, resamples)
    return ProbeResult(
        overall, within, single, x.shape[1], "patient" if groups is not None else "image", int((~known).sum())
    )


# --------------------------------------------------------------------------- where the heat maps lie


def region_masks(
    shape: tuple[int, int], border: float = BORDER, centre: tuple[float, float, float, float] = CENTRE
) -> tuple[np.ndarray, np.ndarray]:
    """(border band, outside the central box) boolean (H, W) masks, in whole pixels."""
    top, bottom, left, right = centre
    if not 0 < border < 0.5:
        raise DataError(f"the border band must be a fraction in (0, 0.5), not {border}")
    if not (0 <= top < bottom <= 1 and 0 <= left < right <= 1):
        raise DataError(f"the central box (top, bottom, left, right) must be fractions in order, not {centre}")
    h, w = shape
    bh, bw = max(1, round(border * h)), max(1, round(border * w))
    band = np.ones((h, w), dtype=bool)
    band[bh : h - bh, bw : w - bw] = False
    outside = np.ones((h, w), dtype=bool)
    outside[round(top * h) : round(bottom * h), round(left * w) : round(right * w)] = False
    return band, outside


def location_shares(
    heatmaps: np.ndarray, border: float = BORDER, centre: tuple[float, float, float, float] = CENTRE
) -> tuple[np.ndarray, np.ndarray]:
    """Per map of (N, H, W) non-negative `heatmaps`: the share of its mass in the border band and
    outside the central box (NaN for a map with no mass)."""
    maps = np.asarray(heatmaps, dtype=np.float64)
    if maps.ndim != 3 or maps.shape[1] < 2 or maps.shape[2] < 2:
        raise DataError(f"heat maps must be an (N, H, W) array, not shape {maps.shape}")
    if not np.isfinite(maps).all() or (maps < 0).any():
        raise DataError("heat maps must be finite and non-negative")
    band, outside = region_masks(maps.shape[1:], border, centre)
    total = maps.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        on_band = np.where(total > 0, (maps * band).sum(axis=(1, 2)) / total, np.nan)
        off_box = np.where(total > 0, (maps * outside).sum(axis=(1, 2)) / total, np.nan)
    return on_band, off_box


@dataclass
class RegionShare:
    area: float
    """The share of the image the region covers: what a uniform map puts there."""
    mean: float
    median: float
    interval: Interval
    """The central 95% of the per-image shares (a spread over images, not a confidence interval)."""

    def to_json(self) -> dict[str, Any]:
        ratio = self.mean / self.area if self.area else float("nan")
        return clean({"area": self.area, "mean": self.mean, "median": self.median, "interval": self.interval,
                      "ratio_to_area": ratio})  # fmt: skip


@dataclass
class LocationStats:
    images: int
    empty_maps: int
    """Maps with no mass (no positive evidence), left out of the shares."""
    border: RegionShare
    outside_centre: RegionShare
    border_share: np.ndarray
    """Per image (NaN for an empty map)."""
    outside_share: np.ndarray
    band: float = BORDER
    centre: tuple[float, float, float, float] = CENTRE

    def to_json(self) -> dict[str, Any]:
        top, bottom, left, right = self.centre
        return {
            "images": self.images,
            "empty_maps": self.empty_maps,
            "border": {"band": self.band, **self.border.to_json()},
            "outside_centre": {"box": {"top": top, "bottom": bottom, "left": left, "right": right},
                               **self.outside_centre.to_json()},
        }  # fmt: skip


def summarise_locations(
    border_share: np.ndarray,
    outside_share: np.ndarray,
    shape: tuple[int, int],
    border: float = BORDER,
    centre: tuple[float, float, float, float] = CENTRE,
    level: float = 0.95,
) -> LocationStats:
    """`location_shares`' per-image values of maps of `shape` (H, W), summarised."""
    band, outside = region_masks(shape, border, centre)

    def region(values: np.ndarray, mask: np.ndarray) -> RegionShare:
        finite = values[np.isfinite(values)]
        mean, median = (float(np.mean(finite)), float(np.median(finite))) if len(finite) else (np.nan, np.nan)
        return RegionShare(float(mask.mean()), mean, median, percentile_interval(finite, level))

    return LocationStats(
        images=len(border_share),
        empty_maps=int((~np.isfinite(border_share)).sum()),
        border=region(np.asarray(border_share), band),
        outside_centre=region(np.asarray(outside_share), outside),
        border_share=np.asarray(border_share),
        outside_share=np.asarray(outside_share),
        band=border,
        centre=centre,
    )


def cam_location_stats(
    heatmaps: np.ndarray,
    border: float = BORDER,
    centre: tuple[float, float, float, float] = CENTRE,
    level: float = 0.95,
) -> LocationStats:
    """For (N, H, W) non-negative maps: the share of attribution mass in the outer `border` band and
    outside the `centre` box (top, bottom, left, right fractions), per image and as a mean with the
    central `level` of the images, beside the share of the image each region covers."""
    on_band, off_box = location_shares(heatmaps, border, centre)
    return summarise_locations(on_band, off_box, np.asarray(heatmaps).shape[1:], border, centre, level)


# --------------------------------------------------------------------------- the figure


def plot_shortcuts(
    mean_maps: dict[str, np.ndarray],
    mean_images: dict[str, np.ndarray],
    stats: dict[str, LocationStats],
    probe: ProbeResult,
    path: Path,
    title: str,
) -> None:
    """Per source, its mean heat map over its mean image with the border band and the central box
    drawn; beside them, the probe's balanced accuracy and accuracy against chance."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = len(mean_maps)
    fig, axes = plt.subplots(1, n + 1, figsize=(3.1 * n + 4.6, 3.7), squeeze=False,
                             gridspec_kw={"width_ratios": [1] * n + [1.6]})  # fmt: skip
    for ax, (source, heat) in zip(axes[0], mean_maps.items(), strict=False):
        h, w = heat.shape
        ax.imshow(mean_images[source], cmap="gray", extent=(0, w, h, 0))
        ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=max(float(heat.max()), 1e-9), extent=(0, w, h, 0))
        s = stats[source]
        top, bottom, left, right = s.centre
        bh, bw = max(1, round(s.band * h)), max(1, round(s.band * w))
        ax.add_patch(Rectangle((bw, bh), w - 2 * bw, h - 2 * bh, fill=False, ec="white", ls=":", lw=1.2))
        y0, y1, x0, x1 = round(top * h), round(bottom * h), round(left * w), round(right * w)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="white", ls="--", lw=1.2))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(
            f"{source or '(no source)'} (n={s.images})\nborder {_pct(s.border.mean)} of mass ({_pct(s.border.area)} "
            f"of area)\noutside box {_pct(s.outside_centre.mean)} ({_pct(s.outside_centre.area)} of area)",
            fontsize=8,
        )
    ax = axes[0][n]
    rows = [("all images", probe.overall), *((f"within {c}", p) for c, p in probe.within_class.items())]
    at = np.arange(len(rows))
    bal = np.array([p.balanced_accuracy for _, p in rows])
    lo = np.array([p.interval.low for _, p in rows])
    hi = np.array([p.interval.high for _, p in rows])
    err = np.nan_to_num(np.stack([bal - lo, hi - bal]), nan=0.0).clip(0)
    ax.bar(at - 0.2, bal, 0.38, yerr=err, capsize=3, color="tab:red", label="balanced accuracy")
    ax.bar(at + 0.2, [p.accuracy for _, p in rows], 0.38, color="tab:orange", label="accuracy")
    for i, (_, p) in enumerate(rows):
        ax.hlines(p.chance_balanced_accuracy, i - 0.39, i - 0.01, colors="black", lw=2,
                  label="chance (1/sources; majority share)" if i == 0 else None)  # fmt: skip
        ax.hlines(p.chance_accuracy, i + 0.01, i + 0.39, colors="black", lw=2)
    ax.set_xticks(at, [name for name, _ in rows], fontsize=8)
    ax.set_ylim(0, 1.3)
    ax.set_ylabel("source predicted from the embedding")
    ax.set_title(f"linear source probe ({probe.overall.folds} folds by {probe.unit})", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def _pct(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.0%}"
