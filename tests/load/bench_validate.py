"""Cost of validating one create body against the spec, before and after a change.

    python tests/load/bench_validate.py [--before DIR]

Times `Operation.check_body` for `POST /api/v1/approvals` on a typical valid body, in this
process, for the package in this checkout and (with `--before`) for another checkout of the
repository (e.g. `git worktree add /tmp/before <commit>`), alternating the two in rounds so
both see the same machine load; prints the median over rounds of the best of three.
jsonschema's own validator on the same schema is timed as a reference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BODY = {"tool_name": "git_push", "arguments": {"branch": "main"}, "risk": "high",
        "reason": "release", "ttl_seconds": 600}


def _load(path: Path):
    for name in [m for m in sys.modules if m.startswith("approvalctl")]:
        del sys.modules[name]
    sys.path.insert(0, str(path))
    try:
        from approvalctl.server import spec
    finally:
        sys.path.remove(str(path))
    return spec.operations()[("POST", "/api/v1/approvals")]


def _us(call, n: int) -> float:
    return min(timeit.repeat(call, number=n, repeat=3)) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--number", type=int, default=20000)
    opts = parser.parse_args()
    ops = {}
    if opts.before:
        ops["before"] = _load(opts.before)
    ops["this checkout"] = _load(ROOT)
    from jsonschema import Draft4Validator

    reference = Draft4Validator(ops["this checkout"].body.schema)
    times: dict[str, list[float]] = {}
    for _ in range(opts.rounds):
        for label, op in ops.items():
            times.setdefault(label, []).append(_us(lambda op=op: op.check_body(BODY),
                                                   opts.number))
        times.setdefault("jsonschema Draft4Validator alone", []).append(
            _us(lambda: reference.is_valid(BODY), max(1, opts.number // 10)))
    for label, values in times.items():
        print(f"| {label} | {statistics.median(values):.2f} µs |")


if __name__ == "__main__":
    main()
