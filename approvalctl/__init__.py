"""approvalctl: a human operator between AI agents and the risky tool calls they make.

The public API is what `__all__` names. Imports are lazy so the CLI starts fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "ApprovalConflict",
    "ApprovalDenied",
    "ApprovalRequest",
    "ApprovalService",
    "ApprovalctlError",
    "AsyncClient",
    "Client",
    "Forbidden",
    "IdempotencyMismatch",
    "InvalidInput",
    "NotFound",
    "Principal",
    "RateLimited",
    "Settings",
    "Unauthenticated",
    "Unavailable",
    "__version__",
    "open_store",
    "require_approval",
]

_WHERE = {
    "ApprovalRequest": "models",
    "Principal": "models",
    "ApprovalService": "service",
    "Settings": "config",
    "Client": "client",
    "AsyncClient": "client",
    "ApprovalDenied": "client",
    "require_approval": "client",
    "open_store": "store",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    if name in __all__:
        return getattr(importlib.import_module(".errors", __name__), name)
    raise AttributeError(f"module 'approvalctl' has no attribute {name!r}")
