"""The decision-link pages: `GET /d/{token}` shows a request, `POST /d/{token}` decides it.

The token (approvalctl/notify/links.py) is the credential: no API key is involved. A GET
never decides (chat apps and mail scanners open links on their own); the page it renders
carries a form whose POST repeats the token in its body together with a field only the
server can compute (`check`), so a POST needs the page, not just the URL. Cross-site POSTs
(`Sec-Fetch-Site: cross-site`) are refused too.

Every page is plain server-rendered HTML: no JavaScript, no external resources, every
agent-supplied value through `approvalctl.render.html`, and headers that forbid scripts,
framing, referrers and caching. Anything wrong gives a short plain page with a 4xx status
and one line saying why (never a stack trace). Requests are rate-limited per client
address (behind a reverse proxy that is the proxy's address: see docs/away.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import render
from ..errors import (
    ApprovalConflict,
    ApprovalctlError,
    Expired,
    Forbidden,
    InvalidInput,
    QuotaExceeded,
    UnsupportedMediaType,
)
from ..models import PENDING, Principal, to_iso, utcnow
from ..notify import links
from ..service import ApprovalService

#: Link page requests per second per client address (bursts of as many): a person opening,
#: reloading and submitting stays far below it; a script guessing or flooding does not.
LINK_RATE = 5.0
MAX_CHECKS = 100_000
MAX_FORM_BYTES = 16 * 1024
MAX_REASON = 4000

_STYLE = ("body{font-family:sans-serif;max-width:46em;margin:1em auto;padding:0 1em;"
          "color:#222}th{text-align:left;vertical-align:top;padding-right:1em}"
          "pre{background:#f4f4f4;padding:.5em;white-space:pre-wrap;word-break:break-all;"
          "max-height:30em;overflow:auto}textarea{width:100%}"
          "button{font-size:1.2em;padding:.4em 1.2em}.approve{background:#2a7}"
          ".reject{background:#c33;color:#fff}")
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
HEADERS = {
    "Content-Security-Policy": (f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; "
                                "form-action 'self'; frame-ancestors 'none'; "
                                "base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def _page(status: int, title: str, body: str) -> Response:
    """A whole page; `title` and `body` are already-safe HTML."""
    html = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{title} - approvalctl</title><style>{_STYLE}</style></head>"
            f"<body><h1>{title}</h1>{body}</body></html>")
    return Response(html, status_code=status, media_type="text/html; charset=utf-8",
                     headers=HEADERS)


def refusal(status: int, detail: str) -> Response:
    """The plain 4xx page: what went wrong, in one line."""
    titles = {400: "Bad link", 403: "Link refused", 404: "Unknown request",
              409: "Already decided", 410: "Link expired", 413: "Too large",
              415: "Unsupported form", 422: "Link refused", 429: "Too many requests"}
    return _page(status, titles.get(status, "Refused"),
                 f"<p>{render.html(detail, 1000)}</p><p>Nothing was decided by this page."
                 "</p>")


def _row(label: str, value: Any, limit: int = 2000) -> str:
    return f"<tr><th>{label}</th><td>{render.html(value, limit)}</td></tr>"


class LinkPages:
    """The link routes of one server (`Api`): `routes()` is mounted by `create_app`."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.limiter = self._new_limiter()
        self._checks = 0

    @staticmethod
    def _new_limiter() -> Any:
        from .app import RateLimiter

        return RateLimiter(LINK_RATE, "link_rate",
                           "decision-link rate of {rate:g} requests per second")

    def _limit(self, address: str) -> None:
        """The per-address bucket check. Its table of addresses is bounded (a flood from
        many addresses must not grow it without end): after MAX_CHECKS checks it starts
        afresh, which at worst lets one more burst through."""
        self._checks += 1
        if self._checks > MAX_CHECKS:
            self.limiter, self._checks = self._new_limiter(), 1
        self.limiter.check(address)

    def routes(self) -> list[Route]:
        from .app import ApiRoute  # labels the request with its template, 405s included

        route = ApiRoute("/d/{token}", self.page, methods=["GET", "POST"])
        assert route.methods is not None  # set whenever `methods` is given
        route.methods.discard("HEAD")  # as documented: the API answers no HEAD anywhere
        return [route]

    async def _key(self) -> str:
        store = self.api.store
        return await self.api.run(store.server_secret, links.KEY_NAME, links.new_key,
                                  to_iso(utcnow()))

    async def page(self, request: Request) -> Response:
        try:
            self._limit(request.client.host if request.client else "?")
            if request.method == "POST":
                return await self._decide(request)
            return await self._show(request)
        except ApprovalctlError as exc:
            status = exc.http_status if 400 <= exc.http_status < 500 else 503
            if isinstance(exc, QuotaExceeded):
                response = refusal(429, "too many link requests from your address; try "
                                   "again in a few seconds")
                response.headers["Retry-After"] = str(exc.retry_after)
                return response
            if isinstance(exc, Expired):
                status = 410
            return refusal(status, exc.detail)

    async def _verified(self, token: str) -> tuple[str, links.Link, Any]:
        """The key, the link's claims and the request it names, or an error to show."""
        key = await self._key()
        link = links.read_token(key, token)
        if to_iso(utcnow()) >= link.expires_at:
            raise Expired("this link has expired (the request it names expired at "
                        f"{link.expires_at})")
        actor = Principal(link.recipient, "operator")
        req = await self.api.run(self.api.service.get, actor, link.request_id)
        if not hmac.compare_digest(str(req.digest or ""), link.digest):
            raise Forbidden("this link was made for another version of this request")
        if req.status == "expired":
            raise Expired(f"request {req.id} has expired")
        if req.status != PENDING:
            by = f" by {req.decided_by}" if req.decided_by else ""
            raise ApprovalConflict(f"request {req.id} is already {req.status}{by}; a link "
                                   "works once", req.status)
        return key, link, req

    async def _show(self, request: Request) -> Response:
        token = request.path_params["token"]
        key, link, req = await self._verified(token)
        verb = link.action.capitalize()
        reason_field = ("<p><label for=\"reason\">Reason for rejecting (required):</label>"
                        "<textarea id=\"reason\" name=\"reason\" rows=\"3\" maxlength=\""
                        f"{MAX_REASON}\" required></textarea></p>"
                        if link.action == "reject" else
                        "<p><label for=\"reason\">Note (optional):</label><textarea "
                        f"id=\"reason\" name=\"reason\" rows=\"2\" maxlength=\"{MAX_REASON}\">"
                        "</textarea></p>")
        quorum = await self.api.run(self.api.service.approvals,
                                    Principal(link.recipient, "operator"), req.id)
        approvals = _row("Approvals", f"{len(quorum['approvers'])} of {quorum['required']}")\
            if quorum else ""
        arguments = render.json_text(req.arguments)
        body = (
            f"<p>{verb} this request as <b>{render.html(link.recipient, 200)}</b>?</p>"
            "<table>"
            + _row("Tool", req.tool_name) + _row("Risk", req.risk)
            + _row("Requested by", req.user_id) + _row("Reason", req.reason or "(none given)")
            + _row("Digest", req.digest) + _row("Created", req.created_at)
            + _row("Expires", req.expires_at) + _row("Request", req.id) + approvals
            + "</table><h2>Arguments</h2>"
            f"<pre>{render.html(arguments)}</pre>"
            f"<form method=\"post\" action=\"{render.html(token)}\">"
            f"<input type=\"hidden\" name=\"token\" value=\"{render.html(token)}\">"
            f"<input type=\"hidden\" name=\"check\" value=\"{links.form_check(key, token)}\">"
            f"{reason_field}<button type=\"submit\" class=\"{link.action}\">{verb}</button>"
            "</form>")
        return _page(200, f"{verb} {render.html(req.tool_name, 200)}?", body)

    async def _form(self, request: Request) -> dict[str, str]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise UnsupportedMediaType("send the page's form (application/x-www-form-urlencoded)")
        from .app import read_body

        # the same capped, timed read as the API's bodies: this route needs no key, so a
        # client trickling a form must not hold its connection for ever
        raw = await read_body(request, MAX_FORM_BYTES, self.api.settings.http_limits.body_timeout,
                              f"the form is larger than {MAX_FORM_BYTES} bytes")
        try:
            fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True,
                              max_num_fields=10, strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            raise InvalidInput("the form is not readable") from None
        return {k: v[0] for k, v in fields.items() if len(v) == 1}

    async def _decide(self, request: Request) -> Response:
        token = request.path_params["token"]
        if request.headers.get("sec-fetch-site") == "cross-site" or \
                not _same_origin(request):
            raise Forbidden("a decision must come from this server's own page")
        form = await self._form(request)
        key = await self._key()
        if not hmac.compare_digest(form.get("token", "").encode(), token.encode()) or \
                not hmac.compare_digest(form.get("check", "").encode(),
                                        links.form_check(key, token).encode()):
            raise Forbidden("this form did not come from the link's own page")
        key, link, req = await self._verified(token)
        reason = form.get("reason", "").strip()
        if len(reason) > MAX_REASON:
            raise InvalidInput(f"the reason is longer than {MAX_REASON} characters")
        if link.action == "reject" and not reason:
            raise InvalidInput("a rejection needs a reason: go back and give one")
        done = await self.api.write(ApprovalService.decide_by_link, link.recipient, req.id,
                                    link.digest, link.action, reason or None)
        if done.status == PENDING:  # a quorum still short
            return _page(200, "Approval counted",
                         f"<p>Your approval of {render.html(done.id)} is counted, as "
                         f"<b>{render.html(link.recipient, 200)}</b>; the request needs more "
                         "approvers before it is approved.</p>")
        return _page(200, f"{done.status.capitalize()}",
                     f"<p>Request {render.html(done.id)} ({render.html(done.tool_name, 200)}) "
                     f"is now <b>{render.html(done.status)}</b>, recorded as decided by "
                     f"<b>{render.html(done.decided_by, 200)}</b>.</p>")


def _same_origin(request: Request) -> bool:
    """False for a POST whose `Origin` (RFC 6454) names another host than the one it was sent
    to. An absent Origin or `null` (what a browser sends for this page's own form, which has
    `Referrer-Policy: no-referrer`) passes: the form's `check` field is the proof that it
    came from the page. Only the host is compared, since a TLS reverse proxy in front of
    `serve` changes the scheme the server sees, not the Host it forwards."""
    from urllib.parse import urlsplit

    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    try:
        host = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(host) and host.lower() == request.headers.get("host", "").lower()
