"""Settings: flag > environment > config file > default, resolved once per process.

The config file is YAML at `$APPROVALCTL_CONFIG`, else
`$XDG_CONFIG_HOME/approvalctl/config.yaml`. Secrets are never flags: the API key comes from
`APPROVALCTL_API_KEY` or the file, and notification secrets are named by environment
variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidInput
from .limits import HttpLimits, Quotas, http_limits_from, quotas_from

DEFAULT_TTL_SECONDS = 3600.0
NOTIFY_EVENTS = ("created", "decided", "expired")

_KNOWN_KEYS = {"db", "server", "api_key", "allow_self_approval", "default_ttl", "user",
               "notifications", "rate_limit", "templates_dir", "http_limits", "quotas"}


def xdg_config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def xdg_data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def config_path() -> Path:
    explicit = os.environ.get("APPROVALCTL_CONFIG")
    return Path(explicit) if explicit else xdg_config_home() / "approvalctl" / "config.yaml"


def default_db_path() -> Path:
    return xdg_data_home() / "approvalctl" / "approvals.db"


def load_file(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    if not path.exists():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"config file {path} must be a mapping of settings")
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        raise InvalidInput(f"config file {path}: unknown setting {unknown[0]!r} "
                           f"(known: {', '.join(sorted(_KNOWN_KEYS))})")
    return data


@dataclass
class Settings:
    db: str = ""
    server: str | None = None
    api_key: str | None = None
    allow_self_approval: bool = False
    default_ttl: float = DEFAULT_TTL_SECONDS
    user: str | None = None
    notifications: dict[str, Any] = field(default_factory=dict)
    rate_limit: float | None = None  # requests per second per key (server)
    templates_dir: str | None = None
    source: str | None = None
    http_limits: HttpLimits = field(default_factory=HttpLimits)  # server connections
    quotas: Quotas = field(default_factory=Quotas)  # per key (server) / per user (service)

    @classmethod
    def load(cls, *, db: str | None = None, server: str | None = None,
             env: dict[str, str] | None = None, file: dict[str, Any] | None = None
             ) -> Settings:
        env = os.environ if env is None else env
        path = config_path()
        data = load_file(path) if file is None else file
        from .durations import parse_duration

        ttl = data.get("default_ttl", DEFAULT_TTL_SECONDS)
        allow = data.get("allow_self_approval", False)
        if not isinstance(allow, bool):
            raise InvalidInput(f"config file {path}: allow_self_approval must be true or false")
        return cls(
            db=db or env.get("APPROVALCTL_DB") or data.get("db") or str(default_db_path()),
            server=server or env.get("APPROVALCTL_SERVER") or data.get("server") or None,
            api_key=env.get("APPROVALCTL_API_KEY") or data.get("api_key") or None,
            allow_self_approval=allow,
            default_ttl=parse_duration(str(ttl), what="default_ttl in config"),
            user=env.get("APPROVALCTL_USER") or data.get("user") or None,
            notifications=data.get("notifications") or {},
            rate_limit=data.get("rate_limit"),
            templates_dir=data.get("templates_dir"),
            source=str(path) if data else None,
            http_limits=http_limits_from(data.get("http_limits"), f"config file {path}"),
            quotas=quotas_from(data.get("quotas"), f"config file {path}"),
        )

    def channels_for(self, event: str) -> list[str]:
        """The notification channels configured to receive `event`.

        Raises InvalidInput for an event name the config lists but approvalctl never
        sends, so a typo (`create`) stops the first write instead of silently sending
        nothing. The full schema check (jsonschema, secrets) runs where a worker starts.
        """
        if event not in NOTIFY_EVENTS:
            raise ValueError(f"unknown notification event {event!r}")
        n = self.notifications or {}
        if not isinstance(n, dict):
            raise InvalidInput("config: notifications must be a mapping (slack, email, "
                               "webhooks)")
        targets = [(name, n[name], f"notifications.{name}") for name in ("slack", "email")
                   if isinstance(n.get(name), dict)]
        hooks = n.get("webhooks") or []
        if not isinstance(hooks, list):
            raise InvalidInput("config: notifications.webhooks must be a list")
        targets += [(f"webhook:{i}", hook, f"notifications.webhooks[{i}]")
                    for i, hook in enumerate(hooks) if isinstance(hook, dict)]
        out = []
        for name, conf, where in targets:
            events = conf.get("events") or []
            bad = [e for e in events if e not in NOTIFY_EVENTS] if isinstance(events, list) \
                else [events]
            if bad:
                raise InvalidInput(f"config: {where}.events: unknown event {bad[0]!r} "
                                   f"(expected one of {', '.join(NOTIFY_EVENTS)})")
            if event in events:
                out.append(name)
        return out


def local_user() -> str:
    """The operator at this terminal."""
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return os.environ.get("USER") or "operator"
