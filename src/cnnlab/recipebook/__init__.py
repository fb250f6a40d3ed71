"""Every exercise of the user's two documents as one command: `cnnlab recipe run NAME`.

Importing the package registers the recipes (training, theory, the X-ray pipeline)."""

from cnnlab.recipebook import (  # noqa: F401  (registers the recipes)
    anatomy,
    architectures,
    features,
    flowers,
    kernels,
    theory,
    training,
    transfer,
    xray,
)
from cnnlab.recipebook.core import REGISTRY, Recipe, get_recipe, read_results, run_recipe

__all__ = ["REGISTRY", "Recipe", "get_recipe", "read_results", "run_recipe"]
