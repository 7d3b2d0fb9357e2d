"""Delivering one notification: Slack incoming webhooks, e-mail over SMTP, signed webhooks.

Each `send_*` function makes exactly one attempt and either returns (delivered) or raises
`DeliveryError`, which says whether trying again later can help (`transient`) and, for an
HTTP 429, how long the receiver asked us to wait (`retry_after`). Retrying and
dead-lettering are decided by the worker, never here.

    transient (retry later)             permanent (dead-letter at once)
    timeouts, connection errors         other HTTP 4xx (400, 401, 403, 404, 410, ...)
    HTTP 408, 429 (Retry-After), 5xx    HTTP 3xx (a moved URL needs a config change)
    SMTP 4xx, SMTP disconnects          SMTP 5xx (bad recipient, auth rejected, ...)

E-mail is judged per recipient: a retry goes only to recipients that answered 4xx, never to
those that accepted (recorded at the start of the row's last_error).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from email.utils import parsedate_to_datetime
from typing import Any

from .. import __version__
from ..errors import DeliveryError
from . import messages
from .config import EmailConfig, NtfyConfig, SlackConfig, WebhookConfig

SIGNATURE_HEADER = "X-Approvalctl-Signature"
USER_AGENT = f"approvalctl/{__version__}"


# ---------------------------------------------------------------- HTTP (Slack, webhooks)
def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def check_response(response: Any, what: str) -> None:
    """Raise DeliveryError for anything but a 2xx answer."""
    code = response.status_code
    if 200 <= code < 300:
        return
    body = " ".join(response.text.split())[:200]
    detail = f"{what} answered HTTP {code}" + (f": {body}" if body else "")
    if what == "Slack" and code == 400:
        # invalid_blocks, invalid_payload, invalid_blocks_format, ...: Slack will refuse this
        # message every time; say so in the row's last_error, which `notify list` shows
        raise DeliveryError(detail + " (Slack refused the message as invalid; retrying "
                            "cannot help: check the slack.json template)", transient=False)
    if code == 429:
        raise DeliveryError(detail, transient=True,
                            retry_after=parse_retry_after(response.headers.get("Retry-After")))
    raise DeliveryError(detail, transient=code >= 500 or code == 408)


def _post(client: Any, url: str, what: str, timeout: float, **kwargs: Any) -> None:
    import httpx

    try:
        response = client.post(url, timeout=timeout, **kwargs)
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise DeliveryError(f"{what}: invalid URL: {exc}", transient=False) from None
    except httpx.TimeoutException:
        raise DeliveryError(f"{what}: timed out after {timeout:g}s", transient=True) from None
    except httpx.TransportError as exc:
        raise DeliveryError(f"{what}: {type(exc).__name__}: {exc}", transient=True) from None
    check_response(response, what)


def send_slack(client: Any, cfg: SlackConfig, event: str, request: dict[str, Any],
               templates_dir: str | None = None) -> None:
    body = messages.slack_message(event, request, templates_dir)
    _post(client, cfg.url, "Slack", cfg.timeout, json=body,
          headers={"User-Agent": USER_AGENT})


def send_ntfy(client: Any, cfg: NtfyConfig, event: str, request: dict[str, Any]) -> None:
    """Publish one notification to an ntfy server (JSON to its root URL; Bearer token)."""
    headers = {"User-Agent": USER_AGENT}
    if cfg.token:
        headers["Authorization"] = f"Bearer {cfg.token}"
    _post(client, cfg.url, "ntfy", cfg.timeout,
          json=messages.ntfy_message(event, request, cfg.topic), headers=headers)


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The signature header value: `t=UNIX_SECONDS,v1=HEX`, HMAC-SHA256 over `t.body`."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, body: bytes, header: str, *, tolerance: float = 300,
           now: float | None = None) -> bool:
    """What a receiver does: check the MAC in constant time and reject stale timestamps."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def webhook_body(outbox_id: int, event: str, request: dict[str, Any],
                 audit: dict[str, Any] | None = None) -> bytes:
    """The JSON a webhook receives. Stable across retries: `id` lets a receiver dedupe.
    `audit` is the audit chain's head `{"seq", "hash"}` right after the change: a receiver
    that keeps it holds an anchor for `audit verify --anchor SEQ:HASH`."""
    return json.dumps({"id": outbox_id, "event": event, "request": request, "audit": audit},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def send_webhook(client: Any, cfg: WebhookConfig, outbox_id: int, event: str,
                 request: dict[str, Any], audit: dict[str, Any] | None = None) -> None:
    body = webhook_body(outbox_id, event, request, audit)
    _post(client, cfg.url, "webhook", cfg.timeout, content=body, headers={
        "Content-Type": "application/json", "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: sign(cfg.secret, body), "X-Approvalctl-Event": event,
        "X-Approvalctl-Delivery": str(outbox_id)})


# ---------------------------------------------------------------- e-mail
def build_email(cfg: EmailConfig, event: str, request: dict[str, Any],
                templates_dir: str | None = None) -> Any:
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    subject, text, html = messages.email_parts(event, request, templates_dir)
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = cfg.sender
    msg["To"] = ", ".join(cfg.to)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=cfg.sender.rsplit("@", 1)[-1] or None)
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


#: How a partly delivered e-mail records who accepted it, first in the row's last_error,
#: so that a retry goes only to the others: `SMTP host:port: accepted by <a@x>, <b@y>; …`.
_ACCEPTED = re.compile(r"^SMTP \S+: accepted by ((?:<[^<>]*>(?:, )?)+)(?:;|$)")


def accepted_recipients(last_error: str | None) -> frozenset[str]:
    """The recipients an earlier attempt recorded as having accepted the message."""
    m = _ACCEPTED.match(last_error or "")
    return frozenset(re.findall(r"<([^<>]*)>", m.group(1))) if m else frozenset()


def _per_recipient(where: str, accepted: set[str] | frozenset[str],
                   refused: dict[str, tuple[int, str]]) -> str:
    parts = [f"{where}: accepted by " + ", ".join(f"<{r}>" for r in sorted(accepted))] \
        if accepted else [f"{where}: accepted by nobody"]
    for r, (code, text) in sorted(refused.items()):
        kind = "temporary, retried" if 400 <= code < 500 else "permanent"
        parts.append(f"<{r}> {code} {text} ({kind})")
    return "; ".join(parts)


def send_email(cfg: EmailConfig, event: str, request: dict[str, Any],
               templates_dir: str | None = None, *, already: frozenset[str] = frozenset()
               ) -> str | None:
    """Send one e-mail to the configured recipients that have not accepted it yet.

    SMTP answers per recipient (RFC 5321, section 4.2): a 4xx for one recipient (greylisting)
    is retried later for that recipient only; a 5xx is permanent for that recipient; those
    that accepted (`already`, from earlier attempts) are never sent the message again.
    Returns a note of the per-recipient outcome when an earlier attempt was partial, else
    None; raises DeliveryError (transient if any recipient may still accept) otherwise, its
    detail starting `SMTP host:port: accepted by <a@x>, …` (see `accepted_recipients`).
    """
    import smtplib
    import ssl

    msg = build_email(cfg, event, request, templates_dir)
    where = f"SMTP {cfg.host}:{cfg.port}"
    to = [r for r in cfg.to if r not in already]
    if not to:
        return _per_recipient(where, already, {})
    try:
        if cfg.ssl:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout,
                                                  context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
        with smtp:
            smtp.ehlo()
            if cfg.starttls and not cfg.ssl:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if cfg.username:
                smtp.login(cfg.username, cfg.password or "")
            refused_raw = smtp.send_message(msg, to_addrs=to)
    except smtplib.SMTPRecipientsRefused as exc:
        refused_raw = exc.recipients
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) \
            else str(exc.smtp_error)
        prefix = f"{where}: accepted by " + ", ".join(f"<{r}>" for r in sorted(already)) \
            + "; " if already else f"{where}: "
        raise DeliveryError(f"{prefix}answered {exc.smtp_code} {text}",
                            transient=400 <= exc.smtp_code < 500) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryError(f"{where}: {exc}", transient=False) from None
    except (smtplib.SMTPException, OSError) as exc:  # refused, reset, timeout, TLS errors
        raise DeliveryError(f"{where}: {type(exc).__name__}: {exc}", transient=True) from None
    refused = {r: (code, text.decode(errors="replace") if isinstance(text, bytes) else str(text))
               for r, (code, text) in (refused_raw or {}).items()}
    accepted = set(already) | {r for r in to if r not in refused}
    detail = _per_recipient(where, accepted, refused)
    if refused:
        raise DeliveryError(detail, transient=any(400 <= c < 500 for c, _ in refused.values()))
    return detail if already else None
