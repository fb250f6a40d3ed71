"""The k-fold ensemble bundle (`cnnlab crossval --ensemble`): one bundle whose logits are the
mean of its fold models', scored on a test split none of them saw, and accepted by every command
that takes a bundle; the raw out-of-fold logits beside it."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file

import cnnlab
from cnnlab.bundle.card import ModelCard, read_card
from cnnlab.bundle.classifier import load
from cnnlab.bundle.data import bundle_data, split_outputs
from cnnlab.config import load_config
from cnnlab.serve.app import create_app
from cnnlab.serve.settings import ServeSettings
from cnnlab.tasks.crossval import crossval
from cnnlab.tasks.out_of_fold import load_out_of_fold
from tests.evaluation.test_crossval import patient_folder
from tests.serve.conftest import Service, png_bytes
from tests.tasks.helpers import run_cli

FOLDS = 3


@pytest.fixture(scope="module")
def cv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    tmp = tmp_path_factory.mktemp("ensemble")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNLAB_CACHE", str(tmp / "cache"))
        root = patient_folder(tmp / "xr", patients=20, per_patient=2)
        cfg = load_config(
            None,
            values={"name": "cv", "data.source": f"folder:{root}", "data.val_fraction": 0.2, "data.input_size": 16,
                    "model.name": "vgg_mini", "train.epochs": 1, "train.batch_size": 16},
        )  # fmt: skip
        result = crossval(cfg, FOLDS, tmp / "cv", ensemble=True, ensemble_oof=True)
        yield cfg, result, tmp


def test_ensemble_logits_are_the_mean_of_its_members(cv: tuple) -> None:
    _, result, tmp = cv
    ens_dir = tmp / "cv" / "ensemble"
    assert {p.name for p in ens_dir.iterdir()} >= {"config.yaml", "model.json", "model.safetensors"}
    card = read_card(ens_dir)
    assert card.members == FOLDS and card.cam_layer.startswith("members.0.net.")
    keys = load_file(ens_dir / "model.safetensors").keys()
    assert {k.split(".")[1] for k in keys} == {str(k) for k in range(FOLDS)} and all(
        k.startswith("members.") for k in keys
    )
    assert load_config(str(ens_dir / "config.yaml")).data.folds == 0  # the un-folded data
    ens = load(ens_dir)
    members = [load(tmp / "cv" / f"fold{k + 1}") for k in range(FOLDS)]
    # Trained from scratch, every fold standardises with its own statistics: the ensemble maps its
    # input to each member's, so the members really see their own normalisation.
    assert len({m.preprocessing.mean for m in members}) == FOLDS
    pixels = torch.randint(0, 256, (12, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean_logits = torch.stack([m.logits_from_pixels(pixels) for m in members]).mean(dim=0)
    torch.testing.assert_close(ens.logits_from_pixels(pixels), mean_logits, atol=1e-5, rtol=1e-5)
    expected = mean_logits.softmax(dim=1).numpy()
    np.testing.assert_allclose(ens.proba_from_pixels(pixels), expected, atol=1e-5)
    proba, embedding = ens.proba_and_embedding(pixels)  # the drift monitor's path: same answer
    np.testing.assert_allclose(proba, expected, atol=1e-5)
    assert embedding.shape[1] == card.reference["dimensions"]
    assert result.ensemble["members"] == FOLDS and len(result.ensemble["members_accuracy"]) == FOLDS


def test_the_test_split_stays_out_of_every_fold(cv: tuple) -> None:
    _, result, tmp = cv
    saved = json.loads((tmp / "cv" / "crossval.json").read_text())
    assert saved["test_split"].startswith("set apart") and saved["ensemble"]["test_split_excluded_from_folds"]
    ens_dir = tmp / "cv" / "ensemble"
    ens_data = bundle_data(ens_dir, load(ens_dir))
    assert ens_data.groups is not None
    test_patients = set(ens_data.groups["test"].tolist())
    assert result.ensemble["images"] == len(ens_data.splits["test"][1]) > 0
    for k in range(FOLDS):
        run = tmp / "cv" / f"fold{k + 1}"
        data = bundle_data(run, load(run))
        assert data.groups is not None
        seen = {g for split in ("train", "val", "test") for g in data.groups[split].tolist()}
        assert not seen & test_patients  # no member trained, validated or was scored on them
    # The out-of-fold rows cover train + val exactly once; their raw logits are the CSV's probabilities.
    with open(tmp / "cv" / "oof_predictions.csv") as fh:
        oof_rows = list(csv.DictReader(fh))
    assert len(oof_rows) == 40 - len(ens_data.splits["test"][1])
    oof = load_out_of_fold(ens_dir)  # from the ensemble folder: its parent's files
    assert oof.logits.shape == (len(oof_rows), 2) and oof.classes == ["sick", "well"]
    assert oof.index.tolist() == [int(r["index"]) for r in oof_rows]
    assert oof.groups is not None and oof.groups.tolist() == [r["group"] for r in oof_rows]
    assert [oof.classes[i] for i in oof.labels] == [r["label"] for r in oof_rows]
    assert oof.folds.tolist() == [int(r["fold"]) for r in oof_rows]
    csv_proba = np.array([[float(r["p_sick"]), float(r["p_well"])] for r in oof_rows])
    np.testing.assert_allclose(oof.logits.softmax(dim=1).numpy(), csv_proba, atol=1e-5)


def test_the_ensemble_evaluates_and_exports_with_parity(
    cv: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, result, tmp = cv
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp / "cache"))
    ens_dir = tmp / "cv" / "ensemble"
    evaluated = cnnlab.evaluate(ens_dir, resamples=0)  # the real test split, from its config
    assert evaluated.data_matches and evaluated.metrics["images"] == result.ensemble["images"]
    assert evaluated.metrics["accuracy"] == pytest.approx(result.ensemble["accuracy"])
    code, _, err = run_cli(["export", str(ens_dir), "--samples", "8"], capsys, monkeypatch)
    assert code == 0, err
    parity = json.loads((ens_dir / "export" / "parity.json").read_text())
    assert parity["passed"] and parity["samples"] == 8
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes(5, size=16))
    onnx = load(ens_dir, backend="onnx")
    np.testing.assert_allclose(onnx.predict_proba(image), load(ens_dir).predict_proba(image), atol=1e-4)


def test_the_ensemble_predicts_explains_and_serves(
    cv: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ens_dir = cv[2] / "cv" / "ensemble"
    clf = load(ens_dir)
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes(5, size=16))
    code, out, err = run_cli(["predict", str(ens_dir), str(image), "--explain", "--out", str(tmp_path / "p")],
                             capsys, monkeypatch)  # fmt: skip
    assert code == 0, err
    assert clf.predict(image)[0].label in out
    code, _, err = run_cli(["explain", str(ens_dir), str(image), "--out", str(tmp_path / "e")], capsys, monkeypatch)
    assert code == 0, err
    assert list((tmp_path / "e").glob("*.png"))
    heat = clf.explain(image)
    assert heat.shape == (16, 16) and heat.min() >= 0 and heat.max() <= 1
    settings = ServeSettings(runs=[ens_dir], state_dir=tmp_path / "state", review_threshold=0.0)
    with TestClient(create_app(settings)) as client:
        response = Service(client).predict(png_bytes(5, size=16), query="?explain=gradcam")
    assert response.status_code == 200, response.text
    body = response.json()
    expected = clf.predict_proba(image)[0]
    assert body["probabilities"] == pytest.approx(dict(zip(clf.classes, expected.tolist(), strict=True)), abs=1e-5)
    assert body["explanation"]["method"] == "gradcam"


def test_cards_without_members_load_as_one_model() -> None:
    raw = json.loads((Path(__file__).parent / "card_v1_lenet5.json").read_text())
    assert "members" not in raw and ModelCard.from_dict(raw).members == 0


def test_split_outputs_are_the_mean_of_the_members(cv: tuple) -> None:
    _, _, tmp = cv
    ens_dir = tmp / "cv" / "ensemble"
    ens = load(ens_dir)
    data = bundle_data(ens_dir, ens)
    logits = split_outputs(ens, data, "test").logits
    members = [load(tmp / "cv" / f"fold{k + 1}") for k in range(FOLDS)]
    mean = torch.stack([split_outputs(m, data, "test").logits for m in members]).mean(dim=0)
    torch.testing.assert_close(logits, mean, atol=1e-5, rtol=1e-5)


def test_assembled_binary_ensemble_round_trips_through_its_weights(tmp_path: Path) -> None:
    """No training: two random binary nets with different input statistics, saved and rebuilt from the card."""
    from cnnlab import bundle
    from cnnlab.bundle.ensemble import assemble
    from cnnlab.data.preprocess import Preprocessing, normalize, stats_tensors
    from cnnlab.models import create_model

    torch.manual_seed(0)
    nets = [create_model("binary_cnn", 2, 3, 24).eval() for _ in range(2)]
    preps = [Preprocessing(3, (24, 24), (24, 24), (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)),
             Preprocessing(3, (24, 24), (24, 24), (0.1, 0.2, 0.6), (0.5, 0.1, 0.2))]  # fmt: skip
    model, prep = assemble(nets, preps)
    pixels = torch.randint(0, 256, (4, 3, 24, 24), dtype=torch.uint8)
    own = [net(normalize(pixels, *stats_tensors(p.mean, p.std))) for net, p in zip(nets, preps, strict=True)]
    with torch.no_grad():
        combined = model(normalize(pixels, *stats_tensors(prep.mean, prep.std)))
    torch.testing.assert_close(combined, torch.stack(own).mean(dim=0).detach(), atol=1e-5, rtol=1e-5)
    assert combined.shape == (4, 1)  # one logit: a binary ensemble stays binary
    card = ModelCard(
        name="pair", architecture="binary_cnn", num_classes=2, classes=["no", "yes"], in_chans=3,
        input_size=[24, 24], preprocessing=prep.to_dict(), binary=True, members=2,
        weights_sha256=bundle.save_weights(model.state_dict(), tmp_path / bundle.WEIGHTS),
    )  # fmt: skip
    bundle.write_card(tmp_path, card)
    clf = load(tmp_path)
    torch.testing.assert_close(clf.logits_from_pixels(pixels), combined, atol=1e-5, rtol=1e-5)
    assert clf.proba_from_pixels(pixels).shape == (4, 2)


def test_rerunning_keeps_the_ensemble_and_refuses_another_cut(cv: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnlab.errors import DataError

    cfg, result, tmp = cv
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp / "cache"))
    before = read_card(tmp / "cv" / "ensemble")
    again = crossval(cfg, FOLDS, tmp / "cv", ensemble=True, ensemble_oof=True)  # every pair model reused too
    assert read_card(tmp / "cv" / "ensemble") == before  # kept (a calibration written since would survive)
    assert again.ensemble is not None and again.ensemble["accuracy"] == result.ensemble["accuracy"]
    with pytest.raises(DataError, match="another cut of the data"):
        crossval(cfg, FOLDS, tmp / "cv")  # folds of all the data: not what these bundles were trained on


def test_the_ensembles_out_of_fold_logits_come_from_models_that_never_saw_the_image(cv: tuple) -> None:
    _, result, tmp = cv
    oof = load_out_of_fold(tmp / "cv" / "ensemble", ensemble=True)
    single = load_out_of_fold(tmp / "cv")
    assert oof.name == "ensemble out-of-fold" and oof.index.tolist() == single.index.tolist()
    assert oof.folds.tolist() == single.folds.tolist() and oof.labels.tolist() == single.labels.tolist()
    pairs = sorted((tmp / "cv" / "pairs").iterdir())
    assert [p.name for p in pairs] == ["folds1+2", "folds1+3", "folds2+3"]
    assert result.ensemble_oof["models"] == 3 and set(result.ensemble_oof["uncalibrated"]) == {
        "single fold models", "single models leaving two folds out", "ensembles of 2"}  # fmt: skip
    assert result.ensemble_oof["uncalibrated"]["single models leaving two folds out"]["images"] == 2 * len(oof.index)
    held: dict[int, list[torch.Tensor]] = {}
    for run in pairs:
        a, b = (int(f) for f in run.name.removeprefix("folds").split("+"))
        clf = load(run)
        data = bundle_data(run, clf)
        assert data.groups is not None
        out_patients = set(oof.groups[np.isin(oof.folds, (a, b))].tolist())
        seen = {g for split in ("train", "val") for g in data.groups[split].tolist()}
        assert not seen & out_patients  # neither left-out fold's patients trained or validated it
        assert set(data.groups["test"].tolist()) == out_patients
        logits = split_outputs(clf, data, "test").logits
        # its test rows are the two folds' pooled rows in index order
        rows = np.flatnonzero(np.isin(oof.folds, (a, b)))
        for r, lg in zip(rows, logits, strict=True):
            held.setdefault(int(oof.index[r]), []).append(lg)
    assert all(len(v) == FOLDS - 1 for v in held.values()) and len(held) == len(oof.index)
    expected = torch.stack([torch.stack(held[int(i)]).mean(dim=0) for i in oof.index])
    torch.testing.assert_close(oof.logits, expected, atol=1e-5, rtol=1e-5)


def test_calibrating_the_ensemble_fits_on_its_own_out_of_fold_logits(cv: tuple, monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:  # fmt: skip
    import shutil

    from cnnlab.tasks.calibrate import calibrate

    monkeypatch.setenv("CNNLAB_CACHE", str(cv[2] / "cache"))
    work = tmp_path / "cv"
    shutil.copytree(cv[2] / "cv", work, ignore=shutil.ignore_patterns("pairs", "fold*"))
    summary = calibrate(work / "ensemble", "auto", positive="sick", target_sensitivity=0.9, resamples=20)
    card = read_card(work / "ensemble")
    images = len(load_out_of_fold(work, ensemble=True).labels)
    assert summary.fitted_on == "ensemble out-of-fold" and card.calibration["fitted_on"] == "ensemble out-of-fold"
    assert card.calibration["images"] == images and card.threshold["chosen_on"] == "ensemble out-of-fold"
    for name in ("ensemble_oof_logits.safetensors", "ensemble_oof_groups.csv"):
        (work / name).unlink()
    assert calibrate(work / "ensemble", "auto", resamples=20).fitted_on == "out-of-fold"  # the members' then


def test_ensemble_oof_needs_the_ensemble_and_three_folds(cv: tuple, tmp_path: Path) -> None:
    from cnnlab.errors import DataError

    cfg = cv[0]
    for folds, ensemble in ((2, True), (3, False)):
        with pytest.raises(DataError, match="--ensemble-oof needs --ensemble and at least 3 folds"):
            crossval(cfg, folds, tmp_path / "x", ensemble=ensemble, ensemble_oof=True)
