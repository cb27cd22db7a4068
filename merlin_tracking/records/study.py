"""A study: a named workflow, launched many times as runs."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from merlin_tracking.records import codec
from merlin_tracking.records.base import Record


@dataclasses.dataclass(frozen=True)
class Study(Record):
    ENTITY: ClassVar[str] = "study"
    CODECS: ClassVar[dict[str, codec.Codec]] = {
        "name": codec.STR,
        "created_at": codec.DATETIME,
    }
    RELATIONS: ClassVar[tuple[str, ...]] = ("runs",)

    name: str
    runs: tuple[str, ...] = ()

    def get_name(self) -> str:
        return self.name

    def get_runs(self) -> list[str]:
        return list(self.runs)
