"""A bundle's weights: safetensors written atomically, read back only when their sha256 matches
the model card's, and the model rebuilt from the card alone."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from cnnlab.bundle.card import ModelCard
from cnnlab.bundle.ensemble import empty_ensemble
from cnnlab.bundle.layout import WEIGHTS
from cnnlab.bundle.views import with_views
from cnnlab.errors import BundleError
from cnnlab.fileio import atomic_write_bytes
from cnnlab.models import create_model


def save_weights(state_dict: dict[str, torch.Tensor], path: Path) -> str:
    """Write safetensors weights atomically; returns their sha256. The tensors are written from the
    CPU whatever device trained them: the file holds no device, and loads on any."""
    data = save_safetensors({k: v.detach().cpu().contiguous() for k, v in state_dict.items()})
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_state(run_dir: Path, card: ModelCard) -> dict[str, torch.Tensor]:
    """The bundle's weights (CPU tensors), after checking them against the sha256 in the card."""
    path = Path(run_dir) / WEIGHTS
    if not path.is_file():
        raise BundleError(f"{run_dir}: {WEIGHTS} is missing")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != card.weights_sha256:
        raise BundleError(f"{path}: sha256 differs from the model card; the weights were changed or damaged")
    return load_safetensors(data)


def load_model(run_dir: Path, card: ModelCard) -> nn.Module:
    """The card's model with the bundle's weights (on the CPU; `Classifier` places it): one network,
    or an ensemble of `card.members`, averaged over the card's test-time views when it has any."""
    if card.members:
        size = card.input_size[0]
        model: nn.Module = empty_ensemble(card.architecture, card.members, card.num_classes, card.in_chans, size)
    else:
        model = create_model(card.architecture, card.num_classes, card.in_chans, card.input_size[0])
    state = load_state(run_dir, card)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BundleError(
            f"{run_dir}: weights do not fit {card.architecture} "
            f"(missing: {sorted(missing)[:5]}, unexpected: {sorted(unexpected)[:5]})"
        )
    return with_views(model, card.tta).eval()
