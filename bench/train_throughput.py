"""Training throughput of LeNet-5 on Fashion-MNIST: cnnlab beside the plain PyTorch tutorial loop.

Both train the same network (cnnlab's `lenet5`) with Adam for the same epochs on the same
60,000 images, in this one process, so the ratio is meaningful on a noisy shared machine.

The tutorial peer: torchvision's FashionMNIST dataset with per-sample `Resize(32)` + `ToTensor`,
`DataLoader(batch_size=128, shuffle=True)`, NCHW fp32, Adam 1e-3.

    python bench/train_throughput.py                # 3 epochs, cnnlab variants fp32/NHWC, NCHW, bf16
    python bench/train_throughput.py --epochs 10 --variants default,batch512
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from cnnlab import bundle
from cnnlab.config import load_config
from cnnlab.data.sources import locate
from cnnlab.models import create_model, get_spec
from cnnlab.tasks.train import train

VARIANTS = {
    "default": [],  # the recipe: batch 128, channels_last, fp32
    "nchw": ["train.channels_last=false"],
    "bf16": ["train.precision=bf16"],
    "batch512": ["train.batch_size=512", "optim.lr=2e-3"],
    "compile": ["train.compile=true"],
}


def tutorial_loop(raw_dir: Path, epochs: int, model_name: str = "lenet5") -> tuple[float, float]:
    """(train images/s, test accuracy) of the tutorial-style loop training `model_name`."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for gz in raw_dir.glob("*-ubyte.gz"):  # torchvision expects the unpacked files
            with gzip.open(gz) as src, open(raw / gz.stem, "wb") as dst:
                shutil.copyfileobj(src, dst)
        size = get_spec(model_name).input_size  # a tutorial resizes only when the network needs it
        tf = transforms.Compose([*([transforms.Resize(size)] if size != 28 else []), transforms.ToTensor()])
        train_ds = datasets.FashionMNIST(tmp, train=True, transform=tf)
        test_ds = datasets.FashionMNIST(tmp, train=False, transform=tf)
        train_loader = DataLoader(train_ds, batch_size=128, shuffle=True)
        test_loader = DataLoader(test_ds, batch_size=256)
        torch.manual_seed(0)
        model = create_model(model_name, 10, 1, size)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = torch.nn.CrossEntropyLoss()
        seen, start = 0, time.perf_counter()
        for _ in range(epochs):
            model.train()
            for x, y in train_loader:
                opt.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                opt.step()
                seen += len(y)
        rate = seen / (time.perf_counter() - start)
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in test_loader:
                correct += int((model(x).argmax(1) == y).sum())
                total += len(y)
        return rate, correct / total


def cnnlab_run(variant: str, epochs: int, out: Path) -> tuple[float, float]:
    cfg = load_config("lenet5-fashion-mnist", overrides=[f"train.epochs={epochs}", *VARIANTS[variant]])
    summary = train(cfg, out / variant, overwrite=True)
    rows = bundle.read_history(summary.run_dir / bundle.HISTORY)
    seen = sum(r["images_per_second"] * r["train_seconds"] for r in rows)
    return seen / summary.train_seconds, summary.test_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--variants", default="default,nchw,batch512,bf16")
    args = parser.parse_args()
    folder, _ = locate("fashion-mnist")
    if folder is None:
        sys.exit("Fashion-MNIST not found: apt-get install dataset-fashion-mnist")
    print(f"LeNet-5, Fashion-MNIST, {args.epochs} epochs, torch {torch.__version__}, {torch.get_num_threads()} threads")
    peer_rate, peer_acc = tutorial_loop(folder, args.epochs)
    print(f"{'tutorial loop (peer)':<28} {peer_rate:>9,.0f} img/s   1.00x   test acc {peer_acc:.4f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants.split(","):
            rate, acc = cnnlab_run(variant, args.epochs, Path(tmp))
            print(
                f"{'cnnlab ' + variant:<28} {rate:>9,.0f} img/s   {rate / peer_rate:4.2f}x   test acc {acc:.4f}"
                f"  ({(acc - peer_acc) * 100:+.2f} points)",
                flush=True,
            )


if __name__ == "__main__":
    main()
