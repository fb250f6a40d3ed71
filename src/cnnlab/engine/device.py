"""Where the work runs and in which precision: the one place that turns `--device` / `train.device`
and `train.precision` into a torch device, an autocast dtype and a gradient scaler.

Every task (train, evaluate, calibrate, crossval, predict, explain, export, the service) resolves
its device here once, and everything below it follows the model: batches are moved to the device
of the model's parameters, results come back to the CPU for metrics and files.

- device: `auto` (the first CUDA GPU if there is one, else the CPU; in a data-parallel job the GPU
  of the process's LOCAL_RANK), `cpu`, `cuda` (GPU 0, or LOCAL_RANK's) or `cuda:N`.
- precision: `auto` picks bf16 autocast on a CPU with native BF16 units (AVX512-BF16 or AMX,
  detected at run time: emulated bf16 is slower than fp32) and fp32 on any other CPU; on CUDA bf16
  where the GPU has it (Ampere and later), else fp16 with a GradScaler. `fp32`, `bf16` and `fp16`
  are taken as given, except that fp16 needs a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
"""What `--device` and `train.device` accept (N: a GPU index)."""
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_SPEC = re.compile(r"(auto|cpu|cuda)(?::(\d+))?")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def parse_device(text: str | torch.device | None) -> str:
    """`text` checked and normalised (`auto`, `cpu`, `cuda` or `cuda:N`); None means `auto`.
    Refuses anything else in one line, before any work starts."""
    if text is None:
        return "auto"
    if isinstance(text, torch.device):
        text = str(text)
    spec = str(text).strip().lower()
    match = _SPEC.fullmatch(spec)
    if match is None or (match[2] is not None and match[1] != "cuda"):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N (N a GPU index), not '{text}'")
    return spec


def available() -> list[str]:
    """The devices this machine has, as `--device` names them: `cpu` and one `cuda:N` per GPU."""
    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]


def resolve_device(text: str | torch.device | None = "auto", *, local_rank: int | None = None) -> torch.device:
    """The torch device `text` names on this machine. `local_rank` (a data-parallel process's
    LOCAL_RANK) picks each process's own GPU for `auto` and `cuda`. A GPU that is not there is a
    one-line error that says what is."""
    spec = parse_device(text)
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = "this PyTorch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise ConfigError(f"device '{spec}' was asked for, but {why}; this machine has: {', '.join(available())}")
    count = torch.cuda.device_count()
    index = int(spec.split(":")[1]) if ":" in spec else None
    if local_rank is not None:
        if index is not None:
            raise ConfigError(
                f"device '{spec}' in a data-parallel job: each process takes the GPU of its LOCAL_RANK; "
                "pass --device cuda (or auto)"
            )
        index = local_rank
    index = 0 if index is None else index
    if index >= count:
        raise ConfigError(f"device 'cuda:{index}' does not exist; this machine has: {', '.join(available())}")
    return torch.device("cuda", index)


def device_name(device: torch.device) -> str:
    """`cpu`, or `cuda:0 (NVIDIA H200)`: what cards and logs record."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


# --------------------------------------------------------------------------- precision


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (x86: AVX512-BF16 or AMX tiles; Arm: the BF16
    extension). PyTorch's own probes first, then /proc/cpuinfo's flags."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, probe, None)
        if check is not None:
            try:
                if check():
                    return True
            except (RuntimeError, AttributeError):  # a probe this build lacks says nothing
                pass
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    lines = re.findall(r"^(?:flags|Features)\s*:\s*(.*)$", text, flags=re.MULTILINE)
    return bool(lines) and bool(set(lines[0].split()) & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_precision(precision: str, device: torch.device) -> str:
    """`fp32`, `bf16` or `fp16` for `precision` (`auto` or one of those) on `device`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, not '{precision}'")
    cuda = device.type == "cuda"
    if precision == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and not cuda:
        raise ConfigError("precision fp16 needs a CUDA device; on the CPU use bf16 or fp32 (or auto)")
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"{device} has no bf16; use precision fp16 or auto")
    return precision


def autocast(precision: str, device: torch.device | str = "cpu") -> contextlib.AbstractContextManager[Any]:
    """Mixed precision for a forward pass on `device`; fp32 runs as it is."""
    device = torch.device(device)
    resolved = resolve_precision(precision, device)
    if resolved == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[resolved])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
    if device.type == "cuda" and resolve_precision(precision, device) == "fp16":
        return torch.amp.GradScaler("cuda")
    return None


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """True fp32 matmuls and convolutions on a GPU (no TF32) for a while: a parity check compares
    against a CPU runtime at 1e-4 and TF32 alone differs by more."""
    if not torch.cuda.is_available():
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# --------------------------------------------------------------------------- placing things


@dataclass(frozen=True)
class Placement:
    """Where a run computes and how: what training resolves once and records in the model card."""

    device: torch.device
    precision: str
    """fp32, bf16 or fp16 (never auto)."""

    @property
    def name(self) -> str:
        return device_name(self.device)


def placement(device: str | torch.device | None = "auto", precision: str = "auto") -> Placement:
    """Resolve a device and a precision together; in a data-parallel job (WORLD_SIZE > 1) each
    process gets the GPU of its LOCAL_RANK."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else None
    where = resolve_device(device, local_rank=local_rank)
    return Placement(where, resolve_precision(precision, where))


def configure(device: torch.device) -> None:
    """Per-process settings that pay on `device`: cuDNN picks its fastest algorithms for the fixed
    input shapes every cnnlab model sees (one network input size per run)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.set_device(device)


def module_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (or buffer); the CPU for a model with neither."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def to_device(batch: Any, device: torch.device, non_blocking: bool | None = None) -> Any:
    """Tensors of `batch` (a tensor, or a tuple/list/dict of them) on `device`, the rest unchanged.
    Copies to a GPU do not wait (`non_blocking`, which overlaps them with compute when the source
    is in pinned memory); what is already there is not copied."""
    if non_blocking is None:
        non_blocking = device.type == "cuda"
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, tuple | list):
        return type(batch)(to_device(b, device, non_blocking) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device, non_blocking) for k, v in batch.items()}
    return batch


class OnDevice(nn.Module):
    """`net` on its own device behind a call that takes input from anywhere and answers on the
    input's device: code that builds its inputs on the CPU (CAM scores, masks) runs unchanged
    against a model on a GPU."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.train(net.training)  # a wrapper's own mode would otherwise read as "training"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(module_device(self.net))).to(x.device)
