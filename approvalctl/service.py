"""Every business rule of approvalctl, in one place.

Who may create, read, decide or cancel; which transitions are legal; TTLs and expiry;
self-approval; idempotency; what each change writes to the audit trail, the counters and
the notification outbox. The CLI and the HTTP server call this and nothing below it.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal, NoReturn, overload

from . import audit, counters, keys, policy, rbac
from .config import Settings
from .digest import DigestError, digest
from .errors import (
    ApprovalConflict,
    DigestMismatch,
    Expired,
    Forbidden,
    IdempotencyMismatch,
    InvalidInput,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from .models import (
    APPROVED,
    CANCELLED,
    DECIDED_BY_HUMAN,
    EXPIRED,
    PENDING,
    REJECTED,
    RISKS,
    STATUSES,
    ApprovalRequest,
    Change,
    Page,
    Principal,
    can_transition,
    from_iso,
    id_prefix,
    new_id,
    to_iso,
    utcnow,
)
from .store import Store
from .store.reminders import schedule_of

MAX_TOOL_NAME = 200
MAX_TEXT = 4000
MAX_ARGUMENTS_BYTES = 64 * 1024
MAX_TTL_SECONDS = 30 * 86400
MAX_LIMIT = 1000
#: The most distinct approvers a request can be made to need (approvals_required).
#: The most audit rows one `audit list` returns (the spec's bound on `limit`).
MAX_AUDIT_ROWS = 100_000
MAX_APPROVALS = 10
#: The longest `since` window a list accepts (nine digits of seconds, as the spec's pattern).
MAX_WINDOW_SECONDS = 999_999_999
IDEMPOTENCY_HOURS = 24
#: `prune` keeps at least a day: younger decisions may still be waited on or used.
MIN_PRUNE_AGE = 86400
MAX_PRUNE_AGE = 100 * 365 * 86400
SYSTEM = "system"

#: What `arguments` are measured (MAX_ARGUMENTS_BYTES) and checked as: json.dumps with
#: these options, built once (json.dumps with options builds an encoder on every call).
_arguments_json = json.JSONEncoder(sort_keys=True, allow_nan=False).encode

ACTIONS = {"approve": APPROVED, "reject": REJECTED}
#: DESIGN.md §10: MCP names (`mcp__github__create_issue`), agent tools (`Bash`), dotted or
#: slashed namespaces; nothing that could act on a display or need quoting in a shell.
TOOL_NAME = re.compile(r"[A-Za-z0-9_.:/@+-]{1,200}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
#: A key's name becomes the user_id of its requests and a URL path segment.
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}")


class ApprovalService:
    def __init__(self, store: Store, settings: Settings | None = None, *,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.settings = settings or Settings()
        self.clock = clock

    # ------------------------------------------------------------ create
    def create(self, actor: Principal, tool_name: str, arguments: Any = None, *,
               reason: str | None = None, risk: str | None = None,
               ttl_seconds: float | None = None, user_id: str | None = None,
               idempotency_key: str | None = None, consume: str | None = None
               ) -> ApprovalRequest:
        """File a request (see create_idempotent); returns it."""
        return self.create_idempotent(actor, tool_name, arguments, reason=reason, risk=risk,
                                      ttl_seconds=ttl_seconds, user_id=user_id,
                                      idempotency_key=idempotency_key, consume=consume)[0]

    def create_idempotent(self, actor: Principal, tool_name: str, arguments: Any = None, *,
                          reason: str | None = None, risk: str | None = None,
                          ttl_seconds: float | None = None, user_id: str | None = None,
                          idempotency_key: str | None = None, consume: str | None = None
                          ) -> tuple[ApprovalRequest, bool]:
        """Create a request; returns it and whether this was an idempotent replay.

        `consume`: the digest of the call the caller is about to make, for a gate that runs
        it as soon as it may (the MCP gateway, the hooks). If a policy rule allows the call,
        the approval is used for it in the same transaction: audited as the create, the
        decision by `policy:NAME` and the consume (by `actor`), counted as a consume, and
        returned with `consumed_at` set — the same record as `create` then `consume`, at
        the cost of one commit. Otherwise the request is filed as without it (pending:
        wait, then `consume` as usual). DigestMismatch if it is not the digest of
        `tool_name` and `arguments`; InvalidInput with an `idempotency_key` (a replay
        would hand out a used approval as if it were fresh).
        """
        rbac.require(actor, rbac.CREATE, "create approval requests", self.store.tally)
        if user_id and user_id != actor.name and not actor.local:
            raise Forbidden("a request is always made as the caller; user_id cannot be set")
        tool_name = _tool_name(tool_name)
        arguments = {} if arguments is None else arguments
        if not isinstance(arguments, dict):
            raise InvalidInput(f"arguments must be a JSON object, not {_json_type(arguments)}")
        try:
            args_text = _arguments_json(arguments)
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidInput(f"arguments are not valid JSON: {exc}") from None
        if len(args_text.encode()) > MAX_ARGUMENTS_BYTES:
            raise InvalidInput(f"arguments exceed {MAX_ARGUMENTS_BYTES // 1024} KiB")
        try:  # the call's identity; what JCS cannot represent cannot be approved
            call_digest = digest(tool_name, arguments)
        except DigestError:
            raise InvalidInput("arguments hold a number canonical JSON (RFC 8785) cannot "
                               "represent exactly: integers must be within ±(2**53-1) "
                               "(send larger ones as strings)") from None
        if consume is not None:
            if not isinstance(consume, str) or not DIGEST.fullmatch(consume):
                raise InvalidInput("digest must be 'sha256:' followed by 64 lower-case hex "
                                   "digits")
            if not hmac.compare_digest(consume, call_digest):
                raise DigestMismatch(f"digest {consume} is not that of the call being filed "
                                     f"({call_digest})")
            if idempotency_key is not None:
                raise InvalidInput("an Idempotency-Key cannot be combined with consuming "
                                   "the approval at once")
        reason = _text(reason, "reason", limit=MAX_TEXT)
        risk = risk or "medium"
        if risk not in RISKS:
            raise InvalidInput(f"unknown risk {risk!r}: expected one of {', '.join(RISKS)}")
        ttl = self.settings.default_ttl if ttl_seconds is None else ttl_seconds
        if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or not ttl > 0:
            raise InvalidInput(f"ttl must be greater than zero seconds, got {ttl_seconds!r}")
        if ttl > MAX_TTL_SECONDS:
            raise InvalidInput(f"ttl must be at most {MAX_TTL_SECONDS // 86400} days")
        owner = user_id or actor.name
        _text(owner, "user", required=True, limit=MAX_TOOL_NAME)

        idem = None
        if idempotency_key is not None:
            idempotency_key = _text(idempotency_key, "Idempotency-Key", required=True,
                                    limit=255)
            body_hash = hashlib.sha256(json.dumps(
                [tool_name, args_text, reason, risk, ttl_seconds], sort_keys=True
            ).encode()).hexdigest()
            idem = (actor.name, idempotency_key, body_hash)
            found = self.store.get_idempotent(actor.name, idempotency_key)
            if found:
                return self._replay(found, body_hash), True

        rule = self._policy_for(tool_name, arguments)
        action = rule["action"] if rule else self.settings.policy_default
        if rule and rule.get("risk"):
            risk = rule["risk"]
        if rule and rule.get("ttl"):
            ttl = min(ttl, rule["ttl"]) if ttl_seconds is not None else rule["ttl"]
        now = self.clock()
        req = ApprovalRequest(
            id=new_id(now), tool_name=tool_name, arguments=arguments, reason=reason, risk=risk,
            user_id=owner, status=PENDING, created_at=to_iso(now),
            expires_at=to_iso(now + timedelta(seconds=ttl)), digest=call_digest,
        )
        detail: dict[str, Any] = {"tool_name": tool_name, "risk": risk, "user_id": owner}
        if action == "ask" and rule and rule.get("approvals_required"):
            detail["approvals_required"] = rule["approvals_required"]  # store: quorum row
        if action == "ask" and rule:  # store: the rule's reminder schedule, if it has one
            detail.update(schedule_of(rule))
        if action == "ask":
            change: Change | list[Change] = Change(
                request_id=req.id, actor=actor.name, action="create", from_status=None,
                to_status=PENDING, at=req.created_at, detail=detail,
                counters=counters.for_status(PENDING),
                outbox=[(c, "created") for c in self.settings.channels_for("created")])
        else:
            change = self._policy_decision(actor, req, detail, action, rule)
            if consume is not None and req.status == APPROVED:
                req.consumed_at = req.created_at
                change.append(self._consumption(actor)(req))
        result = self.store.create(req, change, idem,
                                   max_pending=self.settings.quotas.max_pending)
        if isinstance(result, dict):  # a concurrent replay won the race
            return self._replay(result, idem[2]), True  # type: ignore[index]
        return result, False

    def _policy_for(self, tool_name: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
        """The first policy rule that holds for this call, or None."""
        return policy.evaluate(self.store.list_rules(), tool_name, arguments)

    def _policy_decision(self, actor: Principal, req: ApprovalRequest, detail: dict[str, Any],
                         action: str, rule: dict[str, Any] | None) -> builtins.list[Change]:
        """Create `req` already decided by a rule (or by the `deny` default): two audit rows,
        the create and the decision by `policy:NAME`, counted like a person's decision but
        outside the response-time histogram, and without notifications (nobody has to
        act). Sets the decision fields on `req`."""
        name = rule["name"] if rule else "default"
        target = APPROVED if action == "allow" else REJECTED
        req.status = target
        req.decided_at = req.created_at
        req.decided_by = f"policy:{name}"
        req.decision_note = (rule or {}).get("note") or (
            None if rule else "no policy rule matched and the policy default is deny")
        if target == APPROVED:  # usable once, like a person's approval (DESIGN.md §10)
            req.use_by = to_iso(from_iso(req.created_at) +
                                timedelta(seconds=self.settings.use_within))
        decision = Change(
            request_id=req.id, actor=req.decided_by, action="approve" if target == APPROVED
            else "reject", from_status=PENDING, to_status=target, at=req.created_at,
            detail={"policy": name, **({"note": req.decision_note} if req.decision_note
                                        else {})},
            counters=counters.for_status(target) + [
                (counters.POLICY_DECISIONS, counters.labels(action=action, rule=name), 1)])
        return [Change(request_id=req.id, actor=actor.name, action="create", from_status=None,
                       to_status=PENDING, at=req.created_at, detail=detail,
                       counters=counters.for_status(PENDING)), decision]

    @staticmethod
    def _replay(found: dict[str, Any], body_hash: str) -> ApprovalRequest:
        if found["body_hash"] != body_hash:
            raise IdempotencyMismatch("this Idempotency-Key was already used with a different "
                                      "request body")
        return ApprovalRequest.from_dict(found["response"])

    # ------------------------------------------------------------ read
    def resolve(self, actor: Principal, id_or_prefix: str) -> ApprovalRequest:
        """The request with this id or unique id prefix, if the actor may see it."""
        if not rbac.allowed(actor, rbac.READ_OWN, self.store.tally):
            raise Forbidden(f"role '{actor.role}' may not read approval requests")
        prefix = id_prefix(id_or_prefix)
        req = self.store.get(prefix) if len(prefix) == 26 else None
        if req is None:
            # A caller who sees only their own requests resolves among those alone: an
            # ambiguity error must not name other users' ids.
            owner = None if rbac.sees_all(actor) else actor.name
            ids = self.store.resolve_prefix(prefix, user_id=owner)
            if len(ids) > 1:
                raise InvalidInput(f"id prefix {id_or_prefix!r} is ambiguous: it matches "
                                   f"{ids[0]}, {ids[1]} and maybe more")
            req = self.store.get(ids[0]) if ids else None
        if req is None or not self._may_see(actor, req):
            raise NotFound(f"no approval request {id_or_prefix!r}")
        return req

    def get(self, actor: Principal, id_or_prefix: str) -> ApprovalRequest:
        """The request; one pending past its expiry is expired now and shown so."""
        return self._fresh(self.resolve(actor, id_or_prefix))

    @staticmethod
    def _may_see(actor: Principal, req: ApprovalRequest) -> bool:
        return rbac.sees_all(actor) or req.user_id == actor.name

    def list(self, actor: Principal, *, status: str | None = PENDING,
             tool_name: str | None = None, user_id: str | None = None, limit: int = 50,
             cursor: str | None = None, risk: str | None = None,
             since_seconds: float | None = None) -> Page:
        """One page, pending oldest first; any other status (or all) newest first.

        `risk` keeps one risk level; `since_seconds` keeps requests created at most that many
        seconds ago. Raises InvalidInput for an unknown status or risk, a bad limit or window.
        """
        if not rbac.allowed(actor, rbac.READ_OWN, self.store.tally):
            raise Forbidden(f"role '{actor.role}' may not list approval requests")
        if status in (None, "", "all"):
            status = None
        elif status not in STATUSES:
            raise InvalidInput(f"unknown status {status!r}: expected one of "
                               f"{', '.join(STATUSES)} or all")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}, got {limit!r}")
        if risk is not None and risk not in RISKS:
            raise InvalidInput(f"unknown risk {risk!r}: expected one of {', '.join(RISKS)}")
        created_since = None
        if since_seconds is not None:
            if isinstance(since_seconds, bool) or not isinstance(since_seconds, (int, float)) \
                    or not 0 < since_seconds <= MAX_WINDOW_SECONDS:
                raise InvalidInput(f"since must be between 1 and {MAX_WINDOW_SECONDS} seconds, "
                                   f"got {since_seconds!r}")
            created_since = to_iso(self.clock() - timedelta(seconds=since_seconds))
        if not rbac.sees_all(actor):
            if user_id is not None and user_id != actor.name:
                return Page(items=[])
            user_id = actor.name
        descending = status != PENDING
        after = _decode_cursor(cursor, descending) if cursor else None
        now = None
        if status == PENDING:
            # Pending means pending *now*: the query keeps only rows whose expires_at is
            # ahead of this instant, so an overdue request is never listed as pending,
            # swept or not, without a probe or a write on every page.
            now = self._now_iso()
        elif status in (None, EXPIRED):
            self._settle_overdue()  # an overdue request is listed (and counted) as expired
        items = self.store.list_requests(status=status, tool_name=tool_name, user_id=user_id,
                                         after=after, descending=descending, limit=limit + 1,
                                         risk=risk, created_since=created_since,
                                         unexpired_at=now)
        more = len(items) > limit
        items = items[:limit]
        if now is None and any(r.status == PENDING for r in items):
            now = self._now_iso()
            items = [self._fresh(r, now) for r in items]
        return Page(items=items, next_cursor=_encode_cursor(items[-1].id, descending)
                    if more else None)

    @staticmethod
    def cursor_after(req: ApprovalRequest, status: str | None) -> str:
        """The `cursor` that continues a `list(status=status)` page after `req` (for a page
        a face cuts short, e.g. at a response size budget)."""
        return _encode_cursor(req.id, status != PENDING)

    # ------------------------------------------------------------ decide
    def decide(self, actor: Principal, id_or_prefix: str, action: str,
               note: str | None = None) -> ApprovalRequest:
        if action not in ACTIONS:
            raise InvalidInput(f"unknown action {action!r}: expected approve or reject")
        rbac.require(actor, rbac.DECIDE, f"{action} requests", self.store.tally)
        done = self._decide_at_once(actor, id_or_prefix, ACTIONS[action], action, note)
        if done is not None:
            return done
        req = self.resolve(actor, id_or_prefix)
        note = _text(note, "note", limit=MAX_TEXT)
        if req.user_id == self._barred_from_own(actor):
            raise Forbidden(f"'{actor.name}' cannot {action} their own request {req.id} "
                            "(set allow_self_approval: true in the config to permit it)")
        if action == "approve":
            counted = self._approve_in_quorum(actor, req, note)
            if counted is not None:
                return counted
        return self._finish(actor, req, ACTIONS[action], action, note)

    # ------------------------------------------------------------ quorum
    def _approve_in_quorum(self, actor: Principal, req: ApprovalRequest, note: str | None
                           ) -> ApprovalRequest | None:
        """Count an approval of a request with a quorum (`approvals_required`).

        Approvers are distinct identities (a key's name, the local OS account, a link's
        recipient): the same identity twice counts once and gets ApprovalConflict. Below
        the quorum the request stays pending with an `approve_partial` audit row; the Nth
        approval makes the ordinary decision (one compare-and-set, counted once). None: the
        request has no quorum (or is not pending: the ordinary path says why).
        """
        def partial(r: ApprovalRequest, count: int, required: int) -> Change:
            return Change(request_id=r.id, actor=actor.name, action="approve_partial",
                          from_status=PENDING, to_status=PENDING, at=to_iso(self.clock()),
                          detail={"approvals": count, "required": required,
                                  **({"note": note} if note else {})})

        got = self.store.add_approval(req.id, actor.name, to_iso(self.clock()), partial)
        if got is None:
            return None
        current, count, required, added = got
        if count < required:
            if not added:
                raise ApprovalConflict(f"'{actor.name}' has already approved request {req.id}"
                                       f" ({count} of {required} approvals; another "
                                       "approver is needed)", PENDING)
            current.approvals = (count, required)  # type: ignore[attr-defined]
            return current
        return self._finish(actor, req, APPROVED, "approve", note)

    def approvals(self, actor: Principal, id_or_prefix: str) -> dict[str, Any] | None:
        """`{"required": N, "approvers": [...]}` of a request with a quorum, else None."""
        req = self.get(actor, id_or_prefix)
        q = self.store.quorum(req.id)
        return None if q is None else {"required": q[0], "approvers": q[1]}

    def created_quorum_fields(self, actor: Principal, req: ApprovalRequest, replayed: bool
                              ) -> dict[str, dict[str, Any]]:
        """`quorum_fields` of a request just created (or replayed): looked up only when it
        can have a quorum — a replay (a `require` may have come since), or a pending request
        while some policy rule sets `approvals_required` — so a create pays no query for it
        in the usual case."""
        if req.status != PENDING:
            return {}
        if not replayed and not any("approvals_required" in r
                                    for r in self.store.list_rules()):
            return {}
        return self.quorum_fields(actor, [req])

    def quorum_fields(self, actor: Principal, reqs: builtins.list[ApprovalRequest]
                      ) -> dict[str, dict[str, Any]]:
        """The quorum of each request of `reqs` that has one, by id, as the request's JSON
        shows it: `{"approvals_required": N, "approvals": [approver, ...]}` (approvers in the
        order they approved). Requests needing one approval are left out. Only requests
        `actor` may see are looked up."""
        seen = [r.id for r in reqs if self._may_see(actor, r)]
        return {rid: {"approvals_required": q[0], "approvals": q[1]}
                for rid, q in self.store.quorums(seen).items()}

    def require_approvals(self, actor: Principal, id_or_prefix: str, required: int
                          ) -> ApprovalRequest:
        """Make a pending request need `required` distinct approvers (operators and admins).
        A requirement can be raised, never lowered (that would undo a rule's or another
        operator's demand): ApprovalConflict (409, exit 4) for a value at or below the
        current one, InvalidInput for one outside 2-10."""
        rbac.require(actor, rbac.DECIDE, "require approvals", self.store.tally)
        if isinstance(required, bool) or not isinstance(required, int) or \
                not 2 <= required <= MAX_APPROVALS:
            raise InvalidInput(f"approvals required must be a whole number from 2 to "
                               f"{MAX_APPROVALS}, got {required!r}")
        req = self.resolve(actor, id_or_prefix)
        if req.status != PENDING:
            raise ApprovalConflict(f"request {req.id} is no longer pending ({req.status}): "
                                   "its approvals cannot change", req.status)
        q = self.store.quorum(req.id)
        if q is not None and required <= q[0]:  # well-formed, but the request's state says no
            raise ApprovalConflict(f"request {req.id} already needs {q[0]} approvals; a "
                                   "requirement can only be raised", req.status)

        def change(r: ApprovalRequest) -> Change:
            return Change(request_id=r.id, actor=actor.name, action="require",
                          from_status=PENDING, to_status=PENDING, at=to_iso(self.clock()),
                          detail={"approvals_required": required})

        done = self.store.set_quorum(req.id, required, to_iso(self.clock()), change)
        if done is None:
            self._refuse_not_pending(req.id)
        return done

    def _barred_from_own(self, actor: Principal) -> str | None:
        """The self-approval rule, once: the name whose own requests `actor` may not decide
        (theirs), or None where `allow_self_approval` permits it. The step-by-step path
        checks it; the one-statement path hands it to the store's compare-and-set."""
        return None if self.settings.allow_self_approval else actor.name

    def _decide_at_once(self, actor: Principal, id_or_prefix: str, target: str, action: str,
                        note: str | None) -> ApprovalRequest | None:
        """The common case in one statement: a full id of a pending request that the actor
        may decide. None for anything else (a prefix, a bad note, a request that is not
        pending, someone's own request): the step-by-step path below then finds the exact
        answer. Deciders see every request, so there is no visibility check to skip."""
        try:
            rid = id_prefix(id_or_prefix)
        except InvalidInput:
            return None
        if len(rid) != 26:
            return None
        try:
            note = _text(note, "note", limit=MAX_TEXT)
        except InvalidInput:
            return None
        # what resolve() would have checked
        if not rbac.allowed(actor, rbac.READ_ALL, self.store.tally):
            return None
        now = self.clock()
        return self.store.transition(
            rid, target, to_iso(now), actor.name, note, timed=True,
            not_user=self._barred_from_own(actor),
            change_for=self._decision(actor, target, action, note),
            use_within=self._use_within(target))

    def decide_by_link(self, recipient: str, request_id: str, digest: str, action: str,
                       note: str | None = None) -> ApprovalRequest:
        """A decision from a verified decision link (approvalctl/notify/links.py).

        The decider is the link's recipient identity (`slack`, `email:ops@example.com`, ...)
        acting as an operator: the self-approval rule compares it with the requester, and
        the audit row names it. The link must name this request's digest (Forbidden
        otherwise); the decision is the ordinary compare-and-set, so a link used after any
        other decision gets ApprovalConflict (Expired once the request has expired).
        """
        actor = Principal(recipient, "operator")
        req = self.get(actor, request_id)
        if not hmac.compare_digest(str(req.digest or ""), str(digest)):
            raise Forbidden(f"this link was made for another version of request {req.id}")
        if req.user_id == recipient and not self.settings.allow_self_approval:
            raise Forbidden(f"'{recipient}' cannot {action} their own request {req.id}")
        note = _text(note, "note", limit=MAX_TEXT)
        if action == "approve":
            counted = self._approve_in_quorum(actor, req, note)
            if counted is not None:
                return counted
        return self._finish(actor, self._fresh(req), ACTIONS[action], action, note)

    def cancel(self, actor: Principal, id_or_prefix: str) -> ApprovalRequest:
        req = self.resolve(actor, id_or_prefix)
        if not (rbac.allowed(actor, rbac.CANCEL_ANY, self.store.tally) or
                (req.user_id == actor.name
                 and rbac.allowed(actor, rbac.CANCEL_OWN, self.store.tally))):
            raise Forbidden(f"role '{actor.role}' may not cancel request {req.id}")
        return self._finish(actor, req, CANCELLED, "cancel", None)

    def _finish(self, actor: Principal, req: ApprovalRequest, target: str, action: str,
                note: str | None) -> ApprovalRequest:
        if req.status == EXPIRED:
            raise Expired(f"request {req.id} has expired", EXPIRED)
        if not can_transition(req.status, target):
            raise ApprovalConflict(f"request {req.id} is already {req.status}", req.status)
        now = self.clock()
        done = self.store.transition(req.id, target, to_iso(now), actor.name, note,
                                     timed=target in DECIDED_BY_HUMAN, not_user=None,
                                     change_for=self._decision(actor, target, action, note),
                                     use_within=self._use_within(target))
        if done is None:
            self._refuse_not_pending(req.id)
        return done

    def _refuse_not_pending(self, request_id: str) -> NoReturn:
        """A compare-and-set on a pending request matched nothing: too late (expires_at
        passed, swept or not) or decided meanwhile. Record an expiry that is due, once, then
        raise Expired (exit 11, 409) or ApprovalConflict naming the status now."""
        self._expire_if_due(request_id)
        current = self.store.get_status(request_id)
        if current == EXPIRED:
            raise Expired(f"request {request_id} has expired", EXPIRED)
        raise ApprovalConflict(f"request {request_id} is already {current}", current)

    def _use_within(self, target: str) -> float | None:
        return self.settings.use_within if target == APPROVED else None

    def _decision(self, actor: Principal, target: str, action: str, note: str | None
                  ) -> Callable[[ApprovalRequest], Change]:
        """The change that moves a request from pending to `target`, built from the row as
        the compare-and-set returned it (its `decided_at` is the decision's time, by the
        database's clock on PostgreSQL)."""
        outbox = [(c, "decided") for c in self.settings.channels_for("decided")]

        def change(req: ApprovalRequest) -> Change:
            at = req.decided_at or to_iso(self.clock())
            response = max(0.0, (from_iso(at) - from_iso(req.created_at)).total_seconds())
            return Change(request_id=req.id, actor=actor.name, action=action,
                          from_status=PENDING, to_status=target, at=at,
                          detail={"note": note} if note else {},
                          counters=counters.for_decision(target, response), outbox=outbox)

        return change

    # ------------------------------------------------------------ expiry
    def _expiry_changes(self, now: str) -> Callable[[ApprovalRequest], Change]:
        """The change that expires a request, for a whole sweep as of `now`.

        A big sweep expires 100,000 requests: what every expiry shares (the time, the
        counters, the channels) is worked out once, not per request.
        """
        tally = counters.for_decision(EXPIRED, 0)
        outbox = [(c, "expired") for c in self.settings.channels_for("expired")]

        def change(req: ApprovalRequest) -> Change:
            return Change(request_id=req.id, actor=SYSTEM, action="expire",
                          from_status=PENDING, to_status=EXPIRED, at=req.decided_at or now,
                          detail={"expires_at": req.expires_at}, counters=tally, outbox=outbox)

        return change

    def sweep(self, actor: Principal | None = None) -> builtins.list[str]:
        """Expire every overdue pending request; safe to run anywhere, at any rate."""
        if actor is not None:
            rbac.require(actor, rbac.SWEEP, "sweep expired requests", self.store.tally)
        now = to_iso(self.clock())
        return self.store.expire_overdue(now, self._expiry_changes(now))

    def sweep_all(self, actor: Principal | None = None) -> dict[str, Any]:
        """What `approvalctl sweep` and `POST /api/v1/sweep` do: expire overdue requests,
        then queue the reminders and escalations due. Returns `{"expired", "ids",
        "reminders", "escalations", "no_channel"}` (`send_reminders`)."""
        ids = self.sweep(actor)
        return {"expired": len(ids), "ids": ids, **self.send_reminders(actor)}

    def _now_iso(self) -> str:
        """Now, by the clock that decides expiry: the database server's on PostgreSQL."""
        return self.store.db_now() or to_iso(self.clock())

    def _settle_overdue(self) -> None:
        """Before a read that counts or filters by status: record the expiry of overdue
        pending requests, best-effort (one indexed read when there are none; a brief write
        when there are, skipped if the database is busy or read-only)."""
        if not self.store.has_overdue(self._now_iso()):
            return
        with contextlib.suppress(Unavailable), self.store.brief_writes():
            self.sweep()

    def _expire_if_due(self, request_id: str) -> ApprovalRequest | None:
        """Expire one overdue pending request now (recorded once); None if not due."""
        now = to_iso(self.clock())
        return self.store.expire_one(request_id, now, self._expiry_changes(now))

    def _fresh(self, req: ApprovalRequest, now: str | None = None) -> ApprovalRequest:
        """`req`, or, if it is pending past its expiry, the same request expired now: a
        reader never sees an overdue request as pending, sweep or no sweep."""
        if req.status != PENDING or req.expires_at > (now or self._now_iso()):
            return req
        return self._expire_best_effort(req.id) or req

    # ------------------------------------------------------------ consume
    def consume(self, actor: Principal, id_or_prefix: str, digest: str) -> ApprovalRequest:
        """Use an approval, once, for the call whose digest is `digest` (DESIGN.md §10).

        By the requester or a decider. Raises ApprovalConflict (409) if the request is not
        approved or was already consumed, Expired (409, exit 11) past `use_by`, and
        DigestMismatch (422) if `digest` is not the approved call's.
        """
        if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
            raise InvalidInput("digest must be 'sha256:' followed by 64 lower-case hex digits")
        req = self._fresh(self.resolve(actor, id_or_prefix))
        if not (req.user_id == actor.name or rbac.allowed(actor, rbac.DECIDE, self.store.tally)):
            raise Forbidden(f"only the requester or an operator may consume request {req.id}")
        done = self.store.consume(req.id, digest, to_iso(self.clock()), self._consumption(actor))
        if done is not None:
            return done
        req = self.store.get(req.id) or req
        if req.status != APPROVED:
            raise (Expired if req.status == EXPIRED else ApprovalConflict)(
                f"request {req.id} is {req.status}, not approved", req.status)
        if req.digest != digest:
            raise DigestMismatch(f"digest {digest} is not that of the approved call "
                                 f"({req.digest})", req.status)
        if req.consumed_at:
            raise ApprovalConflict(f"request {req.id} was already consumed at "
                                   f"{req.consumed_at}", req.status)
        raise Expired(f"the approval of {req.id} was not used by {req.use_by}", "expired")

    def _consumption(self, actor: Principal) -> Callable[[ApprovalRequest], Change]:
        def change(req: ApprovalRequest) -> Change:
            return Change(request_id=req.id, actor=actor.name, action="consume",
                          from_status=APPROVED, to_status=APPROVED, at=req.consumed_at or "",
                          detail={"digest": req.digest},
                          counters=[(counters.CONSUMED, "", 1)])

        return change

    # ------------------------------------------------------------ wait
    def wait(self, actor: Principal, id_or_prefix: str, timeout: float | None,
             poll_interval: float = 0.2) -> ApprovalRequest:
        """Block until the request leaves pending or `timeout` seconds pass.

        Checks a few times a second whether anything changed at all (`store.change_marker`:
        SQLite's data_version, which reads no page, or the audit head's seq), and reads the
        row only when it did, so another process's decision is seen well within a second.
        A request past its expiry is expired here, so a waiter never outlives the TTL even
        when no sweep runs.
        """
        req = self.resolve(actor, id_or_prefix)
        deadline = None if timeout is None else time.monotonic() + timeout
        expires = from_iso(req.expires_at)
        marker = None
        while True:
            seen = self.store.change_marker()
            if seen != marker or self.clock() >= expires:
                marker = seen
                status = self.store.get_status(req.id)
                if status != PENDING:
                    return self.store.get(req.id)  # type: ignore[return-value]
                fresh = self._fresh(req)
                if fresh.status != PENDING:
                    return fresh
            if deadline is not None and time.monotonic() >= deadline:
                return self.store.get(req.id)  # type: ignore[return-value]
            pause = poll_interval
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            time.sleep(pause)

    def _expire_best_effort(self, request_id: str) -> ApprovalRequest:
        """An overdue request as a read reports it: expired. The expiry of this one request
        is recorded (once: a compare-and-set) if the database takes the write at once; when
        it is busy, full or read-only the read still answers (a decision past `expires_at`
        is refused anyway, and the next sweep records it) — a read never fails or hangs on a
        write it did not need."""
        try:
            with self.store.brief_writes():
                done = self._expire_if_due(request_id)
            if done is not None:
                return done
        except Unavailable:
            pass
        req = self.store.get(request_id)
        if req is not None and req.status == PENDING:
            return dataclasses.replace(req, status=EXPIRED)
        return req  # type: ignore[return-value]

    # ------------------------------------------------------------ stats
    def stats(self, actor: Principal, since_seconds: float = 86400) -> dict[str, Any]:
        rbac.require(actor, rbac.STATS, "read stats", self.store.tally)
        self._settle_overdue()  # counted as expired, not pending, sweep or no sweep
        now = self.clock()
        since = now - timedelta(seconds=since_seconds)
        raw = self.store.stats(to_iso(since))
        by_status = {s: int(raw["by_status"].get(s, 0)) for s in STATUSES}
        decided = by_status[APPROVED] + by_status[REJECTED]
        oldest = raw["oldest_pending_created_at"]

        def secs(ms: float | None) -> float | None:
            return None if ms is None else round(ms / 1000, 3)

        return {
            "since": to_iso(since),
            "window_seconds": since_seconds,
            "total": sum(by_status.values()),
            "by_status": by_status,
            "approval_rate": round(by_status[APPROVED] / decided, 4) if decided else None,
            "rejection_rate": round(by_status[REJECTED] / decided, 4) if decided else None,
            "response_time_seconds": {"avg": secs(raw["avg_ms"]), "p50": secs(raw["p50"]),
                                      "p95": secs(raw["p95"])},
            "oldest_pending_age_seconds": round((now - from_iso(oldest)).total_seconds(), 3)
            if oldest else None,
        }

    #: Upper edges (seconds) of the response-time histogram's buckets; the last is open.
    HISTOGRAM_EDGES = (1, 5, 15, 60, 300, 900, 3600, 14400)
    #: At most this many groups in a breakdown (the largest), so a response stays bounded.
    MAX_GROUPS = 200

    def stats_detail(self, actor: Principal, since_seconds: float = 86400,
                     by: str | None = None) -> dict[str, Any]:
        """`stats` plus a breakdown and the figures behind the charts.

        `by` is tool, user or risk (or None): `groups` lists, largest first (at most
        MAX_GROUPS; `groups_truncated` says when more existed), each group's count by status,
        approval rate and response times (avg/p50/p95, nearest rank, seconds).
        `response_time_histogram` counts decided requests per bucket (`le` is the bucket's
        upper edge in seconds, null for the last, open one); `decisions_per_hour` counts the
        approvals and rejections decided in each of the last 24 hours (oldest first), among
        the requests created in the window. Raises InvalidInput for an unknown `by`.
        """
        if by is not None and by not in self.store.STATS_GROUPS:
            raise InvalidInput(f"unknown breakdown {by!r}: expected one of "
                               f"{', '.join(self.store.STATS_GROUPS)}")
        result = self.stats(actor, since_seconds)
        now = self.clock()
        rows = self.store.stats_rows(result["since"], by)
        edges = self.HISTOGRAM_EDGES
        histogram = [0] * (len(edges) + 1)
        hours = [[0, 0] for _ in range(24)]
        groups: dict[Any, list[Any]] = {}
        for key, status, response_ms, decided_at in rows:
            if response_ms is not None:
                seconds = response_ms / 1000
                histogram[next((i for i, e in enumerate(edges) if seconds <= e),
                               len(edges))] += 1
            if decided_at and status in (APPROVED, REJECTED):
                ago = (now - from_iso(decided_at)).total_seconds() // 3600
                if 0 <= ago < 24:
                    hours[23 - int(ago)][status == REJECTED] += 1
            if by is not None:
                counts, times = groups.setdefault(key, [dict.fromkeys(STATUSES, 0), []])
                counts[status] += 1
                if response_ms is not None:
                    times.append(response_ms)
        result["response_time_histogram"] = [
            {"le": e, "count": c} for e, c in zip([*edges, None], histogram)]
        result["decisions_per_hour"] = [
            {"hour": to_iso(now - timedelta(hours=23 - i)), "approved": a, "rejected": r}
            for i, (a, r) in enumerate(hours)]
        if by is None:
            return result

        def group(key: Any, counts: dict[str, int], times: list[float]) -> dict[str, Any]:
            decided = counts[APPROVED] + counts[REJECTED]
            times.sort()

            def rank(q: float) -> float | None:
                return round(times[min(len(times) - 1, int(q * len(times)))] / 1000, 3) \
                    if times else None

            return {"key": key, "total": sum(counts.values()), "by_status": counts,
                    "approval_rate": round(counts[APPROVED] / decided, 4) if decided else None,
                    "response_time_seconds": {
                        "avg": round(sum(times) / len(times) / 1000, 3) if times else None,
                        "p50": rank(0.50), "p95": rank(0.95)}}

        ordered = sorted(groups.items(), key=lambda kv: (-sum(kv[1][0].values()), kv[0]))
        result["by"] = by
        result["groups"] = [group(k, c, t) for k, (c, t) in ordered[:self.MAX_GROUPS]]
        result["groups_truncated"] = len(ordered) > self.MAX_GROUPS
        return result

    # ------------------------------------------------------------ audit
    def audit_list(self, actor: Principal, *, request_id: str | None = None,
                   limit: int | None = None) -> builtins.list[dict[str, Any]]:
        """The audit rows (of one request, or the `limit` most recent), oldest first, each
        with its `detail` decoded. InvalidInput for a `limit` outside 1-100000 (the bound the
        HTTP API's spec sets, so local and remote refuse alike)."""
        rbac.require(actor, rbac.AUDIT, "read the audit trail", self.store.tally)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or not 1 <= limit <= MAX_AUDIT_ROWS):
            raise InvalidInput(f"limit must be a whole number from 1 to {MAX_AUDIT_ROWS}, "
                               f"got {limit!r}")
        if request_id:
            request_id = self.resolve(actor, request_id).id
        rows = self.store.audit_rows(request_id=request_id, limit=limit, newest_first=True)
        rows.reverse()
        for row in rows:
            row["detail"] = json.loads(row["detail"])
        return rows

    def audit_verify(self, actor: Principal, anchors: builtins.list[str] | tuple[str, ...] = ()
                     ) -> audit.VerifyResult:
        """The chain, each anchor (`SEQ:HASH` as `audit anchor` prints it) and every
        request row against its last audit row; the first problem found is named."""
        rbac.require(actor, rbac.AUDIT, "verify the audit trail", self.store.tally)
        if len(anchors) > audit.MAX_ANCHORS:
            raise InvalidInput(f"at most {audit.MAX_ANCHORS} anchors at a time")
        try:
            parsed = [audit.parse_anchor(a) for a in anchors]
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        return self.store.verify_audit(parsed)

    def audit_anchor(self, actor: Principal) -> dict[str, Any]:
        """`{"seq": N, "hash": "…"}` of the chain's newest row, to keep outside the database."""
        rbac.require(actor, rbac.AUDIT, "read the audit trail", self.store.tally)
        seq, head = self.store.audit_head()
        return {"seq": seq, "hash": head}

    # ------------------------------------------------------------ retention
    def prune(self, actor: Principal, older_than_seconds: float, *,
              dry_run: bool = False) -> dict[str, Any]:
        """Delete final requests created and decided more than `older_than_seconds` ago,
        and their outbox rows. Each gets a `prune` audit row recording the deleted row, so
        `audit verify` still holds; audit rows themselves are never deleted.

        Returns `{"cutoff", "dry_run", "requests", "outbox"}` (counts deleted, or that would
        be with `dry_run`). InvalidInput below MIN_PRUNE_AGE.
        """
        rbac.require(actor, rbac.PRUNE, "prune old requests", self.store.tally)
        if isinstance(older_than_seconds, bool) or \
                not isinstance(older_than_seconds, (int, float)) or \
                not MIN_PRUNE_AGE <= older_than_seconds <= MAX_PRUNE_AGE:
            raise InvalidInput(f"older-than must be between {MIN_PRUNE_AGE // 86400} day and "
                               f"{MAX_PRUNE_AGE // 86400} days, got {older_than_seconds!r} seconds")
        now = self.clock()
        cutoff = to_iso(now - timedelta(seconds=older_than_seconds))
        if dry_run:
            n, m = self.store.count_prunable(cutoff)
        else:
            at = to_iso(now)

            def change(req: ApprovalRequest) -> Change:
                return Change(request_id=req.id, actor=actor.name, action=audit.PRUNE,
                              from_status=req.status, to_status="pruned", at=at,
                              detail={"cutoff": cutoff})

            n, m = self.store.prune(cutoff, change)
        return {"cutoff": cutoff, "dry_run": dry_run, "requests": n, "outbox": m}

    # ------------------------------------------------------------ policy rules
    def list_rules(self, actor: Principal) -> builtins.list[dict[str, Any]]:
        """The policy rules in evaluation order."""
        rbac.require(actor, rbac.MANAGE_RULES, "read policy rules", self.store.tally)
        return [policy.ordered(r) for r in self.store.list_rules()]

    def add_rule(self, actor: Principal, rule: dict[str, Any], *,
                 before: str | None = None) -> dict[str, Any]:
        """Add a rule at the end, or just before the rule named `before`; returns it as
        stored. InvalidInput for a rule that is malformed or can never match, Conflict for
        a name in use, NotFound for an unknown `before`."""
        rbac.require(actor, rbac.MANAGE_RULES, "change policy rules", self.store.tally)
        checked = _checked_rule(rule)
        problem = self._unknown_channel(checked)
        if problem:
            raise InvalidInput(problem)

        def edit(rules: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Change]:
            names = [r["name"] for r in rules]
            if checked["name"] in names:
                raise ApprovalConflict(f"a policy rule named {checked['name']!r} already "
                                       "exists (remove it first)")
            if len(rules) >= policy.MAX_RULES:
                raise InvalidInput(f"at most {policy.MAX_RULES} policy rules")
            at = len(rules)
            if before is not None:
                if before not in names:
                    raise NotFound(f"no policy rule named {before!r} (for --before)")
                at = names.index(before)
            return (rules[:at] + [checked] + rules[at:],
                    self._rule_change(actor, "rule_add", {"rule": checked, "position": at}))

        self.store.change_rules(edit)
        return checked

    def remove_rule(self, actor: Principal, name: str) -> dict[str, Any]:
        """Remove the rule named `name` and return it; NotFound if there is none."""
        rbac.require(actor, rbac.MANAGE_RULES, "change policy rules", self.store.tally)
        removed: list[dict[str, Any]] = []

        def edit(rules: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Change]:
            kept = [r for r in rules if r["name"] != name]
            if len(kept) == len(rules):
                raise NotFound(f"no policy rule named {name!r}")
            gone = next(r for r in rules if r["name"] == name)
            removed.append(gone)
            return kept, self._rule_change(actor, "rule_remove", {"rule": gone})

        self.store.change_rules(edit)
        return policy.ordered(removed[-1])

    def import_rules(self, actor: Principal, rules: Any, *, replace: bool = False
                     ) -> builtins.list[dict[str, Any]]:
        """Append `rules` (or with `replace`, make them the whole policy) all at once. Any
        error refuses the whole import, and the InvalidInput lists every error in its one
        line, separated by '; '."""
        rbac.require(actor, rbac.MANAGE_RULES, "change policy rules", self.store.tally)
        good, errors = policy.check_rules(rules, parse_ttl=_parse_ttl)
        errors += [f"rule {i}: {p}" for i, p in enumerate(map(self._unknown_channel, good), 1)
                   if p]
        if errors:
            raise InvalidInput(f"{len(errors)} error(s), nothing imported: " +
                               "; ".join(errors))

        def edit(current: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Change]:
            kept = [] if replace else current
            clash = sorted({r["name"] for r in kept} & {r["name"] for r in good})
            if clash:
                raise ApprovalConflict(f"policy rule {clash[0]!r} already exists, nothing "
                                       "imported (use --replace to replace the whole policy)")
            if len(kept) + len(good) > policy.MAX_RULES:
                raise InvalidInput(f"at most {policy.MAX_RULES} policy rules")
            return kept + good, self._rule_change(
                actor, "rules_import", {"replace": replace, "rules": good})

        self.store.change_rules(edit)
        return [policy.ordered(r) for r in self.store.list_rules()]

    def _unknown_channel(self, rule: dict[str, Any]) -> str | None:
        """Why a checked rule's `escalate_to` cannot be honoured (a channel this server's
        config does not have), or None."""
        known = self.settings.channel_names()
        for channel in rule.get("escalate_to") or ():
            if channel not in known:
                return (f"rule {rule['name']!r}: escalate_to: channel {channel!r} is not "
                        f"configured (configured: {', '.join(known) or 'none'})")
        return None

    # ------------------------------------------------------------ reminders and escalation
    def send_reminders(self, actor: Principal | None = None) -> dict[str, int]:
        """Queue the reminders and escalations now due (docs/away.md): for each pending
        request, once `remind_after` has passed its `created` channels get a reminder, once
        `escalate_after` has passed its `escalate_to` channels get an escalation — each at
        most once, however many servers and cron jobs call this at the same moment (the
        store's claim decides). The rule that asked for a request sets its times; the
        config's `notifications.remind_after` / `escalate_after` / `escalate_to` apply
        otherwise.

        Only this config's channels are used: a due step none of whose channels this config
        has is left unclaimed for a sweeper whose config has them (a claim is final), and a
        step's messages go only to the channels this config has. Returns `{"reminders": n,
        "escalations": m, "no_channel": k}`: the steps this call queued, and the due steps
        it left for want of a channel.
        """
        if actor is not None:
            rbac.require(actor, rbac.SWEEP, "send reminders", self.store.tally)
        remind_after, escalate_after, escalate_to = self.settings.reminders()
        if remind_after is None and escalate_after is None and not self._rules_remind():
            return {"reminders": 0, "escalations": 0, "no_channel": 0}
        got = self.store.queue_steps(
            now=to_iso(self.clock()), remind_after=remind_after,
            escalate_after=escalate_after, remind_channels=self.settings.channels_for("created"),
            escalate_to=escalate_to, channels=self.settings.channel_names())
        return {"reminders": sum(1 for _, step in got.queued if step == "remind"),
                "escalations": sum(1 for _, step in got.queued if step == "escalate"),
                "no_channel": len(got.no_channel)}

    def _rules_remind(self) -> bool:
        """Whether a policy rule schedules reminders now (else, with none in the config, a
        sweep has nothing to look for; removing the last such rule also stops the steps of
        the requests it asked for that are still to come)."""
        return any(schedule_of(r) for r in self.store.list_rules())

    def test_rule(self, actor: Principal, tool_name: str, arguments: Any = None
                  ) -> dict[str, Any]:
        """Dry run: what the policy would do with this call, and which rule says so."""
        rbac.require(actor, rbac.MANAGE_RULES, "test policy rules", self.store.tally)
        arguments = {} if arguments is None else arguments
        if not isinstance(arguments, dict):
            raise InvalidInput(f"arguments must be a JSON object, not {_json_type(arguments)}")
        tool_name = _text(tool_name, "tool_name", required=True, limit=MAX_TOOL_NAME)
        rule = self._policy_for(tool_name, arguments)
        return {"tool_name": tool_name, "action": rule["action"] if rule
                else self.settings.policy_default, "rule": rule["name"] if rule else None}

    def approve_always(self, actor: Principal, id_or_prefix: str, note: str | None = None
                       ) -> tuple[ApprovalRequest, dict[str, Any]]:
        """Approve a request and add an allow rule for exactly its tool and arguments,
        named `always-<id>`, checked before anything is approved.

        Refused (ApprovalConflict) for a request with a quorum: one person's "yes, always"
        would let that call through from then on without the other approvers. The rule is
        added only if this decision approved the request (a `require` that came in
        meanwhile leaves it pending: no rule)."""
        req = self.resolve(actor, id_or_prefix)
        rule = _checked_rule(policy.exact_rule(f"always-{req.id}", req.tool_name,
                                               req.arguments, note=note))
        rbac.require(actor, rbac.MANAGE_RULES, "add policy rules", self.store.tally)
        self._refuse_always_with_quorum(req)
        done = self.decide(actor, req.id, "approve", note)
        if done.status != APPROVED or self.store.quorum(req.id) is not None:
            raise ApprovalConflict(f"request {req.id} needs more than one approver, so no "
                                   f"'always' rule was added (your approval was counted: "
                                   f"{done.status})", done.status)
        return done, self.add_rule(actor, rule)

    def _refuse_always_with_quorum(self, req: ApprovalRequest) -> None:
        q = self.store.quorum(req.id)
        if q is not None:
            raise ApprovalConflict(f"request {req.id} needs {q[0]} approvals: --always would "
                                   "let one person allow this call from now on; approve it "
                                   "without --always", req.status)

    def _rule_change(self, actor: Principal, action: str, detail: dict[str, Any]) -> Change:
        """A policy or API-key change as an audit row: no request, so `request_id` is empty
        (never a key's secret or its hash in `detail`)."""
        return Change(request_id=None, actor=actor.name, action=action,  # type: ignore[arg-type]
                      from_status=None, to_status=None,  # type: ignore[arg-type]
                      at=to_iso(self.clock()), detail=detail)

    # ------------------------------------------------------------ API keys
    def create_key(self, actor: Principal, name: str, role: str,
                   expires_seconds: float | None = None) -> tuple[str, dict[str, Any]]:
        """A new key: returns the secret (shown once, never stored) and its public record."""
        rbac.require(actor, rbac.MANAGE_KEYS, "manage API keys", self.store.tally)
        name = _text(name, "key name", required=True, limit=100)
        if not KEY_NAME.fullmatch(name):
            raise InvalidInput(f"invalid key name {name!r}: use letters, digits and _ . @ -, "
                               "starting with a letter or digit")
        if role not in rbac.ROLES:
            raise InvalidInput(f"unknown role {role!r}: expected one of {', '.join(rbac.ROLES)}")
        if self.store.get_key(name=name):
            raise ApprovalConflict(f"an API key named {name!r} already exists")
        now = self.clock()
        key_id, secret = keys.generate()
        row = {"name": name, "key_id": key_id, "secret_hash": keys.digest(secret), "role": role,
               "created_at": to_iso(now), "created_by": actor.name,
               "expires_at": to_iso(now + timedelta(seconds=expires_seconds))
               if expires_seconds else None}
        self.store.insert_key(row, (counters.ROLE_ASSIGNMENTS, counters.labels(role=role), 1),
                              self._rule_change(actor, "key_create", {
                                  "name": name, "role": role,
                                  "expires_at": row["expires_at"]}))
        return secret, _public_key(row)

    def list_keys(self, actor: Principal) -> builtins.list[dict[str, Any]]:
        rbac.require(actor, rbac.MANAGE_KEYS, "manage API keys", self.store.tally)
        now = to_iso(self.clock())
        return [_public_key(k, now) for k in self.store.list_keys()]

    def revoke_key(self, actor: Principal, name: str) -> None:
        rbac.require(actor, rbac.MANAGE_KEYS, "manage API keys", self.store.tally)
        if not self.store.get_key(name=name):
            raise NotFound(f"no API key named {name!r}")
        if not self.store.revoke_key(name, to_iso(self.clock()),
                                     self._rule_change(actor, "key_revoke", {"name": name})):
            raise ApprovalConflict(f"API key {name!r} is already revoked")

    # ---- the notification outbox and the schema (local faces: `notify`, `migrate --list`)
    def list_outbox(self, actor: Principal, *, status: str | None = None,
                    limit: int = 100) -> builtins.list[dict[str, Any]]:
        """Outbox rows newest first (each carries its request's snapshot, so reading them
        needs read_all). InvalidInput for an unknown `status` or `limit` outside 1-10000."""
        from .store.outbox import OUTBOX_STATUSES

        rbac.require(actor, rbac.READ_ALL, "read the notification outbox", self.store.tally)
        if status is not None and status not in OUTBOX_STATUSES:
            raise InvalidInput(f"unknown status {status!r}: expected one of "
                               f"{', '.join(OUTBOX_STATUSES)}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10000:
            raise InvalidInput(f"limit must be between 1 and 10000, got {limit}")
        return self.store.list_outbox(status=status, limit=limit)

    def retry_notification(self, actor: Principal, outbox_id: int | None = None
                           ) -> dict[str, Any] | int:
        """Make one outbox row (failed or pending) due now and return it, or with no
        `outbox_id` every failed row, returning how many. Operators may (as they may
        sweep). NotFound for no such row; ApprovalConflict for a row already sent."""
        rbac.require(actor, rbac.SWEEP, "retry notifications", self.store.tally)
        now = to_iso(self.clock())
        if outbox_id is None:
            return self.store.requeue_outbox(now=now)
        row = self.store.get_outbox(outbox_id)
        if row is None:
            raise NotFound(f"no notification #{outbox_id} in the outbox")
        if row["status"] == "sent":
            raise ApprovalConflict(f"notification #{outbox_id} was already sent at "
                                   f"{row['sent_at']}", "sent")
        self.store.requeue_outbox(now=now, outbox_id=outbox_id)
        return row

    def migration_state(self, actor: Principal) -> builtins.list[dict[str, str | None]]:
        """Every schema migration with `name` and `applied_at` (None when pending)."""
        rbac.require(actor, rbac.STATS, "read the schema state", self.store.tally)
        return self.store.migration_state()

    def authenticate(self, secret: str | None) -> Principal:
        """The principal of an API key; Unauthenticated for anything else."""
        return self._principal(*_parsed_key(secret))  # parsed once: it carries a checksum

    @staticmethod
    def well_formed_key(secret: str | None) -> str:
        """The key itself if it is present and well-formed (no database needed), else
        Unauthenticated."""
        return _parsed_key(secret)[0]

    def principal_of(self, secret: str) -> Principal:
        """The principal of a well-formed key, looked up now: unknown, revoked and expired
        keys fail here, on the first request after the change."""
        return self._principal(secret, keys.parse(secret))

    def _principal(self, secret: str, key_id: str | None) -> Principal:
        row = self.store.get_key(key_id=key_id) if key_id is not None else None
        if row is None or not keys.matches(secret, row["secret_hash"]):
            raise Unauthenticated("unknown API key")
        if row["revoked_at"]:
            raise Unauthenticated(f"API key {row['name']!r} has been revoked")
        if row["expires_at"] and row["expires_at"] <= to_iso(self.clock()):
            raise Unauthenticated(f"API key {row['name']!r} has expired")
        return Principal(name=row["name"], role=row["role"])


# ---------------------------------------------------------------- helpers
def _parsed_key(secret: str | None) -> tuple[str, str]:
    """(the key, its key id) if `secret` is present and well-formed, else Unauthenticated."""
    if not secret:
        raise Unauthenticated("missing API key (send X-API-Key or Authorization: Bearer)")
    secret = secret.strip()
    key_id = keys.parse(secret)
    if key_id is None:
        raise Unauthenticated("malformed API key (check for a typo)")
    return secret, key_id


def _tool_name(value: Any) -> str:
    """`value` if it is a valid tool name (TOOL_NAME), else InvalidInput saying why."""
    if not isinstance(value, str):
        raise InvalidInput(f"tool_name must be a string, not {_json_type(value)}")
    if not value:
        raise InvalidInput("tool_name is required")
    if len(value) > MAX_TOOL_NAME:
        raise InvalidInput(f"tool_name is longer than {MAX_TOOL_NAME} characters")
    if not TOOL_NAME.fullmatch(value):
        bad = next(c for c in value if not TOOL_NAME.fullmatch(c))
        raise InvalidInput(f"tool_name contains {ascii(bad)}: use 1-{MAX_TOOL_NAME} "
                           "characters of A-Z a-z 0-9 and _ . : / @ + -")
    return value


def _parse_ttl(text: str) -> float:
    """A rule's duration (ttl, remind_after, escalate_after); the caller names the field."""
    from .durations import parse_duration

    return parse_duration(text)


def _checked_rule(rule: Any) -> dict[str, Any]:
    try:
        return policy.check_rule(rule, parse_ttl=_parse_ttl)
    except (policy.RuleError, InvalidInput) as exc:
        raise InvalidInput(str(exc)) from None


@overload
def _text(value: Any, what: str, *, required: Literal[True], limit: int) -> str: ...
@overload
def _text(value: Any, what: str, *, required: bool = False, limit: int) -> str | None: ...
def _text(value: Any, what: str, *, required: bool = False, limit: int) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip() and not required):
        if required:
            raise InvalidInput(f"{what} is required")
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, not {_json_type(value)}")
    if required and not value.strip():
        raise InvalidInput(f"{what} must not be empty")
    if len(value) > limit:
        raise InvalidInput(f"{what} is longer than {limit} characters")
    if "\x00" in value:
        raise InvalidInput(f"{what} must not contain NUL characters")
    return value


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _public_key(row: dict[str, Any], now: str | None = None) -> dict[str, Any]:
    state = "active"
    if row.get("revoked_at"):
        state = "revoked"
    elif row.get("expires_at") and now and row["expires_at"] <= now:
        state = "expired"
    return {"name": row["name"], "role": row["role"], "key_prefix": f"{keys.PREFIX}"
            f"{row['key_id']}_", "created_at": row["created_at"],
            "created_by": row["created_by"], "expires_at": row.get("expires_at"),
            "revoked_at": row.get("revoked_at"), "state": state}


def _encode_cursor(last_id: str, descending: bool) -> str:
    return ("d" if descending else "a") + last_id


def _decode_cursor(cursor: str, descending: bool) -> str:
    if len(cursor) != 27 or cursor[0] != ("d" if descending else "a") or \
            not cursor[1:].isalnum():
        raise InvalidInput(f"invalid cursor {cursor!r} (use next_cursor from a previous page "
                           "with the same filters)")
    return cursor[1:]
