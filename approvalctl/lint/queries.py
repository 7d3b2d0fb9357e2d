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

from .findings import ERROR, WARNING
from .promql import (
    MATRIX,
    SCALAR,
    VECTOR,
    Aggregate,
    Call,
    Node,
    PromQLError,
    Range,
    Selector,
    Subquery,
    parse,
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
        return [("promql", ERROR, f"{exc} (at offset {exc.pos} of {expr!r})")]
    problems: list[Problem] = []
    for node, parents in walk(tree):
        if isinstance(node, Selector):
            problems += _exported(node, cat)
            problems += _counter_rate(node, parents, cat)
        elif isinstance(node, Call) and node.func == "histogram_quantile":
            problems += _quantile(node)
        elif isinstance(node, Aggregate):
            problems += _grouping(node, cat)
    return problems


def _exported(sel: Selector, cat: Catalogue) -> list[Problem]:
    name = sel.name
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
    for m in sel.matchers:
        if m.label == "__name__":
            continue
        if m.label not in series.labels:
            out.append(("metric-exported", ERROR, f"{name} has no label {m.label!r} (it has: "
                        f"{', '.join(sorted(series.labels))})"))
            continue
        known = series.values.get(m.label)
        if not known or m.op in ("!=", "!~"):
            continue
        if m.op == "=" and m.value not in known:
            out.append(("metric-exported", ERROR, f"{name}{{{m.label}={m.value!r}}} never "
                        f"exists (values: {', '.join(known)})"))
        elif m.op == "=~":
            literals = m.value.split("|")
            if all(re.fullmatch(r"[\w.+-]+", lit) for lit in literals):
                missing = [lit for lit in literals if lit not in known]
                if missing:
                    out.append(("metric-exported", ERROR, f"{name}{{{m.label}=~{m.value!r}}}"
                                f": {', '.join(missing)} never exists (values: "
                                f"{', '.join(known)})"))
            elif not any(re.fullmatch(m.value, v) for v in known):
                out.append(("metric-exported", ERROR, f"{name}{{{m.label}=~{m.value!r}}} "
                            f"matches no value (values: {', '.join(known)})"))
    return out


def _is_counter(name: str | None, cat: Catalogue) -> bool:
    if name is None:
        return False
    series = cat.series.get(name)
    if series is not None:
        return series.kind == "counter"
    return name not in cat.recorded and name.endswith("_total")


def _counter_rate(sel: Selector, parents: tuple[Node, ...], cat: Catalogue) -> list[Problem]:
    if not _is_counter(sel.name, cat):
        return []
    chain = list(parents)
    parent = chain[-1] if chain else None
    grand = chain[-2] if len(chain) > 1 else None
    if isinstance(parent, Range) and isinstance(grand, Call) and \
            grand.func in _RATE_FUNCS | _RAW_OK:
        return []
    if isinstance(parent, Call) and parent.func in _RAW_OK:
        return []
    # a subquery over the raw counter, itself under rate(): rate(x_total[1h:1m])
    if isinstance(parent, Subquery) and isinstance(grand, Call) and grand.func in _RATE_FUNCS:
        return []
    return [("counter-rate", ERROR, f"counter {sel.name} is used outside rate()/irate()/"
             "increase(): its raw value only says how much happened since the process "
             "or database started")]


def _quantile(call: Call) -> list[Problem]:
    if len(call.args) < 2:
        return []
    buckets = [(n, p) for n, p in walk(call.args[1])
               if isinstance(n, Selector) and n.name and n.name.endswith("_bucket")]
    if not buckets:
        return [("histogram-quantile", ERROR, "histogram_quantile() must read a _bucket "
                 "series (e.g. rate(x_bucket[5m]))")]
    out: list[Problem] = []
    for sel, path in buckets:
        for node in path:
            if not isinstance(node, Aggregate):
                continue
            if node.without and "le" in node.grouping:
                out.append(("histogram-quantile", ERROR, f"{node.op} without (le) drops the "
                            f"bucket label histogram_quantile() needs ({sel.name})"))
            elif not node.without and "le" not in node.grouping:
                how = f"by ({', '.join(node.grouping)})" if node.by else "with no by (le)"
                out.append(("histogram-quantile", ERROR, f"{node.op} {how} drops the `le` "
                            f"label histogram_quantile() needs: use {node.op} by (le, ...)"))
    return out


def _grouping(agg: Aggregate, cat: Catalogue) -> list[Problem]:
    if not agg.by or not agg.grouping:
        return []
    available: set[str] = set()
    for node, _ in walk(agg.expr):
        if isinstance(node, Call) and node.func in ("label_replace", "label_join"):
            return []  # labels made up by the query itself
        if isinstance(node, Selector):
            series = cat.series.get(node.name or "")
            if series is None:
                return []  # recording rule or unknown metric: reported elsewhere
            available |= series.labels | ({"le"} if (node.name or "").endswith("_bucket")
                                          else set())
    missing = [lab for lab in agg.grouping if lab not in available]
    if not missing:
        return []
    return [("metric-exported", ERROR, f"{agg.op} by ({', '.join(agg.grouping)}): no metric "
             f"here has label {', '.join(repr(m) for m in missing)}")]


# ---------------------------------------------------------------- labels of a result
def result_labels(node: Node, cat: Catalogue) -> set[str] | None:
    """The labels every series of the expression's result carries; None when unknowable.

    Follows Prometheus: aggregations keep their `by` labels (or drop their `without` ones),
    histogram_quantile() drops `le`, one-to-one vector matching with on() keeps only the
    matching labels and with ignoring() drops the ignored ones.
    """
    from .promql import Binary, Number, Paren, String, Unary

    if isinstance(node, (Number, String)):
        return set()
    if isinstance(node, Selector):
        series = cat.series.get(node.name or "")
        return set(series.labels) | ({"le"} if (node.name or "").endswith("_bucket")
                                     else set()) if series else None
    if isinstance(node, (Range, Paren, Unary, Subquery)):
        return result_labels(node.children()[0], cat)
    if isinstance(node, Call):
        if node.func in ("vector", "time", "scalar", "pi"):
            return set()
        if node.func in ("absent", "absent_over_time"):
            return None  # labels come from the selector's equality matchers
        vectors = [a for a in node.args if getattr(a, "type", "") in (VECTOR, MATRIX)]
        inner = result_labels(vectors[0], cat) if vectors else set()
        if inner is None:
            return None
        if node.func == "histogram_quantile":
            return inner - {"le"}
        if node.func in ("label_replace", "label_join") and len(node.args) > 1:
            target = node.args[1]
            return inner | ({target.value} if isinstance(target, String) else set())
        return inner
    if isinstance(node, Aggregate):
        extra = set()
        if node.op == "count_values" and isinstance(node.param, String):
            extra = {node.param.value}
        if node.by:
            return set(node.grouping) | extra
        if node.op in ("topk", "bottomk"):
            return result_labels(node.expr, cat)
        if node.without:
            inner = result_labels(node.expr, cat)
            return None if inner is None else (inner - set(node.grouping)) | extra
        return extra
    if isinstance(node, Binary):
        lhs, rhs = result_labels(node.lhs, cat), result_labels(node.rhs, cat)
        l_scalar = getattr(node.lhs, "type", "") == SCALAR
        r_scalar = getattr(node.rhs, "type", "") == SCALAR
        if l_scalar and r_scalar:
            return set()
        if l_scalar or r_scalar:
            return rhs if l_scalar else lhs
        if node.op == "or":
            return None if lhs is None or rhs is None else lhs & rhs
        if node.op in ("and", "unless"):
            return lhs
        if node.group == "group_right":
            return None if rhs is None else rhs | set(node.include)
        if node.group == "group_left":
            return None if lhs is None else lhs | set(node.include)
        if node.on is not None:
            return set(node.on)
        if lhs is None:
            return None
        return lhs - set(node.ignoring or [])
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
