"""The run rules exist twice, in Lua (Redis) and in Python (SQLite): they must agree.

A Hypothesis state machine feeds the same random interleavings of task events (every kind, in
any order, repeated, for tasks of two runs, from two workers, with the flags of tasks counted
at a worker and of a run's last task), publishing changes, workers starting and shutting down,
settles and cancels to a Redis ledger and an SQLite ledger, and after every step compares what
each says of every run (counters, status, queues, whether it waits to settle, when it started)
and of every task record. Settle delays are 0 or an hour and workers never go stale, so no
step depends on the two clocks.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from merlin_tracking import InvalidTransitionError, Run, Task, TaskState, TrackingDatabase
from merlin_tracking.records.events import COUNTED_AT_WORKER, ENDS_RUN, TaskEvent, TaskEventKind

RUNS = 2
TASKS = [f"t{i}" for i in range(6)]
QUEUES = ["qa", "qb", None]
NODES = ["w1@host", "w2@host"]
EPOCH = 1_800_000_000_000_000  # event times in whole milliseconds: Redis keeps milliseconds

Step = tuple[int, str, TaskEventKind, str | None, str | None, int, str, str | None]
events = st.lists(
    st.tuples(
        st.integers(0, RUNS - 1),
        st.sampled_from(TASKS),
        st.sampled_from(list(TaskEventKind)),
        st.sampled_from(QUEUES),
        st.sampled_from([*NODES, None]),
        st.integers(0, 50),
        st.sampled_from(["", COUNTED_AT_WORKER, ENDS_RUN]),
        st.sampled_from([None, "ValueError: boom"]),
    ),
    min_size=1,
    max_size=12,
)


def view(run: Run) -> tuple[object, ...]:
    """What both stores must agree on (times the stores take from their own clocks are left
    out)."""
    return (
        run.status,
        run.counters,
        run.publishing,
        run.queues,
        run.settle_until is not None,
        run.started_at,
        run.finished_at is None,
    )


def task_view(task: Task) -> tuple[object, ...]:
    return (
        task.id,
        task.state,
        task.attempts,
        task.name,
        task.queue,
        task.worker,
        task.queued_at if task.state is not TaskState.LOST else None,
        task.started_at,
        task.finished_at,
        task.error,
    )


class TwoLedgers(RuleBasedStateMachine):
    redis_url = ""
    folder = Path()

    def __init__(self) -> None:
        super().__init__()
        prefix = f"agree_{uuid.uuid4().hex[:10]}"
        self.ledgers = [
            TrackingDatabase.from_url(self.redis_url, prefix=prefix),
            TrackingDatabase.from_url(f"sqlite:///{self.folder / prefix}.db", prefix=prefix),
        ]
        self.run_ids: list[list[str]] = [[] for _ in self.ledgers]
        for n in range(RUNS):
            for ledger, ids in zip(self.ledgers, self.run_ids, strict=True):
                ids.append(ledger.runs.create("agree", f"/ws/agree/{n}", []).id)

    def teardown(self) -> None:
        self.ledgers[0].delete_everything()

    @rule(batch=events, settle=st.sampled_from([0.0, 3600.0]))
    def apply_events(self, batch: list[Step], settle: float) -> None:
        for ledger, ids in zip(self.ledgers, self.run_ids, strict=True):
            ledger.runs.record_events(
                [
                    TaskEvent(
                        ids[run],
                        task,
                        kind,
                        queue,
                        name=f"app.{task[-1]}",
                        worker=worker,
                        at=EPOCH + ms * 1000,
                        error=error,
                        flags=flags,
                        ended=EPOCH + (ms + 1) * 1000,
                    )
                    for run, task, kind, queue, worker, ms, flags, error in batch
                ],
                settle,
            )

    @rule(node=st.sampled_from(NODES), queues=st.sampled_from([["qa"], ["qb"], ["qa", "qb"]]))
    def start_worker(self, node: str, queues: list[str]) -> None:
        for ledger in self.ledgers:
            logical = ledger.logical_workers.create(node.split("@")[0], queues)
            ledger.physical_workers.create(node, pid=1, logical_worker_id=logical.id)
            ledger.logical_workers.attach_to_active_runs(logical.id)

    @rule(node=st.sampled_from(NODES))
    def stop_worker(self, node: str) -> None:
        for ledger in self.ledgers:
            if ledger.physical_workers.find(node) is not None:
                ledger.physical_workers.mark_stopped(node)

    @rule(run=st.integers(0, RUNS - 1), delta=st.sampled_from([1, -1]))
    def change_publishing(self, run: int, delta: int) -> None:
        statuses = [
            ledger.runs.change_publishing(ids[run], delta)
            for ledger, ids in zip(self.ledgers, self.run_ids, strict=True)
        ]
        assert statuses[0] == statuses[1]

    @rule()
    def settle(self) -> None:
        completed = [ledger.runs.settle() for ledger in self.ledgers]
        assert completed[0] == completed[1]

    @rule(run=st.integers(0, RUNS - 1))
    def cancel(self, run: int) -> None:
        outcomes = []
        for ledger, ids in zip(self.ledgers, self.run_ids, strict=True):
            try:
                outcomes.append(ledger.runs.cancel(ids[run]).status)
            except InvalidTransitionError as exc:
                outcomes.append(type(exc))
        assert outcomes[0] == outcomes[1]

    @invariant()
    def both_ledgers_say_the_same(self) -> None:
        for n in range(RUNS):
            redis_run, sqlite_run = (
                ledger.runs.get(ids[n])
                for ledger, ids in zip(self.ledgers, self.run_ids, strict=True)
            )
            assert view(redis_run) == view(sqlite_run), f"run {n}"
            counters = redis_run.counters
            assert counters["started"] >= counters["succeeded"] + counters["failed"]


def test_redis_and_sqlite_apply_the_same_run_rules(redis_url: str, tmp_path: Path) -> None:
    machine = type("Machine", (TwoLedgers,), {"redis_url": redis_url, "folder": tmp_path})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=int(os.environ.get("AGREE_EXAMPLES", "60")),
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
