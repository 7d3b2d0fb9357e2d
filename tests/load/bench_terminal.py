"""Benchmark of the first screen of `approvalctl review` and `approvalctl watch` (issue 14,
"Speed": within 0.5 s on a 100,000-row database; figures go in docs/benchmarks.md).

    python tests/load/bench_terminal.py [--sizes 1000,100000] [--runs 5]

The databases are bench_core.py's (cached under /tmp/approvalctl-bench). Each run starts the
installed console script in a real pseudo-terminal (pexpect, 80x24) and times from the spawn
to the first drawn queue: the status line of `review`, the title of `watch`. Interpreter
start-up and the Textual import are included, as a person would wait for them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import cached, child_env, find_exe, working_copy  # noqa: E402

SCREENS = {
    "review": (["review"], r"pending, oldest first|no pending requests"),
    "watch": (["watch"], r"pending requests: \d+"),
}


def first_screen(exe: str, db: Path, args: list[str], pattern: str) -> float:
    """Seconds from spawning `exe args` in a pty to `pattern` appearing on it."""
    import pexpect

    env = {**child_env(db), "TERM": "xterm-256color"}
    start = time.perf_counter()
    child = pexpect.spawn(exe, args, env=env, encoding="utf-8", timeout=60,
                          dimensions=(24, 80))
    child.expect(pattern)
    elapsed = time.perf_counter() - start
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--exe", default=None)
    opts = parser.parse_args(argv)
    exe = find_exe(opts.exe)
    print(f"{'rows':>9}  {'screen':<7} {'median s':>9} {'max s':>7}")
    for n in (int(s) for s in opts.sizes.split(",")):
        db = working_copy(cached(n), f"terminal-{n}")
        for name, (args, pattern) in SCREENS.items():
            first_screen(exe, db, args, pattern)  # warm-up: page cache, bytecode
            times = [first_screen(exe, db, args, pattern) for _ in range(opts.runs)]
            print(f"{n:>9}  {name:<7} {statistics.median(times):>9.3f} {max(times):>7.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
