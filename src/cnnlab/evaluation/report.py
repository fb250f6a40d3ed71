"""The evaluation report: one document model rendered twice, as `report.md` (figures beside it) and
as a self-contained `report.html` (figures embedded, opens offline, no scripts)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
