"""Helpers of tests/test_resolvers.py: a publisher process without tracking, test resolvers."""

from __future__ import annotations

from typing import Any

from celery import chain, chord, group

from merlin_tracking.resolvers import TaskMessage
from merlin_tracking.signals.tracker import RunIdentity


def fixed_resolver(message: TaskMessage) -> RunIdentity | None:
    """A ``module:callable`` resolver: everything belongs to one run."""
    return RunIdentity("fixed", "/ws/fixed")


NOT_CALLABLE = 42

CALLS: list[str] = []


def counting_resolver(message: TaskMessage) -> RunIdentity | None:
    """One run per root (or group) id; records the id of each message it is asked about."""
    CALLS.append(message.id)
    return RunIdentity("counted", f"/ws/counted/{message.group_id or message.root_id}")


def fields_resolver(message: TaskMessage) -> RunIdentity | None:
    """Runs with extra fields: one run per root, with parameters and an unknown field."""
    return RunIdentity.with_fields(
        "with-fields",
        f"/ws/fields/{message.root_id or message.id}",
        parameters={"root_task": message.name},
        origin=message.where,
    )


def publish_untracked(redis_url: str, prefix: str, kinds: list[str], out: Any) -> None:
    """Body of a spawned process: publish canvases with a plain app (tracking never installed).

    Puts ``(kind, workflow key)`` on ``out`` for each canvas: the id the workflow resolver
    keys the run by (root task id, or the id of the top-level group or chord header).
    """
    import merlin_tracking.signals.registry as state
    from tests.support.celery import define_tasks, make_app

    app = make_app(redis_url, prefix)
    t = define_tasks(app)
    for kind in kinds:
        if kind == "chain":
            result = chain(t.add.s(1, 2), t.add.s(3), t.add.s(4)).apply_async()
            while result.parent is not None:
                result = result.parent
            key = result.id
        elif kind == "group":
            key = group(t.add.s(i, i) for i in range(5)).apply_async().id
        elif kind == "chord":
            key = chord([t.add.s(i, i) for i in range(100)], t.tsum.s()).apply_async().parent.id
        elif kind == "chain_in_group":
            key = (
                group(chain(t.add.s(1, 2), t.add.s(3), t.add.s(4)), t.add.s(5, 5)).apply_async().id
            )
        elif kind == "chord_in_group":
            inner = chord([t.add.s(i, i) for i in range(3)], t.tsum.s())
            key = group(inner, t.add.s(5, 5)).apply_async().id
        elif kind == "retry":
            key = t.flaky.s(1).apply_async().id
        elif kind == "replace":
            key = t.replacer.s(41).apply_async().id
        else:
            raise ValueError(kind)
        out.put((kind, key))
    assert not state._trackers  # nothing installed tracking in this process


def publish_waves(redis_url: str, prefix: str, waves: Any, out: Any) -> None:
    """Body of a spawned process: publish waves of ``add`` tasks with a plain app, one wave per
    count read from ``waves`` (None ends), putting each wave's task ids on ``out``."""
    from tests.support.celery import define_tasks, make_app

    app = make_app(redis_url, prefix)
    t = define_tasks(app)
    while (count := waves.get(timeout=60)) is not None:
        out.put([t.add.s(i, i).apply_async().id for i in range(count)])


# ------------------------------------------------------------------------------- Merlin mimic
MERLIN_STEP = "merlin.common.tasks.merlin_step"
MERLIN_EXPAND = "merlin.common.tasks.expand_tasks_with_samples"
MERLIN_CHORDFINISHER = "merlin:chordfinisher"
MERLIN_MARK_COMPLETE = "merlin:mark_run_as_complete"


def merlin_queues(prefix: str) -> tuple[str, str]:
    """(default queue, step queue), named the Merlin way: ``[merlin]_<queue>``."""
    return f"[merlin]_q_{prefix}", f"[merlin]_stepq_{prefix}"


def make_merlin_app(redis_url: str, prefix: str, **conf: Any) -> Any:
    """An app whose tasks carry Merlin 2.0's names, argument layout, queues and serializer."""
    from tests.support.celery import make_app

    default_queue, step_queue = merlin_queues(prefix)
    app = make_app(
        redis_url,
        prefix,
        task_default_queue=default_queue,
        task_serializer="pickle",
        result_serializer="pickle",
        accept_content=["pickle", "json"],
        task_routes={MERLIN_STEP: {"queue": step_queue}},
        **conf,
    )

    @app.task(shared=False, bind=True, name=MERLIN_STEP)
    def merlin_step(self: Any, step: int, *args: Any, **kwargs: Any) -> int:
        return step

    @app.task(shared=False, name=MERLIN_CHORDFINISHER)
    def chordfinisher(*args: Any, **kwargs: Any) -> str:
        return "SYNC"

    @app.task(shared=False, bind=True, name=MERLIN_EXPAND)
    def expand_tasks_with_samples(
        self: Any,
        dag: Any,
        chain_: Any,
        samples: Any,
        labels: Any,
        merlin_dict: Any,
        glob: Any,
        level_max: Any,
        workspace: Any,
        **kwargs: Any,
    ) -> str:
        # Like Merlin: the steps run as a chord of merlin_step with a chordfinisher body,
        # published from inside this task.
        from celery import chord

        chord(
            [merlin_step.s(i, study_workspace=workspace) for i in range(int(samples))],
            chordfinisher.s(),
        ).apply_async()
        return "expanded"

    @app.task(shared=False, name=MERLIN_MARK_COMPLETE)
    def mark_run_as_complete(workspace: Any) -> str:
        return "complete"

    @app.task(shared=False, name="other.add")
    def add(x: int, y: int) -> int:
        return x + y

    return app


def publish_merlin_untracked(redis_url: str, prefix: str, workspaces: list[str], out: Any) -> None:
    """Body of a spawned process: what ``merlin run`` does, without tracking."""
    from pathlib import Path

    from celery import chain

    import merlin_tracking.signals.registry as state

    app = make_merlin_app(redis_url, prefix)
    for index, workspace in enumerate(workspaces):
        ws: Any = Path(workspace) if index % 2 else workspace  # pickled Paths too
        chain(
            app.tasks[MERLIN_EXPAND].s("dag", "chain", 5, "labels", {}, "glob", 1, ws),
            app.tasks[MERLIN_CHORDFINISHER].si(),
        ).apply_async()
        app.tasks[MERLIN_STEP].apply_async((99,), {"study_workspace": ws})
        mark = app.tasks[MERLIN_MARK_COMPLETE].apply_async((ws,))
        # A chordfinisher names no workspace: it follows the run of its root/parent.
        app.tasks[MERLIN_CHORDFINISHER].apply_async(root_id=mark.id, parent_id=mark.id)
    app.tasks["other.add"].apply_async((1, 2))
    out.put("done")
    assert not state._trackers


def publish_revocable(redis_url: str, prefix: str, held: str, out: Any) -> None:
    """Body of a spawned process (no tracking): a group of two tasks, the second one held back
    (``held`` = "countdown": a 2 s countdown; otherwise the name of a queue nobody consumes
    yet). Puts (group id, held task id) on ``out``."""
    from tests.support.celery import define_tasks, make_app

    app = make_app(redis_url, prefix)
    t = define_tasks(app)
    later = t.add.s(2, 2).set(countdown=2) if held == "countdown" else t.add.s(2, 2).set(queue=held)
    held_id = later.freeze().id
    result = group([t.add.s(1, 1), later]).apply_async()
    out.put((result.id, held_id))


def publish_plain_by_name(redis_url: str, queue: str, out: Any) -> None:
    """Body of a spawned process: tasks of ``tests/apps/plain_app.py`` sent by name from a bare
    Celery app (no tracking anywhere). Puts the chain's root id and the group id on ``out``."""
    from celery import Celery

    app = Celery("plain_publisher", broker=redis_url, backend=redis_url)
    app.conf.update(task_default_queue=queue, broker_connection_retry_on_startup=True)
    noop = app.signature("plain_app.noop", immutable=True)
    result = chain(noop.clone(), noop.clone(), noop.clone()).apply_async()
    while result.parent is not None:
        result = result.parent
    out.put(result.id)
    out.put(group(noop.clone() for _ in range(10)).apply_async().id)
