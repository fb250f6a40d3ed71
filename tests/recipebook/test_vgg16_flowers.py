"""000 Q7 with VGG16: the real run when its ImageNet checkpoint is on the machine, and a labelled
substitute (what it needs, the two backbones compared, the protocol on Lite0) when it is not."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision.models as tvm

from cnnlab import bundle
from cnnlab.recipebook import read_results, run_recipe


def test_with_the_checkpoint_the_recipe_trains_vgg16_from_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    name = tvm.VGG16_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    checkpoint = tmp_path / "torch" / "hub" / "checkpoints" / name
    checkpoint.parent.mkdir(parents=True)
    torch.manual_seed(0)
    trunk = {k: v for k, v in tvm.vgg16().state_dict().items() if k.startswith("features.")}  # all vgg16_gap reads
    torch.save(trunk, checkpoint)
    out = tmp_path / "out"
    run_recipe("vgg16-flowers", out, quick=True)
    results, card = read_results(out), bundle.read_card(out / "run")
    assert "substitute" not in results and card.architecture == "vgg16_gap" and card.weights == "imagenet"
    state = bundle.load_state(out / "run", card)
    # the first conv block is frozen in both stages: still exactly the checkpoint's weights
    assert torch.equal(state["net.features.0.weight"], trunk["features.0.weight"])


def test_without_it_the_page_says_what_it_needs_and_runs_the_labelled_substitute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    out = tmp_path / "out"
    run_recipe("vgg16-flowers", out, quick=True)
    results, readme = read_results(out), (out / "README.md").read_text()
    assert results["substitute"]["ran"] == "efficientnet_lite0"
    assert results["summary"].startswith("Substitute") and "vgg16-397923af.pth" in readme
    assert "| vgg16_gap |" in readme and "| efficientnet_lite0 |" in readme
    assert bundle.read_card(out / "run").architecture == "efficientnet_lite0"
