"""Errors a user can cause.

A `JetTagError` carries one sentence that names the file, branch or config key at fault and
what to do about it. The command-line tools print that sentence and exit with status 2 instead
of showing a traceback (`jettag.cli.errors`); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class JetTagError(Exception):
    """A problem with the user's input or configuration, reported as one sentence."""


class DataError(JetTagError):
    """Unreadable, missing or malformed input data."""


class ConfigError(JetTagError):
    """An invalid configuration value."""
