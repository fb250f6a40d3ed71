"""The zoo: torchvision's classics and any timm model, behind timm's contract.

Every model here answers `forward_features`, `forward_head`, `reset_classifier` and
`trunk_blocks()` (the feature extractor as an ordered list of blocks, input side first, which
transfer learning unfreezes from the top). torchvision builds 3-channel networks; other channel
counts are made by `adapt_input_channels`, the same rule as for pretrained weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision.models as tvm
from torch import nn

from cnnlab.errors import ModelError
from cnnlab.models.registry import register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TorchvisionNet(nn.Module):
    """A torchvision classifier split into trunk, pooling and classifier."""

    def __init__(
        self,
        net: nn.Module,
        trunk: list[str],
        head: Callable[[nn.Module, torch.Tensor], torch.Tensor],
        classifier: str,
        blocks: Callable[[nn.Module], list[nn.Module]],
        aux: str | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self._trunk = trunk
        self._head = head
        self._classifier = classifier
        self._blocks = blocks
        self._aux = aux

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.aux_logits = None
        for name in self._trunk:
            x = getattr(self.net, name)(x)
            if self._aux and name == "Mixed_6e" and self.training and self._aux_trainable() and x.shape[-1] >= 17:
                # Inception's auxiliary classifier: a training-time regulariser, absent at inference.
                # Its 5x5 pooling and convolution need Mixed_6e at 17x17 (299 px inputs); below that
                # the model trains without it, as Keras' InceptionV3 always does.
                self.aux_logits = getattr(self.net, self._aux)(x)
        return x

    def _aux_trainable(self) -> bool:
        return any(p.requires_grad for p in getattr(self.net, self._aux).parameters())

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self._head(self.net, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Linear:
        return self.net.get_submodule(self._classifier)

    def reset_classifier(self, num_classes: int) -> None:
        old = self.get_classifier()
        parent_name, _, child = self._classifier.rpartition(".")
        parent = self.net.get_submodule(parent_name) if parent_name else self.net
        setattr(parent, child, nn.Linear(old.in_features, num_classes))
        if self._aux:
            aux_fc = getattr(self.net, self._aux).fc
            getattr(self.net, self._aux).fc = nn.Linear(aux_fc.in_features, num_classes)

    def trunk_blocks(self) -> list[nn.Module]:
        return self._blocks(self.net)


def _pool_flatten_classifier(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net.classifier(torch.flatten(net.avgpool(x), 1))


def _pool_flatten_fc(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net.fc(torch.flatten(net.avgpool(x), 1))


def _inception_head(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net.fc(torch.flatten(net.dropout(net.avgpool(x)), 1))


def _split_at_pools(net: nn.Module) -> list[nn.Module]:
    """VGG/AlexNet `features` cut after each max-pool: VGG16 gives its five conv blocks."""
    blocks, current = [], []
    for layer in net.features:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            blocks.append(nn.Sequential(*current))
            current = []
    if current:
        blocks.append(nn.Sequential(*current))
    return blocks


def _last_linear(seq: nn.Sequential, prefix: str) -> str:
    index = max(i for i, m in enumerate(seq) if isinstance(m, nn.Linear))
    return f"{prefix}.{index}"


def _sequential_features(net: nn.Module, classifier: str | None = None) -> TorchvisionNet:
    return TorchvisionNet(
        net,
        ["features"],
        _pool_flatten_classifier,
        classifier or _last_linear(net.classifier, "classifier"),
        lambda n: list(n.features.children()),
    )


def _register_tv(name: str, cam_layer: str, description: str, min_size: int, input_size: int = 224):
    return register_model(
        name,
        input_size=input_size,
        in_chans=3,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        cam_layer=cam_layer,
        description=description,
        min_input_size=min_size,
        pretrained="torchvision",
    )


@_register_tv(
    "alexnet",
    "net.features.10",
    "AlexNet (Krizhevsky et al. 2012), torchvision; 61.1M parameters with ImageNet's 1000 classes",
    63,
)
def alexnet(num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    return _vgg(tvm.alexnet, num_classes, in_chans)


def _vgg(builder: Callable[..., nn.Module], num_classes: int, in_chans: int) -> nn.Module:
    """AlexNet and the VGGs: `features`, adaptive pooling, a 7-layer `classifier` ending in index 6."""
    net = TorchvisionNet(
        builder(weights=None, num_classes=num_classes),
        ["features"],
        _pool_flatten_classifier,
        "classifier.6",
        _split_at_pools,
    )
    return adapt_input_channels(net, in_chans)


@_register_tv(
    "vgg16",
    "net.features.28",
    "VGG16 (Simonyan & Zisserman 2014): 13 conv 3x3 + 3 dense; 138.4M parameters with ImageNet's 1000 classes",
    32,
)
def vgg16(num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    return _vgg(tvm.vgg16, num_classes, in_chans)


@_register_tv(
    "vgg16_gap",
    "net.features.28",
    "VGG16's convolutional base with the Keras transfer head of 000 Q7: global average pooling, "
    "dense 256, dropout 0.5 (ImageNet weights: torchvision's VGG16 for the base)",
    32,
)
def vgg16_gap(num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    # 131k head weights instead of VGG16's 123M-weight classifier: what a small dataset can fit.
    net = tvm.vgg16(weights=None)
    net.avgpool = nn.AdaptiveAvgPool2d(1)
    net.classifier = nn.Sequential(
        nn.Linear(512, 256), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(256, num_classes)
    )
    model = TorchvisionNet(net, ["features"], _pool_flatten_classifier, "classifier.3", _split_at_pools)
    return adapt_input_channels(model, in_chans)


@_register_tv("vgg16_bn", "net.features.40", "VGG16 with batch normalisation, torchvision", 32)
def vgg16_bn(num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    return _vgg(tvm.vgg16_bn, num_classes, in_chans)


_INCEPTION_TRUNK = [
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2",
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
    "Mixed_7a", "Mixed_7b", "Mixed_7c",
]  # fmt: skip


@_register_tv(
    "inception_v3",
    "net.Mixed_7c",
    "Inception v3 (Szegedy et al. 2015) with its auxiliary head for training, torchvision",
    75,
    input_size=299,
)
def inception_v3(num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    base = tvm.inception_v3(weights=None, num_classes=num_classes, aux_logits=True, init_weights=False)
    net = TorchvisionNet(
        base,
        _INCEPTION_TRUNK,
        _inception_head,
        "fc",
        lambda n: [getattr(n, name) for name in _INCEPTION_TRUNK if not name.startswith("maxpool")],
        aux="AuxLogits",
    )
    return adapt_input_channels(net, in_chans)


def _resnet(builder: Callable[..., nn.Module], num_classes: int, in_chans: int) -> nn.Module:
    base = builder(weights=None, num_classes=num_classes)
    net = TorchvisionNet(
        base,
        ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"],
        _pool_flatten_fc,
        "fc",
        lambda n: [nn.Sequential(n.conv1, n.bn1), *n.layer1, *n.layer2, *n.layer3, *n.layer4],
    )
    return adapt_input_channels(net, in_chans)


@_register_tv("resnet18", "net.layer4", "ResNet-18 (He et al. 2015), torchvision", 32)
def resnet18(num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    return _resnet(tvm.resnet18, num_classes, in_chans)


@_register_tv("resnet50", "net.layer4", "ResNet-50 (He et al. 2015): bottleneck residual blocks, torchvision", 32)
def resnet50(num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    return _resnet(tvm.resnet50, num_classes, in_chans)


@_register_tv("efficientnet_b0", "net.features.8", "EfficientNet-B0 (Tan & Le 2019), torchvision", 32)
def efficientnet_b0(num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    return adapt_input_channels(
        _sequential_features(tvm.efficientnet_b0(weights=None, num_classes=num_classes)), in_chans
    )


@_register_tv("mobilenet_v3_small", "net.features.12", "MobileNetV3-Small (Howard et al. 2019), torchvision", 32)
def mobilenet_v3_small(num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    net = tvm.mobilenet_v3_small(weights=None, num_classes=num_classes)
    return adapt_input_channels(_sequential_features(net), in_chans)


@register_model(
    "efficientnet_lite0",
    input_size=224,
    in_chans=3,
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    cam_layer="conv_head",
    description="EfficientNet-Lite0 (TensorFlow's, as timm's tf_efficientnet_lite0); ImageNet weights ship offline",
    min_input_size=32,
    pretrained="lite0-package",
)
def efficientnet_lite0(num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    return create_timm("tf_efficientnet_lite0", num_classes, in_chans)


# --------------------------------------------------------------------------- timm


def create_timm(name: str, num_classes: int, in_chans: int, pretrained: bool = False) -> nn.Module:
    import timm

    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans)
    except RuntimeError as exc:
        raise ModelError(f"timm:{name}: {str(exc).splitlines()[0]}") from None
    model.trunk_blocks = lambda: _timm_blocks(model)  # type: ignore[method-assign]
    return model


def _timm_blocks(model: nn.Module) -> list[nn.Module]:
    """The trunk of a timm model in order: its stem, each block of its stages, its last conv."""
    head_names = {"classifier", "head", "fc", "global_pool", "head_drop", "pre_logits", "fc_norm", "norm_pre"}
    blocks: list[nn.Module] = []
    for name, child in model.named_children():
        if name in head_names:
            continue
        if name in ("blocks", "stages", "layers", "features"):
            for stage in child.children():
                blocks.extend(stage.children() if isinstance(stage, nn.Sequential) else [stage])
        else:
            blocks.append(child)
    return [b for b in blocks if any(True for _ in b.parameters())]


# --------------------------------------------------------------------------- channels


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def adapt_input_channels(model: nn.Module, in_chans: int) -> nn.Module:
    """Make the first convolution take `in_chans` channels.

    RGB -> 1 channel sums the kernels over colour, so a grey image gives exactly the logits of
    the same image replicated to RGB (timm's `adapt_input_conv` rule). Other counts repeat the
    RGB kernels cyclically and rescale by 3/in_chans.
    """
    conv = first_conv(model)
    if conv.in_channels == in_chans:
        return model
    weight = conv.weight.detach()
    if in_chans == 1:
        new = weight.sum(dim=1, keepdim=True)
    else:
        reps = -(-in_chans // weight.shape[1])
        new = weight.repeat(1, reps, 1, 1)[:, :in_chans] * (weight.shape[1] / in_chans)
    conv.weight = nn.Parameter(new.contiguous())
    conv.in_channels = in_chans
    return model
