"""Hostile and messy class folders: each gives its documented result and a clear message."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from cnnlab.config import DataConfig
from cnnlab.data.folder import scan_folder
from cnnlab.data.sources import load_source
from cnnlab.errors import DataError
from tests.data.folders import make_folder, write_image, write_metadata


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))


def load(root: Path, **kw) -> object:
    return load_source(DataConfig(source=f"folder:{root}", **kw), image_size=16)


def test_clean_folder_loads(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"cat": 20, "dog": 20})
    data = load(root)
    assert data.classes == ["cat", "dog"]
    assert sum(data.sizes().values()) == 40 and data.channels == 3
    assert data.splits["train"][0].shape[1:] == (3, 16, 16)
    assert data.manifest.bad == [] and len(data.manifest.digest()) == 64


def test_empty_class_fails(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"cat": 10, "dog": 10})
    (root / "bird").mkdir()
    (root / "bird" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(DataError, match="class 'bird' has no readable images"):
        scan_folder(root, max_bad_fraction=0.5)


def test_single_class_fails(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"cat": 5})
    with pytest.raises(DataError, match=r"found 1 class .*needs at least 2"):
        scan_folder(root)


def _corrupt(root: Path, n: int) -> None:
    files = sorted(root.rglob("*.png"))[:n]
    for f in files:
        f.write_bytes(f.read_bytes()[:40])


def test_one_percent_corrupted_is_tolerated_and_listed(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"cat": 100, "dog": 100})
    _corrupt(root, 2)  # exactly 1%
    manifest = scan_folder(root)
    assert len(manifest.bad) == 2 and len(manifest.ok) == 198
    assert all("damaged" in e.reason or "not a readable" in e.reason for e in manifest.bad)


def test_half_corrupted_fails_with_a_summary(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"cat": 10, "dog": 10})
    _corrupt(root, 10)
    with pytest.raises(DataError, match=r"10 of 20 files are unreadable \(50.0% > max_bad_fraction 1.0%\)"):
        scan_folder(root)


def test_truncated_jpeg_is_excluded(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"cat": 60, "dog": 60})
    jpeg = write_image(root / "cat" / "photo.jpg", 99, size=(64, 64), fmt="JPEG")
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    manifest = scan_folder(root)
    (bad,) = manifest.bad
    assert bad.path == "cat/photo.jpg" and "damaged" in bad.reason


def test_png_bomb_is_refused_without_decoding(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"cat": 60, "dog": 60})

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 0, 0, 0, 0)
    (root / "dog" / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    (bad,) = scan_folder(root).bad
    assert bad.path == "dog/bomb.png" and "pixel limit" in bad.reason


def test_text_named_png_is_excluded(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"cat": 60, "dog": 60})
    (root / "cat" / "note.png").write_text("this is not an image")
    (bad,) = scan_folder(root).bad
    assert bad.path == "cat/note.png" and "not an image in an allowed format" in bad.reason


def test_junk_is_ignored_not_counted(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"cat": 5, "dog": 5})
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "cat" / "._000.png").write_bytes(b"\0\5\x16\7")
    (root / "dog" / "Thumbs.db").write_bytes(b"junk")
    (root / ".ipynb_checkpoints").mkdir()
    write_image(root / ".ipynb_checkpoints" / "x.png", 1)
    (root / "dog" / ".hidden").mkdir()
    write_image(root / "dog" / ".hidden" / "y.png", 2)
    (root / "__MACOSX").mkdir()
    (root / "cat" / "labels.txt").write_text("cat")
    manifest = scan_folder(root)
    assert manifest.classes == ["cat", "dog"]
    assert len(manifest.entries) == 10 and not manifest.bad
    assert ("cat/labels.txt", "not an image (document)") in manifest.ignored


def test_symlink_loop_is_not_followed(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"cat": 5, "dog": 5})
    os.symlink(root, root / "cat" / "loop")  # a folder link back to the root
    os.symlink("self.png", root / "dog" / "self.png")  # a file link to itself
    manifest = scan_folder(root, max_bad_fraction=0.5)
    assert ("cat/loop", "folder symlink (not followed)") in manifest.ignored
    (bad,) = manifest.bad
    assert bad.path == "dog/self.png" and bad.reason == "symlink loop"


def test_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    outside = write_image(tmp_path / "secret.png", 7)
    root = make_folder(tmp_path / "d", {"cat": 60, "dog": 60})
    os.symlink(outside, root / "cat" / "leak.png")
    inside = root / "dog" / "alias.png"
    os.symlink(root / "dog" / "000.png", inside)
    manifest = scan_folder(root)
    (bad,) = manifest.bad
    assert bad.path == "cat/leak.png" and bad.reason == "symlink leaves the data folder"
    assert any(e.path == "dog/alias.png" and e.status == "ok" for e in manifest.entries)


def test_case_collision_is_an_error(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"Cat": 3, "cat": 3, "dog": 3})
    with pytest.raises(DataError, match="class names differ only in case: 'Cat' and 'cat'"):
        scan_folder(root)


def test_class_names_are_unicode_normalised(tmp_path: Path) -> None:
    decomposed = "cafe\u0301"  # 'café' as e + combining accent (macOS file names)
    root = make_folder(tmp_path / "d", {decomposed: 3, "tea": 3})
    assert scan_folder(root).classes == ["caf\u00e9", "tea"]


def test_same_image_in_train_and_test_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "d"
    make_folder(root, {"cat": 10, "dog": 10}, split="train", seed=1)
    make_folder(root, {"cat": 4, "dog": 4}, split="test", seed=2)
    (root / "test" / "cat" / "copy.png").write_bytes((root / "train" / "cat" / "000.png").read_bytes())
    manifest = scan_folder(root)
    (group,) = manifest.cross_split_duplicates()
    assert sorted(e.split for e in group) == ["test", "train"]
    data = load(root)
    assert data.sizes()["test"] == 9  # reported, not silently dropped


def test_patient_in_two_split_folders_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "d"
    make_folder(root, {"a": 4, "b": 4}, split="train", seed=1)
    make_folder(root, {"a": 2, "b": 2}, split="test", seed=2)
    rows = [
        {"file": p.relative_to(root).as_posix(), "patient_id": f"p{i}"}
        for i, p in enumerate(sorted(root.rglob("*.png")))
    ]
    rows[-1]["patient_id"] = "p0"  # a test image of the first training patient
    write_metadata(root, rows)
    with pytest.raises(DataError, match="patient/group 'p0' appears in both"):
        load(root)


def test_patients_are_never_split_when_cnnlab_splits(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"normal": 40, "pneumonia": 40}, mode="L")
    files = sorted(root.rglob("*.png"))
    write_metadata(
        root, [{"file": f.relative_to(root).as_posix(), "patient_id": f"p{i // 3}"} for i, f in enumerate(files)]
    )
    data = load(root, val_fraction=0.2, test_fraction=0.2)
    assert data.channels == 1
    sets = {name: set(g.tolist()) for name, g in data.groups.items()}
    assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"] and not sets["val"] & sets["test"]
    assert all(n > 0 for n in data.sizes().values())


def test_metadata_overrides_labels_and_lists_missing_files(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"x": 30, "y": 30})
    rows = [{"file": f"x/{i:03d}.png", "label": "cat" if i % 2 else "dog"} for i in range(30)]
    rows += [{"file": f"y/{i:03d}.png", "label": "dog"} for i in range(30)]
    rows.append({"file": "x/missing.png", "label": "cat"})
    write_metadata(root, rows)
    manifest = scan_folder(root, max_bad_fraction=0.05)
    assert manifest.classes == ["cat", "dog"]
    (bad,) = manifest.bad
    assert bad.path == "x/missing.png" and "missing" in bad.reason


def test_metadata_path_escaping_the_folder_is_refused(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"cat": 2, "dog": 2})
    write_metadata(root, [{"file": "../../etc/passwd", "label": "cat"}])
    with pytest.raises(DataError, match="must be a relative path inside the folder"):
        scan_folder(root)


def test_grey_and_colour_mix_becomes_colour_and_decodes_consistently(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"cat": 6}, mode="L")
    make_folder(root, {"dog": 6}, mode="RGB", seed=3)
    data = load(root)
    assert data.channels == 3
    x = torch_images(data)
    grey = x[0]
    assert np.array_equal(grey[0], grey[1]) and np.array_equal(grey[1], grey[2])  # grey replicated


def torch_images(data) -> np.ndarray:
    return np.concatenate([data.splits[s][0].numpy() for s in ("train", "val", "test")])


def test_decoded_cache_is_reused_and_rebuilt_when_damaged(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"cat": 8, "dog": 8})
    first = torch_images(load(root))
    cached = list((tmp_path / "cache" / "decoded").glob("*.safetensors"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    assert np.array_equal(torch_images(load(root)), first)
    assert cached[0].stat().st_mtime_ns == stamp  # reused, not rewritten
    cached[0].write_bytes(b"garbage")
    assert np.array_equal(torch_images(load(root)), first)


def test_changed_file_is_verified_again(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"cat": 60, "dog": 60})
    assert not load(root).manifest.bad
    target = root / "cat" / "000.png"
    target.write_text("now text")
    bad = load(root).manifest.bad
    assert [e.path for e in bad] == ["cat/000.png"]
