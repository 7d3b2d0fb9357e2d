"""`review` and `watch` are live through change notification, not by polling `list` (issues
#13, #14): requests created and decided by other processes appear and leave, remotely (the
event stream of a real `serve` process on 127.0.0.1, across a restart of it) and locally
(the database's change marker, on SQLite and PostgreSQL); and an idle queue makes no `list`
call at all (counted by the queue, and by the server's own request counter).

Every bound below (GUARD) is a hang guard, not a speed claim.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from conftest import env_for, free_port, installed, quit_with_ctrl_c

pytest.importorskip("textual")

from approvalctl.cli.app import LocalBackend  # noqa: E402
from approvalctl.cli.review import LiveQueue, build_app  # noqa: E402
from approvalctl.client import Client  # noqa: E402
from approvalctl.models import Principal  # noqa: E402

GUARD = 15.0
ADMIN = Principal("test-admin", "admin", local=True)
IDLE = 2.5  # seconds a queue sits idle; the old queue polled `list` every second
SIZE = (80, 24)


def cli(db: str, *args: str) -> str:
    """Run the CLI in another process on `db`, as the agent `deploy-bot`; its stdout."""
    done = subprocess.run([sys.executable, "-m", "approvalctl", *args],
                          env={**env_for(db), "APPROVALCTL_USER": "deploy-bot"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def list_calls(url: str) -> float:
    """GET /api/v1/approvals served so far, from the server's own request counter."""
    text = httpx.get(url + "/metrics", timeout=GUARD).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("approvalctl_http_requests_total{") and \
                'route="/api/v1/approvals"' in line and 'method="GET"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def serve(db: str, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "approvalctl", "serve", "--port", str(port),
                             "--sweep-interval", "3600"], env=env_for(db),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"serve did not start: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(2)
        try:
            proc.wait(GUARD)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


async def until(pilot: Any, check: Any, what: str) -> None:
    deadline = time.monotonic() + GUARD
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)


def ids(app: Any) -> list[str]:
    return [r.id for r in app.pending]


async def created_decided_elsewhere(app: Any, pilot: Any, queue: LiveQueue, db: str,
                                    then_idle: bool = True) -> None:
    """The shared script: a request made by another process appears; opened, it is decided
    by another process, so it leaves and its screen closes; then the queue sits idle."""
    await pilot.pause()
    assert app.pending == []
    rid = cli(db, "request", "git_push", "--reason", "release")
    await until(pilot, lambda: ids(app) == [rid], "the new request to appear")
    await pilot.press("enter")
    await pilot.pause()
    assert hasattr(app.screen, "req") and app.screen.req.id == rid
    cli(db, "approve", rid)
    await until(pilot, lambda: ids(app) == [], "the request decided elsewhere to leave")
    await until(pilot, lambda: not hasattr(app.screen, "req"), "its screen to close")
    if then_idle:
        reads = queue.reads
        await pilot.pause(IDLE)
        assert queue.reads == reads, "the queue was re-read by polling"


@pytest.mark.parametrize("backend_kind", ["sqlite", "postgres"])
def test_local_review_follows_other_processes_without_polling(service, operator, db_url):
    queue = LiveQueue(LocalBackend(service, operator))
    app = build_app(queue.backend, queue=queue)

    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await created_decided_elsewhere(app, pilot, queue, db_url)

    asyncio.run(main())
    # the first screen's, then one per change that touched a request (locally the change
    # check says *that* something changed, the re-read says what)
    assert queue.reads == 3


@pytest.mark.parametrize("backend_kind", ["sqlite"])
def test_remote_review_follows_the_event_stream_across_a_restart(service, db_url):
    operator_key, _ = service.create_key(ADMIN, "olivia", "operator")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = serve(db_url, port)
    client = Client(url, operator_key, timeout=GUARD)
    queue = LiveQueue(client)
    app = build_app(client, queue=queue)

    async def main() -> None:
        nonlocal server
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: queue.reads == 2, "the stream to open")
            before = list_calls(url)
            await created_decided_elsewhere(app, pilot, queue, db_url)
            assert queue.reads == 2  # the events carry the requests: nothing re-read
            # the server saw one `list` while requests came and went and while idle: the
            # requester's history, when the request was opened
            assert list_calls(url) == before + 1
            stop(server)  # restart: a request made meanwhile still shows up
            rid = cli(db_url, "request", "db_migrate")
            server = serve(db_url, port)
            await until(pilot, lambda: ids(app) == [rid], "the request made while down")
            assert queue.reads >= 3  # re-read when the stream was reopened

    try:
        asyncio.run(main())
    finally:
        client.close()
        stop(server)


@pytest.mark.slow
@pytest.mark.parametrize("backend_kind", ["sqlite"])
def test_installed_watch_with_a_server_never_polls_list(service, db_url, tmp_path):
    """`approvalctl watch --server` in a real terminal: another process's request shows, its
    decision elsewhere removes it; the server answers no `list` after the first screen."""
    pexpect = pytest.importorskip("pexpect")
    viewer_key, _ = service.create_key(ADMIN, "vera", "viewer")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = serve(db_url, port)
    env = {"TERM": "xterm-256color", "HOME": str(tmp_path), "APPROVALCTL_API_KEY": viewer_key,
           "PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin"}
    child = pexpect.spawn(installed(), ["watch", "--server", url], env=env,
                          encoding="utf-8", timeout=GUARD, dimensions=(24, 100),
                          cwd=str(tmp_path))
    try:
        child.expect(r"pending requests: 0")
        time.sleep(0.5)  # the stream opens (and re-reads the queue once) after the screen
        before = list_calls(url)
        rid = cli(db_url, "request", "lint_code", "--reason", "tidy")
        child.expect(r"pending requests: 1")
        child.expect("lint_code")
        cli(db_url, "reject", rid)
        child.expect(r"pending requests: 0")
        time.sleep(IDLE)
        assert list_calls(url) == before
        assert before >= 2  # the counter counts: the first screen's list and the re-read
        quit_with_ctrl_c(child)
    finally:
        if child.isalive():
            child.terminate(force=True)
        stop(server)


@pytest.mark.parametrize("backend_kind", ["sqlite"])
def test_a_long_queue_is_laid_out_in_full_and_changed_in_place(service, operator, db_url):
    """More rows than the first screen lays out: all arrive right after it; a request
    decided in the middle leaves, a new one is appended, the rest keep their place."""
    from approvalctl.cli.review import FIRST_ROWS

    agent = Principal("deploy-bot", "user")
    made = [service.create(agent, "deploy", {"n": i}).id for i in range(FIRST_ROWS + 10)]
    queue = LiveQueue(LocalBackend(service, operator))
    app = build_app(queue.backend, queue=queue)

    def table_ids() -> list[str]:
        return [str(k.value) for k in app.table.rows]

    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: table_ids() == made, "every row to be laid out")
            cli(db_url, "approve", made[5])
            newer = cli(db_url, "request", "git_push")
            want = made[:5] + made[6:] + [newer]
            await until(pilot, lambda: table_ids() == want, "the queue to change in place")
            assert ids(app) == want

    asyncio.run(main())


@pytest.mark.parametrize("backend_kind", ["sqlite"])
def test_a_queue_cut_at_its_limit_stays_what_a_fresh_list_would_show(service, operator):
    agent = Principal("deploy-bot", "user")
    one, two, three = (service.create(agent, "deploy", {"n": i}) for i in range(3))
    pending = LiveQueue(LocalBackend(service, operator), 2)
    assert [r.id for r in pending.read()] == [one.id, two.id]
    newest = LiveQueue(LocalBackend(service, operator), 2, status="all")
    assert [r.id for r in newest.read()] == [three.id, two.id]
    four = service.create(agent, "deploy", {"n": 4})
    assert pending.apply(four)  # beyond the two oldest: not a row, but kept as the newest
    assert [r.id for r in pending.rows()] == [one.id, two.id]
    assert [r.id for r in pending.beyond()] == [four.id]
    assert newest.apply(four) and [r.id for r in newest.rows()] == [four.id, three.id]
    done = service.decide(operator, one.id, "approve")
    assert pending.apply(done)  # leaves; the gap is filled by a fresh read
    assert [r.id for r in pending.rows()] == [two.id, three.id]
    assert [r.id for r in pending.beyond()] == [four.id]  # still newer than both
    assert pending.apply(service.decide(operator, four.id, "reject", "no"))  # leaves
    assert pending.beyond() == [] and newest.beyond() == []
    assert newest.apply(done) is False  # older than the two newest: not shown
    assert [r.id for r in newest.rows()] == [four.id, three.id]


@pytest.mark.parametrize("backend_kind", ["sqlite", "postgres"])
def test_a_full_local_queue_follows_the_newest_beyond_it(service, operator, db_url):
    """A pending queue holding only its `limit` oldest: a request made by another process
    after it is full is kept `beyond` it (what `watch` shows and rings for); decided
    elsewhere, it leaves."""
    import threading

    agent = Principal("deploy-bot", "user")
    for i in range(3):
        service.create(agent, "deploy", {"n": i})
    queue = LiveQueue(LocalBackend(service, operator), 2)
    queue.read()
    stop = threading.Event()
    errors: list[Any] = []
    follower = threading.Thread(target=queue.follow, args=(lambda rows: None, errors.append,
                                                           stop), daemon=True)
    follower.start()
    try:
        rid = cli(db_url, "request", "db_wipe", "--risk", "high")
        deadline = time.monotonic() + GUARD
        while [r.id for r in queue.beyond()] != [rid]:
            assert time.monotonic() < deadline and not errors, "the newest was not kept"
            time.sleep(0.05)
        assert queue.beyond()[0].risk == "high" and len(queue.rows()) == 2
        cli(db_url, "reject", rid)
        while queue.beyond():
            assert time.monotonic() < deadline + GUARD and not errors, "it did not leave"
            time.sleep(0.05)
    finally:
        stop.set()
        follower.join(GUARD)


@pytest.mark.parametrize("backend_kind", ["postgres"])
def test_local_review_on_postgresql_survives_its_listener_being_killed(service, operator,
                                                                       db_url, raw_db):
    """The LISTEN connection of a local review is killed; a request made while it is away
    still shows (it listens again and catches up from the audit trail)."""
    queue = LiveQueue(LocalBackend(service, operator))
    app = build_app(queue.backend, queue=queue)

    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: queue.listener_pid is not None, "the listener")
            old = queue.listener_pid
            raw_db.execute("SELECT pg_terminate_backend(%s)", (old,))
            rid = cli(db_url, "request", "git_push")
            await until(pilot, lambda: ids(app) == [rid], "the request made meanwhile")
            await until(pilot, lambda: queue.listener_pid not in (None, old),
                        "the listener to reconnect")

    asyncio.run(main())


@pytest.mark.slow
@pytest.mark.parametrize("backend_kind", ["sqlite"])
def test_ctrl_c_on_the_first_screen_gives_the_terminal_back(service, db_url, tmp_path):
    """Ctrl-C as soon as the queue is drawn (before or while Textual loads, or after):
    the command ends and leaves the alternate screen with the cursor shown."""
    pexpect = pytest.importorskip("pexpect")
    agent = Principal("deploy-bot", "user")
    for i in range(30):
        service.create(agent, "deploy", {"n": i})
    child = pexpect.spawn(installed(), ["review", "--db", db_url], encoding="utf-8",
                          timeout=GUARD, dimensions=(24, 80), cwd=str(tmp_path),
                          env={"TERM": "xterm-256color", "PATH": "/usr/bin:/bin",
                               "HOME": str(tmp_path)})
    child.logfile_read = seen = io.StringIO()
    child.expect("30 pending")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    out = seen.getvalue()
    assert child.exitstatus in (0, 130), out[-300:]
    assert "Traceback" not in out
    assert out.rfind("\x1b[?1049l") > out.rfind("\x1b[?1049h") >= 0
    assert out.rfind("\x1b[?25h") > out.rfind("\x1b[?25l")


def detail(app: Any) -> str:
    """The text of the open request's screen."""
    from textual.widgets import Static

    return str(app.screen.query_one("#detail", Static).render())


async def counted_elsewhere(app: Any, pilot: Any, db: str, rid: str) -> None:
    """The shared script of a quorum: a request needing 3 approvals is open at "0 of 3";
    another process approves it once (it stays pending), then raises the requirement to 4:
    the open screen and the queue follow both without a key press."""
    await until(pilot, lambda: ids(app) == [rid], "the request to show")
    assert app.counts[rid] == "0 of 3"
    await pilot.press("enter")
    await pilot.pause()
    assert app.screen.req.id == rid and "0 of 3" in detail(app)
    cli(db, "approve", rid)  # the local OS account: one approval of three
    await until(pilot, lambda: "1 of 3 (" in detail(app), "the screen to count the approval")
    assert app.screen.req.id == rid  # still pending: the screen stays open
    await until(pilot, lambda: app.counts[rid] == "1 of 3", "the queue to count it")
    cli(db, "require", rid, "4")
    await until(pilot, lambda: "1 of 4 (" in detail(app), "the screen to show 4 required")
    await until(pilot, lambda: app.counts[rid] == "1 of 4", "the queue to show 4 required")


@pytest.mark.parametrize("backend_kind", ["sqlite", "postgres"])
def test_local_review_follows_a_quorum_counted_elsewhere(service, operator, db_url):
    req = service.create(Principal("deploy-bot", "user"), "db_migrate", {"to": 42})
    service.require_approvals(operator, req.id, 3)
    queue = LiveQueue(LocalBackend(service, operator))
    app = build_app(queue.backend, queue=queue)

    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await counted_elsewhere(app, pilot, db_url, req.id)

    asyncio.run(main())


@pytest.mark.parametrize("backend_kind", ["sqlite"])
def test_remote_review_follows_a_quorum_counted_elsewhere(service, operator, db_url):
    """Over the event stream: a partial approval and a raised requirement arrive as `quorum`
    events carrying the count, so nothing is re-read."""
    req = service.create(Principal("deploy-bot", "user"), "db_migrate", {"to": 42})
    service.require_approvals(operator, req.id, 3)
    operator_key, _ = service.create_key(ADMIN, "olivia", "operator")
    port = free_port()
    server = serve(db_url, port)
    client = Client(f"http://127.0.0.1:{port}", operator_key, timeout=GUARD)
    queue = LiveQueue(client)
    app = build_app(client, queue=queue)

    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: queue.reads == 2, "the stream to open")
            await counted_elsewhere(app, pilot, db_url, req.id)
            assert queue.reads == 2  # the events carried the counts

    try:
        asyncio.run(main())
    finally:
        client.close()
        stop(server)
