"""The X-ray answer's checks against shortcuts: which hospital each class comes from, leave one
source out, the source probe and where Grad-CAM looks; each read from its own measurements."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from cnnlab.config import Config
from cnnlab.data.cache import scan_folder_cached
from cnnlab.data.sources import locate
from cnnlab.evaluation.by_source import NO_SOURCE
from cnnlab.evaluation.report import Figure, Table, fmt, with_interval
from cnnlab.recipebook.core import Context, pct
from cnnlab.tasks.by_source import leave_one_source_out
from cnnlab.tasks.shortcuts import shortcut_checks


def source_counts(ctx: Context) -> dict[str, dict[str, int]]:
    """Images per source and class, from metadata.csv (source -> class -> count)."""
    root, _ = locate("chest-xray", ctx.data_dir)
    assert root is not None  # the data section just read it
    counts = Counter((e.source or NO_SOURCE, e.label) for e in scan_folder_cached(root).ok)  # verified once
    out: dict[str, dict[str, int]] = {}
    for (source, label), n in sorted(counts.items()):
        out.setdefault(source, {})[label] = n
    return out


def source_table(counts: dict[str, dict[str, int]], classes: list[str]) -> Table:
    rows = [[source, *(str(per.get(c, 0)) for c in classes), str(sum(per.values()))] for source, per in counts.items()]
    return Table(["source", *classes, "all"], rows)


def alone_classes(counts: dict[str, dict[str, int]]) -> list[str]:
    """Classes whose only source holds no other class: the ones a held-out hospital can be mistaken for."""
    return [cls for cls, source in single_source_classes(counts).items() if len(counts[source]) == 1]


def single_source_classes(counts: dict[str, dict[str, int]]) -> dict[str, str]:
    """Classes that come from one source only: class -> that source."""
    holders: dict[str, list[str]] = {}
    for source, per in counts.items():
        for cls in per:
            holders.setdefault(cls, []).append(source)
    return {cls: sources[0] for cls, sources in holders.items() if len(sources) == 1}


def leave_one_source_out_section(ctx: Context, cfg: Config) -> tuple[list[Any], dict[str, Any]]:
    ctx.step("leave one source out")
    loso = leave_one_source_out(cfg, ctx.out / "by-source", overwrite=True, console=ctx.console)
    rows = []
    for r in loso.rows:
        per_class = ", ".join(
            f"{c} {fmt(r.get(f'roc_auc {c}'), 3)}" for c in loso.classes if r.get(f"roc_auc {c}") is not None
        )
        rows.append([r["source"], r["trained_on"], str(r["images"]), fmt(r["accuracy"]), fmt(r["macro_roc_auc"]),
                     per_class, fmt(r["val_macro_roc_auc"])])  # fmt: skip
    blocks: list[Any] = [
        "Each source in turn is held out whole: the model trains on the other sources (validation carved out of "
        "them by patient) and is scored on every image of the held-out one. Within-source ROC AUCs rank that "
        "source's images against each other, so no hospital difference can help them; the last column is the "
        "same model on validation images from the sources it trained on.",
        Table(
            [
                "held out",
                "trained on",
                "images",
                "accuracy",
                "within-source macro AUC",
                "AUC per class",
                "in-distribution macro AUC",
            ],
            rows,
        ),
    ]
    blocks += [f"Not held out: {s['source']} ({s['images']} images): {s['reason']}." for s in loso.skipped]
    results = {"rows": loso.rows, "skipped": loso.skipped}
    return blocks, results


def probe_and_cam_section(ctx: Context, run_dir: Path) -> tuple[list[Any], dict[str, Any]]:
    ctx.step("source probe and Grad-CAM location statistics")
    found = shortcut_checks(run_dir, split="test", out=ctx.out / "shortcuts", console=ctx.console)
    probe = found.probe
    scores = [("all images", probe.overall), *((f"within {c}", s) for c, s in probe.within_class.items())]
    probe_rows = [
        [what, str(s.images), ", ".join(f"{k} {v}" for k, v in s.counts.items()),
         with_interval(s.balanced_accuracy, s.interval.to_list()), fmt(s.chance_balanced_accuracy)]
        for what, s in scores
    ]  # fmt: skip
    loc_rows = []
    for name, stats in found.locations.items():
        loc_rows.append([name, str(stats.images), pct(stats.border.mean), pct(stats.border.area),
                         pct(stats.outside_centre.mean), pct(stats.outside_centre.area)])  # fmt: skip
    grid = "x".join(str(n) for n in found.cam_grid) if found.cam_grid else "n/a"
    blocks: list[Any] = [
        f"**Source probe.** A logistic regression on the trained network's {probe.features}-number embedding, "
        f"cross-validated by {probe.unit}, predicts the source of each image (balanced accuracy, 95% interval "
        "by resampling patients). Within a class that comes from two sources, a high figure means acquisition "
        "cues (age group, scanner, compression) are readable from what the network computes.",
        Table(["images", "n", "per source", "balanced accuracy [95% CI]", "chance"], probe_rows),
        f"**Where Grad-CAM looks** on the {found.locations['all'].images} test images: the share of attribution "
        f"on the border band (the outer {found.locations['all'].band:.0%} on each side, where labels, markers and "
        "collimation edges sit) and outside a central box that roughly holds the lungs, beside the share of the "
        "image each region covers (what a map with no preference would put there). The CAM layer's grid is "
        f"{grid}, so these are coarse.",
        Table(["images of", "n", "on the border band", "band's area", "outside the centre", "area outside"], loc_rows),
        Figure(found.figure_path, "mean Grad-CAM per source (border band and central box drawn) and the probe"),
    ]
    results = {
        "probe": {what: {"balanced_accuracy": s.balanced_accuracy, "chance": s.chance_balanced_accuracy,
                         "interval": s.interval.to_list()} for what, s in scores},
        "cam": {name: {"border": stats.border.mean, "border_area": stats.border.area,
                       "outside_centre": stats.outside_centre.mean, "outside_area": stats.outside_centre.area}
                for name, stats in found.locations.items()},
    }  # fmt: skip
    return blocks, results


def shortcut_reading(results: dict[str, Any], counts: dict[str, dict[str, int]], test_auc: dict[str, Any]) -> str:
    """What the checks say together, with their numbers (`test_auc`: class -> one-vs-rest test AUC)."""
    parts = []
    for cls, source in single_source_classes(counts).items():
        alone = len(counts[source]) == 1
        parts.append(
            f"Every {cls} image comes from {source} ({counts[source][cls]} images)"
            + (f", and {source} holds nothing else: on test, '{cls} vs the rest' is also '{source} vs the other "
               f"hospitals', so its AUC ({fmt(test_auc.get(cls))}) measures both at once and says nothing about "
               f"{cls} from another hospital. Separating them needs {cls} images from a second source; leaving "
               f"{source} out is impossible (the model would never see {cls})." if alone else ".")
        )  # fmt: skip
    rows = results.get("loso", {}).get("rows", [])
    if rows:
        held = "; ".join(
            f"held-out {r['source']}: within-source macro AUC {fmt(r['macro_roc_auc'], 3)} against "
            f"{fmt(r['val_macro_roc_auc'], 3)} in distribution, and "
            + ", ".join(
                f"{pct(r[f'predicted {c}'])} called {c}" for c in alone_classes(counts) if f"predicted {c}" in r
            )
            for r in rows
        )
        parts.append(
            f"Leaving a whole hospital out shows how much of the in-distribution figure is the hospital: {held}. "
            "The data's README says why a drop is expected here: kermany's patients are children, nih's adults, "
            "and every covid19 image is an adult's; a class learnt on one age group and one hospital is a "
            "hospital-and-age detector as much as a disease detector."
        )
    probe = results.get("shortcuts", {}).get("probe", {})
    within = {k: v for k, v in probe.items() if k.startswith("within")}
    if within:
        parts.append(
            "The probe reads the source from the embedding "
            + ", ".join(
                f"{k} at {fmt(v['balanced_accuracy'], 2)} (chance {fmt(v['chance'], 2)})" for k, v in within.items()
            )
            + ": the cues are there for the network to use, which is why the held-out-source figures above, not "
            "the test split's, are the ones to quote for another hospital."
        )
    return " ".join(parts)
