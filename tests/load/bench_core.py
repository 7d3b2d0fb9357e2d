"""Benchmark of the core CLI on SQLite: how `list`, `show`, `approve`, `sweep` and `stats`
scale with the number of stored requests (issue 2, "Speed"; figures in docs/benchmarks.md).

    python tests/load/bench_core.py [--sizes 1000,100000,1000000] [--runs 10]

For each size it builds (once, cached under /tmp/approvalctl-bench, ~4 minutes for a
million rows on two cores) a database the way the tool would have left it: migrated by the
real store, then bulk-loaded with requests in a realistic mix of statuses spread over 30
days, the hash-chained audit rows that go with them (`audit verify` passes) and the matching
metric counters. Each benchmark works on a copy, so the cache stays pristine.

Timings are of real subprocesses of the installed `approvalctl` console script, interpreter
start included: median and p95 wall time of N runs after one warm-up run, and the median
CPU time (user + system) of the child, which other jobs on the machine do not inflate.
`approve` decides a fresh pending request each run. `stats` runs with the default 24 h
window and with `--since 31d`, where every row is inside the window. `sweep` expires 100,000
overdue requests (a fresh copy each run), once as a two-day backlog and once scattered over
30 days of history, and checks that `audit verify` still passes afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from approvalctl import audit, counters  # noqa: E402
from approvalctl.digest import digest  # noqa: E402
from approvalctl.store import open_store  # noqa: E402
from approvalctl.store.sql import AUDIT_COLUMNS, REQUEST_COLUMNS  # noqa: E402

CACHE = Path(os.environ.get("APPROVALCTL_BENCH_CACHE", "/tmp/approvalctl-bench"))
#: Bump when the generated data changes, so stale caches are rebuilt.
DATA_VERSION = 4
DAY_MS = 86_400_000
SPREAD_DAYS = 30
SWEEP_OVERDUE = 100_000
#: Backlog shapes for `sweep`, by the days over which the overdue requests were created.
SWEEP_SHAPES = {
    2: "backlog after two days without a sweep (created over the last 2 days)",
    SPREAD_DAYS: "worst case: overdue requests scattered over 30 days of history",
}
PYC = True

TOOLS = [f"tool_{name}" for name in (
    "git_push", "deploy", "db_migrate", "delete_bucket", "send_email", "rotate_keys",
    "scale_cluster", "drop_table", "transfer_funds", "shell_exec", "open_pr", "merge_pr",
    "restart_service", "update_dns", "purge_cache", "create_user", "revoke_access",
    "run_backfill", "publish_release", "terminate_instance")]
USERS = [f"agent-{i:02d}" for i in range(50)]
OPERATORS = ["olivia", "omar", "oona"]
RISKS = ("low", "medium", "high")

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


# ---------------------------------------------------------------- data
def ulid(ms: int, rand: int) -> str:
    """The same id format as approvalctl.models.new_id, for a chosen time."""
    value = (ms << 80) | (rand & ((1 << 80) - 1))
    out = []
    for _ in range(26):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


def iso(ms: int) -> str:
    """approvalctl.models.to_iso for epoch milliseconds, without building datetimes."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def generate(n: int, now_ms: int, rng: random.Random, *, overdue: int = 0,
             overdue_days: int = SPREAD_DAYS, pending_min: int = 500) -> list[tuple]:
    """`n` requests over the last 30 days plus `overdue` pending ones already past expiry,
    created over the last `overdue_days` days.

    The newest ~1 % (at least `pending_min`) are pending and far from expiry: what an
    operator's queue looks like. The rest: 60 % approved, 15 % rejected, 20 % expired,
    5 % cancelled.
    """
    n_pending = min(n, max(pending_min, n // 100))
    start = now_ms - SPREAD_DAYS * DAY_MS
    times = sorted(rng.randrange(start, now_ms - 3_600_000) for _ in range(n - n_pending))
    times += sorted(rng.randrange(now_ms - 3_600_000, now_ms - 1000) for _ in range(n_pending))
    rows: list[tuple] = []
    for i, created in enumerate(times):
        pending = i >= n - n_pending
        rows.append(_row(created, rng, "pending" if pending else _final(rng), now_ms,
                         ttl_ms=30 * DAY_MS if pending else 3_600_000))
    for _ in range(overdue):
        created = rng.randrange(now_ms - overdue_days * DAY_MS, now_ms - 2 * 3_600_000)
        rows.append(_row(created, rng, "pending", now_ms, ttl_ms=3_600_000))
    rows.sort(key=lambda r: r[0])
    return rows


def _final(rng: random.Random) -> str:
    x = rng.random()
    return ("approved" if x < 0.60 else "rejected" if x < 0.75 else "expired" if x < 0.95
            else "cancelled")


def _row(created: int, rng: random.Random, status: str, now_ms: int, ttl_ms: int) -> tuple:
    """One row in REQUEST_COLUMNS order, plus response_ms."""
    rid = ulid(created, rng.getrandbits(79))
    user = rng.choice(USERS)
    tool = rng.choice(TOOLS)
    expires = created + ttl_ms
    decided_at = decided_by = note = response_ms = None
    if status in ("approved", "rejected"):
        response_ms = min(int(rng.expovariate(1 / 90_000)), ttl_ms - 1)
        decided_at, decided_by = iso(created + response_ms), rng.choice(OPERATORS)
        note = "looks fine" if status == "approved" and rng.random() < 0.2 else None
    elif status == "expired":
        decided_at = iso(expires)
    elif status == "cancelled":
        decided_at, decided_by = iso(created + rng.randrange(1000, ttl_ms)), user
    arguments = json.dumps({"target": f"prod-{rng.randrange(40)}", "dry_run": False,
                            "ticket": f"OPS-{rng.randrange(10_000)}"}, sort_keys=True)
    use_by = iso(created + response_ms + 900_000) if status == "approved" else None
    return (rid, tool, arguments, f"{tool[5:].replace('_', ' ')} requested by {user} for a "
            f"scheduled change", rng.choice(RISKS), user, status, iso(created), iso(expires),
            decided_at, decided_by, note, digest(tool, json.loads(arguments)), use_by,
            None, response_ms)


def audit_rows(rows: list[tuple]) -> tuple[list[tuple], list[counters.Counter]]:
    """The hash-chained audit trail (and counter deltas) that would have produced `rows`."""
    events = []  # (at, order, request row, action)
    for r in rows:
        events.append((r[7], 0, r, "create"))
        status = r[6]
        if status != "pending":
            action = {"approved": "approve", "rejected": "reject", "expired": "expire",
                      "cancelled": "cancel"}[status]
            events.append((r[9], 1, r, action))
    events.sort(key=lambda e: (e[0], e[1]))
    out, deltas, digests = [], [], {}
    prev = audit.GENESIS
    for seq, (at, _, r, action) in enumerate(events, start=1):
        state = list(r[:15])  # the request row as this change left it (STATE_FIELDS order)
        digests.setdefault(r[0], r[12])
        if action == "create":
            state[6], state[9], state[10], state[11], state[13] = "pending", None, None, None, \
                None
            actor, frm, to = r[5], None, "pending"
            detail = {"risk": r[4], "tool_name": r[1], "user_id": r[5]}
            deltas.extend(counters.for_status("pending"))
        else:
            frm, to = "pending", r[6]
            actor = {"expire": "system"}.get(action) or r[10]
            detail = ({"expires_at": r[8]} if action == "expire"
                      else {"note": r[11]} if r[11] else {})
            seconds = (r[-1] or 0) / 1000
            deltas.extend(counters.for_decision(to, seconds))
        row = {"seq": seq, "at": at, "actor": actor, "action": action, "request_id": r[0],
               "from_status": frm, "to_status": to,
               "detail": json.dumps(detail, sort_keys=True, ensure_ascii=False),
               "format": audit.FORMAT, "digest": digests[r[0]],
               "state": audit.state_hash(state)}
        if action != "create":
            del digests[r[0]]
        row["prev_hash"] = prev
        row["hash"] = prev = audit.row_hash(prev, row)
        out.append(tuple(row[c] for c in AUDIT_COLUMNS))
        if len(deltas) > 50_000:
            deltas = counters.merge(deltas)
    return out, counters.merge(deltas)


def build(path: Path, n: int, *, overdue: int = 0, overdue_days: int = SPREAD_DAYS,
          seed: int = 2) -> None:
    """Migrate an empty database with the real store, then bulk-load it."""
    t0 = time.perf_counter()
    tmp = path.with_suffix(".building")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        p.unlink(missing_ok=True)
    open_store(str(tmp)).close()
    now_ms = int(time.time() * 1000)
    rng = random.Random(seed)
    rows = generate(n, now_ms, rng, overdue=overdue, overdue_days=overdue_days)
    trail, deltas = audit_rows(rows)
    conn = sqlite3.connect(tmp, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    conn.executemany(f"INSERT INTO requests ({', '.join(REQUEST_COLUMNS)}, response_ms) "
                     f"VALUES ({', '.join('?' * (len(REQUEST_COLUMNS) + 1))})", rows)
    conn.executemany(f"INSERT INTO audit_log ({', '.join(AUDIT_COLUMNS)}) VALUES "
                     f"({', '.join('?' * len(AUDIT_COLUMNS))})", trail)
    conn.executemany("INSERT INTO metric_counters (name, labels, value) VALUES (?, ?, ?)",
                     deltas)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    tmp.replace(path)
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    print(f"  built {path.name}: {n:,} requests + {overdue:,} overdue, {len(trail):,} audit "
          f"rows, {path.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)


def cached(n: int, *, overdue: int = 0, overdue_days: int = SPREAD_DAYS,
           rebuild: bool = False) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    extra = f"-overdue{overdue}-{overdue_days}d" if overdue else ""
    path = CACHE / f"v{DATA_VERSION}-{n}{extra}.db"
    if rebuild or not path.exists():
        build(path, n, overdue=overdue, overdue_days=overdue_days)
    return path


def working_copy(src: Path, name: str) -> Path:
    dst = CACHE / "work" / name
    dst.parent.mkdir(exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{dst}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(src, dst)
    return dst


# ---------------------------------------------------------------- measuring
def find_exe(explicit: str | None) -> str:
    """The installed console script; a pyenv shim is resolved to the script it runs."""
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "approvalctl"
    return str(beside) if beside.exists() else (shutil.which("approvalctl") or "approvalctl")


def child_env(db: Path) -> dict[str, str]:
    """The environment of a measured run: this checkout first on the path, and bytecode
    caching on (as after any normal install) even where PYTHONDONTWRITEBYTECODE is set;
    the cache goes under CACHE, not into the source tree."""
    env = dict(os.environ, APPROVALCTL_DB=str(db), NO_COLOR="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if PYC:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(CACHE / "pycache")
    return env


def run(exe: str, db: Path, *args: str, expect: int = 0) -> tuple[float, float]:
    env = child_env(db)
    before = _child_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run([exe, *args], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != expect:
        raise SystemExit(f"approvalctl {' '.join(args)} exited {proc.returncode}: "
                         f"{proc.stderr.decode()[-500:]}")
    return elapsed, _child_cpu() - before


def _child_cpu() -> float:
    """User + system CPU seconds of finished children: unlike wall time, not inflated when
    other processes compete for the CPUs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return statistics.median(ordered), p95


def pending_ids(db: Path, count: int) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute(
            "SELECT id FROM requests WHERE status = 'pending' AND expires_at > ? "
            "ORDER BY id DESC LIMIT ?", (iso(int(time.time() * 1000)), count))]
    finally:
        conn.close()


def any_decided_id(db: Path, rng: random.Random) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        n = conn.execute("SELECT MAX(rowid) FROM requests").fetchone()[0]
        out = []
        while len(out) < 20:
            row = conn.execute("SELECT id FROM requests WHERE rowid = ? AND status != "
                               "'pending'", (rng.randrange(1, n + 1),)).fetchone()
            if row:
                out.append(row[0])
        return out
    finally:
        conn.close()


def measure(label: str, runs: int, call) -> tuple[float, float, float]:
    """(median wall, p95 wall, median CPU) of `runs` calls after one warm-up call."""
    call(-1)  # warm-up: page cache, .pyc files
    samples = [call(i) for i in range(runs)]
    med, p95 = summary([w for w, _ in samples])
    cpu = statistics.median(c for _, c in samples)
    print(f"  {label:<26} wall median {med * 1000:6.0f} ms  p95 {p95 * 1000:6.0f} ms   "
          f"CPU median {cpu * 1000:6.0f} ms", file=sys.stderr)
    return med, p95, cpu


def bench_size(exe: str, n: int, runs: int, rebuild: bool
               ) -> dict[str, tuple[float, float, float]]:
    print(f"size {n:,}", file=sys.stderr)
    db = working_copy(cached(n, rebuild=rebuild), f"{n}.db")
    rng = random.Random(n)
    fresh = pending_ids(db, runs + 1)
    if len(fresh) < runs + 1:
        raise SystemExit(f"{db}: only {len(fresh)} pending requests; rebuild with --rebuild")
    decided = any_decided_id(db, rng)
    out = {}
    for label, call in [
        ("list", lambda i: run(exe, db, "list")),
        ("list --json", lambda i: run(exe, db, "list", "--json")),
        ("list --status all --user U", lambda i: run(exe, db, "list", "--status", "all",
                                                     "--user", USERS[i % len(USERS)])),
        ("show ID", lambda i: run(exe, db, "show", decided[i % len(decided)])),
        ("approve ID", lambda i: run(exe, db, "approve", fresh[i + 1])),
        ("stats", lambda i: run(exe, db, "stats", "--json")),
        ("stats --since 31d", lambda i: run(exe, db, "stats", "--since", "31d", "--json")),
    ]:
        out[label] = measure(label, runs, call)
    return out


def bench_sweep(exe: str, runs: int, rebuild: bool, overdue_days: int
                ) -> tuple[float, float, float]:
    """`approvalctl sweep` on 100k other requests plus 100k overdue ones created over the last
    `overdue_days` days; a fresh copy each run."""
    print(f"sweep of {SWEEP_OVERDUE:,} overdue requests created over {overdue_days} days",
          file=sys.stderr)
    src = cached(100_000, overdue=SWEEP_OVERDUE, overdue_days=overdue_days, rebuild=rebuild)
    samples, cpus = [], []
    for i in range(runs):
        db = working_copy(src, "sweep.db")
        env = child_env(db)
        before = _child_cpu()
        t0 = time.perf_counter()
        proc = subprocess.run([exe, "sweep", "--json"], env=env, capture_output=True,
                              check=True)
        samples.append(time.perf_counter() - t0)
        cpus.append(_child_cpu() - before)
        expired = json.loads(proc.stdout)["expired"]
        if expired != SWEEP_OVERDUE:
            raise SystemExit(f"sweep expired {expired}, expected {SWEEP_OVERDUE}")
        if i == 0:  # the trail it wrote must still verify
            run(exe, db, "audit", "verify")
        print(f"  run {i + 1}: wall {samples[-1]:.2f} s, CPU {cpus[-1]:.2f} s", file=sys.stderr)
    return statistics.median(samples), max(samples), statistics.median(cpus)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,100000,1000000",
                    help="comma-separated database sizes (requests)")
    ap.add_argument("--runs", type=int, default=10, help="timed runs per command")
    ap.add_argument("--sweep-runs", type=int, default=3)
    ap.add_argument("--exe", help="the approvalctl executable (default: the installed one)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild cached databases")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    ap.add_argument("--no-pyc", action="store_true",
                    help="leave PYTHONDONTWRITEBYTECODE as it is (no bytecode cache)")
    opts = ap.parse_args(argv)
    global PYC
    PYC = not opts.no_pyc
    sizes = [int(s.replace("_", "")) for s in opts.sizes.split(",") if s]
    exe = find_exe(opts.exe)
    print(f"approvalctl: {exe}; python {sys.version.split()[0]}; {os.cpu_count()} CPUs; "
          f"cache {CACHE}", file=sys.stderr)
    t0 = time.perf_counter()
    floor = [0.0] * opts.runs
    for i in range(-1, opts.runs):
        s = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        if i >= 0:
            floor[i] = time.perf_counter() - s
    results = {n: bench_size(exe, n, opts.runs, opts.rebuild) for n in sizes}
    sweeps = {} if opts.no_sweep else {
        days: bench_sweep(exe, opts.sweep_runs, opts.rebuild, days) for days in SWEEP_SHAPES}

    labels = list(next(iter(results.values())))
    print()
    print(f"Wall time median / p95, and median CPU time (user + system), in ms, of "
          f"`approvalctl ...` ({opts.runs} runs; load average at the end "
          f"{os.getloadavg()[0]:.1f}; `python -c pass` alone: "
          f"{summary(floor)[0] * 1000:.0f} ms)")
    print()
    print("| command | " + " | ".join(f"{n:,} rows" for n in sizes) + " |")
    print("| --- | " + " | ".join("---:" for _ in sizes) + " |")
    for label in labels:
        cells = [f"{results[n][label][0] * 1000:.0f} / {results[n][label][1] * 1000:.0f} "
                 f"(CPU {results[n][label][2] * 1000:.0f})" for n in sizes]
        print(f"| `{label}` | " + " | ".join(cells) + " |")
    if sweeps:
        print()
        print(f"`sweep` of {SWEEP_OVERDUE:,} overdue requests, 100,000 others present "
              f"({opts.sweep_runs} runs):")
        print()
        for days, sweep in sweeps.items():
            print(f"- {SWEEP_SHAPES[days]}: wall median {sweep[0]:.2f} s, worst "
                  f"{sweep[1]:.2f} s, CPU median {sweep[2]:.2f} s")
    print(f"\ntotal benchmark time {time.perf_counter() - t0:.0f} s")
    if opts.json:
        print(json.dumps({"sizes": {str(n): {k: {"median_s": v[0], "p95_s": v[1], "cpu_s": v[2]}
                                             for k, v in r.items()} for n, r in results.items()},
                          "sweep_s": {str(d): {"median": v[0], "max": v[1], "cpu": v[2]}
                                      for d, v in sweeps.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
