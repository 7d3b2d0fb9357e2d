"""PromQL for the linter: Prometheus' own grammar (via `promql-parser`) and Grafana variables.

`parse(text)` returns the syntax tree of the maintained `promql-parser` package (a port of
Prometheus' lexer, grammar and type checks: RE2 regular expressions, Go string escapes,
durations, function signatures), or raises `PromQLError` with its message. `walk(tree)`
yields every node with its ancestors; the helpers below read selectors, types and result
labels off that tree, so the semantic rules of `queries.py` never look at text.

`substitute(expr, variables)` replaces Grafana's variables the way Grafana does before it
sends a query (`$var`, `${var}`, `${var:format}`, `[[var]]`, the `$__` built-ins), with each
variable's current value, so a custom, constant or interval variable used as a range or a
threshold gives a query that parses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from ..errors import PromQLError

SCALAR, VECTOR, MATRIX, STRING = "scalar", "instant vector", "range vector", "string"


def parse(text: str) -> Any:
    """The syntax tree of `text` (a `promql_parser.Expr`); raises PromQLError."""
    import promql_parser

    if not text.strip():
        raise PromQLError("empty expression")
    try:
        return promql_parser.parse(text)
    except (ValueError, OverflowError) as exc:
        raise PromQLError(str(exc) or "invalid PromQL") from None
    except BaseException as exc:  # a panic in the Rust parser surfaces as its own type
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise PromQLError(f"the parser failed: {exc}") from None


def kind_of(node: Any) -> str:
    """The node's class name: VectorSelector, MatrixSelector, Call, AggregateExpr, ..."""
    return type(node).__name__


def children(node: Any) -> list[Any]:
    """The node's sub-expressions, in source order."""
    k = kind_of(node)
    if k == "AggregateExpr":
        return [c for c in (node.param, node.expr) if c is not None]
    if k == "BinaryExpr":
        return [node.lhs, node.rhs]
    if k == "Call":
        return list(node.args)
    if k == "MatrixSelector":
        return [node.vector_selector]
    if k in ("SubqueryExpr", "UnaryExpr", "ParenExpr"):
        return [node.expr]
    return []


def walk(node: Any, parents: tuple[Any, ...] = ()) -> Iterator[tuple[Any, tuple[Any, ...]]]:
    """Every node of the tree (pre-order) with the tuple of its ancestors, root first."""
    yield node, parents
    for child in children(node):
        yield from walk(child, (*parents, node))


def value_type(node: Any) -> str:
    """SCALAR, VECTOR, MATRIX or STRING: what the expression evaluates to."""
    k = kind_of(node)
    if k == "NumberLiteral":
        return SCALAR
    if k == "StringLiteral":
        return STRING
    if k in ("MatrixSelector", "SubqueryExpr"):
        return MATRIX
    if k == "Call":
        return {"Scalar": SCALAR, "String": STRING, "Matrix": MATRIX}.get(
            str(node.func.return_type).rsplit(".", 1)[-1], VECTOR)
    if k in ("ParenExpr", "UnaryExpr"):
        return value_type(node.expr)
    if k == "BinaryExpr":
        both = {value_type(node.lhs), value_type(node.rhs)}
        return SCALAR if both == {SCALAR} else VECTOR
    return VECTOR


def func_name(node: Any) -> str | None:
    return node.func.name if kind_of(node) == "Call" else None


def agg_op(node: Any) -> str:
    return str(node.op).lower()


def agg_grouping(node: Any) -> tuple[str | None, list[str]]:
    """("by" | "without" | None, labels) of an aggregation."""
    mod = node.modifier
    if mod is None:
        return None, []
    return ("without" if str(mod.type).endswith("Without") else "by"), list(mod.labels)


def selector_name(node: Any) -> str | None:
    """The metric name of a vector selector, also when given as `{__name__="x"}`."""
    if node.name:
        return node.name
    for m in node.matchers.matchers:
        if m.name == "__name__" and str(m.op).endswith("Equal") and \
                not str(m.op).endswith("NotEqual"):
            return m.value
    return None


_OPS = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}


def matchers(node: Any) -> list[tuple[str, str, str]]:
    """(label, op, value) of a vector selector's matchers, op one of = != =~ !~."""
    out = []
    for group in [node.matchers.matchers, *node.matchers.or_matchers]:
        for m in group:
            out.append((m.name, _OPS[str(m.op).rsplit(".", 1)[-1]], m.value))
    return out


def range_of(node: Any) -> timedelta | None:
    """The range of a matrix selector or subquery."""
    return node.range if kind_of(node) in ("MatrixSelector", "SubqueryExpr") else None


# ---------------------------------------------------------------- Grafana variables
#: What Grafana puts for its built-in variables on a typical dashboard; `$__rate_interval`
#: gets a duration no one writes by hand so the linter can tell it was used.
RATE_INTERVAL = timedelta(minutes=5, milliseconds=1)
_GRAFANA_BUILTINS = {
    "__rate_interval": "5m1ms", "__rate_interval_ms": "300001", "__interval": "1m",
    "__interval_ms": "60000", "__range": "1h", "__range_s": "3600", "__range_ms": "3600000",
    "__auto": "1m", "__from": "1700000000000", "__to": "1700003600000",
    "__dashboard": "dashboard", "__org": "1", "__user": "admin", "__name": "name",
}
_VAR = re.compile(r"\$\{(\w+)(?::([^}]*))?\}|\[\[(\w+)(?::([^\]]*))?\]\]|\$(\w+)")
_REGEX_SPECIAL = re.compile(r"[\\^$.|?*+()\[\]{}]")


def _format(values: list[str], fmt: str | None, multi: bool) -> str:
    """Grafana's variable formats (`${var:csv}` ...); the default for Prometheus is `regex`
    for multi-value variables and the raw value otherwise."""
    fmt = (fmt or ("regex" if multi and len(values) > 1 else "raw")).lower()
    if fmt == "regex":
        escaped = [_REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), v) for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    if fmt == "pipe":
        return "|".join(values)
    if fmt in ("csv", "distributed"):
        return ",".join(values)
    if fmt == "json":
        return json.dumps(values)
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "doublequote":
        return ",".join('"' + v.replace('"', '\\"') + '"' for v in values)
    if fmt == "glob":
        return values[0] if len(values) == 1 else "{" + ",".join(values) + "}"
    if fmt == "text":
        return " + ".join(values)
    if fmt == "queryparam":
        return "&".join(f"var={v}" for v in values)
    return ",".join(values)  # raw, lucene, percentencode, sqlstring: the plain value(s)


class Variable:
    """One dashboard variable: its current value(s) and whether it takes several, or a
    `literal` put in as it is whatever the format (a query variable's "All" value, which
    Grafana substitutes unescaped)."""

    def __init__(self, values: list[str], multi: bool = False,
                 literal: str | None = None) -> None:
        self.values = values or [".+"]
        self.multi = multi
        self.literal = literal


def substitute(expr: str, variables: dict[str, Any] | None = None) -> str:
    """Replace Grafana variables as Grafana does before sending the query.

    `variables` maps a name to a `Variable` (or a plain string value). Built-in intervals
    get typical durations; names that are no variable (`$1` in label_replace) stay as they
    are, as in Grafana.
    """
    variables = variables or {}

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3) or m.group(5)
        fmt = m.group(2) or m.group(4)
        if name in _GRAFANA_BUILTINS:
            return _GRAFANA_BUILTINS[name]
        var = variables.get(name)
        if var is None:
            return m.group(0)  # Grafana leaves names it does not know (`$1`) as they are
        if isinstance(var, str):
            var = Variable([var])
        if var.literal is not None:
            return var.literal
        return _format(var.values, fmt, var.multi)

    return _VAR.sub(repl, expr)
