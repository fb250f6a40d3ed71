"""The evaluation report: one document model rendered twice, as `report.md` (figures beside it) and
as a self-contained `report.html` (figures embedded, opens offline, no scripts)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cnnlab import bundle
from cnnlab.fileio import atomic_write_text


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    path: Path
    caption: str


@dataclass
class Section:
    title: str
    blocks: list[str | Table | Figure] = field(default_factory=list)
    """A str is a paragraph (plain text, no markup)."""


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def with_interval(value: Any, interval: list[Any] | None) -> str:
    if interval is None or interval[0] is None or value is None or (isinstance(value, float) and np.isnan(value)):
        return fmt(value)
    return f"{fmt(value)} [{fmt(interval[0], 3)}, {fmt(interval[1], 3)}]"


def write_markdown(title: str, sections: list[Section], path: Path) -> None:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, str):
                lines += [block, ""]
            elif isinstance(block, Table):
                lines.append("| " + " | ".join(block.header) + " |")
                lines.append("|" + "---|" * len(block.header))
                lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in block.rows]
                lines.append("")
            else:
                rel = block.path.relative_to(path.parent) if block.path.is_relative_to(path.parent) else block.path
                lines += [f"![{block.caption}]({rel.as_posix()})", "", f"*{block.caption}*", ""]
    atomic_write_text(path, "\n".join(lines))


_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 1.5em; color: #1c1c1c; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f5f8; }
figure { margin: 0.8em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
nav a { margin-right: 0.9em; font-size: 0.9em; }
"""


def write_html(title: str, sections: list[Section], path: Path) -> None:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<nav>" + "".join(f'<a href="#s{i}">{html.escape(s.title)}</a>' for i, s in enumerate(sections)) + "</nav>",
    ]
    for i, section in enumerate(sections):
        parts.append(f'<section id="s{i}"><h2>{html.escape(section.title)}</h2>')
        for block in section.blocks:
            if isinstance(block, str):
                parts.append(f"<p>{html.escape(block)}</p>")
            elif isinstance(block, Table):
                head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
                body = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in block.rows
                )
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            else:
                data = base64.b64encode(block.path.read_bytes()).decode("ascii")
                parts.append(
                    f'<figure><img alt="{html.escape(block.caption)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
                )
        parts.append("</section>")
    parts.append("</body></html>")
    atomic_write_text(path, "\n".join(parts))


def config_table(config: dict[str, Any]) -> Table:
    """The resolved config, one row per set key (stages summarised)."""
    rows = []
    for section in ("data", "model", "optim", "train"):
        for key, value in (config.get(section) or {}).items():
            if value is None or value == [] or key == "stages":
                continue
            rows.append([f"{section}.{key}", str(value)])
    for stage in (config.get("train") or {}).get("stages") or []:
        rows.append([f"stage {stage.get('name')}", ", ".join(f"{k}={v}" for k, v in stage.items() if k != "name")])
    return Table(["key", "value"], rows)


def data_table(data: dict[str, Any]) -> Table:
    rows = [["source", str(data.get("source"))], ["read from", str(data.get("origin"))]]
    rows += [[f"{name} images", f"{n:,}"] for name, n in (data.get("splits") or {}).items()]
    rows += [[f"{name} patients", f"{n:,}"] for name, n in (data.get("groups_per_split") or {}).items()]
    if "bad_files" in data:
        rows.append(["unreadable files excluded", str(len(data["bad_files"]))])
    if "cross_split_duplicates" in data:
        rows.append(["identical images across splits", str(data["cross_split_duplicates"])])
    rows.append(["data sha256", str(data.get("sha256", ""))[:16] + "..."])
    return Table(["", ""], rows)


def training_table(training: dict[str, Any]) -> Table:
    rows = [
        [stage["name"], str(stage["epochs"]), f"{stage['train_seconds']:.1f} s", f"{stage['best_val_acc']:.4f}"]
        for stage in training.get("stages", [])
    ]
    rows.append(["all", str(training.get("epochs_run")), f"{training.get('train_seconds', 0):.1f} s", ""])
    return Table(["stage", "epochs", "training time", "best validation accuracy"], rows)


def evaluation_sections(
    card: dict[str, Any], metrics: dict[str, Any], run_dir: Path, out_dir: Path, errors: int
) -> list[Section]:
    split, classes = metrics["split"], card["classes"]
    ci = metrics["intervals"] or {}
    per_ci = ci.get("per_class") or {}
    unit = f"{ci.get('resamples')} bootstrap resamples of {ci.get('unit')}s" if ci else "no bootstrap"
    fit = card["training"].get("fit") or {}
    sections = []

    config_path = run_dir / bundle.CONFIG
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    sections.append(
        Section(
            "Run",
            [
                f"{card['architecture']}, {card['parameters']:,} parameters, weights {card.get('weights')}, input "
                f"{card['in_chans']}x{card['input_size'][0]}x{card['input_size'][1]}; created {card.get('created_at')} "
                f"with cnnlab {card.get('cnnlab_version')} and torch {card.get('torch_version')}.",
                config_table(config),
            ],
        )
    )
    data_blocks: list[Any] = [data_table(card["data"])]
    if not metrics["data_sha256_matches_card"]:
        data_blocks.insert(0, "Warning: the data evaluated here differs from what the model card recorded.")
    sections.append(Section("Data", data_blocks))
    training_blocks: list[Any] = [training_table(card["training"])]
    if fit:
        training_blocks.append(f"Fit: {fit.get('verdict')}: {fit.get('reason')}. Suggestion: {fit.get('suggestion')}.")
    if (run_dir / bundle.CURVES).is_file():
        training_blocks.append(Figure(run_dir / bundle.CURVES, "training and validation curves, with the fit verdict"))
    sections.append(Section("Training", training_blocks))

    summary_rows = [
        ["images", f"{metrics['images']:,}"],
        ["accuracy", with_interval(metrics["accuracy"], ci.get("accuracy"))],
        ["balanced accuracy", fmt(metrics["balanced_accuracy"])],
        ["macro ROC AUC", with_interval(metrics["averages"]["macro"]["roc_auc"], ci.get("macro_roc_auc"))],
        ["macro F1", fmt(metrics["averages"]["macro"]["f1"])],
        ["macro PR AUC", fmt(metrics["averages"]["macro"]["pr_auc"])],
        ["log loss", fmt(metrics["log_loss"])],
        ["Brier score", fmt(metrics["brier"])],
    ]
    sections.append(
        Section(
            f"Results on {split}",
            [
                f"95% intervals from {unit}; n/a marks a value that is undefined on this split.",
                Table(["metric", "value [95% CI]"], summary_rows),
            ],
        )
    )
    header = ["class", "support", "precision (PPV)", "sensitivity (recall)", "specificity", "F1", "NPV"]
    rows = []
    for cls in classes:
        m, c = metrics["per_class"][cls], per_ci.get(cls, {})
        rows.append(
            [
                cls,
                str(m["support"]),
                fmt(m["precision"]),
                with_interval(m["recall"], c.get("recall")),
                with_interval(m["specificity"], c.get("specificity")),
                fmt(m["f1"]),
                fmt(m["npv"]),
            ]
        )
    for avg in ("macro", "weighted"):
        a = metrics["averages"][avg]
        rows.append(
            [
                f"{avg} average",
                "",
                fmt(a["precision"]),
                fmt(a["recall"]),
                fmt(a["specificity"]),
                fmt(a["f1"]),
                fmt(a["npv"]),
            ]
        )
    auc_rows = [
        [
            cls,
            with_interval(metrics["per_class"][cls]["roc_auc"], per_ci.get(cls, {}).get("roc_auc")),
            fmt(metrics["per_class"][cls]["pr_auc"]),
        ]
        for cls in classes
    ]
    sections.append(
        Section(
            "Per class (one class vs the rest)",
            [
                Table(header, rows),
                Table(["class", "ROC AUC [95% CI]", "PR AUC"], auc_rows),
                Figure(out_dir / "confusion_matrix.png", "confusion matrix: counts and row-normalised"),
                Figure(out_dir / "roc_pr.png", "ROC and precision-recall curves, one class vs the rest"),
            ],
        )
    )

    cal = metrics["calibration"]
    cal_rows = [
        [key, fmt(cal["raw"][key]), fmt(cal.get("calibrated", {}).get(key))]
        for key in ("ece", "mce", "nll", "brier", "accuracy")
    ]
    stored = card.get("calibration") or {}
    how = (
        f"Calibrated by {stored.get('method', 'temperature')} scaling on the validation split"
        + (f" (T = {card['temperature']:.3f})" if card.get("temperature") else "")
        + "; every prediction applies it."
        if "calibrated" in cal
        else "Not calibrated: the probabilities are the network's own. `cnnlab calibrate RUN` fits temperature "
        "scaling on the validation split."
    )
    sections.append(
        Section(
            "Calibration",
            [
                how,
                Table(["on " + split, "raw", "calibrated"], cal_rows),
                Figure(out_dir / "reliability.png", "reliability diagram: accuracy per confidence bin"),
            ],
        )
    )

    op = metrics.get("operating_point")
    if op:
        point, rates, cis = op["point"], op[split], op[f"{split}_intervals"]
        target = f" (target sensitivity {point['target_sensitivity']})" if point.get("target_sensitivity") else ""
        blocks: list[Any] = [
            f"Positive: {', '.join(point['positive'])}. Threshold {point['value']:.4f} on the summed probability, "
            f"chosen on the validation split by {point.get('method')}{target}.",
            Table(
                ["", "validation", f"{split} [95% CI]"],
                [
                    [key, fmt((point.get("val") or {}).get(key)), with_interval(rates[key], cis.get(key))]
                    for key in ("sensitivity", "specificity", "ppv", "npv")
                ],
            ),
        ]
    else:
        blocks = [
            "No operating point is set: predictions take the most probable class. `cnnlab calibrate RUN --positive "
            "CLASS --target-sensitivity 0.95` chooses one on the validation split."
        ]
    sections.append(Section("Operating point", blocks))
    sections.append(
        Section(
            "Most confidently wrong",
            [
                f"{errors} of {metrics['images']:,} {split} images are misclassified; most confident first.",
                Figure(
                    out_dir / "confident_errors.png", "most confidently wrong images (true / predicted, confidence)"
                ),
            ],
        )
    )
    return sections
