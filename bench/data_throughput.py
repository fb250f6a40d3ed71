"""Input-pipeline throughput for a training epoch on ../shared/data/flowers at 224x224:
cnnlab's decoded cache + batched augmentation beside torchvision's ImageFolder + DataLoader with
per-sample PIL transforms, the same augmentation (random resized crop 80-100%, horizontal flip)
and normalisation, measured in this one run. Only the data side is timed (no model), since
that is what the cache changes.

    python bench/data_throughput.py [--epochs 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from cnnlab.config import DataConfig
from cnnlab.data.augment import build_augment
from cnnlab.data.loader import TensorBatches
from cnnlab.data.preprocess import channel_stats, stats_tensors
from cnnlab.data.sources import load_source, locate

SIZE, BATCH = 224, 32


def peer_epoch(root: Path, workers: int, augment: bool) -> float:
    geometry = (
        [transforms.RandomResizedCrop(SIZE, scale=(0.8, 1.0)), transforms.RandomHorizontalFlip()]
        if augment
        else [transforms.Resize(SIZE), transforms.CenterCrop(SIZE)]
    )
    tf = transforms.Compose(
        [*geometry, transforms.ToTensor(), transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
    )
    loader = DataLoader(datasets.ImageFolder(root / "train", tf), batch_size=BATCH, shuffle=True, num_workers=workers)
    start, n = time.perf_counter(), 0
    for x, _ in loader:
        n += len(x)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    root, _ = locate("flowers")
    if root is None:
        sys.exit("flowers not found: ../shared/data/flowers")
    print(
        f"flowers train split at {SIZE}x{SIZE}, batch {BATCH}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )

    with tempfile.TemporaryDirectory() as cache:
        os.environ["CNNLAB_CACHE"] = cache
        start = time.perf_counter()
        data = load_source(DataConfig(source="flowers"), SIZE)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        data = load_source(DataConfig(source="flowers"), SIZE)
        warm = time.perf_counter() - start
    x, y = data.splits["train"]
    mean, std = stats_tensors(*channel_stats(x))
    print(f"cnnlab: first load (scan + decode + cache write) {cold:.1f} s, later loads {warm:.2f} s")
    for preset, augmenting in (("none", False), ("light", True)):
        batches = TensorBatches(
            x, y, BATCH, mean, std, shuffle=True, channels_last=True, augment=build_augment(preset, SIZE)
        )
        rates = []
        for epoch in range(args.epochs):
            batches.set_epoch(epoch)
            start, n = time.perf_counter(), 0
            for xb, _ in batches:
                n += len(xb)
            rates.append(n / (time.perf_counter() - start))
        ours = max(rates)
        what = "random resized crop + flip" if augmenting else "resize + centre crop, no augmentation"
        print(f"\n{what}:")
        peers = {w: max(peer_epoch(root, w, augmenting) for _ in range(args.epochs)) for w in sorted({0, args.workers})}
        for workers, rate in peers.items():
            print(f"  {'ImageFolder + DataLoader, ' + str(workers) + ' workers':<42} {rate:>8,.0f} img/s")
        best = max(peers.values())
        print(f"  {'cnnlab decoded cache (' + preset + ')':<42} {ours:>8,.0f} img/s   {ours / best:.2f}x the best peer")


if __name__ == "__main__":
    main()
