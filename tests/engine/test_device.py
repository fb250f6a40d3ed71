"""engine.device, the one place that decides where work runs and in which precision. Every test
asserts something on a machine with a GPU and on one without (nothing is skipped)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab.engine import device as dev
from cnnlab.errors import CnnlabError, ConfigError

HAS_CUDA = torch.cuda.is_available()


@pytest.mark.parametrize(
    ("text", "expected"), [("auto", "auto"), ("cpu", "cpu"), (" CUDA ", "cuda"), ("cuda:0", "cuda:0"), (None, "auto")]
)
def test_device_strings_are_normalised(text: str | None, expected: str) -> None:
    assert dev.parse_device(text) == expected


@pytest.mark.parametrize("text", ["cudax", "cuda:-1", "tpu", "cpu:0", "cuda:", "", "gpu", "cuda:0:1"])
def test_bad_device_strings_are_refused_in_one_line(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        dev.parse_device(text)
    message = str(info.value)
    assert "\n" not in message and f"'{text}'" in message and "auto, cpu, cuda or cuda:N" in message


def test_cuda_works_where_there_is_one_and_is_a_one_line_error_elsewhere() -> None:
    if HAS_CUDA:
        where = dev.resolve_device("cuda")
        assert where == torch.device("cuda", 0)
        assert torch.ones(2, device=where).sum().item() == 2.0
        assert dev.device_name(where).startswith("cuda:0 (")
    else:
        with pytest.raises(ConfigError) as info:
            dev.resolve_device("cuda")
        message = str(info.value)
        assert "\n" not in message and "'cuda'" in message and "this machine has: cpu" in message


def test_a_gpu_index_beyond_the_machine_is_refused() -> None:
    count = torch.cuda.device_count() if HAS_CUDA else 0
    with pytest.raises(ConfigError, match="this machine has: cpu"):
        dev.resolve_device(f"cuda:{count}")


def test_auto_and_cpu_resolve() -> None:
    assert dev.resolve_device("cpu") == torch.device("cpu")
    assert dev.resolve_device("auto") == (torch.device("cuda", 0) if HAS_CUDA else torch.device("cpu"))
    assert dev.device_name(torch.device("cpu")) == "cpu"
    assert dev.available()[0] == "cpu" and len(dev.available()) == 1 + (torch.cuda.device_count() if HAS_CUDA else 0)


def test_a_data_parallel_process_takes_the_gpu_of_its_local_rank() -> None:
    if HAS_CUDA:
        assert dev.resolve_device("auto", local_rank=0) == torch.device("cuda", 0)
    else:
        assert dev.resolve_device("auto", local_rank=0) == torch.device("cpu")
    # An explicit index in a job would put every process on one GPU (or there is none): refused.
    with pytest.raises(ConfigError):
        dev.resolve_device("cuda:0", local_rank=1)


def test_placement_reads_the_job_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    where = dev.placement("cpu", "fp32")
    assert where.device == torch.device("cpu") and where.precision == "fp32" and where.name == "cpu"


# --------------------------------------------------------------------------- precision


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_precision_auto_on_the_cpu_follows_native_bf16(monkeypatch: pytest.MonkeyPatch, native: bool, expected: str):
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: native)
    assert dev.resolve_precision("auto", torch.device("cpu")) == expected
    assert dev.placement("cpu", "auto").precision == expected


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16"), (False, "fp16")])
def test_precision_auto_on_cuda_is_bf16_where_the_gpu_has_it(monkeypatch: pytest.MonkeyPatch, bf16: bool, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert dev.resolve_precision("auto", torch.device("cuda", 0)) == expected


def test_explicit_precisions(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: False)
    assert dev.resolve_precision("bf16", cpu) == "bf16"  # asked for: emulated, but given
    assert dev.resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        dev.resolve_precision("fp16", cpu)
    with pytest.raises(ConfigError, match="precision must be one of"):
        dev.resolve_precision("fp8", cpu)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(ConfigError, match="no bf16"):
        dev.resolve_precision("bf16", torch.device("cuda", 0))


def test_native_bf16_detection_agrees_with_the_cpu_flags() -> None:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        assert dev.cpu_has_native_bf16() is True
    else:
        assert isinstance(dev.cpu_has_native_bf16(), bool)


def test_autocast_runs_in_the_resolved_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    a = torch.randn(8, 8)
    with dev.autocast("bf16", "cpu"):
        assert (a @ a).dtype == torch.bfloat16
    with dev.autocast("fp32", "cpu"):
        assert (a @ a).dtype == torch.float32
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: False)
    with dev.autocast("auto", torch.device("cpu")):
        assert (a @ a).dtype == torch.float32
    assert dev.grad_scaler("bf16", torch.device("cpu")) is None
    assert dev.grad_scaler("fp32", torch.device("cpu")) is None
    if HAS_CUDA:
        assert isinstance(dev.grad_scaler("fp16", torch.device("cuda", 0)), torch.amp.GradScaler)


# --------------------------------------------------------------------------- moving things


def test_to_device_moves_tensors_and_leaves_the_rest() -> None:
    where = dev.resolve_device("auto")
    x, y = torch.ones(2, 3), torch.tensor([1, 0])
    moved = dev.to_device({"batch": (x, y), "name": "n", "k": 3}, where)
    assert moved["name"] == "n" and moved["k"] == 3 and isinstance(moved["batch"], tuple)
    assert all(t.device.type == where.type for t in moved["batch"])
    assert torch.equal(moved["batch"][0].cpu(), x)
    assert dev.to_device(x, torch.device("cpu")) is x  # already there: not copied


def test_module_device_and_on_device() -> None:
    where = dev.resolve_device("auto")
    net = nn.Linear(3, 2).to(where).eval()
    assert dev.module_device(net).type == where.type
    assert dev.module_device(nn.ReLU()) == torch.device("cpu")
    wrapped = dev.OnDevice(net)
    assert not wrapped.training  # mirrors the network's mode
    out = wrapped(torch.ones(4, 3))  # input from the CPU, whatever the network is on
    assert out.device == torch.device("cpu") and out.shape == (4, 2)


def test_fit_and_the_loop_run_on_an_explicit_cpu(tiny_cfg) -> None:
    """The plain loop moves CPU batches to the model's device and trains there."""
    from cnnlab.engine.loop import evaluate_epoch, train_one_epoch
    from cnnlab.engine.losses import make_loss

    where = dev.resolve_device("cpu")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).to(where)
    x, y = torch.randn(32, 3, 2, 2), torch.randint(0, 3, (32,))
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    stats = train_one_epoch(net, batches, optimizer, make_loss(False), binary=False, precision="fp32")
    assert stats.images == 32 and 0 <= stats.accuracy <= 1
    ev = evaluate_epoch(net, batches, make_loss(False), binary=False, precision="bf16", keep_outputs=True)
    assert ev.logits is not None and ev.logits.device == torch.device("cpu") and ev.logits.dtype == torch.float32


def test_the_config_defaults_are_auto() -> None:
    from cnnlab.config import TrainConfig, load_config

    assert TrainConfig().device == "auto" and TrainConfig().precision == "auto"
    assert load_config(None, ["train.device=cuda:1", "train.precision=fp16"]).train.precision == "fp16"
    with pytest.raises(CnnlabError):
        load_config(None, ["train.precision=fp64"])
