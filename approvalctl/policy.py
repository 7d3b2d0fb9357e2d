"""Policy rules: which tool calls pass, fail or go to the operator, decided without a person.

Pure functions, no I/O: the service reads the rules from the store, checks them with
`check_rule` when they change and runs `evaluate` on every create, so the server, the local
CLI and the hooks always agree (DESIGN.md section 11; user guide in docs/policy.md).

A rule is a mapping:

    name     [A-Za-z0-9][A-Za-z0-9_.-]{0,63}; also the label of a metric, so bounded
    tools    a non-empty list of fnmatch globs on tool_name (case-sensitive)
    match    optional {path: glob}; every path must match (AND)
    exact    optional bool: the arguments hold no top-level key outside `match`, and every
             value is matched against its JSON text, strings included (`"main"` with the
             quotes), so the string `"false"` never passes for the boolean `false`
    action   allow | deny | ask
    risk     optional low | medium | high (replaces what the caller claimed)
    ttl      optional seconds (a duration such as "10m" is accepted on input)
    note     optional text: the decision note of an allow or deny
    approvals_required  optional 1-10 (ask rules): distinct approvers needed
    remind_after        optional seconds (ask rules): remind the request's channels once
    escalate_after      optional seconds (ask rules, with escalate_to): tell other channels
    escalate_to         optional list of channel names (slack, email, ntfy, webhook:N);
                        whether they are configured is checked by the service

Paths are dot-separated keys (`command`, `options.force`); a segment of digits indexes a
list (`argv.0`). A path that is not in the arguments does not match. A string value is
matched by the glob as it is; any other value (number, true/false, null, list, object) is
matched against its compact JSON text with sorted keys (`42`, `true`, `["a","b"]`), so a
list never matches a glob written for one of its elements by accident. fnmatch's `*`
matches any character, newlines and `;` included: `git status*` also allows
`git status; rm -rf ~`. Allow rules should match whole values (see docs/policy.md).

Rules are ordered; the first rule whose tools and match all hold wins; no match gives the
configured default (`ask` or `deny`).
"""

from __future__ import annotations

import json
import re
from fnmatch import fnmatchcase
from typing import Any

from .errors import RuleError

ACTIONS = ("allow", "deny", "ask")
RISKS = ("low", "medium", "high")
FIELDS = ("name", "tools", "match", "exact", "action", "risk", "ttl", "note",
          "approvals_required", "remind_after", "escalate_after", "escalate_to")
#: A notification channel's name as `escalate_to` lists it (config.CHANNEL_NAME).
CHANNEL = re.compile(r"slack|email|ntfy|webhook:[0-9]{1,3}")
#: The most distinct approvers a rule can demand (service.MAX_APPROVALS).
MAX_APPROVALS = 10
RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
RESERVED_NAMES = frozenset({"test", "import"})  # /api/v1/rules/test and /import
PATH = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+){0,15}")
MAX_RULES = 1000
MAX_GLOBS = 100
MAX_GLOB = 64 * 1024  # an `approve --always` rule holds a whole argument value
MAX_NOTE = 4000
MAX_TTL_SECONDS = 30 * 86400

_compact = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def _glob_error(glob: Any) -> str | None:
    """Why `glob` is not a usable fnmatch pattern, or None."""
    if not isinstance(glob, str):
        return f"must be a string, not {type(glob).__name__}"
    if not glob:
        return "must not be empty"
    if len(glob) > MAX_GLOB:
        return f"is longer than {MAX_GLOB} characters"
    if "\x00" in glob:
        return "must not contain NUL characters"
    i, n = 0, len(glob)
    while i < n:
        if glob[i] == "[":
            # fnmatch reads an unclosed `[` as a literal bracket: nearly always a typo
            # that would make the rule silently match nothing the author meant.
            j = i + 1
            if j < n and glob[j] == "!":
                j += 1
            if j < n and glob[j] == "]":
                j += 1
            while j < n and glob[j] != "]":
                j += 1
            if j >= n:
                return f"has an unbalanced '[' at position {i} (write [[] for a literal '[')"
            i = j
        i += 1
    return None


def check_rule(raw: Any, *, parse_ttl: Any = None) -> dict[str, Any]:
    """The rule in its stored form; RuleError naming the first problem.

    `parse_ttl` turns a duration text into seconds (the caller's parser, so this module
    stays free of the CLI's); without it only numbers are accepted.
    """
    if not isinstance(raw, dict):
        raise RuleError("a rule must be a mapping with name, tools and action")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise RuleError(f"unknown field {unknown[0]!r} (known: {', '.join(FIELDS)})")
    name = raw.get("name")
    if not isinstance(name, str) or not RULE_NAME.fullmatch(name):
        raise RuleError(f"invalid rule name {name!r}: 1-64 letters, digits, _ . -, starting "
                        "with a letter or digit")
    if name in RESERVED_NAMES:
        raise RuleError(f"the rule name {name!r} is reserved")
    where = f"rule {name!r}"
    tools = raw.get("tools")
    if isinstance(tools, str):
        tools = [tools]
    if not isinstance(tools, list) or not tools:
        raise RuleError(f"{where}: tools must be a non-empty list of globs (a rule without "
                        "tools can never match)")
    if len(tools) > MAX_GLOBS:
        raise RuleError(f"{where}: at most {MAX_GLOBS} tool globs")
    for glob in tools:
        why = _glob_error(glob)
        if why:
            raise RuleError(f"{where}: tool glob {glob!r} {why}")
    match = raw.get("match") or {}
    if not isinstance(match, dict):
        raise RuleError(f"{where}: match must be a mapping of argument path to glob")
    if len(match) > MAX_GLOBS:
        raise RuleError(f"{where}: at most {MAX_GLOBS} match entries")
    for path, glob in match.items():
        if not isinstance(path, str) or not PATH.fullmatch(path):
            raise RuleError(f"{where}: unknown path syntax {path!r}: use dot-separated keys "
                            "of letters, digits, _ and - (e.g. command, options.force, argv.0)")
        why = _glob_error(glob)
        if why:
            raise RuleError(f"{where}: match glob for {path!r} {why}")
    exact = raw.get("exact", False)
    if not isinstance(exact, bool):
        raise RuleError(f"{where}: exact must be true or false")
    if exact and any("." in p for p in match):
        raise RuleError(f"{where}: an exact rule matches top-level keys only")
    action = raw.get("action")
    if action not in ACTIONS:
        raise RuleError(f"{where}: action must be one of {', '.join(ACTIONS)}, got {action!r}")
    out: dict[str, Any] = {"name": name, "tools": list(tools), "action": action}
    if match:
        out["match"] = dict(match)
    if exact:
        out["exact"] = True
    risk = raw.get("risk")
    if risk is not None:
        if risk not in RISKS:
            raise RuleError(f"{where}: risk must be one of {', '.join(RISKS)}, got {risk!r}")
        out["risk"] = risk
    ttl = raw.get("ttl")
    if ttl is not None:
        out["ttl"] = _duration(ttl, f"{where}: ttl", parse_ttl)
    required = raw.get("approvals_required")
    if required is not None:
        if isinstance(required, bool) or not isinstance(required, int) or \
                not 1 <= required <= MAX_APPROVALS:
            raise RuleError(f"{where}: approvals_required must be a whole number from 1 to "
                            f"{MAX_APPROVALS}")
        if action != "ask":
            raise RuleError(f"{where}: approvals_required applies to rules whose action is "
                            "ask")
        if required > 1:
            out["approvals_required"] = required
    out.update(_reminder_fields(raw, where, action, parse_ttl))
    note = raw.get("note")
    if note is not None:
        if not isinstance(note, str) or len(note) > MAX_NOTE or "\x00" in note:
            raise RuleError(f"{where}: note must be text of at most {MAX_NOTE} characters")
        out["note"] = note
    return out


def _duration(value: Any, what: str, parse_ttl: Any) -> float:
    if isinstance(value, str) and parse_ttl is not None:
        try:
            value = parse_ttl(value)
        except Exception as exc:  # the parser's own error type, whatever it is
            raise RuleError(f"{what}: {getattr(exc, 'detail', exc)}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value \
            <= MAX_TTL_SECONDS:
        raise RuleError(f"{what} must be a duration between 1s and 30d")
    return value


def _reminder_fields(raw: dict[str, Any], where: str, action: Any, parse_ttl: Any
                     ) -> dict[str, Any]:
    """remind_after, escalate_after and escalate_to of a rule, checked (docs/away.md)."""
    out: dict[str, Any] = {}
    for key in ("remind_after", "escalate_after"):
        if raw.get(key) is not None:
            out[key] = _duration(raw[key], f"{where}: {key}", parse_ttl)
    to = raw.get("escalate_to")
    if to is not None:
        if isinstance(to, str):
            to = [to]
        if not isinstance(to, list) or not to or len(to) > MAX_GLOBS:
            raise RuleError(f"{where}: escalate_to must be a non-empty list of channel names")
        for channel in to:
            if not isinstance(channel, str) or not CHANNEL.fullmatch(channel):
                raise RuleError(f"{where}: escalate_to: {channel!r} is not a channel name "
                                "(slack, email, ntfy, webhook:N)")
        out["escalate_to"] = list(dict.fromkeys(to))
    if ("escalate_after" in out) != ("escalate_to" in out):
        raise RuleError(f"{where}: escalate_after and escalate_to go together")
    if out and action != "ask":
        raise RuleError(f"{where}: {next(iter(out))} applies to rules whose action is ask")
    return out


def ordered(rule: dict[str, Any]) -> dict[str, Any]:
    """The rule with its fields in the documented order (for export and listing)."""
    return {k: rule[k] for k in FIELDS if k in rule}


def check_rules(raws: Any, *, parse_ttl: Any = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Check a whole rule list; returns the good rules and every error (one line each)."""
    if not isinstance(raws, list):
        return [], ["the rules must be a list (YAML: one '- name: ...' item per rule)"]
    if len(raws) > MAX_RULES:
        return [], [f"at most {MAX_RULES} rules"]
    good, errors, seen = [], [], set()
    for i, raw in enumerate(raws, 1):
        try:
            rule = check_rule(raw, parse_ttl=parse_ttl)
        except RuleError as exc:
            errors.append(f"rule {i}: {exc}")
            continue
        if rule["name"] in seen:
            errors.append(f"rule {i}: the name {rule['name']!r} is used twice")
            continue
        seen.add(rule["name"])
        good.append(rule)
    return good, errors


_MISSING = object()


def _lookup(arguments: Any, path: str) -> Any:
    value = arguments
    for segment in path.split("."):
        if isinstance(value, dict):
            value = value.get(segment, _MISSING)
        elif isinstance(value, list) and segment.isdigit():
            index = int(segment)
            value = value[index] if index < len(value) else _MISSING
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def value_text(value: Any, *, exact: bool = False) -> str:
    """The text a glob is matched against: a string itself, anything else its JSON; in an
    `exact` rule every value's JSON, so a value's type is part of what must match."""
    return value if isinstance(value, str) and not exact else _compact(value)


def matches(rule: dict[str, Any], tool_name: str, arguments: dict[str, Any]) -> bool:
    """Whether `rule` (as check_rule returned it) holds for this call."""
    if not any(fnmatchcase(tool_name, glob) for glob in rule["tools"]):
        return False
    match = rule.get("match") or {}
    exact = bool(rule.get("exact"))
    if exact and set(arguments) != set(match):
        return False
    for path, glob in match.items():
        value = _lookup(arguments, path)
        if value is _MISSING or not fnmatchcase(value_text(value, exact=exact), glob):
            return False
    return True


def evaluate(rules: list[dict[str, Any]], tool_name: str, arguments: dict[str, Any]
             ) -> dict[str, Any] | None:
    """The first rule that holds for this call, or None (the caller applies the default)."""
    for rule in rules:
        if matches(rule, tool_name, arguments):
            return rule
    return None


def escape(text: str) -> str:
    """`text` as a glob that matches exactly it (fnmatch has no escape character)."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def exact_rule(name: str, tool_name: str, arguments: dict[str, Any], *,
               note: str | None = None) -> dict[str, Any]:
    """An allow rule for exactly this call and nothing else: the literal tool name, every
    top-level argument matched literally (`escape` of its value text) and `exact`, so an
    agent can neither add an argument nor widen one and still pass."""
    rule: dict[str, Any] = {"name": name, "tools": [escape(tool_name)], "action": "allow",
                            "exact": True}
    if arguments:
        rule["match"] = {key: escape(value_text(value, exact=True))
                         for key, value in arguments.items()}
    if note:
        rule["note"] = note
    return rule
