from __future__ import annotations

from pathlib import Path

import pytest

from cnnlab.config import Config, load_config, recipe_names
from cnnlab.errors import ConfigError


def test_every_packaged_recipe_loads() -> None:
    names = recipe_names()
    assert {"lenet5-mnist", "lenet5-fashion-mnist", "simple-cnn-mnist", "vgg-mini-cifar10"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.name == name


def test_seed_settings_of_lenet5_mnist() -> None:
    cfg = load_config("lenet5-mnist")
    assert (cfg.model.name, cfg.train.epochs, cfg.train.batch_size, cfg.optim.optimizer) == ("lenet5", 10, 128, "adam")
    assert cfg.optim.lr == pytest.approx(1e-3)


def test_overrides_are_parsed_against_the_field_type() -> None:
    cfg = load_config(
        "lenet5-mnist",
        overrides=[
            "train.epochs=3",
            "optim.lr=3e-4",
            "train.channels_last=false",
            "train.early_stopping=none",
            "optim.schedule=cosine",
            "data.data_dir=/x",
        ],
    )
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.train.channels_last is False
    assert cfg.train.early_stopping is None
    assert cfg.optim.schedule == "cosine"
    assert cfg.data.data_dir == "/x"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", "unknown key 'train.epoch' (did you mean 'epochs'?)"),
        ("trian.epochs=3", "unknown key 'trian'"),
        ("train.epochs=three", "train.epochs must be an integer, not 'three'"),
        ("train.epochs=2.5", "train.epochs must be an integer"),
        ("optim.optimizer=rmsprop", "optim.optimizer must be one of adam, adamw, sgd, not 'rmsprop'"),
        ("train.channels_last=maybe", "train.channels_last must be true or false"),
        ("train.epochs", "must look like section.key=value"),
        ("train=3", "'train' must be a mapping"),
    ],
)
def test_bad_overrides_are_one_line_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("lenet5-mnist", overrides=[override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_yaml_types_are_strict(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  epochs: '10'\n")
    with pytest.raises(ConfigError, match=r"train\.epochs must be an integer"):
        load_config(str(recipe))
    recipe.write_text("train:\n  epochs: true\n")
    with pytest.raises(ConfigError, match=r"train\.epochs must be an integer"):
        load_config(str(recipe))


def test_yaml_exponent_without_dot_is_a_number(tmp_path: Path) -> None:
    # YAML 1.1 reads 1e-3 as a string; a learning rate written that way means a number.
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim:\n  lr: 1e-3\n")
    assert load_config(str(recipe)).optim.lr == pytest.approx(1e-3)


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("train:\n  epochs: 3\n   batch_size: [\n")
    with pytest.raises(ConfigError, match=r"malformed YAML in .*bad.yaml line \d"):
        load_config(str(recipe))


def test_unknown_recipe_suggests_a_name() -> None:
    with pytest.raises(ConfigError, match="did you mean 'lenet5-mnist'"):
        load_config("lenet5-mnst")


def test_resolved_config_round_trips_through_yaml(tmp_path: Path) -> None:
    cfg = load_config("lenet5-fashion-mnist", overrides=["optim.lr=5e-4", "train.threads=1"])
    saved = tmp_path / "config.yaml"
    saved.write_text(cfg.to_yaml())
    assert load_config(str(saved)) == cfg
    assert isinstance(cfg, Config)


def test_epochs_and_lr_reach_the_stages_of_a_staged_recipe() -> None:
    # `cnnlab train lite0-xray --epochs 1 --lr 0.05` once trained 5 + 5 epochs at the recipe's rates.
    plain = load_config("lite0-xray")
    assert [(s.epochs, s.lr) for s in plain.train.stages] == [(5, 1e-3), (5, 2e-4)]
    cfg = load_config("lite0-xray", values={"train.epochs": 1, "optim.lr": 0.05})
    assert [s.epochs for s in cfg.train.stages] == [1, 1]
    assert [s.lr for s in cfg.train.stages] == pytest.approx([0.05, 0.01])  # the stages' ratio stays
    one_stage = load_config(
        "lite0-xray", overrides=["train.epochs=2", "train.stages.1.epochs=7", "train.stages.1.lr=1e-5"]
    )
    assert [(s.epochs, s.lr) for s in one_stage.train.stages] == [(2, 1e-3), (7, 1e-5)]
