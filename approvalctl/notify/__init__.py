"""Notifications: Slack, e-mail and signed webhooks, delivered from the durable outbox.

    config    the `notifications:` block: JSON Schema, secrets from the environment
    messages  template files (overridable) and the values filled into them
    channels  one delivery attempt per channel; DeliveryError says transient or permanent
    retry     the tenacity policy: when to retry, how long to wait, when to dead-letter
    worker    claim due rows, deliver, record; `start_background` for `serve`

Outbox rows are written with the state change that causes them (`approvalctl.service`);
nothing here runs in the decision path.
"""

from __future__ import annotations

__all__ = ["load_config", "process_due", "run_once", "start_background"]


def __getattr__(name: str):  # lazy: importing the package must not pull in httpx/tenacity
    if name == "load_config":
        from .config import load_config

        return load_config
    if name in ("process_due", "run_once", "start_background"):
        from . import worker

        return getattr(worker, name)
    raise AttributeError(f"module 'approvalctl.notify' has no attribute {name!r}")
