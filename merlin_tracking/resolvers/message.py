"""``TaskMessage``: what a run resolver may look at, at publish time or at the worker."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_MISSING: Any = object()

# (args, kwargs, embed): a task message body in Celery's protocol 2. ``embed`` holds the
# continuation (``chain``, ``chord``, ``callbacks``, ``errbacks``).
Payload = tuple[Any, Any, Any]


@dataclass
class TaskMessage:
    """One task message, as a resolver sees it.

    ``args``, ``kwargs``, ``chain`` and ``chord`` come from the body and are read lazily, only
    where that is safe: at the worker from the request the worker already decoded (it is about
    to run the task), at publish time from the in-memory body before it is serialised. Nothing
    is ever deserialised for a resolver; where they cannot be read they are None.
    """

    name: str
    id: str
    root_id: str | None
    parent_id: str | None
    group_id: str | None
    headers: Mapping[str, Any]
    queue: str | None
    app_name: str | None
    where: str  # "publish" or "worker"
    _load_body: Callable[[], Payload] | None = field(default=None, repr=False)
    _loaded: Any = field(default=_MISSING, repr=False)

    def _payload(self) -> Payload:
        if self._loaded is _MISSING:
            loaded: Payload = (None, None, None)
            if self._load_body is not None:
                try:
                    loaded = self._load_body()
                except Exception:
                    loaded = (None, None, None)
            self._loaded = loaded
        result: Payload = self._loaded
        return result

    @property
    def args(self) -> tuple[Any, ...] | None:
        args = self._payload()[0]
        return tuple(args) if isinstance(args, (list, tuple)) else None

    @property
    def kwargs(self) -> Mapping[str, Any] | None:
        kwargs = self._payload()[1]
        return kwargs if isinstance(kwargs, Mapping) else None

    @property
    def chain(self) -> Sequence[Mapping[str, Any]] | None:
        """Signatures of the rest of the task's chain, the last to run first (Celery's order)."""
        embed = self._payload()[2]
        chain = embed.get("chain") if isinstance(embed, Mapping) else None
        return chain if isinstance(chain, (list, tuple)) else None

    @property
    def chord(self) -> Mapping[str, Any] | None:
        """Signature of the chord body this task is a header task of, if any."""
        embed = self._payload()[2]
        chord = embed.get("chord") if isinstance(embed, Mapping) else None
        return chord if isinstance(chord, Mapping) else None


def body_parts(body: Any) -> Payload:
    """(args, kwargs, embed) of an in-memory protocol 2 body; Nones for anything else."""
    if isinstance(body, (tuple, list)) and len(body) >= 2:
        embed = body[2] if len(body) >= 3 else None
        return body[0], body[1], embed
    return None, None, None
