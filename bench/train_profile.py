"""Where a training step's time goes, for each workload (the seed-faithful recipes and the fast
ones), and what the layout and precision options buy: the evidence behind cnnlab's defaults.

For each workload it builds the batches exactly as `cnnlab train` does (decoded uint8 tensors,
one gather and one fused normalise per batch) and times, over the same steps:
  - the input path (gather + normalise, and augmentation where the recipe has it),
  - forward, backward and the optimizer step,
  - the step in NCHW vs channels_last, and fp32 vs bf16 autocast,
then prints the top operators from torch.profiler and the achieved FLOP/s (3x the forward FLOPs
counted by FlopCounterMode) against this machine's fp32 GEMM rate measured in the same run.

    python bench/train_profile.py                       # all three workloads
    python bench/train_profile.py --only lenet5 --steps 50
    python bench/train_profile.py --only lenet5_fast      # one step of the fast recipe, profiled in bf16
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cnnlab.config import load_config
from cnnlab.data.augment import build_augment
from cnnlab.data.loader import TensorBatches
from cnnlab.data.preprocess import stats_tensors
from cnnlab.data.sources import load_source
from cnnlab.engine.losses import make_loss
from cnnlab.engine.transfer import plan_stage
from cnnlab.models import create_model, get_spec
from cnnlab.tasks.train import prepare_data
from train_vs_peers import gemm_rate


@dataclass(frozen=True)
class Workload:
    key: str
    recipe: str
    overrides: tuple[str, ...]
    trainable: str
    """What trains: all, or the fine-tuning stage's top:N."""
    profiled: str = "fp32"
    """The precision of the operator table: the fast recipes train in bf16 where the CPU has it."""


WORKLOADS = [
    Workload("lenet5", "lenet5-fashion-mnist", (), "all"),
    Workload("lenet5_fast", "lenet5-fashion-mnist-fast", (), "all", "bf16"),
    Workload("simple_cnn_fast", "simple-cnn-fashion-mnist-fast", (), "all", "bf16"),
    Workload("vgg_mini", "vgg-mini-cifar10", (), "all"),
    Workload("efficientnet_lite0", "lite0-flowers", ("train.batch_size=32",), "top:6"),
]


def batches_for(w: Workload, channels_last: bool) -> tuple[TensorBatches, torch.nn.Module, int, int]:
    cfg = load_config(w.recipe, overrides=list(w.overrides))
    spec = get_spec(cfg.model.name)
    size = cfg.data.input_size or spec.input_size
    data = load_source(cfg.data, size)
    prep, splits = prepare_data(cfg, data, spec.mean, spec.std, size)
    mean, std = stats_tensors(prep.mean, prep.std)
    weights = "imagenet" if cfg.model.weights not in ("none", "auto") else "none"
    model = create_model(spec.name, len(data.classes), data.channels, size, weights)
    batches = TensorBatches(
        *splits["train"], cfg.train.batch_size, mean, std, shuffle=True, channels_last=channels_last,
        augment=build_augment(cfg.data.augment, size),
    )  # fmt: skip
    return batches, model, data.channels, size


def time_steps(w: Workload, steps: int, channels_last: bool, precision: str) -> dict[str, float]:
    """Seconds per step in each phase (after 3 warm-up steps)."""
    batches, model, _, _ = batches_for(w, channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    plan = plan_stage(model, w.trainable, 1e-3, 1.0)
    optimizer = torch.optim.Adam(plan.groups, lr=1e-3)
    loss_fn = make_loss(False)
    model.train()
    for module in plan.frozen_norms:
        module.eval()
    phases = {"input": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    it = iter(batches)
    done = 0
    while done < steps + 3:
        t0 = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(batches)
            continue
        t1 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = loss_fn(model(x), y)
        t2 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        optimizer.step()
        t4 = time.perf_counter()
        if done >= 3:
            for key, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                phases[key] += dt / steps
        done += 1
    phases["images"] = float(batches.batch_size)
    return phases


def step_flops(w: Workload) -> float:
    """FLOPs of one training step per image, as 3x the forward FLOPs (backward costs about twice
    the forward). FlopCounterMode counts the forward exactly; its count of depthwise-convolution
    backward is not usable (it ignores groups), so the backward is not counted directly. For a
    stage with a frozen trunk (lite0's top:6) this is an upper bound on the work done."""
    batches, model, _, _ = batches_for(w, False)
    x, _ = next(iter(batches))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return 3 * counter.get_total_flops() / len(x)


def top_ops(w: Workload, steps: int = 5, rows: int = 8) -> str:
    batches, model, _, _ = batches_for(w, True)
    model = model.to(memory_format=torch.channels_last)
    plan = plan_stage(model, w.trainable, 1e-3, 1.0)
    optimizer = torch.optim.Adam(plan.groups, lr=1e-3)
    it = iter(batches)
    for _ in range(2):
        x, y = next(it)
        make_loss(False)(model(x), y).backward()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            x, y = next(it)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=w.profiled == "bf16"):
                loss = make_loss(False)(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant (default 20)")
    parser.add_argument("--only", help="one workload: " + ", ".join(w.key for w in WORKLOADS))
    parser.add_argument("--no-profile", action="store_true", help="skip the operator tables")
    args = parser.parse_args()
    chosen = [w for w in WORKLOADS if args.only in (None, w.key)]
    if not chosen:
        parser.error(f"--only must be one of {', '.join(w.key for w in WORKLOADS)}")
    peak = gemm_rate()
    print(f"fp32 GEMM rate (torch.mm 2048x2048, {torch.get_num_threads()} threads): {peak / 1e9:.1f} GFLOP/s\n")
    header = f"{'workload':<20}{'variant':<20}{'ms/step':>9}{'input':>8}{'fwd':>8}{'bwd':>8}{'optim':>8}"
    header += f"{'img/s':>9}{'GFLOP/s':>9}{'% GEMM':>8}{'vs NCHW':>9}"
    for w in chosen:
        flops = step_flops(w)
        print(header)
        base = None
        for variant, cl, precision in (("NCHW fp32", False, "fp32"), ("channels_last fp32", True, "fp32"),
                                       ("channels_last bf16", True, "bf16")):  # fmt: skip
            p = time_steps(w, args.steps, cl, precision)
            step = p["input"] + p["forward"] + p["backward"] + p["optimizer"]
            base = base or step
            rate = flops * p["images"] / step
            print(
                f"{w.key:<20}{variant:<20}{step * 1e3:9.1f}{p['input'] * 1e3:8.1f}{p['forward'] * 1e3:8.1f}"
                f"{p['backward'] * 1e3:8.1f}{p['optimizer'] * 1e3:8.1f}{p['images'] / step:9.0f}"
                f"{rate / 1e9:9.2f}{100 * rate / peak:7.1f}%{base / step:8.2f}x"
            )
        print(f"  (training step: {flops / 1e6:.1f} MFLOP per image, 3x forward)")
        if not args.no_profile:
            print(f"\ntop operators, {w.key}, channels_last {w.profiled}:\n{top_ops(w)}\n")


if __name__ == "__main__":
    main()
