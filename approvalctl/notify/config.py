"""The `notifications:` block of the config file, resolved into channel settings.

The block's JSON Schema is part of the config file's one schema (`config.SCHEMA`).
`load_config()` validates the block against it, then resolves what the schema cannot
check: secrets named by environment variable must be set, a Slack channel has exactly one
URL source, a login has both a user name and a password. Every problem is an `InvalidInput`
naming the key (`notifications.webhooks[0].secret_env: ...`), so `approvalctl` exits 2 with
one clear line, at start-up rather than at the first delivery.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import NOTIFICATIONS_SCHEMA, validate_config
from ..errors import InvalidInput

SCHEMA = NOTIFICATIONS_SCHEMA  # the `notifications:` block's part of config.SCHEMA

DEFAULT_TIMEOUT = 10.0
#: Leave this much of a lease unused before an attempt starts, beyond the send timeout,
#: so an attempt never outlives the lease that makes it exclusive.
LEASE_MARGIN = 1.0


@dataclass
class SlackConfig:
    url: str
    events: list[str]
    timeout: float = DEFAULT_TIMEOUT


@dataclass
class EmailConfig:
    host: str
    sender: str
    to: list[str]
    events: list[str]
    port: int = 587
    starttls: bool = True
    ssl: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT


@dataclass
class WebhookConfig:
    url: str
    secret: str = field(repr=False)
    events: list[str]
    timeout: float = DEFAULT_TIMEOUT


@dataclass
class NtfyConfig:
    """An ntfy server (ntfy.sh or self-hosted) and the topic published to."""

    url: str
    topic: str
    events: list[str]
    token: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT


@dataclass
class RetrySettings:
    max_attempts: int = 8
    initial_delay: float = 10.0
    max_delay: float = 3600.0


@dataclass
class WorkerSettings:
    poll_interval: float = 2.0
    #: How long a claimed row stays leased: longer than the slowest send (timeout).
    lease: float = 120.0
    batch: int = 10


@dataclass
class NotifyConfig:
    """The resolved notification settings: channels by name, retry and worker settings."""

    slack: SlackConfig | None = None
    email: EmailConfig | None = None
    webhooks: list[WebhookConfig] = field(default_factory=list)
    ntfy: NtfyConfig | None = None
    retry: RetrySettings = field(default_factory=RetrySettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    templates_dir: str | None = None
    #: `public_url` from the config: messages about pending requests carry decision links.
    public_url: str | None = None

    def channel_names(self) -> list[str]:
        names = [n for n in ("slack", "email", "ntfy") if getattr(self, n) is not None]
        return names + [f"webhook:{i}" for i in range(len(self.webhooks))]

    def channel(self, name: str
                ) -> SlackConfig | EmailConfig | WebhookConfig | NtfyConfig | None:
        if name in ("slack", "email", "ntfy"):
            return getattr(self, name)
        if name.startswith("webhook:") and name[8:].isdigit():
            i = int(name[8:])
            return self.webhooks[i] if i < len(self.webhooks) else None
        return None


def _seconds(value: Any, where: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, (int, float)):
        return float(value)
    from ..durations import parse_duration

    return parse_duration(value, what=where)


def _secret(env: Mapping[str, str], name: str, where: str) -> str:
    value = env.get(name)
    if not value:
        raise InvalidInput(f"{where}: environment variable {name} is not set")
    return value


def validate(block: Any) -> None:
    """Raise InvalidInput naming the first bad key of a `notifications:` block."""
    if block:
        validate_config({"notifications": block})


def load_config(block: Any, *, env: Mapping[str, str] | None = None,
                templates_dir: str | None = None) -> NotifyConfig:
    """Validate a `notifications:` block and resolve its secrets from `env`."""
    env = os.environ if env is None else env
    validate(block)
    block = block or {}
    cfg = NotifyConfig(templates_dir=templates_dir)
    try:
        if "slack" in block:
            s = block["slack"]
            where = "notifications.slack"
            if ("webhook_url" in s) == ("webhook_url_env" in s):
                raise InvalidInput(f"{where}: set exactly one of webhook_url or "
                                   "webhook_url_env")
            url = s.get("webhook_url") or _secret(env, s["webhook_url_env"],
                                                  f"{where}.webhook_url_env")
            if not url.startswith(("http://", "https://")):
                raise InvalidInput(f"{where}.webhook_url_env: {s['webhook_url_env']} does not "
                                   "hold an http(s) URL")
            cfg.slack = SlackConfig(url=url, events=list(s["events"]),
                                    timeout=_seconds(s.get("timeout"), f"{where}.timeout",
                                                     DEFAULT_TIMEOUT))
        if "email" in block:
            e = block["email"]
            where = "notifications.email"
            if ("username" in e) != ("password_env" in e):
                raise InvalidInput(f"{where}: a login needs both username and password_env")
            if e.get("ssl") and e.get("starttls"):
                raise InvalidInput(f"{where}: use either ssl (port 465) or starttls, not both")
            ssl = bool(e.get("ssl", False))
            cfg.email = EmailConfig(
                host=e["host"], sender=e["from"], to=list(e["to"]), events=list(e["events"]),
                port=e.get("port", 465 if ssl else 587), ssl=ssl,
                starttls=bool(e.get("starttls", not ssl)), username=e.get("username"),
                password=_secret(env, e["password_env"], f"{where}.password_env")
                if "password_env" in e else None,
                timeout=_seconds(e.get("timeout"), f"{where}.timeout", DEFAULT_TIMEOUT))
        for i, w in enumerate(block.get("webhooks") or []):
            where = f"notifications.webhooks[{i}]"
            cfg.webhooks.append(WebhookConfig(
                url=w["url"], secret=_secret(env, w["secret_env"], f"{where}.secret_env"),
                events=list(w["events"]),
                timeout=_seconds(w.get("timeout"), f"{where}.timeout", DEFAULT_TIMEOUT)))
        if "ntfy" in block:
            n = block["ntfy"]
            where = "notifications.ntfy"
            cfg.ntfy = NtfyConfig(
                url=n["url"], topic=n["topic"], events=list(n["events"]),
                token=_secret(env, n["token_env"], f"{where}.token_env")
                if "token_env" in n else None,
                timeout=_seconds(n.get("timeout"), f"{where}.timeout", DEFAULT_TIMEOUT))
        unknown = [c for c in block.get("escalate_to") or [] if cfg.channel(c) is None]
        if unknown:
            raise InvalidInput(f"notifications.escalate_to: channel {unknown[0]!r} is not "
                               f"configured (configured: "
                               f"{', '.join(cfg.channel_names()) or 'none'})")
        for key in ("remind_after", "escalate_after"):
            _seconds(block.get(key), f"notifications.{key}", 0.0)  # a bad duration: now
        r = block.get("retry") or {}
        cfg.retry = RetrySettings(
            max_attempts=r.get("max_attempts", RetrySettings.max_attempts),
            initial_delay=_seconds(r.get("initial_delay"), "notifications.retry.initial_delay",
                                   RetrySettings.initial_delay),
            max_delay=_seconds(r.get("max_delay"), "notifications.retry.max_delay",
                               RetrySettings.max_delay))
        w = block.get("worker") or {}
        cfg.worker = WorkerSettings(
            poll_interval=_seconds(w.get("poll_interval"), "notifications.worker.poll_interval",
                                   WorkerSettings.poll_interval),
            lease=_seconds(w.get("lease"), "notifications.worker.lease", WorkerSettings.lease),
            batch=w.get("batch", WorkerSettings.batch))
        slowest = max([t.timeout for t in (cfg.slack, cfg.email, cfg.ntfy, *cfg.webhooks)
                       if t],
                      default=0.0)
        if cfg.worker.lease < slowest + LEASE_MARGIN:
            # A lease too short to cover one send would hand every row back unattempted.
            raise InvalidInput(f"notifications.worker.lease: {cfg.worker.lease:g}s must be "
                               f"longer than the slowest channel timeout ({slowest:g}s) "
                               f"plus {LEASE_MARGIN:g}s")
    except InvalidInput as exc:
        if exc.detail.startswith("config"):
            raise
        raise InvalidInput(f"config: {exc.detail}") from None
    return cfg


def from_settings(settings: Any, env: Mapping[str, str] | None = None) -> NotifyConfig:
    """The notification config of a `Settings` object (validated, secrets resolved)."""
    cfg = load_config(settings.notifications, env=env, templates_dir=settings.templates_dir)
    cfg.public_url = settings.get("public_url")
    return cfg
