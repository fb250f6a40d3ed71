"""The seeds' networks: LeNet-5 and the course's small CNNs.

Each adapts to channels, classes and input size: the width of the first dense layer is
measured by running the convolutional trunk once on a blank input, so no flatten size is
ever written by hand (the seed's PyTorch SimpleCNN crashes on exactly such a number).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
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


class WholeInputConv2d(nn.Conv2d):
    """A convolution that, when its kernel covers its whole unpadded input (LeNet-5's C5: 5x5
    over S4's 5x5 maps), is computed as the one matrix product it is.

    Same weights, same result (to rounding), same `nn.Conv2d` for every tool that reads layers;
    but on a CPU a 1x1-output convolution goes through the convolution kernels' per-call set-up
    and costs about 2.5x the matrix product, forward and backward (bench/train_profile.py: one
    LeNet-5 step in bf16 loses about a tenth of its time there). Any other input size is an
    ordinary convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        whole = x.shape[-2:] == self.kernel_size and self.padding == (0, 0) and self.dilation == (1, 1)
        if whole and self.groups == 1:
            return F.linear(x.flatten(1), self.weight.flatten(1), self.bias)[:, :, None, None]
        return super().forward(x)


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
        ("c5", WholeInputConv2d(16, 120, 5)),
        ("act5", nn.Tanh()),
    )
    neck = [("f6", _DenseSlot(84)), ("act6", nn.Tanh())]
    return SequentialCNN(features, neck, num_classes, in_chans, input_size)


LENET5_C3_CONNECTIONS: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)  # fmt: skip
"""Table I of LeCun, Bottou, Bengio and Haffner (1998): the S2 maps each of C3's 16 maps reads.
Six read 3 neighbouring maps, six read 4 neighbouring, three read 4 non-neighbouring, one reads
all six: 60 of the 96 possible connections, so that different maps are forced to learn
different features (and, in 1998, to save computation)."""


class MaskedConv2d(nn.Conv2d):
    """A convolution whose output map `o` reads only the input maps `connections[o]`.

    The weight keeps its dense shape (so every tool that knows nn.Conv2d reads it) and is
    multiplied by a fixed 0/1 mask in the forward pass: unconnected weights then receive a zero
    gradient and, zeroed at construction, stay zero under any optimizer step."""

    def __init__(self, in_channels: int, connections: tuple[tuple[int, ...], ...], kernel_size: int) -> None:
        super().__init__(in_channels, len(connections), kernel_size)
        mask = torch.zeros(len(connections), in_channels, 1, 1)
        for out, inputs in enumerate(connections):
            mask[out, list(inputs)] = 1.0
        self.register_buffer("mask", mask)
        with torch.no_grad():
            self.weight.mul_(self.mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)

    @property
    def connections(self) -> int:
        return int(self.mask.sum())

    def effective_parameters(self) -> int:
        """Weights that can be non-zero plus biases (the paper's count of trainable parameters)."""
        kh, kw = self.kernel_size
        return self.connections * kh * kw + (self.bias.numel() if self.bias is not None else 0)


def effective_parameters(module: nn.Module) -> int:
    """Trainable parameters of `module`, masked weights of its MaskedConv2d layers excluded."""
    total = sum(p.numel() for p in module.parameters())
    for m in module.modules():
        if isinstance(m, MaskedConv2d):
            total -= sum(p.numel() for p in m.parameters(recurse=False)) - m.effective_parameters()
    return total


@register_model(
    "lenet5_sparse",
    input_size=32,
    in_chans=1,
    mean=(),
    std=(),
    cam_layer="features.c3",
    min_input_size=32,
    description="LeNet-5 as published: C3 reads 60 of the 96 S2->C3 map pairs (Table I of LeCun et al. 1998), "
    "60,806 effective parameters at 32x32",
)
def lenet5_sparse(num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    model = lenet5(num_classes, in_chans, input_size)
    model.features.c3 = MaskedConv2d(6, LENET5_C3_CONNECTIONS, 5)
    return model


@register_model(
    "mlp",
    input_size=28,
    in_chans=1,
    mean=(),
    std=(),
    cam_layer="features.unflatten",
    description="Fully connected 300-100 network (LeCun et al. 1998's dense baseline), ReLU; no spatial map, "
    "so Grad-CAM has nothing to explain",
)
def mlp(num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    # The dense 'trunk' ends in a 1x1 map so the model answers the same contract as the CNNs
    # (forward_features is 4-D, the CAM layer exists); `explain` then says there is no spatial map.
    features = _seq(
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(in_chans * input_size * input_size, 300)),
        ("act1", nn.ReLU(inplace=True)),
        ("fc2", nn.Linear(300, 100)),
        ("act2", nn.ReLU(inplace=True)),
        ("unflatten", nn.Unflatten(1, (100, 1, 1))),
    )
    return SequentialCNN(features, [], num_classes, in_chans, input_size)


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
