"""merlin_tracking against Merlin 2.0.0b4's own tracking database, side by side on one Redis.

The script makes (once, then reuses) a venv holding ``merlin==2.0.0b4`` from the package
registry and this repository (editable), starts a throw-away redis-server, and runs itself in
that venv (``--inner``): one process that opens Merlin's ``MerlinDatabase`` (its ``app.yaml``
names the Redis) and a ``TrackingDatabase`` on the same server, and times the same operations
on the same data set, interleaved call by call (the order flips every call), so drift in the
machine's load falls on both alike. The report goes between the ``vs_merlin`` markers of
docs/benchmarks.md (``--output``), the rest of the file stays as it is.

    python benchmarks/bench_vs_merlin.py             # 2,000 runs; updates docs/benchmarks.md
    python benchmarks/bench_vs_merlin.py --quick     # 200 runs; prints, writes nothing
    python benchmarks/bench_vs_merlin.py --help
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_support import (  # noqa: E402
    REPO_ROOT,
    git_state,
    load_average,
    machine_facts,
    merge_section,
    private_redis,
)

MERLIN_VERSION = "2.0.0b4"
START, END = "<!-- vs_merlin:start -->", "<!-- vs_merlin:end -->"
#: Target ratio (Merlin's time / ours) per operation, from the speed issue.
TARGETS = {
    "create a run": 20.0,
    "get by id": 3.0,
    "get_all, no filter": 20.0,
    "get_all, study filter": 100.0,
    "delete_all": 80.0,
}


# --------------------------------------------------------------------------- outer: venv, report
def venv_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "merlin_tracking" / f"bench-merlin-{MERLIN_VERSION}-venv"


def ensure_venv() -> Path:
    """The venv's python: made once; remade when its stamp (Merlin's version, this
    repository's pyproject.toml) no longer matches."""
    venv = venv_dir()
    python = venv / "bin" / "python"
    stamp = venv / "merlin-tracking-bench.stamp"
    wanted = f"{MERLIN_VERSION}\n{(REPO_ROOT / 'pyproject.toml').read_text(encoding='utf-8')}"
    if python.exists() and stamp.exists() and stamp.read_text(encoding="utf-8") == wanted:
        return python
    print(f"making {venv} (merlin=={MERLIN_VERSION} and this repository)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, f"merlin=={MERLIN_VERSION}"], check=True)
    subprocess.run([*pip, "-e", str(REPO_ROOT)], check=True)
    stamp.write_text(wanted, encoding="utf-8")
    return python


def run_inner(python: Path, url: str, runs: int, reps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mt-bench-merlin-") as folder:
        home = Path(folder)
        (home / ".merlin").mkdir()
        # Merlin reads app.yaml from the working directory first; HOME keeps ~/.merlin private.
        (home / "app.yaml").write_text(
            f"broker:\n  name: redis\n  url: {url}\n"
            f"results_backend:\n  name: redis\n  url: {url}\n"
            f"  encryption_key: {home / '.merlin' / 'encrypt_data_key'}\n",
            encoding="utf-8",
        )
        env = {**os.environ, "HOME": str(home), "MERLIN_TRACKING": "0"}
        done = subprocess.run(
            [str(python), str(Path(__file__).resolve()), "--inner", url, "--runs", str(runs),
             "--reps", str(reps)],
            cwd=home, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"the measuring process failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def report(result: dict[str, Any], wall: float, load_start: str, load_end: str) -> str:
    rows = []
    met_all = []
    for name, target in TARGETS.items():
        op = result["ops"][name]
        ratio = op["merlin_ms"] / op["ours_ms"]
        met = ratio >= target
        met_all.append(met)
        rows.append(
            f"| {name} | {op['calls']} | {op['merlin_ms']:.3f} | {op['ours_ms']:.3f} | "
            f"{ratio:.1f}x | >= {target:g}x | {'met' if met else '**not met**'} |"
        )
    facts = {
        **machine_facts(),
        "redis-server": result["redis_version"],
        "merlin": result["merlin_version"],
        "merlin_tracking": git_state(),
        "load average at start (1/5/15 min)": load_start,
        "load average at end (1/5/15 min)": load_end,
        "benchmark wall time": f"{wall:.0f} s",
    }
    lines = [
        START,
        "# merlin_tracking against Merlin 2.0.0b4's tracking database",
        "",
        "Generated by `benchmarks/bench_vs_merlin.py` from a real run; the script replaces "
        "only the text between the `vs_merlin` markers.",
        "",
        "```sh",
        "python benchmarks/bench_vs_merlin.py          # 2,000 runs; updates this section",
        "python benchmarks/bench_vs_merlin.py --quick  # 200 runs; prints, writes nothing",
        "```",
        "",
        "One process in a venv holding `merlin==2.0.0b4` and this repository opens Merlin's "
        "`MerlinDatabase` (Redis results backend) and a `TrackingDatabase` on the same "
        "throw-away redis-server and times the same calls on the same data set, interleaved "
        "(the order flips every call): "
        f"{result['runs']:,} runs over 10 studies and 20 queues (1-3 queues each), created "
        "through each API (`runs.create`, which creates the study on first use); then `get` "
        "by id of random runs, `get_all()` of every run, `get_all` of one study's runs "
        "(`study_id`), and `runs.delete_all()` once each. Times are medians per call "
        "(delete_all: its one call).",
        "",
        "| fact | value |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in facts.items()),
        "",
        f"**Targets: {sum(met_all)} of {len(met_all)} met.**",
        "",
        "| operation | calls each | Merlin ms | ours ms | ratio (Merlin / ours) | target | |",
        "|---|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
        f"Study filter: {result['ops']['get_all, study filter']['matches']} of "
        f"{result['runs']:,} runs match.",
        END,
    ]
    return "\n".join(lines)


def outer(args: argparse.Namespace) -> None:
    python = ensure_venv()
    load_start = load_average()
    began = time.monotonic()
    with private_redis(args.redis_server) as url:
        result = run_inner(python, url, args.runs, args.reps)
    text = report(result, time.monotonic() - began, load_start, load_average())
    if args.quick:
        print(text)
        return
    merge_section(Path(args.output), text, START, END, first=False)
    print(f"wrote {args.output}")


# --------------------------------------------------------------------------- inner: both APIs
def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    value = call()
    return (time.perf_counter() - began) * 1000, value


def interleaved(
    pairs: list[tuple[Callable[[], Any], Callable[[], Any]]],
) -> tuple[list[float], list[float], list[Any], list[Any]]:
    """Each (Merlin, ours) pair timed, the order flipping from one pair to the next."""
    merlin_ms: list[float] = []
    ours_ms: list[float] = []
    merlin_out: list[Any] = []
    ours_out: list[Any] = []
    for index, (merlin_call, ours_call) in enumerate(pairs):
        order = [(merlin_call, merlin_ms, merlin_out), (ours_call, ours_ms, ours_out)]
        if index % 2:
            order.reverse()
        for call, times, outs in order:
            elapsed, value = timed(call)
            times.append(elapsed)
            outs.append(value)
    return merlin_ms, ours_ms, merlin_out, ours_out


def inner(args: argparse.Namespace) -> None:
    logging.disable(logging.WARNING)  # Merlin logs every create at INFO
    from importlib.metadata import version

    import redis
    from merlin.db_scripts.merlin_db import MerlinDatabase

    from merlin_tracking import TrackingDatabase

    merlin = MerlinDatabase()
    ours = TrackingDatabase.from_url(args.inner, prefix="bench_vs_merlin")
    rng = random.Random(20240611)
    studies = [f"study_{i}" for i in range(10)]
    queues = [f"queue_{i}" for i in range(20)]
    specs = [
        (rng.choice(studies), f"/p/lustre/user/studies/run_{i:05d}", rng.sample(queues, rng.randint(1, 3)))
        for i in range(args.runs)
    ]  # fmt: skip
    ops: dict[str, dict[str, Any]] = {}

    def record(name: str, m_ms: list[float], o_ms: list[float], **extra: Any) -> None:
        ops[name] = {
            "calls": len(o_ms),
            "merlin_ms": statistics.median(m_ms),
            "ours_ms": statistics.median(o_ms),
            **extra,
        }

    m_ms, o_ms, m_runs, o_runs = interleaved(
        [
            (lambda s=s: merlin.runs.create(s[0], s[1], s[2]),
             lambda s=s: ours.runs.create(s[0], s[1], s[2]))
            for s in specs
        ]
    )  # fmt: skip
    record("create a run", m_ms, o_ms)
    picks = [rng.randrange(len(specs)) for _ in range(300)]
    m_ids = [run.get_id() for run in m_runs]
    o_ids = [run.id for run in o_runs]
    m_ms, o_ms, *_ = interleaved(
        [
            (lambda i=i: merlin.runs.get(m_ids[i]), lambda i=i: ours.runs.get(o_ids[i]))
            for i in picks
        ]
    )
    record("get by id", m_ms, o_ms)
    m_ms, o_ms, m_all, o_all = interleaved(
        [(merlin.runs.get_all, ours.runs.get_all) for _ in range(args.reps)]
    )
    assert len(m_all[0]) == len(o_all[0]) == args.runs, (len(m_all[0]), len(o_all[0]))
    record("get_all, no filter", m_ms, o_ms)
    m_study = merlin.studies.get("study_3").get_id()
    o_study = ours.studies.get("study_3").id
    m_ms, o_ms, m_some, o_some = interleaved(
        [
            (lambda: merlin.runs.get_all({"study_id": m_study}),
             lambda: ours.runs.get_all({"study_id": o_study}))
            for _ in range(args.reps * 3)
        ]
    )  # fmt: skip
    assert len(m_some[0]) == len(o_some[0]), (len(m_some[0]), len(o_some[0]))
    record("get_all, study filter", m_ms, o_ms, matches=len(o_some[0]))
    m_ms, o_ms, *_ = interleaved([(merlin.runs.delete_all, ours.runs.delete_all)])
    assert ours.runs.count() == 0 and merlin.runs.get_all() == []
    record("delete_all", m_ms, o_ms)
    server = redis.Redis.from_url(args.inner)
    print(
        json.dumps(
            {
                "runs": args.runs,
                "ops": ops,
                "merlin_version": version("merlin"),
                "redis_version": server.info("server")["redis_version"],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000, help="runs created (default 2000)")
    parser.add_argument("--reps", type=int, default=5, help="get_all repetitions (default 5)")
    parser.add_argument("--quick", action="store_true", help="200 runs; print, write nothing")
    parser.add_argument("--output", default=str(REPO_ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--redis-server", default="redis-server", help="the binary to start")
    parser.add_argument("--inner", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args)
        return
    if args.quick:
        args.runs, args.reps = 200, 3
    outer(args)


if __name__ == "__main__":
    main()
