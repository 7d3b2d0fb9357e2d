"""The notification worker: claim due outbox rows, deliver each, record the outcome.

Delivery happens here and only here, never in the decision path: a decision commits its
outbox rows and returns; a worker (a thread inside `approvalctl serve`, or
`approvalctl notify run` from cron) delivers them later. No database transaction is open
while a message is in flight, so a slow Slack never holds the SQLite write lock.

Any number of workers may run at once, in one process or on several machines: a claim
leases rows (`claimed_until`), and an outcome is recorded only by the holder of the lease.
A worker killed mid-delivery leaves its lease to run out; the row is then claimed and
delivered again (at-least-once: webhook receivers dedupe on the payload's `id`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from ..models import from_iso, to_iso, utcnow
from ..render import escape
from . import channels, links
from .config import (
    LEASE_MARGIN,
    EmailConfig,
    NotifyConfig,
    NtfyConfig,
    SlackConfig,
    WebhookConfig,
    from_settings,
)
from .messages import PENDING_EVENTS
from .retry import RetryPolicy

log = logging.getLogger("approvalctl.notify")


@dataclass
class Outcome:
    """One delivery attempt, as recorded."""

    outbox_id: int
    channel: str
    event: str
    request_id: str
    #: sent | retry | failed | lost (the lease ran out; another worker owns it) | skipped
    #: (a reminder or escalation whose request was decided before it went out)
    result: str
    attempts: int
    error: str | None = None
    next_attempt_at: str | None = None


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, result: str) -> int:
        return sum(1 for o in self.outcomes if o.result == result)

    def summary(self) -> str:
        skipped = self.count("skipped")
        return (f"{self.count('sent')} sent, {self.count('retry')} to retry, "
                f"{self.count('failed')} failed"
                + (f", {skipped} skipped (no longer pending)" if skipped else ""))


def attempt(cfg: NotifyConfig, channel: str, outbox_id: int, event: str,
            request: dict[str, Any], client: Any, last_error: str | None = None,
            audit: dict[str, Any] | None = None, link_key: str | None = None) -> str | None:
    """One delivery attempt on `channel`; raises channels.DeliveryError on failure.

    `last_error` is the row's record of the previous attempt (e-mail reads from it who
    accepted already); `audit` is the chain head `{"seq", "hash"}` the change that queued it
    left; `link_key` signs the decision links of a message about a pending request
    (`created`, `reminder`, `escalated`; with `public_url`).
    Returns a note to record with a success, or None.
    """
    target = cfg.channel(channel)
    if target is None:
        raise channels.DeliveryError(f"channel {channel} is not configured (any more)",
                                     transient=False)
    if audit is not None and not isinstance(target, WebhookConfig):
        request = {**request, "audit": audit}  # the footer of Slack and e-mail messages
    if link_key and cfg.public_url and event in PENDING_EVENTS:
        recipient = links.recipient_of(channel, target)
        found = links.links_for(cfg.public_url, link_key, request, recipient) \
            if recipient else None
        if found:
            request = {**request, "links": found}
    try:
        if isinstance(target, SlackConfig):
            channels.send_slack(client, target, event, request, cfg.templates_dir)
        elif isinstance(target, EmailConfig):
            return channels.send_email(target, event, request, cfg.templates_dir,
                                       already=channels.accepted_recipients(last_error))
        elif isinstance(target, WebhookConfig):
            channels.send_webhook(client, target, outbox_id, event, request, audit)
        elif isinstance(target, NtfyConfig):
            channels.send_ntfy(client, target, event, request)
    except channels.DeliveryError:
        raise
    except Exception as exc:  # a broken template override, a bug: dead-letter, say why
        detail = getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}"
        raise channels.DeliveryError(detail, transient=False) from None
    return None


def _timeout(cfg: NotifyConfig, channel: str) -> float:
    target = cfg.channel(channel)
    return target.timeout if target is not None else 0.0


def _claim(store: Any, cfg: NotifyConfig, limit: int, due_before: str | None,
           clock: Callable[[], Any], skipped: list[Outcome] | None = None
           ) -> list[dict[str, Any]]:
    """Lease up to `limit` due rows; any whose lease is already too short is handed back.
    Reminders of requests decided meanwhile are closed unsent (added to `skipped`)."""
    now = clock()
    rows = store.claim_outbox(now=to_iso(now), due_before=due_before, limit=limit,
                              lease_until=to_iso(now + timedelta(seconds=cfg.worker.lease)))
    rows = _drop_stale_steps(store, rows, to_iso(now), skipped)
    if not rows:
        return rows
    if cfg.public_url:
        # read here, on the database thread, so a rotation takes effect at the next claim
        key = store.server_secret(links.KEY_NAME, links.new_key, to_iso(now))
        for r in rows:
            r["link_key"] = key
    left = (from_iso(rows[0]["claimed_until"]) - clock()).total_seconds()
    keep = [r for r in rows if left >= _timeout(cfg, r["channel"]) + LEASE_MARGIN]
    if len(keep) < len(rows):
        # The claim itself was slow (a busy database): rather than risk a second worker
        # sending a row while this one still is, give those rows back untouched.
        store.release_outbox([r["id"] for r in rows if r not in keep],
                             rows[0]["claimed_until"])
    return keep


def _drop_stale_steps(store: Any, rows: list[dict[str, Any]], now: str,
                      skipped: list[Outcome] | None = None) -> list[dict[str, Any]]:
    """Close, unsent (`skipped`), the claimed reminders and escalations whose request is no
    longer pending (decided, cancelled, expired or pruned since the step was queued): a
    reminder must never follow the decision. Returns the rows still to attempt."""
    keep = []
    for row in rows:
        if row["event"] not in ("reminder", "escalated"):
            keep.append(row)
            continue
        req = store.get(row["request_id"])
        if req is not None and req.status == "pending" and req.expires_at > now:
            keep.append(row)
            continue
        state = "gone" if req is None else \
            ("expired" if req.status == "pending" else req.status)
        note = f"not sent: the request is {state} now"
        done = store.skip_outbox(row["id"], lease=row["claimed_until"], note=note)
        if skipped is not None:
            skipped.append(Outcome(outbox_id=row["id"], channel=row["channel"],
                                   event=row["event"], request_id=row["request_id"],
                                   result="skipped" if done else "lost",
                                   attempts=row["attempts"], error=note))
        log.info("outbox #%s %s %s -> skipped (request %s)", row["id"], row["event"],
                 row["channel"], state)
    return keep


def process_due(store: Any, cfg: NotifyConfig, *, client: Any = None,
                policy: RetryPolicy | None = None, due_before: str | None = None,
                clock: Callable[[], Any] = utcnow) -> Report:
    """Claim one batch of due rows and attempt each once. Returns what happened.

    The rows of a batch are attempted in parallel threads, so one hung receiver does not
    hold up every other channel for its timeout; only this thread touches the database.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    policy = policy or RetryPolicy(cfg.retry)
    report = Report()
    rows = _claim(store, cfg, cfg.worker.batch, due_before, clock, report.outcomes)
    if not rows:
        return report
    own_client = client is None
    if own_client:
        import httpx

        client = httpx.Client()
    try:
        with ThreadPoolExecutor(max_workers=len(rows),
                                thread_name_prefix="approvalctl-send") as pool:
            futures = {pool.submit(_attempt_row, cfg, row, client): row for row in rows}
            for future in as_completed(futures):
                row = futures[future]
                report.outcomes.append(_record(store, policy, row, future.result(), clock))
    finally:
        if own_client:
            client.close()
    return report


def audit_head(row: dict[str, Any]) -> dict[str, Any] | None:
    """The chain head an outbox row carries (None for rows queued before migration 0008)."""
    if row.get("audit_seq") is None:
        return None
    return {"seq": row["audit_seq"], "hash": row["audit_hash"]}


def _attempt_row(cfg: NotifyConfig, row: dict[str, Any], client: Any
                 ) -> channels.DeliveryError | str | None:
    """Attempt one row (in a sending thread); returns the error, or when delivered None or
    a note to record (e-mail's per-recipient outcome)."""
    try:
        request = json.loads(row["payload"])
    except ValueError as exc:
        return channels.DeliveryError(f"unreadable outbox payload: {exc}", transient=False)
    try:
        return attempt(cfg, row["channel"], row["id"], row["event"], request, client,
                       row.get("last_error"), audit_head(row), row.get("link_key"))
    except channels.DeliveryError as exc:
        return exc


def _record(store: Any, policy: RetryPolicy, row: dict[str, Any],
            error: channels.DeliveryError | str | None, clock: Callable[[], Any]) -> Outcome:
    attempts = row["attempts"] + 1
    out = Outcome(outbox_id=row["id"], channel=row["channel"], event=row["event"],
                  request_id=row["request_id"], result="sent", attempts=attempts)
    if isinstance(error, str):  # delivered, with a note worth keeping (who accepted when)
        out.error, error = error, None
    if error is not None:
        out.error = error.detail
        verdict = policy.after_failure(attempts, error)
        if verdict.retry:
            out.result = "retry"
            out.next_attempt_at = to_iso(clock() + timedelta(seconds=verdict.delay))
        else:
            out.result = "failed"
    recorded = store.record_delivery(row["id"], lease=row["claimed_until"],
                                     channel=row["channel"], result=out.result,
                                     at=to_iso(clock()), error=out.error,
                                     next_attempt_at=out.next_attempt_at)
    if not recorded:
        out.result = "lost"
    log.info("outbox #%s %s %s -> %s (attempt %s)%s", row["id"], row["event"], row["channel"],
             out.result, attempts, f": {escape(out.error)}" if out.error else "")
    return out


def run_once(store: Any, cfg: NotifyConfig, *, client: Any = None, **kwargs: Any) -> Report:
    """Deliver everything due now (rows that become due during the run wait for the next)."""
    import httpx

    due_before = to_iso(utcnow())
    report = Report()
    policy = kwargs.pop("policy", None) or RetryPolicy(cfg.retry)
    # One client for the whole run: connections are reused, TLS set up once.
    with (httpx.Client() if client is None else _borrowed(client)) as http:
        while True:
            batch = process_due(store, cfg, due_before=due_before, client=http,
                                policy=policy, **kwargs)
            report.outcomes.extend(batch.outcomes)
            if len(batch.outcomes) < cfg.worker.batch:
                return report


class _borrowed:
    """A caller's client, used in a `with` block without closing it."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __enter__(self) -> Any:
        return self.client

    def __exit__(self, *exc: Any) -> None:
        pass


#: How often a standalone worker (`notify run`) queues due reminders, in seconds.
TICK_SECONDS = 5.0


def run_forever(store: Any, cfg: NotifyConfig, stop: threading.Event,
                on_outcome: Callable[[Outcome], None] | None = None,
                tick: Callable[[], Any] | None = None) -> None:
    """Deliver until `stop` is set, up to `worker.batch` attempts in flight at once.

    New rows are claimed as soon as a slot frees up, so one hung receiver occupies one
    slot for its timeout, not the whole worker. Database hiccups are logged, never fatal:
    the rows stay in the outbox. On stop, attempts in flight finish and are recorded.
    `tick`, if given, runs in this loop every TICK_SECONDS (`notify run` queues the due
    reminders with it); its errors are logged like the database's.
    """
    import time
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    import httpx

    policy = RetryPolicy(cfg.retry)
    inflight: dict[Future[Any], dict[str, Any]] = {}
    next_tick = time.monotonic()

    def record(done: set[Future[Any]]) -> None:
        for future in done:
            row = inflight.pop(future)
            try:
                outcome = _record(store, policy, row, future.result(), utcnow)
            except Exception as exc:  # the lease runs out and the row is tried again
                log.warning("notification worker: cannot record #%s: %s", row["id"],
                            getattr(exc, "detail", exc))
                continue
            if on_outcome:
                on_outcome(outcome)

    with httpx.Client() as client, ThreadPoolExecutor(
            max_workers=cfg.worker.batch, thread_name_prefix="approvalctl-send") as pool:
        while not stop.is_set():
            if tick is not None and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + TICK_SECONDS
                try:
                    tick()
                except Exception as exc:
                    log.warning("notification worker: reminders: %s",
                                getattr(exc, "detail", exc))
            free = cfg.worker.batch - len(inflight)
            rows: list[dict[str, Any]] = []
            if free > 0:
                try:
                    rows = _claim(store, cfg, free, None, utcnow)
                except Exception as exc:
                    log.warning("notification worker: %s", getattr(exc, "detail", exc))
            for row in rows:
                inflight[pool.submit(_attempt_row, cfg, row, client)] = row
            if inflight:
                done, _ = wait(list(inflight), timeout=cfg.worker.poll_interval,
                               return_when=FIRST_COMPLETED)
                record(done)
            elif not rows:
                stop.wait(cfg.worker.poll_interval)
        record(wait(list(inflight)).done)


def start_background(store: Any, settings: Any) -> Callable[[], None]:
    """Start a worker thread for `serve`; returns a function that stops and joins it.

    Validates the notification config first (InvalidInput naming the bad key), so a broken
    config stops `serve` at start-up instead of failing every delivery later.
    """
    from .messages import check_templates

    cfg = from_settings(settings)
    check_templates(cfg.templates_dir)
    stop = threading.Event()
    thread = threading.Thread(target=run_forever, args=(store, cfg, stop),
                              name="approvalctl-notify", daemon=True)
    thread.start()

    def stop_worker(timeout: float | None = None) -> None:
        stop.set()
        # An attempt in flight finishes (bounded by the channel timeout) before we return.
        thread.join(timeout)

    return stop_worker
