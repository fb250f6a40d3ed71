"""Data-parallel training: torchrun processes with DDP (gloo on CPU) match a single process, write
one bundle, fail cleanly when a rank dies, and resume with another number of processes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from cnnlab.data.loader import TensorBatches
from cnnlab.errors import CnnlabError
from cnnlab.tasks.train import train
from tests.conftest import tiny_config

TINY = ["--data", "mnist-sample", "--set", "data.limit_train=1200", "--batch-size", "64"]


def cnnlab(*args: str, env: dict[str, str] | None = None, **popen: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cnnlab.cli", *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def test_shards_of_each_global_batch_are_the_single_process_batch() -> None:
    x = torch.arange(203, dtype=torch.uint8).view(203, 1, 1, 1)
    y = torch.arange(203)
    mean, std = torch.zeros(1), torch.ones(1)
    single = list(TensorBatches(x, y, 32, mean, std, shuffle=True, seed=4))
    shards = [list(TensorBatches(x, y, 32, mean, std, shuffle=True, seed=4, rank=r, world=3)) for r in range(3)]
    assert len({len(s) for s in shards}) == 1  # every rank takes the same number of steps
    for step, (_, labels) in enumerate(single):
        union = torch.cat([shards[r][step][1] for r in range(3)])
        assert sorted(union.tolist()) == sorted(labels.tolist())
    # 203 = 6 x 32 + 11: the last global batch has enough images for three ranks and is kept;
    # a last batch smaller than the number of ranks is dropped so no rank goes without data.
    assert len(shards[0]) == 7
    assert len(TensorBatches(x[:193], y[:193], 32, mean, std, rank=0, world=3)) == 6


@pytest.mark.slow
def test_two_processes_match_one_and_write_one_bundle(tmp_path: Path) -> None:
    proc = cnnlab("train", *TINY, "--epochs", "2", "--nproc", "2", "--out", str(tmp_path / "ddp"), cwd=tmp_path)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    assert out.count("test accuracy") == 1  # only rank 0 reports
    card = json.loads((tmp_path / "ddp" / "model.json").read_text())
    assert card["training"]["processes"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]
    single = train(tiny_config(**{"data.limit_train": 1200, "train.batch_size": 64}), tmp_path / "one")
    assert abs(card["metrics"]["val_accuracy"] - single.val_accuracy) <= 0.01


@pytest.mark.slow
def test_a_killed_rank_fails_the_job_and_it_resumes_with_one_process(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    out_dir = tmp_path / "ddp"
    args = ["train", *TINY, "--epochs", "6", "--out", str(out_dir)]
    proc = cnnlab(*args, "--nproc", "2", env={"CNNLAB_TEST_TAG": tag, "CNNLAB_DIST_TIMEOUT": "60"})
    deadline = time.monotonic() + 180
    while not (out_dir / "checkpoints" / "last.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "no epoch finished"
        time.sleep(0.05)
    victim = _worker(tag, rank=1)
    os.kill(victim, signal.SIGKILL)
    start = time.monotonic()
    out, _ = proc.communicate(timeout=120)  # no hang: the launcher ends the job
    assert proc.returncode != 0 and time.monotonic() - start < 120
    assert "continue with --resume" in out
    assert not (out_dir / "model.json").exists()
    with open(out_dir / "history.csv") as fh:
        done = len(list(csv.DictReader(fh)))
    assert 1 <= done < 6
    resumed = cnnlab(*args, "--resume")  # one process continues what two started
    log, _ = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, log
    assert f"resuming after epoch {done} of 6" in log
    card = json.loads((out_dir / "model.json").read_text())
    assert card["training"]["epochs_run"] == 6 and card["training"]["processes"] == 1


def _worker(tag: str, rank: int) -> int:
    """The pid of the training process of `rank` started with CNNLAB_TEST_TAG=tag."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"CNNLAB_TEST_TAG={tag}".encode() in env and f"RANK={rank}".encode() in env:
                return int(entry.name)
        time.sleep(0.1)
    raise AssertionError(f"no worker of rank {rank} found")


def test_nproc_errors() -> None:
    from cnnlab.engine.distributed import launch

    with pytest.raises(CnnlabError, match="at least 2"):
        launch(1, ["train"])
