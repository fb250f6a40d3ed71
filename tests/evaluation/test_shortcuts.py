"""Shortcut checks on arrays: the linear source probe (grouped by patient) and where heat maps lie."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.errors import DataError
from cnnlab.evaluation.shortcuts import cam_location_stats, probe_folds, region_masks, source_probe

CLASSES = ["normal", "pneumonia", "covid19"]


def confounded(signal: float, patients: int = 60, per_patient: int = 3, seed: int = 0):
    """normal and pneumonia from hospitals a and b (by patient), covid19 from c only; the class
    moves the embedding along one of its 24 dimensions, the source by `signal` along three others."""
    rng = np.random.default_rng(seed)
    labels, sources, groups = [], [], []
    for p in range(patients):
        cls = p % 3
        source = "c" if cls == 2 else ("a" if (p // 3) % 2 else "b")
        for _ in range(per_patient):
            labels.append(cls)
            sources.append(source)
            groups.append(f"P{p:02d}")
    sources_arr = np.array(sources)
    x = rng.normal(size=(len(labels), 24))
    x[np.arange(len(labels)), 3 + np.array(labels)] += 4.0
    x[:, :3] += signal * (sources_arr == "b")[:, None]
    return x, sources_arr, np.array(labels), np.array(groups)


def test_probe_reads_a_linearly_encoded_source_within_each_class() -> None:
    x, sources, labels, groups = confounded(signal=3.0)
    result = source_probe(x, sources, labels, groups, CLASSES, resamples=200)
    assert set(result.within_class) == {"normal", "pneumonia"}
    assert result.single_source == {"covid19": "c"}  # one source: no within-class probe there
    for score in result.within_class.values():
        assert score.balanced_accuracy > 0.9 and score.chance_balanced_accuracy == 0.5
        assert score.counts == {"a": 30, "b": 30} and score.patients == 20
        assert score.interval.low > 0.5
    assert result.overall.balanced_accuracy > 0.9 and result.overall.chance_balanced_accuracy == pytest.approx(1 / 3)
    assert result.overall.chance_accuracy == pytest.approx(max(result.overall.counts.values()) / 180)
    assert result.unit == "patient" and result.features == 24
    json = result.to_json()
    assert json["within_class"]["normal"]["balanced_accuracy"] > 0.9
    assert json["single_source_classes"] == {"covid19": "c"}


def test_probe_without_source_information_is_near_chance() -> None:
    x, sources, labels, groups = confounded(signal=0.0, patients=150)
    result = source_probe(x, sources, labels, groups, CLASSES, resamples=200)
    for score in result.within_class.values():
        assert abs(score.balanced_accuracy - 0.5) < 0.1
        assert score.interval.low < 0.5 < score.interval.high
    # overall, c is still read through the class (covid19 = c): why the within-class figure matters
    assert result.overall.recall["c"] > 0.9 and result.overall.balanced_accuracy > 0.6


def test_folds_never_put_a_patient_in_both_parts() -> None:
    _, sources, _, groups = confounded(signal=1.0)
    pairs = probe_folds(sources, groups, folds=5, seed=0)
    assert len(pairs) == 5
    scored = np.concatenate([score for _, score in pairs])
    assert sorted(scored.tolist()) == list(range(len(sources)))  # each image scored exactly once
    for fit, score in pairs:
        assert not set(groups[fit]) & set(groups[score])
    # fewer patients than folds: fewer folds, still grouped
    few = probe_folds(sources[:9], groups[:9], folds=5)
    assert len(few) == 3 and all(not set(groups[a]) & set(groups[b]) for a, b in few)


def test_probe_leaves_out_unknown_sources_and_needs_two() -> None:
    x, sources, labels, groups = confounded(signal=3.0)
    sources = sources.copy()
    sources[:6] = ""
    result = source_probe(x, sources, labels, groups, CLASSES, resamples=0)
    assert result.unknown_source == 6 and result.overall.images == 174
    with pytest.raises(DataError, match="two or more sources"):
        source_probe(x, np.full(len(x), "a"), labels, groups, CLASSES)
    with pytest.raises(DataError, match="do not match"):
        source_probe(x[:5], sources, labels, groups, CLASSES)


def test_location_stats_on_hand_made_maps() -> None:
    h = w = 40
    band, outside = region_masks((h, w))
    border_only = np.where(band, 1.0, 0.0)[None]
    uniform = np.ones((1, h, w))
    centre = np.zeros((1, h, w))
    centre[0, 18:22, 18:22] = 5.0
    stats = cam_location_stats(np.concatenate([border_only, uniform, centre]))
    assert stats.border_share.tolist() == pytest.approx([1.0, band.mean(), 0.0])
    assert stats.outside_share.tolist() == pytest.approx([1.0, outside.mean(), 0.0])  # the band is outside the box
    assert band.mean() == pytest.approx(1 - 0.8 * 0.8)  # 10% on each side of 40 px: 4 px
    assert outside.mean() == pytest.approx(1 - 0.7 * 0.6)  # the box: rows 15-85%, columns 20-80%
    alone = cam_location_stats(uniform)
    assert alone.border.mean == pytest.approx(alone.border.area)
    assert alone.outside_centre.mean == pytest.approx(alone.outside_centre.area)
    assert cam_location_stats(border_only).border.mean == pytest.approx(1.0)
    json = stats.to_json()
    assert json["border"]["area"] == pytest.approx(0.36) and json["outside_centre"]["box"]["top"] == 0.15
    assert len(json["border"]["interval"]) == 2


def test_location_stats_skip_empty_maps_and_refuse_bad_ones() -> None:
    maps = np.zeros((2, 10, 10))
    maps[1, 0, 0] = 1.0
    stats = cam_location_stats(maps)
    assert stats.empty_maps == 1 and stats.border.mean == 1.0 and np.isnan(stats.border_share[0])
    with pytest.raises(DataError, match="non-negative"):
        cam_location_stats(-maps)
    with pytest.raises(DataError, match=r"\(N, H, W\)"):
        cam_location_stats(np.ones((10, 10)))
    with pytest.raises(DataError, match="border band"):
        cam_location_stats(maps, border=0.6)
