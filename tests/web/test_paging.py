"""A ledger of 10,000 runs: the runs page and the API page through them, each page reading
only what it shows (its load time is measured by ``benchmarks/bench_web.py``, not here)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import redis

from merlin_tracking import TrackingDatabase
from tests.support.web import WebServer

RUNS = 10_000


def _records_read(raw_redis: redis.Redis) -> int:
    return int(raw_redis.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0))


def test_ten_thousand_runs_are_paged_and_each_page_reads_only_its_runs(
    redis_db: TrackingDatabase, redis_url: str, prefix: str, raw_redis: redis.Redis
) -> None:
    with ThreadPoolExecutor(8) as pool:  # round trips overlap: the ledger fills in seconds
        list(pool.map(lambda i: redis_db.runs.create("big", f"/ws/{i:05d}", ["q"]), range(RUNS)))
    web = WebServer(redis_url, prefix)
    try:
        web.get("/runs")  # warm up (scripts loaded, connections open)
        for path in ("/runs", "/runs?offset=5000", "/api/runs?limit=100&offset=9950"):
            before = _records_read(raw_redis)
            reply = web.get(path)
            assert reply.status == 200, reply.text
            # The page's runs (at most 100) and their studies, not the 10,000.
            assert _records_read(raw_redis) - before <= 2 * 100, path
        first = web.get("/api/runs").json()
        assert (first["total"], first["count"]) == (RUNS, 50)
        assert first["runs"][0]["workspace"] == f"/ws/{RUNS - 1:05d}"  # newest first
        tail = web.get("/api/runs?limit=100&offset=9950").json()
        assert tail["count"] == 50 and tail["runs"][-1]["workspace"] == "/ws/00000"
        page = web.get("/runs?offset=50").text
        assert "51-100 of 10000" in page and 'rel="next"' in page and "← newer" in page
        assert len(page.encode()) < 200_000
    finally:
        web.close()
