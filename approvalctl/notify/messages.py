"""Message bodies: the template files and the values filled into them.

Templates are `string.Template` files (`${tool_name}`) shipped in `approvalctl/templates/`.
A user overrides one by putting a file of the same name in `templates_dir` (config) or
`$XDG_CONFIG_HOME/approvalctl/templates/`. Values are escaped for the format they land in
(Slack mrkdwn inside JSON, HTML, plain text), so an agent-written reason cannot inject
markup or `<!channel>` pings.
"""

from __future__ import annotations

import html
import json
import string
from pathlib import Path
from typing import Any

from .. import render as untrusted
from ..errors import InvalidInput

#: The files a user may override, and the format of each.
TEMPLATES = {"slack.json": "slack", "email_subject.txt": "text", "email.txt": "text",
             "email.html": "html"}
MAX_ARGUMENTS = 500
MAX_HEADLINE = 140  # Slack header blocks take at most 150 characters


def template_dirs(templates_dir: str | None) -> list[Path]:
    """Where overrides are looked for, first match wins (the package copy comes last)."""
    from ..config import xdg_config_home

    dirs = [Path(templates_dir).expanduser()] if templates_dir else []
    return dirs + [xdg_config_home() / "approvalctl" / "templates"]


def load_template(name: str, templates_dir: str | None = None) -> str:
    for folder in template_dirs(templates_dir):
        path = folder / name
        if path.is_file():
            try:
                return path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidInput(f"cannot read template {path}: {exc}") from None
    from importlib.resources import files

    return (files("approvalctl") / "templates" / name).read_text(encoding="utf-8")


#: Slack's documented Block Kit limits, counted in characters of the final (escaped) text.
SLACK_MAX_BLOCKS = 50
SLACK_HEADER = 150
SLACK_SECTION = 3000
SLACK_FIELD = 2000
SLACK_FIELDS = 10
SLACK_CONTEXT_ELEMENTS = 10
SLACK_CONTEXT_TEXT = 3000
SLACK_TEXT = 40000
#: Room left in a section for the field label around an agent value.
_SLACK_VALUE = SLACK_SECTION - 200
_SLACK_FIELD_VALUE = SLACK_FIELD - 100
#: How much of the arguments an e-mail shows before pointing to `approvalctl show`.
MAX_ARGUMENTS = 4000
MAX_VALUE = 4000
MAX_HEADLINE = 140


#: Events about a request still waiting for a decision: their messages carry the
#: decision links (or the approve/reject commands) and the arguments.
PENDING_EVENTS = ("created", "reminder", "escalated")


def _waited(req: dict[str, Any]) -> str:
    """`10m` from the payload's `step.after_seconds` (a reminder's), or "a while"."""
    from ..durations import format_duration

    step = req.get("step")
    after = step.get("after_seconds") if isinstance(step, dict) else None
    if isinstance(after, (int, float)) and not isinstance(after, bool):
        return format_duration(after)
    return "a while"


def _headline_raw(event: str, req: dict[str, Any]) -> str:
    tool = req.get("tool_name") or "?"
    if event == "created":
        return f"Approval requested: {tool}"
    if event == "reminder":
        return f"Reminder: still pending after {_waited(req)}: {tool}"
    if event == "escalated":
        return f"Escalated: nobody decided in {_waited(req)}: {tool}"
    if event == "expired":
        return f"Expired unanswered: {tool}"
    status = str(req.get("status") or "decided")
    by = f" by {req['decided_by']}" if req.get("decided_by") else ""
    return f"{status.capitalize()}{by}: {tool}"


def _next_step(event: str, req: dict[str, Any], fmt: str) -> str:
    """What the reader can do now, already rendered for `fmt` (agent text is escaped)."""
    rid = req.get("id", "")
    found = req.get("links") if event in PENDING_EVENTS else None
    if isinstance(found, dict) and found.get("approve") and found.get("reject"):
        # our own URLs (public_url has no <>| and the token is base64url): safe as is
        approve_url, reject_url = str(found["approve"]), str(found["reject"])
        if fmt == "slack":
            return (f"<{approve_url}|*Approve…*>   <{reject_url}|*Reject…*>\n"
                    f"(each link opens a page that shows the request again and asks you to "
                    f"confirm; or run {untrusted.slack_code(f'approvalctl approve {rid}')})")
        text = (f"Approve: {approve_url}\nReject:  {reject_url}\n(each link opens a page "
                f"that shows the request again and asks you to confirm)")
        return html.escape(text) if fmt == "html" else text
    if event in PENDING_EVENTS:
        approve, reject = f"approvalctl approve {rid}", f"approvalctl reject {rid}"
        if fmt == "slack":
            return (f"*Approve:* {untrusted.slack_code(approve)}\n"
                    f"*Reject:* {untrusted.slack_code(reject)}")
        if fmt == "html":
            return html.escape(f"Approve: {untrusted.escape(approve)}\n"
                               f"Reject:  {untrusted.escape(reject)}")
        return f"Approve: {untrusted.escape(approve)}\nReject:  {untrusted.escape(reject)}"
    if event == "expired":
        return "Nobody decided before the request expired; the agent did not proceed."
    note = req.get("decision_note")
    by = req.get("decided_by")
    if fmt == "slack":
        text = f"Decided {untrusted.slack(req.get('status'))}"
        text += f" by {untrusted.slack_code(by)}" if by else ""
        text += f" at {untrusted.slack(req.get('decided_at'))}" if req.get("decided_at") else ""
        return text + (f"\n*Note:* {untrusted.slack_code(note, _SLACK_VALUE)}" if note else "")
    text = f"Decided {untrusted.escape(req.get('status'))}"
    text += f" by {untrusted.escape(by)}" if by else ""
    text += f" at {untrusted.escape(req.get('decided_at'))}" if req.get("decided_at") else ""
    text += f"\nNote: {untrusted.plain(note, MAX_VALUE)}" if note else ""
    return html.escape(text) if fmt == "html" else text


def short_digest(req: dict[str, Any]) -> str:
    """The first 12 hex digits of the request's digest, or "" if it has none."""
    digest = req.get("digest")
    return str(digest).removeprefix("sha256:")[:12] if digest else ""


def audit_head(req: dict[str, Any]) -> str:
    """`seq N, hash H` of the audit chain head carried by the payload, or ""."""
    head = req.get("audit")
    if not isinstance(head, dict) or "seq" not in head:
        return ""
    return f"audit head {head.get('seq')}:{head.get('hash')}"


def _arguments(request: dict[str, Any], fmt: str) -> str:
    """The arguments as pretty JSON, unsafe characters escaped, cut with a marker."""
    hint = f"see all: approvalctl show {untrusted.escape(request.get('id'))}"
    text = untrusted.json_text(request.get("arguments") or {})
    if fmt == "slack":
        text = untrusted.slack_json(text)
        return untrusted.lines_fit(text.splitlines(), _SLACK_VALUE, hint)
    cut = untrusted.lines_fit(text.splitlines(), MAX_ARGUMENTS, hint)
    if fmt == "html":
        return html.escape(cut)
    # every line indented: nothing in the arguments can start a line of its own
    return "\n".join("    " + line for line in cut.splitlines())


def variables(event: str, request: dict[str, Any], fmt: str) -> dict[str, str]:
    """The template values for `request` (a request dict) and `event`, rendered for `fmt`.

    Every agent-supplied value goes through `approvalctl.render`: in Slack it sits in an
    inline code span (or the arguments' code block) with `&<>` escaped and backticks shown as
    `\\x60`, so it can neither break out nor make a link, a mention or a fake field; in
    text e-mail it is one line (newlines shown as `\\n`); in HTML it is escaped. Cuts are
    made after escaping and say how much was left out.
    """
    rid = request.get("id")
    digest, head = short_digest(request), audit_head(request)
    raw = {"id": rid, "event": event, "status": request.get("status"),
           "risk": request.get("risk"), "created_at": request.get("created_at"),
           "expires_at": request.get("expires_at"),
           "decided_at": request.get("decided_at") or "",
           "approve_command": f"approvalctl approve {rid}",
           "reject_command": f"approvalctl reject {rid}", "digest": digest,
           "audit_head": head}
    agent = {"tool_name": request.get("tool_name"), "user_id": request.get("user_id"),
             "reason": request.get("reason") or "(none given)",
             "decided_by": request.get("decided_by") or "",
             "decision_note": request.get("decision_note") or ""}
    headline = _headline_raw(event, request)
    if fmt == "slack":
        out = {k: untrusted.slack(v) for k, v in raw.items()}
        out.update({k: untrusted.slack_code(v, _SLACK_FIELD_VALUE) for k, v in agent.items()})
        out["reason"] = untrusted.slack_code(agent["reason"], _SLACK_VALUE)
        out["headline"] = untrusted.slack(headline, SLACK_HEADER)
        out["arguments"] = _arguments(request, fmt)
        out["next_step"] = _next_step(event, request, fmt)
        out["footer"] = " · ".join(x for x in (
            f"approvalctl · request {untrusted.slack(rid)} · {untrusted.slack(raw['status'])}",
            f"digest {digest}" if digest else "", untrusted.slack(head)) if x)
        # the template is JSON: each value becomes the inside of a JSON string
        return {k: json.dumps(v, ensure_ascii=False)[1:-1] for k, v in out.items()}
    esc = html.escape if fmt == "html" else (lambda x: x)
    out = {k: esc(untrusted.escape(v)) for k, v in raw.items()}
    out.update({k: esc(untrusted.plain(v, MAX_VALUE)) for k, v in agent.items()})
    out["headline"] = esc(untrusted.plain(headline, MAX_HEADLINE))
    out["arguments"] = _arguments(request, fmt)
    out["next_step"] = _next_step(event, request, fmt)
    out["footer"] = esc(" · ".join(x for x in (
        f"Request {untrusted.escape(rid)}", f"digest {digest}" if digest else "",
        untrusted.escape(head)) if x))
    return out



def render(name: str, event: str, request: dict[str, Any],
           templates_dir: str | None = None) -> str:
    """Fill template `name` for this event; InvalidInput naming a broken override."""
    fmt = TEMPLATES[name]
    values = variables(event, request, fmt)
    try:
        text = string.Template(load_template(name, templates_dir)).substitute(values)
    except KeyError as exc:
        raise InvalidInput(f"template {name}: unknown placeholder ${exc.args[0]} (known: "
                           f"{', '.join(sorted(values))})") from None
    except ValueError as exc:
        raise InvalidInput(f"template {name}: {exc} (write $$ for a literal $)") from None
    return text


def slack_message(event: str, request: dict[str, Any], templates_dir: str | None = None
                  ) -> dict[str, Any]:
    text = render("slack.json", event, request, templates_dir)
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"template slack.json is not valid JSON once filled in: {exc}"
                           ) from None
    if not isinstance(body, dict):
        raise InvalidInput("template slack.json must be a JSON object")
    return fit_slack(body)


def _cut(text: str, limit: int) -> str:
    """`text` cut to `limit` characters between escapes/entities, marked with the count."""
    if len(text) <= limit:
        return text
    return untrusted.cut_tokens(text, limit)


def fit_slack(body: dict[str, Any]) -> dict[str, Any]:
    """Make a (filled-in) message fit Slack's documented limits, whatever the template.

    Blocks beyond 50, fields beyond 10 and context elements beyond 10 are dropped; header
    text is cut to 150, section text to 3,000, each field to 2,000, context texts to 3,000
    and the `text` fallback to 40,000 characters — all counted after escaping, every cut
    marked. The default template's values are already sized so that nothing is cut here.
    """
    if isinstance(body.get("text"), str):
        body["text"] = _cut(body["text"], SLACK_TEXT)
    blocks = body.get("blocks")
    if not isinstance(blocks, list):
        return body
    del blocks[SLACK_MAX_BLOCKS:]
    for block in blocks:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        text = block.get("text")
        if isinstance(text, dict) and isinstance(text.get("text"), str):
            text["text"] = _cut(text["text"], SLACK_HEADER if kind == "header"
                                else SLACK_SECTION)
        if isinstance(block.get("fields"), list):
            del block["fields"][SLACK_FIELDS:]
            for f in block["fields"]:
                if isinstance(f, dict) and isinstance(f.get("text"), str):
                    f["text"] = _cut(f["text"], SLACK_FIELD)
        if kind == "context" and isinstance(block.get("elements"), list):
            del block["elements"][SLACK_CONTEXT_ELEMENTS:]
            for e in block["elements"]:
                if isinstance(e, dict) and isinstance(e.get("text"), str):
                    e["text"] = _cut(e["text"], SLACK_CONTEXT_TEXT)
    return body


def email_parts(event: str, request: dict[str, Any], templates_dir: str | None = None
                ) -> tuple[str, str, str]:
    """(subject, plain text, HTML) for one e-mail."""
    subject = " ".join(render("email_subject.txt", event, request, templates_dir).split())
    return (subject, render("email.txt", event, request, templates_dir),
            render("email.html", event, request, templates_dir))


#: ntfy's documented limit is 4,096 bytes of message; titles are kept to a line.
NTFY_MESSAGE = 3500
NTFY_TITLE = 200
NTFY_PRIORITY = {"high": 5, "medium": 4, "low": 3}


def ntfy_message(event: str, request: dict[str, Any], topic: str) -> dict[str, Any]:
    """The JSON an ntfy server is sent (its "publish as JSON" form, docs.ntfy.sh/publish).

    Every agent value is `render.plain` (one line, control characters as escapes) and the
    whole message is cut to fit; priority follows the risk (high 5, medium 4, low 3). A
    message about a pending request (created, reminder, escalated) with decision links
    carries them as `view` action buttons.
    """
    rid = untrusted.plain(request.get("id"))
    lines = [f"Tool: {untrusted.plain(request.get('tool_name'), 200)}",
             f"Risk: {untrusted.plain(request.get('risk'))}",
             f"Requested by: {untrusted.plain(request.get('user_id'), 200)}",
             f"Reason: {untrusted.plain(request.get('reason') or '(none given)', 1000)}"]
    if event in PENDING_EVENTS:
        lines.append(f"Expires: {untrusted.plain(request.get('expires_at'))}")
        lines.append("Arguments: " + untrusted.plain(
            untrusted.json_text(request.get("arguments") or {}, indent=None), 1500,
            hint=f"see all: approvalctl show {rid}"))
    else:
        lines.append(_next_step(event, request, "text"))
    digest = short_digest(request)
    lines.append(f"Request {rid}" + (f", digest {digest}" if digest else ""))
    body: dict[str, Any] = {
        "topic": topic,
        "title": untrusted.plain(_headline_raw(event, request), NTFY_TITLE),
        "message": _cut("\n".join(lines), NTFY_MESSAGE),
        "priority": NTFY_PRIORITY.get(str(request.get("risk")), 3),
        "tags": ["approvalctl", event],
    }
    found = request.get("links") if event in PENDING_EVENTS else None
    if isinstance(found, dict) and found.get("approve") and found.get("reject"):
        body["actions"] = [
            {"action": "view", "label": "Approve…", "url": found["approve"], "clear": True},
            {"action": "view", "label": "Reject…", "url": found["reject"], "clear": True}]
    return body


SAMPLE_REQUEST: dict[str, Any] = {
    "id": "01kzzzzzzzzzzzzzzzzzzzzzzz", "tool_name": "shell.exec",
    "arguments": {"command": "echo approvalctl notification test"},
    "reason": "A test notification sent by `approvalctl notify test`", "risk": "low",
    "user_id": "approvalctl-test", "status": "pending",
    "created_at": "2026-01-01T00:00:00.000Z", "expires_at": "2026-01-01T01:00:00.000Z",
    "decided_at": None, "decided_by": None, "decision_note": None,
}


def check_templates(templates_dir: str | None = None) -> None:
    """Render every template with a sample, so a broken override fails at start-up."""
    for event in ("created", "decided", "expired", "reminder", "escalated"):
        slack_message(event, SAMPLE_REQUEST, templates_dir)
        email_parts(event, SAMPLE_REQUEST, templates_dir)
