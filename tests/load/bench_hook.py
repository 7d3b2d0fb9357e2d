"""Benchmark of the Claude Code hook's allow path against a bare interpreter (issue #11,
"Speed"; figures in docs/benchmarks.md).

    python tests/load/bench_hook.py [--runs 30] [--mode server|local|both]

The hook runs before every tool call a coding agent makes, so its allow path — a policy
rule allows the call, the server is reachable — must cost little more than starting Python
at all: the target is a median wall time at most 3x `python -c pass`, measured side by side
here (the two alternate run by run, so a busy machine slows both alike).

`server` starts a real `approvalctl serve` on SQLite with an allow rule for Bash and feeds
the real event of tests/fixtures/hooks/claude-code.PreToolUse.json to the installed
`approvalctl hook claude-code` with a `user` key; `local` runs the same hook on the local
database (no APPROVALCTL_SERVER). Each run checks the answer is an allow.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

EVENT = (ROOT / "tests" / "fixtures" / "hooks" / "claude-code.PreToolUse.json").read_bytes()
EXE = str(Path(sys.executable).parent / "approvalctl")


def timed(cmd: list[str], env: dict, stdin: bytes | None = None) -> tuple[float, bytes]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, input=stdin, capture_output=True, timeout=60)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return elapsed, proc.stdout


def compare(label: str, env: dict, runs: int) -> None:
    bare, hook = [], []
    timed([sys.executable, "-c", "pass"], env)  # warm-up: page cache, .pyc files
    timed([EXE, "hook", "claude-code"], env, EVENT)
    for _ in range(runs):
        bare.append(timed([sys.executable, "-c", "pass"], env)[0])
        seconds, out = timed([EXE, "hook", "claude-code"], env, EVENT)
        if b'"permissionDecision": "allow"' not in out:
            raise SystemExit(f"the hook did not allow: {out[:300]!r}")
        hook.append(seconds)
    b, h = statistics.median(bare), statistics.median(hook)
    print(f"{label:>7}: python -c pass {b * 1000:7.1f} ms | hook allow {h * 1000:7.1f} ms | "
          f"ratio {h / b:4.2f}x (target <= 3x) | p95 hook "
          f"{statistics.quantiles(hook, n=20)[-1] * 1000 if len(hook) > 1 else h * 1000:.1f}"
          f" ms | runs {runs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--mode", choices=("server", "local", "both"), default="both")
    args = parser.parse_args()
    rule = {"name": "bash", "tools": ["Bash"], "action": "allow"}
    with tempfile.TemporaryDirectory() as tmp:
        base = dict(os.environ, XDG_CONFIG_HOME=f"{tmp}/config", XDG_DATA_HOME=f"{tmp}/data")
        for var in ("APPROVALCTL_SERVER", "APPROVALCTL_API_KEY", "APPROVALCTL_CONFIG"):
            base.pop(var, None)
        if args.mode in ("server", "both"):
            os.environ.update(XDG_CONFIG_HOME=base["XDG_CONFIG_HOME"])
            from test_hooks import Serve

            serve = Serve(Path(tmp) / "server.db")
            try:
                serve.operator.add_rule(rule)
                env = dict(base, APPROVALCTL_SERVER=serve.url,
                           APPROVALCTL_API_KEY=serve.agent_key)
                compare("server", env, args.runs)
            finally:
                serve.stop()
        if args.mode in ("local", "both"):
            from approvalctl.models import Principal
            from approvalctl.service import ApprovalService
            from approvalctl.store import open_store

            db = str(Path(tmp) / "local.db")
            service = ApprovalService(open_store(db))
            service.add_rule(Principal("bench", "admin", local=True), rule)
            service.store.close()
            compare("local", dict(base, APPROVALCTL_DB=db), args.runs)


if __name__ == "__main__":
    main()
