"""A small PromQL parser: enough to validate the queries of dashboards and rule files.

It tokenizes and parses the full expression grammar (selectors, range and subquery
brackets, offset/@ modifiers, functions, aggregations with by/without, binary operators with
bool/on/ignoring/group_left/group_right, precedence and right-associative `^`) into a small
tree, and type-checks function and operator arguments (instant vector, range vector, scalar,
string). The linter walks the tree for its semantic rules. When `promtool` is installed the
linter additionally feeds every expression to Prometheus's own parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import PromQLError

# ---------------------------------------------------------------- the tree
SCALAR, VECTOR, MATRIX, STRING = "scalar", "instant vector", "range vector", "string"


@dataclass
class Node:
    pos: int = 0

    def children(self) -> list[Node]:
        return []


@dataclass
class Number(Node):
    value: float = 0.0
    type: str = SCALAR


@dataclass
class String(Node):
    value: str = ""
    type: str = STRING


@dataclass
class Matcher:
    label: str
    op: str  # = != =~ !~
    value: str


@dataclass
class Selector(Node):
    """An instant vector selector: `name{label="v"}`, with optional offset/@."""

    name: str | None = None
    matchers: list[Matcher] = field(default_factory=list)
    type: str = VECTOR

    def label_names(self) -> set[str]:
        return {m.label for m in self.matchers if m.label != "__name__"}


@dataclass
class Range(Node):
    """`selector[5m]`: a range vector."""

    selector: Selector = field(default_factory=Selector)
    duration: str = ""
    type: str = MATRIX

    def children(self) -> list[Node]:
        return [self.selector]


@dataclass
class Subquery(Node):
    expr: Node = field(default_factory=Node)
    range: str = ""
    step: str = ""
    type: str = MATRIX

    def children(self) -> list[Node]:
        return [self.expr]


@dataclass
class Call(Node):
    func: str = ""
    args: list[Node] = field(default_factory=list)
    type: str = VECTOR

    def children(self) -> list[Node]:
        return list(self.args)


@dataclass
class Aggregate(Node):
    op: str = ""
    expr: Node = field(default_factory=Node)
    param: Node | None = None
    grouping: list[str] = field(default_factory=list)
    without: bool = False
    by: bool = False
    type: str = VECTOR

    def children(self) -> list[Node]:
        return ([self.param] if self.param else []) + [self.expr]


@dataclass
class Binary(Node):
    op: str = ""
    lhs: Node = field(default_factory=Node)
    rhs: Node = field(default_factory=Node)
    bool_mod: bool = False
    on: list[str] | None = None
    ignoring: list[str] | None = None
    group: str | None = None  # group_left | group_right
    include: list[str] = field(default_factory=list)
    type: str = VECTOR

    def children(self) -> list[Node]:
        return [self.lhs, self.rhs]


@dataclass
class Unary(Node):
    op: str = ""
    expr: Node = field(default_factory=Node)
    type: str = VECTOR

    def children(self) -> list[Node]:
        return [self.expr]


@dataclass
class Paren(Node):
    expr: Node = field(default_factory=Node)
    type: str = VECTOR

    def children(self) -> list[Node]:
        return [self.expr]


def walk(node: Node, parents: tuple[Node, ...] = ()):
    """Every node with the chain of its ancestors (nearest last)."""
    yield node, parents
    for child in node.children():
        yield from walk(child, parents + (node,))


# ---------------------------------------------------------------- functions
V, M, S, T = VECTOR, MATRIX, SCALAR, STRING
#: name -> (argument types, how many trailing arguments are optional, return type)
FUNCTIONS: dict[str, tuple[tuple[str, ...], int, str]] = {
    "abs": ((V,), 0, V), "absent": ((V,), 0, V), "absent_over_time": ((M,), 0, V),
    "ceil": ((V,), 0, V), "changes": ((M,), 0, V), "clamp": ((V, S, S), 0, V),
    "clamp_max": ((V, S), 0, V), "clamp_min": ((V, S), 0, V),
    "day_of_month": ((V,), 1, V), "day_of_week": ((V,), 1, V), "day_of_year": ((V,), 1, V),
    "days_in_month": ((V,), 1, V), "delta": ((M,), 0, V), "deriv": ((M,), 0, V),
    "exp": ((V,), 0, V), "floor": ((V,), 0, V), "histogram_quantile": ((S, V), 0, V),
    "holt_winters": ((M, S, S), 0, V), "hour": ((V,), 1, V), "idelta": ((M,), 0, V),
    "increase": ((M,), 0, V), "irate": ((M,), 0, V),
    "label_replace": ((V, T, T, T, T), 0, V), "label_join": ((V, T, T, T), 0, V),
    "ln": ((V,), 0, V), "log2": ((V,), 0, V), "log10": ((V,), 0, V),
    "minute": ((V,), 1, V), "month": ((V,), 1, V), "predict_linear": ((M, S), 0, V),
    "rate": ((M,), 0, V), "resets": ((M,), 0, V), "round": ((V, S), 1, V),
    "scalar": ((V,), 0, S), "sgn": ((V,), 0, V), "sort": ((V,), 0, V),
    "sort_desc": ((V,), 0, V), "sqrt": ((V,), 0, V), "time": ((), 0, S),
    "timestamp": ((V,), 0, V), "vector": ((S,), 0, V), "year": ((V,), 1, V),
    "avg_over_time": ((M,), 0, V), "min_over_time": ((M,), 0, V),
    "max_over_time": ((M,), 0, V), "sum_over_time": ((M,), 0, V),
    "count_over_time": ((M,), 0, V), "quantile_over_time": ((S, M), 0, V),
    "stddev_over_time": ((M,), 0, V), "stdvar_over_time": ((M,), 0, V),
    "last_over_time": ((M,), 0, V), "present_over_time": ((M,), 0, V),
    "acos": ((V,), 0, V), "acosh": ((V,), 0, V), "asin": ((V,), 0, V),
    "asinh": ((V,), 0, V), "atan": ((V,), 0, V), "atanh": ((V,), 0, V),
    "cos": ((V,), 0, V), "cosh": ((V,), 0, V), "sin": ((V,), 0, V), "sinh": ((V,), 0, V),
    "tan": ((V,), 0, V), "tanh": ((V,), 0, V), "deg": ((V,), 0, V), "rad": ((V,), 0, V),
    "pi": ((), 0, S), "histogram_count": ((V,), 0, V), "histogram_sum": ((V,), 0, V),
    "histogram_fraction": ((S, S, V), 0, V), "histogram_stddev": ((V,), 0, V),
    "histogram_stdvar": ((V,), 0, V),
}
AGGREGATIONS = {"sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk",
                "bottomk", "quantile", "count_values"}
_PARAM_AGGS = {"topk": S, "bottomk": S, "quantile": S, "count_values": T}
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
             "group_right", "bool", "offset"}
_PRECEDENCE = {"or": 1, "and": 2, "unless": 2, "==": 3, "!=": 3, "<": 3, ">": 3, "<=": 3,
               ">=": 3, "+": 4, "-": 4, "*": 5, "/": 5, "%": 5, "atan2": 5, "^": 6}
_COMPARISONS = {"==", "!=", "<", ">", "<=", ">="}
_SET_OPS = {"and", "or", "unless"}

# ---------------------------------------------------------------- tokens
_DURATION = r"(?:\d+(?:ms|[smhdwy]))+"
_TOKEN = re.compile(r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<duration>""" + _DURATION + r""")(?![\w.])
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|(?i:inf|nan)(?![\w:]))
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
  | (?P<ident>[a-zA-Z_][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|==|!=|<=|>=|[-+*/%^<>=(){}\[\],:@])
""", re.VERBOSE)


@dataclass
class Tok:
    kind: str
    text: str
    pos: int


def tokenize(text: str) -> list[Tok]:
    toks: list[Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            ch = text[pos]
            if ch in "\"'`":
                raise PromQLError(f"unterminated string starting at {text[pos:pos + 20]!r}",
                                  pos)
            raise PromQLError(f"unexpected character {ch!r}", pos)
        kind = m.lastgroup or ""
        if kind != "ws":
            toks.append(Tok(kind, m.group(), pos))
        pos = m.end()
    toks.append(Tok("eof", "", len(text)))
    return toks


def _unquote(text: str) -> str:
    if text[0] == "`":
        return text[1:-1]
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


# ---------------------------------------------------------------- parser
class Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = tokenize(text)
        self.i = 0

    # -- helpers
    @property
    def tok(self) -> Tok:
        return self.toks[self.i]

    def next(self) -> Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def at(self, *texts: str) -> bool:
        tok = self.tok
        if tok.kind == "ident":  # keywords are case-insensitive (BY, Offset), names are not
            return tok.text.lower() in texts
        return tok.kind == "op" and tok.text in texts

    def expect(self, text: str, what: str = "") -> Tok:
        if not self.at(text):
            found = self.tok.text or "end of expression"
            raise PromQLError(f"expected {text!r}{what}, found {found!r}", self.tok.pos)
        return self.next()

    def error(self, message: str, pos: int | None = None) -> PromQLError:
        return PromQLError(message, self.tok.pos if pos is None else pos)

    # -- grammar
    def parse(self) -> Node:
        if self.tok.kind == "eof":
            raise self.error("empty expression")
        node = self.expr(0)
        if self.tok.kind != "eof":
            raise self.error(f"unexpected {self.tok.text!r} after a complete expression")
        return node

    def binop(self) -> str | None:
        tok = self.tok
        if tok.kind == "op" and tok.text in _PRECEDENCE:
            return tok.text
        if tok.kind == "ident" and tok.text.lower() in ("and", "or", "unless", "atan2"):
            return tok.text.lower()
        return None

    def expr(self, min_prec: int) -> Node:
        lhs = self.unary()
        while True:
            op = self.binop()
            if op is None or _PRECEDENCE[op] < min_prec:
                return lhs
            pos = self.next().pos
            node = Binary(pos=pos, op=op, lhs=lhs)
            if self.at("bool"):
                self.next()
                if op not in _COMPARISONS:
                    raise self.error(f"bool modifier only goes with comparisons, not {op!r}")
                node.bool_mod = True
            if self.at("on", "ignoring"):
                kind = self.next().text.lower()
                labels = self.label_list()
                if kind == "on":
                    node.on = labels
                else:
                    node.ignoring = labels
                if self.at("group_left", "group_right"):
                    node.group = self.next().text.lower()
                    if self.at("("):
                        node.include = self.label_list()
            # ^ is right-associative; everything else left
            next_min = _PRECEDENCE[op] if op == "^" else _PRECEDENCE[op] + 1
            node.rhs = self.expr(next_min)
            self.check_binary(node)
            lhs = node

    def check_binary(self, node: Binary) -> None:
        lt, rt = _type(node.lhs), _type(node.rhs)
        for side, t in (("left", lt), ("right", rt)):
            if t in (MATRIX, STRING):
                raise PromQLError(f"binary {node.op!r}: the {side} side is {_a(t)}; only "
                                  "scalars and instant vectors can be combined", node.pos)
        if node.op in _SET_OPS and (lt == SCALAR or rt == SCALAR):
            raise PromQLError(f"set operator {node.op!r} needs instant vectors on both sides",
                              node.pos)
        if node.op in _COMPARISONS and lt == SCALAR and rt == SCALAR and not node.bool_mod:
            raise PromQLError("comparisons between scalars must use the bool modifier",
                              node.pos)
        if (node.on is not None or node.ignoring is not None or node.group) and \
                (lt == SCALAR or rt == SCALAR):
            raise PromQLError("vector matching (on/ignoring/group_*) needs vectors on both "
                              "sides", node.pos)
        node.type = SCALAR if lt == SCALAR and rt == SCALAR else VECTOR

    def unary(self) -> Node:
        if self.at("-", "+"):
            tok = self.next()
            inner = self.unary_operand()
            t = _type(inner)
            if t not in (SCALAR, VECTOR):
                raise PromQLError(f"unary {tok.text!r} needs a scalar or instant vector, not a "
                                  f"{t}", tok.pos)
            return Unary(pos=tok.pos, op=tok.text, expr=inner, type=t)
        return self.unary_operand()

    def unary_operand(self) -> Node:
        node = self.postfix(self.primary())
        # `^` binds tighter than unary minus: -2^2 == -(2^2)
        if self.at("^"):
            pos = self.next().pos
            node = Binary(pos=pos, op="^", lhs=node, rhs=self.expr(_PRECEDENCE["^"]))
            self.check_binary(node)
        return node

    def primary(self) -> Node:
        tok = self.tok
        if tok.kind == "number":
            self.next()
            return Number(pos=tok.pos, value=float(int(tok.text, 16)) if tok.text[:2].lower()
                          == "0x" else float(tok.text))
        if tok.kind == "duration":
            raise self.error(f"a duration ({tok.text}) is only valid inside [...] or after "
                             "offset")
        if tok.kind == "string":
            self.next()
            return String(pos=tok.pos, value=_unquote(tok.text))
        if self.at("("):
            self.next()
            inner = self.expr(0)
            self.expect(")", " to close '('")
            return Paren(pos=tok.pos, expr=inner, type=_type(inner))
        if self.at("{"):
            return self.selector(None, tok.pos)
        if tok.kind == "ident":
            name = tok.text
            low = name.lower()
            if low in AGGREGATIONS and self.peek_is("(", "by", "without"):
                return self.aggregate()
            if self.peek_is("("):
                if name not in FUNCTIONS:
                    raise self.error(f"unknown function {name!r}")
                return self.call()
            if low in _KEYWORDS:
                raise self.error(f"unexpected keyword {name!r}")
            self.next()
            return self.selector(name, tok.pos)
        if tok.kind == "eof":
            raise self.error("expression ends too early")
        raise self.error(f"unexpected {tok.text!r}")

    def peek_is(self, *texts: str) -> bool:
        nxt = self.toks[self.i + 1]
        if nxt.kind == "ident":
            return nxt.text.lower() in texts
        return nxt.kind == "op" and nxt.text in texts

    def label_list(self) -> list[str]:
        self.expect("(")
        labels: list[str] = []
        while not self.at(")"):
            tok = self.next()
            if tok.kind != "ident" or ":" in tok.text:
                raise PromQLError(f"expected a label name, found {tok.text or 'end'!r}",
                                  tok.pos)
            labels.append(tok.text)
            if not self.at(")"):
                self.expect(",", " between label names")
        self.next()
        return labels

    def selector(self, name: str | None, pos: int) -> Selector:
        sel = Selector(pos=pos, name=name)
        if self.at("{"):
            self.next()
            while not self.at("}"):
                tok = self.next()
                if tok.kind != "ident":
                    raise PromQLError(f"expected a label name in {{...}}, found "
                                      f"{tok.text or 'end'!r}", tok.pos)
                op = self.next()
                if op.text not in ("=", "!=", "=~", "!~"):
                    raise PromQLError(f"expected =, !=, =~ or !~ after label {tok.text!r}, "
                                      f"found {op.text or 'end'!r}", op.pos)
                val = self.next()
                if val.kind != "string":
                    raise PromQLError(f"label {tok.text!r} needs a quoted value, found "
                                      f"{val.text or 'end'!r}", val.pos)
                value = _unquote(val.text)
                if op.text in ("=~", "!~"):
                    try:
                        re.compile(value)
                    except re.error as exc:
                        raise PromQLError(f"invalid regular expression {value!r} for label "
                                          f"{tok.text!r}: {exc}", val.pos) from None
                sel.matchers.append(Matcher(tok.text, op.text, value))
                if not self.at("}"):
                    self.expect(",", " between label matchers")
            self.next()
            if name is None and all(_matches_empty(m) for m in sel.matchers):
                raise PromQLError("a selector needs a metric name or a matcher that does "
                                  "not match the empty string", pos)
        for m in sel.matchers:
            if m.label == "__name__" and m.op == "=":
                sel.name = sel.name or m.value
        return sel

    def duration(self) -> str:
        tok = self.next()
        if tok.kind == "duration":
            return tok.text
        if tok.kind == "number" and tok.text.isdigit():
            return tok.text + "s"
        raise PromQLError(f"expected a duration such as 5m, found {tok.text or 'end'!r}",
                          tok.pos)

    def postfix(self, node: Node) -> Node:
        while True:
            if self.at("["):
                pos = self.next().pos
                rng = self.duration()
                if self.at(":"):
                    self.next()
                    step = "" if self.at("]") else self.duration()
                    self.expect("]", " to close the subquery")
                    if _type(node) != VECTOR:
                        raise PromQLError("a subquery needs an instant vector", pos)
                    node = Subquery(pos=pos, expr=node, range=rng, step=step)
                    continue
                self.expect("]", " to close the range")
                if not isinstance(node, Selector):
                    raise PromQLError("a range [..] can only follow a metric selector; use a "
                                      "subquery [5m:1m] for an expression", pos)
                node = Range(pos=pos, selector=node, duration=rng)
            elif self.at("offset"):
                self.next()
                if self.at("-"):
                    self.next()
                self.duration()
                if not isinstance(node, (Selector, Range, Subquery)):
                    raise self.error("offset must follow a selector or subquery")
            elif self.at("@"):
                self.next()
                tok = self.next()
                if tok.text in ("start", "end"):
                    self.expect("(")
                    self.expect(")")
                elif tok.kind != "number":
                    raise PromQLError("@ needs a Unix timestamp, start() or end()", tok.pos)
            else:
                return node

    def call(self) -> Call:
        tok = self.next()
        self.expect("(")
        args: list[Node] = []
        while not self.at(")"):
            if self.tok.kind == "eof":
                raise self.error(f"{tok.text}( is not closed")
            args.append(self.expr(0))
            if not self.at(")"):
                self.expect(",", f" between the arguments of {tok.text}()")
        self.next()
        types, optional, ret = FUNCTIONS[tok.text]
        if not len(types) - optional <= len(args) <= len(types):
            want = str(len(types)) if not optional else f"{len(types) - optional} to " \
                f"{len(types)}"
            raise PromQLError(f"{tok.text}() takes {want} argument(s), got {len(args)}",
                              tok.pos)
        for n, (want_t, arg) in enumerate(zip(types, args), 1):
            got = _type(arg)
            if got != want_t:
                hint = " (add a range such as [5m])" if want_t == MATRIX and got == VECTOR \
                    else ""
                raise PromQLError(f"{tok.text}() argument {n} must be {_a(want_t)}, got "
                                  f"{_a(got)}{hint}", arg.pos)
        return Call(pos=tok.pos, func=tok.text, args=args, type=ret)

    def aggregate(self) -> Aggregate:
        tok = self.next()
        agg = Aggregate(pos=tok.pos, op=tok.text.lower())
        if self.at("by", "without"):
            agg.without = self.next().text.lower() == "without"
            agg.by = not agg.without
            agg.grouping = self.label_list()
        self.expect("(", f" after {tok.text}")
        args = [self.expr(0)]
        while self.at(","):
            self.next()
            args.append(self.expr(0))
        self.expect(")", f" to close {tok.text}(")
        if not (agg.by or agg.without) and self.at("by", "without"):
            agg.without = self.next().text.lower() == "without"
            agg.by = not agg.without
            agg.grouping = self.label_list()
        want_param = agg.op in _PARAM_AGGS
        if len(args) != (2 if want_param else 1):
            raise PromQLError(f"{agg.op}() takes {2 if want_param else 1} argument(s), got "
                              f"{len(args)}", tok.pos)
        if want_param:
            agg.param = args[0]
            if _type(agg.param) != _PARAM_AGGS[agg.op]:
                raise PromQLError(f"{agg.op}() parameter must be a {_PARAM_AGGS[agg.op]}",
                                  agg.param.pos)
        agg.expr = args[-1]
        if _type(agg.expr) != VECTOR:
            got = _type(agg.expr)
            hint = " (wrap a range in rate() or *_over_time())" if got == MATRIX else ""
            raise PromQLError(f"{agg.op}() aggregates an instant vector, got {_a(got)}{hint}",
                              agg.expr.pos)
        return agg


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _matches_empty(m: Matcher) -> bool:
    if m.op == "=":
        return m.value == ""
    if m.op == "!=":
        return m.value != ""
    matched = re.fullmatch(m.value, "") is not None
    return matched if m.op == "=~" else not matched


def _type(node: Node) -> str:
    return getattr(node, "type", VECTOR)


def parse(text: str) -> Node:
    """Parse a PromQL expression; raises PromQLError naming the problem and its offset."""
    return Parser(text).parse()


# ---------------------------------------------------------------- Grafana variables
_GRAFANA_BUILTINS = {
    "__rate_interval": "5m", "__interval": "1m", "__range": "1h", "__range_s": "3600",
    "__range_ms": "3600000", "__interval_ms": "60000", "__auto": "1m",
}
_VAR = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")


def substitute(expr: str, variables: dict[str, str] | None = None) -> str:
    """Replace Grafana variables with representative values so the text parses as PromQL.

    Built-in intervals get durations; dashboard variables get their `allValue` (or `.+`),
    which is a fine label value and regular expression.
    """
    variables = variables or {}

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name in _GRAFANA_BUILTINS:
            return _GRAFANA_BUILTINS[name]
        return variables.get(name, ".+")

    return _VAR.sub(repl, expr)
