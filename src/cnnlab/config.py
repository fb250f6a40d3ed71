"""Strict configuration: frozen dataclasses loaded from YAML recipes plus `--set` overrides.

Unknown keys and values of the wrong type are errors with one clear line, never ignored
(a typo such as `epoch: 50` silently training for the default would waste an afternoon).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from cnnlab.errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    source: str = "mnist-sample"
    """A named source (`cnnlab datasets`)."""
    data_dir: str | None = None
    """Where the source's files are; default: $CNNLAB_DATA/<source>, then well-known places."""
    download: bool = False
    val_fraction: float = 0.1
    """Share of the training split held out for validation when the source has no val split."""
    test_fraction: float = 0.2
    """Share held out for testing when the source has no test split."""
    input_size: int | None = None
    """Side of the square network input; default: the model's own."""
    resize: Literal["auto", "pad", "resize"] = "auto"
    """How images reach input_size: `pad` keeps pixels (LeNet's 28->32), `resize` interpolates,
    `auto` pads when the image is at most 25% smaller than the input and resizes otherwise."""
    fit: Literal["crop", "stretch"] = "crop"
    """Photos of other aspect ratios: centre-crop then resize (keeps shapes) or stretch (Keras' default)."""
    channels: int | None = None
    """1 (grey) or 3 (colour); default: 3 if any image has colour, else 1."""
    limit_train: int | None = None
    """Use only this many training images (quick runs and tests)."""
    limit_eval: int | None = None
    """Use only this many images of the validation and of the test split (quick runs)."""
    split_seed: int = 0
    """Seed of the deterministic train/val/test split (independent of the training seed)."""
    max_bad_fraction: float = 0.01
    """Fail when more than this share of a folder's files cannot be read."""
    augment: Literal["none", "light", "standard", "strong", "xray", "xray-robust"] = "none"
    """Augmentation preset applied to training batches (`cnnlab data preview` shows it)."""
    mix: Literal["none", "mixup", "cutmix"] = "none"
    """Batch-level MixUp or CutMix on the training set."""
    mix_alpha: float = 0.2
    """Beta(alpha, alpha) mixing strength (0.2 for MixUp, 1.0 is usual for CutMix)."""
    sampler: Literal["shuffle", "balanced"] = "shuffle"
    """`balanced` draws each class equally often (with replacement) for imbalanced data."""
    cache: bool = True
    """Keep decoded, resized images in $CNNLAB_CACHE for the next run."""
    folds: int = 0
    """K-fold cross-validation (set by `cnnlab crossval`): all splits are pooled and cut into this
    many stratified folds, by patient when the data has patient ids; 0: the source's own splits."""
    fold: int = 0
    """With `folds`: which fold is the test part (0 .. folds-1); validation is carved from the rest."""
    second_fold: int | None = None
    """With `folds`: a second fold that joins `fold` as the test part (set by `cnnlab crossval
    --ensemble-oof`, whose models each leave two folds out)."""
    folds_exclude_test: bool = False
    """With `folds`: the source's own test split stays out of every fold (folds are cut from train
    + val), so an ensemble of the fold models can be scored on images none of them saw."""
    holdout_source: str | None = None
    """Leave one source out (set by `cnnlab crossval --by-source`): test = every image of this
    source (metadata.csv's `source`), train and val = the other sources', val held out by patient."""
    extra: tuple[str, ...] = ()
    """Class folders (`--extra-data DIR`, e.g. `cnnlab feedback export`'s) whose every image joins
    the training split only, whatever their own splits say; an image of a patient in the source's
    validation or test split is left out, and a label outside the source's classes is an error."""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "lenet5"
    """A registered name (`cnnlab models`) or timm:NAME."""
    weights: str = "none"
    """none (random init), imagenet (offline first), or a .safetensors/.pth state dict."""
    tta: tuple[float, ...] = ()
    """Test-time views whose logits every prediction averages: centre crops as fractions of the
    input's side (`[1.0, 0.9]`: the image and its central 90%); empty: the image as given."""


@dataclass(frozen=True)
class StageConfig:
    """One stage of a transfer-learning run."""

    name: str = "train"
    trainable: str = "all"
    """`head` (new classifier only: feature extraction), `top:N` (head plus the last N trunk blocks),
    or `all`."""
    epochs: int = 1
    lr: float | None = None
    """Default: optim.lr."""
    schedule: Literal["none", "cosine", "step", "plateau"] | None = None
    """Default: optim.schedule."""
    warmup_epochs: float | None = None
    lr_decay: float = 1.0
    """Discriminative rates: each trunk block below the top trains at lr x lr_decay^depth."""
    cache_features: bool = True
    """`head` stages without augmentation compute the frozen trunk's features once."""
    augment: Literal["none", "light", "standard", "strong", "xray", "xray-robust"] | None = None
    """This stage's augmentation preset; default: data.augment."""


@dataclass(frozen=True)
class OptimConfig:
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    """SGD only (Nesterov momentum)."""
    schedule: Literal["none", "cosine", "step", "plateau"] = "none"
    warmup_epochs: float = 0.0
    step_size: int = 10
    """`step` schedule: epochs between decays."""
    gamma: float = 0.1
    """`step` and `plateau` schedules: the factor applied at each decay."""
    plateau_patience: int = 2
    label_smoothing: float = 0.0
    loss: Literal["cross_entropy", "focal"] = "cross_entropy"
    focal_gamma: float = 2.0
    class_weights: Literal["none", "auto"] = "none"
    """`auto`: weight each class's loss by inverse training frequency (normalised to mean 1)."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 1000
    seed: int = 0
    early_stopping: int | None = None
    """Stop after this many epochs without a better monitored figure (None: never)."""
    monitor: Literal["val_loss", "val_acc", "val_auc"] = "val_loss"
    """What chooses the kept epoch and drives early stopping: validation loss, accuracy or macro
    one-vs-rest ROC AUC (ties broken by the loss). A triage model is better chosen by its AUC."""
    device: str = "auto"
    """Where to train: auto (a CUDA GPU if there is one, else the CPU), cpu, cuda or cuda:N. In a
    data-parallel job each process takes the GPU of its LOCAL_RANK. `--device` sets it."""
    channels_last: bool = True
    """NHWC memory layout; measurably faster for convolutions on the CPU and on tensor-core GPUs."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Autocast precision. auto: bf16 on a CPU with native BF16 units (AVX512-BF16/AMX, detected at
    run time; about 2x, costs a little accuracy: bench), fp32 on a CPU without them (emulated bf16 is
    slow); on CUDA bf16 where the GPU has it, else fp16 with loss scaling. fp16 needs a GPU.
    The model card records what was used."""
    compile: bool = False
    """torch.compile the model: helps LeNet-5, slows small CNNs, costs 20+ s cold."""
    threads: int | None = None
    """torch intra-op threads; default: torch's choice (one per core)."""
    sync_bn: bool = False
    """Data-parallel runs on GPUs: synchronise BatchNorm statistics across processes."""
    stages: tuple[StageConfig, ...] = ()
    """Transfer-learning stages run in order; empty: one stage training everything for `epochs`."""
    aux_weight: float = 0.4
    """Weight of an auxiliary classifier's loss (Inception v3) while the trunk trains."""

    def resolved_stages(self) -> tuple[StageConfig, ...]:
        if self.stages:
            return self.stages
        return (StageConfig(name="train", trainable="all", epochs=self.epochs),)


@dataclass(frozen=True)
class Config:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return _lists(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **sections: Any) -> Config:
        return dataclasses.replace(self, **sections)


def _lists(value: Any) -> Any:
    """Tuples as lists, so the resolved config is plain YAML."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(v) for v in value]
    return value


# --------------------------------------------------------------------------- loading


def recipe_names() -> list[str]:
    folder = resources.files("cnnlab") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def recipe_description(name: str) -> str:
    """What a packaged recipe trains: the first sentence of its leading comment (`cnnlab train --list`)."""
    lines = []
    for line in recipe_path(name).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return re.split(r"(?<=\.)\s", " ".join(lines), maxsplit=1)[0]


def recipe_path(name_or_path: str) -> Path:
    """A packaged recipe by name, or a YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"recipe file not found: {path}")
        return path
    packaged = resources.files("cnnlab") / "recipes" / f"{name_or_path}.yaml"
    if not packaged.is_file():
        hint = did_you_mean(name_or_path, recipe_names())
        raise ConfigError(f"unknown recipe '{name_or_path}'{hint}; training recipes: {', '.join(recipe_names())}")
    return Path(str(packaged))


def load_config(
    recipe: str | None = None,
    overrides: typing.Iterable[str] = (),
    values: dict[str, Any] | None = None,
) -> Config:
    """Build a Config from a recipe (name or path), then `values`, then `key=value` overrides."""
    raw: dict[str, Any] = {}
    if recipe is not None:
        path = recipe_path(recipe)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"malformed YAML in {path}{where}: {_first_line(exc)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of sections, not {type(loaded).__name__}")
        raw = loaded
        raw.setdefault("name", Path(path).stem)
    optim = raw.get("optim")
    recipe_lr = optim.get("lr", OptimConfig.lr) if isinstance(optim, dict) else OptimConfig.lr
    given: set[str] = set()
    for dotted, value in (values or {}).items():
        _set_dotted(raw, dotted, value)
        given.add(dotted)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        dotted, text = item.split("=", 1)
        _set_dotted(raw, dotted.strip(), _OverrideText(text.strip()))
        given.add(dotted.strip())
    return _apply_to_stages(_build(Config, raw, ""), given, float(recipe_lr))


def _apply_to_stages(cfg: Config, given: set[str], recipe_lr: float) -> Config:
    """`train.epochs` and `optim.lr` given for a recipe with stages reach every stage instead of
    being dropped: each stage trains `train.epochs` epochs, and each stage's own learning rate is
    scaled by new lr / the recipe's lr (their ratios, e.g. a slower fine-tuning stage, stay).
    What is given for one stage (`train.stages.K.epochs`, `train.stages.K.lr`) wins for that stage."""
    if not cfg.train.stages or "train.stages" in given:
        return cfg
    factor = cfg.optim.lr / recipe_lr if "optim.lr" in given and recipe_lr > 0 else 1.0
    stages = []
    for k, stage in enumerate(cfg.train.stages):
        if "train.epochs" in given and f"train.stages.{k}.epochs" not in given:
            stage = dataclasses.replace(stage, epochs=cfg.train.epochs)
        if stage.lr is not None and f"train.stages.{k}.lr" not in given:
            stage = dataclasses.replace(stage, lr=stage.lr * factor)
        stages.append(stage)
    return cfg.replace(train=dataclasses.replace(cfg.train, stages=tuple(stages)))


class _OverrideText(str):
    """A `--set` value still in text form: parsed against the field's type."""


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` (list items by index: `train.stages.1.epochs`)."""
    parts = dotted.split(".")
    node: Any = raw
    for part in parts[:-1]:
        if isinstance(node, list):
            node = _list_item(node, part, dotted)
            continue
        child = node.setdefault(part, {})
        if isinstance(child, _OverrideText):  # an earlier --set gave this whole list as YAML
            try:
                child = node[part] = yaml.safe_load(child)
            except yaml.YAMLError:
                raise ConfigError(f"'{part}' in '{dotted}': not YAML") from None
        if not isinstance(child, dict | list):
            raise ConfigError(f"'{part}' in '{dotted}' is a value, not a section")
        node = child
    if isinstance(node, list):
        raise ConfigError(f"'{dotted}' names a list item, not a key")
    node[parts[-1]] = value


def _list_item(items: list[Any], part: str, dotted: str) -> Any:
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(f"'{part}' in '{dotted}' is not an index of a list of {len(items)}")
    return items[int(part)]


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"'{prefix.rstrip('.') or 'config'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            hint = did_you_mean(str(key), names)
            raise ConfigError(f"unknown key '{prefix}{key}'{hint}")
    kwargs = {}
    for name in names:
        if name not in raw:
            continue
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            kwargs[name] = _build(kind, raw[name], f"{prefix}{name}.")
        elif typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            if isinstance(raw[name], _OverrideText):  # --set train.stages='[{...}, {...}]'
                try:
                    raw[name] = yaml.safe_load(raw[name])
                except yaml.YAMLError:
                    raise ConfigError(f"{prefix}{name}: not a YAML list") from None
            if not isinstance(raw[name], list | tuple):
                raise ConfigError(f"{prefix}{name} must be a list")
            kwargs[name] = tuple(
                _build(item, v, f"{prefix}{name}.{i}.")
                if dataclasses.is_dataclass(item)
                else _coerce(v, item, f"{prefix}{name}.{i}")
                for i, v in enumerate(raw[name])
            )
        else:
            kwargs[name] = _coerce(raw[name], kind, f"{prefix}{name}")
    for name, value in kwargs.items():
        rule = _RANGES.get((cls.__name__, name))
        if rule is not None and value is not None and not rule[0](value):
            raise ConfigError(f"{prefix}{name} must be {rule[1]}, not {value!r}")
    return cls(**kwargs)


def _positive(v: float) -> bool:
    return v > 0


_FRACTION = (lambda v: 0 <= v < 1, "in [0, 1)")
_RANGES: dict[tuple[str, str], tuple[Callable[[Any], bool], str]] = {
    ("DataConfig", "val_fraction"): _FRACTION,
    ("DataConfig", "test_fraction"): _FRACTION,
    ("DataConfig", "max_bad_fraction"): (lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("DataConfig", "input_size"): (_positive, "positive"),
    ("DataConfig", "channels"): (lambda v: v in (1, 3), "1 or 3"),
    ("DataConfig", "limit_train"): (_positive, "positive"),
    ("DataConfig", "limit_eval"): (_positive, "positive"),
    ("DataConfig", "mix_alpha"): (_positive, "positive"),
    ("DataConfig", "folds"): (lambda v: v == 0 or v >= 2, "0 (off) or at least 2"),
    ("DataConfig", "fold"): (lambda v: v >= 0, "zero or positive"),
    ("OptimConfig", "lr"): (lambda v: v >= 0, "zero or positive"),
    ("OptimConfig", "weight_decay"): (lambda v: v >= 0, "zero or positive"),
    ("OptimConfig", "step_size"): (_positive, "positive"),
    ("OptimConfig", "gamma"): (_positive, "positive"),
    ("OptimConfig", "label_smoothing"): _FRACTION,
    ("OptimConfig", "focal_gamma"): (lambda v: v >= 0, "zero or positive"),
    ("OptimConfig", "warmup_epochs"): (lambda v: v >= 0, "zero or positive"),
    ("TrainConfig", "epochs"): (_positive, "positive"),
    ("TrainConfig", "batch_size"): (_positive, "positive"),
    ("TrainConfig", "eval_batch_size"): (_positive, "positive"),
    ("TrainConfig", "early_stopping"): (_positive, "positive"),
    ("TrainConfig", "threads"): (_positive, "positive"),
    ("ModelConfig", "tta"): (lambda v: all(0 < f <= 1 for f in v), "centre-crop fractions in (0, 1]"),
    ("StageConfig", "epochs"): (_positive, "positive"),
    ("StageConfig", "lr"): (lambda v: v >= 0, "zero or positive"),
    ("StageConfig", "lr_decay"): (_positive, "positive"),
}


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """Check (and, for --set text, parse) one value against its annotated type."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        inner = options[0]
        # "none" is a real choice of some Literals (augment: none); only otherwise does it mean null.
        if typing.get_origin(inner) is Literal and value in typing.get_args(inner):
            return str(value)
        if value is None or (isinstance(value, _OverrideText) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, inner, key)
    if origin is Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))}, not '{value}'")
        return str(value)
    text = isinstance(value, _OverrideText)
    if kind is bool:
        if text and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        if isinstance(value, bool):
            return value
    elif kind is int:
        if text:
            try:
                return int(value)
            except ValueError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        # YAML 1.1 reads `1e-3` (no dot) as a string; it plainly means a number.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        elif isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return str(value)
    else:  # pragma: no cover - a schema field of a type this function does not know
        raise TypeError(f"unsupported config type {kind} for {key}")
    raise ConfigError(f"{key} must be {_type_name(kind)}, not {value!r}")


def _type_name(kind: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(kind, str(kind))


def did_you_mean(word: str, options: typing.Iterable[str], prefix: str = "") -> str:
    """` (did you mean 'X'?)` for the closest option, or nothing."""
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def _first_line(exc: Exception) -> str:
    problem = getattr(exc, "problem", None)
    return str(problem or exc).splitlines()[0]
