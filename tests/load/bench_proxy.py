"""Benchmark of the latency `approvalctl mcp proxy` adds to an allowed tools/call round
trip (issue #11, "Speed": at most 2 ms median; figures in docs/benchmarks.md).

    python tests/load/bench_proxy.py [--calls 200] [--warmup 20]

Starts tests/fixtures/mcp_recorder.py twice — bare, and behind the proxy on a fresh local
SQLite database with an allow rule for `mcp__rec__echo` — initializes both over raw
newline-delimited JSON-RPC, then alternates `tools/call echo` on the two (so a busy machine
slows both alike) and reports the medians and their difference. Every answer is checked to
be the tool's result, not an error. Behind the proxy each call is filed, allowed by the
policy, consumed and forwarded: the figure is the whole gate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECORDER = ROOT / "tests" / "fixtures" / "mcp_recorder.py"


class Peer:
    """A stdio MCP server process spoken to with raw JSON-RPC lines."""

    def __init__(self, cmd: list[str], env: dict) -> None:
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        self.next_id = 0
        self.call("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                 "clientInfo": {"name": "bench", "version": "1"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.call("ping", {})  # the server has finished initializing

    def send(self, message: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def call(self, method: str, params: dict) -> dict:
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        assert self.proc.stdout is not None
        while True:
            answer = json.loads(self.proc.stdout.readline())
            if answer.get("id") == self.next_id:
                return answer

    def echo(self) -> float:
        start = time.perf_counter()
        answer = self.call("tools/call", {"name": "echo", "arguments": {"text": "hi"}})
        elapsed = time.perf_counter() - start
        result = answer.get("result") or {}
        if result.get("isError") or "error" in answer:
            raise SystemExit(f"the call failed: {answer}")
        return elapsed

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, APPROVALCTL_DB=str(Path(tmp) / "bench.db"),
                   XDG_CONFIG_HOME=str(Path(tmp) / "config"))
        env.pop("APPROVALCTL_SERVER", None)
        subprocess.run([sys.executable, "-m", "approvalctl", "rules", "add", "echo-ok",
                        "--action", "allow", "--tool", "mcp__rec__echo"], env=env,
                       check=True, capture_output=True)
        server = [sys.executable, str(RECORDER), str(Path(tmp) / "calls.jsonl")]
        bare = Peer(server, env)
        gated = Peer([sys.executable, "-m", "approvalctl", "mcp", "proxy", "--name", "rec",
                      "--", *server], env)
        try:
            for _ in range(opts.warmup):
                bare.echo()
                gated.echo()
            direct, proxied = [], []
            for _ in range(opts.calls):
                direct.append(bare.echo())
                proxied.append(gated.echo())
        finally:
            bare.close()
            gated.close()
    d, p = statistics.median(direct) * 1000, statistics.median(proxied) * 1000
    print(f"tools/call echo, {opts.calls} calls each (median): bare {d:.2f} ms, "
          f"through the proxy {p:.2f} ms, added {p - d:.2f} ms (target <= 2 ms)")


if __name__ == "__main__":
    main()
