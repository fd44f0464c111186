"""How jettag's command-line tools report errors a user can cause (`jettag.errors.JetTagError`): the
one sentence on stderr, exit status 2, no traceback. Anything else is a bug and keeps its traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

from jettag.errors import JetTagError

F = TypeVar("F", bound=Callable)


def exit_with_error(prog: str, message: object) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


def report_user_errors(prog: str) -> Callable[[F], F]:
    """Decorate a command-line entry point so `JetTagError`s end in one line on stderr, exit 2."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            try:
                return func(*args, **kwargs)
            except JetTagError as err:
                exit_with_error(prog, err)

        return wrapper  # type: ignore[return-value]

    return decorate
