from __future__ import annotations

import pytest
import torch

from cnnlab.config import OptimConfig
from cnnlab.engine.schedule import LRPolicy, make_optimizer


def test_warmup_then_cosine_to_zero() -> None:
    policy = LRPolicy(OptimConfig(schedule="cosine", warmup_epochs=1), epochs=5, steps_per_epoch=10)
    assert policy.factor(0) == pytest.approx(0.1)
    assert policy.factor(9) == pytest.approx(1.0)
    assert policy.factor(10) == pytest.approx(1.0)
    assert policy.factor(30) == pytest.approx(0.5)
    assert policy.factor(49) < 0.01
    factors = [policy.factor(s) for s in range(10, 50)]
    assert factors == sorted(factors, reverse=True)


def test_step_schedule() -> None:
    policy = LRPolicy(OptimConfig(schedule="step", step_size=2, gamma=0.5), epochs=6, steps_per_epoch=3)
    assert [policy.factor(e * 3) for e in range(6)] == [1, 1, 0.5, 0.5, 0.25, 0.25]


def test_plateau_decays_after_patience_and_survives_a_checkpoint() -> None:
    policy = LRPolicy(OptimConfig(schedule="plateau", plateau_patience=1, gamma=0.1), epochs=10, steps_per_epoch=1)
    for loss in (1.0, 0.9, 0.95, 0.95):
        policy.end_epoch(loss)
    assert policy.factor(0) == pytest.approx(0.1)
    restored = LRPolicy(OptimConfig(schedule="plateau", plateau_patience=1, gamma=0.1), 10, 1)
    restored.load_state_dict(policy.state_dict())
    assert restored.factor(5) == policy.factor(5)


def test_policy_sets_every_group_from_its_own_base_rate() -> None:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = make_optimizer([{"params": [a]}, {"params": [b], "base_lr": 1e-4}], OptimConfig(lr=1e-2, schedule="none"))
    LRPolicy(OptimConfig(schedule="none", warmup_epochs=1), 2, 4).apply(opt, 1)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([5e-3, 5e-5])


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_optimizers(name: str) -> None:
    p = torch.nn.Parameter(torch.ones(3))
    opt = make_optimizer([{"params": [p]}], OptimConfig(optimizer=name, lr=0.1))
    (p**2).sum().backward()
    opt.step()
    assert (p < 1).all()
