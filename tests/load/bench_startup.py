"""Start-up benchmark: wall time and imported modules of `approve ID`, `list`, `--help`,
for several builds of approvalctl side by side (figures in docs/benchmarks.md).

    python tests/load/bench_startup.py --runs 21 \\
        --variant before=/usr/bin/python3:/tmp/approvalctl-before \\
        --variant after=.venv/bin/python:.

A variant is `LABEL=PYTHON[:PYTHONPATH]`: an interpreter (its site-packages decide the Typer
version) and the directory holding the `approvalctl` package to measure. On a shared machine
absolute times drift with the load, so the runs are interleaved — each round runs every
variant once per command, in a fresh random order — and the report gives each variant's
median and p90 over the same moments, with the median CPU time of the child (which other
jobs on the machine do not inflate). Each run is `python -m approvalctl ...` on a SQLite
database seeded with two pending requests (`approve` decides a fresh one each run) with
bytecode caching on, as in a normal installation. Modules are counted from one
`python -X importtime` run per variant and command.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", re.M)
COMMANDS = {"approve ID": ["approve", "{id}"], "list": ["list"], "--help": ["--help"]}


def _env(pythonpath: str, db: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["APPROVALCTL_DB"] = str(db)
    env["APPROVALCTL_CONFIG"] = str(db.parent / "absent.yaml")
    if pythonpath:
        env["PYTHONPATH"] = str(Path(pythonpath).resolve())
    return env


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(python: str, env: dict[str, str], args: list[str],
         *extra: str) -> tuple[float, float, str]:
    cpu = _cpu()
    start = time.perf_counter()
    # cwd: `-m` puts the working directory first on sys.path, ahead of PYTHONPATH.
    proc = subprocess.run([python, *extra, "-m", "approvalctl", *args], env=env,
                          cwd=Path(env["APPROVALCTL_DB"]).parent, capture_output=True, text=True,
                          timeout=120)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{args}: exit {proc.returncode}: {proc.stderr[-500:]}")
    return elapsed, _cpu() - cpu, proc.stderr


def _create(python: str, env: dict[str, str]) -> str:
    # Created on an agent's behalf: the local operator may not approve their own request.
    proc = subprocess.run([python, "-m", "approvalctl", "request", "bench_tool",
                           "--json"], env={**env, "APPROVALCTL_USER": "bench-agent"},
                          cwd=Path(env["APPROVALCTL_DB"]).parent, capture_output=True, text=True,
                          timeout=120, check=True)
    return re.search(r'"id": "([^"]+)"', proc.stdout).group(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", required=True,
                        help="LABEL=PYTHON[:PYTHONPATH]")
    parser.add_argument("--runs", type=int, default=21)
    opts = parser.parse_args()
    variants = []
    for spec in opts.variant:
        label, _, rest = spec.partition("=")
        python, _, path = rest.partition(":")
        variants.append((label, str(Path(python).absolute()), path))
    work = Path(tempfile.mkdtemp(prefix="approvalctl-startup-"))
    envs = {}
    for label, python, path in variants:
        (work / label).mkdir()
        envs[label] = _env(path, work / label / "approvals.db")
        _create(python, envs[label])  # migrate and warm the bytecode cache
        _run(python, envs[label], ["list"])
    times: dict[tuple[str, str], list[float]] = {}
    cpus: dict[tuple[str, str], list[float]] = {}
    modules: dict[tuple[str, str], int] = {}
    heavy: dict[tuple[str, str], list[str]] = {}
    rounds = [(v, c) for v in variants for c in COMMANDS]
    for (label, python, _), cmd in rounds:
        args = [a.format(id=_create(python, envs[label])) for a in COMMANDS[cmd]]
        _, _, err = _run(python, envs[label], args, "-X", "importtime")
        modules[label, cmd] = len(_IMPORT_LINE.findall(err))
        heavy[label, cmd] = sorted({m.split(".")[0] for m in _IMPORT_LINE.findall(err)}
                                   & {"pydantic", "rich", "sqlite_utils", "click"})
    for _ in range(opts.runs):
        random.shuffle(rounds)
        for (label, python, _), cmd in rounds:
            args = [a.format(id=_create(python, envs[label])) if "{id}" in a else a
                    for a in COMMANDS[cmd]]
            elapsed, cpu, _ = _run(python, envs[label], args)
            times.setdefault((label, cmd), []).append(elapsed * 1000)
            cpus.setdefault((label, cmd), []).append(cpu * 1000)
    print(f"{opts.runs} interleaved runs per cell; wall ms median / p90, CPU ms median "
          "(user + system of the child) (modules imported, "
          "and which of pydantic, rich, sqlite_utils, click)")
    print("| command | " + " | ".join(v[0] for v in variants) + " |")
    print("| --- |" + " ---: |" * len(variants))
    for cmd in COMMANDS:
        cells = []
        for label, _, _ in variants:
            t = sorted(times[label, cmd])
            p90 = t[min(len(t) - 1, int(len(t) * 0.9))]
            cpu = statistics.median(cpus[label, cmd])
            cells.append(f"{statistics.median(t):.0f} / {p90:.0f}, CPU {cpu:.0f} "
                         f"({modules[label, cmd]} modules"
                         + "".join(f", {m}" for m in heavy[label, cmd]) + ")")
        print(f"| `{cmd}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
