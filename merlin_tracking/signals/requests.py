"""What the hooks read from a worker's task requests: headers, the body the worker decoded,
routing, a failure's description, and (opt-in) the message as it was received."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from merlin_tracking.records.task import clip_error


def headers_of(request: Any) -> Mapping[str, Any] | None:
    """Message headers of a worker Request object (``request_dict``), if it has them."""
    headers = getattr(request, "request_dict", None)
    return headers if isinstance(headers, Mapping) else None


def opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def described(exc: Any) -> str | None:
    """``Type: message`` of an exception, at most ``ERROR_LIMIT`` bytes."""
    if not isinstance(exc, BaseException):
        return None
    text = str(exc)
    return clip_error(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def decoded_body(request: Any) -> tuple[Any, Any, Any]:
    """(args, kwargs, embed) of a worker Request: the worker already decoded the body of the
    task it is about to run (Celery keeps it as ``_payload``)."""
    payload = getattr(request, "_payload", None)
    if isinstance(payload, (tuple, list)) and len(payload) == 3:
        return payload[0], payload[1], payload[2]
    return getattr(request, "args", None), getattr(request, "kwargs", None), None


def context_body(request: Any) -> tuple[Any, Any, Any]:
    """(args, kwargs, embed) of a running task's Context (Celery copied the embed into it)."""
    embed = {"chain": getattr(request, "chain", None), "chord": getattr(request, "chord", None)}
    return getattr(request, "args", None), getattr(request, "kwargs", None), embed


def arrival_queue(request: Any) -> str | None:
    """The routing key the request's message arrived with (its queue, in the usual setup)."""
    delivery = getattr(request, "delivery_info", None)
    key = delivery.get("routing_key") if isinstance(delivery, Mapping) else None
    return opt_str(key)


def kept_message(request: Any) -> str | None:
    """The message a worker received, as JSON (``tracking_keep_messages``): its body as
    received (base64), headers, properties and routing, enough to publish it again as is."""
    message = getattr(request, "message", None)
    body = getattr(message, "body", None)
    if not isinstance(body, (bytes, str)):
        return None
    raw = body.encode("utf-8") if isinstance(body, str) else body
    delivery = getattr(message, "delivery_info", None) or {}
    properties = dict(getattr(message, "properties", None) or {})
    properties.pop("delivery_info", None)
    document = {
        "body": base64.b64encode(raw).decode("ascii"),
        "content_type": getattr(message, "content_type", None),
        "content_encoding": getattr(message, "content_encoding", None),
        "headers": dict(getattr(message, "headers", None) or {}),
        "properties": properties,
        "exchange": delivery.get("exchange") or "",
        "routing_key": delivery.get("routing_key"),
    }
    try:
        return json.dumps(document, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return None
