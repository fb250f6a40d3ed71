"""The model card (`model.json`): a bundle's typed description, read and written here only.

Everything after training builds from the card: the architecture and its input, the classes,
the preprocessing serving must apply, the calibration and the operating point, and what the run
measured. The card is written last, so its presence marks a finished bundle.

`format` names the card's version. Cards of every format listed in `READABLE_FORMATS` load;
keys this version does not know are kept in `extra` and written back unchanged.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from cnnlab.bundle.layout import CARD, CHECKPOINTS
from cnnlab.errors import BundleError
from cnnlab.fileio import atomic_write_json

CARD_FORMAT = "cnnlab-bundle/1"
READABLE_FORMATS = (CARD_FORMAT,)


@dataclass(frozen=True)
class ModelCard:
    name: str
    architecture: str
    num_classes: int
    classes: list[str]
    in_chans: int
    input_size: list[int]
    """[height, width] of the network input."""
    preprocessing: dict[str, Any]
    """`cnnlab.data.preprocess.Preprocessing.to_dict()`: channels, resize, pad, mean/std, crop."""
    weights_sha256: str
    binary: bool = False
    """One sigmoid output (two classes)."""
    description: str = ""
    cam_layer: str = ""
    weights: str = "none"
    """Where the starting weights came from: none, imagenet or a file."""
    parameters: int = 0
    members: int = 0
    """An ensemble: this many member models of `architecture` whose logits are averaged
    (`cnnlab.bundle.ensemble`, `cnnlab crossval --ensemble`); 0: a single model."""
    tta: list[float] = field(default_factory=list)
    """Test-time views (`cnnlab.bundle.views`): centre-crop fractions whose logits are averaged;
    empty: the image as given."""
    temperature: float | None = None
    calibration: dict[str, Any] | None = None
    """`cnnlab calibrate`'s fit: method, temperature or scale/bias, where it was fitted, scores."""
    threshold: dict[str, Any] | None = None
    """The operating point: {"positive": [class, ...], "value": t, ...}."""
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] | None = None
    """The validation sample drift monitoring compares live inputs with."""
    cnnlab_version: str = ""
    torch_version: str = ""
    python: str = ""
    created_at: str = ""
    format: str = CARD_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys of a card written by another cnnlab version, kept as they were."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = CARD) -> ModelCard:
        if not isinstance(raw, dict) or raw.get("format") not in READABLE_FORMATS:
            raise BundleError(f"{where}: not a {CARD_FORMAT} model card")
        known = {f.name for f in fields(cls)} - {"extra"}
        try:
            return cls(
                **{k: v for k, v in raw.items() if k in known},
                extra={k: v for k, v in raw.items() if k not in known},
            )
        except TypeError as exc:  # a required key is missing
            raise BundleError(f"{where}: incomplete model card ({exc})") from None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        extra = out.pop("extra")
        for key in ("members", "tta"):  # a single model's card without views reads as it always has
            if not out[key]:
                del out[key]
        return {"format": out.pop("format"), **out, **extra}

    def with_changes(self, **changes: Any) -> ModelCard:
        return replace(self, **changes)

    @property
    def calibrated(self) -> bool:
        # `cnnlab calibrate --method auto` may store its choice of none: the card then records the
        # check, but predictions are the network's own probabilities.
        return bool(self.temperature) or bool(
            self.calibration and self.calibration.get("method", "temperature") != "none"
        )


def read_card(run_dir: str | Path) -> ModelCard:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BundleError(f"no run directory at {run_dir}")
    path = run_dir / CARD
    if not path.is_file():
        if (run_dir / CHECKPOINTS).is_dir():
            raise BundleError(f"{run_dir} is an unfinished run (no {CARD}); finish it with `cnnlab train ... --resume`")
        raise BundleError(f"{run_dir} is not a cnnlab bundle (no {CARD})")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    return ModelCard.from_dict(raw, str(path))


def write_card(run_dir: str | Path, card: ModelCard) -> None:
    atomic_write_json(Path(run_dir) / CARD, card.to_dict())
