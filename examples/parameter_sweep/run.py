"""Run the example study end to end: two real workers, one tracked run, a report.

    python -m examples.parameter_sweep.run                 # no services needed
    python -m examples.parameter_sweep.run --redis redis://127.0.0.1:6379/0

Without ``--redis`` the broker and result backend are files and the tracking ledger is the
embedded SQLite store ($MERLIN_TRACKING_DB, else ~/.local/share/merlin_tracking/tracking.db),
so ``merlin-tracking runs list`` shows the run afterwards; with ``--redis``, Redis is broker,
result backend and tracking store. It ends with the exact ``merlin-tracking`` command that
reads this ledger, and removes its temporary folder (broker files, results, worker logs, the
run's workspace) unless the run did not complete.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from merlin_tracking import LogicalWorker, PhysicalWorker, TrackingDatabase
from merlin_tracking.stores import DEFAULT_PREFIX
from merlin_tracking.urls import mask_url

REPO_ROOT = Path(__file__).resolve().parents[2]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--redis", metavar="URL", help="use this Redis as broker, backend and store"
    )
    parser.add_argument("--samples", type=int, default=24, help="parameter samples (default 24)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the run")
    return parser.parse_args()


def configure_environment(args: argparse.Namespace, state_dir: Path) -> dict[str, str]:
    """Environment shared by this process and the workers (set before importing the app)."""
    env = dict(os.environ)
    env["SWEEP_STATE_DIR"] = str(state_dir)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    if args.redis:
        env["SWEEP_BROKER_URL"] = env["SWEEP_RESULT_BACKEND"] = args.redis
        env["MERLIN_TRACKING_URL"] = args.redis
    os.environ.update(env)
    return env


def start_worker(
    name: str, queue: str, env: dict[str, str], log_dir: Path
) -> subprocess.Popen[bytes]:
    log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    command = [
        sys.executable, "-m", "celery", "-A", "examples.parameter_sweep.app", "worker",
        "-Q", queue, "-n", f"{name}@%h", "--pool", "prefork", "--concurrency", "2",
        "--loglevel", "INFO", "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    return subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)  # warm shutdown: the workers record STOPPED
    for worker in workers:
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()


def main() -> int:
    args = parse_args()
    state_dir = Path(tempfile.mkdtemp(prefix="merlin-sweep-"))
    try:
        status = sweep(args, state_dir)
    except BaseException:
        print(f"worker logs kept in {state_dir}", file=sys.stderr)
        raise
    if status == 0:
        shutil.rmtree(state_dir, ignore_errors=True)  # broker files, results, logs, workspace
    else:
        print(f"worker logs kept in {state_dir}", file=sys.stderr)
    return status


def sweep(args: argparse.Namespace, state_dir: Path) -> int:
    """Start the workers, launch the study, follow it, report; 0 if the run completed."""
    env = configure_environment(args, state_dir)

    from celery import chord

    import merlin_tracking
    from examples.parameter_sweep.app import aggregate, app, simulate

    tracker = merlin_tracking.install(app)
    if tracker is None:
        print("tracking is switched off (MERLIN_TRACKING=0?)", file=sys.stderr)
        return 1
    db: TrackingDatabase = tracker.db
    workspace = state_dir / f"oscillator_{datetime.now():%Y%m%d-%H%M%S}"
    workspace.mkdir()
    grid = itertools.product([0.05, 0.1, 0.2, 0.4], [0.6, 0.8, 0.9, 1.0, 1.1, 1.2, 1.4])
    samples = [{"damping": d, "drive": w} for d, w in itertools.islice(grid, args.samples)]

    workers = [
        start_worker("sim", "sim", env, state_dir),
        start_worker("post", "post", env, state_dir),
    ]
    try:
        run = merlin_tracking.launch_study(
            app,
            "oscillator_sweep",
            str(workspace),
            chord([simulate.s(sample) for sample in samples], aggregate.s()),
            parameters={"samples": len(samples)},
        )
        print(f"launched run {run.id} of study oscillator_sweep into {workspace}")
        deadline = time.monotonic() + args.timeout
        shown = ""
        while run.is_active and time.monotonic() < deadline:
            time.sleep(0.5)
            run = db.runs.get(run.id)
            line = f"  {run.status.value:<10} {run.tasks_finished:>4}/{run.tasks_queued:<4} tasks finished"
            if sys.stdout.isatty():
                print("\r" + line, end="", flush=True)
            elif line != shown:
                print(line, flush=True)
            shown = line
        if sys.stdout.isatty():
            print()
    finally:
        stop_workers(workers)

    report(db, run.id)
    print_next_step(tracker.config.url, tracker.config.prefix, run.id)
    return 0 if run.status.value == "COMPLETED" else 1


def print_next_step(url: str, prefix: str, run_id: str) -> None:
    """The exact command that reads this ledger next, by its full path: the example's Python
    may be a virtualenv that is not on the caller's PATH (scripts/example.sh puts it on its
    own), and the store is whatever this run was given."""
    script = Path(sys.executable).parent / "merlin-tracking"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "merlin_tracking"]
    shown = mask_url(url)
    command += ["--url", shown]
    if prefix != DEFAULT_PREFIX:
        command += ["--prefix", prefix]
    print("\nread the ledger next with:")
    print("  " + shlex.join([*command, "runs", "show", run_id]))
    print("  " + shlex.join([*command, "runs", "list"]))
    if shown != url:
        print("  (the password is shown as ***: put yours in its place)")


def report(db: TrackingDatabase, run_id: str) -> None:
    """Print the tracked run, its counters and the workers that served it."""
    run = db.runs.get(run_id)
    study = db.studies.get(run.study_id) if run.study_id else None
    print(f"\nrun {run.id}  study {study.name if study else '-'}  status {run.status.value}")
    print(f"  workspace  {run.workspace}")
    print(f"  queues     {', '.join(run.queues)}")
    print("  counters   " + "  ".join(f"{name}={value}" for name, value in run.counters.items()))
    print(f"  duration   {(run.updated_at - run.created_at).total_seconds():.1f} s")
    print("\nworkers serving the run:")
    for logical in db.store.fetch_many(LogicalWorker, list(run.workers)):
        for physical in db.store.fetch_many(PhysicalWorker, list(logical.physical_workers)):
            print(
                f"  {logical.name:<6} queues={','.join(logical.queues):<6} "
                f"node={physical.name:<24} status={physical.status.value:<8} "
                f"restarts={physical.restart_count}"
            )


if __name__ == "__main__":
    sys.exit(main())
