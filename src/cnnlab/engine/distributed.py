"""Data-parallel training through PyTorch's own engine: DistributedDataParallel, launched by
torchrun (its elastic launcher), gloo on CPU and nccl on GPU.

A process is part of a job when torchrun's environment says so (WORLD_SIZE > 1): `cnnlab train
--nproc N` starts N local processes through torchrun, and `cnnlab train` started by an external
`torchrun --nnodes ... --rdzv-endpoint ...` joins that job. Every rank trains on its share of
each global batch; rank 0 alone writes the bundle, the checkpoints and the log.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from cnnlab.errors import CnnlabError

# A collective that waits longer than this means a rank is gone: fail instead of hanging.
TIMEOUT = timedelta(seconds=float(os.environ.get("CNNLAB_DIST_TIMEOUT", "300")))


@dataclass(frozen=True)
class Rank:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup(device: torch.device | None = None) -> Rank:
    """Join the job torchrun started (idempotent); a plain process is rank 0 of 1. The backend
    follows where this process trains: NCCL on its own GPU (`device`, the GPU of its LOCAL_RANK as
    `engine.device.placement` resolves it), gloo on the CPU. None: the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Rank()
    if not dist.is_initialized():
        cuda = device is not None and device.type == "cuda"
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    return Rank(dist.get_rank(), dist.get_world_size())


def _collective_device() -> torch.device:
    """NCCL reduces tensors on the process's GPU only; gloo on the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def current() -> Rank:
    if dist.is_available() and dist.is_initialized():
        return Rank(dist.get_rank(), dist.get_world_size())
    return Rank()


def sum_across(values: Sequence[float]) -> list[float]:
    """Element-wise sum over every rank (the values themselves in a single process)."""
    if not current().active:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return t.cpu().tolist()


def gather_across(t: torch.Tensor) -> torch.Tensor:
    """Every rank's rows of `t`, concatenated in rank order (`t` itself in a single process)."""
    if not current().active:
        return t
    parts: list[torch.Tensor | None] = [None] * current().world
    dist.all_gather_object(parts, t.cpu())  # this job's own tensors, between its own processes
    return torch.cat([p for p in parts if p is not None])


def all_finite(loss: torch.Tensor) -> bool:
    """Whether the loss is finite on every rank: all ranks must agree to stop, or the ones that
    carry on would wait for the others forever."""
    finite = bool(torch.isfinite(loss.detach()))
    return sum_across([0.0 if finite else 1.0])[0] == 0.0


def shutdown() -> None:
    """Leave the job after the last collective. Every rank must: a process that exits with the
    group still up can abort in the communication library's threads (seen: SIGABRT at exit)."""
    if current().active:
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if current().active:
        dist.barrier()


def wrap(net: nn.Module, sync_bn: bool = False) -> nn.Module:
    """`net` as DistributedDataParallel when in a job (unchanged otherwise). Only parameters that
    train in this stage take part in the gradient all-reduce."""
    if not current().active:
        return net
    first = next(net.parameters(), None)
    on_gpu = first is not None and first.device.type == "cuda"
    if sync_bn:
        if not on_gpu:
            raise CnnlabError("train.sync_bn needs GPUs: PyTorch's SyncBatchNorm does not run on the CPU")
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    if not any(p.requires_grad for p in net.parameters()):
        return net
    device_ids = [first.device.index] if on_gpu and first is not None else None
    # An auxiliary head (Inception) is unused when its trunk is frozen or at small inputs.
    unused = any("aux" in name.lower() for name, _ in net.named_modules())
    return nn.parallel.DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=unused)


def launch(nproc: int, args: Sequence[str]) -> int:
    """Run `cnnlab ARGS` as `nproc` local processes through torchrun; its exit code."""
    if nproc < 2:
        raise CnnlabError(f"--nproc must be at least 2 to launch processes, not {nproc}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise CnnlabError("--nproc inside a torchrun job: let torchrun start the processes")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        "--max-restarts=0", "-m", "cnnlab.cli", *args,
    ]  # fmt: skip
    env = dict(os.environ)
    # Each process gets its share of the cores (torchrun would otherwise set 1 and warn).
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.call(command, env=env)
