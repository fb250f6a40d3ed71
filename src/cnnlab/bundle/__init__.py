"""The bundle: the run directory a training run leaves, and everything later steps read from it.

- `layout`: file names, run-directory checks, config and history files;
- `card`: the typed model card (`ModelCard`, `read_card`, `write_card`);
- `weights`: safetensors weights checked against the card, the model rebuilt from it;
- `classifier`: `Classifier` and `load`, the runtime every later step and the service use;
- `backends`: torch eager, `torch.compile` and ONNX Runtime behind one call;
- `data`: the data a bundle was trained on, as its model sees it.

The names most code needs are re-exported here (`from cnnlab import bundle; bundle.read_card`).
"""

from cnnlab.bundle.card import CARD_FORMAT, ModelCard, read_card, write_card
from cnnlab.bundle.layout import (
    CARD,
    CHECKPOINTS,
    CONFIG,
    CURVES,
    HISTORY,
    WEIGHTS,
    check_run_dir,
    prepare_run_dir,
    read_history,
    write_config,
    write_history,
)
from cnnlab.bundle.weights import load_model, load_state, save_weights

__all__ = [
    "CARD",
    "CARD_FORMAT",
    "CHECKPOINTS",
    "CONFIG",
    "CURVES",
    "HISTORY",
    "WEIGHTS",
    "ModelCard",
    "check_run_dir",
    "load_model",
    "load_state",
    "prepare_run_dir",
    "read_card",
    "read_history",
    "save_weights",
    "write_card",
    "write_config",
    "write_history",
]
