"""The CIFAR ResNets of He et al. 2016 (section 4.2) and their plain twins.

6n + 2 weight layers: a 3x3 stem convolution with 16 channels, three stages of n basic blocks
(two 3x3 convolutions each) at 16, 32 and 64 channels and 32, 16 and 8 px, global average
pooling and one dense layer. A stage's first block halves the side with stride 2; its shortcut
is the paper's option A (subsample, then pad the new channels with zeros), which has no
weights: the residual network and its plain twin (the same blocks with the addition removed)
have exactly the same parameters, so any difference between them is the skip connection's.

`cifar_resnet` also builds the variants the residual-connections recipe measures: without
BatchNorm, and with PyTorch's default initialisation instead of He's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.registry import register_model

STAGE_WIDTHS = (16, 32, 64)
INITS = ("kaiming", "default")


class PadShortcut(nn.Module):
    """Option A: identity on the kept channels, zeros for the new ones, every `stride`-th pixel."""

    def __init__(self, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.extra = extra_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, plus the shortcut when `residual`, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, residual: bool, batchnorm: bool) -> None:
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=not batchnorm)
        self.bn1 = nn.BatchNorm2d(cout) if batchnorm else nn.Identity()
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=not batchnorm)
        self.bn2 = nn.BatchNorm2d(cout) if batchnorm else nn.Identity()
        self.relu2 = nn.ReLU(inplace=True)
        self.shortcut = PadShortcut(cout - cin, stride) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        if self.residual:
            out = out + self.shortcut(x)
        return self.relu2(out)


class CifarResNet(nn.Module):
    def __init__(
        self,
        depth: int,
        num_classes: int,
        in_chans: int = 3,
        *,
        residual: bool = True,
        batchnorm: bool = True,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has 6n + 2 layers (20, 32, 44, 56, 110), not {depth}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, not '{init}'")
        n = (depth - 2) // 6
        self.depth, self.residual, self.batchnorm = depth, residual, batchnorm
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, STAGE_WIDTHS[0], 3, 1, 1, bias=not batchnorm),
            nn.BatchNorm2d(STAGE_WIDTHS[0]) if batchnorm else nn.Identity(),
            nn.ReLU(inplace=True),
        )
        width = STAGE_WIDTHS[0]
        for index, out in enumerate(STAGE_WIDTHS, start=1):
            blocks = [
                BasicBlock(width if b == 0 else out, out, 2 if (b == 0 and index > 1) else 1, residual, batchnorm)
                for b in range(n)
            ]
            setattr(self, f"layer{index}", nn.Sequential(*blocks))
            width = out
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = width
        self.classifier = nn.Linear(width, num_classes)
        if init == "kaiming":  # He et al.'s initialisation, as torchvision's ResNets do it
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer3(self.layer2(self.layer1(self.stem(x))))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.classifier.in_features, num_classes)

    def trunk_blocks(self) -> list[nn.Module]:
        return [self.stem, *self.layer1, *self.layer2, *self.layer3]

    def weight_layers(self) -> list[tuple[str, nn.Module]]:
        """The 6n + 2 weight layers, input side first: the depth the name counts."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def cifar_resnet(
    depth: int,
    num_classes: int = 10,
    in_chans: int = 3,
    *,
    residual: bool = True,
    batchnorm: bool = True,
    init: str = "kaiming",
) -> CifarResNet:
    """Any depth 6n + 2, residual or plain, with or without BatchNorm, He's or PyTorch's init."""
    return CifarResNet(depth, num_classes, in_chans, residual=residual, batchnorm=batchnorm, init=init)


def _register(depth: int, residual: bool) -> None:
    kind = "ResNet" if residual else "plain twin of the ResNet"
    name = f"{'resnet' if residual else 'plain'}{depth}_cifar"

    @register_model(
        name,
        input_size=32,
        in_chans=3,
        mean=(),
        std=(),
        cam_layer="layer3",
        min_input_size=8,
        description=f"CIFAR {kind}-{depth} (He et al. 2016): 3x3 convs, 16/32/64 channels, "
        + ("identity shortcuts (option A)" if residual else "no shortcuts, otherwise identical"),
    )
    def build(num_classes: int, in_chans: int, input_size: int) -> nn.Module:
        return cifar_resnet(depth, num_classes, in_chans, residual=residual)


for _depth in (20, 56):
    for _residual in (True, False):
        _register(_depth, _residual)
