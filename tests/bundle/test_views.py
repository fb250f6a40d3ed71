"""Test-time views (`model.tta`): a bundle's logits are the mean over centre-crop views, in the
card, in every answer built on logits (evaluation, prediction, the service's embedding path,
an ensemble, ONNX export), while explanations read the network on the image as given."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnnlab.bundle.card import read_card
from cnnlab.bundle.classifier import load
from cnnlab.bundle.data import bundle_data, split_outputs
from cnnlab.bundle.views import ViewMean, centre_view
from cnnlab.errors import BundleError, ConfigError
from cnnlab.evaluation.drift import load_reference
from cnnlab.models import create_model
from cnnlab.tasks.crossval import crossval
from cnnlab.tasks.export import export_model
from cnnlab.tasks.train import train
from tests.conftest import folder_config, tiny_config
from tests.evaluation.test_crossval import patient_folder

VIEWS = [1.0, 0.75]


def test_a_centre_view_is_the_middle_of_the_image_resized_back() -> None:
    x = torch.zeros(1, 1, 8, 8)
    x[..., 2:6, 2:6] = 1.0  # the central half is white, the border black
    assert centre_view(x, 1.0) is x
    half = centre_view(x, 0.5)
    assert half.shape == x.shape and torch.allclose(half, torch.ones_like(half))


def test_view_mean_averages_the_views_and_its_two_halves_agree() -> None:
    torch.manual_seed(0)
    net = create_model("lenet5", num_classes=3).eval()
    model = ViewMean(net, VIEWS).eval()
    x = torch.randn(4, 1, 32, 32)
    expected = (net(x) + net(centre_view(x, 0.75))) / 2
    torch.testing.assert_close(model(x), expected)
    torch.testing.assert_close(model.forward_head(model.forward_features(x)), expected)
    with pytest.raises(BundleError, match="fractions in"):
        ViewMean(net, [1.2])


def test_the_recipe_key_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"model\.tta"):
        tiny_config(**{"model.tta": [1.0, 0.0]})


@pytest.fixture(scope="module")
def viewed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("views") / "run"
    train(tiny_config(**{"model.tta": VIEWS}), out)
    return out


def test_a_bundle_with_views_answers_with_their_mean(viewed: Path) -> None:
    card = read_card(viewed)
    assert card.tta == VIEWS
    clf = load(viewed)
    assert isinstance(clf.model, ViewMean) and clf.network is clf.model.net
    data = bundle_data(viewed, clf)
    out = split_outputs(clf, data, "test")
    x = clf.normalized(out.pixels[:16])
    with torch.inference_mode():
        plain = clf.network(x)
        expected = (plain + clf.network(centre_view(x, 0.75))) / 2
    torch.testing.assert_close(out.logits[:16], expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(plain, expected, atol=1e-3)  # the views do change the answer
    # The card's test accuracy is the bundle's as served, views included.
    accuracy = float((out.logits.argmax(1).numpy() == out.labels).mean())
    assert card.metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    # The service's path (one pass for probabilities and the drift embedding) gives the same answer.
    proba, embedding = clf.proba_and_embedding(out.pixels[:16])
    torch.testing.assert_close(torch.from_numpy(proba), torch.softmax(expected, 1), rtol=1e-4, atol=1e-5)
    # ... and its drift embedding has the width of the reference sample's, written with the views.
    assert embedding.shape[1] == load_reference(viewed)["embeddings"].shape[1] == 2 * 120
    # Grad-CAM reads the network on the image as given.
    heat = clf.explain(out.pixels[0, 0].numpy())
    assert heat.shape == (32, 32) and heat.max() <= 1.0


def test_export_carries_the_views(viewed: Path) -> None:
    _, parity = export_model(viewed, "onnx", samples=32)
    assert parity.passed and parity.top1_agreement == 1.0


def test_an_ensemble_averages_its_folds_over_their_views(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    root = patient_folder(tmp_path / "xr", patients=16, per_patient=2)
    cfg = folder_config(root, "cv", **{"model.tta": VIEWS})
    crossval(cfg, 2, tmp_path / "cv", ensemble=True)
    ens_dir = tmp_path / "cv" / "ensemble"
    card = read_card(ens_dir)
    assert card.tta == VIEWS and card.members == 2
    ens = load(ens_dir)
    assert isinstance(ens.model, ViewMean)
    members = [load(tmp_path / "cv" / f"fold{k + 1}") for k in range(2)]
    data = bundle_data(ens_dir, ens)
    pixels = split_outputs(ens, data, "test").pixels[:8]
    # Each member is a bundle with the same views, so the mean of their served logits is the ensemble's.
    expected = torch.stack([m.logits_from_pixels(pixels) for m in members]).mean(0)
    torch.testing.assert_close(ens.logits_from_pixels(pixels), expected, rtol=1e-4, atol=1e-4)
