"""Field codecs: how one record field becomes one JSON text in a store, and back, exactly.

Each stored field is its own JSON document, so stores can update a single field atomically and
types never have to be guessed back from strings (``"2024"`` stays a string, a pid stays an int).
Datetimes are stored as integer microseconds since the epoch, which is exact and compact.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from merlin_tracking.errors import InvalidRecordError
from merlin_tracking.ids import datetime_to_micros, micros_to_datetime
from merlin_tracking.urls import mask_secrets


def dumps(value: Any) -> str:
    """Canonical compact JSON used for every stored value."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def loads(text: str | bytes) -> Any:
    return json.loads(text)


@dataclass(frozen=True)
class Codec:
    """Convert a field between its Python value and a JSON-compatible value.

    ``from_json`` validates (records built in memory, imports); ``read`` converts a value a
    store gives back, which was validated when written: None when the JSON value is already
    the field's value, so reading a record does no work for strings, numbers and mappings."""

    to_json: Callable[[Any], Any]
    from_json: Callable[[Any], Any]
    read: Callable[[Any], Any] | None = None


def _check_str(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidRecordError(f"expected a string, got {type(value).__name__} {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRecordError(
            f"string {value!r} is not valid Unicode (lone surrogate)"
        ) from None
    return value


def _check_opt_str(value: Any) -> str | None:
    return None if value is None else _check_str(value)


def _check_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRecordError(f"expected an integer, got {type(value).__name__} {value!r}")
    return value


def _check_opt_int(value: Any) -> int | None:
    return None if value is None else _check_int(value)


def _check_opt_seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InvalidRecordError(f"expected a positive number of seconds, got {value!r}")
    return float(value)


def _check_opt_nonnegative_seconds(value: Any) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value >= 0
        or value == float("inf")
    ):
        raise InvalidRecordError(f"expected zero or a positive number of seconds, got {value!r}")
    return float(value)


def aware_utc(value: Any) -> datetime:
    """Return ``value`` as an aware UTC datetime; naive datetimes are refused, not guessed."""
    if not isinstance(value, datetime):
        raise InvalidRecordError(f"expected a datetime, got {type(value).__name__} {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidRecordError(
            f"datetime {value.isoformat()} has no timezone; pass an aware datetime"
        )
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise InvalidRecordError(
            f"datetime {value.isoformat()} is outside years 1-9999 in UTC"
        ) from None


def str_tuple(value: Any) -> tuple[str, ...]:
    """Normalise a list of strings; a lone string is refused so ``"abc"`` never becomes a,b,c."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence | set | frozenset):
        raise InvalidRecordError(
            f"expected a list of strings, got {type(value).__name__} {value!r}"
        )
    items = tuple(_check_str(item) for item in value)
    return tuple(dict.fromkeys(items))


def json_value(value: Any) -> Any:
    """Return a JSON-exact copy of ``value`` or refuse it, so what is stored is what reads back."""
    try:
        text = dumps(value)
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRecordError(f"value {value!r} holds a lone surrogate (not Unicode)") from None
    except (TypeError, ValueError) as exc:
        raise InvalidRecordError(f"value is not JSON-serialisable: {exc}") from None
    copy = loads(text)
    if copy != value or not _same_shape(copy, value):
        raise InvalidRecordError(
            f"value {value!r} does not survive JSON unchanged (use lists, dicts with string keys, "
            "str, int, float, bool, None)"
        )
    return copy


def _same_shape(stored: Any, original: Any) -> bool:
    if isinstance(original, tuple):
        return False
    if isinstance(original, dict):
        return all(isinstance(k, str) for k in original) and all(
            _same_shape(stored[k], v) for k, v in original.items()
        )
    if isinstance(original, list):
        return all(_same_shape(s, o) for s, o in zip(stored, original, strict=True))
    return type(stored) is type(original)


def json_mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidRecordError(f"expected a mapping, got {type(value).__name__} {value!r}")
    result: dict[str, Any] = json_value(dict(value))
    return result


def _masked(value: Any) -> Any:
    """``value`` (a JSON value) with the credentials in its strings masked."""
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, list):
        return [_masked(item) for item in value]
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    return value


def _masked_opt_str(value: Any) -> str | None:
    checked = _check_opt_str(value)
    return None if checked is None else mask_secrets(checked)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


STR = Codec(_check_str, _check_str)
OPT_STR = Codec(_check_opt_str, _check_opt_str)
INT = Codec(_check_int, _check_int)
OPT_INT = Codec(_check_opt_int, _check_opt_int)
OPT_SECONDS = Codec(_check_opt_seconds, _check_opt_seconds, _opt_float)
OPT_NONNEGATIVE_SECONDS = Codec(
    _check_opt_nonnegative_seconds, _check_opt_nonnegative_seconds, _opt_float
)
STR_TUPLE = Codec(lambda v: list(str_tuple(v)), tuple, tuple)
JSON = Codec(json_value, lambda v: v)
JSON_MAPPING = Codec(json_mapping, lambda v: v)
#: Text and mappings taken from a command line or settings (a worker's ``launch_cmd`` and
#: ``args``): stored, and read back, with their credentials masked (``urls.mask_secrets``).
MASKED_OPT_STR = Codec(_masked_opt_str, _masked_opt_str, _masked_opt_str)
MASKED_JSON_MAPPING = Codec(lambda v: _masked(json_mapping(v)), _masked, _masked)
DATETIME = Codec(
    lambda v: datetime_to_micros(aware_utc(v)),
    lambda v: micros_to_datetime(_check_int(v)),
    micros_to_datetime,
)
OPT_DATETIME = Codec(
    lambda v: None if v is None else datetime_to_micros(aware_utc(v)),
    lambda v: None if v is None else micros_to_datetime(_check_int(v)),
    lambda v: None if v is None else micros_to_datetime(v),
)


def enum_codec(parse: Callable[[Any], Any]) -> Codec:
    """A str enum stored as its value; ``parse`` (the enum's own) validates, reading looks the
    stored value up first."""
    members = {member.value: member for member in getattr(parse, "__self__", ())}

    def read(value: Any) -> Any:
        member = members.get(value)
        return member if member is not None else parse(value)

    return Codec(lambda v: parse(v).value, parse, read)
