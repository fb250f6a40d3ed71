"""cnnlab: a workbench for convolutional neural networks."""

__version__ = "0.1.0"

from cnnlab.config import Config, load_config
from cnnlab.export.predictor import Classifier, Prediction, load
from cnnlab.models import create_model, list_models
from cnnlab.workflow import evaluate, train

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
