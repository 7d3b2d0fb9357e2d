"""Benchmark of notification delivery (issue 5): worker throughput, and whether a busy
worker slows decisions.

    python tests/load/bench_notify.py [--rows 2000] [--decisions 300]

1. Throughput: `--rows` `created` events for one signed webhook on a real HTTP receiver on
   127.0.0.1 (ThreadingHTTPServer, answers 200 at once); time to deliver all of them with
   `notify run --once` in one process at batch 10 and 50, and with two processes at once
   (which must deliver each row exactly once: checked).
2. Decisions under delivery: `--decisions` approvals timed one by one (service.decide, real
   SQLite file) with no worker, then with a background worker (`start_background`, as in
   `serve`) delivering to a receiver that takes 200 ms per request. Median and p95.

Bounded: everything runs on loopback and finishes in well under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from approvalctl.config import Settings  # noqa: E402
from approvalctl.models import Principal  # noqa: E402
from approvalctl.service import ApprovalService  # noqa: E402
from approvalctl.store import open_store  # noqa: E402

AGENT = Principal(name="bench-agent", role="user")
OPERATOR = Principal(name="bench-operator", role="operator")
SECRET_ENV = "BENCH_WEBHOOK_SECRET"


class Receiver:
    def __init__(self, delay: float = 0.0) -> None:
        self.ids: list[int] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if delay:
                    time.sleep(delay)
                with lock:
                    outer.ids.append(json.loads(body)["id"])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.request_queue_size = 256  # the default backlog (5) refuses
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def block(url: str, batch: int) -> dict:
    return {"webhooks": [{"url": url, "secret_env": SECRET_ENV, "events": ["created"]}],
            "worker": {"batch": batch, "poll_interval": 0.05}}


def fill(db: Path, notifications: dict, rows: int) -> None:
    store = open_store(str(db))
    svc = ApprovalService(store, Settings(db="", notifications=notifications))
    for i in range(rows):
        svc.create(AGENT, f"tool_{i % 20}", {"n": i})
    store.close()


def throughput(rows: int, batch: int, processes: int, work: Path) -> float:
    receiver = Receiver()
    db = work / f"tp-{batch}-{processes}.db"
    config = work / f"tp-{batch}-{processes}.yaml"
    notifications = block(receiver.url, batch)
    config.write_text(yaml.safe_dump({"notifications": notifications}))
    fill(db, notifications, rows)
    env = {**os.environ, "APPROVALCTL_DB": str(db), "APPROVALCTL_CONFIG": str(config),
           SECRET_ENV: "bench", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "approvalctl", "notify", "run", "--once"],
                              env=env, stderr=subprocess.DEVNULL) for _ in range(processes)]
    for p in procs:
        p.wait(timeout=300)
    elapsed = time.perf_counter() - start
    receiver.close()
    assert sorted(receiver.ids) == sorted(set(receiver.ids)) and len(receiver.ids) == rows, \
        "a row was delivered twice or not at all"
    return elapsed


def decide_latencies(n: int, with_worker: bool, work: Path) -> list[float]:
    os.environ[SECRET_ENV] = "bench"
    receiver = Receiver(delay=0.2)
    db = work / f"decide-{with_worker}.db"
    notifications = {"webhooks": [{"url": receiver.url, "secret_env": SECRET_ENV,
                                   "events": ["created", "decided"]}],
                     "worker": {"batch": 10, "poll_interval": 0.05}}
    settings = Settings(db="", notifications=notifications)
    store = open_store(str(db))
    svc = ApprovalService(store, settings)
    ids = [svc.create(AGENT, "deploy").id for _ in range(n)]
    stop = None
    if with_worker:
        from approvalctl.notify.worker import start_background

        stop = start_background(store, settings)
        time.sleep(0.5)  # let it get busy
    times = []
    for rid in ids:
        t = time.perf_counter()
        svc.decide(OPERATOR, rid, "approve")
        times.append((time.perf_counter() - t) * 1000)
    if stop:
        stop()
    store.close()
    receiver.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--decisions", type=int, default=300)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, SQLite, loopback")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"\nDelivery throughput, {args.rows} webhook rows, `notify run --once` "
              "(process start included):")
        for batch, procs in ((10, 1), (50, 1), (10, 2)):
            s = throughput(args.rows, batch, procs, work)
            print(f"  batch {batch:>2}, {procs} process{'es' if procs > 1 else '  '}: "
                  f"{s:6.2f} s  = {args.rows / s:7.0f} deliveries/s  (each row exactly once)")
        print(f"\nDecision latency, {args.decisions} approvals (service.decide), ms:")
        for with_worker in (False, True):
            t = decide_latencies(args.decisions, with_worker, work)
            q = statistics.quantiles(t, n=20)
            label = "worker delivering (200 ms receiver)" if with_worker else "no worker"
            print(f"  {label:<36} median {statistics.median(t):6.2f}   p95 {q[18]:6.2f}")


if __name__ == "__main__":
    main()
