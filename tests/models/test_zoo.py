"""The zoo: published parameter counts, offline ImageNet weights, channel adaptation, weight files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from cnnlab.errors import ModelError
from cnnlab.models import create_model

PUBLISHED = {
    "alexnet": 61_100_840,
    "vgg16": 138_357_544,
    "resnet50": 25_557_032,
    "inception_v3": 27_161_264,
    "efficientnet_b0": 5_288_548,
}


@pytest.mark.parametrize(("name", "count"), PUBLISHED.items())
def test_imagenet_heads_have_the_published_parameter_counts(name: str, count: int) -> None:
    model = create_model(name, 1000, 3, 299 if name == "inception_v3" else 224)
    assert sum(p.numel() for p in model.parameters()) == count


def _imagenet_top5(model: torch.nn.Module, image: np.ndarray) -> list[str]:
    from torchvision.models import EfficientNet_B0_Weights

    categories = EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"]  # offline metadata
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    x = (x - 0.5) / 0.5
    with torch.no_grad():
        top = model.eval()(x)[0].topk(5).indices
    return [categories[i] for i in top]


def test_embedded_lite0_weights_recognise_real_photos() -> None:
    from skimage import data

    model = create_model("efficientnet_lite0", 1000, 3, 224, weights="imagenet")
    cat = _imagenet_top5(model, data.chelsea())
    assert {"Egyptian cat", "tabby", "tiger cat", "Persian cat", "Siamese cat"} & set(cat), cat
    coffee = _imagenet_top5(model, data.coffee())
    assert {"espresso", "cup", "coffee mug"} & set(coffee), coffee


def test_grey_input_through_a_pretrained_rgb_backbone_equals_the_replicated_image() -> None:
    torch.manual_seed(0)
    rgb = create_model("efficientnet_lite0", 3, 3, 64, weights="imagenet").eval()
    grey = create_model("efficientnet_lite0", 3, 1, 64, weights="imagenet").eval()
    grey.load_state_dict({k: v for k, v in grey.state_dict().items()} | _head(rgb))
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        a = grey(x)
        b = rgb(x.expand(-1, 3, -1, -1))
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


def _head(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.startswith("classifier")}


def test_torchvision_imagenet_weights_offline_say_where_to_put_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr("torch.hub._hub_dir", None)
    import torchvision.models as tvm

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(tvm.VGG16_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(ModelError) as info:
        create_model("vgg16", 5, 3, 224, weights="imagenet")
    message = str(info.value)
    assert "vgg16-397923af.pth" in message and str(tmp_path / "torch" / "hub" / "checkpoints") in message


def test_vgg16_gap_takes_vgg16s_imagenet_base_and_a_new_small_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.models as tvm

    from cnnlab.models import get_spec
    from cnnlab.models import weights as weights_module

    torch.manual_seed(0)
    imagenet_vgg16 = tvm.vgg16(weights=None).state_dict()  # stands in for the checkpoint on disk
    asked: list[str] = []
    monkeypatch.setattr(weights_module, "_torchvision_state", lambda name: asked.append(name) or imagenet_vgg16)
    model = create_model("vgg16_gap", 5, 3, 224, weights="imagenet")
    assert asked == ["vgg16"]
    state = model.net.state_dict()
    features = [k for k in imagenet_vgg16 if k.startswith("features.")]
    assert len(features) == 26 and all(torch.equal(state[k], imagenet_vgg16[k]) for k in features)
    head = sum(p.numel() for n, p in model.named_parameters() if n.startswith("net.classifier"))
    assert head == 512 * 256 + 256 + 256 * 5 + 5  # the seed's Keras head, not VGG16's 123M-weight classifier
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    # `model.weights: auto` looks for VGG16's own checkpoint file
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr("torch.hub._hub_dir", None)
    assert not weights_module.imagenet_offline(get_spec("vgg16_gap"))
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth").touch()
    assert weights_module.imagenet_offline(get_spec("vgg16_gap"))


def test_weights_file_round_trip_and_mismatch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = create_model("simple_cnn", 10, 1, 28)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    loaded = create_model("simple_cnn", 10, 1, 28, weights=str(path))
    assert all(
        torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values(), strict=True)
    )
    with pytest.raises(ModelError, match=r"does not fit this model: 2 of another shape \(e\.g\. classifier\.bias"):
        create_model("simple_cnn", 5, 1, 28, weights=str(path))
    with pytest.raises(ModelError, match="missing"):
        create_model("vgg_mini", 10, 1, 28, weights=str(path))
    with pytest.raises(ModelError, match="no file at"):
        create_model("simple_cnn", 10, 1, 28, weights=str(tmp_path / "nope.safetensors"))


def test_a_pickled_weights_file_cannot_run_code(tmp_path: Path) -> None:
    import pickle

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"weight": Exploit()}, path, pickle_module=pickle)
    with pytest.raises(ModelError, match="not a readable weights file"):
        create_model("simple_cnn", 10, 1, 28, weights=str(path))


def test_models_without_imagenet_weights_say_so() -> None:
    with pytest.raises(ModelError, match="has no ImageNet weights"):
        create_model("lenet5", 10, 1, 32, weights="imagenet")


def test_inception_needs_75_px_and_trains_its_aux_head_at_299() -> None:
    with pytest.raises(ModelError, match="at least 75 px"):
        create_model("inception_v3", 10, 3, 64)
    model = create_model("inception_v3", 4, 3, 299).train()
    out = model(torch.randn(2, 3, 299, 299))
    assert out.shape == (2, 4) and model.aux_logits is not None and model.aux_logits.shape == (2, 4)
    (out.sum() + model.aux_logits.sum()).backward()
    assert model.net.AuxLogits.fc.weight.grad.abs().sum() > 0
    model.eval()
    model(torch.randn(1, 3, 299, 299))
    assert model.aux_logits is None  # inference never uses it


def test_unknown_timm_model() -> None:
    with pytest.raises(ModelError, match="unknown timm model 'resnet51'"):
        create_model("timm:resnet51")


def test_timm_imagenet_weights_offline_fail_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With no cache and no network the hub client once retried for about 50 s before failing; now
    # the host lookup is tried first and no request is made (the message says which path ran).
    import socket

    from cnnlab.errors import ModelError

    def no_network(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(ModelError, match=r"not in the cache and the hub is unreachable.*HF_HOME"):
        create_model("timm:resnet18", 3, 3, 64, weights="imagenet")
