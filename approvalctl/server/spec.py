"""The OpenAPI document as the server's validator: loaded once, compiled per operation.

`specs/approval_api.yaml` is the source of truth. At start-up every operation's request body
and query parameters are turned into JSON Schema validators, so a request is checked
against exactly what the document promises and the two cannot drift.

OpenAPI 3.0 schemas are almost JSON Schema Draft 4; the differences handled here are
`nullable: true` (becomes a `null` type) and local `$ref`s (inlined; the spec has no cycles).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft4Validator

from ..errors import InvalidInput

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def spec_path() -> Path:
    """The document inside the installed package: `approvalctl/specs` is a link to the
    top-level `specs/` in the source tree, and the wheel build copies the file it points to
    (package data), so there is one hand-kept copy and an installed server still finds it."""
    from importlib.resources import files

    return Path(str(files("approvalctl") / "specs" / "approval_api.yaml"))


@lru_cache(maxsize=1)
def load_spec() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(spec_path().read_text())


@lru_cache(maxsize=1)
def spec_json() -> bytes:
    """The document as served at /openapi.json (encoded once)."""
    return json.dumps(load_spec(), ensure_ascii=False).encode()


def _resolve(spec: dict[str, Any], node: Any) -> Any:
    """Inline `$ref`s and turn OpenAPI `nullable` into JSON Schema."""
    if isinstance(node, list):
        return [_resolve(spec, n) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target: Any = spec
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return _resolve(spec, copy.deepcopy(target))
    out = {k: _resolve(spec, v) for k, v in node.items()
           if k not in ("nullable", "example", "default")}
    if node.get("nullable"):
        kind = out.get("type")
        if kind:
            out["type"] = [kind, "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


# ---------------------------------------------------------------- validators
class Checker:
    """One schema, compiled: jsonschema-rs decides, jsonschema explains a refusal.

    Every request body and query value passes through here, so acceptance is the compiled
    validator of jsonschema-rs (Rust): a fraction of the cost of jsonschema's interpreted
    validation, and its regular expressions run in linear time on hostile input and follow
    the ECMA-262 semantics JSON Schema specifies (`$` does not match before a trailing
    newline, as Python's `re` would). Only a refused value, off the hot path, is handed to
    jsonschema, whose errors name the keyword, the sub-schema (for its `x-invalid` message)
    and the path that `_check` turns into one line. Fails closed: when the compiled
    validator refuses what jsonschema would accept, the value is refused with the compiled
    validator's own reason (see `_RsError`).
    """

    __slots__ = ("validator", "compiled", "schema")

    def __init__(self, schema: dict[str, Any]) -> None:
        import jsonschema_rs

        self.schema = schema
        self.validator = Draft4Validator(schema)
        self.compiled = jsonschema_rs.Draft4Validator(schema)

    def is_valid(self, value: Any) -> bool:
        return self.compiled.is_valid(value)

    def first_error(self, value: Any) -> Any:
        """The error to report for a value `is_valid` refused (jsonschema's, else ours)."""
        error = next(iter(self.validator.iter_errors(value)), None)
        if error is not None:
            return error
        import jsonschema_rs

        try:
            self.compiled.validate(value)
        except jsonschema_rs.ValidationError as exc:
            return _RsError(exc, self.schema)
        return None  # pragma: no cover - is_valid and validate always agree


class _RsError:
    """A jsonschema-rs error in the shape `_check` reads from a jsonschema error."""

    def __init__(self, exc: Any, schema: dict[str, Any]) -> None:
        path = list(exc.schema_path)
        sub: Any = schema
        for part in path[:-1]:
            sub = sub[part]
        self.validator = str(path[-1]) if path else ""
        self.schema = sub
        self.validator_value = sub.get(self.validator) if isinstance(sub, dict) else None
        self.instance = exc.instance
        self.absolute_path = list(exc.instance_path)
        self.message = exc.message


@dataclass
class Param:
    name: str
    location: str
    required: bool
    schema: dict[str, Any]
    validator: Checker
    description: str = ""

    def coerce(self, raw: str) -> Any:
        """A query or path string as the type its schema names."""
        kind = self.schema.get("type")
        if kind == "integer":
            try:
                return int(raw, 10)
            except ValueError:
                raise InvalidInput(f"query parameter {self.name} must be an integer, "
                                   f"got {raw[:50]!r}") from None
        if kind == "number":
            try:
                value = float(raw)
            except ValueError:
                value = float("nan")
            if value != value or value in (float("inf"), float("-inf")):
                raise InvalidInput(f"query parameter {self.name} must be a number, "
                                   f"got {raw[:50]!r}")
            return value
        return raw


@dataclass
class Operation:
    method: str
    path: str
    operation_id: str
    params: dict[str, Param] = field(default_factory=dict)
    body: Checker | None = None
    body_required: bool = False
    public: bool = False

    def check_query(self, query: list[tuple[str, str]]) -> dict[str, Any]:
        """Validated, typed query parameters; 400 naming the first problem."""
        out: dict[str, Any] = {}
        for name, raw in query:
            param = self.params.get(name)
            if param is None or param.location != "query":
                known = sorted(p.name for p in self.params.values() if p.location == "query")
                hint = f" (known: {', '.join(known)})" if known else " (it takes none)"
                raise InvalidInput(f"unknown query parameter {name[:50]!r}{hint}")
            if name in out:
                raise InvalidInput(f"query parameter {name} given more than once")
            value = param.coerce(raw)
            _check(param.validator, value, "query", param.description, name)
            out[name] = value
        return out

    def check_path(self, name: str, value: str) -> str:
        param = self.params[name]
        _check(param.validator, value, "path", param.description, name)
        return value

    def check_body(self, body: Any) -> Any:
        assert self.body is not None
        _check(self.body, body, "request body", "")
        return body


def _check(validator: Checker, value: Any, where: str, description: str,
           name: str = "") -> None:
    if validator.is_valid(value):
        return
    error = validator.first_error(value)
    if error is None:  # pragma: no cover - see Checker.first_error
        raise InvalidInput(f"{where}: {name or 'value'} is not valid")
    path = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    field_name = (name + path).lstrip(".")
    custom = error.schema.get("x-invalid") if isinstance(error.schema, dict) else None
    if custom and error.validator not in ("required", "additionalProperties"):
        raise InvalidInput(custom.format(value=_short(error.instance)))
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        raise InvalidInput(f"{where}: unknown field {extra[0]!r}" +
                           (f" in {field_name}" if field_name else "") +
                           f" (allowed: {allowed})")
    if error.validator == "required":
        raise InvalidInput(f"{where}: {error.message.split(' ')[0]} is required")
    if error.validator == "enum":
        options = ", ".join(str(o) for o in error.validator_value if o is not None)
        raise InvalidInput(f"{where}: {field_name or 'value'} must be one of {options}, "
                           f"got {_short(error.instance)}")
    if error.validator == "type":
        raise InvalidInput(f"{where}: {field_name or 'value'} must be "
                           f"{_types(error.validator_value)}, not {_json_type(error.instance)}")
    if error.validator == "pattern":
        hint = error.schema.get("description") or description
        raise InvalidInput(f"{where}: {field_name or 'value'} {_short(error.instance)} is not "
                           f"allowed" + (f": {hint.rstrip('.')}" if hint else ""))
    if field_name:
        raise InvalidInput(f"{where}: {field_name}: {error.message[:300]}")
    raise InvalidInput(f"{where}: {error.message[:300]}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _types(kind: Any) -> str:
    names = {"string": "a string", "object": "a JSON object", "array": "an array",
             "integer": "an integer", "number": "a number", "boolean": "true or false",
             "null": "null"}
    kinds = kind if isinstance(kind, list) else [kind]
    return " or ".join(names.get(k) or str(k) for k in kinds)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "a JSON object"


@lru_cache(maxsize=1)
def operations() -> dict[tuple[str, str], Operation]:
    """Every (METHOD, path template) of the document, compiled."""
    spec = load_spec()
    ops: dict[tuple[str, str], Operation] = {}
    for path, item in spec["paths"].items():
        shared = item.get("parameters", [])
        for method in HTTP_METHODS:
            if method not in item:
                continue
            raw = item[method]
            op = Operation(method=method.upper(), path=path, operation_id=raw["operationId"],
                           public=raw.get("security") == [])
            for p in [*shared, *raw.get("parameters", [])]:
                p = _resolve(spec, p)
                if p["in"] == "header":
                    continue  # headers are read by name in the handler
                schema = p["schema"]
                op.params[p["name"]] = Param(p["name"], p["in"], p.get("required", False),
                                             schema, Checker(schema),
                                             p.get("description", ""))
            body = raw.get("requestBody")
            if body:
                schema = _resolve(spec, body["content"]["application/json"]["schema"])
                op.body = Checker(schema)
                op.body_required = body.get("required", False)
            ops[(op.method, path)] = op
    return ops
