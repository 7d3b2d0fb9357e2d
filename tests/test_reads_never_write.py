"""Read commands never write, and database faults are exit 6 with one line (issue #12.3).

Real processes on a real SQLite file: another process holding a write transaction, a full
file system (a small tmpfs), a read-only mount. Every command answers with its documented
exit code and never prints a traceback; `audit verify` never reports tampering (exit 1) for
a fault of the environment.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import env_for

pytestmark = pytest.mark.slow

READS = ["list", "show {id}", "wait {id}", "stats", "audit verify",
         "audit list", "keys list", "notify list", "migrate --list"]
WRITES = ["request deploy", "approve {pending}", "keys create --name k2 --role user"]


def approvalctl(db: Path, args: str, user: str = "operator") -> subprocess.CompletedProcess:
    env = env_for(db)
    env["APPROVALCTL_USER"] = user
    return subprocess.run(["approvalctl", *args.split()], env=env, capture_output=True,
                          text=True, timeout=120)


def run_all(db: Path, commands: list[str], ids: dict[str, str]
            ) -> dict[str, subprocess.CompletedProcess]:
    with ThreadPoolExecutor(2) as pool:
        done = pool.map(lambda c: approvalctl(db, c.format(**ids)), commands)
        return dict(zip(commands, done))


def seed(db: Path) -> dict[str, str]:
    """An approved request, a pending one, an overdue pending one, and a key."""
    def made(args: str) -> str:
        result = approvalctl(db, args, user="deploy-bot")
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    ids = {"id": made("request git_push"), "pending": made("request deploy"),
           "overdue": made("request rm --ttl 1s")}
    assert approvalctl(db, f"approve {ids['id']}").returncode == 0
    assert approvalctl(db, "keys create --name k1 --role user").returncode == 0
    return ids


def assert_no_traceback(results: dict[str, subprocess.CompletedProcess]) -> None:
    for cmd, r in results.items():
        assert "Traceback" not in r.stderr + r.stdout, (cmd, r.stderr)


def assert_exit_6_one_line(results: dict[str, subprocess.CompletedProcess], *words: str
                           ) -> None:
    assert_no_traceback(results)
    for cmd, r in results.items():
        assert r.returncode == 6, (cmd, r.returncode, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (cmd, r.stderr)
        assert all(w in lines[0] for w in words), (cmd, lines[0])


HOLDER = textwrap.dedent("""
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE metric_counters SET value = value + 0")
    print("held", flush=True)
    sys.stdin.read()  # until the test closes our stdin
""")


@contextlib.contextmanager
def write_lock_held(db: Path) -> Iterator[None]:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"  # type: ignore[union-attr]
        yield
    finally:
        holder.stdin.close()  # type: ignore[union-attr]
        holder.wait(timeout=30)
        holder.stdout.close()  # type: ignore[union-attr]


def test_reads_answer_while_another_process_holds_the_write_lock(tmp_path):
    db = tmp_path / "approvals.db"
    ids = seed(db)
    with write_lock_held(db):
        results = run_all(db, READS + ["wait {overdue}", "show {overdue}"], ids)
        locked_write = approvalctl(db, "request deploy")
    assert_no_traceback(results)
    for cmd, r in results.items():
        expected = 11 if cmd == "wait {overdue}" else 0  # overdue: expired, not a hang
        assert r.returncode == expected, (cmd, r.returncode, r.stderr)
    assert "approved" in results["wait {id}"].stderr
    assert "intact" in results["audit verify"].stderr
    # Writes wait busy_timeout for the lock, then say what holds them up.
    assert_exit_6_one_line({"request": locked_write}, "locked by another process")
    # Nothing the reads did was written meanwhile, and the database is whole.
    assert approvalctl(db, "audit verify").returncode == 0


def mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mount_tmpfs(mnt, "1m")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_exit_6_naming_the_disk_for_every_command(small_fs):
    db = small_fs / "approvals.db"
    ids = seed(db)
    filler = small_fs / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    results = run_all(db, READS + WRITES, ids)
    assert_exit_6_one_line(results, "disk is full")
    filler.unlink()
    after = approvalctl(db, "audit verify")  # the fault left nothing half-written
    assert after.returncode == 0 and "intact" in after.stderr


def test_a_read_only_database_serves_reads_and_refuses_writes(small_fs):
    db = small_fs / "approvals.db"
    ids = seed(db)
    remount = subprocess.run(["mount", "-o", "remount,ro", str(small_fs)],
                             capture_output=True, text=True)
    if remount.returncode != 0:
        pytest.skip(f"cannot remount read-only: {remount.stderr.strip()}")
    results = run_all(db, READS, ids)
    assert_no_traceback(results)
    for cmd, r in results.items():
        assert r.returncode == 0, (cmd, r.returncode, r.stderr)
    assert_exit_6_one_line(run_all(db, WRITES, ids), "read-only")
