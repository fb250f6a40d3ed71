"""Class folders -> a Manifest: every file accounted for, nothing silently replaced.

Layouts: `ROOT/CLASS/...` or `ROOT/{train,val,test}/CLASS/...`, plus an optional
`ROOT/metadata.csv` (columns `file`, and any of `label`, `split`, `patient_id`/`group`, `source`, more)
that overrides folder labels and splits and supplies patient groups.

Junk (`.DS_Store`, `._*`, `Thumbs.db`, hidden folders, `.ipynb_checkpoints`, `__MACOSX`) and
non-image documents (`.txt`, `.csv`, ...) are ignored and listed. Folder symlinks are not
followed (no loops); file symlinks that leave the root are refused. Every remaining file is
decoded once: unreadable or disallowed files are excluded with the reason, and the scan fails
when more than `max_bad_fraction` of the files are bad or a class is left empty.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

from cnnlab.data.decode import decode_bytes, read_image_file
from cnnlab.errors import DataError

SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
JUNK_FILES = {".ds_store", "thumbs.db", "desktop.ini"}
JUNK_DIRS = {"__macosx", ".ipynb_checkpoints"}
DOCUMENT_SUFFIXES = {".txt", ".md", ".csv", ".json", ".yaml", ".yml", ".xml", ".py", ".ipynb", ".zip", ".pdf"}
GROUP_COLUMNS = ("patient_id", "group")
SOURCE_COLUMN = "source"
MANIFEST_VERSION = 1


@dataclass
class Entry:
    path: str
    """Relative to the root, POSIX separators."""
    label: str
    split: str | None = None
    group: str | None = None
    source: str | None = None
    """Where the image came from (metadata.csv's `source`: a hospital, a scanner), for per-source
    metrics and leave-one-source-out; None when the folder does not say."""
    sha256: str = ""
    format: str = ""
    width: int = 0
    height: int = 0
    mode: str = ""
    channels: int = 0
    status: str = "ok"
    """`ok`, or `bad`: excluded, with the reason."""
    reason: str = ""


@dataclass
class Manifest:
    root: Path
    classes: list[str]
    entries: list[Entry]
    ignored: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> list[Entry]:
        return [e for e in self.entries if e.status == "ok"]

    @property
    def bad(self) -> list[Entry]:
        return [e for e in self.entries if e.status != "ok"]

    @property
    def has_groups(self) -> bool:
        return any(e.group for e in self.entries)

    @property
    def has_sources(self) -> bool:
        return any(e.source for e in self.entries)

    def channels(self) -> int:
        """3 when any readable image has colour, else 1."""
        return 3 if any(e.channels == 3 for e in self.ok) else 1

    def digest(self) -> str:
        """Identifies the data exactly: the files' contents, labels, splits and groups."""
        h = hashlib.sha256(f"manifest/{MANIFEST_VERSION}".encode())
        for e in sorted(self.entries, key=lambda e: e.path):
            h.update(f"{e.path}|{e.label}|{e.split}|{e.group}|{e.sha256}|{e.status}\n".encode())
        return h.hexdigest()

    def duplicates(self) -> list[list[Entry]]:
        """Groups of readable files with identical bytes (first those that span splits)."""
        by_hash: dict[str, list[Entry]] = defaultdict(list)
        for e in self.ok:
            by_hash[e.sha256].append(e)
        groups = [g for g in by_hash.values() if len(g) > 1]
        return sorted(groups, key=lambda g: (len({e.split for e in g}) == 1, g[0].path))

    def cross_split_duplicates(self) -> list[list[Entry]]:
        return [g for g in self.duplicates() if len({e.split for e in g}) > 1]

    def to_csv(self) -> str:
        buf = io.StringIO()
        names = list(Entry.__dataclass_fields__)
        writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        for e in self.entries:
            writer.writerow(asdict(e))
        return buf.getvalue()


def nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _is_junk(name: str) -> bool:
    low = name.lower()
    return low in JUNK_FILES or name.startswith("._") or name.startswith(".")


def list_files(root: Path) -> tuple[list[Entry], list[tuple[str, str]]]:
    """Candidate image files with folder labels and splits, and what was ignored (and why)."""
    root = root.resolve()
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    top = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.is_symlink() and not _is_junk(p.name)]
    split_dirs = {p: SPLIT_NAMES[p.name.lower()] for p in top if p.name.lower() in SPLIT_NAMES}
    bases: list[tuple[Path, str | None]] = list(split_dirs.items()) if split_dirs else [(root, None)]
    entries: list[Entry] = []
    ignored: list[tuple[str, str]] = []
    if split_dirs:
        ignored += [(p.name, "folder beside train/val/test (not scanned)") for p in top if p not in split_dirs]
    for base, split in bases:
        for class_dir in sorted(base.iterdir()):
            rel_class = class_dir.relative_to(root).as_posix()
            if class_dir.is_symlink():
                ignored.append((rel_class, "folder symlink (not followed)"))
                continue
            if not class_dir.is_dir():
                if not _is_junk(class_dir.name) and rel_class != "metadata.csv":
                    ignored.append((rel_class, "file outside any class folder"))
                continue
            if _is_junk(class_dir.name) or class_dir.name.lower() in JUNK_DIRS:
                continue
            label = nfc(class_dir.name)
            for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=False):
                here = Path(dirpath)
                keep = []
                for d in sorted(dirnames):
                    if d.startswith(".") or d.lower() in JUNK_DIRS:
                        continue
                    if (here / d).is_symlink():
                        ignored.append(((here / d).relative_to(root).as_posix(), "folder symlink (not followed)"))
                        continue
                    keep.append(d)
                dirnames[:] = keep
                for name in sorted(filenames):
                    path = here / name
                    rel = path.relative_to(root).as_posix()
                    if _is_junk(name):
                        continue
                    if path.suffix.lower() in DOCUMENT_SUFFIXES:
                        ignored.append((rel, "not an image (document)"))
                        continue
                    entry = Entry(path=rel, label=label, split=split)
                    if path.is_symlink():
                        problem = _symlink_problem(path, root)
                        if problem:
                            entry.status, entry.reason = "bad", problem
                    entries.append(entry)
    return entries, ignored


def _symlink_problem(path: Path, root: Path) -> str:
    try:
        target = path.resolve(strict=True)
    except RuntimeError:
        return "symlink loop"
    except OSError:
        return "broken symlink"
    if not target.is_relative_to(root):
        return "symlink leaves the data folder"
    return ""


def apply_metadata(root: Path, entries: list[Entry], notes: list[str]) -> list[Entry]:
    """Override labels/splits/groups from ROOT/metadata.csv; list files it names that are missing."""
    csv_path = root / "metadata.csv"
    if not csv_path.is_file():
        return entries
    try:
        rows = list(csv.DictReader(io.StringIO(csv_path.read_text(encoding="utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path}: unreadable CSV ({exc})") from None
    if rows and "file" not in rows[0]:
        raise DataError(f"{csv_path}: needs a 'file' column (relative path of each image)")
    group_col = next((c for c in GROUP_COLUMNS if rows and c in rows[0]), None)
    by_path = {nfc(e.path): e for e in entries}  # metadata may spell names composed or decomposed
    out = list(entries)
    for line, row in enumerate(rows, start=2):
        rel = nfc((row.get("file") or "").strip().replace("\\", "/"))
        pure = PurePosixPath(rel)
        if not rel or pure.is_absolute() or ".." in pure.parts:
            raise DataError(f"{csv_path} line {line}: file '{rel}' must be a relative path inside the folder")
        entry = by_path.get(rel)
        if entry is None:
            entry = Entry(path=rel, label="", status="bad", reason="listed in metadata.csv but missing")
            out.append(entry)
        if row.get("label"):
            entry.label = nfc(row["label"].strip())
        if row.get("split"):
            split = SPLIT_NAMES.get(row["split"].strip().lower())
            if split is None:
                raise DataError(f"{csv_path} line {line}: split '{row['split']}' is not train, val or test")
            entry.split = split
        if group_col and row.get(group_col):
            entry.group = row[group_col].strip()
        if row.get(SOURCE_COLUMN):
            entry.source = row[SOURCE_COLUMN].strip()
    listed = {nfc((r.get("file") or "").strip().replace("\\", "/")) for r in rows}
    unlisted = sum(1 for e in entries if nfc(e.path) not in listed)
    if unlisted:
        notes.append(f"{unlisted} files are not in metadata.csv (folder labels used, no patient group)")
    return out


def check_classes(entries: list[Entry]) -> list[str]:
    classes = sorted({e.label for e in entries if e.label})
    folded: dict[str, list[str]] = defaultdict(list)
    for c in classes:
        folded[c.casefold()].append(c)
    clashes = [names for names in folded.values() if len(names) > 1]
    if clashes:
        pairs = "; ".join(" and ".join(f"'{n}'" for n in names) for names in clashes)
        raise DataError(f"class names differ only in case: {pairs}; rename one folder (or fix metadata.csv)")
    return classes


def verify(root: Path, entries: list[Entry], progress: Callable[[int], None] | None = None) -> None:
    """Read and fully decode every not-yet-bad file, recording its hash, size and mode."""

    def one(entry: Entry) -> None:
        if entry.status != "ok":
            return
        try:
            data = read_image_file(root / entry.path)
            entry.sha256 = hashlib.sha256(data).hexdigest()
            _, info = decode_bytes(data, entry.path)
        except DataError as exc:
            reason = str(exc)
            for prefix in (f"{root / entry.path}: ", f"{entry.path}: "):
                reason = reason.removeprefix(prefix)
            entry.status, entry.reason = "bad", reason
            return
        except OSError as exc:
            entry.status, entry.reason = "bad", f"unreadable ({exc.strerror or exc})"
            return
        except Exception as exc:  # a malformed file must cost one entry, never the whole scan
            entry.status, entry.reason = "bad", f"undecodable ({exc.__class__.__name__})"
            return
        entry.format, entry.width, entry.height = info.format, info.width, info.height
        entry.mode, entry.channels = info.mode, info.channels

    # Decoders release the GIL: two threads keep both cores busy.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for _ in pool.map(one, entries):
            if progress is not None:
                progress(1)


class VerifiedStore(Protocol):
    """Remembers verification results between scans (`cnnlab.data.cache.ManifestStore`)."""

    def recall(self, entries: list[Entry]) -> list[Entry]: ...
    def remember(self, entries: list[Entry]) -> None: ...


def scan_folder(
    root: str | Path,
    max_bad_fraction: float = 0.01,
    progress: Callable[[int], None] | None = None,
    store: VerifiedStore | None = None,
    check: bool = True,
) -> Manifest:
    """The manifest of a class folder (raises DataError when it cannot be trained on).

    With a `store`, files verified on an earlier scan and unchanged since are not read again.
    `check=False` returns the manifest whatever it holds: `cnnlab data inspect` must list the bad
    files of exactly the folders training refuses (`bad_share_problem` and `class_problem` say why)."""
    root = Path(root).expanduser().resolve()
    entries, ignored = list_files(root)
    notes: list[str] = []
    entries = apply_metadata(root, entries, notes)
    todo = store.recall(entries) if store is not None else entries
    if progress is not None:
        progress(len(entries) - len(todo))
    verify(root, todo, progress)
    if store is not None and todo:
        store.remember(entries)
    manifest = Manifest(root, check_classes(entries), entries, ignored, notes)
    if check:
        check_usable(manifest, max_bad_fraction)
    return manifest


def no_files_problem(manifest: Manifest) -> str:
    if manifest.entries:
        return ""
    return f"{manifest.root}: no image files found (expected CLASS/ folders, optionally under train/ val/ test/)"


def bad_share_problem(manifest: Manifest, max_bad_fraction: float) -> str:
    """Why training refuses the share of unreadable files ('' when it does not)."""
    entries, bad = manifest.entries, manifest.bad
    if not entries or len(bad) <= max_bad_fraction * len(entries):
        return ""
    reasons = Counter(e.reason for e in bad).most_common(3)
    summary = "; ".join(f"{n} x {r}" for r, n in reasons)
    return (
        f"{len(bad)} of {len(entries)} files are unreadable "
        f"({len(bad) / len(entries):.1%} > max_bad_fraction {max_bad_fraction:.1%}): {summary}"
    )


def class_problem(manifest: Manifest) -> str:
    """Why training refuses the classes: fewer than two, or one without a readable image ('' if neither)."""
    if len(manifest.classes) < 2:
        return f"found {len(manifest.classes)} class ({', '.join(manifest.classes)}); a classifier needs at least 2"
    counts = Counter(e.label for e in manifest.ok)
    empty = [c for c in manifest.classes if counts[c] == 0]
    if empty:
        return f"class {', '.join(repr(c) for c in empty)} has no readable images"
    return ""


def check_usable(manifest: Manifest, max_bad_fraction: float) -> None:
    if problem := no_files_problem(manifest):
        raise DataError(problem)
    if problem := bad_share_problem(manifest, max_bad_fraction):
        raise DataError(
            f"{manifest.root}: {problem}; `cnnlab data inspect folder:{manifest.root}` lists them "
            "(or raise data.max_bad_fraction to train on the rest)"
        )
    if problem := class_problem(manifest):
        raise DataError(f"{manifest.root}: {problem}")
