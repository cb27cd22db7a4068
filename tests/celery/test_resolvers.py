"""Run resolvers: selection and validation, and the ``workflow`` resolver on real workers.

The workflow tests use a plain app (no ``launch_study``, no run headers). In the first kind
the canvases come from a spawned process that never installs tracking, so every task is
resolved and counted as queued at the worker; in the second the worker's own app publishes
with tracking installed, so messages are resolved and counted at publish time.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import chain, chord, group

from merlin_tracking import Run, RunStatus, TrackingDatabase, WorkerStatus
from merlin_tracking.config import ConfigurationError, TrackingConfig
from merlin_tracking.resolvers import (
    TaskMessage,
    auto_resolver,
    headers_resolver,
    load_resolver,
    workflow_resolver,
)
from merlin_tracking.signals import STUDY_HEADER, WORKSPACE_HEADER, install
from merlin_tracking.signals.registry import tracker_for
from merlin_tracking.signals.tracker import RunIdentity
from tests.support.celery import (
    counters,
    define_tasks,
    drop_queues,
    embedded_worker,
    make_app,
    wait_for,
    wait_for_run,
)

URL = "redis://127.0.0.1:1/0"


# ------------------------------------------------------------------------------- selection
def conf(value: Any) -> TrackingConfig:
    return TrackingConfig.from_app_conf(
        {"tracking_url": URL, "tracking_run_resolver": value}, environ={}
    )


def test_default_is_auto_headers_then_merlin() -> None:
    config = TrackingConfig.from_app_conf({"tracking_url": URL}, environ={})
    assert config.run_resolver == "auto"
    auto = load_resolver(config.run_resolver)
    assert auto is auto_resolver
    assert auto(message("app.add", "1")) is None  # not Merlin's: only headers count
    merlin = message("merlin:mark_run_as_complete", "2")
    merlin._loaded = (("/out/hello_20240101-120000",), {}, None)
    assert auto(merlin) == RunIdentity("hello", "/out/hello_20240101-120000")


def test_builtin_names() -> None:
    assert conf("workflow").run_resolver == "workflow"
    assert load_resolver("workflow") is workflow_resolver
    assert load_resolver(" headers ") is headers_resolver


def test_environment_wins() -> None:
    config = TrackingConfig.from_app_conf(
        {"tracking_url": URL, "tracking_run_resolver": "headers"},
        environ={"MERLIN_TRACKING_RUN_RESOLVER": "workflow"},
    )
    assert config.run_resolver == "workflow"


def test_module_callable() -> None:
    resolver = load_resolver("tests.support.resolvers:fixed_resolver")
    assert conf("tests.support.resolvers:fixed_resolver").run_resolver.endswith(":fixed_resolver")
    assert resolver(message("t", "1")) == RunIdentity("fixed", "/ws/fixed")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("nope", "unknown resolver"),
        ("no_such_module_xyz:f", "cannot import"),
        ("tests.support.resolvers:missing", "cannot import"),
        ("tests.support.resolvers:NOT_CALLABLE", "not callable"),
        (42, "expected a name"),
    ],
)
def test_bad_values_name_the_setting_and_the_choices(value: Any, why: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_resolver(conf(value).run_resolver)
    text = str(caught.value)
    assert text.startswith("tracking_run_resolver:")
    assert why in text
    assert "headers" in text and "workflow" in text and "module:callable" in text


def test_bad_value_fails_install(redis_url: str, prefix: str) -> None:
    app = make_app(redis_url, prefix, tracking_run_resolver="bogus")
    with pytest.raises(ConfigurationError, match="tracking_run_resolver"):
        install(app)


@pytest.fixture
def entry_point_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A third-party distribution on sys.path declaring a resolver entry point."""
    (tmp_path / "thirdparty_resolver_mod.py").write_text(
        textwrap.dedent(
            """
            from merlin_tracking.signals.tracker import RunIdentity

            def resolve(message):
                return RunIdentity("third", "/ws/third/" + message.id)
            """
        )
    )
    info = tmp_path / "thirdparty_resolver-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: thirdparty-resolver\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[merlin_tracking.resolvers]\nthirdparty = thirdparty_resolver_mod:resolve\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "thirdparty"
    sys.modules.pop("thirdparty_resolver_mod", None)


def test_entry_point(entry_point_dist: str) -> None:
    assert conf(entry_point_dist).run_resolver == entry_point_dist
    resolver = load_resolver(entry_point_dist)
    assert resolver(message("t", "abc")) == RunIdentity("third", "/ws/third/abc")
    with pytest.raises(ConfigurationError) as caught:
        load_resolver("nope")
    assert entry_point_dist in str(caught.value)  # listed among the valid names


# ------------------------------------------------------------------------------- workflow keys
def message(
    name: str, task_id: str, root: str | None = None, group_id: str | None = None
) -> TaskMessage:
    return TaskMessage(
        name=name,
        id=task_id,
        root_id=root,
        parent_id=None,
        group_id=group_id,
        headers={},
        queue="q",
        app_name="app",
        where="worker",
    )


def test_workflow_keys() -> None:
    assert workflow_resolver(message("a", "r", "r")) == RunIdentity("a", "celery://app/r")
    # a task of the workflow rooted at r (chain step, nested group member, chord body)
    assert workflow_resolver(message("b", "x", "r", "g")) == RunIdentity("b", "celery://app/r")
    # a header task of a top-level group or chord is its own root: keyed by the group
    assert workflow_resolver(message("a", "h", "h", "g")) == RunIdentity("a", "celery://app/g")


NESTED_CANVASES = {
    # name: canvas over tasks a..e -> the id every task of it must be keyed by
    "chain in group": lambda a, b, c, d, e: group(chain(a.s(), b.s()), c.s()),
    "chain of chains in group": lambda a, b, c, d, e: group(
        chain(a.s(), chain(b.s(), c.s())), d.s()
    ),
    "chord in group": lambda a, b, c, d, e: group(chord([a.s(), b.s()], c.s()), d.s()),
    "chord with chain body in group": (
        lambda a, b, c, d, e: group(chord([a.s(), b.s()], chain(c.s(), d.s())), e.s())
    ),
    "chain in chord header": lambda a, b, c, d, e: chord([chain(a.s(), b.s()), c.s()], d.s()),
    "chord in chord header": lambda a, b, c, d, e: chord(
        [chord([a.s(), b.s()], c.s()), d.s()], e.s()
    ),
    "group in group": lambda a, b, c, d, e: group(group(a.s(), b.s()), c.s()),
    "chained group in group": lambda a, b, c, d, e: group(chain(group(a.s(), b.s()), c.s()), d.s()),
}


@pytest.mark.parametrize("kind", list(NESTED_CANVASES))
def test_workflow_keys_nested_canvases_by_their_top_level_group(
    kind: str, redis_url: str, prefix: str
) -> None:
    """Messages Celery itself publishes for nested canvases (captured before serialisation,
    nothing consumes them): every root task they carry is keyed by the top-level group."""
    from celery import signals

    from merlin_tracking.resolvers.message import body_parts
    from merlin_tracking.resolvers.workflow import workflow_key

    app = make_app(redis_url, prefix, broker_url="memory://")

    def one(*args: Any) -> int:
        return 1

    tasks = [app.task(name=f"n.{n}", shared=False)(one) for n in "abcde"]
    seen: list[tuple[str, str]] = []

    def capture(sender: Any = None, headers: Any = None, body: Any = None, **_: Any) -> None:
        msg = TaskMessage(
            name=headers["task"],
            id=headers["id"],
            root_id=headers["root_id"],
            parent_id=headers["parent_id"],
            group_id=headers.get("group"),
            headers=headers,
            queue=None,
            app_name=app.main,
            where="publish",
            _load_body=lambda: body_parts(body),
        )
        seen.append((msg.name, workflow_key(msg)))

    signals.before_task_publish.connect(capture, weak=False)
    try:
        result = NESTED_CANVASES[kind](*tasks).apply_async()
    finally:
        signals.before_task_publish.disconnect(capture)
    # The top-level group's id: a group's result id, or a chord's header group (its parent).
    top = result.parent.id if kind.startswith(("chain in chord", "chord in chord")) else result.id
    assert len(seen) >= 2
    assert seen == [(name, top) for name, _ in seen]


def test_the_resolver_is_asked_once_per_workflow_and_group() -> None:
    from merlin_tracking.signals.tracker import Tracker
    from tests.support import resolvers as resolver_support

    tracker = Tracker(
        conf("tests.support.resolvers:counting_resolver"),
        app_name="app",
        resolver=load_resolver("tests.support.resolvers:counting_resolver"),
    )
    resolver_support.CALLS.clear()

    def ask(task_id: str, root: str, parent: str | None, group_id: str | None) -> RunIdentity:
        msg = message("t", task_id, root, group_id)
        msg.parent_id = parent
        run = tracker.resolve(msg)
        assert run is not None
        return run

    # header tasks of one top-level group: each its own root, one group id
    runs = {ask(h, h, None, "g") for h in ("h1", "h2", "h3")}
    # a chain: root r, then children naming r as root and their parent
    runs_chain = {ask("r", "r", None, None), ask("c1", "r", "r", None), ask("c2", "r", "c1", None)}
    assert runs == {RunIdentity("counted", "/ws/counted/g")}
    assert runs_chain == {RunIdentity("counted", "/ws/counted/r")}
    assert resolver_support.CALLS == ["h1", "r"]
    assert tracker.cached(None, None, "g") == RunIdentity("counted", "/ws/counted/g")
    assert tracker.cached("unknown", None, None) is None


def test_headers_resolver_reads_run_headers() -> None:
    msg = message("a", "1")
    assert headers_resolver(msg) is None
    msg.headers = {STUDY_HEADER: "s", WORKSPACE_HEADER: "/w"}
    assert headers_resolver(msg) == RunIdentity("s", "/w")


# ------------------------------------------------------------------------------- real workers
EXPECTED = {
    # kind: (study = root task name, counters)
    "chain": ("mt.add", counters(3)),
    "group": ("mt.add", counters(5)),
    "chord": ("mt.add", counters(101)),
    "retry": ("mt.flaky", counters(1, retried=1)),
    "replace": ("mt.replacer", counters(1)),
    "chain_in_group": ("mt.add", counters(4)),
    "chord_in_group": ("mt.add", counters(5)),
}


@pytest.fixture
def cleanup(raw_redis: redis.Redis, prefix: str) -> Iterator[None]:
    yield
    gc.collect()
    drop_queues(raw_redis, prefix)


@pytest.mark.parametrize("pool", ["solo", "threads", "prefork"])
def test_workflows_from_an_untracked_publisher_are_runs(
    pool: str, redis_url: str, prefix: str, db: TrackingDatabase, cleanup: None
) -> None:
    from tests.support.resolvers import publish_untracked

    app = make_app(redis_url, prefix, tracking_run_resolver="workflow")
    define_tasks(app)
    assert install(app) is not None
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    with embedded_worker(app, pool, prefix):
        proc = ctx.Process(target=publish_untracked, args=(redis_url, prefix, list(EXPECTED), out))
        proc.start()
        keys = dict(out.get(timeout=60) for _ in EXPECTED)
        proc.join(60)
        assert proc.exitcode == 0
        runs = {}
        for kind, key in keys.items():
            workspace = f"celery://{app.main}/{key}"
            run = wait_for_run(
                db, db_run_id(db, workspace), EXPECTED[kind][1], RunStatus.COMPLETED, timeout=60
            )
            runs[kind] = run
    for kind, run in runs.items():
        final = db.runs.get(run.id)
        assert final.counters == EXPECTED[kind][1], kind
        assert final.status is RunStatus.COMPLETED, kind
        assert final.study_id is not None
        assert db.studies.get(final.study_id).name == EXPECTED[kind][0], kind
        assert list(final.queues) == [f"q_{prefix}"], kind
    assert len(db.runs.get_all()) == len(EXPECTED)  # each workflow is exactly one run


def db_run_id(db: TrackingDatabase, workspace: str) -> str:
    from tests.support.celery import wait_for

    def found() -> str | None:
        try:
            return db.runs.get(workspace).id
        except Exception:
            return None

    run_id = wait_for(found, timeout=30)
    assert run_id, f"no run for {workspace}"
    return run_id


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_workflows_from_a_tracked_publisher_count_once(
    pool: str, redis_url: str, prefix: str, db: TrackingDatabase, cleanup: None
) -> None:
    app = make_app(redis_url, prefix, tracking_run_resolver="workflow")
    t = define_tasks(app)
    tracker = install(app)
    assert tracker is not None and tracker_for(app) is tracker
    with embedded_worker(app, pool, prefix):
        first = chain(t.add.s(1, 2), t.add.s(3)).apply_async()
        root = first.parent.id
        grouped = group(t.add.s(i, i) for i in range(4)).apply_async()
        chorded = chord([t.add.s(i, i) for i in range(20)], t.tsum.s()).apply_async()
        expected = {
            root: counters(2),
            grouped.id: counters(4),
            chorded.parent.id: counters(21),
        }
        for key, want in expected.items():
            workspace = f"celery://{app.main}/{key}"
            wait_for_run(db, db_run_id(db, workspace), want, RunStatus.COMPLETED, timeout=60)
    assert len(db.runs.get_all()) == len(expected)


def test_headers_resolver_makes_no_runs_for_plain_messages(
    redis_url: str, prefix: str, db: TrackingDatabase, cleanup: None
) -> None:
    app = make_app(redis_url, prefix)
    t = define_tasks(app)
    assert install(app) is not None
    with embedded_worker(app, "solo", prefix):
        assert t.add.delay(1, 2).get(timeout=20) == 3
        install_tracker = tracker_for(app)
        assert install_tracker is not None and install_tracker.flush(5.0)
    assert db.runs.get_all() == []


# ------------------------------------------------------------------------------- merlin
def merlin_message(name: str, args: Any = None, kwargs: Any = None) -> TaskMessage:
    msg = message(name, "id1", "id1")
    msg._load_body = lambda: (args, kwargs, None)
    return msg


def test_merlin_resolver_reads_merlin_argument_layout() -> None:
    from merlin_tracking.resolvers.merlin import merlin_resolver, study_of_workspace

    ws = "/out/hello_world_20240101-120000"
    run = RunIdentity("hello_world", ws)
    assert study_of_workspace(ws + "/") == "hello_world"
    assert study_of_workspace("/out/plain") == "plain"
    step = "merlin.common.tasks.merlin_step"
    assert merlin_resolver(merlin_message(step, (1,), {"study_workspace": ws})) == run
    expand = "merlin.common.tasks.expand_tasks_with_samples"
    assert merlin_resolver(merlin_message(expand, (0, 1, 2, 3, 4, 5, 6, Path(ws)), {})) == run
    add_chain = "merlin.common.tasks.add_merlin_expanded_chain_to_chord"
    assert merlin_resolver(merlin_message(add_chain, (0, 1, 2, 3, 4, 5, 6, ws))) == run
    assert merlin_resolver(merlin_message("merlin:mark_run_as_complete", (ws,))) == run
    assert merlin_resolver(merlin_message("merlin:chordfinisher", (), {})) is None
    assert merlin_resolver(merlin_message(expand, (0, 1), {})) is None  # unreadable: no run
    assert merlin_resolver(merlin_message("other.task", (ws,), {"study_workspace": ws})) is None
    assert load_resolver("merlin") is merlin_resolver


@pytest.mark.parametrize(
    ("node", "logical"),
    [
        ("sim@node7", "sim"),
        ("celery@node7", "celery"),
        ("celery@default_worker.%h", "default_worker"),  # merlin run-workers: -n <name>.%%h
        ("celery@default_worker.node7", "default_worker"),
        # overlap: true stamps each launch (-n <name><YYYYmmdd-HHMMSS>.%%h); Merlin's logical
        # worker keeps the spec's name
        ("celery@default_worker20261202-145643.%h", "default_worker"),
        ("celery@w120261202-145643.%h", "w1"),
        ("celery@20261202-145643.%h", "20261202-145643"),  # nothing left: the name as given
        ("sim20261202-145643@node7", "sim20261202-145643"),  # an explicit name stays
        ("celery@w1.elsewhere", "celery"),  # not this host: not the -n <name>.%h form
    ],
)
def test_logical_worker_names_of_node_names(node: str, logical: str) -> None:
    from merlin_tracking.signals.worker import logical_name

    assert logical_name(node, "node7") == logical


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_merlin_study_from_an_untracked_publisher(
    pool: str, redis_url: str, prefix: str, db: TrackingDatabase, cleanup: None
) -> None:
    from tests.support.resolvers import make_merlin_app, merlin_queues, publish_merlin_untracked

    workspaces = ["/out/hello_20240101-120000", "/out/other_20240102-130000"]
    app = make_merlin_app(redis_url, prefix, tracking_run_resolver="merlin")
    assert install(app) is not None
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    # per study: expand + 5 steps + chord body + chain's chordfinisher + a direct step
    # + mark_run_as_complete + a chordfinisher following its root
    want = counters(11)
    with embedded_worker(app, pool, prefix, queues=list(merlin_queues(prefix))):
        proc = ctx.Process(
            target=publish_merlin_untracked, args=(redis_url, prefix, workspaces, out)
        )
        proc.start()
        assert out.get(timeout=60) == "done"
        proc.join(60)
        assert proc.exitcode == 0
        for workspace in workspaces:
            wait_for_run(db, db_run_id(db, workspace), want, RunStatus.COMPLETED, timeout=60)
    runs = db.runs.get_all()
    assert len(runs) == 2  # the plain task made no run
    for workspace, study in zip(workspaces, ["hello", "other"], strict=True):
        run = db.runs.get(workspace)
        assert run.counters == want
        assert run.study_id is not None
        assert db.studies.get(run.study_id).name == study
        assert sorted(run.queues) == sorted(merlin_queues(prefix))


@pytest.mark.parametrize("when", ["countdown", "before-receipt"])
def test_workflow_revokes_from_an_untracked_publisher(
    when: str, redis_url: str, prefix: str, db: TrackingDatabase, cleanup: None
) -> None:
    """Revoked while waiting for its countdown (received first), or before the worker ever
    received it (only task_revoked fires): either way counted once as queued and as revoked."""
    from celery.result import AsyncResult

    from tests.support.celery import worker_name
    from tests.support.resolvers import publish_revocable

    app = make_app(redis_url, prefix, tracking_run_resolver="workflow")
    define_tasks(app)
    assert install(app) is not None
    later = f"later_q_{prefix}"
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    expected = counters(2, started=1, succeeded=1, revoked=1)
    with embedded_worker(app, "solo", prefix) as worker:
        held = "countdown" if when == "countdown" else later
        proc = ctx.Process(target=publish_revocable, args=(redis_url, prefix, held, out))
        proc.start()
        group_id, held_id = out.get(timeout=60)
        proc.join(60)
        assert proc.exitcode == 0
        run_id = db_run_id(db, f"celery://{app.main}/{group_id}")
        wait_for(lambda: db.runs.get(run_id).tasks_succeeded == 1, timeout=15)
        replies = app.control.revoke(held_id, destination=[worker_name(prefix)], reply=True)
        assert replies, "the worker did not acknowledge the revoke"
        if when != "countdown":
            app.control.add_consumer(later, destination=[worker.hostname], reply=True)
        assert wait_for(lambda: AsyncResult(held_id, app=app).state == "REVOKED", timeout=10)
        wait_for_run(db, run_id, expected, RunStatus.COMPLETED, timeout=10)
    final = db.runs.get(run_id)
    assert final.counters == expected
    assert len(db.runs.get_all()) == 1


def test_resolver_extra_run_fields(
    redis_url: str, prefix: str, db: TrackingDatabase, cleanup: None
) -> None:
    """A resolver's extra fields are set on the run it creates; they are not identity."""
    assert RunIdentity.with_fields("s", "/w", a=1) == RunIdentity("s", "/w")
    app = make_app(
        redis_url, prefix, tracking_run_resolver="tests.support.resolvers:fields_resolver"
    )
    t = define_tasks(app)
    assert install(app) is not None
    with embedded_worker(app, "solo", prefix):
        result = chain(t.add.s(1, 2), t.add.s(3)).apply_async()
        root = result.parent.id
        run_id = db_run_id(db, f"/ws/fields/{root}")
        wait_for_run(db, run_id, counters(2), RunStatus.COMPLETED)
    run = db.runs.get(run_id)
    assert run.parameters == {"root_task": "mt.add"}
    assert run.additional_data == {"origin": "publish"}


@contextlib.contextmanager
def untracked_waves(redis_url: str, prefix: str) -> Iterator[Callable[[int], None]]:
    """A spawned, untracked publisher: ``send(n)`` publishes n ``add`` tasks and waits until
    they are sent. The publisher must exit cleanly."""
    from tests.support.resolvers import publish_waves

    ctx = multiprocessing.get_context("spawn")
    waves, out = ctx.Queue(), ctx.Queue()
    publisher = ctx.Process(target=publish_waves, args=(redis_url, prefix, waves, out))
    publisher.start()

    def send(count: int) -> None:
        waves.put(count)
        out.get(timeout=60)

    try:
        yield send
    finally:
        waves.put(None)
        publisher.join(60)
    assert publisher.exitcode == 0


def test_run_counted_at_the_worker_waits_for_the_next_wave(
    redis_url: str, prefix: str, db: TrackingDatabase, cleanup: None
) -> None:
    """An untracked publisher sends one task, then (while the run is still settling) two more:
    the run never reads COMPLETED in between, and completes once, with every task counted,
    after the settle delay (applied by the worker's heartbeat)."""
    settle = 6.0
    app = make_app(
        redis_url,
        prefix,
        tracking_run_resolver="tests.support.resolvers:fixed_resolver",
        tracking_settle_seconds=settle,
    )
    define_tasks(app)
    assert install(app) is not None
    with untracked_waves(redis_url, prefix) as send, embedded_worker(app, "solo", prefix):
        send(1)
        run_id = db_run_id(db, "/ws/fixed")
        first = wait_for(lambda: (r := db.runs.get(run_id)).tasks_succeeded == 1 and r)
        assert first and first.settle_until is not None
        # All counted tasks are done; for a while more may arrive: still RUNNING.
        quiet_until = time.monotonic() + 1.5
        while time.monotonic() < quiet_until:
            assert db.runs.get(run_id).status is RunStatus.RUNNING
            time.sleep(0.1)
        assert datetime.now(timezone.utc) < first.settle_until  # the wave comes in time
        send(2)
        second = wait_for(lambda: (r := db.runs.get(run_id)).tasks_queued == 3 and r)
        assert second and second.settle_until is not None
        assert second.settle_until > first.settle_until  # the second wave pushed it back
        done = wait_for_run(db, run_id, counters(3), RunStatus.COMPLETED, timeout=60)
        assert done.settle_until is None  # nothing left to wait for
        assert done.updated_at >= second.settle_until
    assert [r.id for r in db.runs.get_all()] == [run_id]


def test_worker_applies_the_settle_time_without_waiting_for_a_heartbeat(
    redis_url: str, prefix: str, db: TrackingDatabase, cleanup: None
) -> None:
    """Heartbeats every 60 s, settle time 1 s: the worker wakes when the run can settle."""

    app = make_app(
        redis_url,
        prefix,
        tracking_run_resolver="tests.support.resolvers:fixed_resolver",
        tracking_settle_seconds=1.0,
        tracking_heartbeat_interval=60,
        tracking_stale_after=180,
    )
    define_tasks(app)
    assert install(app) is not None
    with untracked_waves(redis_url, prefix) as send, embedded_worker(app, "solo", prefix):
        send(3)
        run_id = db_run_id(db, "/ws/fixed")
        settling = wait_for(lambda: (r := db.runs.get(run_id)).tasks_succeeded == 3 and r, 30)
        assert settling and settling.settle_until is not None
        done = wait_for_run(db, run_id, counters(3), RunStatus.COMPLETED, timeout=15)
        late = (done.updated_at - settling.settle_until).total_seconds()
        assert late < 10, late  # long before the next heartbeat (60 s)


def test_drop_in_cli_worker_with_the_resolver_from_the_environment(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """``celery -A tests.apps.plain_app worker`` (prefork), tracked only through the drop-in
    entry point, the resolver chosen by MERLIN_TRACKING_RUN_RESOLVER; the publisher has no
    tracking: each workflow becomes one run with exact counters."""
    from tests.support.processes import Ledger, exact, unique
    from tests.support.resolvers import publish_plain_by_name

    book = Ledger(redis_url, prefix, unique("q"), tmp_path)
    try:
        worker, _ = book.start_running(
            "prefork", concurrency=2, env={"MERLIN_TRACKING_RUN_RESOLVER": "workflow"}
        )
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        proc = ctx.Process(target=publish_plain_by_name, args=(redis_url, book.queue, out))
        proc.start()
        chain_root, group_id = out.get(timeout=60), out.get(timeout=60)
        proc.join(60)
        assert proc.exitcode == 0
        db = book.db
        for key, n in ((chain_root, 3), (group_id, 10)):
            run_id = db_run_id(db, f"celery://plain_app/{key}")
            run = wait_for_run(db, run_id, exact(n), RunStatus.COMPLETED, timeout=60)
            assert run.counters == exact(n), worker.logs()
            assert run.queues == (book.queue,)
        assert len(db.runs.get_all()) == 2
        assert db.studies.get(db.runs.get(run_id).study_id or "").name == "plain_app.noop"
    finally:
        book.reap()


def test_runs_counted_at_workers_complete_for_a_plain_reader_after_the_workers_stopped(
    redis_url: str, prefix: str, cleanup: None
) -> None:
    """Untracked groups resolved at the worker (``workflow``): once every task ran, the worker
    stops before the runs settle, nothing else runs; a plain ``get_all`` later reads each run
    COMPLETED with exact counters, and its duration is its work's, not the settle delay."""
    from tests.support.resolvers import publish_untracked

    settle = 1.5
    app = make_app(
        redis_url, prefix, tracking_run_resolver="workflow", tracking_settle_seconds=settle
    )
    define_tasks(app)
    assert install(app) is not None
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    kinds = ["group", "chord_in_group", "chain_in_group"] * 3
    reader = TrackingDatabase.from_url(redis_url, prefix=prefix)
    with embedded_worker(app, "solo", prefix):  # solo: it stops at once, well before settling
        proc = ctx.Process(target=publish_untracked, args=(redis_url, prefix, kinds, out))
        proc.start()
        keys = [out.get(timeout=60) for _ in kinds]
        proc.join(60)
        assert proc.exitcode == 0
        want = sum(EXPECTED[kind][1]["succeeded"] for kind, _ in keys)

        def all_ran() -> bool:
            runs = reader.store.query(Run, {})  # the raw store: no catch-up on this read
            return sum(run.tasks_succeeded for run in runs) == want

        assert wait_for(all_ran, timeout=60)
    stored = reader.store.query(Run, {})
    assert len(stored) == len(kinds)
    assert any(run.status is RunStatus.RUNNING for run in stored)  # still settling
    workers = reader.physical_workers.get_all()
    assert {w.status for w in workers} == {WorkerStatus.STOPPED}  # nobody left to settle them

    def all_completed() -> list[Run] | None:
        runs = reader.runs.get_all()
        return runs if {run.status for run in runs} == {RunStatus.COMPLETED} else None

    runs = wait_for(all_completed, timeout=settle + 10)
    assert runs is not None
    by_workspace = {run.workspace: run for run in runs}
    for kind, key in keys:
        run = by_workspace[f"celery://{app.main}/{key}"]
        assert run.counters == EXPECTED[kind][1], kind
        assert run.started_at is not None and run.finished_at is not None
        assert (run.finished_at - run.started_at).total_seconds() < settle, kind
