"""Round trips: every value a caller may store comes back exactly from the real Redis store.

Property tests (hypothesis) write generated names, workspaces, queues, JSON documents, pids and
timestamps, then read them back by id, by unique key and through ``get_all`` filters. Values the
ledger cannot keep exactly (lone surrogates, tuples, sets, non-string keys, NaN, ...) must be
refused with ``InvalidRecordError`` before anything is written.

Each hypothesis example gets a fresh key prefix (the test's ``prefix`` plus a counter), so examples
never see each other's records.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from merlin_tracking import (
    EntityNotFoundError,
    InvalidFilterError,
    InvalidRecordError,
    RunNotFoundError,
    RunStatus,
    TrackingDatabase,
    WorkerStatus,
)
from merlin_tracking.stores.redis.keys import KeySpace

UTC = timezone.utc

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    # No "explain" phase: its line tracing makes a failing property take minutes to report.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)

# --------------------------------------------------------------------------- strategies
# Any Unicode scalar value: every character except lone surrogates (category Cs).
CHARS = st.characters(codec="utf-8")
# Strings that a careless store turns into something else: numbers, booleans, null, glob and
# key-separator characters, whitespace, control characters, non-ASCII, emoji, id look-alikes.
TRICKY = [
    "2024",
    "007",
    "0",
    "-1",
    "1e3",
    "0x1F",
    "true",
    "false",
    "null",
    "None",
    "NaN",
    "[]",
    "{}",
    "*?[]:",
    "*",
    "?",
    "[a-z]",
    "a:b",
    "::",
    "{braces}",
    '"quoted"',
    "back\\slash",
    "line\nbreak",
    "\r\n",
    "\t",
    " ",
    " padded ",
    "\x00nul",
    "\x7f",
    "é",
    "ÅÄÖ",
    "日本語",
    "🎉",
    "👩\u200d👩\u200d👧",
    "\u2028",
    "\ufeff",
    "\U0010ffff",
    "0123456789ab",  # has the shape of a record id
    "x" * 300,
]
NAMES = st.one_of(st.sampled_from(TRICKY), st.text(CHARS, min_size=1, max_size=40))
QUEUES = st.lists(NAMES, max_size=4)

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(TRICKY),
    st.text(CHARS, max_size=20),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(CHARS, max_size=10), children, max_size=4),
    ),
    max_leaves=20,
)
JSON_OBJECTS = st.dictionaries(
    st.one_of(st.sampled_from(TRICKY), st.text(CHARS, max_size=10)), JSON_VALUES, max_size=5
)
# Unknown keyword arguments of runs.create land in additional_data; the prefix keeps them clear
# of create's own parameter names.
EXTRA_KWARGS = st.dictionaries(st.text(CHARS, max_size=10).map(lambda k: f"x_{k}"), JSON_VALUES)

TIMEZONES = st.one_of(
    st.just(UTC),
    st.timezones(),
    st.builds(
        timezone,
        st.timedeltas(
            min_value=timedelta(hours=-23, minutes=-59, seconds=-59),
            max_value=timedelta(hours=23, minutes=59, seconds=59),
        ),
    ),
)
# Every aware datetime whose UTC equivalent is a valid datetime (years 1 and 9999 can leave the
# range once converted; those are checked separately).
AWARE_DATETIMES = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=TIMEZONES
)
LONE_SURROGATES = st.characters(categories=["Cs"])
WITH_SURROGATE = st.builds(
    lambda head, bad, tail: head + bad + tail,
    st.text(CHARS, max_size=5),
    LONE_SURROGATES,
    st.text(CHARS, max_size=5),
)


@st.composite
def poisoned_objects(draw: st.DrawFn) -> dict[str, Any]:
    """A JSON object with one value JSON cannot keep exactly, somewhere inside it."""
    bad = draw(
        st.sampled_from(
            [
                (1, 2),
                ("tuple",),
                (),
                {1, 2},
                frozenset({"a"}),
                {1: "int key"},
                {True: "bool key"},
                {None: "None key"},
                {1.5: "float key"},
                {"1": "a", 1: "b"},
                float("nan"),
                float("inf"),
                -float("inf"),
                b"bytes",
                bytearray(b"x"),
                Decimal("1.5"),
                1j,
                datetime(2024, 1, 1, tzinfo=UTC),
                RunStatus.QUEUED,  # a str subclass: would come back as a plain str
                object(),
            ]
        )
    )
    for wrap in draw(st.lists(st.sampled_from(["list", "dict"]), max_size=3)):
        bad = [bad] if wrap == "list" else {"nested": bad}
    document = draw(JSON_OBJECTS)
    document[draw(st.text(CHARS, max_size=5))] = bad
    return document


# --------------------------------------------------------------------------- helpers
def strict_equal(left: Any, right: Any) -> bool:
    """Equal and of the same JSON types all the way down (``1 == 1.0 == True`` is not enough)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(strict_equal(left[k], right[k]) for k in left)
    if isinstance(left, list | tuple):
        return len(left) == len(right) and all(map(strict_equal, left, right))
    if isinstance(left, float):
        return left == right and math.copysign(1, left) == math.copysign(1, right)
    return bool(left == right)


def keys_under(raw_redis: redis.Redis, prefix: str, segment: str = "") -> set[bytes]:
    pattern = KeySpace(prefix).key(segment, "*") if segment else KeySpace(prefix).key("*")
    return set(raw_redis.scan_iter(match=pattern, count=1000))


def assert_no_run_written(db: TrackingDatabase, raw_redis: redis.Redis, prefix: str) -> None:
    """No run record, no run index entry: a refused create left nothing behind."""
    assert db.runs.count() == 0
    assert db.runs.get_all() == []
    assert keys_under(raw_redis, prefix, "run") == set()


Fresh = Callable[[], tuple[str, TrackingDatabase]]


@pytest.fixture
def fresh(redis_url: str, prefix: str) -> Fresh:
    """A factory of (prefix, database) pairs: one new, empty prefix per hypothesis example."""
    counter = itertools.count()

    def make() -> tuple[str, TrackingDatabase]:
        sub_prefix = f"{prefix}.{next(counter)}"
        return sub_prefix, TrackingDatabase.from_url(redis_url, prefix=sub_prefix)

    return make


# --------------------------------------------------------------------------- round trips
@PROPERTY
@given(name=NAMES)
def test_study_names_round_trip(fresh: Fresh, name: str) -> None:
    _, db = fresh()
    study = db.studies.create(name)

    assert study.name == name
    assert db.studies.get(study.id) == study
    assert db.studies.get(name) == study
    assert db.studies.get_all({"name": name}) == [study]
    assert db.studies.get_all() == [study]
    assert db.studies.create(name) == study, "create is idempotent"


@PROPERTY
@given(
    study_name=NAMES,
    workspace=NAMES,
    queues=QUEUES,
    parameters=JSON_OBJECTS,
    additional_data=JSON_OBJECTS,
    extra=EXTRA_KWARGS,
    samples=JSON_VALUES,
    status=st.sampled_from(RunStatus),
)
def test_runs_round_trip(
    fresh: Fresh,
    study_name: str,
    workspace: str,
    queues: list[str],
    parameters: dict[str, Any],
    additional_data: dict[str, Any],
    extra: dict[str, Any],
    samples: Any,
    status: RunStatus,
) -> None:
    _, db = fresh()
    run = db.runs.create(
        study_name,
        workspace,
        queues,
        parameters=parameters,
        additional_data=additional_data,
        samples=samples,
        status=status,
        **extra,
    )

    assert run.workspace == workspace
    assert run.queues == tuple(dict.fromkeys(queues))
    assert run.status is status
    assert strict_equal(run.parameters, parameters)
    assert strict_equal(run.additional_data, {**additional_data, **extra})
    assert strict_equal(run.samples, samples)

    stored = db.runs.get(run.id)
    assert stored == run
    assert strict_equal(stored.to_dict(), run.to_dict())
    assert db.runs.get(workspace) == run
    study = db.studies.get(study_name)
    assert study.runs == (run.id,)
    assert run.study_id == study.id
    assert db.runs.get_all() == [run]
    assert db.runs.get_all({"status": status}) == [run]
    assert db.runs.get_all({"study_id": study.id}) == [run]
    for queue in queues:
        assert db.runs.get_all({"queues": queue}) == [run]
        # Two filters go through the store's server-side intersection.
        assert db.runs.get_all({"queues": [queue], "status": status.value}) == [run]


@PROPERTY
@given(parameters=JSON_OBJECTS, additional_data=JSON_OBJECTS, samples=JSON_VALUES)
def test_run_updates_round_trip(
    fresh: Fresh,
    parameters: dict[str, Any],
    additional_data: dict[str, Any],
    samples: Any,
) -> None:
    _, db = fresh()
    run = db.runs.create("study", "workspace-1", ["q"], parameters={"old": 1})

    updated = db.runs.update(
        run.id, parameters=parameters, additional_data=additional_data, samples=samples
    )

    assert strict_equal(updated.parameters, parameters)
    assert strict_equal(updated.additional_data, additional_data)
    assert strict_equal(updated.samples, samples)
    assert db.runs.get("workspace-1") == updated


@PROPERTY
@given(workspaces=st.lists(NAMES, min_size=1, max_size=8, unique=True), queue=NAMES)
def test_many_workspaces_each_find_their_own_run(
    fresh: Fresh, workspaces: list[str], queue: str
) -> None:
    _, db = fresh()
    runs = [db.runs.create("study", workspace, [queue]) for workspace in workspaces]

    for workspace, run in zip(workspaces, runs, strict=True):
        assert db.runs.get(workspace) == run
    assert {r.id for r in db.runs.get_all({"queues": queue})} == {r.id for r in runs}
    assert db.studies.get("study").runs == tuple(sorted(r.id for r in runs))


@PROPERTY
@given(name=NAMES, queues=st.lists(NAMES, min_size=1, max_size=4))
def test_logical_workers_round_trip(fresh: Fresh, name: str, queues: list[str]) -> None:
    _, db = fresh()
    worker = db.logical_workers.create(name, queues)

    assert worker.name == name
    assert set(worker.queues) == set(queues)
    assert db.logical_workers.get(worker.id) == worker
    assert db.logical_workers.get(worker_name=name, queues=list(reversed(queues))) == worker
    assert db.logical_workers.get_all({"name": name}) == [worker]
    for queue in queues:
        assert db.logical_workers.get_all({"queues": queue}) == [worker]
    run = db.runs.create("study", "ws", [queues[0]])
    assert run.workers == (worker.id,)
    assert db.logical_workers.get(worker.id).runs == (run.id,)


@PROPERTY
@given(
    name=NAMES,
    host=NAMES,
    pid=st.integers(min_value=0, max_value=2**63 - 1),
    launch_cmd=NAMES,
    args=JSON_OBJECTS,
    heartbeat=AWARE_DATETIMES,
    started=AWARE_DATETIMES,
    status=st.sampled_from(WorkerStatus),
)
def test_physical_workers_round_trip(
    fresh: Fresh,
    name: str,
    host: str,
    pid: int,
    launch_cmd: str,
    args: dict[str, Any],
    heartbeat: datetime,
    started: datetime,
    status: WorkerStatus,
) -> None:
    _, db = fresh()
    worker = db.physical_workers.create(
        name,
        host=host,
        pid=pid,
        launch_cmd=launch_cmd,
        args=args,
        heartbeat_timestamp=heartbeat,
        latest_start_time=started,
        status=status,
    )

    stored = db.physical_workers.get(worker.id)
    assert stored == worker
    assert db.physical_workers.get(name) == worker
    assert stored.name == name and stored.host == host and stored.launch_cmd == launch_cmd
    assert type(stored.pid) is int and stored.pid == pid
    assert strict_equal(stored.args, args)
    assert stored.status is status
    for moment, original in (
        (stored.heartbeat_timestamp, heartbeat),
        (stored.latest_start_time, started),
    ):
        assert moment is not None
        assert moment.tzinfo is UTC or moment.tzinfo == timezone.utc
        assert moment.utcoffset() == timedelta(0)
        # Compare instants: ``==`` between zones is always False for an ambiguous (fold) time.
        assert moment == original.astimezone(UTC)
        assert moment - original == timedelta(0)
    assert db.physical_workers.get_all({"name": name}) == [worker]
    assert db.physical_workers.get_all({"host": host}) == [worker]
    assert db.physical_workers.get_all({"status": status}) == [worker]


@PROPERTY
@given(
    first=st.integers(min_value=1, max_value=4_194_304),
    second=st.integers(min_value=1, max_value=4_194_304),
)
def test_a_new_pid_is_a_restart(fresh: Fresh, first: int, second: int) -> None:
    _, db = fresh()
    db.physical_workers.create("celery@host", pid=first)
    again = db.physical_workers.create("celery@host", pid=second)

    assert type(again.pid) is int and again.pid == second
    assert again.restart_count == (0 if first == second else 1)


@pytest.mark.parametrize(("first", "second"), [(10**15, 10**15 + 1), (2**53, 2**53 + 1)])
def test_a_new_pid_is_a_restart_for_any_int(db: TrackingDatabase, first: int, second: int) -> None:
    """Real pids are small, but the field is an int and the contract compares it exactly."""
    db.physical_workers.create("celery@host", pid=first)
    again = db.physical_workers.create("celery@host", pid=second)

    assert again.pid == second
    assert again.restart_count == 1


# Words that are also the names of index keys in the Redis layout (keys.py).
INDEX_KEY_LOOKALIKES = ["workspace", "recent", "ids", "name", "status:INITIALIZED", "queue:q"]


@pytest.mark.parametrize("workspace", INDEX_KEY_LOOKALIKES)
def test_workspaces_named_like_index_keys_round_trip(db: TrackingDatabase, workspace: str) -> None:
    db.runs.create("study", "some-other-workspace", ["q"])  # the index keys now exist
    run = db.runs.create("study", workspace, ["q"])

    assert db.runs.get(workspace) == run


@pytest.mark.parametrize("name", ["ids", "name", "{sibling}:runs"])
def test_study_names_like_index_keys_round_trip(db: TrackingDatabase, name: str) -> None:
    sibling = db.studies.create("sibling")
    db.runs.create("sibling", "ws", ["q"])  # the sibling's run set now exists
    study = db.studies.create(name.format(sibling=sibling.id))

    assert db.studies.get(study.name) == study


@pytest.mark.parametrize("name", ["ids", "name", "status:RUNNING", "host:node1"])
def test_physical_worker_names_like_index_keys_round_trip(db: TrackingDatabase, name: str) -> None:
    db.physical_workers.create("celery@node1", host="node1", pid=1)
    worker = db.physical_workers.create(name, host="node1", pid=2)

    assert db.physical_workers.get(name) == worker


# --------------------------------------------------------------------------- refusals
@PROPERTY
@given(bad=WITH_SURROGATE, field=st.sampled_from(["study", "workspace", "queue"]))
def test_lone_surrogates_in_run_names_are_refused(
    fresh: Fresh, raw_redis: redis.Redis, bad: str, field: str
) -> None:
    prefix, db = fresh()
    names = {"study": "study", "workspace": "ws", "queue": "q"}
    names[field] = bad

    with pytest.raises(InvalidRecordError):
        db.runs.create(names["study"], names["workspace"], [names["queue"]])

    assert keys_under(raw_redis, prefix) == set(), "nothing at all was written"


@PROPERTY
@given(
    bad=WITH_SURROGATE,
    field=st.sampled_from(
        ["parameters value", "parameters key", "additional_data", "extra kwarg", "samples"]
    ),
)
def test_lone_surrogates_in_run_data_are_refused(
    fresh: Fresh, raw_redis: redis.Redis, bad: str, field: str
) -> None:
    prefix, db = fresh()
    choices: dict[str, dict[str, Any]] = {
        "parameters value": {"parameters": {"key": ["ok", bad]}},
        "parameters key": {"parameters": {bad: 1}},
        "additional_data": {"additional_data": {"nested": {"k": bad}}},
        "extra kwarg": {"x_extra": bad},
        "samples": {"samples": [bad]},
    }
    kwargs = choices[field]

    with pytest.raises(InvalidRecordError):
        db.runs.create("study", "ws", ["q"], **kwargs)

    # Text that is not Unicode is refused before anything is written, the study included.
    assert keys_under(raw_redis, prefix) == set(), "nothing at all was written"


@PROPERTY
@given(bad=WITH_SURROGATE)
def test_lone_surrogates_in_run_updates_are_refused(fresh: Fresh, bad: str) -> None:
    _, db = fresh()
    run = db.runs.create("study", "ws", ["q"], parameters={"kept": True})

    with pytest.raises(InvalidRecordError):
        db.runs.update(run.id, parameters={"changed": bad})

    assert db.runs.get(run.id) == run


@PROPERTY
@given(
    bad=WITH_SURROGATE,
    field=st.sampled_from(["name", "host", "launch_cmd", "args", "lw name", "lw queue"]),
)
def test_lone_surrogates_in_workers_are_refused(
    fresh: Fresh, raw_redis: redis.Redis, bad: str, field: str
) -> None:
    prefix, db = fresh()
    with pytest.raises(InvalidRecordError):
        if field == "lw name":
            db.logical_workers.create(bad, ["q"])
        elif field == "lw queue":
            db.logical_workers.create("worker", ["q", bad])
        elif field == "name":
            db.physical_workers.create(bad, pid=1)
        elif field == "args":
            db.physical_workers.create("celery@host", args={"a": bad})
        else:
            db.physical_workers.create("celery@host", **{field: bad})

    assert keys_under(raw_redis, prefix) == set(), "nothing at all was written"


@PROPERTY
@given(bad=WITH_SURROGATE)
def test_lookups_with_lone_surrogates_raise_tracking_errors(fresh: Fresh, bad: str) -> None:
    """A name that cannot exist is not found (or refused), never a UnicodeEncodeError."""
    _, db = fresh()
    db.runs.create("study", "ws", ["q"])
    lookups = [
        lambda: db.studies.get(bad),
        lambda: db.runs.get(bad),
        lambda: db.physical_workers.get(bad),
        lambda: db.runs.get_all({"queues": bad}),
        lambda: db.studies.get_all({"name": bad}),
    ]
    for lookup in lookups:
        try:
            result = lookup()
        except (EntityNotFoundError, InvalidRecordError, InvalidFilterError):
            continue
        assert result == [], f"lookup of {bad!r} found {result!r}"


@PROPERTY
@given(
    document=poisoned_objects(),
    field=st.sampled_from(["parameters", "additional_data", "extra kwarg", "samples"]),
)
def test_values_json_cannot_keep_are_refused(
    fresh: Fresh, raw_redis: redis.Redis, document: dict[str, Any], field: str
) -> None:
    prefix, db = fresh()
    choices: dict[str, dict[str, Any]] = {
        "parameters": {"parameters": document},
        "additional_data": {"additional_data": document},
        "extra kwarg": {"x_extra": document},
        "samples": {"samples": [document]},
    }
    kwargs = choices[field]

    with pytest.raises(InvalidRecordError):
        db.runs.create("study", "ws", ["q"], **kwargs)

    # The study may exist (runs.create makes it first); the run must not, nor its workspace.
    assert_no_run_written(db, raw_redis, prefix)
    with pytest.raises(RunNotFoundError):
        db.runs.get("ws")
    assert all(study.runs == () for study in db.studies.get_all())


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
    ],
    ids=["before-year-1-in-UTC", "after-year-9999-in-UTC"],
)
def test_datetimes_outside_the_utc_range_are_refused(
    db: TrackingDatabase, raw_redis: redis.Redis, prefix: str, moment: datetime
) -> None:
    with pytest.raises(InvalidRecordError):
        db.physical_workers.create("celery@host", heartbeat_timestamp=moment)

    assert keys_under(raw_redis, prefix) == set()


def test_naive_datetimes_are_refused(
    db: TrackingDatabase, raw_redis: redis.Redis, prefix: str
) -> None:
    with pytest.raises(InvalidRecordError):
        db.physical_workers.create("celery@host", heartbeat_timestamp=datetime(2024, 1, 1))

    assert keys_under(raw_redis, prefix) == set()
