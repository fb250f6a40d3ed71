"""Inference speed per backend: torch eager, torch.compile and ONNX Runtime, one run, ratios to eager.

For lenet5 at 32 px and resnet50, efficientnet_b0, efficientnet_lite0 at 224 px: batch-1 latency
(p50, p95 over repeated calls) and batch-32 throughput, plus each configuration's peak memory
(every model/backend pair runs in its own process, so peaks do not mix). With --run BUNDLE it
also times `cnnlab predict` over a folder (default: ../shared/data/flowers/train, 1,050 JPEGs)
and shows how the time splits between decoding and the model.

    python bench/inference.py [--models lenet5,efficientnet_lite0] [--backends torch,onnx] [--run runs/lite0-flowers]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SIZES = {"lenet5": (1, 32), "resnet50": (3, 224), "efficientnet_b0": (3, 224), "efficientnet_lite0": (3, 224)}


def measure(name: str, backend: str, repeats: int) -> dict[str, float]:
    """In this process: latency at batch 1 and throughput at batch 32 of one model on one backend."""
    from cnnlab.bundle.backends import make_runner
    from cnnlab.export.onnx import _write
    from cnnlab.models import create_model

    chans, size = SIZES[name]
    torch.manual_seed(0)
    model = create_model(name, 10, chans, size).eval()
    x1, x32 = torch.randn(1, chans, size, size), torch.randn(32, chans, size, size)
    if backend == "onnx":
        path = Path(tempfile.mkdtemp()) / "m.onnx"
        _write(model, x1, path, "onnx", 18, True)
        run = make_runner(path, "onnx", embedded=False)
    else:
        net = torch.compile(model) if backend == "compile" else model

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return net(x)

    for _ in range(3):  # warm-up (and compilation)
        run(x1)
        run(x32)
    latencies = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(x1)
        latencies.append((time.perf_counter() - start) * 1000)
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < 3.0:
        run(x32)
        n += 32
    return {
        "p50_ms": float(np.percentile(latencies, 50)),
        "p95_ms": float(np.percentile(latencies, 95)),
        "throughput": n / (time.perf_counter() - start),
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def predict_profile(run: Path, folder: Path, backend: str) -> None:
    from cnnlab.bundle.classifier import load
    from cnnlab.tasks.predict import expand_inputs, predict_files

    clf = load(run, backend)
    files = expand_inputs([str(folder)])
    results, timing = predict_files(clf, files)
    model = timing.model_seconds / timing.total_seconds
    decode = timing.decode_seconds / timing.total_seconds
    print(
        f"cnnlab predict {run.name} on {len(results)} images ({backend}): {timing.total_seconds:.1f} s, "
        f"{len(results) / timing.total_seconds:.0f} img/s; model {model:.0%}, decoding {decode:.0%}, "
        f"other {1 - model - decode:.0%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(SIZES))
    parser.add_argument("--backends", default="torch,compile,onnx")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument(
        "--folder", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/flowers/train"
    )
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.repeats)))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch-1 latency and batch-32 throughput")
    header = ("model", 20, "<"), ("backend", 9, "<"), ("p50 ms", 9, ">"), ("p95 ms", 9, ">"), ("img/s @32", 11, ">")
    header += (("peak MB", 9, ">"), ("b1 vs eager", 13, ">"), ("b32 vs eager", 14, ">"))
    print("".join(f"{text:{align}{width}}" for text, width, align in header))
    for name in args.models.split(","):
        eager = None
        for backend in args.backends.split(","):
            out = subprocess.run(
                [sys.executable, __file__, "--one", name, backend, "--repeats", str(args.repeats)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if out.returncode != 0:
                print(f"{name:<20}{backend:<9} failed: {out.stderr.strip().splitlines()[-1][:80]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            eager = eager or (r if backend == "torch" else None)
            b1 = f"{eager['p50_ms'] / r['p50_ms']:.2f}x" if eager else "-"
            b32 = f"{r['throughput'] / eager['throughput']:.2f}x" if eager else "-"
            print(
                f"{name:<20}{backend:<9}{r['p50_ms']:>9.2f}{r['p95_ms']:>9.2f}{r['throughput']:>11.0f}"
                f"{r['peak_mb']:>9.0f}{b1:>13}{b32:>14}",
                flush=True,
            )
    if args.run is not None:
        for backend in ("torch", "onnx"):
            predict_profile(args.run, args.folder, backend)


if __name__ == "__main__":
    main()
