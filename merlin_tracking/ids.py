"""Record identifiers.

Run ids are "r" + a sequence number the store assigns (see ``run_id``). Other ids are 12
lowercase Crockford base32 characters (60 bits). Generated ids put the creation time
in microseconds in their top 52 bits, so sorting ids sorts records by creation time and the
creation timestamp can be read back from the id. Logical worker ids are a digest of the worker's
name and sorted queues instead, so every process derives the same id for the same worker.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
ID_LENGTH = 12
_TIME_BITS = 52
_RANDOM_BITS = 8
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

_lock = threading.Lock()
_last_micros = 0
_last_pid = 0


def _encode(number: int) -> str:
    chars = []
    for _ in range(ID_LENGTH):
        chars.append(ALPHABET[number & 31])
        number >>= 5
    return "".join(reversed(chars))


def _now_micros() -> int:
    delta = datetime.now(timezone.utc) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def new_id() -> tuple[str, datetime]:
    """Return a fresh time-ordered id and the creation time it encodes.

    Within one process ids strictly increase; across processes a clash is possible only within
    the same microsecond and is caught by the store's insert guard.
    """
    global _last_micros, _last_pid
    with _lock:
        micros = _now_micros()
        pid = os.getpid()
        if pid == _last_pid and micros <= _last_micros:
            micros = _last_micros + 1
        _last_micros, _last_pid = micros, pid
    number = (micros << _RANDOM_BITS) | secrets.randbits(_RANDOM_BITS)
    return _encode(number), micros_to_datetime(micros)


def micros_to_datetime(micros: int) -> datetime:
    """Convert integer microseconds since the epoch to an aware UTC datetime, exactly."""
    return _EPOCH + timedelta(microseconds=micros)


def datetime_to_micros(moment: datetime) -> int:
    """Convert an aware datetime to integer microseconds since the epoch, exactly."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def logical_worker_id(name: str, queues: Iterable[str]) -> str:
    """Deterministic id of the logical worker ``name`` consuming ``queues`` (order-insensitive)."""
    material = "\x00".join([name, *sorted(set(queues))]).encode("utf-8", "surrogatepass")
    digest = int.from_bytes(hashlib.blake2b(material, digest_size=8).digest(), "big")
    return _encode(digest >> 4)


RUN_ID_PREFIX = "r"
_MAX_SEQUENCE_DIGITS = 18


def run_id(sequence: int | str) -> str:
    """Public id of the run with store sequence number ``sequence`` ("r" + decimal).

    Run ids come from a sequence the store assigns, so they sort by creation and indexes can
    hold them as small integers (Redis keeps small integer sets as compact intsets).
    """
    return f"{RUN_ID_PREFIX}{int(sequence)}"


def run_sequence(value: str) -> str | None:
    """The sequence number (decimal text) inside a run id, or None if ``value`` is not one."""
    digits = value[1:]
    if (
        value[:1] == RUN_ID_PREFIX
        and 0 < len(digits) <= _MAX_SEQUENCE_DIGITS
        and digits.isascii()
        and digits.isdigit()
        and digits[0] != "0"
    ):
        return digits
    return None


def looks_like_id(value: str) -> bool:
    """True when ``value`` has the shape of an id (it may still not exist)."""
    if run_sequence(value) is not None:
        return True
    return len(value) == ID_LENGTH and all(char in ALPHABET for char in value)


def id_sort_key(value: str) -> tuple[int, str]:
    """Creation order of ids of one type: run ids numerically, other ids as text."""
    sequence = run_sequence(value)
    if sequence is not None:
        return int(sequence), ""
    return 0, value
