"""An interrupted write never leaves a torn file: the previous one stays intact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnnlab.engine import checkpoint
from cnnlab.engine.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.errors import BundleError
from cnnlab.fileio import atomic_write_text


def test_interrupted_checkpoint_write_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(1000)})

    real_save = torch.save

    def crash_halfway(obj, fh) -> None:
        real_save(obj, fh)
        fh.truncate(100)  # half a file on disk ...
        raise OSError("No space left on device")  # ... then the write dies

    monkeypatch.setattr(checkpoint.torch, "save", crash_halfway)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, {"epoch": 2, "w": torch.zeros(1000)})
    monkeypatch.undo()

    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(1000))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp file left behind


def test_a_full_disk_during_torch_save_is_reported_as_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What CI saw: torch.save's zip writer hits ENOSPC, then raises a RuntimeError about
    'unexpected pos' while handling it. The user should read "No space left on device"."""
    import errno

    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})

    def torch_save_on_a_full_disk(obj, fh) -> None:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 948185984") from None

    monkeypatch.setattr(checkpoint.torch, "save", torch_save_on_a_full_disk)
    with pytest.raises(OSError, match="No space left on device") as caught:
        save_checkpoint(path, {"epoch": 2})
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_interrupted_text_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "model.json"
    atomic_write_text(target, '{"ok": 1}')
    monkeypatch.setattr("os.replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, '{"ok": 2}')
    monkeypatch.undo()
    assert target.read_text() == '{"ok": 1}'
    assert len(list(tmp_path.iterdir())) == 1


def test_a_torn_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(BundleError, match="not a readable cnnlab checkpoint"):
        load_checkpoint(path)


def test_checkpoints_never_unpickle_code(tmp_path: Path) -> None:
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        torch.save({"x": Evil()}, fh, pickle_module=pickle)
    with pytest.raises(BundleError, match="not a readable cnnlab checkpoint"):
        load_checkpoint(path)
