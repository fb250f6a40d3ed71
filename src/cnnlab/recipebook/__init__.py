"""Every exercise of the user's two documents as one command: `cnnlab recipe run NAME`.

Importing the package registers the recipes (training, theory, the X-ray pipeline)."""

from cnnlab.recipebook import flowers, theory, training, xray  # noqa: F401  (registers the recipes)
from cnnlab.recipebook.core import REGISTRY, Recipe, get_recipe, read_results, run_recipe

__all__ = ["REGISTRY", "Recipe", "get_recipe", "read_results", "run_recipe"]
