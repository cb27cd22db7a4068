"""Fixtures of the Celery tests: a ``Ledger`` of real worker subprocesses per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import CLIENT_APPS, Ledger, unique


@pytest.fixture(scope="module", autouse=True)
def _close_client_apps() -> Iterator[None]:
    yield
    while CLIENT_APPS:
        CLIENT_APPS.pop().close()


@pytest.fixture
def ledger(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Ledger]:
    book = Ledger(redis_url, prefix, unique("q"), tmp_path)
    try:
        yield book
    finally:
        book.reap()
