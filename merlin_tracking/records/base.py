"""The immutable record base class and its storage form.

A record is a frozen dataclass. Its storage form is a flat mapping of field name to JSON text
(one JSON document per field, see ``codec``), plus ``v``, the schema version. Fields equal to
their default are left out of storage to keep Redis memory small. Relationship collections that
stores keep as separate sets (``RELATIONS``) are passed in by the store when it loads a record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from merlin_tracking.errors import InvalidRecordError, TrackingError
from merlin_tracking.ids import looks_like_id
from merlin_tracking.records.codec import Codec, dumps, loads

R = TypeVar("R", bound="Record")

SCHEMA_VERSION_FIELD = "v"


@dataclasses.dataclass(frozen=True)
class Record:
    """Common behaviour of studies, runs and workers."""

    ENTITY: ClassVar[str] = "record"
    SCHEMA_VERSION: ClassVar[int] = 1
    CODECS: ClassVar[Mapping[str, Codec]] = {}
    RELATIONS: ClassVar[tuple[str, ...]] = ()

    id: str
    created_at: datetime

    def __post_init__(self) -> None:
        # Normalise every field through its codec so that a record in memory is exactly what a
        # store will give back (tuples for lists, aware UTC datetimes, parsed enums).
        defaults = _defaults(type(self))
        for name, codec in self.CODECS.items():
            value = getattr(self, name)
            if name in defaults and _is_immutable_default(value, defaults[name]):
                continue  # a default is valid and normal as it is (most fields of a new run)
            try:
                normalised = codec.from_json(codec.to_json(value))
            except InvalidRecordError as exc:
                raise InvalidRecordError(f"{self.ENTITY}.{name}: {exc}") from None
            object.__setattr__(self, name, normalised)
        for name in self.RELATIONS:
            object.__setattr__(self, name, tuple(getattr(self, name)))

    # ----------------------------------------------------------------- storage form
    def to_fields(self) -> dict[str, str]:
        """Storage form: field name -> JSON text, defaults omitted, schema version included."""
        defaults = _defaults(type(self))
        fields = {SCHEMA_VERSION_FIELD: str(self.SCHEMA_VERSION)}
        for name, codec in self.CODECS.items():
            value = getattr(self, name)
            if name in defaults and _omittable(defaults[name]) and value == defaults[name]:
                continue
            fields[name] = dumps(codec.to_json(value))
        return fields

    @classmethod
    def storage_defaults(cls) -> dict[str, Any]:
        """Defaults that storage leaves out (absent field = this value)."""
        return {name: value for name, value in _defaults(cls).items() if _omittable(value)}

    @classmethod
    def encode_field(cls, name: str, value: Any) -> str:
        """JSON text of one field value, validated by the field's codec."""
        return dumps(cls.CODECS[name].to_json(value))

    @classmethod
    def from_fields(
        cls: type[R],
        record_id: str,
        fields: Mapping[str, str],
        relations: Mapping[str, Sequence[str]] | None = None,
    ) -> R:
        """Rebuild a record from its storage form without re-validating trusted data."""
        return cls.from_values(
            record_id, {name: loads(text) for name, text in fields.items()}, relations
        )

    @classmethod
    def from_values(
        cls: type[R],
        record_id: str,
        values: Mapping[str, Any],
        relations: Mapping[str, Sequence[str]] | None = None,
    ) -> R:
        """Rebuild a record from its storage form with each field's JSON already parsed (a
        store that reads a record as one JSON object). Trusted data: the schema says how to
        convert each field, nothing is re-validated; unknown fields are ignored."""
        version = values.get(SCHEMA_VERSION_FIELD, 1)
        if int(version) > cls.SCHEMA_VERSION:
            raise TrackingError(
                f"{cls.ENTITY} {record_id} was written with schema version {version}; this "
                f"merlin_tracking reads up to {cls.SCHEMA_VERSION}: upgrade the package"
            )
        plan = _read_plan(cls)
        data = dict(plan.defaults)
        for name in plan.fresh:
            data[name] = {}
        readers = plan.readers
        for name, value in values.items():
            if name in readers:
                reader = readers[name]
                data[name] = value if reader is None else reader(value)
        for name in cls.RELATIONS:
            data[name] = tuple(sorted((relations or {}).get(name, ())))
        data["id"] = record_id
        record = object.__new__(cls)
        record.__dict__.update(data)
        return record

    # ----------------------------------------------------------------- conveniences
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict for people and scripts (ISO timestamps, enum values)."""
        result: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, tuple):
                value = list(value)
            elif hasattr(value, "value") and isinstance(value.value, str):
                value = value.value
            result[field.name] = value
        return result

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        """Inverse of ``to_dict``, fully validated (used by import)."""
        if not isinstance(data, Mapping):
            raise InvalidRecordError(f"{cls.ENTITY}: expected an object, got {type(data).__name__}")
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise InvalidRecordError(f"{cls.ENTITY}: unknown field(s) {sorted(unknown)}")
        record_id = data.get("id")
        if not isinstance(record_id, str) or not looks_like_id(record_id):
            raise InvalidRecordError(f"{cls.ENTITY}.id: {record_id!r} is not a record id")
        values: dict[str, Any] = {}
        for name, value in data.items():
            if isinstance(value, str) and _is_datetime_field(cls, name):
                try:
                    value = datetime.fromisoformat(value)
                except ValueError:
                    raise InvalidRecordError(
                        f"{cls.ENTITY}.{name}: not an ISO time: {value!r}"
                    ) from None
            values[name] = value
        try:
            return cls(**values)
        except TypeError as exc:
            raise InvalidRecordError(f"{cls.ENTITY}: {exc}") from None

    def replace(self: R, **changes: Any) -> R:
        """A copy with ``changes`` applied and validated."""
        return dataclasses.replace(self, **changes)

    def stored_as(self: R, **changes: Any) -> R:
        """A copy with values a store assigned (an id, a study id, attached workers), which are
        normal already: not validated again. Tuples for sequence fields, as ``replace``."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.__dict__.update(
            {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
        )
        return copy

    def get_id(self) -> str:
        return self.id

    def get_created_at(self) -> datetime:
        return self.created_at


def _is_datetime_field(cls: type[Record], name: str) -> bool:
    field_type = str(cls.__dataclass_fields__[name].type)
    return "datetime" in field_type


def _is_immutable_default(value: Any, default: Any) -> bool:
    """``value`` is the field's default and immutable (None, a number, a string, an enum, an
    empty tuple), so normalising it would give it back unchanged."""
    return (
        type(value) is type(default) and not isinstance(default, (dict, list)) and value == default
    )


def _omittable(default: Any) -> bool:
    """Only empty defaults are left out of storage; enums such as status are always written."""
    return default is None or (type(default) in (int, tuple, dict) and not default)


_DEFAULTS_CACHE: dict[type, dict[str, Any]] = {}


@dataclasses.dataclass(frozen=True)
class _ReadPlan:
    """How ``from_values`` builds one record type: immutable defaults to copy, the fields whose
    default is a fresh dict, and each stored field's reader (None: the JSON value as it is)."""

    defaults: dict[str, Any]
    fresh: tuple[str, ...]
    readers: dict[str, Callable[[Any], Any] | None]


_READ_PLANS: dict[type, _ReadPlan] = {}


def _read_plan(cls: type[Record]) -> _ReadPlan:
    plan = _READ_PLANS.get(cls)
    if plan is None:
        defaults = _defaults(cls)
        fresh = tuple(name for name, value in defaults.items() if isinstance(value, dict))
        plan = _ReadPlan(
            {name: value for name, value in defaults.items() if name not in fresh},
            fresh,
            {name: codec.read for name, codec in cls.CODECS.items()},
        )
        _READ_PLANS[cls] = plan
    return plan


def _defaults(cls: type[Record]) -> dict[str, Any]:
    cached = _DEFAULTS_CACHE.get(cls)
    if cached is None:
        cached = {}
        for field in dataclasses.fields(cls):
            if field.default is not dataclasses.MISSING:
                cached[field.name] = field.default
            elif field.default_factory is not dataclasses.MISSING:
                cached[field.name] = field.default_factory()
        _DEFAULTS_CACHE[cls] = cached
    return cached
