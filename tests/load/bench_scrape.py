"""Benchmark: the cost of one /metrics scrape against the number of stored requests.

Prints a table; asserts nothing. The claim under test: a scrape's cost follows the
pending backlog (counted on an index), not the history of requests ever stored.

    PYTHONPATH=$PWD python tests/load/bench_scrape.py [--sizes 1000,10000,100000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from approvalctl import counters, metrics
from approvalctl.store import open_store
from approvalctl.store.sql import REQUEST_COLUMNS


def fill(store, total: int, pending: int) -> None:
    """`total` requests, the last `pending` of them still pending, the rest decided."""
    rows = []
    for i in range(total):
        status = "pending" if i >= total - pending else ("approved" if i % 3 else "rejected")
        row = {"id": f"{i:026d}", "tool_name": "deploy", "arguments": json.dumps({"n": i}),
               "reason": None, "risk": "low", "user_id": "bot", "status": status,
               "created_at": f"2026-11-26T10:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}."
                             f"{i % 1000:03d}Z",
               "expires_at": "2099-01-01T00:00:00.000Z", "decided_at": None,
               "decided_by": None, "decision_note": None, "digest": None, "use_by": None,
               "consumed_at": None}
        rows.append(tuple(row[c] for c in REQUEST_COLUMNS))
    with store._write() as cur:
        cur.executemany("INSERT INTO requests (" + ", ".join(REQUEST_COLUMNS) + ") VALUES ("
                        + ", ".join("?" * len(REQUEST_COLUMNS)) + ")", rows)
    store.add_counters([(counters.REQUESTS_TOTAL, counters.labels(status="pending"), total)])


def scrape_ms(store, rounds: int) -> tuple[float, float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        metrics.render(store, include_http=False)
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    print(f"{'stored requests':>16} {'pending':>8} {'scrape p50 ms':>14} {'p95 ms':>8}")
    for size in (int(s) for s in args.sizes.split(",")):
        for pending in (50, size // 10):
            with tempfile.TemporaryDirectory() as tmp:
                store = open_store(str(Path(tmp) / "bench.db"))
                fill(store, size, pending)
                scrape_ms(store, 5)  # warm the page cache
                p50, p95 = scrape_ms(store, args.rounds)
                store.close()
            print(f"{size:>16} {pending:>8} {p50:>14.3f} {p95:>8.3f}")


if __name__ == "__main__":
    main()
