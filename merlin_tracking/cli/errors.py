"""Exit codes, and the translation of package errors into one-line messages with those codes."""

from __future__ import annotations

from enum import IntEnum

import click

from merlin_tracking.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    InvalidFilterError,
    InvalidRecordError,
    StoreError,
    TrackingError,
)


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # not found, nothing matched, or refused by the ledger (duplicate, transition)
    USAGE = 2  # bad command line, invalid filter, value or input document
    UNAVAILABLE = 3  # the store (or the broker) cannot be reached or refused the operation


class CliError(click.ClickException):
    """A user error: printed as ``Error: message`` on stderr, no traceback; exit code 1.

    Click reads the exit code from the class, so each code has its subclass: build errors with
    ``cli_error(message, code)``.
    """

    exit_code = int(ExitCode.FAILED)


class CliUsageError(CliError):
    exit_code = int(ExitCode.USAGE)


class CliStoreError(CliError):
    exit_code = int(ExitCode.UNAVAILABLE)


_BY_CODE: dict[ExitCode, type[CliError]] = {
    ExitCode.FAILED: CliError,
    ExitCode.USAGE: CliUsageError,
    ExitCode.UNAVAILABLE: CliStoreError,
}


def cli_error(message: str, code: ExitCode = ExitCode.FAILED) -> CliError:
    """A ``CliError`` that exits with ``code``."""
    return _BY_CODE[code](message)


def translate(exc: TrackingError) -> CliError:
    """The ``CliError`` (message and exit code) for an error raised by the package."""
    if isinstance(exc, (StoreError, BrokerUnavailableError)):
        return cli_error(str(exc), ExitCode.UNAVAILABLE)
    if isinstance(exc, (InvalidFilterError, InvalidRecordError, ConfigurationError)):
        return cli_error(str(exc), ExitCode.USAGE)
    return cli_error(str(exc), ExitCode.FAILED)  # not found, duplicate, transition, ...
