"""`data.extra` / `cnnlab train --extra-data`: extra folders join the training split only, never
leak a validation or test patient, and the model card records every data set with its content hash."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from rich.console import Console

from cnnlab import bundle
from cnnlab.config import Config
from cnnlab.data.merge import EXTRA_ROLE, MAIN_ROLE, PATIENT_LEAK, content_sha256, join_extra_data
from cnnlab.data.patients import PATIENT_KEY_ENV, keyed_patient_id
from cnnlab.data.sources import load_source
from cnnlab.errors import CnnlabError, DataError
from tests.conftest import folder_config
from tests.data.folders import write_image, write_metadata

CLASSES = ("NORMAL", "PNEUMONIA")
FEEDBACK_COLUMNS = ("predicted_label", "agrees", "model_name", "model_version", "reviewer", "reviewed_at", "request_id")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))


def make_main(root: Path) -> Path:
    """Two classes of 16 images, two images per patient, no split: cnnlab carves val and test by patient."""
    rows = []
    for c, cls in enumerate(CLASSES):
        for i in range(16):
            rel = f"{cls}/{i:02d}.png"
            write_image(root / rel, 100 * c + i, mode="L")
            rows.append({"file": rel, "patient_id": f"p{c}-{i // 2}"})
    write_metadata(root, rows)
    return root


def make_feedback(root: Path, items: list[tuple[str, str, str]], seed: int = 1000) -> Path:
    """What `cnnlab feedback export` writes: LABEL/NAME.png plus metadata.csv (here every row says
    split=test, which an extra folder must ignore)."""
    rows = []
    for k, (label, patient, split) in enumerate(items):
        rel = f"{label}/fb{k:02d}.png"
        write_image(root / rel, seed + k, mode="L")
        row = {"file": rel, "label": label, "patient_id": patient, "source": "feedback", "split": split}
        rows.append(row | dict.fromkeys(FEEDBACK_COLUMNS, ""))
    write_metadata(root, rows)
    return root


def config(main: Path, *extra: Path, name: str = "extra") -> Config:
    return folder_config(main, name, **{"data.extra": [str(p) for p in extra], "model.name": "simple_cnn"})


def held_patient(main: Path) -> str:
    data = load_source(config(main).data, 16)
    assert data.groups is not None
    return sorted(set(data.groups["test"].tolist()))[0]


def test_extra_images_join_the_training_split_only(tmp_path: Path) -> None:
    main = make_main(tmp_path / "main")
    feedback = make_feedback(tmp_path / "fb", [("PNEUMONIA", "new-1", "test"), ("NORMAL", "", "val")] * 2)
    cfg = config(main, feedback)
    data = load_source(cfg.data, 16)
    merged, records = join_extra_data(data, cfg.data)
    before, after = data.sizes(), merged.sizes()
    assert after == {"train": before["train"] + 4, "val": before["val"], "test": before["test"]}
    assert merged.splits["train"][0].shape[1:] == data.splits["train"][0].shape[1:]
    assert merged.splits["train"][1][-4:].tolist() == [0, 0, 1, 1]  # the folder's order: NORMAL first
    # Patient ids and sources travel with the images; images without an id are their own group.
    assert merged.groups is not None and merged.sources is not None
    assert merged.groups["train"][-2:].tolist() == ["new-1", "new-1"]
    assert len(set(merged.groups["train"][-4:].tolist())) == 3
    assert merged.sources["train"][-4:].tolist() == ["feedback"] * 4
    assert set(merged.sources["test"].tolist()) == {""}
    assert [r["role"] for r in records] == [MAIN_ROLE, EXTRA_ROLE]
    assert records[0]["images"] == before and records[0]["name"] == f"folder:{main.resolve()}"
    assert records[1]["images"] == {"train": 4, "val": 0, "test": 0}
    assert records[1]["name"] == f"folder:{feedback.resolve()}"


def test_a_val_or_test_patient_leaves_its_extra_images_out(tmp_path: Path) -> None:
    main = make_main(tmp_path / "main")
    patient = held_patient(main)
    feedback = make_feedback(
        tmp_path / "fb", [("NORMAL", patient, ""), ("PNEUMONIA", patient, ""), ("NORMAL", "someone-else", "")]
    )
    cfg = config(main, feedback)
    data = load_source(cfg.data, 16)
    console = Console(record=True, width=200, soft_wrap=True)
    merged, records = join_extra_data(data, cfg.data, console)
    assert merged.sizes()["train"] == data.sizes()["train"] + 1
    assert patient not in merged.groups["train"].tolist()
    assert records[1]["left_out"] == {PATIENT_LEAK: 2}
    assert records[1]["images"]["train"] == 1
    lines = [line for line in console.export_text().splitlines() if "left out" in line]
    assert len(lines) == 1 and "2 images left out" in lines[0] and "validation or test" in lines[0]


def test_a_feedback_export_s_keyed_patients_are_recognised_with_the_service_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A feedback export names patients by HMAC(key, id): with the service's key the held-out patient is
    recognised and left out; without it, the run says it cannot tell."""
    main = make_main(tmp_path / "main")
    secret = "a-hospital-secret-of-32-characters"
    keyed = keyed_patient_id(secret.encode(), held_patient(main))
    feedback = make_feedback(tmp_path / "fb", [("NORMAL", keyed, ""), ("PNEUMONIA", "0" * 64, "")])
    cfg = config(main, feedback)
    data = load_source(cfg.data, 16)
    console = Console(record=True, width=300, soft_wrap=True)
    merged, records = join_extra_data(data, cfg.data, console)
    assert merged.sizes()["train"] == data.sizes()["train"] + 2 and "cannot be recognised" in console.export_text()
    monkeypatch.setenv(PATIENT_KEY_ENV, secret)
    merged, records = join_extra_data(data, cfg.data, Console(record=True))
    assert merged.sizes()["train"] == data.sizes()["train"] + 1 and records[1]["left_out"] == {PATIENT_LEAK: 1}
    assert keyed not in merged.groups["train"].tolist()


def test_every_extra_image_of_a_held_patient_can_be_left_out(tmp_path: Path) -> None:
    main = make_main(tmp_path / "main")
    patient = held_patient(main)
    feedback = make_feedback(tmp_path / "fb", [("NORMAL", patient, "")])
    cfg = config(main, feedback)
    data = load_source(cfg.data, 16)
    merged, records = join_extra_data(data, cfg.data)
    assert merged.sizes() == data.sizes() and records[1]["images"]["train"] == 0


def test_unknown_label_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    from cnnlab.tasks.train import train

    main = make_main(tmp_path / "main")
    feedback = make_feedback(tmp_path / "fb", [("NORMAL", "", ""), ("COVID", "", "")])
    out = tmp_path / "run"
    with pytest.raises(DataError) as info:
        train(config(main, feedback), out)
    message = str(info.value)
    assert "\n" not in message and "'COVID'" in message and str(feedback.resolve()) in message
    assert not out.exists()


@pytest.mark.parametrize("kind", ["missing", "empty", "twice", "main itself"])
def test_a_folder_that_cannot_be_extra_data_is_refused(tmp_path: Path, kind: str) -> None:
    main = make_main(tmp_path / "main")
    feedback = make_feedback(tmp_path / "fb", [("NORMAL", "", "")])
    (tmp_path / "empty").mkdir()
    extra = {
        "missing": [tmp_path / "nowhere"],
        "empty": [tmp_path / "empty"],
        "twice": [feedback, tmp_path / "fb" / ".." / "fb"],
        "main itself": [main],
    }[kind]
    cfg = config(main, *extra)
    data = load_source(cfg.data, 16)
    with pytest.raises(CnnlabError, match=r"^extra data "):
        join_extra_data(data, cfg.data)


def test_content_hash_changes_with_one_byte_of_one_image(tmp_path: Path) -> None:
    main = make_main(tmp_path / "main")
    feedback = make_feedback(tmp_path / "fb", [("NORMAL", "", ""), ("PNEUMONIA", "", "")])
    cfg = config(main, feedback)
    data = load_source(cfg.data, 16)
    _, first = join_extra_data(data, cfg.data)
    assert all(re.fullmatch(r"[0-9a-f]{64}", r["sha256"]) for r in first)
    assert first[0]["sha256"] == content_sha256(data.manifest.entries)
    image = feedback / "PNEUMONIA" / "fb01.png"
    raw = bytearray(image.read_bytes())
    raw[-1] ^= 0x01  # the last byte of the IEND chunk's CRC: the file changes, the pixels do not
    image.write_bytes(bytes(raw))
    _, second = join_extra_data(data, cfg.data)
    assert second[0]["sha256"] == first[0]["sha256"]
    assert second[1]["sha256"] != first[1]["sha256"] and second[1]["images"]["train"] == 2


def test_the_card_records_every_data_set(tmp_path: Path) -> None:
    from cnnlab.tasks.train import train

    main = make_main(tmp_path / "main")
    plain = json.loads((train(config(main, name="plain"), tmp_path / "plain").run_dir / "model.json").read_text())
    assert [d["role"] for d in plain["data"]["datasets"]] == [MAIN_ROLE]
    assert plain["data"]["datasets"][0]["images"] == plain["data"]["splits"]


def cli(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    from cnnlab.cli import main

    monkeypatch.setattr(sys, "argv", ["cnnlab", *args])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as info:
        main()
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_cli_train_with_extra_data_end_to_end(tmp_path: Path, capsys, monkeypatch) -> None:
    main = make_main(tmp_path / "main")
    patient = held_patient(main)
    feedback = make_feedback(tmp_path / "fb", [("PNEUMONIA", "new-1", "test"), ("NORMAL", patient, "val")])
    out = tmp_path / "run"
    base = ["train", "--model", "simple_cnn", "--data", f"folder:{main}", "--epochs", "1", "--set",
            "data.input_size=16", "--set", "data.val_fraction=0.2", "--out", str(out)]  # fmt: skip
    code, stdout, _ = cli([*base, "--extra-data", str(feedback)], capsys, monkeypatch)
    assert code == 0, stdout
    assert "1 images left out" in stdout and "1 images join the training split" in stdout
    card = json.loads((out / bundle.CARD).read_text())
    datasets = card["data"]["datasets"]
    assert [d["role"] for d in datasets] == [MAIN_ROLE, EXTRA_ROLE]
    assert all(re.fullmatch(r"[0-9a-f]{64}", d["sha256"]) for d in datasets)
    assert datasets[1]["images"] == {"train": 1, "val": 0, "test": 0}
    assert datasets[1]["left_out"] == {PATIENT_LEAK: 1}
    main_images = datasets[0]["images"]
    assert card["data"]["splits"] == {**main_images, "train": main_images["train"] + 1}
    assert card["data"]["sources_per_split"]["train"]["feedback"] == 1
    assert str(feedback.resolve()) in (out / bundle.CONFIG).read_text()
    # The source alone is what evaluation reloads: its digest still matches the card.
    code, stdout, _ = cli(["evaluate", str(out), "--bootstrap", "0"], capsys, monkeypatch)
    assert code == 0
    assert json.loads((out / "eval" / "metrics.json").read_text())["data_sha256_matches_card"] is True

    bad = make_feedback(tmp_path / "bad", [("COVID", "", "")])
    code, _, err = cli([*base[:-1], str(tmp_path / "run2"), "--extra-data", str(bad)], capsys, monkeypatch)
    assert code == 2 and "'COVID'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run2").exists()


def test_help_shows_extra_data(capsys, monkeypatch) -> None:
    code, stdout, _ = cli(["train", "--help"], capsys, monkeypatch)
    assert code == 0 and "--extra-data" in stdout and "--extra-data feedback/" in stdout
