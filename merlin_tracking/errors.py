"""Exception hierarchy: every error the package raises on purpose is a ``TrackingError``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class TrackingError(Exception):
    """Base class of every error raised by merlin_tracking."""


class EntityNotFoundError(TrackingError, LookupError):
    """No record of the given type matches the identifier."""

    entity = "record"

    def __init__(self, identifier: str, detail: str = "") -> None:
        self.identifier, self.detail = identifier, detail
        message = f"no {self.entity} matches {identifier!r}"
        super().__init__(f"{message}: {detail}" if detail else message)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes (prefork logging)
        return type(self), (self.identifier, self.detail)


class StudyNotFoundError(EntityNotFoundError):
    entity = "study"


class RunNotFoundError(EntityNotFoundError):
    entity = "run"


class WorkerNotFoundError(EntityNotFoundError):
    entity = "worker"


class TaskNotFoundError(EntityNotFoundError):
    entity = "task"


class InvalidFilterError(TrackingError, ValueError):
    """A ``get_all`` filter names an unknown key or carries a bad value."""


class InvalidRecordError(TrackingError, ValueError):
    """A field value cannot be stored (wrong type, not JSON, empty where required)."""


class DuplicateEntityError(TrackingError):
    """A unique field (study name, run workspace, worker name) is already taken."""

    def __init__(self, entity: str, field: str, value: str, existing_id: str) -> None:
        self.entity, self.field = entity, field
        self.value, self.existing_id = value, existing_id
        super().__init__(f"a {entity} with {field} {value!r} already exists (id {existing_id})")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.entity, self.field, self.value, self.existing_id)


class InvalidTransitionError(TrackingError, ValueError):
    """A status change that the state machine does not allow."""


class ConfigurationError(TrackingError, ValueError):
    """A ``tracking_*`` setting has a value that cannot work; the message names the setting."""


class StoreError(TrackingError):
    """The store answered but did not carry out the operation (the server's reply is in the
    message); the URL is shown with its password masked."""

    summary = "refused the operation"

    def __init__(self, url: str, reason: str) -> None:
        self.url, self.reason = url, reason
        super().__init__(f"tracking store at {url} {self.summary}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.url, self.reason)


class StoreUnavailableError(StoreError, ConnectionError):
    """The backing store could not be reached; the URL is shown with its password masked."""

    summary = "is unavailable"


class StoreRefusedError(StoreUnavailableError):
    """The server answered but will not do it now: out of memory, a read-only replica, an ACL
    user without the permission, a cluster node that does not own the ledger's slot, a data set
    still loading, a master without the replicas it needs to write (often: in a failover). ``code`` is the server's error code; the message says what to do. A
    worker buffers its updates through it, as through an outage."""

    summary = "refused the operation"

    def __init__(self, url: str, reason: str, code: str = "") -> None:
        self.code = code
        super().__init__(url, reason)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.url, self.reason, self.code)


class BrokerUnavailableError(TrackingError, ConnectionError):
    """The Celery broker could not carry a control command (a revoke); the URL is shown with
    its password masked."""

    def __init__(self, url: str, reason: str) -> None:
        self.url, self.reason = url, reason
        super().__init__(f"broker at {url} is unavailable: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.url, self.reason)


def choices(values: Iterable[str]) -> str:
    """Render valid values for an error message."""
    return ", ".join(sorted(values))
