"""Export with a parity proof, and prediction through every backend."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from PIL import Image

import cnnlab
from cnnlab.bundle.backends import make_runner
from cnnlab.bundle.card import ModelCard
from cnnlab.bundle.classifier import Classifier
from cnnlab.data.preprocess import Preprocessing
from cnnlab.errors import BundleError
from cnnlab.export.onnx import ExportError, _write, check_parity
from cnnlab.models import create_model, get_spec, list_models
from cnnlab.tasks.export import export_model
from tests.models.test_contract import TIMM_SAMPLES


def _classifier(name: str, in_chans: int, size: int) -> Classifier:
    torch.manual_seed(0)
    model = create_model(name, 3 if not get_spec(name).binary else 2, in_chans, size).eval()
    classes = ["a", "b", "c"] if not get_spec(name).binary else ["a", "b"]
    card = ModelCard(
        name=name,
        architecture=name,
        num_classes=len(classes),
        classes=classes,
        in_chans=in_chans,
        input_size=[size, size],
        binary=get_spec(name).binary,
        preprocessing=Preprocessing(
            in_chans, (size, size), (size, size), (0.5,) * in_chans, (0.25,) * in_chans
        ).to_dict(),
        weights_sha256="",
    )
    return Classifier(model, card)


@pytest.mark.parametrize("name", [*list_models(), TIMM_SAMPLES[0]])
def test_onnx_parity_for_every_zoo_model(name: str, tmp_path: Path) -> None:
    spec = get_spec(name)
    size = max(spec.min_input_size, 32)
    in_chans = 1 if name in ("lenet5", "efficientnet_lite0", "resnet18") else 3
    clf = _classifier(name, in_chans, size)
    if name in ("alexnet", "vgg16", "vgg16_bn"):
        # Their ImageNet classifiers hold 100M+ weights whatever the input size (0.5 GB of ONNX);
        # smaller dense layers keep the test fast and still export the whole convolutional graph.
        features = next(m for m in clf.model.net.classifier if isinstance(m, torch.nn.Linear)).in_features
        clf.model.net.classifier = torch.nn.Sequential(
            torch.nn.Linear(features, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
        )
    pixels = torch.randint(0, 256, (4, in_chans, size, size), dtype=torch.uint8)
    path = tmp_path / "m.onnx"
    _write(clf.model, clf.normalized(pixels[:2]), path, "onnx", 18, True)
    parity = check_parity(clf, make_runner(path, "onnx", False), pixels, embedded=False)
    assert parity.passed, parity


def test_tampered_onnx_fails_parity(tmp_path: Path) -> None:
    clf = _classifier("simple_cnn", 1, 28)
    pixels = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    path = tmp_path / "m.onnx"
    _write(clf.model, clf.normalized(pixels[:2]), path, "onnx", 18, True)
    graph = onnx.load(str(path))
    weight = max(graph.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] += 5.0  # one weight changed
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(graph, str(path))
    parity = check_parity(clf, make_runner(path, "onnx", False), pixels, embedded=False)
    assert not parity.passed and parity.max_abs_diff > 1e-4


@pytest.fixture(scope="module")
def exported(trained_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("exp") / "run"
    shutil.copytree(trained_bundle, run)
    path, parity = export_model(run, "onnx", samples=200)
    assert path.name == "model.onnx" and parity.passed and parity.samples == 200
    return run


def test_export_writes_the_contract(exported: Path) -> None:
    contract = json.loads((exported / "export" / "preprocess.json").read_text())
    assert contract["preprocessing"]["pad_to"] == [32, 32] and contract["preprocessing"]["resize_to"] == [28, 28]
    assert contract["classes"] == [str(d) for d in range(10)] and contract["input"]["dtype"] == "float32"
    parity = json.loads((exported / "export" / "parity.json").read_text())
    assert parity["passed"] and parity["top1_agreement"] == 1.0 and parity["max_abs_diff"] <= 1e-4


@pytest.mark.parametrize(("fmt", "embed"), [("onnx", True), ("torchscript", False), ("exported-program", False)])
def test_other_formats_and_embedded_preprocessing(exported: Path, fmt: str, embed: bool) -> None:
    path, parity = export_model(exported, fmt, embed_preprocessing=embed, samples=64)
    assert path.is_file() and parity.passed


def test_backends_agree_on_raw_files(exported: Path, tmp_path: Path) -> None:
    from cnnlab.config import DataConfig
    from cnnlab.data.sources import load_source

    export_model(exported, "onnx", samples=32)  # the float-input export, after the embedded one above
    x, _ = load_source(DataConfig(source="mnist-sample")).splits["test"]
    files = []
    for i in range(40):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(x[i, 0].numpy()).save(files[-1])
    torch_p = cnnlab.load(exported).predict_proba(files)
    onnx_p = cnnlab.load(exported, backend="onnx").predict_proba(files)
    assert np.array_equal(torch_p.argmax(1), onnx_p.argmax(1)) and np.abs(torch_p - onnx_p).max() < 1e-4


def test_onnx_backend_needs_a_current_export(trained_bundle: Path, exported: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="run `cnnlab export"):
        cnnlab.load(trained_bundle, backend="onnx")
    stale = tmp_path / "stale"
    shutil.copytree(exported, stale)
    contract = json.loads((stale / "export" / "preprocess.json").read_text())
    contract["weights_sha256"] = "0" * 64
    (stale / "export" / "preprocess.json").write_text(json.dumps(contract))
    with pytest.raises(BundleError, match="exported from other weights"):
        cnnlab.load(stale, backend="onnx")


def test_failed_parity_refuses_the_export(exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    shutil.copytree(exported, run)
    import cnnlab.export.onnx as onnx_export

    real = onnx_export.make_runner

    def off_by_a_bit(path, fmt, embedded, threads=None):
        inner = real(path, fmt, embedded, threads)
        return lambda x: inner(x) + torch.tensor([5.0] + [0.0] * 9)

    monkeypatch.setattr(onnx_export, "make_runner", off_by_a_bit)
    before = (run / "export" / "model.onnx").read_bytes()
    with pytest.raises(ExportError, match="parity failed"):
        export_model(run, "onnx", samples=32)
    assert (run / "export" / "model.onnx").read_bytes() == before  # the last good export stays
    assert (run / "export" / "model.onnx.rejected").is_file()


def test_predict_command(exported: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    from cnnlab.cli import main
    from cnnlab.config import DataConfig
    from cnnlab.data.sources import load_source

    x, _ = load_source(DataConfig(source="mnist-sample")).splits["test"]
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(x[i, 0].numpy()).save(folder / f"d{i}.png")
    (folder / "broken.png").write_text("not an image")
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "cnnlab",
            "predict",
            str(exported),
            str(folder),
            "--backend",
            "onnx",
            "--format",
            "json",
            "--topk",
            "3",
            "--explain",
            "--out",
            str(tmp_path / "cam"),
        ],
    )
    with pytest.raises(SystemExit) as info:
        main()
    out, err = capsys.readouterr()
    assert info.value.code == 3  # one of the files is unreadable: partial success
    rows = json.loads(out)
    assert len(rows) == 7 and sum(1 for r in rows if r["error"]) == 1
    assert next(r for r in rows if r["file"].endswith("broken.png"))["error"].startswith("not an image")
    assert all(len(r["top"]) == 3 for r in rows if not r["error"])
    assert "6 predicted, 1 unreadable" in err and "model" in err
    overlays = list((tmp_path / "cam").glob("*.png"))
    assert len(overlays) == 6


def test_explain_heatmap_has_the_image_size(trained_bundle: Path) -> None:
    clf = cnnlab.load(trained_bundle)
    from cnnlab.config import DataConfig
    from cnnlab.data.sources import load_source

    digit = load_source(DataConfig(source="mnist-sample")).splits["test"][0][0, 0].numpy()
    heat = clf.explain(digit)
    assert heat.shape == (28, 28) and np.isfinite(heat).all() and 0 < heat.max() <= 1.0
    assert heat.std() > 0
    wide = np.zeros((40, 90), np.uint8)
    wide[10:30, 30:60] = 255
    assert clf.explain(wide).shape == (40, 90)


def test_temperature_and_operating_point_apply_in_every_backend(exported: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(exported, run)
    card = json.loads((run / "model.json").read_text())
    card["temperature"] = 2.0
    card["threshold"] = {"positive": ["7", "9"], "value": 0.3}
    (run / "model.json").write_text(json.dumps(card))
    digits = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    plain = cnnlab.load(exported).predict_proba(digits)
    for backend in ("torch", "onnx"):
        clf = cnnlab.load(run, backend=backend)
        probs = clf.predict_proba(digits)
        assert np.abs(probs - plain).max() > 1e-3  # softer with T=2 ...
        assert np.array_equal(probs.argmax(1), plain.argmax(1))  # ... same ranking
        for p, row in zip(clf.predict(digits), probs, strict=True):
            assert p.decision == ("positive" if row[7] + row[9] >= 0.3 else "negative")


def test_onnx_comes_from_the_dynamo_exporter(exported: Path) -> None:
    # The TorchScript exporter (deprecated, its warnings once silenced) wrote opset 17 graphs.
    graph = onnx.load(str(exported / "export" / "model.onnx"))
    assert {o.domain: o.version for o in graph.opset_import}[""] >= 18
    with pytest.raises(ExportError, match="opset 17 is older"):
        export_model(exported, "onnx", opset=17, samples=8)
