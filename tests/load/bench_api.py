"""Benchmark of the HTTP API: one `approvalctl serve`, 32 keep-alive connections, a database
of 100,000 requests; create, decide, list (50 items) and get; req/s and latency percentiles.

A baseline is measured in the same run: a bare Starlette handler doing one SQLite insert
under the same uvicorn settings, so the cost of authentication, validation, audit chain and
counters shows as a ratio.

    python tests/load/bench_api.py [--seconds 8] [--connections 32] [--rows 100000]

The load generator is a small asyncio HTTP/1.1 client on raw sockets (httpx would be the
bottleneck); it runs on the same machine, so on 2 cores it competes with the server.
Bounded: every phase runs for --seconds, the whole run takes about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- load generator
async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    body = await reader.readexactly(length) if length else b""
    return status, body


async def _worker(port: int, next_request, stop_at: float, lat: list[float],
                  statuses: dict[int, int], on_body=None) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            raw = next_request()
            if raw is None:
                break
            t0 = time.perf_counter()
            writer.write(raw)
            status, body = await _read_response(reader)
            lat.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
            if on_body is not None:
                on_body(status, body)
    finally:
        writer.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), or NaN elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_phase(port: int, next_request, seconds: float, connections: int,
              on_body=None, server_pid: int | None = None) -> dict:
    lat: list[float] = []
    statuses: dict[int, int] = {}

    async def main() -> float:
        stop_at = time.perf_counter() + seconds
        start = time.perf_counter()
        await asyncio.gather(*(_worker(port, next_request, stop_at, lat, statuses, on_body)
                               for _ in range(connections)))
        return time.perf_counter() - start

    cpu0 = cpu_seconds(server_pid) if server_pid else float("nan")
    try:
        import uvloop

        elapsed = uvloop.run(main())
    except ImportError:
        elapsed = asyncio.run(main())
    cpu = (cpu_seconds(server_pid) - cpu0) if server_pid else float("nan")
    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

    return {"requests": len(lat), "rps": len(lat) / elapsed, "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "statuses": statuses,
            # the server's CPU per request and its share of the cores: a process at ~1.0
            # core with cores to spare is bound by the GIL, not by the machine
            "cpu_us": cpu / max(1, len(lat)) * 1e6, "cores": cpu / elapsed}


def http_request(method: str, path: str, key: str | None = None, body: bytes | None = None
                 ) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if key:
        lines.append(f"X-API-Key: {key}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


# ---------------------------------------------------------------- the database
#: Seeded rows name their columns: later migrations add columns (digest, use_by, …) that a
#: benchmark row leaves NULL.
SEED_INSERT = ("INSERT INTO requests (id, tool_name, arguments, reason, risk, user_id, status, "
               "created_at, expires_at, decided_at, decided_by, decision_note, response_ms) "
               "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)")


def seed(db: str, rows: int) -> tuple[str, str, list[str]]:
    """A migrated database with `rows` requests (a tenth pending) and two API keys."""
    sys.path.insert(0, str(ROOT))
    from approvalctl.models import Principal, new_id, to_iso, utcnow
    from approvalctl.service import ApprovalService
    from approvalctl.store import open_store

    store = open_store(db)
    service = ApprovalService(store)
    admin = Principal("bench", "admin", local=True)
    agent_key, _ = service.create_key(admin, "bench-agent", "user")
    ops_key, _ = service.create_key(admin, "bench-operator", "operator")
    store.close()
    now = utcnow()
    ids, batch = [], []
    conn = sqlite3.connect(db)
    conn.execute("BEGIN")
    for i in range(rows):
        rid = new_id(now)
        ids.append(rid)
        status = "pending" if i % 10 == 0 else random.choice(["approved", "rejected",
                                                              "expired", "cancelled"])
        created = to_iso(now)
        batch.append((rid, random.choice(["git_push", "deploy", "db_migrate", "rm_rf"]),
                      json.dumps({"n": i}), "seeded", "medium", "bench-agent", status,
                      created, "2099-01-01T00:00:00.000Z",
                      None if status == "pending" else created,
                      None if status == "pending" else "seed", None, None))
        if len(batch) == 10000:
            conn.executemany(SEED_INSERT, batch)
            batch = []
    if batch:
        conn.executemany(SEED_INSERT, batch)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()
    return agent_key, ops_key, ids


# ---------------------------------------------------------------- servers
def start(cmd: list[str], port: int, env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"server exited: {proc.stderr.read().decode()}") from None
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("server did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


BASELINE_APP = textwrap.dedent('''
    import sqlite3, threading, uuid, uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.concurrency import run_in_threadpool
    DB = {db!r}
    local = threading.local()

    def conn():
        c = getattr(local, "c", None)
        if c is None:
            c = local.c = sqlite3.connect(DB, isolation_level=None, check_same_thread=False)
            c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=NORMAL")
            c.execute("PRAGMA busy_timeout=10000")
            c.execute("CREATE TABLE IF NOT EXISTS t (id TEXT PRIMARY KEY, body TEXT)")
        return c

    def insert(body):
        rid = uuid.uuid4().hex
        conn().execute("INSERT INTO t VALUES (?, ?)", (rid, body))
        return rid

    async def create(request):
        body = await request.body()
        return JSONResponse({{"id": await run_in_threadpool(insert, body.decode())}},
                            status_code=201)

    app = Starlette(routes=[Route("/create", create, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning", access_log=False)
''')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    secs, conns = args.seconds, args.connections

    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="approvalctl-bench-"))
    db = str(tmp / "bench.db")
    t0 = time.perf_counter()
    agent_key, ops_key, seeded = seed(db, args.rows)
    print(f"seeded {args.rows:,} requests in {time.perf_counter() - t0:.1f} s", flush=True)

    # One key creates thousands of requests a second here, which is what the per-key
    # creation and pending quotas exist to stop: lift those two; the others stay on.
    (tmp / "config" / "approvalctl").mkdir(parents=True)
    (tmp / "config" / "approvalctl" / "config.yaml").write_text(
        "quotas:\n  create_rate: null\n  max_pending: null\n")
    env = dict(os.environ, APPROVALCTL_DB=db, XDG_CONFIG_HOME=str(tmp / "config"),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    results: dict[str, dict] = {}

    # -- baseline: bare Starlette + one SQLite insert, same uvicorn, same client
    port = free_port()
    script = tmp / "baseline.py"
    script.write_text(BASELINE_APP.format(db=str(tmp / "baseline.db"), port=port))
    proc = start([sys.executable, str(script)], port, env)
    try:
        body = b'{"tool_name": "git_push", "arguments": {"branch": "main"}}'
        raw = http_request("POST", "/create", None, body)
        run_phase(port, lambda: raw, 1.0, conns)  # warm-up
        results["baseline insert"] = run_phase(port, lambda: raw, secs, conns,
                                               server_pid=proc.pid)
    finally:
        stop(proc)

    # -- approvalctl serve
    port = free_port()
    proc = start([sys.executable, "-m", "approvalctl", "serve", "--port", str(port)], port,
                 env)
    try:
        body = json.dumps({"tool_name": "git_push", "arguments": {"branch": "main"},
                           "reason": "benchmark", "risk": "high"}).encode()
        create = http_request("POST", "/api/v1/approvals", agent_key, body)
        created: list[str] = []

        def keep_id(status: int, data: bytes) -> None:
            if status == 201:
                created.append(json.loads(data)["id"])

        run_phase(port, lambda: create, 1.0, conns, keep_id)  # warm-up
        results["create"] = run_phase(port, lambda: create, secs, conns, keep_id, proc.pid)

        to_decide = iter(created)
        decide_body = b'{"action": "approve", "note": "bench"}'

        def next_decide() -> bytes | None:
            rid = next(to_decide, None)
            return None if rid is None else http_request(
                "PUT", f"/api/v1/approvals/{rid}", ops_key, decide_body)

        results["decide"] = run_phase(port, next_decide, secs, conns, server_pid=proc.pid)

        list_req = http_request("GET", "/api/v1/approvals?limit=50", ops_key)
        run_phase(port, lambda: list_req, 1.0, conns)
        results["list (50 items)"] = run_phase(port, lambda: list_req, secs, conns,
                                               server_pid=proc.pid)

        def next_get() -> bytes:
            return http_request("GET", f"/api/v1/approvals/{random.choice(seeded)}", ops_key)

        run_phase(port, next_get, 1.0, conns)
        results["get"] = run_phase(port, next_get, secs, conns, server_pid=proc.pid)
    finally:
        stop(proc)

    targets = {"create": 2500, "decide": 2500, "list (50 items)": 1500, "get": 3000}
    base = results["baseline insert"]["rps"]
    print(f"\n{conns} connections, {secs:g} s per phase, {os.cpu_count()} CPUs, "
          f"database of {args.rows:,} requests; 1-min load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after (other work on the machine skews the figures)\n")
    print("| operation | req/s | p50 ms | p99 ms | of baseline | server CPU µs/req (cores) "
          "| target | statuses |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for name, r in results.items():
        target = targets.get(name)
        verdict = "-" if target is None else (
            f"≥ {target:,} {'✓' if r['rps'] >= target else '✗'}, p99 ≤ 50 "
            f"{'✓' if r['p99_ms'] <= 50 else '✗'}")
        print(f"| {name} | {r['rps']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['rps'] / base:.2f} | {r['cpu_us']:,.0f} ({r['cores']:.2f}) | {verdict} | "
              f"{', '.join(f'{k}: {v}' for k, v in sorted(r['statuses'].items()))} |")


if __name__ == "__main__":
    main()
