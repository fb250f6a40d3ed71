"""cnnlab: a workbench for convolutional neural networks."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from cnnlab.bundle.classifier import Classifier, Prediction, load
    from cnnlab.config import Config, load_config
    from cnnlab.models import create_model, list_models
    from cnnlab.tasks.evaluate import evaluate
    from cnnlab.tasks.train import train

_PUBLIC = {
    "Config": "cnnlab.config",
    "load_config": "cnnlab.config",
    "Classifier": "cnnlab.bundle.classifier",
    "Prediction": "cnnlab.bundle.classifier",
    "load": "cnnlab.bundle.classifier",
    "create_model": "cnnlab.models",
    "list_models": "cnnlab.models",
    "evaluate": "cnnlab.tasks.evaluate",
    "train": "cnnlab.tasks.train",
}
__all__ = [
    "Classifier",
    "Config",
    "Prediction",
    "__version__",
    "create_model",
    "evaluate",
    "list_models",
    "load",
    "load_config",
    "train",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: `import cnnlab` (the CLI, the web page) must not load torch.
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnlab' has no attribute '{name}'")
