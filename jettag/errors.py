"""Errors a user can cause, and how the command-line tools report them.

A `JetTagError` carries one sentence that names the file, branch or config key at fault and
what to do about it. Command-line entry points print that sentence and exit with status 2
instead of showing a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar


class JetTagError(Exception):
    """A problem with the user's input or configuration, reported as one sentence."""


class DataError(JetTagError):
    """Unreadable, missing or malformed input data."""


class ConfigError(JetTagError):
    """An invalid configuration value."""


F = TypeVar("F", bound=Callable)


def report_user_errors(prog: str) -> Callable[[F], F]:
    """Decorate a command-line entry point so `JetTagError`s end in one line on stderr, exit 2."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            try:
                return func(*args, **kwargs)
            except JetTagError as err:
                print(f"{prog}: error: {err}", file=sys.stderr)
                sys.exit(2)

        return wrapper  # type: ignore[return-value]

    return decorate
