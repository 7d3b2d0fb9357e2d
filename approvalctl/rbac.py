"""Who may do what: the role matrix of docs/design.md section 5, enforced in one place.

    user      create; read and cancel their own requests
    viewer    read all requests; stats
    operator  viewer + approve/reject/cancel any request; sweep; policy rules
    admin     operator + creating requests, API keys, the audit trail and pruning

Admin may also create requests (as docs/design.md's matrix says) because the local CLI acts as
admin: an admin key gives the remote CLI everything the local one can do. Every `allowed`
check is counted in `rbac_permission_checks_total{result}` (`sees_all` is not a check), in the
counter buffer the caller passes: the store's `tally`, which inside a unit of work of the
server's write path is that unit's own (server/writepath.py).
"""

from __future__ import annotations

from . import counters
from .errors import Forbidden
from .models import Principal

ROLES = ("user", "viewer", "operator", "admin")

CREATE = "create"
READ_OWN = "read_own"
CANCEL_OWN = "cancel_own"
READ_ALL = "read_all"
STATS = "stats"
DECIDE = "decide"
CANCEL_ANY = "cancel_any"
SWEEP = "sweep"
MANAGE_KEYS = "manage_keys"
AUDIT = "audit"
PRUNE = "prune"
MANAGE_RULES = "manage_rules"

_USER = frozenset({CREATE, READ_OWN, CANCEL_OWN})
_VIEWER = frozenset({READ_OWN, READ_ALL, STATS})
_OPERATOR = _VIEWER | {DECIDE, CANCEL_ANY, CANCEL_OWN, SWEEP, MANAGE_RULES}
_ADMIN = _OPERATOR | {CREATE, MANAGE_KEYS, AUDIT, PRUNE}

PERMISSIONS: dict[str, frozenset[str]] = {
    "user": _USER,
    "viewer": _VIEWER,
    "operator": _OPERATOR,
    "admin": _ADMIN,
}


_ALLOWED = counters.labels(result="allowed")
_DENIED = counters.labels(result="denied")


def allowed(principal: Principal, permission: str, tally: counters.CounterBuffer) -> bool:
    """Whether `principal` holds `permission`; the check is counted in `tally`."""
    ok = permission in PERMISSIONS.get(principal.role, frozenset())
    tally.add(counters.RBAC_CHECKS, _ALLOWED if ok else _DENIED)
    return ok


def require(principal: Principal, permission: str, doing: str,
            tally: counters.CounterBuffer) -> None:
    """Raise Forbidden unless `principal` holds `permission` (counted in `tally`)."""
    if not allowed(principal, permission, tally):
        raise Forbidden(f"role '{principal.role}' of '{principal.name}' may not {doing}")


def sees_all(principal: Principal) -> bool:
    """Whether the principal reads every request, or only their own."""
    return READ_ALL in PERMISSIONS.get(principal.role, frozenset())
