"""Benchmark of PostgreSQL against SQLite (issue 6, "Speed"): HTTP throughput and latency of
one `serve` process (and what `--workers 2` adds), and `migrate --to` of a million requests.

    python tests/load/bench_pg.py [--part all|http|migrate] [--requests 1000000]
                                  [--http-count 6000] [--concurrency 16]

HTTP: for each backend and worker count, a fresh database, a real `approvalctl serve`
subprocess on a free loopback port, then N creates (POST /api/v1/approvals as a `user` key)
followed by N decisions (PUT approve as an `operator` key), from C keep-alive connections.
The load generator is a minimal asyncio HTTP/1.1 client in one process (a few µs of CPU per
request, so the 2-core machine's time goes to the server and the database); it is bounded by
count and by a time limit. Figures: completed requests per second, p50 and p99 latency.

Migration: a SQLite database of N requests in a realistic mix (every status, the hash-chained
audit rows, counters) is built once and cached; then the real command copies it to an empty
PostgreSQL schema, back from PostgreSQL to a new SQLite file (the rollback path), and to
another SQLite file for comparison — each run timed end to end, verification included.

Everything runs on 127.0.0.1 and cleans up after itself (the cache under
/tmp/approvalctl-bench-pg stays unless --rebuild).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_core  # noqa: E402  (its database builder)
from bench_api import free_port, stop  # noqa: E402

from approvalctl.models import Principal  # noqa: E402
from approvalctl.service import ApprovalService  # noqa: E402
from approvalctl.store import open_store  # noqa: E402

PG_BASE = os.environ.get("APPROVALCTL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
CACHE = Path(os.environ.get("APPROVALCTL_BENCH_CACHE", "/tmp/approvalctl-bench-pg"))
TIME_LIMIT = 120.0  # seconds per HTTP phase, whatever the count
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


# ---------------------------------------------------------------- databases
def pg_admin():
    import psycopg

    return psycopg.connect(PG_BASE, autocommit=True)


def new_pg_schema() -> tuple[str, str]:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with pg_admin() as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return schema, f"{PG_BASE}?options=-csearch_path%3D{schema}"


def drop_pg_schema(schema: str) -> None:
    with pg_admin() as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def migrate(source: str, target: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "approvalctl", "migrate", "--to", target,
                          "--json"], env={**ENV, "APPROVALCTL_DB": source},
                         capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"migrate failed: {out.stderr.strip()}")
    return elapsed, json.loads(out.stdout)


def bench_migrate(n: int, rebuild: bool) -> list[str]:
    CACHE.mkdir(parents=True, exist_ok=True)
    source = CACHE / f"source-{n}.db"
    if rebuild or not source.exists():
        bench_core.build(source, n, seed=6)  # 1 % pending, the rest decided, 30 days
    work = CACHE / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    lines = []
    schema, pg_url = new_pg_schema()
    try:
        runs = [("SQLite → PostgreSQL", str(source), pg_url),
                ("PostgreSQL → SQLite (rollback)", pg_url, str(work / "back.db")),
                ("SQLite → SQLite", str(source), str(work / "copy.db"))]
        for label, src, dst in runs:
            elapsed, report = migrate(src, dst)
            rows = {t["table"]: t["copied"] for t in report["tables"]}
            total = sum(rows.values())
            assert report["ok"], report
            lines.append(f"| {label} | {rows['requests']:,} | {rows['audit_log']:,} | "
                         f"{total:,} | {elapsed:.1f} s | {total / elapsed:,.0f} |")
            print(lines[-1], file=sys.stderr)
    finally:
        drop_pg_schema(schema)
        shutil.rmtree(work, ignore_errors=True)
    return lines


# ---------------------------------------------------------------- HTTP
def start_server(db: str, workers: int, home: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**ENV, "APPROVALCTL_DB": db, "XDG_CONFIG_HOME": str(home / "config"),
           "XDG_DATA_HOME": str(home / "data")}
    proc = subprocess.Popen([sys.executable, "-m", "approvalctl", "serve", "--port", str(port),
                             "--workers", str(workers)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"serve did not start: {proc.stderr.read()}")


async def _load(port: int, requests: list[bytes], concurrency: int
                ) -> tuple[list[float], list[tuple[int, bytes]], float]:
    """Send every request over `concurrency` keep-alive connections; latencies and replies."""
    latencies: list[float] = []
    replies: list[tuple[int, bytes]] = [(0, b"")] * len(requests)
    next_index = [0]
    deadline = time.monotonic() + TIME_LIMIT

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while next_index[0] < len(requests) and time.monotonic() < deadline:
                i = next_index[0]
                next_index[0] += 1
                t0 = time.perf_counter()
                writer.write(requests[i])
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                replies[i] = (int(head[9:12]), body)
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, replies, time.perf_counter() - t0


def _request(method: str, path: str, key: str, body: dict) -> bytes:
    data = json.dumps(body).encode()
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
            ).encode() + data


def _figures(latencies: list[float], elapsed: float) -> tuple[float, float, float]:
    q = statistics.quantiles(latencies, n=100)
    return len(latencies) / elapsed, q[49] * 1000, q[98] * 1000


def bench_http(count: int, concurrency: int) -> list[str]:
    lines = []
    for kind in ("sqlite", "postgres"):
        for workers in (1, 2):
            home = Path(CACHE / f"http-{uuid.uuid4().hex[:8]}")
            home.mkdir(parents=True)
            schema = None
            if kind == "postgres":
                schema, db = new_pg_schema()
            else:
                db = str(home / "approvals.db")
            try:
                store = open_store(db)
                service = ApprovalService(store)
                admin = Principal("bench", "admin", local=True)
                agent_key, _ = service.create_key(admin, "bench-agent", "user")
                op_key, _ = service.create_key(admin, "bench-op", "operator")
                store.close()
                proc, port = start_server(db, workers, home)
                try:
                    creates = [_request("POST", "/api/v1/approvals", agent_key,
                                        {"tool_name": "deploy", "arguments": {"n": i},
                                         "reason": "benchmark", "ttl_seconds": 3600})
                               for i in range(count)]
                    lat, replies, elapsed = asyncio.run(_load(port, creates, concurrency))
                    bad = [s for s, _ in replies if s != 201]
                    assert not bad, f"create failed: {bad[:3]} {replies[0]}"
                    c_rate, c50, c99 = _figures(lat, elapsed)
                    ids = [json.loads(b)["id"] for _, b in replies]
                    decides = [_request("PUT", f"/api/v1/approvals/{rid}", op_key,
                                        {"action": "approve"}) for rid in ids]
                    lat, replies, elapsed = asyncio.run(_load(port, decides, concurrency))
                    bad = [s for s, _ in replies if s != 200]
                    assert not bad, f"decide failed: {bad[:3]}"
                    d_rate, d50, d99 = _figures(lat, elapsed)
                finally:
                    stop(proc)
            finally:
                if schema:
                    drop_pg_schema(schema)
                shutil.rmtree(home, ignore_errors=True)
            name = "PostgreSQL" if kind == "postgres" else "SQLite"
            lines.append(f"| {name} | {workers} | {c_rate:,.0f} | {c50:.1f} | {c99:.1f} | "
                         f"{d_rate:,.0f} | {d50:.1f} | {d99:.1f} |")
            print(lines[-1], file=sys.stderr)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["all", "http", "migrate"], default="all")
    parser.add_argument("--requests", type=int, default=1_000_000,
                        help="requests in the database copied by migrate --to")
    parser.add_argument("--http-count", type=int, default=6000,
                        help="creates (and then decisions) per HTTP run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached source")
    args = parser.parse_args()
    print(f"# bench_pg: {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}")
    if args.part in ("all", "http"):
        rows = bench_http(args.http_count, args.concurrency)
        print(f"\nHTTP, {args.http_count:,} creates then {args.http_count:,} approvals, "
              f"{args.concurrency} connections:\n")
        print("| store | workers | create req/s | p50 ms | p99 ms | decide req/s | p50 ms | "
              "p99 ms |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
        print("\n".join(rows))
    if args.part in ("all", "migrate"):
        rows = bench_migrate(args.requests, args.rebuild)
        print(f"\nmigrate --to, {args.requests:,} requests (copy + verification):\n")
        print("| direction | requests | audit rows | all rows | time | rows/s |\n"
              "| --- | --- | --- | --- | --- | --- |")
        print("\n".join(rows))


if __name__ == "__main__":
    main()
