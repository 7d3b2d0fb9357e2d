"""Per-key quotas (docs/api.md "Limits"): creation rate, pending requests, concurrent
long-polls, list page size — on a real server on 127.0.0.1, and the pending quota on both
backends, through the service, the HTTP API (two servers racing on one database) and the
local CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import env_for, free_port, stop_process, wait_http

from approvalctl.config import Settings
from approvalctl.errors import QuotaExceeded
from approvalctl.limits import Quotas
from approvalctl.models import Principal
from approvalctl.service import ApprovalService

API = "/api/v1/approvals"
OFF = {"create_rate": None, "max_pending": None, "max_waits": None,
       "max_response_bytes": None}


def quotas(**kw: object) -> Quotas:
    return Quotas(**{**OFF, **kw})  # type: ignore[arg-type]


def _assert_quota_problem(resp: httpx.Response, quota: str, key: str) -> None:
    assert resp.status_code == 429, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert int(resp.headers["Retry-After"]) >= 1
    body = resp.json()
    assert body["quota"] == quota
    assert f"quotas.{key}" in body["detail"] and "\n" not in body["detail"]


def _metric(url: str, quota: str) -> float:
    text = httpx.get(url + "/metrics").text
    line = next(x for x in text.splitlines()
                if x.startswith(f'approvalctl_quota_rejections_total{{quota="{quota}"}}'))
    return float(line.split()[-1])


# ---------------------------------------------------------------- pending, both backends
def test_pending_quota_in_the_service(store) -> None:
    service = ApprovalService(store, Settings(db="", quotas=quotas(max_pending=3)))
    agent = Principal("deploy-bot", "user")
    ids = [service.create(agent, "git_push").id for _ in range(3)]
    with pytest.raises(QuotaExceeded, match="already has 3 pending") as caught:
        service.create(agent, "git_push")
    assert caught.value.exit_code == 5 and caught.value.quota == "pending"
    assert len(service.list(agent).items) == 3  # nothing half-written
    service.create(Principal("other-bot", "user"), "git_push")  # per user
    service.cancel(agent, ids[0])
    service.create(agent, "git_push")  # room again


@pytest.mark.slow
def test_pending_quota_holds_when_two_servers_race(make_server, db_url, tmp_path: Path
                                                   ) -> None:
    """One server in this process and one `approvalctl serve` process, each with group
    commit, race 24 creates of one key: exactly the quota's worth succeed."""
    first = make_server(quotas=quotas(max_pending=5))
    config = tmp_path / "config.yaml"
    config.write_text("quotas:\n  max_pending: 5\n  create_rate: null\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "approvalctl", "serve", "--port",
                             str(port)], env=dict(env_for(db_url), APPROVALCTL_CONFIG=str(config)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    second = f"http://127.0.0.1:{port}"
    try:
        wait_http(second + "/healthz", proc, timeout=30, status=200)
        key = first.keys["user"]
        before = _metric(first.url, "pending") + _metric(second, "pending")
        barrier = threading.Barrier(24)

        def create(i: int) -> httpx.Response:
            url = first.url if i % 2 else second
            with httpx.Client(timeout=30) as client:
                barrier.wait()
                return client.post(url + API, json={"tool_name": "git_push"},
                                   headers={"X-API-Key": key})

        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(create, range(24)))
        assert sorted(r.status_code for r in answers) == [201] * 5 + [429] * 19
        for resp in answers:
            if resp.status_code == 429:
                _assert_quota_problem(resp, "pending", "max_pending")
        listed = httpx.get(first.url + API, headers={"X-API-Key": key}).json()["items"]
        assert len(listed) == 5
        assert _metric(first.url, "pending") + _metric(second, "pending") - before == 19
    finally:
        stop_process(proc)


def test_local_cli_obeys_the_pending_quota(db_url, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("quotas:\n  max_pending: 1\n")
    env = dict(env_for(db_url), APPROVALCTL_CONFIG=str(config), APPROVALCTL_USER="hook")

    def request() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["approvalctl", "request", "git_push"], env=env,
                              capture_output=True, text=True, timeout=60)

    assert request().returncode == 0
    refused = request()
    assert refused.returncode == 5
    assert refused.stderr.strip().count("\n") == 0
    assert "quotas.max_pending" in refused.stderr and "Traceback" not in refused.stderr


# ---------------------------------------------------------------- the other quotas
@pytest.mark.parametrize("backend_kind", ["sqlite"], indirect=False)
def test_creation_rate_quota(make_server) -> None:
    live = make_server(quotas=quotas(create_rate=2))
    headers = live.headers("user")
    before = _metric(live.url, "create_rate")
    with httpx.Client(base_url=live.url, headers=headers, timeout=30) as client:
        answers = [client.post(API, json={"tool_name": "git_push"}) for _ in range(5)]
        assert [r.status_code for r in answers][:2] == [201, 201]
        refused = [r for r in answers if r.status_code == 429]
        assert refused, "five creates in a burst passed a quota of two per second"
        _assert_quota_problem(refused[0], "create_rate", "create_rate")
        assert "creation quota of 2 requests per second" in refused[0].json()["detail"]
        # reads are not creations
        assert all(client.get(API).status_code == 200 for _ in range(5))
        # another key has its own allowance
        other = client.post(API, json={"tool_name": "git_push"},
                            headers={"X-API-Key": live.key("other-bot", "user")})
        assert other.status_code == 201
    assert _metric(live.url, "create_rate") - before == len(refused)


@pytest.mark.parametrize("backend_kind", ["sqlite"], indirect=False)
def test_concurrent_long_poll_quota(make_server) -> None:
    live = make_server(quotas=quotas(max_waits=2))
    headers = live.headers("user")
    rid = httpx.post(live.url + API, json={"tool_name": "git_push"},
                     headers=headers).json()["id"]
    results: list[httpx.Response] = []

    def long_poll() -> None:
        results.append(httpx.get(f"{live.url}{API}/{rid}?wait=30", headers=headers,
                                 timeout=60))

    pollers = [threading.Thread(target=long_poll) for _ in range(2)]
    for t in pollers:
        t.start()
    api = live._server.config.app.state.api  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while api.waits.held("agent-bot") < 2:  # both long-polls are being held
        assert time.monotonic() < deadline, "the long-polls did not start"
        time.sleep(0.02)
    with httpx.Client(base_url=live.url, timeout=60) as client:
        third = client.get(f"{API}/{rid}?wait=30", headers=headers)
        _assert_quota_problem(third, "waits", "max_waits")
        # a plain read is no long-poll; another key has its own slots
        assert client.get(f"{API}/{rid}", headers=headers).status_code == 200
        decided = client.put(f"{API}/{rid}", json={"action": "approve"},
                             headers=live.headers("operator"))
        assert decided.status_code == 200
        for t in pollers:
            t.join(timeout=60)
        assert [r.json()["status"] for r in results] == ["approved", "approved"]
        # slots are released: a long-poll on a decided request answers at once
        assert client.get(f"{API}/{rid}?wait=30", headers=headers).status_code == 200


@pytest.mark.parametrize("backend_kind", ["sqlite"], indirect=False)
def test_list_pages_stop_at_the_response_size_budget(make_server) -> None:
    live = make_server(quotas=quotas(max_response_bytes=20_000))
    headers = live.headers("user")
    before = _metric(live.url, "response_bytes")
    big = {"blob": "x" * 6000}
    with httpx.Client(base_url=live.url, headers=headers, timeout=30) as client:
        made = [client.post(API, json={"tool_name": "upload", "arguments": big}).json()["id"]
                for _ in range(10)]
        seen, cursor, pages = [], None, 0
        while True:
            params = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
            resp = client.get(API, params=params)
            assert resp.status_code == 200
            assert len(resp.content) <= 20_000 + 200  # the budget, plus the page's frame
            page = resp.json()
            seen += [item["id"] for item in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert seen == made  # every item exactly once, in order, across the cut pages
    assert pages >= 4
    assert _metric(live.url, "response_bytes") - before == pages - 1


@pytest.mark.parametrize("backend_kind", ["sqlite"], indirect=False)
def test_one_item_larger_than_the_budget_is_still_sent(make_server) -> None:
    live = make_server(quotas=quotas(max_response_bytes=1000))
    headers = live.headers("user")
    with httpx.Client(base_url=live.url, headers=headers, timeout=30) as client:
        for _ in range(2):
            client.post(API, json={"tool_name": "upload", "arguments": {"b": "y" * 3000}})
        page = client.get(API).json()
        assert len(page["items"]) == 1 and page["next_cursor"]
        rest = client.get(API, params={"cursor": page["next_cursor"]}).json()
        assert len(rest["items"]) == 1 and rest["next_cursor"] is None


# ---------------------------------------------------------------- configuration
@pytest.mark.parametrize("text, expected", [
    ("quotas:\n  max_pending: -1\n", "quotas.max_pending must be a number greater than zero"),
    ("quotas:\n  max_pendin: 5\n", "quotas.max_pendin: unknown setting"),
    ("quotas:\n  create_rate: yes\n", "quotas.create_rate must be"),
    ("quotas:\n  max_waits: 2.5\n", "quotas.max_waits must be a whole number"),
    ("quotas: 5\n", "quotas must be a mapping"),
])
def test_bad_quota_config_is_one_line_exit_2(tmp_path: Path, text: str, expected: str
                                             ) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    env = dict(env_for(tmp_path / "approvals.db"), APPROVALCTL_CONFIG=str(config))
    result = subprocess.run(["approvalctl", "list"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert expected in result.stderr and result.stderr.strip().count("\n") == 0


def test_quota_set_to_null_is_off() -> None:
    from approvalctl.limits import quotas_from

    parsed = quotas_from({"max_pending": None, "create_rate": 0.5})
    assert parsed.max_pending is None and parsed.create_rate == 0.5
    assert parsed.max_waits == Quotas().max_waits  # unnamed keys keep their defaults
    assert json.dumps(parsed.max_response_bytes)
