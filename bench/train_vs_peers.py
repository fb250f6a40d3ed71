"""cnnlab training beside the seeds' own Keras scripts: time to the seeds' accuracy, and per-epoch speed.

Time to accuracy (the default, what a user wants: the seed's test accuracy, sooner). For each
network, the seed's Keras script trains its full fit (LeNet-5 10 epochs, the simple CNN 5, batch
128, Adam) and cnnlab trains its fast recipe (`lenet5-fashion-mnist-fast`,
`simple-cnn-fashion-mnist-fast`: the same architecture with a one-cycle schedule, a larger batch,
precision auto: bf16 autocast where the CPU has BF16 units, channels_last, preloaded tensors). Each side is
repeated `--repeats` times (default 3) and the medians are compared: Keras' `model.fit` wall time
(its validation passes included) against cnnlab's fit time (training plus validation passes, the
same work; checkpoint writes, data loading and the test pass are outside both, and cnnlab's whole
`train()` wall time is printed beside it). The target: cnnlab at least 3x faster at a test accuracy
no lower than Keras' minus 0.3 points.

How the fast settings were chosen: by final validation accuracy (the 6,000 images held out of
training; never the test split), among these one-cycle runs (epochs, batch, peak Adam rate,
warm-up epochs, label smoothing -> validation accuracy):
  LeNet-5: 4, 256, 5e-3, 0.3 -> 0.885; 4, 256, 8e-3 -> 0.886; 4, 256, 1e-2 -> 0.882; 4, 256, 3e-3
  -> 0.881; 4, 256, 5e-3, 0.3, ls 0.1 -> 0.884; 3, 256, 5e-3, ls 0.1 -> 0.878; 3, 128, 3e-3 -> 0.880;
  5, 256, 3e-3 -> 0.887; 5, 256, 8e-3, 0.3 -> 0.890; 5, 384, 1e-2 -> 0.888; 5, 384, 8e-3 -> 0.889;
  5, 384, 6e-3 -> 0.887; 6, 512, 1e-2 -> 0.887; 5, 256, 8e-3, 0.5 -> 0.892 (the recipe).
  simple CNN: 3, 256, 3e-3 -> 0.893; 3, 512, 5e-3 -> 0.887; 3, 128, 2e-3 -> 0.895; 3, 256, 5e-3,
  ls 0.1 -> 0.903 (2.6x: too slow); 3, 512, 8e-3, ls 0.1 -> 0.900; 2, 256, 5e-3, ls 0.1 -> 0.893;
  2, 256, 3e-3, ls 0.1 -> 0.885; 2, 256, 8e-3, ls 0.1 -> 0.895; 2, 128, 3e-3, ls 0.1 -> 0.896;
  2, 128, 5e-3, 0.3, ls 0.1 -> 0.900 (the recipe).

    python bench/train_vs_peers.py                  # time to accuracy, 3 repeats each (about 10 minutes)
    python bench/train_vs_peers.py --repeats 1      # one of each
    python bench/train_vs_peers.py --per-epoch      # the per-epoch comparison below

Per epoch (`--per-epoch`): cnnlab beside the seeds' Keras scripts and the plain PyTorch tutorial loop
at the seeds' own settings.

Two networks, each trained three ways on Fashion-MNIST in one run (the ratios are what to
quote: the machine is shared and absolute times drift):

Each network's cnnlab run is repeated with bf16 autocast (`train.precision=bf16`), its test accuracy
beside the fp32 one: the accuracy cost of the faster option.

- LeNet-5: the seed's Keras script (000 Question 6, `bench/peers/keras_lenet5.py`), 10 epochs,
  batch 128, Adam, validation_split=0.1; cnnlab's `lenet5-fashion-mnist` recipe (the same settings);
  the tutorial loop of `bench/train_throughput.py`.
- simple CNN (conv32-pool-conv64-pool-dense128-dropout0.4): the seed's Keras code (002 answer 6,
  `bench/peers/keras_simple_cnn.py`), 5 epochs, batch 128, Adam; cnnlab's `simple_cnn` with the same
  settings; the same tutorial loop training `simple_cnn`.

The Keras scripts run in their own virtualenv (`.venv-peers/`, created on first use with
tensorflow-cpu; TensorFlow never goes into cnnlab's `.venv`), as subprocesses.

What is timed. "train s/ep": the training pass over the 54,000 training images (the other
6,000 are validation for Keras and cnnlab alike). "epoch s": that plus the validation pass,
which is what a Keras epoch is. Both are means over epochs 2..N: Keras traces its graph in
epoch 1 (shown apart as "1st epoch"), and cnnlab is treated the same way. cnnlab's checkpoint
writing between epochs, data loading and the final test pass are outside both. The tutorial
loop trains on all 60,000 images without validation and is timed over all its epochs; its
s/epoch is its images/s rescaled to the same 54,000-image epoch. Ratios are peer s/epoch over
cnnlab s/epoch (above 1: cnnlab is faster).

Achieved FLOP/s: forward FLOPs per image counted by torch's FlopCounterMode (convolutions and
matrix products) on one batch, times 3 for forward + backward, times the training images, over
cnnlab's train s/ep; beside the best fp32 `torch.mm` rate (2048x2048) measured in this run.

    python bench/train_vs_peers.py --per-epoch               # the full comparison, several minutes
    python bench/train_vs_peers.py --per-epoch --quick       # 1 epoch each: a smoke run
    python bench/train_vs_peers.py --per-epoch --skip-keras  # cnnlab vs the tutorial loop only
    python bench/train_vs_peers.py --threads 1               # torch on one thread: see below

Threads. On a machine whose cores are already busy (a shared 2-core box running other jobs),
torch's OpenMP threads spin-wait for each other and a 2-thread LeNet-5 step can take 10x longer
than a 1-thread one; `--threads 1` gives cnnlab and the tutorial loop one thread each (TensorFlow
keeps its own default). On an idle machine leave it out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, median

import torch
from torch.utils.flop_counter import FlopCounterMode

from cnnlab import bundle
from cnnlab.config import load_config
from cnnlab.data.sources import locate
from cnnlab.models import create_model, get_spec
from cnnlab.tasks.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import tutorial_loop

ROOT = Path(__file__).resolve().parent.parent
PEERS = Path(__file__).resolve().parent / "peers"
PEERS_VENV = ROOT / ".venv-peers"


@dataclass(frozen=True)
class Network:
    label: str
    model: str
    recipe: str
    overrides: tuple[str, ...]
    peer_script: str


NETWORKS = {
    "lenet5": Network("LeNet-5", "lenet5", "lenet5-fashion-mnist", (), "keras_lenet5.py"),
    "simple_cnn": Network(
        "simple CNN",
        "simple_cnn",
        "simple-cnn-mnist",  # 002 answer 6's settings: batch 128, Adam 1e-3
        ("data.source=fashion-mnist", "model.name=simple_cnn", "optim.optimizer=adam", "train.batch_size=128"),
        "keras_simple_cnn.py",
    ),
}


@dataclass
class Result:
    network: str
    name: str
    epochs: int
    train_spe: float
    epoch_spe: float | None
    first_epoch: float | None
    test_acc: float


def steady(values: list[float]) -> float:
    return mean(values[1:] if len(values) > 1 else values)


# --------------------------------------------------------------------------- the Keras peers


def _pip_has_wheel(pip: Path, package: str, into: Path) -> bool:
    done = subprocess.run([str(pip), "download", "--no-deps", "-d", str(into), package], capture_output=True)
    return done.returncode == 0


def peers_python() -> Path:
    """The peers' interpreter with TensorFlow, creating `.venv-peers/` the first time."""
    python = PEERS_VENV / "bin" / "python"
    if (
        python.exists()
        and subprocess.run([str(python), "-c", "import tensorflow"], capture_output=True).returncode == 0
    ):
        return python
    print(f"creating {PEERS_VENV.relative_to(ROOT)} with TensorFlow for the Keras peers (once; a few minutes)")
    subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    pip = PEERS_VENV / "bin" / "pip"
    with tempfile.TemporaryDirectory() as wheels:
        for package in ("tensorflow-cpu", "tensorflow"):
            if _pip_has_wheel(pip, package, Path(wheels)):
                subprocess.run([str(pip), "install", "--find-links", wheels, package], check=True)
                return python
    sys.exit("neither tensorflow-cpu nor tensorflow has a wheel for this Python here; run with --skip-keras")


def keras_peer(python: Path, net: Network, epochs: int, data_dir: Path) -> Result:
    cmd = [str(python), str(PEERS / net.peer_script), "--epochs", str(epochs), "--data-dir", str(data_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        sys.exit(f"{net.peer_script} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    out = json.loads(lines[-1])
    return Result(
        net.label,
        f"Keras (seed), TF {out['tensorflow']}",
        out["epochs"],
        out["train_seconds_per_epoch"],
        out["seconds_per_epoch"],
        out["first_epoch_seconds"],
        out["test_accuracy"],
    )


# --------------------------------------------------------------------------- cnnlab and the tutorial loop


def cnnlab_run(
    net: Network, epochs: int, out: Path, threads: int | None, precision: str = "fp32"
) -> tuple[Result, int]:
    """cnnlab's result and the number of training images per epoch."""
    extra = [f"train.threads={threads}"] if threads else []
    cfg = load_config(
        net.recipe, overrides=[*net.overrides, f"train.epochs={epochs}", f"train.precision={precision}", *extra]
    )
    summary = train(cfg, out / f"{net.model}-{precision}", overwrite=True)
    rows = bundle.read_history(summary.run_dir / bundle.HISTORY)
    card = bundle.read_card(summary.run_dir)
    train_s = [r["train_seconds"] for r in rows]
    epoch_s = [r["train_seconds"] + r["eval_seconds"] for r in rows]
    images = round(rows[-1]["images_per_second"] * rows[-1]["train_seconds"])
    result = Result(
        net.label,
        "cnnlab" if precision == "fp32" else f"cnnlab {precision} autocast",
        len(rows),
        steady(train_s),
        steady(epoch_s),
        epoch_s[0],
        card.metrics["test_accuracy"],
    )
    return result, images


def tutorial_run(net: Network, epochs: int, data_dir: Path, images_per_epoch: int) -> Result:
    rate, acc = tutorial_loop(data_dir, epochs, net.model)
    return Result(net.label, "PyTorch tutorial loop", epochs, images_per_epoch / rate, None, None, acc)


# --------------------------------------------------------------------------- FLOP/s


def forward_flops_per_image(model_name: str, batch: int = 128) -> float:
    size = get_spec(model_name).input_size
    model = create_model(model_name, 10, 1, size)
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(batch, 1, size, size))
    return counter.get_total_flops() / batch


def gemm_rate(n: int = 2048, repeats: int = 7) -> float:
    """Best fp32 FLOP/s of an n x n x n torch.mm."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


# --------------------------------------------------------------------------- report


def _fmt(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else format(value, f"{width}{spec}")


def print_table(results: list[Result]) -> None:
    head = (
        f"{'network':<11} {'implementation':<26} {'epochs':>6} {'train s/ep':>10} {'epoch s':>8} "
        f"{'1st epoch':>9} {'test acc':>8} {'ratio train':>11} {'ratio epoch':>11}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for r in results:
        ours = next(c for c in results if c.network == r.network and c.name == "cnnlab")
        ratio_train = r.train_spe / ours.train_spe
        ratio_epoch = r.epoch_spe / ours.epoch_spe if r.epoch_spe and ours.epoch_spe else None
        print(
            f"{r.network:<11} {r.name:<26} {r.epochs:>6} {r.train_spe:>10.2f} {_fmt(r.epoch_spe, '.2f', 8)} "
            f"{_fmt(r.first_epoch, '.2f', 9)} {r.test_acc:>8.4f} {ratio_train:>10.2f}x "
            f"{_fmt(ratio_epoch, '.2f', 10) + ('x' if ratio_epoch else '')}"
        )


# --------------------------------------------------------------------------- time to accuracy

FAST = {"lenet5": "lenet5-fashion-mnist-fast", "simple_cnn": "simple-cnn-fashion-mnist-fast"}
"""cnnlab's fast recipe for each network of NETWORKS."""
SPEEDUP_TARGET, ACCURACY_MARGIN = 3.0, 0.003


@dataclass
class Fit:
    seconds: float
    """Keras: model.fit's wall time; cnnlab: its training plus validation passes."""
    wall: float
    """The whole run as a user waits for it (cnnlab: train(), data loading and test pass included)."""
    test_acc: float


def keras_fit(python: Path, net: Network, data_dir: Path) -> Fit:
    cmd = [str(python), str(PEERS / net.peer_script), "--data-dir", str(data_dir)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        sys.exit(f"{net.peer_script} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    out = json.loads(lines[-1])
    return Fit(out["train_time"], wall, out["test_accuracy"])


def cnnlab_fast(recipe: str, out: Path, threads: int | None) -> Fit:
    cfg = load_config(recipe, overrides=[f"train.threads={threads}"] if threads else [])
    start = time.perf_counter()
    summary = train(cfg, out / recipe, overwrite=True)
    wall = time.perf_counter() - start
    card = bundle.read_card(summary.run_dir)
    return Fit(summary.train_seconds + summary.eval_seconds, wall, card.metrics["test_accuracy"])


def time_to_accuracy(args: argparse.Namespace, data_dir: Path) -> None:
    python = peers_python()
    fits: dict[tuple[str, str], list[Fit]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):  # interleaved, so a slow spell of the machine hits both sides
            for key, net in NETWORKS.items():
                print(f"[{repeat + 1}/{args.repeats}] {net.label}: the seed's Keras fit ...", flush=True)
                fits.setdefault((key, "keras"), []).append(keras_fit(python, net, data_dir))
                print(f"  {fits[key, 'keras'][-1]}", flush=True)
                print(f"[{repeat + 1}/{args.repeats}] {net.label}: cnnlab {FAST[key]} ...", flush=True)
                fits.setdefault((key, "cnnlab"), []).append(cnnlab_fast(FAST[key], Path(tmp), args.threads))
                print(f"  {fits[key, 'cnnlab'][-1]}", flush=True)
    head = (
        f"{'network':<11} {'implementation':<34} {'runs':>4} {'fit s':>7} {'wall s':>7} {'test acc':>8} "
        f"{'speed-up':>8} {'acc diff':>8}  target"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for key, net in NETWORKS.items():
        keras, ours = fits[key, "keras"], fits[key, "cnnlab"]
        k_fit, k_acc = median(f.seconds for f in keras), median(f.test_acc for f in keras)
        o_fit, o_acc = median(f.seconds for f in ours), median(f.test_acc for f in ours)
        speedup, diff = k_fit / o_fit, o_acc - k_acc
        met = speedup >= SPEEDUP_TARGET and diff >= -ACCURACY_MARGIN
        for name, runs, extra in (
            (f"Keras seed ({NETWORKS[key].peer_script})", keras, ""),
            (f"cnnlab {FAST[key]}", ours, f"{speedup:>7.2f}x {100 * diff:>+7.2f}pt  {'met' if met else 'NOT met'}"),
        ):
            print(
                f"{net.label:<11} {name:<34} {len(runs):>4} {median(f.seconds for f in runs):>7.1f} "
                f"{median(f.wall for f in runs):>7.1f} {median(f.test_acc for f in runs):>8.4f} {extra}"
            )
    print(
        f"\nmedians of {args.repeats} runs; fit s: Keras model.fit wall time vs cnnlab's training + validation passes;"
        f"\nwall s: the whole run (process start, data loading and test pass included); target: >= "
        f"{SPEEDUP_TARGET:.0f}x at no less than Keras' accuracy - {100 * ACCURACY_MARGIN:.1f} points."
    )


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs-lenet", type=int, default=10, help="LeNet-5 epochs (the seed's 10)")
    parser.add_argument("--epochs-simple", type=int, default=5, help="simple CNN epochs (the seed's 5)")
    parser.add_argument("--skip-keras", action="store_true", help="no TensorFlow: cnnlab vs the tutorial loop")
    parser.add_argument("--quick", action="store_true", help="1 epoch of each: a smoke run")
    parser.add_argument("--per-epoch", action="store_true", help="the per-epoch comparison at the seeds' settings")
    parser.add_argument("--repeats", type=int, default=3, help="time to accuracy: runs of each side (median)")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads for cnnlab (train.threads) and the tutorial loop; default: torch's (one per core). "
        "The Keras peers keep TensorFlow's default",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir, _ = locate("fashion-mnist")
    if data_dir is None:
        sys.exit("Fashion-MNIST not found: apt-get install dataset-fashion-mnist")
    if args.per_epoch:
        per_epoch(args, data_dir)
    else:
        time_to_accuracy(args, data_dir)


def per_epoch(args: argparse.Namespace, data_dir: Path) -> None:
    epochs = {"lenet5": args.epochs_lenet, "simple_cnn": args.epochs_simple}
    if args.quick:
        epochs = dict.fromkeys(epochs, 1)
    python = None if args.skip_keras else peers_python()
    print(
        f"Fashion-MNIST from {data_dir}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"epochs: LeNet-5 {epochs['lenet5']}, simple CNN {epochs['simple_cnn']}",
        flush=True,
    )
    results: list[Result] = []
    flops: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, net in NETWORKS.items():
            if python is not None:
                print(f"{net.label}: the seed's Keras code ...", flush=True)
                results.append(keras_peer(python, net, epochs[key], data_dir))
                print(f"  {results[-1]}", flush=True)
            print(f"{net.label}: cnnlab ...", flush=True)
            ours, images = cnnlab_run(net, epochs[key], Path(tmp), args.threads)
            results.append(ours)
            print(f"  {ours}", flush=True)
            print(f"{net.label}: cnnlab with bf16 autocast ...", flush=True)
            results.append(cnnlab_run(net, epochs[key], Path(tmp), args.threads, "bf16")[0])
            print(f"  {results[-1]}", flush=True)
            print(f"{net.label}: the PyTorch tutorial loop ...", flush=True)
            results.append(tutorial_run(net, epochs[key], data_dir, images))
            print(f"  {results[-1]}", flush=True)
            flops[key] = 3 * forward_flops_per_image(net.model) * images / ours.train_spe
    peak = gemm_rate()
    print_table(results)
    print(
        "\nratio = peer s/epoch / cnnlab s/epoch; s/epoch are means over epochs 2..N (1st epoch shown apart);"
        "\n'epoch s' adds the validation pass (a Keras epoch includes it); the tutorial loop trains 60,000"
        "\nimages without validation, its s/epoch is rescaled to the same 54,000-image epoch."
    )
    for net in NETWORKS.values():
        rows = {r.name.split(",")[0]: r for r in results if r.network == net.label}
        bf16 = rows["cnnlab bf16 autocast"]
        peers = [(name, r) for name, r in rows.items() if not name.startswith("cnnlab")]
        print(
            f"{net.label}, cnnlab with bf16 autocast (test accuracy {bf16.test_acc:.4f}): "
            + ", ".join(f"{name} {r.train_spe / bf16.train_spe:.2f}x (train s/ep)" for name, r in peers)
        )
    print(f"\nfp32 GEMM (torch.mm 2048x2048, best of 7, {torch.get_num_threads()} threads): {peak / 1e9:.1f} GFLOP/s")
    for key, net in NETWORKS.items():
        print(
            f"cnnlab {net.label:<11} training: {flops[key] / 1e9:6.2f} GFLOP/s achieved "
            f"({forward_flops_per_image(net.model) / 1e6:.2f} MFLOP forward per image x 3), "
            f"{100 * flops[key] / peak:.1f}% of GEMM"
        )


if __name__ == "__main__":
    main()
