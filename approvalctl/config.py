"""Settings: flag > environment > config file > default, resolved once per process.

The config file is YAML at `$APPROVALCTL_CONFIG`, else
`$XDG_CONFIG_HOME/approvalctl/config.yaml`. Secrets are never flags: the API key comes from
`APPROVALCTL_API_KEY` or the file, and notification secrets are named by environment
variable.

`SCHEMA` (JSON Schema 2020-12) is the one description of the file: `load_file()` checks the
whole file against it and reports the first problem in one line naming the key
(`config file F: notifications.slack.events[0]: unknown event 'create' ...`). Adding a
setting is one line in `SCHEMA["properties"]`; its value is then `Settings.get(key)`
(or give it a `Settings` field in `load()` when it needs a default or a type).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidInput
from .limits import HttpLimits, Quotas, http_limits_from, quotas_from

DEFAULT_TTL_SECONDS = 3600.0
#: How long an approval may wait to be consumed (DESIGN.md §10).
DEFAULT_USE_WITHIN_SECONDS = 900.0
NOTIFY_EVENTS = ("created", "decided", "expired")

_EVENTS = {"type": "array", "items": {"enum": list(NOTIFY_EVENTS)}, "uniqueItems": True}
_URL = {"type": "string", "pattern": "^https?://[^\\s/]+"}
_ENV = {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}
#: Seconds, or a short duration ("30s", "5m"); exclusiveMinimum applies only to numbers and
#: pattern only to strings, so one schema with plain error messages covers both.
_SECONDS = {"type": ["number", "string"], "exclusiveMinimum": 0, "pattern": "^[0-9.smhdw]+$"}
_DURATION_KEYS = ("timeout", "initial_delay", "max_delay", "lease", "poll_interval",
                  "remind_after", "escalate_after")
#: A channel's name as `escalate_to` lists it (the outbox's and `notify list`'s names).
CHANNEL_NAME = "^(slack|email|ntfy|webhook:[0-9]{1,3})$"
_CHANNELS = {"type": "array", "minItems": 1, "uniqueItems": True,
             "items": {"type": "string", "pattern": CHANNEL_NAME,
                       "x-invalid": "notifications.escalate_to: {value!r} is not a channel "
                                    "name (slack, email, ntfy, webhook:N)"}}

NOTIFICATIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "dependentRequired": {"escalate_after": ["escalate_to"], "escalate_to": ["escalate_after"]},
    "x-invalid": {"dependentRequired": "notifications: escalate_after and escalate_to go "
                                       "together (escalate_to: the channels that hear of a "
                                       "request still pending after escalate_after)"},
    "properties": {
        # reminders and escalation of pending requests (docs/away.md)
        "remind_after": _SECONDS,
        "escalate_after": _SECONDS,
        "escalate_to": _CHANNELS,
        "slack": {
            "type": "object",
            "additionalProperties": False,
            "required": ["events"],
            "properties": {"webhook_url": _URL, "webhook_url_env": _ENV, "events": _EVENTS,
                           "timeout": _SECONDS},
        },
        "email": {
            "type": "object",
            "additionalProperties": False,
            "required": ["host", "from", "to", "events"],
            "properties": {
                "host": {"type": "string", "minLength": 1},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "starttls": {"type": "boolean"},
                "ssl": {"type": "boolean"},
                "username": {"type": "string", "minLength": 1},
                "password_env": _ENV,
                "from": {"type": "string", "pattern": "@"},
                "to": {"type": "array", "minItems": 1,
                       "items": {"type": "string", "pattern": "@"}},
                "events": _EVENTS,
                "timeout": _SECONDS,
            },
        },
        "webhooks": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["url", "secret_env", "events"],
                "properties": {"url": _URL, "secret_env": _ENV, "events": _EVENTS,
                               "timeout": _SECONDS},
            },
        },
        "ntfy": {
            "type": "object",
            "additionalProperties": False,
            "required": ["url", "topic", "events"],
            "properties": {"url": _URL, "topic": {"type": "string",
                                                  "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                           "token_env": _ENV, "events": _EVENTS, "timeout": _SECONDS},
        },
        "retry": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100},
                "initial_delay": _SECONDS,
                "max_delay": _SECONDS,
            },
        },
        "worker": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"poll_interval": _SECONDS, "lease": _SECONDS,
                           "batch": {"type": "integer", "minimum": 1, "maximum": 100}},
        },
    },
}

_TEXT = {"type": "string", "minLength": 1}


def _limit(section: str, name: str, *, whole: bool, duration: bool, nullable: bool
           ) -> dict[str, Any]:
    """The schema of one `http_limits`/`quotas` key: a number above zero (a whole one for
    counts and sizes; a duration string for timeouts); with `nullable`, null or false is off.
    `x-invalid` (by failing keyword, `*` for any other) keeps the one-line wording."""
    types = ["number"] + (["string"] if duration else []) + \
        (["null", "boolean"] if nullable else [])
    schema: dict[str, Any] = {"type": types, "exclusiveMinimum": 0}
    what = f"{section}.{name}"
    bad = (f"{what} must be a number greater than zero"
           + (" (or null for no limit)" if nullable else "") + ", got {value!r}")
    schema["x-invalid"] = {"*": bad}
    if nullable:
        schema["not"] = {"const": True}  # false is off; true says nothing
    if whole:
        schema["multipleOf"] = 1
        schema["x-invalid"]["multipleOf"] = f"{what} must be a whole number, got {{value!r}}"
    if duration:
        schema["pattern"] = _SECONDS["pattern"]
        schema["x-invalid"]["pattern"] = (f"{what}: {{value!r}} is not a duration (e.g. 30s, "
                                          "5m, or seconds)")
    return schema


def _limits_schema(section: str, cls: type, nullable: bool) -> dict[str, Any]:
    from dataclasses import fields

    return {
        "type": ["object", "null"],
        "additionalProperties": False,
        "x-invalid": {"type": f"{section} must be a mapping of limits, got {{value!r}}"},
        "properties": {f.name: _limit(section, f.name, whole=f.name in WHOLE_LIMITS,
                                      duration=f.name in DURATION_LIMITS, nullable=nullable)
                       for f in fields(cls)},
    }


#: Limits counted in whole units (bytes, headers, connections, requests); the others are
#: rates or seconds.
WHOLE_LIMITS = frozenset({"max_header_bytes", "max_headers", "max_connections", "max_pending",
                          "max_waits", "max_response_bytes"})
#: Limits that take a duration (`10s`, `2m`) as well as seconds.
DURATION_LIMITS = frozenset({"header_timeout", "keep_alive_timeout", "body_timeout"})

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "db": _TEXT,
        "server": _TEXT,
        "api_key": _TEXT,
        "allow_self_approval": {"type": "boolean",
                                "x-invalid": "allow_self_approval must be true or false"},
        "default_ttl": {"type": ["number", "string"]},  # durations.parse_duration checks it
        "use_within": {"type": ["number", "string"]},  # likewise
        # limits.py only builds their dataclasses from what these allow
        "http_limits": _limits_schema("http_limits", HttpLimits, nullable=False),
        "quotas": _limits_schema("quotas", Quotas, nullable=True),
        "policy_default": {"enum": ["ask", "deny"],
                           "x-invalid": "policy_default must be ask or deny, got {value!r}"},
        "user": _TEXT,
        "notifications": NOTIFICATIONS_SCHEMA,
        "rate_limit": {"type": "number", "exclusiveMinimum": 0,
                       "x-invalid": "rate_limit must be a number of requests per second "
                                    "greater than zero, got {value!r}"},
        "templates_dir": _TEXT,
        # where a phone reaches `serve` for decision links (docs/away.md)
        "public_url": {"type": "string", "pattern": "^https?://[^\\s<>|\"'`?#]+$",
                       "x-invalid": "public_url must be an http:// or https:// URL without "
                                    "query or fragment, got {value!r}"},
    },
}


def _path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out.lstrip(".")


def _describe(error: Any) -> str:
    """One line naming the bad key, from a jsonschema ValidationError."""
    where = _path(error.absolute_path)
    custom = error.schema.get("x-invalid") if isinstance(error.schema, dict) else None
    if isinstance(custom, dict):  # by the keyword that failed
        custom = custom.get(error.validator, custom.get("*"))
    if custom and error.validator not in ("required", "additionalProperties"):
        return custom.format(value=error.instance)
    if error.validator in ("pattern", "exclusiveMinimum", "type") and \
            where.endswith(_DURATION_KEYS):
        return f"{where}: {error.instance!r} is not a duration (e.g. 30s, 5m, or seconds)"
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(known))
        if not where:
            return f"unknown setting {extra[0]!r} (known: {', '.join(known)})"
        return f"{where}.{extra[0]}: unknown setting (known: {', '.join(known)})"
    if error.validator == "required":
        return f"{where}: {error.message.split(' is a required')[0]} is required"
    if error.validator == "enum":
        return f"{where}: unknown event {error.instance!r} (expected one of " \
               f"{', '.join(NOTIFY_EVENTS)})"
    if error.validator == "pattern" and where.endswith(("url", "url_env", "secret_env",
                                                        "password_env")):
        what = "an environment variable name" if where.endswith("_env") else \
            "an http:// or https:// URL"
        return f"{where}: {error.instance!r} is not {what}"
    if error.validator == "pattern" and ("from" in where or ".to" in where):
        return f"{where}: {error.instance!r} is not an e-mail address"
    return f"{where}: {error.message}" if where else error.message


def validate_config(data: Any, where: str = "config", top: str | None = None) -> None:
    """Raise InvalidInput (`{where}: ...`, one line) unless `data` fits `SCHEMA`.

    `top` replaces `where` for a problem with a top-level key (the file's name, say).

    jsonschema-rs accepts a good file without importing jsonschema (every command reads the
    file); only a refused one is explained by jsonschema, which names the keyword and key.
    """
    import jsonschema_rs

    if _compiled().is_valid(data):
        return
    import jsonschema

    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(SCHEMA).iter_errors(data))
    if error is None:  # the compiled validator is stricter (ECMA-262 patterns): its reason
        try:
            _compiled().validate(data)
        except jsonschema_rs.ValidationError as exc:
            raise InvalidInput(f"{where}: {exc.message}") from None
        return  # pragma: no cover - is_valid and validate agree
    # The notifications block keeps the `config: notifications...` form its checks had.
    nested = list(error.absolute_path)[:1] == ["notifications"]
    prefix = where if nested else (top or where)
    raise InvalidInput(f"{prefix}: {_describe(error)}")


_COMPILED: list[Any] = []


def _compiled() -> Any:
    if not _COMPILED:
        import jsonschema_rs

        _COMPILED.append(jsonschema_rs.validator_for(SCHEMA))
    return _COMPILED[0]


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

    from .strictyaml import load

    try:
        data = load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read config file {path}: {exc}") from None
    except ValueError as exc:  # a repeated key (DuplicateKey)
        raise InvalidInput(f"config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"config file {path} must be a mapping of settings")
    validate_config(data, top=f"config file {path}")
    return data


@dataclass
class Settings:
    db: str = ""
    server: str | None = None
    api_key: str | None = None
    allow_self_approval: bool = False
    default_ttl: float = DEFAULT_TTL_SECONDS
    use_within: float = DEFAULT_USE_WITHIN_SECONDS
    user: str | None = None
    notifications: dict[str, Any] = field(default_factory=dict)
    rate_limit: float | None = None  # requests per second per key (server)
    templates_dir: str | None = None
    policy_default: str = "ask"  # what a call no policy rule matches gets: ask or deny
    source: str | None = None
    http_limits: HttpLimits = field(default_factory=HttpLimits)  # server connections
    quotas: Quotas = field(default_factory=Quotas)  # per key (server) / per user (service)
    #: The config file's settings as read (validated against SCHEMA); see `get`.
    file: dict[str, Any] = field(default_factory=dict, repr=False)
    _notifications_checked: bool = field(default=False, repr=False, compare=False)

    def get(self, key: str, default: Any = None) -> Any:
        """A config-file setting by its SCHEMA name (for keys without a field of their own)."""
        if key not in SCHEMA["properties"]:
            raise KeyError(f"{key!r} is not a setting in config.SCHEMA")
        return self.file.get(key, default)

    @classmethod
    def load(cls, *, db: str | None = None, server: str | None = None,
             env: Mapping[str, str] | None = None, file: dict[str, Any] | None = None
             ) -> Settings:
        env = os.environ if env is None else env
        path = config_path()
        data = load_file(path) if file is None else file
        from .durations import parse_duration

        ttl = data.get("default_ttl", DEFAULT_TTL_SECONDS)
        allow = data.get("allow_self_approval", False)
        policy_default = data.get("policy_default", "ask")
        return cls(
            db=db or env.get("APPROVALCTL_DB") or data.get("db") or str(default_db_path()),
            server=server or env.get("APPROVALCTL_SERVER") or data.get("server") or None,
            api_key=env.get("APPROVALCTL_API_KEY") or data.get("api_key") or None,
            allow_self_approval=allow,
            default_ttl=parse_duration(str(ttl), what="default_ttl in config"),
            use_within=parse_duration(str(data.get("use_within", DEFAULT_USE_WITHIN_SECONDS)),
                                      what="use_within in config"),
            user=env.get("APPROVALCTL_USER") or data.get("user") or None,
            notifications=data.get("notifications") or {},
            rate_limit=data.get("rate_limit"),
            templates_dir=data.get("templates_dir"),
            policy_default=policy_default,
            source=str(path) if data else None,
            http_limits=http_limits_from(data.get("http_limits"), f"config file {path}"),
            quotas=quotas_from(data.get("quotas"), f"config file {path}"),
            file=data,
        )

    def channel_names(self) -> list[str]:
        """The names of the configured notification channels (`slack`, `webhook:0`, ...)."""
        n = self.notifications or {}
        return [name for name in ("slack", "email", "ntfy") if name in n] + \
            [f"webhook:{i}" for i in range(len(n.get("webhooks") or []))]

    def reminders(self) -> tuple[float | None, float | None, list[str]]:
        """(remind_after, escalate_after, escalate_to) of `notifications:` (seconds, None
        when off), the config's global reminder settings. InvalidInput naming the key for a
        duration that does not parse or an `escalate_to` channel that is not configured."""
        from .durations import parse_duration
        from .policy import MAX_TTL_SECONDS

        n = self.notifications or {}

        def seconds(key: str) -> float | None:
            value = n.get(key)
            if value is None:
                return None
            got = float(value) if isinstance(value, (int, float)) else \
                parse_duration(value, what=f"notifications.{key} in config")
            if not 0 < got <= MAX_TTL_SECONDS:  # as a rule's own remind_after allows
                raise InvalidInput(f"config: notifications.{key} must be a duration between "
                                   f"1s and 30d, got {value!r}")
            return got

        to = list(n.get("escalate_to") or [])
        unknown = [c for c in to if c not in self.channel_names()]
        if unknown:
            raise InvalidInput(f"config: notifications.escalate_to: channel {unknown[0]!r} "
                               f"is not configured (configured: "
                               f"{', '.join(self.channel_names()) or 'none'})")
        return seconds("remind_after"), seconds("escalate_after"), to

    def channels_for(self, event: str) -> list[str]:
        """The notification channels configured to receive `event`.

        Raises InvalidInput for an event name the config lists but approvalctl never
        sends, so a typo (`create`) stops the first write instead of silently sending
        nothing. The full schema check (jsonschema, secrets) runs where a worker starts.
        """
        if event not in NOTIFY_EVENTS:
            raise ValueError(f"unknown notification event {event!r}")
        n = self.notifications or {}
        if n and not self._notifications_checked:
            # A file was checked when read; this covers Settings built in code.
            validate_config({"notifications": n})
            self._notifications_checked = True
        targets: list[tuple[str, Any]] = [
            (name, n[name]) for name in ("slack", "email", "ntfy") if name in n]
        targets += [(f"webhook:{i}", hook) for i, hook in enumerate(n.get("webhooks") or [])]
        return [name for name, conf in targets if event in conf["events"]]


def local_user() -> str:
    """The operator at this terminal: the OS account this process runs as.

    Never $USER or $LOGNAME (getpass.getuser() reads them first): whoever runs the CLI can
    set those, and the self-approval check would believe them (DESIGN.md §10). Without a
    passwd entry (some containers) the name is `uid-N`.
    """
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid-{os.getuid()}"
