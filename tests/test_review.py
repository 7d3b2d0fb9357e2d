"""`approvalctl review` (issue 14): the screen driven by Textual's headless pilot over the real
service and database, and once as the installed command in a real pseudo-terminal."""

from __future__ import annotations

import asyncio
import shutil

import pytest

pytest.importorskip("textual")

from approvalctl.cli.app import LocalBackend  # noqa: E402
from approvalctl.cli.review import build_app  # noqa: E402
from approvalctl.models import Principal  # noqa: E402

AGENT = Principal("deploy-bot", "user")
SIZE = (80, 24)


def _drive(service, operator, steps):
    """Run the review app headless at 80x24 and `await steps(app, pilot)`."""
    app = build_app(LocalBackend(service, operator))

    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            await steps(app, pilot)

    asyncio.run(main())
    return app


def _detail(app) -> str:
    from textual.widgets import Static

    return str(app.screen.query_one("#detail", Static).content)


@pytest.mark.parametrize("backend_kind", ["sqlite"])
def test_approve_and_reject_with_a_reason(service, operator) -> None:
    first = service.create(AGENT, "git_push", {"branch": "main"}, reason="release")
    second = service.create(AGENT, "db_migrate", {"to": 42})

    async def steps(app, pilot) -> None:
        assert [r.id for r in app.pending] == [first.id, second.id]  # oldest first
        await pilot.press("a")  # nothing is decided from the list
        await pilot.pause()
        assert service.get(operator, first.id).status == "pending"
        await pilot.press("enter")
        await pilot.pause()
        text = _detail(app)
        assert first.id in text and '"branch": "main"' in text and first.digest in text
        # the requester's recent history, under the request
        assert "recent requests by this requester (1)" in text and second.id[:12] in text
        await pilot.press("a")
        await pilot.pause()
        assert [r.id for r in app.pending] == [second.id]
        await pilot.press("enter")
        await pilot.pause()
        assert second.id in _detail(app)
        await pilot.press("r")
        await pilot.pause()
        for ch in "not today":
            await pilot.press("space" if ch == " " else ch)
        await pilot.press("enter")
        await pilot.pause()
        assert app.pending == []

    _drive(service, operator, steps)
    assert service.get(operator, first.id).status == "approved"
    rejected = service.get(operator, second.id)
    assert (rejected.status, rejected.decision_note) == ("rejected", "not today")


@pytest.mark.parametrize("backend_kind", ["sqlite"])
def test_escape_decides_nothing_skip_moves_on_cancel(service, operator) -> None:
    req = service.create(AGENT, "deploy", {})
    other = service.create(AGENT, "deploy", {"n": 2})

    async def steps(app, pilot) -> None:
        await pilot.press("enter", "r", "x", "escape")  # the reason prompt given up
        await pilot.pause()
        assert req.id in _detail(app)
        await pilot.press("s")  # skip to the next request
        await pilot.pause()
        assert other.id in _detail(app)
        await pilot.press("c")
        await pilot.pause()

    _drive(service, operator, steps)
    assert service.get(operator, req.id).status == "pending"
    assert service.get(operator, other.id).status == "cancelled"


@pytest.mark.parametrize("backend_kind", ["sqlite"])
def test_new_requests_appear_and_decided_elsewhere_leave(service, operator) -> None:
    req = service.create(AGENT, "deploy", {})

    async def steps(app, pilot) -> None:
        await pilot.press("enter")
        await pilot.pause()
        assert req.id in _detail(app)
        service.decide(operator, req.id, "approve")  # another operator, elsewhere
        later = service.create(AGENT, "git_push", {})
        for _ in range(100):
            await pilot.pause(0.05)
            if [r.id for r in app.pending] == [later.id]:
                break
        assert [r.id for r in app.pending] == [later.id]
        await pilot.pause(0.1)
        assert not hasattr(app.screen, "req")  # the stale request's screen was closed
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("A")  # approve, and allow exactly these arguments from now on
        await pilot.pause()
        assert app.pending == []
        return later

    _drive(service, operator, steps)
    assert service.get(operator, req.id).status == "approved"  # only once, by "elsewhere"
    rules = [r["name"] for r in service.list_rules(operator)]
    assert len(rules) == 1 and rules[0].startswith("always-")


@pytest.mark.parametrize("backend_kind", ["sqlite"])
def test_hostile_strings_are_shown_escaped_never_as_markup(service, operator) -> None:
    req = service.create(AGENT, "deploy", {"x[bold]y[/]\x1b[31m": "[red]rm -rf /[/red]\u202e"},
                         reason="[link=http://evil]click[/link]\x07")

    async def steps(app, pilot) -> None:
        row = app.table.get_row(req.id)
        assert row[6].plain == "[link=http://evil]click[/link]\\x07"
        await pilot.press("enter")
        await pilot.pause()
        text = _detail(app)
        assert "x[bold]y[/]\\u001b[31m" in text
        assert "[red]rm -rf /[/red]\\u202e" in text
        assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
        await pilot.press("a")
        await pilot.pause()

    _drive(service, operator, steps)
    assert service.get(operator, req.id).status == "approved"


@pytest.mark.parametrize("backend_kind", ["sqlite"])
def test_remote_review_over_http(service, operator, make_server) -> None:
    live = make_server(sweep_interval=3600)
    req = service.create(AGENT, "deploy", {"env": "prod"})
    app = build_app(live.client("operator"))

    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            assert [r.id for r in app.pending] == [req.id]
            await pilot.press("enter")
            await pilot.pause()
            assert '"env": "prod"' in _detail(app)
            await pilot.press("r", "n", "o", "enter")
            await pilot.pause()

    asyncio.run(main())
    done = service.get(operator, req.id)
    assert (done.status, done.decision_note) == ("rejected", "no")


@pytest.mark.slow
@pytest.mark.parametrize("backend_kind", ["sqlite"])
def test_installed_review_in_a_real_terminal(service, operator, db_url, tmp_path) -> None:
    pexpect = pytest.importorskip("pexpect")
    one = service.create(AGENT, "git_push", {"n": 1})
    two = service.create(AGENT, "db_drop", {"n": 2})
    exe = shutil.which("approvalctl")
    child = pexpect.spawn(exe, ["review", "--db", db_url], encoding="utf-8", timeout=60,
                          dimensions=(24, 80), cwd=str(tmp_path),
                          env={"TERM": "xterm-256color", "PATH": "/usr/bin:/bin",
                               "HOME": str(tmp_path)})
    child.expect("2 pending")
    child.send("\r")
    child.expect("git_push")
    child.expect('"n": 1')
    child.send("a")
    child.expect("1 pending")
    child.send("\r")
    child.expect('"n": 2')
    child.send("r")
    child.expect("Reason for rejecting")
    child.send("too risky\r")
    child.expect("no pending requests")
    child.send("q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert service.get(operator, one.id).status == "approved"
    rejected = service.get(operator, two.id)
    assert (rejected.status, rejected.decision_note) == ("rejected", "too risky")
