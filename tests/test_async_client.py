"""`AsyncClient`, `Client.from_env` and `require_approval` on `async def`, against a real
server; the operator decides from another thread through the sync Client."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time

import pytest

from approvalctl import errors
from approvalctl.client import ApprovalDenied, AsyncClient, Client, require_approval


def decide_when_it_appears(ops: Client, tool: str, action: str, note: str | None = None):
    def run() -> None:
        for _ in range(400):
            items = ops.list(tool_name=tool).items
            if items:
                ops.decide(items[0].id, action, note)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_async_def_stays_a_coroutine_and_never_blocks_the_loop(live):
    ran: list[tuple] = []
    ticks = 0

    async def main() -> str:
        nonlocal ticks
        async with AsyncClient(live.url, live.keys["user"]) as client:
            @require_approval(client, "deploy", timeout=30)
            async def deploy(env: str, replicas: int = 2) -> str:
                ran.append((env, replicas))
                return f"deployed {env}"

            assert inspect.iscoroutinefunction(deploy)
            thread = decide_when_it_appears(live.client("operator"), "deploy", "approve")
            task = asyncio.ensure_future(deploy("prod"))
            while not task.done():  # the loop keeps running while the decorator waits
                ticks += 1
                await asyncio.sleep(0.01)
            thread.join()
            return await task

    assert asyncio.run(main()) == "deployed prod"
    assert ran == [("prod", 2)]
    assert ticks > 1
    req = live.client("operator").list(tool_name="deploy", status="all").items[0]
    assert req.arguments == {"env": "prod", "replicas": 2} and req.consumed_at


@pytest.mark.parametrize("on_deny", ["raise", "return"])
def test_async_rejection_raises_or_returns_none_and_never_runs(live, on_deny):
    async def main():
        async with AsyncClient(live.url, live.keys["user"]) as client:
            @require_approval(client, "drop_table", timeout=30, on_deny=on_deny)
            async def drop_table(name: str) -> str:
                raise AssertionError("must not run")

            thread = decide_when_it_appears(live.client("operator"), "drop_table", "reject",
                                            "not today")
            try:
                return await drop_table("users")
            finally:
                thread.join()

    if on_deny == "raise":
        with pytest.raises(ApprovalDenied) as info:
            asyncio.run(main())
        assert "rejected by olivia: not today" in info.value.detail
    else:
        assert asyncio.run(main()) is None


def test_sync_on_deny_return_gives_none(live):
    @require_approval(live.client("user"), "rm", timeout=30, on_deny="return")
    def rm(path: str) -> str:
        raise AssertionError("must not run")

    thread = decide_when_it_appears(live.client("operator"), "rm", "reject")
    assert rm("/") is None
    thread.join()


def test_async_wait_timing_out_withdraws_the_request(live):
    async def main():
        async with AsyncClient(live.url, live.keys["user"]) as client:
            @require_approval(client, "slow", timeout=0.5)
            async def slow() -> None:
                raise AssertionError("must not run")

            await slow()

    with pytest.raises(ApprovalDenied) as info:
        asyncio.run(main())
    assert info.value.exit_code == 124 and info.value.request.status == "cancelled"


def test_async_def_needs_an_async_client_and_on_deny_is_checked(live):
    with pytest.raises(errors.InvalidInput, match="AsyncClient"):
        @require_approval(live.client("user"))
        async def f() -> None: ...
    with pytest.raises(errors.InvalidInput, match="on_deny"):
        require_approval(live.client("user"), on_deny="ignore")


def test_async_client_unreachable_is_unavailable():
    async def main():
        async with AsyncClient("http://127.0.0.1:9", "k") as client:
            await client.get("01hzzzzzzzzzzzzzzzzzzzzzzz")

    with pytest.raises(errors.Unavailable, match="cannot reach"):
        asyncio.run(main())


def test_from_env_reads_the_environment_then_the_config_file(live, monkeypatch, tmp_path):
    with pytest.raises(errors.InvalidInput, match="APPROVALCTL_SERVER"):
        Client.from_env()
    monkeypatch.setenv("APPROVALCTL_SERVER", live.url)
    with pytest.raises(errors.Unauthenticated, match="APPROVALCTL_API_KEY"):
        Client.from_env()
    monkeypatch.setenv("APPROVALCTL_API_KEY", live.keys["user"])
    with Client.from_env() as client:
        assert client.create("x").user_id == "agent-bot"  # the user key's owner
    monkeypatch.delenv("APPROVALCTL_SERVER")
    monkeypatch.delenv("APPROVALCTL_API_KEY")
    from approvalctl.config import config_path

    config_path().parent.mkdir(parents=True, exist_ok=True)
    config_path().write_text(f"server: {live.url}\napi_key: {live.keys['user']}\n")

    async def main():
        async with AsyncClient.from_env() as client:
            return await client.create("y")

    assert asyncio.run(main()).tool_name == "y"


def test_an_async_gate_cancelled_while_waiting_withdraws_its_request(live):
    """A task cancelled mid-wait (asyncio.wait_for, a shutdown) withdraws the request, so
    nobody is left to approve a call that will never be made."""
    ops = live.client("operator")

    async def main() -> None:
        async with AsyncClient(live.url, live.keys["user"]) as client:
            @require_approval(client, "deploy_cancelled", timeout=30)
            async def deploy() -> str:
                return "ran"

            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(deploy(), 1.0)

    asyncio.run(main())
    done = ops.list(status="all", tool_name="deploy_cancelled").items
    assert [r.status for r in done] == ["cancelled"]
