"""`cnnlab train ... --find-lr`: the learning-rate range test on a config's data and model, built
exactly as training builds them. Writes `lr_find.png` and `lr_find.json`; never a bundle."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.console import Console

from cnnlab import bundle
from cnnlab.config import Config
from cnnlab.data.sources import load_source
from cnnlab.engine.device import configure, placement
from cnnlab.engine.losses import balanced_class_weights, make_loss
from cnnlab.engine.lr_find import LRFindResult, lr_find
from cnnlab.figures import plt, save_figure
from cnnlab.fileio import atomic_write_json
from cnnlab.models import create_model, get_spec
from cnnlab.tasks.train import prepare_for, resolve_auto_weights, training_batches

FIGURE = "lr_find.png"
RESULT = "lr_find.json"


@dataclass
class FindLRResult:
    out_dir: Path
    figure: Path
    json: Path
    curve: LRFindResult
    stage: str
    trainable: str
    lr_option: float
    """What to pass as `--lr` (`optim.lr`) to train at the suggestion: for a recipe with stages,
    `--lr` scales every stage's rate, so this is the suggestion x recipe lr / first stage's lr."""
    batch_size: int


def find_lr(
    cfg: Config,
    out: str | Path | None = None,
    console: Console | None = None,
    *,
    overwrite: bool = False,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
) -> FindLRResult:
    """Run the range test from the model's initial weights (the first stage's trainable parameters,
    its optimiser, augmentation and loss) and write the figure and the curve into `out`
    (default `runs/<name>-lr-find`)."""
    console = console or Console(quiet=True)
    where = placement(cfg.train.device, cfg.train.precision)
    out = Path(out) if out is not None else Path("runs") / f"{cfg.name}-lr-find"
    bundle.check_run_dir(out, overwrite=overwrite, resume=False)
    spec = get_spec(cfg.model.name)
    cfg = resolve_auto_weights(cfg, console)
    input_size = cfg.data.input_size or spec.input_size
    data = load_source(cfg.data, input_size, console)
    prep, splits = prepare_for(cfg, spec, data, input_size)
    tc, oc = cfg.train, cfg.optim
    stage = tc.resolved_stages()[0]
    stage_lr = stage.lr if stage.lr is not None else oc.lr
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    model = create_model(spec.name, len(data.classes), data.channels, input_size, cfg.model.weights)
    configure(where.device)
    model = model.to(where.device)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    batches = training_batches(
        cfg, splits, prep, len(data.classes), input_size, augment=stage.augment, device=where.device
    )
    weights = balanced_class_weights(batches.labels, len(data.classes)) if oc.class_weights == "auto" else None
    loss_fn = make_loss(spec.binary, oc.label_smoothing, oc.loss, oc.focal_gamma, weights)
    console.print(
        f"lr range test: {spec.name} on {data.source}, stage '{stage.name}' ({stage.trainable}), "
        f"{oc.optimizer}, batch {tc.batch_size}, lr {start_lr:g} -> {end_lr:g} over up to {steps} steps"
    )
    curve = lr_find(
        model,
        batches,
        loss_fn,
        binary=spec.binary,
        start_lr=start_lr,
        end_lr=end_lr,
        steps=steps,
        precision=where.precision,
        optim=replace(oc, lr=stage_lr),
        trainable=stage.trainable,
        lr_decay=stage.lr_decay,
        aux_weight=tc.aux_weight,
    )
    lr_option = curve.suggestion * oc.lr / stage_lr
    out.mkdir(parents=True, exist_ok=True)
    title = f"{spec.name} on {data.source}: lr range test ({oc.optimizer}, batch {tc.batch_size})"
    plot_lr_find(curve, out / FIGURE, title)
    atomic_write_json(
        out / RESULT,
        {
            "name": cfg.name,
            "model": spec.name,
            "data": data.source,
            "optimizer": oc.optimizer,
            "batch_size": tc.batch_size,
            "device": where.name,
            "precision": where.precision,
            "stage": stage.name,
            "trainable": stage.trainable,
            "recipe_lr": oc.lr,
            "lr_option": lr_option,
            **curve.to_dict(),
        },
    )
    return FindLRResult(out, out / FIGURE, out / RESULT, curve, stage.name, stage.trainable, lr_option, tc.batch_size)


def plot_lr_find(curve: LRFindResult, path: Path, title: str) -> None:
    """Loss against lr on a log axis: each batch faint, the smoothed curve, the suggestion marked."""
    fig, ax = plt.subplots(figsize=(8, 4.8))
    ax.plot(curve.lrs, curve.losses, color="#1f77b4", alpha=0.25, lw=1, label="loss per batch")
    ax.plot(curve.lrs, curve.smoothed, color="#1f77b4", lw=2, label="smoothed loss")
    at = min(range(curve.steps), key=lambda i: abs(curve.lrs[i] - curve.suggestion))
    ax.plot([curve.suggestion], [curve.smoothed[at]], "o", color="#c0392b", ms=9, zorder=5,
            label=f"suggestion ({curve.method}): {curve.suggestion:.2g}")  # fmt: skip
    ax.axvline(curve.min_lr_over_10, color="#555555", ls="--", lw=1, label=f"minimum / 10: {curve.min_lr_over_10:.2g}")
    if curve.diverged_at is not None:
        ax.axvline(curve.diverged_at, color="#c0392b", ls=":", lw=1, label=f"diverged: {curve.diverged_at:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    low, high = min(*curve.smoothed, *curve.losses), max(curve.smoothed)  # batches' spikes may leave the frame
    ax.set_ylim(low - 0.05 * (high - low + 1e-9), high + 0.1 * (high - low + 1e-9))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
