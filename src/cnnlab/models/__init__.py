"""Models: the registry (a leaf), the model modules that register into it, and the factory.

Importing this package imports `classic`, `residual` and `zoo`, whose `@register_model`
decorators fill the registry, so `list_models()` and `get_spec()` always see the builtin models.
"""

from cnnlab.models import classic, residual, zoo  # noqa: F401  (registration)
from cnnlab.models.factory import create_model, get_spec, list_models
from cnnlab.models.registry import ModelSpec, register_model

__all__ = ["ModelSpec", "create_model", "get_spec", "list_models", "register_model"]
