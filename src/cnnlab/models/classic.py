"""The seeds' networks: LeNet-5 and the course's small CNNs.

Each adapts to channels, classes and input size: the width of the first dense layer is
measured by running the convolutional trunk once on a blank input, so no flatten size is
ever written by hand (the seed's PyTorch SimpleCNN crashes on exactly such a number).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnnlab.models.outputs import num_outputs
from cnnlab.models.registry import register_model


class SequentialCNN(nn.Module):
    """A convolutional trunk, a dense neck and a linear classifier (timm's contract)."""

    def __init__(
        self,
        features: nn.Sequential,
        neck: list[tuple[str, nn.Module]],
        num_classes: int,
        in_chans: int,
        input_size: int,
        binary: bool = False,
    ) -> None:
        super().__init__()
        self.features = features
        self.binary = binary
        with torch.no_grad():
            flat = features(torch.zeros(1, in_chans, input_size, input_size)).flatten(1).shape[1]
        layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
        width = flat
        for name, module in neck:
            if isinstance(module, _DenseSlot):
                module = nn.Linear(width, module.width)
                width = module.out_features
            layers.append((name, module))
        self.neck = nn.Sequential(OrderedDict(layers))
        self.num_features = width
        self.classifier = nn.Linear(width, num_outputs(num_classes, binary))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.neck(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def trunk_blocks(self) -> list[nn.Module]:
        return [m for m in self.features if any(True for _ in m.parameters())]

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.classifier.in_features, num_outputs(num_classes, self.binary))


class _DenseSlot(nn.Module):
    """Placeholder for a Linear layer whose input width is only known after the trunk."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width


def _seq(*layers: tuple[str, nn.Module]) -> nn.Sequential:
    return nn.Sequential(OrderedDict(layers))


@register_model(
    "lenet5",
    input_size=32,
    in_chans=1,
    mean=(),
    std=(),
    cam_layer="features.c3",
    min_input_size=32,
    description="LeNet-5 (LeCun et al. 1998): C1 6@5x5, S2 avg-pool, C3 16@5x5, S4, C5 120, F6 84, tanh",
)
def lenet5(num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    # Full C3 connectivity (the seed's Keras model), hence 61,706 parameters at 32x32.
    features = _seq(
        ("c1", nn.Conv2d(in_chans, 6, 5)),
        ("act1", nn.Tanh()),
        ("s2", nn.AvgPool2d(2)),
        ("c3", nn.Conv2d(6, 16, 5)),
        ("act3", nn.Tanh()),
        ("s4", nn.AvgPool2d(2)),
        ("c5", nn.Conv2d(16, 120, 5)),
        ("act5", nn.Tanh()),
    )
    neck = [("f6", _DenseSlot(84)), ("act6", nn.Tanh())]
    return SequentialCNN(features, neck, num_classes, in_chans, input_size)


@register_model(
    "simple_cnn",
    input_size=28,
    in_chans=1,
    mean=(),
    std=(),
    cam_layer="features.conv2",
    min_input_size=10,
    description="Course CNN (002 answer 6): conv32-pool-conv64-pool-dense128-dropout0.4",
)
def simple_cnn(num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    features = _seq(
        ("conv1", nn.Conv2d(in_chans, 32, 3)),
        ("relu1", nn.ReLU(inplace=True)),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(32, 64, 3)),
        ("relu2", nn.ReLU(inplace=True)),
        ("pool2", nn.MaxPool2d(2)),
    )
    neck = [("fc1", _DenseSlot(128)), ("relu", nn.ReLU(inplace=True)), ("dropout", nn.Dropout(0.4))]
    return SequentialCNN(features, neck, num_classes, in_chans, input_size)


@register_model(
    "vgg_mini",
    input_size=32,
    in_chans=3,
    mean=(),
    std=(),
    cam_layer="features.conv4",
    min_input_size=4,
    description="VGG-style mini CNN (002 answer 7): 2x conv32, pool, 2x conv64, pool, dense256, dropout0.5",
)
def vgg_mini(num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    features = _seq(
        ("conv1", nn.Conv2d(in_chans, 32, 3, padding=1)),
        ("relu1", nn.ReLU(inplace=True)),
        ("conv2", nn.Conv2d(32, 32, 3, padding=1)),
        ("relu2", nn.ReLU(inplace=True)),
        ("pool1", nn.MaxPool2d(2)),
        ("conv3", nn.Conv2d(32, 64, 3, padding=1)),
        ("relu3", nn.ReLU(inplace=True)),
        ("conv4", nn.Conv2d(64, 64, 3, padding=1)),
        ("relu4", nn.ReLU(inplace=True)),
        ("pool2", nn.MaxPool2d(2)),
    )
    neck = [("fc1", _DenseSlot(256)), ("relu", nn.ReLU(inplace=True)), ("dropout", nn.Dropout(0.5))]
    return SequentialCNN(features, neck, num_classes, in_chans, input_size)


@register_model(
    "simple_cnn_torch",
    input_size=28,
    in_chans=1,
    mean=(),
    std=(),
    cam_layer="features.conv2",
    min_input_size=2,
    description=(
        "The seed's PyTorch SimpleCNN (002 answer 8) as printed: conv32, conv64, one pool, "
        "dense128, dropout0.4; its flatten width is measured, so the printed crash cannot happen"
    ),
)
def simple_cnn_torch(num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    # The printed fc1 expects 64*7*7 inputs but the forward pools once (64*14*14 at 28 px):
    # measuring the trunk makes the architecture as written trainable.
    features = _seq(
        ("conv1", nn.Conv2d(in_chans, 32, 3, 1, 1)),
        ("relu1", nn.ReLU(inplace=True)),
        ("conv2", nn.Conv2d(32, 64, 3, 1, 1)),
        ("relu2", nn.ReLU(inplace=True)),
        ("pool", nn.MaxPool2d(2)),
    )
    neck = [("fc1", _DenseSlot(128)), ("relu", nn.ReLU(inplace=True)), ("dropout", nn.Dropout(0.4))]
    return SequentialCNN(features, neck, num_classes, in_chans, input_size)


@register_model(
    "binary_cnn",
    input_size=150,
    in_chans=3,
    mean=(),
    std=(),
    cam_layer="features.conv2",
    min_input_size=10,
    binary=True,
    description="Course binary CNN (002 answer 9): 150 px, conv32-pool-conv64-pool-dense128, one sigmoid output",
)
def binary_cnn(num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    features = _seq(
        ("conv1", nn.Conv2d(in_chans, 32, 3)),
        ("relu1", nn.ReLU(inplace=True)),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(32, 64, 3)),
        ("relu2", nn.ReLU(inplace=True)),
        ("pool2", nn.MaxPool2d(2)),
    )
    neck = [("fc1", _DenseSlot(128)), ("relu", nn.ReLU(inplace=True)), ("dropout", nn.Dropout(0.5))]
    return SequentialCNN(features, neck, num_classes, in_chans, input_size, binary=True)


@register_model(
    "alexnet_small",
    input_size=227,
    in_chans=3,
    mean=(),
    std=(),
    cam_layer="features.conv2",
    min_input_size=35,
    description="The seed's AlexNet-like model (000 Q8): 96@11x11 stride 4, pool, 256@5x5, pool, dense4096; "
    "no adaptive pooling, so its dense layer sees all 256x13x13 values at 227 px (3x torchvision's AlexNet)",
)
def alexnet_small(num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    features = _seq(
        ("conv1", nn.Conv2d(in_chans, 96, 11, stride=4)),
        ("relu1", nn.ReLU(inplace=True)),
        ("pool1", nn.MaxPool2d(3, stride=2)),
        ("conv2", nn.Conv2d(96, 256, 5, padding=2)),
        ("relu2", nn.ReLU(inplace=True)),
        ("pool2", nn.MaxPool2d(3, stride=2)),
    )
    neck = [("fc1", _DenseSlot(4096)), ("relu", nn.ReLU(inplace=True))]
    return SequentialCNN(features, neck, num_classes, in_chans, input_size)
