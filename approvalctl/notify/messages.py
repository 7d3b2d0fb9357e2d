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


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _headline(event: str, req: dict[str, Any]) -> str:
    tool = req.get("tool_name") or "?"
    if event == "created":
        return _truncate(f"Approval requested: {tool}", MAX_HEADLINE)
    if event == "expired":
        return _truncate(f"Expired unanswered: {tool}", MAX_HEADLINE)
    status = str(req.get("status") or "decided")
    by = f" by {req['decided_by']}" if req.get("decided_by") else ""
    return _truncate(f"{status.capitalize()}{by}: {tool}", MAX_HEADLINE)


def _next_step(event: str, req: dict[str, Any], fmt: str) -> str:
    """What the reader can do now; for a new request, the exact commands to decide it."""
    rid = req.get("id", "")
    if event == "created":
        approve, reject = f"approvalctl approve {rid}", f"approvalctl reject {rid}"
        if fmt == "slack":
            return f"*Approve:* `{approve}`\n*Reject:* `{reject}`"
        return f"Approve: {approve}\nReject:  {reject}"
    if event == "expired":
        return "Nobody decided before the request expired; the agent did not proceed."
    note = req.get("decision_note")
    text = f"Decided {req.get('status')}" + (f" by {req['decided_by']}"
                                             if req.get("decided_by") else "")
    text += f" at {req.get('decided_at')}" if req.get("decided_at") else ""
    return text + (f"\nNote: {note}" if note else "")


def _escape(value: str, fmt: str) -> str:
    if fmt == "html":
        return html.escape(value)
    if fmt == "slack":
        # mrkdwn control characters, then JSON string escaping (the template is JSON)
        value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return json.dumps(value.replace("```", "'''"), ensure_ascii=False)[1:-1]
    return value


def variables(event: str, request: dict[str, Any], fmt: str) -> dict[str, str]:
    """The template values for `request` (a request dict) and `event`, escaped for `fmt`."""
    args = json.dumps(request.get("arguments") or {}, indent=2, sort_keys=True,
                      ensure_ascii=False)
    raw = {
        "id": request.get("id"), "event": event, "status": request.get("status"),
        "tool_name": request.get("tool_name"), "risk": request.get("risk"),
        "reason": request.get("reason") or "(none given)", "user_id": request.get("user_id"),
        "created_at": request.get("created_at"), "expires_at": request.get("expires_at"),
        "decided_at": request.get("decided_at") or "", "decided_by":
        request.get("decided_by") or "", "decision_note": request.get("decision_note") or "",
        "arguments": _truncate(args, MAX_ARGUMENTS), "headline": _headline(event, request),
        "approve_command": f"approvalctl approve {request.get('id')}",
        "reject_command": f"approvalctl reject {request.get('id')}",
        "next_step": _next_step(event, request, fmt),
        "audit": _anchor(request.get("audit")),
    }
    return {k: _escape("" if v is None else str(v), fmt) for k, v in raw.items()}


def _anchor(head: Any) -> str:
    """The audit chain head as `audit verify --anchor` takes it (`SEQ:HASH`), or `-`."""
    if isinstance(head, dict) and "seq" in head and "hash" in head:
        return f"{head['seq']}:{head['hash']}"
    return "-"


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
    return body


def email_parts(event: str, request: dict[str, Any], templates_dir: str | None = None
                ) -> tuple[str, str, str]:
    """(subject, plain text, HTML) for one e-mail."""
    subject = " ".join(render("email_subject.txt", event, request, templates_dir).split())
    return (subject, render("email.txt", event, request, templates_dir),
            render("email.html", event, request, templates_dir))


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
    for event in ("created", "decided", "expired"):
        slack_message(event, SAMPLE_REQUEST, templates_dir)
        email_parts(event, SAMPLE_REQUEST, templates_dir)
