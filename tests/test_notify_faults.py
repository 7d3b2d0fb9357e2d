"""Faults: a worker killed mid-delivery, every channel down during a decision, racing workers.

These run the real `approvalctl notify run` in subprocesses against a real SQLite file and a
real HTTP receiver on 127.0.0.1.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from conftest import env_for
from notify_support import (
    FAST_RETRY,
    SECRET,
    Receiver,
    free_port,
    notify_settings,
    until,
    webhook,
)

from approvalctl.config import Settings
from approvalctl.notify.worker import process_due, start_background
from approvalctl.service import ApprovalService
from approvalctl.store import open_store


def write_config(tmp_path: Path, notifications: dict) -> Path:
    path = tmp_path / "config" / "approvalctl" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"notifications": notifications}))
    return path


def worker_env(db: Path, config: Path) -> dict[str, str]:
    env = env_for(db)
    env["APPROVALCTL_CONFIG"] = str(config)
    env["TEST_WEBHOOK_SECRET"] = SECRET
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "approvalctl", *args]


@pytest.mark.slow
def test_worker_killed_between_claim_and_send_delivers_after_restart(tmp_path, db_path,
                                                                       agent):
    with Receiver(["hang", 200]) as receiver:
        block = {"webhooks": [webhook(receiver.url, ["created"], timeout=2)],
                 "retry": FAST_RETRY,
                 # a short lease, so the dead worker's claim runs out quickly
                 "worker": {"poll_interval": 0.05, "lease": 3.5, "batch": 5}}
        config = write_config(tmp_path, block)
        store = open_store(str(db_path))
        req = ApprovalService(store, Settings(db="", notifications=block)).create(agent,
                                                                                 "deploy")
        env = worker_env(db_path, config)
        first = subprocess.Popen(cli("notify", "run"), env=env, stderr=subprocess.DEVNULL)
        try:
            assert receiver.hanging.wait(20), "the worker never tried to deliver"
            row = store.list_outbox()[0]
            assert row["status"] == "pending" and row["claimed_until"]
        finally:
            first.send_signal(signal.SIGKILL)  # kill -9: no cleanup, the lease stays
            first.wait(10)
        receiver.release.set()
        row = store.list_outbox()[0]
        assert (row["status"], row["attempts"], row["claimed_until"] is not None) == \
            ("pending", 0, True)

        second = subprocess.Popen(cli("notify", "run"), env=env, stderr=subprocess.PIPE,
                                  text=True)
        try:
            until(lambda: store.list_outbox()[0]["status"] == "sent", timeout=20)
        finally:
            second.send_signal(signal.SIGTERM)
            _, err = second.communicate(timeout=15)
        assert second.returncode == 0, err
        assert f"created {req.id} -> webhook:0: sent (attempt 1)" in err
    bodies = [json.loads(r["body"]) for r in receiver.requests]
    assert len(bodies) == 2 and bodies[0] == bodies[1]  # same delivery id: receiver dedupes
    assert bodies[0]["request"]["id"] == req.id
    assert store.list_outbox()[0]["attempts"] == 1
    store.close()


def test_a_decision_commits_while_every_channel_is_failing(store, agent, operator,
                                                           monkeypatch):
    """The worker is stuck on a hung Slack, SMTP and a webhook are down: deciding is
    unaffected, because delivery never happens in the decision path."""
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", SECRET)
    dead = free_port()
    with Receiver(["hang"]) as slack:
        settings = notify_settings(
            slack={"webhook_url": slack.url, "events": ["created", "decided"]},
            email={"host": "127.0.0.1", "port": dead, "starttls": False,
                   "from": "a@example.com", "to": ["b@example.com"],
                   "events": ["created", "decided"]},
            webhooks=[webhook(f"http://127.0.0.1:{dead}/hook")])
        svc = ApprovalService(store, settings)
        req = svc.create(agent, "deploy")
        stop = start_background(store, settings)
        try:
            assert slack.hanging.wait(10)  # the worker is now blocked mid-delivery
            decided = svc.decide(operator, req.id, "approve", "go")
            assert decided.status == "approved"
            assert store.get(req.id).status == "approved"
            assert store.get_status(req.id) == "approved"
            events = sorted((r["event"], r["channel"]) for r in store.list_outbox()
                            if r["event"] == "decided")
            assert events == [("decided", "email"), ("decided", "slack"),
                              ("decided", "webhook:0")]
            # the failing channels are recorded for retry, the decision stands
            until(lambda: all(r["attempts"] >= 1 for r in store.list_outbox()
                              if r["channel"] != "slack"))
        finally:
            slack.release.set()
            stop()
    assert store.get(req.id).status == "approved"
    assert not any(r["status"] == "sent" for r in store.list_outbox()
                   if r["channel"] != "slack")


def test_two_worker_threads_never_deliver_a_row_twice(db_path, agent, monkeypatch):
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", SECRET)
    with Receiver() as receiver:
        settings = notify_settings(webhooks=[webhook(receiver.url, ["created"])],
                                   worker={"poll_interval": 0.01, "lease": 30, "batch": 3})
        main = open_store(str(db_path))
        svc = ApprovalService(main, settings)
        for i in range(40):
            svc.create(agent, f"tool{i}")
        from approvalctl.notify.config import from_settings

        cfg = from_settings(settings)
        errors: list[BaseException] = []

        def work() -> None:
            own = open_store(str(db_path))  # its own connection, like another process
            try:
                while process_due(own, cfg).outcomes:
                    pass
            except BaseException as exc:  # surfaced below
                errors.append(exc)
            finally:
                own.close()

        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert errors == []
    ids = [json.loads(r["body"])["id"] for r in receiver.requests]
    assert len(ids) == 40 and len(set(ids)) == 40
    assert {r["status"] for r in main.list_outbox(limit=100)} == {"sent"}
    main.close()


@pytest.mark.slow
def test_two_worker_processes_never_deliver_a_row_twice(tmp_path, db_path, agent):
    with Receiver() as receiver:
        block = {"webhooks": [webhook(receiver.url, ["created"])], "retry": FAST_RETRY,
                 "worker": {"poll_interval": 0.05, "lease": 30, "batch": 2}}
        config = write_config(tmp_path, block)
        store = open_store(str(db_path))
        svc = ApprovalService(store, Settings(db="", notifications=block))
        for i in range(30):
            svc.create(agent, f"tool{i}")
        env = worker_env(db_path, config)
        procs = [subprocess.Popen(cli("notify", "run", "--once"), env=env,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outputs = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    ids = [json.loads(r["body"])["id"] for r in receiver.requests]
    assert len(ids) == 30 and len(set(ids)) == 30
    assert {r["status"] for r in store.list_outbox(limit=100)} == {"sent"}
    store.close()


def test_sigterm_stops_notify_run_cleanly(tmp_path, db_path):
    config = write_config(tmp_path, {"webhooks": [webhook("http://127.0.0.1:9/x")]})
    proc = subprocess.Popen(cli("notify", "run"), env=worker_env(db_path, config),
                            stderr=subprocess.PIPE, text=True)
    try:
        assert "delivering notifications to webhook:0" in proc.stderr.readline()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err


def test_ctrl_c_stops_notify_run_cleanly(tmp_path, db_path):
    config = write_config(tmp_path, {"webhooks": [webhook("http://127.0.0.1:9/x")]})
    proc = subprocess.Popen(cli("notify", "run"), env=worker_env(db_path, config),
                            stderr=subprocess.PIPE, text=True)
    try:
        assert "delivering notifications" in proc.stderr.readline()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert (proc.returncode, err) == (0, "stopped\n")
