"""CLI failures as one readable line and a documented exit code.

1: the server refused or failed (4xx/5xx); 2: usage or local configuration
(click's own code for bad arguments); 3: the server could not be reached.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

EXIT_SERVER = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class CliError(click.ClickException):
    """Printed by click as ``Error: <message>`` on stderr; exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_SERVER) -> None:
        super().__init__(" ".join(message.split()))
        self.exit_code = exit_code


class ConfigError(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


class UnreachableError(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_UNREACHABLE)


class ApiError(CliError):
    """An error response; keeps the status so callers can react to e.g. 404."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message, EXIT_SERVER)
        self.status = status


def parsed(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, a SpecError from it becoming a usage error (exit 2)."""
    from aitb.cli.spec import SpecError

    try:
        return fn(*args)
    except SpecError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
