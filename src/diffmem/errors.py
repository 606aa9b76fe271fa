"""Errors diffmem reports to the user in one line."""


class ConfigError(ValueError):
    """A configuration or input-data problem, reported in one line naming the key or file."""
