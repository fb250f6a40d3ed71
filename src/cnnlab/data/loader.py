"""Batches straight from in-memory uint8 tensors: one gather and one fused normalise per batch,
no per-sample Python, no worker processes (which cost more than they save for small images).

For a GPU (`device`), each batch leaves as uint8 from pinned memory without waiting (a quarter of
float32's bytes) and is normalised and mixed on the GPU; on the CPU nothing moves."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from cnnlab.data.augment import Augment, Mix
from cnnlab.data.preprocess import normalize


class TensorBatches:
    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: torch.Tensor,
        std: torch.Tensor,
        *,
        shuffle: bool = False,
        seed: int = 0,
        channels_last: bool = False,
        balanced: bool = False,
        augment: Augment | None = None,
        mix: Mix | None = None,
        rank: int = 0,
        world: int = 1,
        device: torch.device | str | None = None,
    ) -> None:
        """`balanced`: each epoch draws N samples with every class equally likely (with
        replacement); `augment` runs on uint8 pixels, `mix` on the normalised batch.

        With `world` > 1 (data-parallel training) `batch_size` is the global batch: every rank
        draws the same order and takes every `world`-th image of each global batch, so the
        ranks together see exactly the batches a single process would."""
        if len(images) != len(labels):
            raise ValueError("images and labels differ in length")
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.channels_last = channels_last
        self.balanced = balanced
        self.augment = augment
        self.mix = mix
        self.rank, self.world = rank, world
        self.device = torch.device(device) if device is not None else None
        self._moves = self.device is not None and self.device.type != "cpu"
        # Where the batches are normalised: on the GPU, the statistics live there once.
        self.mean, self.std = (mean.to(self.device), std.to(self.device)) if self._moves else (mean, std)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The shuffle order is a function of (seed, epoch), so a resumed run sees the same batches."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._starts())

    @property
    def num_samples(self) -> int:
        """Images this rank sees per epoch."""
        n = len(self.images)
        return sum(len(range(self.rank, min(self.batch_size, n - s), self.world)) for s in self._starts())

    def _starts(self) -> range:
        n = len(self.images)
        # A last global batch smaller than the number of ranks would leave a rank without data
        # (and the others waiting for it): data-parallel runs drop it.
        end = (
            n
            if self.world == 1 or n % self.batch_size == 0 or n % self.batch_size >= self.world
            else n - n % self.batch_size
        )
        return range(0, end, self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.images)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.balanced:
            counts = torch.bincount(self.labels).float()
            order = torch.multinomial(1.0 / counts[self.labels], n, replacement=True, generator=gen)
        elif self.shuffle:
            order = torch.randperm(n, generator=gen)
        else:
            order = None
        sharded = self.world > 1
        for start in self._starts():
            if order is None and not sharded:
                idx = slice(start, start + self.batch_size)
                x, y = self.images[idx], self.labels[idx]
            else:
                idx_t = (
                    order[start : start + self.batch_size]
                    if order is not None
                    else torch.arange(start, min(start + self.batch_size, n))
                )
                if sharded:
                    idx_t = idx_t[self.rank :: self.world]
                x, y = self.images[idx_t], self.labels[idx_t]
            if self.augment is not None:
                x = self.augment(x)
            if self._moves:
                x, y = self._to_device(x), self._to_device(y)
            x = normalize(x, self.mean, self.std, self.channels_last)
            if self.mix is not None:
                x, y = self.mix(x, y)
            yield x, y

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        assert self.device is not None
        if self.device.type == "cuda":  # pinned pages let the copy overlap the previous step's compute
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)
