"""CAM heat maps for every model family, leak-free hooks, the bundle's explain, folders and faithfulness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnlab.errors import CnnlabError, DataError, ModelError
from cnnlab.explain.cam import METHODS, CamExplainer, resolve_cam_layer
from cnnlab.models import create_model, get_spec


def _positive_head(model: nn.Module) -> nn.Module:
    """Random heads give random-signed class evidence that Grad-CAM's ReLU may legitimately zero;
    a non-negative last layer makes the evidence for every class positive, as training would."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.abs_()
    return model


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


@pytest.mark.parametrize(
    "name,size",
    [
        ("lenet5", 32),
        ("alexnet", 64),
        ("vgg16", 64),
        pytest.param("inception_v3", 107, marks=pytest.mark.slow),
        ("resnet50", 64),
        ("efficientnet_b0", 96),
        ("efficientnet_lite0", 64),
    ],
)
def test_gradcam_for_every_family(name: str, size: int) -> None:
    torch.manual_seed(0)
    spec = get_spec(name)
    model = _positive_head(create_model(name, input_size=size))
    layer = resolve_cam_layer(model, spec.cam_layer, (spec.in_chans, size, size))
    assert layer == spec.cam_layer
    x = torch.randn(2, spec.in_chans, size, size)
    with CamExplainer(model, layer, "gradcam") as cam:
        heat, logits = cam.explain(x)
    assert heat.shape == (2, size, size) and logits.shape == (2, 10)
    assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
    assert (heat.reshape(2, -1).std(axis=1) > 1e-3).all()  # not constant
    assert _no_hooks(model) and all(p.requires_grad for p in model.parameters())


def test_timm_model_gets_an_automatic_layer_that_receives_gradients() -> None:
    # timm zero-initialises each ResNet block's last norm, so the last conv gets no gradient at
    # initialisation: the check moves to the block that contains it.
    model = _positive_head(create_model("timm:resnet18", input_size=64))
    layer = resolve_cam_layer(model, None, (3, 64, 64))
    assert layer == "layer4.1"
    with CamExplainer(model, layer) as cam:
        heat = cam(torch.randn(1, 3, 64, 64))
    assert heat.shape == (1, 64, 64) and heat.std() > 1e-3


def test_every_method_and_hooks_released_even_on_error() -> None:
    torch.manual_seed(0)
    model = _positive_head(create_model("lenet5"))
    x = torch.randn(3, 1, 32, 32)
    for method in METHODS:
        with CamExplainer(model, "features.c3", method) as cam:
            heat = cam(x, [1, 2, 3])
        assert heat.shape == (3, 32, 32) and np.isfinite(heat).all() and heat.max() == pytest.approx(1.0), method
    with pytest.raises(RuntimeError), CamExplainer(model, "features.c3") as cam:
        cam(x)
        raise RuntimeError("boom")
    assert _no_hooks(model) and all(p.requires_grad for p in model.parameters()) and model.training
    with pytest.raises(ModelError, match=r"features\.c1, features\.c3"):
        CamExplainer(model, "features.nope")
    with pytest.raises(CnnlabError, match="gradcam"):
        CamExplainer(model, "features.c3", "guessed-cam")


def test_binary_model_explains_both_classes_with_opposite_signs() -> None:
    torch.manual_seed(0)
    model = create_model("binary_cnn", num_classes=2, input_size=32)
    x = torch.randn(1, 3, 32, 32)
    with CamExplainer(model, "features.conv2", "layercam", binary=True) as cam:
        one, zero = cam(x, [1]), cam(x, [0])
    assert not np.allclose(one, zero)


def test_bundle_explain_has_the_image_size_and_every_method(trained_bundle: Path) -> None:
    from cnnlab import load

    clf = load(trained_bundle)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(40, 60), dtype=np.uint8)
    for method in ("gradcam", "gradcam++", "eigencam"):
        heat = clf.explain(image, method=method)
        assert heat.shape == (40, 60) and heat.dtype == np.float32
        assert heat.min() >= 0 and heat.max() <= 1 and np.isfinite(heat).all()
    assert clf.explain(image, class_index=3).shape == (40, 60)
    with pytest.raises(DataError, match="gradcam"):
        clf.explain(image, method="magic")
    with pytest.raises(DataError, match="out of range"):
        clf.explain(image, class_index=10)
    assert _no_hooks(clf.model)


def _digits(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        path = folder / f"img{i:04d}.png"
        Image.fromarray(rng.integers(0, 255, size=(28, 28), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_folder_reports_bad_files_and_writes_overlays(trained_bundle: Path, tmp_path: Path) -> None:
    from cnnlab import load
    from cnnlab.tasks.explain import explain_files

    clf = load(trained_bundle)
    paths = _digits(tmp_path / "in", 5)
    bad = tmp_path / "in" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    results = list(explain_files(clf, [*paths[:2], bad, *paths[2:]], tmp_path / "out", batch_size=2))
    assert [Path(r.path).name for r in results] == [
        "img0000.png",
        "img0001.png",
        "broken.png",
        *(p.name for p in paths[2:]),
    ]
    assert results[2].error and not results[2].overlay
    good = [r for r in results if not r.error]
    assert len(good) == 5 and all(Path(r.overlay).is_file() and 0 <= r.probability <= 1 for r in good)
    assert Image.open(good[0].overlay).size[0] >= 224  # small digits are enlarged for a readable caption
    chosen = list(explain_files(clf, paths[:2], tmp_path / "out3", label="3"))
    assert {r.label for r in chosen} == {"3"}
    with pytest.raises(CnnlabError, match="classes: 0, 1"):
        list(explain_files(clf, paths, tmp_path / "out", label="cat"))
    with pytest.raises(DataError, match="no image"):
        list(explain_files(clf, [], tmp_path / "out"))


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_folder_memory_stays_flat(trained_bundle: Path, tmp_path: Path) -> None:
    from cnnlab import load
    from cnnlab.tasks.explain import explain_files

    clf = load(trained_bundle)
    paths = _digits(tmp_path / "in", 500)
    for _ in explain_files(clf, paths[:50], tmp_path / "warm"):
        pass
    after_50 = _rss_mb()
    done = sum(1 for r in explain_files(clf, paths, tmp_path / "out") if not r.error)
    after_500 = _rss_mb()
    assert done == 500
    assert after_500 - after_50 < 25, f"RSS grew {after_500 - after_50:.1f} MB from 50 to 500 images"
    assert _no_hooks(clf.model)


def test_faithfulness_scores_cam_against_random(trained_bundle: Path) -> None:
    from cnnlab import load
    from cnnlab.tasks.explain import faithfulness

    clf = load(trained_bundle)
    paths = _digits(Path(trained_bundle) / "faith", 12)
    result = faithfulness(clf, paths, steps=6, batch_size=8)
    assert result.images == 12 and len(result.per_image) == 12
    for value in (result.deletion, result.insertion, result.random_deletion, result.random_insertion):
        assert 0 <= value <= 1
    # deleting everything and inserting everything end at the same two images for both maps
    assert result.score == pytest.approx(result.insertion - result.deletion)
