"""CPU per HTTP request inside the app: create, decide, list (50 items) and get driven
through the ASGI app in this process (no sockets, no uvicorn, no load generator competing
for the cores), on a database seeded as tests/load/bench_api.py seeds it.

    python tests/load/bench_inprocess.py [--tree PATH] [--rows 20000] [--reps 3]

On a machine shared with other work the req/s of bench_api.py moves by tens of per cent
from one run to the next; CPU time per request inside the app moves far less, so this is
the figure to compare builds with (`--tree` runs another checkout's code, e.g. a worktree
of an older commit, with that checkout's own seeding). It reports the best of `--reps`
passes (each pass: 3,000 creates, 2,900 decisions of them, 600 pages, 3,000 gets; pending
requests pile up from pass to pass, as in bench_api.py); the server's protocol layer and
the response's trip through the socket are not included (bench_api.py measures those).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", default=str(ROOT), help="the checkout whose code runs")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    opts = parser.parse_args()
    sys.path[:0] = [opts.tree, str(Path(opts.tree) / "tests" / "load")]
    import bench_api

    from approvalctl.config import Settings
    from approvalctl.server.app import create_app
    from approvalctl.store import open_store

    random.seed(2)
    db = str(Path(tempfile.mkdtemp(prefix="approvalctl-bench-")) / "bench.db")
    agent_key, ops_key, seeded = bench_api.seed(db, opts.rows)
    settings = Settings()
    if hasattr(settings, "quotas"):  # one key creates thousands a second here (bench_api.py)
        settings = dataclasses.replace(settings, quotas=dataclasses.replace(
            settings.quotas, max_pending=None, create_rate=None))
    app = create_app(open_store(db), settings, background=False)

    async def call(method: str, target: str, key: str, body: bytes = b"") -> dict:
        path, _, query = target.partition("?")
        headers = [(b"host", b"127.0.0.1"), (b"x-api-key", key.encode())]
        if body:
            headers += [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())]
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
                 "query_string": query.encode(), "root_path": "", "headers": headers,
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        sent = False

        async def receive() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        out: dict = {"body": b""}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                out["status"] = message["status"]
            elif message["type"] == "http.response.body":
                out["body"] += message.get("body", b"")

        await app(scope, receive, send)
        return out

    created: list[str] = []
    create_body = json.dumps({"tool_name": "git_push", "arguments": {"branch": "main"},
                              "reason": "benchmark", "risk": "high"}).encode()
    plan = {
        "create": (lambda i: call("POST", "/api/v1/approvals", agent_key, create_body), 3000),
        "decide": (lambda i: call("PUT", f"/api/v1/approvals/{created[i]}", ops_key,
                                  b'{"action": "approve", "note": "bench"}'), 2900),
        "list (50 items)": (lambda i: call("GET", "/api/v1/approvals?limit=50", ops_key), 600),
        "get": (lambda i: call("GET", f"/api/v1/approvals/{random.choice(seeded)}", ops_key),
                3000),
    }

    async def phase(name: str, make, n: int, connections: int = 32) -> None:
        todo = iter(range(n))

        async def worker() -> None:
            for i in todo:
                answer = await make(i)
                if answer["status"] not in (200, 201):
                    raise SystemExit(f"{name}: {answer['status']} {answer['body'][:200]!r}")
                if name == "create":
                    created.append(json.loads(answer["body"])["id"])
        await asyncio.gather(*(worker() for _ in range(connections)))

    async def run() -> None:
        await phase("warm-up", plan["list (50 items)"][0], 100)
        print(f"| operation | app CPU µs per request (best of {opts.reps} passes) |")
        print("| --- | ---: |")
        best = dict.fromkeys(plan, float("inf"))
        for _ in range(opts.reps):
            created.clear()  # each pass decides the requests its creates made
            for name, (make, n) in plan.items():
                start = time.process_time()
                await phase(name, make, n)
                best[name] = min(best[name], (time.process_time() - start) / n * 1e6)
        for name, cpu in best.items():
            print(f"| {name} | {cpu:,.0f} |", flush=True)

    asyncio.run(run())
    os._exit(0)  # the app's database thread is a daemon; no lifespan ran to stop it


if __name__ == "__main__":
    main()
