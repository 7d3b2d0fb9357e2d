"""The semantic rules every PromQL query gets, in a dashboard panel or a rule file alike.

    promql              the expression parses and type-checks
    counter-rate        counters appear only inside rate/irate/increase
    histogram-quantile  histogram_quantile() reads a `_bucket` series and keeps `le`
    metric-exported     every metric is one approvalctl exports (or a recording rule, `up`,
                        `ALERTS`), queried only with labels and label values it has
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from .findings import ERROR, WARNING
from .promql import (
    MATRIX,
    SCALAR,
    VECTOR,
    PromQLError,
    agg_grouping,
    agg_op,
    children,
    func_name,
    kind_of,
    matchers,
    parse,
    selector_name,
    value_type,
    walk,
)

#: Labels Prometheus itself attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
_RATE_FUNCS = frozenset({"rate", "irate", "increase"})
#: Functions that may see a raw counter without misreading it.
_RAW_OK = frozenset({"absent", "absent_over_time", "resets", "changes", "timestamp",
                     "present_over_time"})


@dataclass
class Series:
    name: str
    kind: str  # counter | gauge (histogram parts count as counters)
    labels: frozenset[str]
    values: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass
class Catalogue:
    """What may be queried: approvalctl's own series, recording rules, Prometheus's own."""

    series: dict[str, Series] = field(default_factory=dict)
    recorded: set[str] = field(default_factory=set)

    @classmethod
    def from_registry(cls) -> Catalogue:
        from .. import metrics

        out = cls()
        for info in metrics.catalogue():
            for name, labels in info.series().items():
                kind = "gauge" if info.type == "gauge" or name.endswith("_created") \
                    else "counter"
                values = dict(info.values) if name.endswith("_bucket") else \
                    {k: v for k, v in info.values.items() if k != "le"}
                out.series[name] = Series(name, kind, frozenset(labels) | TARGET_LABELS,
                                          values)
        out.series["up"] = Series("up", "gauge", TARGET_LABELS)
        return out

    def names(self) -> list[str]:
        return sorted(set(self.series) | self.recorded | {"ALERTS", "ALERTS_FOR_STATE"})


Problem = tuple[str, str, str]  # (rule, severity, message)


def check(expr: str, cat: Catalogue) -> list[Problem]:
    """Every problem with one (already variable-substituted) expression."""
    try:
        tree = parse(expr)
    except PromQLError as exc:
        return [("promql", ERROR, f"{exc} (in {expr!r})")]
    return check_tree(tree, cat)


def check_tree(tree: Any, cat: Catalogue) -> list[Problem]:
    """The semantic rules on a parsed expression."""
    problems: list[Problem] = []
    for node, parents in walk(tree):
        k = kind_of(node)
        if k == "VectorSelector":
            problems += [("promql", ERROR, msg) for msg in (
                re2_error(value) for _, op, value in matchers(node) if op in ("=~", "!~"))
                if msg]
            problems += _exported(node, cat)
            problems += _counter_rate(node, parents, cat)
        elif k == "Call" and func_name(node) == "histogram_quantile":
            problems += _quantile(node)
        elif k == "Call" and func_name(node) == "label_replace" and len(node.args) == 5 \
                and kind_of(node.args[4]) == "StringLiteral":
            msg = re2_error(node.args[4].val)
            if msg:
                problems.append(("promql", ERROR, f"label_replace: {msg}"))
        elif k == "AggregateExpr":
            problems += _grouping(node, cat)
    return problems


def re2_error(pattern: str) -> str | None:
    """Why Prometheus would reject `pattern` as a regular expression, or None.

    Prometheus anchors label regexes and compiles them with Go's RE2 syntax; the parser's
    own (Rust) regex engine accepts some patterns RE2 rejects (possessive `a++`), so the
    pattern is checked with RE2 itself (`google-re2`).
    """
    import re2

    options = re2.Options()
    options.log_errors = False  # the error comes back as the exception
    try:
        re2.compile(f"^(?:{pattern})$", options)
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args and \
            isinstance(exc.args[0], bytes) else str(exc)
        return f"invalid regular expression {pattern!r}: {detail}"
    return None


def _exported(sel: Any, cat: Catalogue) -> list[Problem]:
    name = selector_name(sel)
    if name is None:
        return [("metric-exported", WARNING, "selector without a metric name cannot be "
                 "checked against the exported metrics")]
    if name in cat.recorded or name in ("ALERTS", "ALERTS_FOR_STATE"):
        return []
    series = cat.series.get(name)
    if series is None:
        close = difflib.get_close_matches(name, cat.names(), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return [("metric-exported", ERROR, f"{name} is not exported by approvalctl nor "
                 f"recorded by a rule{hint}")]
    out: list[Problem] = []
    for label, op, value in matchers(sel):
        if label == "__name__":
            continue
        if label not in series.labels:
            out.append(("metric-exported", ERROR, f"{name} has no label {label!r} (it has: "
                        f"{', '.join(sorted(series.labels))})"))
            continue
        known = series.values.get(label)
        if not known or op in ("!=", "!~"):
            continue
        if op == "=" and value not in known:
            out.append(("metric-exported", ERROR, f"{name}{{{label}={value!r}}} never "
                        f"exists (values: {', '.join(known)})"))
        elif op == "=~":
            literals = value.split("|")
            if all(re.fullmatch(r"[\w.+-]+", lit) for lit in literals):
                missing = [lit for lit in literals if lit not in known]
                if missing:
                    out.append(("metric-exported", ERROR, f"{name}{{{label}=~{value!r}}}"
                                f": {', '.join(missing)} never exists (values: "
                                f"{', '.join(known)})"))
            else:
                try:
                    hit = any(re.fullmatch(value, v) for v in known)
                except re.error:  # valid RE2 that Python's re does not read: no verdict
                    hit = True
                if not hit:
                    out.append(("metric-exported", ERROR, f"{name}{{{label}=~{value!r}}} "
                                f"matches no value (values: {', '.join(known)})"))
    return out


def _is_counter(name: str | None, cat: Catalogue) -> bool:
    if name is None:
        return False
    series = cat.series.get(name)
    if series is not None:
        return series.kind == "counter"
    return name not in cat.recorded and name.endswith("_total")


def _counter_rate(sel: Any, parents: tuple[Any, ...], cat: Catalogue) -> list[Problem]:
    name = selector_name(sel)
    if not _is_counter(name, cat):
        return []
    chain = [p for p in parents if kind_of(p) != "ParenExpr"]
    parent = chain[-1] if chain else None
    grand = chain[-2] if len(chain) > 1 else None
    pk, gk = kind_of(parent), kind_of(grand)
    if pk == "MatrixSelector" and gk == "Call" and func_name(grand) in _RATE_FUNCS | _RAW_OK:
        return []
    if pk == "Call" and func_name(parent) in _RAW_OK:
        return []
    # a subquery over the raw counter, itself under rate(): rate(x_total[1h:1m])
    if pk == "SubqueryExpr" and gk == "Call" and func_name(grand) in _RATE_FUNCS:
        return []
    return [("counter-rate", ERROR, f"counter {name} is used outside rate()/irate()/"
             "increase(): its raw value only says how much happened since the process "
             "or database started")]


def _quantile(call: Any) -> list[Problem]:
    if len(call.args) < 2:
        return []
    buckets = [(n, p) for n, p in walk(call.args[1]) if kind_of(n) == "VectorSelector"
               and (selector_name(n) or "").endswith("_bucket")]
    if not buckets:
        return [("histogram-quantile", ERROR, "histogram_quantile() must read a _bucket "
                 "series (e.g. rate(x_bucket[5m]))")]
    out: list[Problem] = []
    for sel, path in buckets:
        for node in path:
            if kind_of(node) != "AggregateExpr":
                continue
            how, grouping = agg_grouping(node)
            op = agg_op(node)
            if how == "without" and "le" in grouping:
                out.append(("histogram-quantile", ERROR, f"{op} without (le) drops the "
                            f"bucket label histogram_quantile() needs ({selector_name(sel)})"))
            elif how != "without" and "le" not in grouping:
                text = f"by ({', '.join(grouping)})" if how == "by" else "with no by (le)"
                out.append(("histogram-quantile", ERROR, f"{op} {text} drops the `le` "
                            f"label histogram_quantile() needs: use {op} by (le, ...)"))
    return out


def _grouping(agg: Any, cat: Catalogue) -> list[Problem]:
    how, grouping = agg_grouping(agg)
    if how != "by" or not grouping:
        return []
    available: set[str] = set()
    for node, _ in walk(agg.expr):
        if func_name(node) in ("label_replace", "label_join"):
            return []  # labels made up by the query itself
        if kind_of(node) == "VectorSelector":
            name = selector_name(node) or ""
            series = cat.series.get(name)
            if series is None:
                return []  # recording rule or unknown metric: reported elsewhere
            available |= series.labels | ({"le"} if name.endswith("_bucket") else set())
    missing = [lab for lab in grouping if lab not in available]
    if not missing:
        return []
    return [("metric-exported", ERROR, f"{agg_op(agg)} by ({', '.join(grouping)}): no metric "
             f"here has label {', '.join(repr(m) for m in missing)}")]


# ---------------------------------------------------------------- labels of a result
def result_labels(node: Any, cat: Catalogue) -> set[str] | None:
    """The labels every series of the expression's result carries; None when unknowable.

    Follows Prometheus: aggregations keep their `by` labels (or drop their `without` ones),
    histogram_quantile() drops `le`, one-to-one vector matching with on() keeps only the
    matching labels and with ignoring() drops the ignored ones.
    """
    k = kind_of(node)
    if k in ("NumberLiteral", "StringLiteral"):
        return set()
    if k == "VectorSelector":
        name = selector_name(node) or ""
        series = cat.series.get(name)
        return set(series.labels) | ({"le"} if name.endswith("_bucket") else set()) \
            if series else None
    if k in ("MatrixSelector", "ParenExpr", "UnaryExpr", "SubqueryExpr"):
        return result_labels(children(node)[0], cat)
    if k == "Call":
        func = func_name(node)
        if func in ("vector", "time", "scalar", "pi"):
            return set()
        if func in ("absent", "absent_over_time"):
            return None  # labels come from the selector's equality matchers
        vectors = [a for a in node.args if value_type(a) in (VECTOR, MATRIX)]
        inner = result_labels(vectors[0], cat) if vectors else set()
        if inner is None:
            return None
        if func == "histogram_quantile":
            return inner - {"le"}
        if func in ("label_replace", "label_join") and len(node.args) > 1:
            target = node.args[1]
            return inner | ({target.val} if kind_of(target) == "StringLiteral" else set())
        return inner
    if k == "AggregateExpr":
        op = agg_op(node)
        how, grouping = agg_grouping(node)
        extra = set()
        if op == "count_values" and kind_of(node.param) == "StringLiteral":
            extra = {node.param.val}
        if how == "by":
            return set(grouping) | extra
        if op in ("topk", "bottomk", "limitk", "limit_ratio"):
            return result_labels(node.expr, cat)
        if how == "without":
            inner = result_labels(node.expr, cat)
            return None if inner is None else (inner - set(grouping)) | extra
        return extra
    if k == "BinaryExpr":
        lhs, rhs = result_labels(node.lhs, cat), result_labels(node.rhs, cat)
        l_scalar = value_type(node.lhs) == SCALAR
        r_scalar = value_type(node.rhs) == SCALAR
        if l_scalar and r_scalar:
            return set()
        if l_scalar or r_scalar:
            return rhs if l_scalar else lhs
        op = str(node.op).strip().lower()
        if op == "or":
            return None if lhs is None or rhs is None else lhs & rhs
        if op in ("and", "unless"):
            return lhs
        mod = node.modifier
        card = str(mod.card).rsplit(".", 1)[-1] if mod is not None else "OneToOne"
        include = list(mod.group_labels or []) if mod is not None else []
        if card == "OneToMany":
            return None if rhs is None else rhs | set(include)
        if card == "ManyToOne":
            return None if lhs is None else lhs | set(include)
        matching = mod.matching if mod is not None else None
        if matching is not None and str(matching.type).endswith("Include"):
            return set(matching.labels)
        if lhs is None:
            return None
        ignored = set(matching.labels) if matching is not None else set()
        return lhs - ignored
    return None


_LEGEND = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")
_TEMPLATE_LABEL = re.compile(r"\$labels\.([A-Za-z_]\w*)|\$labels\s*\[\s*\"(\w+)\"\s*\]"
                             r"|\.Labels\.([A-Za-z_]\w*)")


def _labels_used(pattern: re.Pattern[str], text: str) -> list[str]:
    return [next(g for g in m.groups() if g) for m in pattern.finditer(text)]


def missing_labels(expr: str, template: str, cat: Catalogue, *, legend: bool
                   ) -> tuple[list[str], set[str]] | None:
    """Labels a legend (`{{status}}`) or alert template (`$labels.job`) uses that the
    expression's result does not carry, with the labels it does carry; None if unknowable."""
    try:
        labels = result_labels(parse(expr), cat)
    except PromQLError:
        return None
    if labels is None:
        return None
    used = _labels_used(_LEGEND if legend else _TEMPLATE_LABEL, template)
    missing = [lab for lab in dict.fromkeys(used) if lab not in labels]
    return missing, labels
