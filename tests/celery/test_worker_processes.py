"""Real ``celery worker`` subprocesses, tracked through the drop-in entry point only.

The workers run ``tests/apps/plain_app.py``, a plain Celery project with no merlin_tracking code:
the ``celery.commands`` entry point of the installed package is the only thing that makes them
tracked. Each test points its workers (through environment variables) at the session's private
Redis as broker, result backend and tracking store, under the test's own key prefix and queues.
Runs are launched from this process with ``launch_study`` on a second app object that has the
same broker and backend plus ``install(app)``; tasks are sent by name. Everything is read back
from Redis with a fresh ``TrackingDatabase``, never from the workers' memory.

Every worker is started in its own process group and is terminated, then killed (group and all),
when its test ends; every wait is bounded.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pytest
import redis
from celery import Celery, group
from celery.result import GroupResult
from kombu.connection import Connection

from merlin_tracking import (
    LogicalWorker,
    PhysicalWorker,
    RunStatus,
    TrackingDatabase,
    WorkerStatus,
)
from merlin_tracking.signals import install, launch_study
from tests.support.processes import (
    AMQP_URL,
    APP,
    CLIENT_APPS,
    HEARTBEAT,
    HOST,
    REPO_ROOT,
    RUN_TIMEOUT,
    STALE_AFTER,
    START_TIMEOUT,
    Ledger,
    exact,
    physical_by_name,
    unique,
    wait_until,
)


def assert_linked(
    db: TrackingDatabase, physical: PhysicalWorker, name: str, queues: list[str]
) -> LogicalWorker:
    """The physical worker points at logical worker (name, queues), which points back."""
    logical = db.logical_workers.get(worker_name=name, queues=queues)
    assert physical.logical_worker_id == logical.id
    assert logical.name == name
    assert sorted(logical.queues) == sorted(queues)
    assert physical.id in logical.physical_workers
    return logical


def raw_status(raw: redis.Redis, prefix: str, worker_id: str) -> str:
    value = raw.hget(f"{{{prefix}}}:pw:{worker_id}", "status")
    assert value is not None, "physical worker hash has no status"
    return str(json.loads(value))


def amqp_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1.0):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- drop-in
@pytest.mark.parametrize("pool", ["solo", "prefork", "threads"])
def test_drop_in_worker_is_tracked_and_serves_a_launched_run(ledger: Ledger, pool: str) -> None:
    worker, physical = ledger.start_running(pool, concurrency=2 if pool != "solo" else None)
    db = ledger.db

    assert physical.name == worker.node
    assert physical.pid == worker.pid
    assert physical.host == HOST
    assert physical.status is WorkerStatus.RUNNING
    assert physical.launch_cmd is not None and "worker" in physical.launch_cmd
    assert worker.node in physical.launch_cmd
    assert physical.restart_count == 0
    assert physical.latest_start_time is not None
    assert physical.heartbeat_timestamp is not None
    assert physical.stale_after == STALE_AFTER
    assert physical.args.get("queues") == [ledger.queue]
    logical = assert_linked(db, physical, worker.short_name, [ledger.queue])
    assert db.physical_workers.count() == 1
    assert db.logical_workers.count() == 1

    client = ledger.client()
    tasks = [client.signature("plain_app.noop") for _ in range(10)]
    tasks += [client.signature("plain_app.sleeper", args=(0.01,)) for _ in range(5)]
    launched = ledger.launch(client, group(tasks))
    assert launched.tasks_queued == 15
    run = ledger.wait_run(launched.id, RunStatus.COMPLETED)
    assert run.counters == exact(15)
    assert run.queues == (ledger.queue,)
    assert run.workers == (logical.id,)
    assert launched.id in db.logical_workers.get(logical.id).runs

    # Heartbeats move forward while the worker lives, and nothing was duplicated.
    first_beat = physical.heartbeat_timestamp
    wait_until(
        lambda: (
            (db.physical_workers.get(physical.id).heartbeat_timestamp or first_beat) > first_beat
        ),
        5 * HEARTBEAT,
        "a newer heartbeat",
    )
    assert [w.id for w in db.physical_workers.get_all()] == [physical.id]

    assert worker.stop(signal.SIGTERM) == 0
    stopped = db.physical_workers.get(physical.id)
    assert stopped.status is WorkerStatus.STOPPED
    assert stopped.pid is None


def test_launch_from_an_app_that_is_not_the_current_app(ledger: Ledger) -> None:
    """``launch_study(app, ...)`` must count the run's messages in ``app``'s ledger, whichever
    app happens to be Celery's current app in the launching thread."""
    worker, physical = ledger.start_running("solo")
    client = ledger.client()
    other_prefix = unique("other")
    other = Celery(unique("other"), broker=ledger.redis_url, backend=ledger.redis_url)
    other.conf.tracking_prefix = other_prefix
    CLIENT_APPS.append(other)
    other_tracker = install(other)
    assert other_tracker is not None
    other.set_current()
    try:
        launched = launch_study(
            client,
            unique("study"),
            unique("ws"),
            group(client.signature("plain_app.noop") for _ in range(5)),
        )
        other_tracker.flush(5.0)
        stray = TrackingDatabase.from_url(ledger.redis_url, prefix=other_prefix)
        assert launched.tasks_queued == 5, (
            f"launch_study(client) counted {launched.tasks_queued} of 5 messages; "
            f"runs in the current app's ledger ({other_prefix}) instead: "
            f"{[(r.workspace, r.tasks_queued) for r in stray.runs.get_all()]}"
        )
        run = ledger.wait_run(launched.id, RunStatus.COMPLETED)
        assert run.counters == exact(5)
        assert run.workers == (physical.logical_worker_id,)
    finally:
        other_tracker.flush(5.0)
        TrackingDatabase.from_url(ledger.redis_url, prefix=other_prefix).delete_everything()
        worker.stop(signal.SIGTERM)


# --------------------------------------------------------------------------- shutdown paths
@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "pool"),
    [
        (signal.SIGTERM, "solo"),
        (signal.SIGQUIT, "solo"),
        (signal.SIGTERM, "prefork"),
        (signal.SIGQUIT, "prefork"),
        (signal.SIGQUIT, "threads"),
    ],
    ids=["warm-solo", "cold-solo", "warm-prefork", "cold-prefork", "cold-threads"],
)
def test_shutdown_marks_stopped_and_restart_counts(
    ledger: Ledger, raw_redis: redis.Redis, signum: int, pool: str
) -> None:
    node = f"{unique('w')}@testhost"
    concurrency = 2 if pool != "solo" else None
    first, record = ledger.start_running(pool, node=node, concurrency=concurrency)
    db = ledger.db
    first.stop(signum)

    stopped = db.physical_workers.get(node)
    assert stopped.id == record.id
    assert stopped.status is WorkerStatus.STOPPED
    assert stopped.pid is None
    assert raw_status(raw_redis, ledger.prefix, record.id) == "STOPPED"
    # STOPPED is final: it does not turn STALLED once stale_after passes.
    assert db.physical_workers.get_all({"status": "STALLED"}) == []

    second, again = ledger.start_running(pool, node=node, concurrency=concurrency)
    assert second.pid != first.pid
    assert again.id == record.id
    assert again.pid == second.pid
    assert again.status is WorkerStatus.RUNNING
    assert again.restart_count == 1
    assert again.latest_start_time is not None and record.latest_start_time is not None
    assert again.latest_start_time > record.latest_start_time
    assert [w.id for w in physical_by_name(db, node)] == [record.id]
    assert db.physical_workers.count() == 1
    logical = assert_linked(db, again, first.short_name, [ledger.queue])
    assert logical.physical_workers == (record.id,)

    second.stop(signal.SIGTERM)
    final = db.physical_workers.get(node)
    assert (final.status, final.pid, final.restart_count) == (WorkerStatus.STOPPED, None, 1)


# --------------------------------------------------------------------------- SIGKILL
@pytest.mark.slow
def test_sigkill_reads_stalled_while_a_busy_live_worker_reads_running(
    ledger: Ledger, raw_redis: redis.Redis
) -> None:
    live_queue = unique("q-live")
    victim, victim_record = ledger.start_running("solo")
    live, live_record = ledger.start_running("solo", queues=[live_queue])
    client = ledger.client()
    window = 3 * STALE_AFTER
    # Keep the live worker's only (solo) slot busy for longer than the whole window: its
    # heartbeats must not depend on the task loop.
    busy = client.signature("plain_app.sleeper", args=(window + 1.5,)).set(queue=live_queue)
    busy_result = busy.apply_async()
    # A busy solo worker cannot answer remote control; its log says when the task arrived.
    wait_until(
        lambda: f"[{busy_result.id}] received" in live.stderr(),
        15,
        "the live worker to receive its long task",
        on_timeout=live.logs,
    )

    victim.signal(signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL
    killed_at = time.monotonic()

    reader = TrackingDatabase.from_url(ledger.redis_url, prefix=ledger.prefix)  # default settings
    stalled_after: float | None = None
    live_reads: list[WorkerStatus] = []
    while time.monotonic() - killed_at < window:
        live_reads.append(reader.physical_workers.get(live_record.id).status)
        victim_now = reader.physical_workers.get(victim_record.id)
        if stalled_after is None and victim_now.status is WorkerStatus.STALLED:
            stalled_after = time.monotonic() - killed_at
        time.sleep(0.1)

    assert stalled_after is not None, "a SIGKILLed worker never read as STALLED"
    # Its last heartbeat was at most one interval before the kill.
    assert STALE_AFTER - HEARTBEAT - 0.3 <= stalled_after <= STALE_AFTER + 1.0, stalled_after
    assert set(live_reads) == {WorkerStatus.RUNNING}, live_reads
    assert len(live_reads) > 20
    assert live.proc.poll() is None

    # The live worker's beacon caught up: the stale worker is stored STALLED, with its old pid.
    assert raw_status(raw_redis, ledger.prefix, victim_record.id) == "STALLED"
    victim_now = reader.physical_workers.get(victim.node)
    assert (victim_now.status, victim_now.pid) == (WorkerStatus.STALLED, victim.pid)
    assert [w.id for w in reader.physical_workers.get_all({"status": "STALLED"})] == [
        victim_record.id
    ]
    assert [w.id for w in reader.physical_workers.get_all({"status": "RUNNING"})] == [
        live_record.id
    ]

    # The same node started again is a restart of the stalled record, not a second record.
    again, restarted = ledger.start_running("solo", node=victim.node)
    assert restarted.id == victim_record.id
    assert (restarted.status, restarted.pid, restarted.restart_count) == (
        WorkerStatus.RUNNING,
        again.pid,
        1,
    )
    assert [w.id for w in physical_by_name(reader, victim.node)] == [victim_record.id]
    assert reader.physical_workers.count() == 2
    assert busy_result.get(timeout=15) == window + 1.5


# --------------------------------------------------------------------------- add/cancel_consumer
@pytest.mark.slow
def test_add_and_cancel_consumer_relink_the_worker_and_attach_runs(ledger: Ledger) -> None:
    extra = unique("q-extra")
    worker, physical = ledger.start_running("threads", concurrency=2)
    db = ledger.db
    original = assert_linked(db, physical, worker.short_name, [ledger.queue])
    client = ledger.client()
    before = db.runs.create(unique("study"), unique("ws"), [extra])
    assert before.workers == ()
    ledger.wait_control(client, worker)

    # A generous timeout costs nothing: the call returns as soon as the one destination replies.
    replies = client.control.add_consumer(extra, destination=[worker.node], reply=True, timeout=20)
    assert replies and worker.node in replies[0], replies
    both = sorted([ledger.queue, extra])

    def relinked(queues: list[str]) -> PhysicalWorker | None:
        record = db.physical_workers.get(physical.id)
        if record.logical_worker_id is None:
            return None
        logical = db.logical_workers.get(record.logical_worker_id)
        return record if sorted(logical.queues) == queues else None

    grown = wait_until(
        lambda: relinked(both), 2 * HEARTBEAT + 0.5, "the added queue in the records"
    )
    assert grown.status is WorkerStatus.RUNNING and grown.pid == worker.pid
    widened = assert_linked(db, grown, worker.short_name, both)
    assert physical.id not in db.logical_workers.get(original.id).physical_workers
    assert db.physical_workers.count() == 1
    assert widened.id in db.runs.get(before.id).workers, "run created before add_consumer"

    after = ledger.launch(
        client, group(client.signature("plain_app.noop").set(queue=extra) for _ in range(5))
    )
    done = ledger.wait_run(after.id, RunStatus.COMPLETED)
    assert done.counters == exact(5)
    assert done.queues == (extra,)
    assert widened.id in done.workers, "run created after add_consumer"

    replies = client.control.cancel_consumer(
        extra, destination=[worker.node], reply=True, timeout=20
    )
    assert replies and worker.node in replies[0], replies
    shrunk = wait_until(
        lambda: relinked([ledger.queue]), 2 * HEARTBEAT + 0.5, "the cancelled queue in the records"
    )
    assert shrunk.logical_worker_id == original.id
    assert_linked(db, shrunk, worker.short_name, [ledger.queue])
    assert physical.id not in db.logical_workers.get(widened.id).physical_workers
    assert db.physical_workers.count() == 1


# --------------------------------------------------------------------------- opt-out and bad settings
@pytest.mark.parametrize(
    "env",
    [{"MERLIN_TRACKING": "0"}, {"PLAIN_APP_TRACKING_ENABLED": "false"}],
    ids=["MERLIN_TRACKING=0", "tracking_enabled=false"],
)
def test_opt_out_leaves_no_records(
    ledger: Ledger, raw_redis: redis.Redis, env: dict[str, str]
) -> None:
    worker = ledger.start("solo", env=env)
    plain = Celery(unique("plain"), broker=ledger.redis_url, backend=ledger.redis_url)
    plain.conf.task_default_queue = ledger.queue
    CLIENT_APPS.append(plain)
    result = plain.signature("plain_app.sleeper", args=(0.01,)).apply_async()
    assert result.get(timeout=START_TIMEOUT) == 0.01, worker.logs()
    time.sleep(3 * HEARTBEAT)  # several heartbeats would have written by now
    assert worker.proc.poll() is None, worker.logs()
    assert raw_redis.keys(f"{{{ledger.prefix}}}*") == []
    assert worker.stop(signal.SIGTERM) == 0
    assert raw_redis.keys(f"{{{ledger.prefix}}}*") == []


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"PLAIN_APP_HEARTBEAT": "2", "PLAIN_APP_STALE_AFTER": "1"}, "tracking_stale_after"),
        ({"PLAIN_APP_HEARTBEAT": "soon"}, "tracking_heartbeat_interval"),
    ],
    ids=["stale-below-interval", "interval-not-a-number"],
)
def test_bad_setting_stops_the_worker_at_start_up(
    ledger: Ledger, raw_redis: redis.Redis, env: dict[str, str], setting: str
) -> None:
    worker = ledger.start("solo", env=env)

    def outcome() -> str | None:
        if worker.proc.poll() is not None:
            return "exited"
        if f"{worker.node} ready." in worker.stderr():
            return "ready"
        return None

    seen = wait_until(
        outcome, START_TIMEOUT, "the worker to exit (or to come up)", on_timeout=worker.logs
    )
    assert seen == "exited", (
        f"the worker started and serves tasks despite a bad {setting}; it should exit at "
        f"start-up naming the setting{worker.logs()}"
    )
    assert worker.proc.returncode != 0, worker.logs()
    assert setting in worker.stderr(), worker.logs()
    assert raw_redis.keys(f"{{{ledger.prefix}}}*") == []


# --------------------------------------------------------------------------- prefork
@pytest.mark.slow
def test_prefork_children_report_exact_counters_and_flush_on_sigterm(ledger: Ledger) -> None:
    worker, physical = ledger.start_running("prefork", concurrency=2)
    client = ledger.client()
    canvas = group(client.signature("plain_app.pid") for _ in range(200))
    frozen = canvas.freeze()
    assert isinstance(frozen, GroupResult)
    launched = ledger.launch(client, canvas)
    assert launched.tasks_queued == 200

    pids = frozen.get(timeout=RUN_TIMEOUT)
    assert len(pids) == 200
    assert worker.pid not in set(pids), "prefork tasks must run in pool children"
    assert 1 <= len(set(pids)) <= 2

    # Results are stored before the children's success events leave their buffers: stop the
    # worker at once; what the children still hold must be flushed on the way out.
    assert worker.stop(signal.SIGTERM) == 0
    db = ledger.db
    run = db.runs.get(launched.id)
    assert run.status is RunStatus.COMPLETED, run
    assert run.counters == exact(200)
    logical = assert_linked(
        db, db.physical_workers.get(physical.id), worker.short_name, [ledger.queue]
    )
    assert run.workers == (logical.id,)
    stopped = db.physical_workers.get(physical.id)
    assert (stopped.status, stopped.pid) == (WorkerStatus.STOPPED, None)


# --------------------------------------------------------------------------- celery tracking info
def test_tracking_info_command_prints_counts(ledger: Ledger) -> None:
    db = ledger.db
    db.runs.create(unique("study"), unique("ws"), [ledger.queue])
    db.runs.create(unique("study"), unique("ws"), [ledger.queue])
    logical = db.logical_workers.create("w-info", [ledger.queue])
    db.physical_workers.create("w-info@testhost", host=HOST, pid=1, logical_worker_id=logical.id)

    def run_info(*extra: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "celery", "-A", APP, "tracking", "info", *extra],
            cwd=REPO_ROOT,
            env=ledger.env(),
            capture_output=True,
            timeout=60,
            check=False,
        )

    # ``info`` printed JSON by default at first; the full CLI prints text unless ``--json``.
    completed = run_info("--json")
    if completed.returncode == 2 and b"--json" in completed.stderr:
        completed = run_info()
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")
    info = json.loads(completed.stdout)
    assert info["counts"] == {"study": 2, "run": 2, "logical_worker": 1, "physical_worker": 1}
    assert len(info["recent_runs"]) == 2


# --------------------------------------------------------------------------- RabbitMQ broker
@pytest.mark.slow
def test_rabbitmq_broker_with_redis_tracking(ledger: Ledger) -> None:
    if not amqp_available():
        pytest.skip(f"no RabbitMQ answers on 127.0.0.1:5672 ({AMQP_URL})")
    try:
        worker, physical = ledger.start_running("threads", concurrency=2, broker=AMQP_URL)
        db = ledger.db
        logical = assert_linked(db, physical, worker.short_name, [ledger.queue])
        client = ledger.client(broker=AMQP_URL)
        signatures = [client.signature("plain_app.noop") for _ in range(20)]
        signatures += [client.signature("plain_app.sleeper", args=(0.01,)) for _ in range(5)]
        canvas = group(signatures)
        frozen = canvas.freeze()
        launched = ledger.launch(client, canvas)
        assert launched.tasks_queued == 25
        assert len(frozen.get(timeout=RUN_TIMEOUT)) == 25
        run = ledger.wait_run(launched.id, RunStatus.COMPLETED)
        assert run.counters == exact(25)
        assert run.queues == (ledger.queue,)
        assert run.workers == (logical.id,)
        assert worker.stop(signal.SIGTERM) == 0
        stopped = db.physical_workers.get(physical.id)
        assert (stopped.status, stopped.pid) == (WorkerStatus.STOPPED, None)
        client.close()
    finally:
        ledger.reap()
        with Connection(AMQP_URL, connect_timeout=5) as conn:
            channel = conn.default_channel
            for name in (ledger.queue,):
                try:
                    channel.queue_delete(name)
                except Exception:
                    channel = conn.channel()
                try:
                    channel.exchange_delete(name)
                except Exception:
                    channel = conn.channel()
