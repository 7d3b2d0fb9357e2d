"""`approvalctl notify`: run the notification worker, inspect and retry the outbox, test a
channel. These work on the local database (not with --server), like `migrate`: `list` and
`retry` through the service (its role checks), `run` hands the store to the worker, the
outbox's consumer (docs/design.md section 2)."""

from __future__ import annotations

from typing import Any

import typer

from .. import render
from ..errors import InvalidInput
from .app import app, command, emit, local_service, message, print_table, state_of

notify_app = typer.Typer(help="Slack, e-mail and webhook notifications (the outbox worker).",
                         no_args_is_help=True)
app.add_typer(notify_app, name="notify")

JSON_OPT = typer.Option(False, "--json", help="Print JSON on stdout instead of a table.")
#: What `notify list --json` shows of a row (the payload snapshot is left out: it is the
#: request, which `approvalctl show` prints).
LIST_FIELDS = ("id", "event", "channel", "request_id", "status", "attempts",
               "next_attempt_at", "claimed_until", "last_error", "created_at", "sent_at")


def _store(ctx: typer.Context, what: str) -> Any:
    return _service(ctx, what).store


def _service(ctx: typer.Context, what: str) -> Any:  # -> ApprovalService
    if state_of(ctx).remote:
        raise InvalidInput(f"notify {what} works on the database; it cannot be used with "
                           "--server")
    return local_service(ctx)


def _config(ctx: typer.Context) -> Any:
    from ..notify.config import from_settings
    from ..notify.messages import check_templates

    settings = state_of(ctx).settings
    cfg = from_settings(settings)
    if not cfg.channel_names():
        where = settings.source or "the config file"
        raise InvalidInput(f"no notification channels configured: add a notifications: "
                           f"block (slack, email, webhooks, ntfy) to {where}")
    check_templates(cfg.templates_dir)
    return cfg


def _outcome_dict(outcome: Any) -> dict[str, Any]:
    """One delivery attempt as JSON: the fields of `worker.Outcome`."""
    import dataclasses

    return dataclasses.asdict(outcome)


def _say(outcome: Any) -> None:
    line = (f"#{outcome.outbox_id} {outcome.event} {outcome.request_id} -> "
            f"{outcome.channel}: {outcome.result} (attempt {outcome.attempts})")
    if outcome.next_attempt_at:
        line += f", next attempt at {outcome.next_attempt_at}"
    message(line + (f": {outcome.error}" if outcome.error else ""))


@command(notify_app, "run")
def run_cmd(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Queue the reminders and escalations "
                              "due, deliver what is due now, then exit (for cron)."),
    as_json: bool = typer.Option(False, "--json", help="With --once: print the outcomes as "
                                 "JSON on stdout."),
) -> None:
    """Deliver pending notifications, queueing due reminders and escalations: forever
    (Ctrl-C stops), or once with --once."""
    from ..notify import worker

    if as_json and not once:
        raise InvalidInput("--json only makes sense with --once")
    store = _store(ctx, "run")
    cfg = _config(ctx)
    if once:
        # reminders and escalations due now are queued first, so this run delivers them
        _service(ctx, "run").send_reminders()
        report = worker.run_once(store, cfg)
        for outcome in report.outcomes:
            _say(outcome)
        if report.outcomes:
            message(report.summary())
        if as_json:
            emit([_outcome_dict(o) for o in report.outcomes])
        return
    import signal
    import threading

    stop = threading.Event()

    def finish(signum: int, frame: Any) -> None:
        # The first Ctrl-C / SIGTERM (systemd, docker stop) lets the attempts in flight
        # finish and be recorded, so nothing is sent twice; a second Ctrl-C aborts.
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    message(f"delivering notifications to {', '.join(cfg.channel_names())} "
            "(Ctrl-C to stop)")
    service = _service(ctx, "run")
    worker.run_forever(store, cfg, stop, on_outcome=_say,
                       tick=lambda: service.send_reminders())  # reminders due, once each
    message("stopped")


@command(notify_app, "list")
def list_cmd(
    ctx: typer.Context,
    status: str | None = typer.Option(None, "--status", help="pending, sent, failed or skipped "
                                      "(default: all)."),
    limit: int = typer.Option(100, "--limit", help="At most this many rows, newest first."),
    as_json: bool = JSON_OPT,
) -> None:
    """List outbox rows, newest first."""
    from .app import local_principal

    rows = _service(ctx, "list").list_outbox(local_principal(ctx), status=status, limit=limit)
    if as_json:
        emit([{k: r[k] for k in LIST_FIELDS} for r in rows])
        return
    if not rows:
        message(f"no {status + ' ' if status else ''}notifications")
        return
    print_table(["ID", "EVENT", "CHANNEL", "REQUEST", "STATUS", "ATTEMPTS", "NEXT/SENT AT",
                 "LAST ERROR"],
                [[r["id"], r["event"], r["channel"], r["request_id"], r["status"],
                  r["attempts"], r["sent_at"] if r["status"] == "sent" else
                  r["next_attempt_at"] if r["status"] == "pending" else "",
                  render.terminal(r["last_error"] or "", 80)] for r in rows])


@command(notify_app, "retry")
def retry_cmd(
    ctx: typer.Context,
    outbox_id: int | None = typer.Argument(None, metavar="ID",
                                           help="The outbox row (from notify list)."),
    failed: bool = typer.Option(False, "--failed", help="Retry every dead-lettered row."),
    as_json: bool = JSON_OPT,
) -> None:
    """Put a dead-lettered notification (or all of them) back in the queue, due now."""
    if (outbox_id is None) == (not failed):
        raise InvalidInput("give either an outbox ID or --failed")
    from .app import local_principal

    done = _service(ctx, "retry").retry_notification(local_principal(ctx), outbox_id)
    if isinstance(done, int):
        if as_json:
            emit({"requeued": done})
        message(f"requeued {done} failed notification{'s' if done != 1 else ''}")
        return
    row = done
    if as_json:
        emit({"requeued": 1, "id": outbox_id})
    message(f"requeued #{outbox_id} ({row['event']} -> {row['channel']}); it goes out with "
            "the next `notify run`")


@command(notify_app, "test")
def test_cmd(
    ctx: typer.Context,
    channel: str = typer.Argument(..., metavar="CHANNEL",
                                  help="slack, email, ntfy, webhook:N (or webhook if only one)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Send a sample notification on CHANNEL now and report the outcome (exit 0 if sent)."""
    from ..notify import channels, worker
    from ..notify.messages import SAMPLE_REQUEST

    cfg = _config(ctx)
    names = cfg.channel_names()
    if channel == "webhook" and len(cfg.webhooks) == 1:
        channel = "webhook:0"
    if channel not in names:
        raise InvalidInput(f"unknown channel {channel!r}: configured are {', '.join(names)}")
    import httpx

    with httpx.Client() as client:
        try:
            worker.attempt(cfg, channel, 0, "created", dict(SAMPLE_REQUEST), client)
        except channels.DeliveryError as exc:
            kind = "temporary" if exc.transient else "permanent"
            message(f"error: {channel}: not delivered ({kind} failure): {exc.detail}")
            if as_json:
                emit({"channel": channel, "delivered": False, "transient": exc.transient,
                      "error": exc.detail})
            raise typer.Exit(6 if exc.transient else 1) from None
    if as_json:
        emit({"channel": channel, "delivered": True, "transient": None, "error": None})
    message(f"{channel}: sample notification delivered")


links_app = typer.Typer(help="Decision links in notifications (public_url, docs/away.md).",
                        no_args_is_help=True)
app.add_typer(links_app, name="links")


@command(links_app, "rotate-secret")
def rotate_secret_cmd(ctx: typer.Context, as_json: bool = JSON_OPT) -> None:
    """Replace the key that signs decision links: every link sent so far stops working."""
    from ..models import to_iso, utcnow
    from ..notify import links

    if state_of(ctx).remote:
        raise InvalidInput("links rotate-secret works on the database; it cannot be used "
                           "with --server")
    store = local_service(ctx).store
    key = links.new_key()
    store.replace_server_secret(links.KEY_NAME, key, to_iso(utcnow()))
    if as_json:
        emit({"rotated": True, "key_id": links.key_id(key)})
    else:
        message(f"decision-link key rotated (new key id {links.key_id(key)}); links sent "
                "before now no longer work")


@command(app, "require")
def require_cmd(
    ctx: typer.Context,
    request_id: str = typer.Argument(..., metavar="ID", help="Id or unique id prefix."),
    approvals: int = typer.Argument(..., metavar="N", help="Distinct approvers needed "
                                    "(2-10)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Make a pending request need N distinct approvers (a quorum); raise only, never lower."""
    from .app import backend

    be = backend(ctx)  # the database, or over --server POST /api/v1/approvals/{id}/require
    req = be.require_approvals(request_id, approvals)
    if as_json:
        emit({**req.to_dict(), **be.quorum_fields([req]).get(req.id, {})})
    else:
        message(f"request {req.id} now needs {approvals} distinct approvers")
