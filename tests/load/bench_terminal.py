"""Benchmark of the first screen of `approvalctl review` and `approvalctl watch` (issue 14,
"Speed": within 0.5 s on a 100,000-row database; figures go in docs/benchmarks.md).

    python tests/load/bench_terminal.py [--sizes 1000,100000] [--runs 5]

The databases are bench_core.py's (cached under /tmp/approvalctl-bench). Each run starts the
installed console script in a real pseudo-terminal (pexpect, 80x24) and times from the spawn
to the first drawn queue ("first"): the status line of `review`, the title of `watch`.
Interpreter start-up is included, as a person would wait for it. For `review` it also times
"ready": the interactive screen (Textual's, whose status line names the keys), which since
the first screen is drawn before Textual is imported can come later than "first".

Run it from the checkout to measure: the children get that checkout first on PYTHONPATH, so
an older tree (e.g. `git archive BASE | tar -x -C /tmp/base`) can be measured with the same
`--exe` for a before/after on the same load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import cached, child_env, find_exe, working_copy  # noqa: E402

SCREENS = {  # name: (arguments, the first queue drawn, the interactive screen)
    "review": (["review"], r"pending, oldest first|no pending requests",
               r"Enter opens a request|new ones appear here"),
    "watch": (["watch"], r"pending requests: \d+", None),
}


def first_screen(exe: str, db: Path, args: list[str], first: str, ready: str | None
                 ) -> tuple[float, float]:
    """Seconds from spawning `exe args` in a pty to `first` appearing on it, and to `ready`
    (the same as `first` when None)."""
    import pexpect

    env = {**child_env(db), "TERM": "xterm-256color"}
    start = time.perf_counter()
    child = pexpect.spawn(exe, args, env=env, encoding="utf-8", timeout=60,
                          dimensions=(24, 80))
    child.expect(first)
    shown = time.perf_counter() - start
    if ready is not None:
        child.expect(ready)
    interactive = time.perf_counter() - start
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    return shown, interactive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--exe", default=None)
    opts = parser.parse_args(argv)
    exe = find_exe(opts.exe)
    print(f"{'rows':>9}  {'screen':<7} {'first median s':>15} {'max s':>6}"
          f" {'ready median s':>15} {'max s':>6}")
    for n in (int(s) for s in opts.sizes.split(",")):
        db = working_copy(cached(n), f"terminal-{n}")
        for name, (args, first, ready) in SCREENS.items():
            first_screen(exe, db, args, first, ready)  # warm-up: page cache, bytecode
            runs = [first_screen(exe, db, args, first, ready) for _ in range(opts.runs)]
            shown, interactive = [r[0] for r in runs], [r[1] for r in runs]
            print(f"{n:>9}  {name:<7} {statistics.median(shown):>15.3f} {max(shown):>6.3f}"
                  f" {statistics.median(interactive):>15.3f} {max(interactive):>6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
