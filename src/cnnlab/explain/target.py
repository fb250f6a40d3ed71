"""What the explain commands look at: a trained run bundle, or a registry model at random initialisation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from cnnlab.errors import CnnlabError


@dataclass
class Target:
    model: nn.Module
    title: str
    input_shape: tuple[int, int, int]
    """C, H, W of the network input."""
    untrained: bool
    run_dir: Path | None = None


def parse_input(text: str) -> tuple[int, int, int]:
    """`CxHxW` (or `HxW` for one channel, or a single side for a square RGB input)."""
    parts = text.lower().replace(" ", "").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise CnnlabError(f"--input must look like 3x224x224, not '{text}'") from None
    if len(values) == 1:
        values = [3, values[0], values[0]]
    elif len(values) == 2:
        values = [1, *values]
    if len(values) != 3 or min(values) < 1:
        raise CnnlabError(f"--input must look like 3x224x224, not '{text}'")
    return values[0], values[1], values[2]


def load_target(name_or_run: str, input_text: str | None = None) -> Target:
    """A directory with a model card is a run; anything else is a model name (`timm:` included)."""
    from cnnlab.models import create_model, get_spec

    path = Path(name_or_run)
    if (path / "model.json").is_file():
        from cnnlab.export.predictor import load

        clf = load(path)
        prep = clf.preprocessing
        shape = parse_input(input_text) if input_text else (prep.channels, *prep.pad_to)
        return Target(clf.model, f"{path.name} ({clf.card['architecture']})", shape, False, path)
    if path.exists() and path.is_dir():
        raise CnnlabError(f"{path} is a folder without a model.json: not a run bundle")
    spec = get_spec(name_or_run)
    shape = parse_input(input_text) if input_text else (spec.in_chans, spec.input_size, spec.input_size)
    model = create_model(name_or_run, in_chans=shape[0], input_size=shape[1])
    return Target(model.eval(), name_or_run, shape, True)


def input_pixels(target: Target, image: Path) -> tuple[object, object]:
    """The network-input pixels (H, W, C uint8, for display) and the normalised (1, C, H, W) tensor."""
    import torch

    from cnnlab.data.preprocess import Preprocessing, image_to_input, normalize, stats_tensors

    c, h, w = target.input_shape
    if target.run_dir is not None:
        from cnnlab import bundle

        prep = Preprocessing.from_dict(bundle.read_card(target.run_dir)["preprocessing"])
    else:
        from cnnlab.models import get_spec

        spec = get_spec(target.title)
        prep = Preprocessing(c, (h, w), (h, w), spec.mean or (0.5,) * c, spec.std or (0.5,) * c)
    pixels = image_to_input(image, prep.channels, prep.resize_to, prep.pad_to, prep.crop)
    mean, std = stats_tensors(prep.mean, prep.std)
    x = normalize(pixels[None], mean, std)
    return pixels.permute(1, 2, 0).numpy(), x.to(torch.float32)
