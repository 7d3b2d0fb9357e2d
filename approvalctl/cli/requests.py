"""The core verbs: request, list, show, approve, reject, cancel, wait, sweep, stats, and the
audit trail."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import typer

from .. import render
from ..digest import short as short_digest
from ..durations import format_duration, parse_duration
from ..errors import ApprovalctlError, InvalidInput, exit_code
from .app import (
    YES_OPT,
    app,
    backend,
    command,
    confirm,
    emit,
    message,
    parse_json_object,
    print_table,
    state_of,
)

JSON_OPT = typer.Option(False, "--json", help="Print JSON on stdout instead of a table.")


def _seconds(text: str | None, what: str, *, allow_zero: bool = False) -> float | None:
    return None if text is None else parse_duration(text, what=what, allow_zero=allow_zero)


def _age(iso: str | None) -> str:
    from ..models import from_iso, utcnow

    return format_duration((utcnow() - from_iso(iso)).total_seconds()) if iso else "-"


def _until(iso: str | None) -> str:
    from ..models import from_iso, utcnow

    if not iso:
        return "-"
    left = (from_iso(iso) - utcnow()).total_seconds()
    return format_duration(left) if left > 0 else "overdue"


def _finish_wait(req: Any, as_json: bool) -> None:
    if as_json:
        emit(req.to_dict())
    if req.status == "pending":
        message(f"{req.id}: still pending when the wait timed out")
    else:
        who = f" by {req.decided_by}" if req.decided_by and req.status != "expired" else ""
        note = f": {req.decision_note}" if req.decision_note else ""
        message(f"{req.id}: {req.status}{who}{note}")
    raise typer.Exit(exit_code(req.status))


def _wait_or_withdraw(be: Any, request_id: str, timeout_s: float | None) -> Any:
    """Wait for a decision; stopped meanwhile (SIGTERM, Ctrl-C) or failing, withdraw the
    request first, so the operator is not asked to approve a call that will never run."""
    import signal

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return be.wait(request_id, timeout_s)
    except BaseException:
        with contextlib.suppress(Exception):
            be.cancel(request_id)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


@command(app, "request")
def request_cmd(
    ctx: typer.Context,
    tool: str = typer.Argument(..., help="The tool the agent wants to run, e.g. git_push."),
    args: str | None = typer.Option(None, "--args", metavar="JSON",
                                    help="The tool's arguments as a JSON object."),
    reason: str | None = typer.Option(None, "--reason", help="Why the agent wants to run it."),
    user: str | None = typer.Option(None, "--user",
                                    help="Who asks \\[env: APPROVALCTL_USER; default: "
                                         "your OS account]."),
    risk: str = typer.Option("medium", "--risk", help="low, medium or high."),
    ttl: str | None = typer.Option(None, "--ttl", metavar="DURATION",
                                   help="Expire if undecided after this long (default 1h)."),
    wait: bool = typer.Option(False, "--wait", help="Block until decided; exit code tells."),
    timeout: str | None = typer.Option(None, "--timeout", metavar="DURATION",
                                       help="With --wait: give up after this long (exit 124)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Ask for approval to run TOOL; prints the new request's id."""
    arguments = parse_json_object(args)
    ttl_s = _seconds(ttl, "--ttl")
    timeout_s = _seconds(timeout, "--timeout")
    if timeout is not None and not wait:
        raise InvalidInput("--timeout only makes sense with --wait")
    state = state_of(ctx)
    if user and state.remote:
        raise InvalidInput("--user cannot be used with --server: requests are made as the "
                           "API key's owner")
    be = backend(ctx)
    kwargs: dict[str, Any] = {"reason": reason, "risk": risk, "ttl_seconds": ttl_s}
    if not state.remote:
        kwargs["user_id"] = user or state.settings.user or be.actor.name
    req = be.create(tool, arguments, **kwargs)
    if not wait:
        if as_json:
            emit(req.to_dict())
        else:
            print(req.id, flush=True)
        return
    if not as_json:
        print(req.id, flush=True)
    message(f"waiting for a decision on {req.id} (approvalctl approve {req.id})")
    _finish_wait(be.wait(req.id, timeout_s), as_json)


@command(app, "list")
def list_cmd(
    ctx: typer.Context,
    status: str = typer.Option("pending", "--status",
                               help="pending, approved, rejected, expired, cancelled or all."),
    tool: str | None = typer.Option(None, "--tool", help="Only this tool."),
    user: str | None = typer.Option(None, "--user", help="Only requests by this user."),
    risk: str | None = typer.Option(None, "--risk", help="Only this risk: low, medium or "
                                                         "high."),
    since: str | None = typer.Option(None, "--since", metavar="DURATION",
                                     help="Only requests created this recently, e.g. 24h."),
    limit: int = typer.Option(50, "--limit", help="At most this many rows (1-1000)."),
    as_json: bool = JSON_OPT,
) -> None:
    """List requests: pending oldest first; other statuses newest first."""
    be = backend(ctx)
    page = be.list(status=status, tool_name=tool, user_id=user, limit=limit,
                   risk=risk, since_seconds=_seconds(since, "--since"))
    quorum = be.quorum_fields(page.items)
    if as_json:
        emit([{**r.to_dict(), **quorum.get(r.id, {})} for r in page.items])
        return
    if not page.items:
        message(f"no {'' if status == 'all' else status + ' '}requests")
        return
    pending = status == "pending"
    rows = [[r.id, r.tool_name, r.user_id, r.risk, r.status + _count(quorum.get(r.id),
                                                                      r.status),
             _age(r.created_at),
             _until(r.expires_at) if r.status == "pending" else r.decided_by,
             render.terminal(r.reason or "", 60)] for r in page.items]
    print_table(["ID", "TOOL", "USER", "RISK", "STATUS", "AGE",
                 "EXPIRES IN" if pending else "DECIDED BY", "REASON"], rows)
    if page.next_cursor:
        message(f"showing the first {len(page.items)}; use --limit for more")


def _count(quorum: dict[str, Any] | None, status: str) -> str:
    """` (1 of 2)` after a pending request's status when it has a quorum, else ""."""
    if not quorum or status != "pending":
        return ""
    from .review import count_text

    return f" ({count_text(quorum)})"


@command(app, "show")
def show_cmd(
    ctx: typer.Context,
    request_id: str = typer.Argument(..., metavar="ID", help="Id or unique id prefix."),
    as_json: bool = JSON_OPT,
) -> None:
    """Show one request in full."""
    be = backend(ctx)
    req = be.get(request_id)
    quorum = be.quorum_fields([req]).get(req.id)
    if as_json:
        emit({**req.to_dict(), **(quorum or {})})
        return
    from rich.text import Text

    from .app import can_encode

    def arguments(value: Any) -> Text:
        # pretty JSON keeps its line breaks, every unsafe character escaped; on a stream
        # that cannot carry the rest, JSON's own \u escapes keep it valid JSON
        text = render.json_text(value)
        return Text(text if can_encode(sys.stdout, text) else
                    render.json_text(value, ascii_only=True))

    # every other value is one line, rendered by print_table
    rows = [[k, arguments(v) if k == "arguments" else
             short_digest(v) if k == "digest" and v else v]
            for k, v in req.to_dict().items()]
    if req.status == "pending":
        rows.append(["expires in", _until(req.expires_at)])
    if quorum:
        from .review import approvals_text

        rows.append(["approvals", approvals_text(quorum)])
    print_table(["FIELD", "VALUE"], rows)


def _decide_many(ids: list[str], past: str, call: Any, as_json: bool, yes: bool,
                 verb: str, be: Any = None) -> None:
    """Decide each id; report each; exit with the first failure's code.

    More than one id is a bulk action: asked on a terminal, refused off one without --yes.
    """
    if len(ids) > 1:
        noun = {"approve": "approval", "reject": "rejection", "cancel": "cancellation"}[verb]
        confirm(f"{verb.capitalize()} {len(ids)} requests ({', '.join(ids)})?", yes,
                f"{noun} of {len(ids)} requests at once")
    done, first_error = [], None
    for rid in ids:
        try:
            req = call(rid)
        except ApprovalctlError as exc:
            message(f"error: {exc.detail}")
            first_error = first_error or exc
            continue
        done.append(req)
        if past == "approved" and req.status == "pending":  # a quorum still short
            message(f"approval counted for {req.id}; it needs more approvers (see "
                    f"approvalctl show {req.id})")
            continue
        message(f"{past} {req.id} ({req.tool_name} for {req.user_id}, "
                f"{short_digest(req.digest) if req.digest else 'no digest'})")
    if as_json:  # approvals of a request with a quorum show the count ("1 of 2")
        quorum = be.quorum_fields(done) if be is not None and done else {}
        emit([{**r.to_dict(), **quorum.get(r.id, {})} for r in done])
    if first_error is not None:
        raise typer.Exit(exit_code(first_error))


IDS_ARG = typer.Argument(..., metavar="ID...", help="Ids or unique id prefixes.")


@command(app, "approve")
def approve_cmd(ctx: typer.Context, ids: list[str] = IDS_ARG,
                note: str | None = typer.Option(None, "--note", help="Why, for the record."),
                always: bool = typer.Option(False, "--always", help="Also add an allow rule "
                                            "for exactly this tool with exactly these "
                                            "arguments (named always-ID)."),
                yes: bool = YES_OPT, as_json: bool = JSON_OPT) -> None:
    """Approve pending requests."""
    be = backend(ctx)

    def approve(rid: str) -> Any:
        if not always:
            return be.decide(rid, "approve", note)
        req, rule = be.approve_always(rid, note)
        message(f"added policy rule {rule['name']!r}: {req.tool_name} with exactly these "
                "arguments is allowed from now on")
        return req

    _decide_many(ids, "approved", approve, as_json, yes, "approve", be)


@command(app, "reject")
def reject_cmd(ctx: typer.Context, ids: list[str] = IDS_ARG,
               reason: str | None = typer.Option(None, "--reason", help="Why, for the record."),
               yes: bool = YES_OPT, as_json: bool = JSON_OPT) -> None:
    """Reject pending requests."""
    be = backend(ctx)
    _decide_many(ids, "rejected",
                 lambda rid: be.decide(rid, "reject", reason), as_json, yes, "reject")


@command(app, "cancel")
def cancel_cmd(ctx: typer.Context, ids: list[str] = IDS_ARG,
               yes: bool = YES_OPT, as_json: bool = JSON_OPT) -> None:
    """Withdraw pending requests."""
    be = backend(ctx)
    _decide_many(ids, "cancelled", lambda rid: be.cancel(rid), as_json, yes, "cancel")


@command(app, "consume")
def consume_cmd(
    ctx: typer.Context,
    request_id: str = typer.Argument(..., metavar="ID", help="Id or unique id prefix."),
    digest: str = typer.Option(..., "--digest", metavar="DIGEST",
                               help="The digest of the call about to run (sha256:...)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Use an approval once, for exactly the approved call. Exit 0 once; 4 if not approved
    or already used; 11 past use_by; 2 if the digest differs."""
    req = backend(ctx).consume(request_id, digest)
    if as_json:
        emit(req.to_dict())
    message(f"consumed {req.id} ({req.tool_name}, {short_digest(req.digest or '')})")


@command(app, "exec", context_settings={"allow_interspersed_args": False})
def exec_cmd(
    ctx: typer.Context,
    argv: list[str] = typer.Argument(..., metavar="-- CMD [ARG...]",
                                     help="The command to run once it is approved."),
    tool: str = typer.Option("shell.exec", "--tool", help="The tool name to ask for."),
    reason: str | None = typer.Option(None, "--reason", help="Why it should run."),
    risk: str = typer.Option("medium", "--risk", help="low, medium or high."),
    ttl: str | None = typer.Option(None, "--ttl", metavar="DURATION",
                                   help="Expire if undecided after this long (default 1h)."),
    timeout: str | None = typer.Option(None, "--timeout", metavar="DURATION",
                                       help="Give up waiting after this long (exit 124)."),
) -> None:
    """Run CMD only once an operator approves exactly this call: files a request for it
    (arguments {"argv": [...], "cwd": "..."}), waits, consumes the approval, then runs it.
    Exit status: the command's own; 10 rejected, 11 expired, 12 cancelled, 124 timed out."""
    import os

    from ..digest import digest as call_digest

    ttl_s = _seconds(ttl, "--ttl")
    timeout_s = _seconds(timeout, "--timeout")
    arguments = {"argv": list(argv), "cwd": os.getcwd()}
    be = backend(ctx)
    state = state_of(ctx)
    kwargs: dict[str, Any] = {"reason": reason, "risk": risk, "ttl_seconds": ttl_s}
    if not state.remote:
        kwargs["user_id"] = state.settings.user or be.actor.name
    req = be.create(tool, arguments, **kwargs)
    expected = call_digest(tool, arguments)
    if req.digest != expected:  # the server must have stored exactly this call
        raise InvalidInput(f"the server stored {req.digest} for {req.id}, not {expected}")
    message(f"waiting for a decision on {req.id} (approvalctl approve {req.id})")
    req = _wait_or_withdraw(be, req.id, timeout_s)
    if req.status != "approved":
        if req.status == "pending":
            be.cancel(req.id)
        _finish_wait(req, False)
    be.consume(req.id, expected)
    state.close()  # nothing of ours stays open in the command
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        message(f"error: cannot run {argv[0]!r}: {exc.strerror}")
        raise typer.Exit(127 if isinstance(exc, FileNotFoundError) else 126) from None


@command(app, "wait")
def wait_cmd(
    ctx: typer.Context,
    request_id: str = typer.Argument(..., metavar="ID", help="Id or unique id prefix."),
    timeout: str | None = typer.Option(None, "--timeout", metavar="DURATION",
                                       help="Give up after this long (exit 124)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Block until a request is decided. Exit 0 approved, 10 rejected, 11 expired,
    12 cancelled, 124 still pending at the timeout."""
    timeout_s = _seconds(timeout, "--timeout")
    _finish_wait(backend(ctx).wait(request_id, timeout_s), as_json)


@command(app, "sweep")
def sweep_cmd(ctx: typer.Context, as_json: bool = JSON_OPT) -> None:
    """Expire overdue pending requests and queue the reminders and escalations due. Safe
    to run from cron at any rate (each reminder is queued once, whoever sweeps)."""
    got = backend(ctx).sweep_all()
    if as_json:
        emit(got)
    else:
        n, left = got["expired"], got.get("no_channel", 0)
        message(f"expired {n} request{'s' if n != 1 else ''}"
                + (f"; queued {got['reminders']} reminder(s), {got['escalations']} "
                   "escalation(s)" if got["reminders"] or got["escalations"] else "")
                + (f"; {left} due step(s) left: no channel for them in this config (a sweep "
                   "with the config that has them sends them)" if left else ""))


@command(app, "stats")
def stats_cmd(
    ctx: typer.Context,
    since: str = typer.Option("24h", "--since", metavar="DURATION",
                              help="Window of request creation times."),
    by: str | None = typer.Option(None, "--by", metavar="tool|user|risk",
                                  help="Break the figures down by tool, user or risk."),
    as_json: bool = JSON_OPT,
) -> None:
    """Counts by status, approval and rejection rate, response times, oldest pending; on a
    terminal also the response-time distribution and the last 24 h of decisions as charts."""
    window = _seconds(since, "--since")
    if as_json and by is None:  # the plain figures need no pass over the window's rows
        emit(backend(ctx).stats(window))
        return
    data = backend(ctx).stats_detail(window, by)
    if as_json:
        emit(data)
        return

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x * 100:.1f}%"

    rt = data["response_time_seconds"]
    rows = [[f"requests since {data['since']}", data["total"]]]
    rows += [[f"  {k}", v] for k, v in data["by_status"].items()]
    rows += [["approval rate", pct(data["approval_rate"])],
             ["rejection rate", pct(data["rejection_rate"])],
             ["response time avg / p50 / p95", " / ".join(format_duration(rt[k])
                                                        for k in ("avg", "p50", "p95"))],
             ["oldest pending", format_duration(data["oldest_pending_age_seconds"])]]
    print_table(["STAT", "VALUE"], rows)
    from .charts import print_charts

    if by is not None:
        print()
        shown = data["groups"][:20]
        print_table([by.upper(), "TOTAL", "APPROVED", "REJECTED", "PENDING", "APPROVAL RATE",
                     "RESPONSE AVG / P50 / P95"],
                    [[g["key"], g["total"], g["by_status"]["approved"],
                      g["by_status"]["rejected"], g["by_status"]["pending"],
                      pct(g["approval_rate"]),
                      " / ".join(format_duration(g["response_time_seconds"][k])
                                 for k in ("avg", "p50", "p95"))] for g in shown])
        if len(data["groups"]) > len(shown) or data["groups_truncated"]:
            message(f"showing the {len(shown)} largest groups; --json has "
                    f"{len(data['groups'])}")
    print_charts(data)


@command(app, "review")
def review_cmd(ctx: typer.Context) -> None:
    """Work the queue full-screen: pending requests oldest first, kept live without
    polling; open one to see everything before deciding. Keys: Enter open · a approve ·
    A approve and always allow these exact arguments · r reject (asks for a reason) ·
    c cancel · s skip to the next · Esc back to the queue · q or Ctrl-C quit. Decisions are
    made only in a request's own screen, on the request shown. Needs a terminal (exit 2
    without one)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise InvalidInput("review is interactive and needs a terminal; use list/approve/"
                           "reject from scripts")
    from .review import run

    run(backend(ctx))


@command(app, "watch")
def watch_cmd(
    ctx: typer.Context,
    status: str = typer.Option("pending", "--status",
                               help="pending, approved, rejected, expired, cancelled or all."),
    tool: str | None = typer.Option(None, "--tool", help="Only this tool."),
    user: str | None = typer.Option(None, "--user", help="Only requests by this user."),
    bell: bool = typer.Option(False, "--bell", help="Ring the terminal bell (and notify-send, "
                              "when installed) on each new high-risk request."),
) -> None:
    """Watch the queue live, read-only, redrawn on every change until Ctrl-C (at most the
    first 200 rows: pending oldest first, other statuses newest first). On a terminal too
    short for them all, the high-risk rows are kept (the newest first) and a last line
    counts the rest and names the newest of them."""
    from .review import pending_source
    from .watch import WATCH_LIMIT, run

    be = backend(ctx)
    read = pending_source(be, WATCH_LIMIT, status=status, tool=tool, user=user)
    read()  # a bad filter or an unreachable server: one line and its exit code, at once
    what = f"{'all' if status == 'all' else status} requests" + \
        (f", tool {tool}" if tool else "") + (f", user {user}" if user else "")
    try:
        run(read, what=render.plain(what), bell=bell)
    except KeyboardInterrupt:
        return


audit_app = typer.Typer(help="The audit trail and its integrity check.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@command(audit_app, "list")
def audit_list_cmd(
    ctx: typer.Context,
    request_id: str | None = typer.Option(None, "--request", metavar="ID",
                                          help="Only this request's history."),
    limit: int = typer.Option(100, "--limit", help="The most recent N rows."),
    as_json: bool = JSON_OPT,
) -> None:
    """Show the audit trail, oldest first."""
    rows = backend(ctx).audit_list(request_id=request_id, limit=limit)
    if as_json:
        emit(rows)
        return
    from rich.text import Text

    def detail(d: dict[str, Any]) -> Text:
        # values as JSON (quoted, unsafe characters as \u escapes): a note such as
        # "ok, to_status=approved" cannot pass for another key
        return Text(", ".join(f"{render.escape(k)}={render.json_text(v, indent=None)}"
                              for k, v in d.items()))

    print_table(["SEQ", "AT", "ACTOR", "ACTION", "REQUEST", "FROM", "TO", "DETAIL"],
                [[r["seq"], r["at"], r["actor"], r["action"], r["request_id"],
                  r["from_status"], r["to_status"], detail(r["detail"])] for r in rows])


@command(audit_app, "verify")
def audit_verify_cmd(
    ctx: typer.Context,
    anchors: list[str] = typer.Option(
        [], "--anchor", metavar="SEQ:HASH",
        help="An anchor from `audit anchor` (repeatable): fail unless the chain still holds "
             "that row with that hash."),
    as_json: bool = JSON_OPT,
) -> None:
    """Check the hash chain, the anchors, and every request against its last audit row;
    names the first problem and exits 1 if anything was tampered with."""
    result = backend(ctx).audit_verify(list(anchors))
    if as_json:
        emit(result.to_dict())
    if result.ok:
        extra = f", {len(anchors)} anchor{'s' if len(anchors) != 1 else ''} held" \
            if anchors else ""
        message(f"audit trail intact: {result.rows} rows verified, every request matches its "
                f"last audit row{extra}")
        return
    where = f" at row {result.bad_seq}" if result.bad_seq is not None else ""
    message(f"audit trail BROKEN{where}: {result.problem}")
    raise typer.Exit(1)


@command(audit_app, "anchor")
def audit_anchor_cmd(ctx: typer.Context, as_json: bool = JSON_OPT) -> None:
    """Print the chain's head as {"seq": N, "hash": "…"} on one line, to keep outside the
    database (e.g. `approvalctl audit anchor >> /secure/anchors.log` from cron); check it
    later with `audit verify --anchor N:HASH`."""
    import json

    head = backend(ctx).audit_anchor()
    if as_json:
        emit(head)
    else:
        sys.stdout.write(json.dumps({"seq": head["seq"], "hash": head["hash"]}) + "\n")


@command(app, "prune")
def prune_cmd(
    ctx: typer.Context,
    older_than: str = typer.Option(..., "--older-than", metavar="DURATION",
                                   help="Delete final requests created and decided longer "
                                        "ago than this (at least 1d), e.g. 90d."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count only; delete nothing."),
    yes: bool = YES_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Delete old decided requests and their notification rows (admin). Audit rows stay:
    each pruned request gets a `prune` audit row, so `audit verify` keeps passing. Asks on
    a terminal; off a terminal it needs --yes (or --dry-run)."""
    seconds = parse_duration(older_than, what="--older-than")
    if not dry_run and not yes and not sys.stdin.isatty():
        raise InvalidInput("prune deletes requests: pass --yes to confirm (or --dry-run to "
                           "count them), stdin is not a terminal")
    api = backend(ctx)
    result = None
    if not dry_run and not yes:
        plan = api.prune(seconds, dry_run=True)
        if not plan["requests"]:
            result = {**plan, "dry_run": False}  # nothing to ask about
        else:
            confirm(f"Delete {plan['requests']} decided request"
                    f"{'s' if plan['requests'] != 1 else ''} created before "
                    f"{plan['cutoff']} and {plan['outbox']} notification rows?", yes,
                    "prune deletes requests", "nothing deleted")
    if result is None:
        result = api.prune(seconds, dry_run=dry_run)
    if as_json:
        emit(result)
        return
    verb = "would delete" if result["dry_run"] else "deleted"
    message(f"{verb} {result['requests']} request{'s' if result['requests'] != 1 else ''} "
            f"created before {result['cutoff']} and {result['outbox']} notification rows")

