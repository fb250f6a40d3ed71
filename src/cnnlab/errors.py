"""User-facing errors: the CLI prints their message as one line and exits with code 2."""


class CnnlabError(Exception):
    """Bad input or an unmet precondition the user can fix (never a bug in cnnlab)."""


class ConfigError(CnnlabError):
    """A recipe, override or option that does not fit the config schema."""


class DataError(CnnlabError):
    """A data set that is missing, unreadable or unusable."""


class ModelError(CnnlabError):
    """An unknown model name or a model that cannot take the requested input."""


class BundleError(CnnlabError):
    """A run directory that is missing, incomplete or inconsistent."""
