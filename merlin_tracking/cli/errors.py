"""Exit codes, and the translation of package errors into one-line messages with those codes."""

from __future__ import annotations

from enum import IntEnum

import click
import redis

from merlin_tracking.config import ConfigurationError
from merlin_tracking.errors import (
    EntityNotFoundError,
    InvalidFilterError,
    InvalidRecordError,
    StoreUnavailableError,
    TrackingError,
)


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # not found, nothing matched, or refused by the ledger (duplicate, transition)
    USAGE = 2  # bad command line, invalid filter, value or input document
    UNAVAILABLE = 3  # the store cannot be reached


class CliError(click.ClickException):
    """A user error: printed as ``Error: message`` on stderr, no traceback."""

    def __init__(self, message: str, exit_code: int = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.exit_code = int(exit_code)


def translate(exc: Exception) -> CliError:
    """The ``CliError`` (message and exit code) for an error raised by the package."""
    if isinstance(exc, StoreUnavailableError):
        return CliError(str(exc), ExitCode.UNAVAILABLE)
    if isinstance(exc, (InvalidFilterError, InvalidRecordError, ConfigurationError)):
        return CliError(str(exc), ExitCode.USAGE)
    if isinstance(exc, (EntityNotFoundError, TrackingError)):
        return CliError(str(exc), ExitCode.FAILED)
    if isinstance(exc, redis.RedisError):
        return CliError(f"tracking store error: {exc}", ExitCode.UNAVAILABLE)
    raise TypeError(f"no translation for {type(exc).__name__}")  # pragma: no cover


TRANSLATED: tuple[type[Exception], ...] = (TrackingError, redis.RedisError)
