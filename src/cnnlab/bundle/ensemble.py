"""An ensemble bundle's model: K member models of one architecture, their logits averaged.

The ensemble answers with the MEAN OF THE MEMBERS' LOGITS, not the mean of their probabilities:
it is then one model with one set of logits, so everything built on a bundle's logits applies to
it unchanged: temperature and vector scaling (`cnnlab calibrate`), the operating point, Grad-CAM
(the gradient of one class score), export (one graph, one `logits` output, checked for parity)
and the drift monitor. Softmax of the mean logit is the normalised geometric mean of the members'
probabilities, a standard way to combine them.

Members may have been trained with different input statistics (a model trained from scratch
standardises with its own training split's mean and std): each member gets the ensemble's input
through a per-channel affine map to its own standardisation (buffers `scale` and `shift`, saved
with the weights), so the ensemble has one preprocessing in its card like any bundle.

The weights are one model.safetensors, each member's keys under `members.K.` (`members.K.net.`
for the member network); the card's `members` says how many to build (`empty_ensemble`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cnnlab.data.preprocess import Preprocessing
from cnnlab.errors import BundleError
from cnnlab.models import create_model


class Member(nn.Module):
    """One member network behind the map from the ensemble's standardised input to its own."""

    def __init__(self, net: nn.Module, in_chans: int) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("scale", torch.ones(1, in_chans, 1, 1))
        self.register_buffer("shift", torch.zeros(1, in_chans, 1, 1))

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.adapt(x))


class LogitMean(nn.Module):
    """The mean of the members' logits. `forward_features` is the members' features side by side
    (channels of member 0, then member 1, ...), so the drift monitor's embedding covers every
    member; `forward_head` splits them again and averages the members' heads:
    `forward_head(forward_features(x))` equals `forward(x)`."""

    def __init__(self, members: Sequence[Member]) -> None:
        super().__init__()
        if not members:
            raise BundleError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(dim=0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m.net.forward_features(m.adapt(x)) for m in self.members], dim=1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        parts = features.chunk(len(self.members), dim=1)
        return torch.stack([m.net.forward_head(f) for m, f in zip(self.members, parts, strict=True)]).mean(dim=0)


def member_cam_layer(layer: str) -> str:
    """The ensemble's CAM layer: the member's layer inside member 0. Grad-CAM there explains the
    ensemble's class score through member 0 (pytorch-grad-cam hooks one call of one module, and
    the members run one after the other: no single layer sees all of them)."""
    return f"members.0.net.{layer}" if layer else ""


def assemble(nets: Sequence[nn.Module], preps: Sequence[Preprocessing]) -> tuple[LogitMean, Preprocessing]:
    """The ensemble of trained `nets` (each with the preprocessing its card gave) and the one
    preprocessing the ensemble's card holds: the members' sizes and crop, their average mean/std."""
    first = preps[0]
    for k, prep in enumerate(preps[1:], start=2):
        same = (prep.channels, prep.resize_to, prep.pad_to, prep.crop)
        if same != (first.channels, first.resize_to, first.pad_to, first.crop):
            raise BundleError(f"member {k} fits images differently from member 1 ({prep} vs {first}): not one ensemble")
    mean = tuple(float(sum(p.mean[c] for p in preps) / len(preps)) for c in range(first.channels))
    std = tuple(float(sum(p.std[c] for p in preps) / len(preps)) for c in range(first.channels))
    members = []
    for net, prep in zip(nets, preps, strict=True):
        member = Member(net, first.channels)
        # member input = (pixel - mean_k) / std_k = x * std / std_k + (mean - mean_k) / std_k
        own_mean, own_std = torch.tensor(prep.mean), torch.tensor(prep.std)
        member.scale.copy_((torch.tensor(std) / own_std).view(1, -1, 1, 1))
        member.shift.copy_(((torch.tensor(mean) - own_mean) / own_std).view(1, -1, 1, 1))
        members.append(member)
    ensemble = LogitMean(members).eval()
    return ensemble, Preprocessing(first.channels, first.resize_to, first.pad_to, mean, std, first.crop)


def empty_ensemble(architecture: str, members: int, num_classes: int, in_chans: int, input_size: int) -> LogitMean:
    """`members` untrained members of `architecture`, ready for an ensemble bundle's weights."""
    return LogitMean([Member(create_model(architecture, num_classes, in_chans, input_size), in_chans)
                      for _ in range(members)])  # fmt: skip
