"""Benchmark of waiting at scale (issue #13): N idle long-polls held on one `approvalctl
serve` process, pinned to CPU 0 with taskset when it is there (the load generator on CPU 1).

Reports, per backend:
- the server's CPU (% of one core) over --seconds while N long-polls sit idle;
- other requests' latency (GET of one request, one connection) without and with the waiters;
- decision -> long-poll answer latency, for decisions made through the same server (PUT) and
  by another process (this one, straight on the database);
- the server's resident memory per waiter.

    python tests/load/bench_waiters.py [--waiters 2000] [--seconds 10] [--decisions 50]
                                       [--postgres URL]

Without --postgres it runs on a SQLite file in a temporary folder. The long-polls are raw
HTTP/1.1 sockets (asyncio), re-asked when their 60 s wait ends. Bounded: every phase runs
for --seconds; check it runs with e.g. `--waiters 20 --seconds 1 --decisions 3`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from approvalctl.config import Settings  # noqa: E402
from approvalctl.limits import Quotas  # noqa: E402
from approvalctl.models import Principal  # noqa: E402
from approvalctl.server.writepath import service_in  # noqa: E402
from approvalctl.service import ApprovalService  # noqa: E402
from approvalctl.store import open_store  # noqa: E402

ADMIN = Principal("bench-admin", "admin", local=True)
OPERATOR = Principal("bench-operator", "operator", local=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * p / 100))] * 1000, 2) \
        if values else 0.0


async def http(reader, writer, method: str, path: str, key: str, body: bytes = b""
               ) -> tuple[int, bytes]:
    head = (f"{method} {path} HTTP/1.1\r\nHost: b\r\nX-API-Key: {key}\r\n"
            f"Content-Length: {len(body)}\r\n")
    if body:
        head += "Content-Type: application/json\r\n"
    writer.write(head.encode() + b"\r\n" + body)
    await writer.drain()
    raw = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in raw.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return int(raw[9:12]), await reader.readexactly(length)


class Waiter:
    """One long-poll connection on one request; `answered` is set when it returns decided."""

    def __init__(self, port: int, key: str, request_id: str) -> None:
        self.port, self.key, self.id = port, key, request_id
        self.answered = asyncio.Event()
        self.answered_at = 0.0

    async def run(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            while True:
                status, body = await http(reader, writer, "GET",
                                          f"/api/v1/approvals/{self.id}?wait=60", self.key)
                if status != 200:
                    raise RuntimeError(f"long-poll answered {status}: {body[:200]!r}")
                if json.loads(body)["status"] != "pending":
                    self.answered_at = time.perf_counter()
                    self.answered.set()
                    return
        finally:
            writer.close()


async def probe(port: int, key: str, request_id: str, seconds: float) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lat: list[float] = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        t = time.perf_counter()
        await http(reader, writer, "GET", f"/api/v1/approvals/{request_id}", key)
        lat.append(time.perf_counter() - t)
    writer.close()
    return lat


async def held_waiters(port: int, n: int, tasks: list, limit: float = 60.0) -> float:
    """Wait until the server's approvalctl_waiters{kind="long_poll"} gauge reaches `n`
    (at most `limit` seconds); its last value. Raises what a failed waiter raised."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    deadline = time.perf_counter() + limit
    held = 0.0
    try:
        while time.perf_counter() < deadline:
            failed = [t for t in tasks if t.done() and t.exception() is not None]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
            _, body = await http(reader, writer, "GET", "/metrics", "-")
            for line in body.decode().splitlines():
                if line.startswith('approvalctl_waiters{kind="long_poll"}'):
                    held = float(line.rsplit(" ", 1)[1])
            if held >= n:
                break
            await asyncio.sleep(0.5)
    finally:
        writer.close()
    return held


async def bench(args, db: str, pid: int, port: int, keys: dict[str, str],
                service: ApprovalService) -> dict:
    user = Principal(keys["user_name"], "user", local=True)  # the key's own requests
    probe_req = service.create(user, "probe", {})
    out: dict = {"waiters": args.waiters}
    lat = await probe(port, keys["user"], probe_req.id, args.seconds)
    out["other_p50_ms_idle"], out["other_p99_ms_idle"] = pct(lat, 50), pct(lat, 99)
    rss0 = rss_bytes(pid)
    n = args.waiters + 2 * args.decisions
    with service.store.unit_of_work() as uow:
        bound = service_in(uow, service)
        ids = [bound.create(user, "deploy", {"n": i}).id for i in range(n)]
    waiters = [Waiter(port, keys["user"], rid) for rid in ids]
    tasks = [asyncio.create_task(w.run()) for w in waiters]
    t = time.perf_counter()
    held = await held_waiters(port, n, tasks)  # every long-poll registered on the server
    out["seconds_to_hold_all"] = round(time.perf_counter() - t, 1)
    if held < n:
        raise RuntimeError(f"only {held} of {n} long-polls were held after a minute")
    await asyncio.sleep(1.0)  # settle before measuring
    out["rss_per_waiter_bytes"] = round((rss_bytes(pid) - rss0) / n)
    c0, t0 = cpu_seconds(pid), time.perf_counter()
    await asyncio.sleep(args.seconds)
    out["idle_cpu_pct_of_core"] = round(100 * (cpu_seconds(pid) - c0) /
                                        (time.perf_counter() - t0), 1)
    lat = await probe(port, keys["user"], probe_req.id, args.seconds)
    out["other_p50_ms_waiting"], out["other_p99_ms_waiting"] = pct(lat, 50), pct(lat, 99)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    same, other = [], []
    for w in waiters[-2 * args.decisions:-args.decisions]:  # through the same server
        t = time.perf_counter()
        await http(reader, writer, "PUT", f"/api/v1/approvals/{w.id}", keys["operator"],
                   b'{"action": "approve"}')
        await asyncio.wait_for(w.answered.wait(), 30)
        same.append(w.answered_at - t)
    writer.close()
    for w in waiters[-args.decisions:]:  # by another process: this one, on the database
        service.decide(OPERATOR, w.id, "approve")
        t = time.perf_counter()
        await asyncio.wait_for(w.answered.wait(), 30)
        other.append(w.answered_at - t)
    out["decision_p50_ms_same_server"], out["decision_p99_ms_same_server"] = \
        pct(same, 50), pct(same, 99)
    out["decision_p50_ms_other_process"], out["decision_p99_ms_other_process"] = \
        pct(other, 50), pct(other, 99)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--waiters", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--decisions", type=int, default=50)
    ap.add_argument("--postgres", help="a PostgreSQL URL (default: a SQLite file)")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.waiters + 2 * args.decisions + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    tmp = tempfile.mkdtemp(prefix="bench-waiters-")
    db = args.postgres or str(Path(tmp) / "approvals.db")
    store = open_store(db)
    service = ApprovalService(store, Settings(db=db, quotas=Quotas(max_pending=None)))
    keys = {role: service.create_key(ADMIN, f"bench-{role}-{os.getpid()}", role)[0]
            for role in ("user", "operator")}
    keys["user_name"] = f"bench-user-{os.getpid()}"
    port = free_port()
    cmd = [sys.executable, "-m", "approvalctl", "serve", "--port", str(port)]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
        os.sched_setaffinity(0, {1} if os.cpu_count() and os.cpu_count() > 1 else {0})
    config = Path(tmp) / "config.yaml"  # one key holds every waiter: lift its quotas
    config.write_text(f"quotas:\n  max_waits: {want}\n  max_pending: {want}\n"
                      f"http_limits:\n  max_connections: {want + 100}\n")
    env = dict(os.environ, APPROVALCTL_DB=db, APPROVALCTL_CONFIG=str(config))
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    sys.exit("serve did not start")
                time.sleep(0.1)
        result = asyncio.run(bench(args, db, server.pid, port, keys, service))
        result["backend"] = "postgresql" if args.postgres else "sqlite"
        print(json.dumps(result, indent=2))
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
