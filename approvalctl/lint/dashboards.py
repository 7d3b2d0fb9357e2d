"""Rules for Grafana dashboard JSON files.

    json                the file is valid JSON holding a dashboard object
    dashboard-uid       a stable `uid` (1-40 of letters, digits, - and _)
    dashboard-title     a `title`
    panel-id            every panel (also those nested in rows) has a unique integer id
    grid                gridPos within the 24 columns, positive sizes, no overlaps
    datasource          a `datasource` variable of type prometheus; `${datasource}` on every
                        panel and query
    panel-title / panel-description / panel-unit
                        what an operator needs to read a panel
    panel-unit          ... and a unit id Grafana knows (`seconds` is not one: `s` is)
    panel-query         every panel that shows data has at least one query
    legend-label        `{{label}}` in a legend names a label the query's result carries
    job-variable        a `job` variable, so one dashboard serves every scrape job
    job-selector        every selector filters on `job=~"$job"` (else the panel ignores it)
    rate-interval       rate()/irate() over `[$__rate_interval]`, which Grafana keeps at
                        least four scrape intervals wide
    dashboard-schema    no unknown keys and no misspelled enumeration values in the
                        dashboard, its panels, queries, variables and core panel options
    dashboard-links     a `dashboards` link by a shared tag, so the dashboards link to
                        each other
    alert-annotations   an annotation query over ALERTS, so firing alerts show on the graphs
    + every query: the rules of `queries.py`, after substituting Grafana variables the way
      Grafana does (`$var`, `${var}`, `${var:format}`, `[[var]]`, `$__rate_interval` ...)
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import grafana
from .findings import ERROR, WARNING, Finding
from .promql import (
    RATE_INTERVAL,
    PromQLError,
    Variable,
    func_name,
    kind_of,
    matchers,
    parse,
    range_of,
    selector_name,
    substitute,
    walk,
)
from .queries import Catalogue, check_tree, missing_labels
from .rules import as_dict, as_list

_UID = re.compile(r"[A-Za-z0-9_-]{1,40}")
_DS_REFS = {"${datasource}", "$datasource", "[[datasource]]"}
_NO_UNIT = {"row", "text", "news", "dashlist", "alertlist", "annolist", "logs", "table"}
#: Panel types that show no query results of their own.
_NO_QUERY = {"row", "text", "news", "dashlist", "alertlist", "annolist"}
#: What `$job` becomes when checking that a query filters on it: a value no one writes.
_JOB_SENTINEL = "approvalctl_lint_job_variable"
#: Series a job filter makes no sense on (Prometheus' own, about alerts of any job).
_NO_JOB = {"ALERTS", "ALERTS_FOR_STATE"}
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<expr>.+?)\s*,\s*)?(?P<label>\w+)\s*\)"
                           r"\s*$", re.S)
_QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.+)\)\s*$", re.S)


class Queries:
    """Each PromQL query found: (location, substituted expression, original expression)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, str]] = []


def _panels(panels: list[Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    for p in panels:
        if not isinstance(p, dict):
            continue
        yield p, None
        for nested in as_list(p.get("panels")):
            if isinstance(nested, dict):
                yield nested, p


def _where(panel: dict[str, Any]) -> str:
    title = panel.get("title")
    return f"panel {panel.get('id', '?')}" + (f" {title!r}" if title else "")


def _ds_ok(ds: Any) -> bool:
    if isinstance(ds, str):
        return ds in _DS_REFS
    if isinstance(ds, dict):
        return ds.get("uid") in _DS_REFS and ds.get("type", "prometheus") == "prometheus"
    return False


def lint_dashboard(path: Path, cat: Catalogue, queries: Queries) -> list[Finding]:
    out: list[Finding] = []

    def add(rule: str, severity: str, location: str, message: str) -> None:
        out.append(Finding(str(path), rule, severity, location, message))

    try:
        dash = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        add("json", ERROR, f"line {exc.lineno} column {exc.colno}", f"invalid JSON: {exc.msg}")
        return out
    except (OSError, UnicodeDecodeError) as exc:
        add("json", ERROR, "file", f"cannot read: {exc}")
        return out
    if isinstance(dash, dict) and isinstance(dash.get("dashboard"), dict):
        dash = dash["dashboard"]  # the export wrapper of Grafana's HTTP API
    if not isinstance(dash, dict) or not isinstance(dash.get("panels", []), list) or \
            not isinstance(dash.get("templating") or {}, dict):
        add("json", ERROR, "dashboard", "not a Grafana dashboard (an object with panels)")
        return out

    uid = dash.get("uid")
    if not isinstance(uid, str) or not uid:
        add("dashboard-uid", ERROR, "dashboard", "no uid: without a stable uid, links and "
            "provisioning break on every import")
    elif not _UID.fullmatch(uid):
        add("dashboard-uid", ERROR, "dashboard", f"uid {uid!r} must be 1-40 letters, digits, "
            "'-' or '_'")
    if not isinstance(dash.get("title"), str) or not dash.get("title", "").strip():
        add("dashboard-title", ERROR, "dashboard", "no title")

    _schema(dash, add)
    variables = _variables(dash, add, cat, queries)
    has_job = "job" in variables
    if not has_job:
        add("job-variable", ERROR, "templating", "no `job` variable: without it the "
            "dashboard mixes every scrape job (label_values(<metric>, job), multi, include "
            "All)")
    _links_and_annotations(dash, add, variables, cat, queries)

    seen: dict[int, str] = {}
    panels = dash.get("panels") or []
    for panel, _row in _panels(panels):
        where = _where(panel)
        pid = panel.get("id")
        if not isinstance(pid, int) or isinstance(pid, bool):
            add("panel-id", ERROR, where, "panel has no integer id")
        elif pid in seen:
            add("panel-id", ERROR, where, f"id {pid} is also used by {seen[pid]}")
        else:
            seen[pid] = where
        kind = panel.get("type")
        if kind == "row":
            continue
        if not str(panel.get("title") or "").strip():
            add("panel-title", ERROR, where, "panel has no title")
        if not str(panel.get("description") or "").strip():
            add("panel-description", ERROR, where, "panel has no description (say what it "
                "shows and what a bad value means)")
        unit = as_dict(as_dict(panel.get("fieldConfig")).get("defaults")).get("unit")
        if kind not in _NO_UNIT and not unit:
            add("panel-unit", ERROR, where, "panel has no unit (fieldConfig.defaults.unit)")
        elif unit and not _unit_ok(unit):
            close = difflib.get_close_matches(str(unit), sorted(grafana.UNIT_IDS), n=1)
            add("panel-unit", ERROR, where, f"unit {unit!r} is not a Grafana unit id"
                + (f" (did you mean {close[0]!r}?)" if close else " (e.g. s, ops, percentunit"
                   ", or suffix:<text> for a custom one)"))
        exprs = [t.get("expr") for t in as_list(panel.get("targets")) if isinstance(t, dict)]
        if kind not in _NO_QUERY and not any(isinstance(e, str) and e.strip()
                                             for e in exprs):
            add("panel-query", ERROR, where, "panel has no query: it can only show "
                "'No data'")
        if not _ds_ok(panel.get("datasource")):
            add("datasource", ERROR, where, f"datasource must be ${{datasource}}, found "
                f"{json.dumps(panel.get('datasource'))}")
        if "targets" in panel and not isinstance(panel["targets"], list):
            add("json", ERROR, where, "targets must be a list of queries")
        for i, target in enumerate(as_list(panel.get("targets"))):
            if not isinstance(target, dict):
                continue
            tloc = f"{where} query {target.get('refId', i)}"
            if "datasource" in target and not _ds_ok(target["datasource"]):
                add("datasource", ERROR, tloc, f"query datasource must be ${{datasource}}, "
                    f"found {json.dumps(target['datasource'])}")
            expr = target.get("expr")
            if expr is None:
                continue
            if not isinstance(expr, str) or not expr.strip():
                add("promql", ERROR, tloc, "empty query" if isinstance(expr, str)
                    else "query expr must be text")
                continue
            text = substitute(expr, variables)
            queries.items.append((tloc, text, expr))
            for rule, sev, msg in check_query(expr, variables, cat, has_job):
                add(rule, sev, tloc, msg)
            legend = target.get("legendFormat")
            found = missing_labels(text, legend, cat, legend=True) \
                if isinstance(legend, str) else None
            if found and found[0]:
                add("legend-label", ERROR, tloc, f"legend uses {', '.join(found[0])}, which "
                    f"the query's result does not carry (it has: "
                    f"{', '.join(sorted(found[1])) or 'no labels'})")
    out += [Finding(str(path), r, s, loc, m) for r, s, loc, m in _grid(panels)]
    return out


def _unit_ok(unit: object) -> bool:
    return isinstance(unit, str) and (unit in grafana.UNIT_IDS or (
        unit.startswith(grafana.CUSTOM_UNIT_PREFIXES) and len(unit.split(":", 1)[1]) > 0))


def check_query(expr: str, variables: dict[str, Variable], cat: Catalogue,
                has_job: bool) -> list[tuple[str, str, str]]:
    """The rules of `queries.py` plus the dashboard-only ones (job-selector, rate-interval)
    on one panel query, after substituting Grafana's variables."""
    text = substitute(expr, variables)
    try:
        tree = parse(text)
    except PromQLError as exc:
        return [("promql", ERROR, f"{exc} (in {text!r})")]
    out = check_tree(tree, cat)
    for node, _ in walk(tree):
        if func_name(node) in ("rate", "irate") and node.args and \
                range_of(node.args[0]) != RATE_INTERVAL:
            out.append(("rate-interval", ERROR, f"{func_name(node)}() over a fixed range: use "
                        "[$__rate_interval], which stays at least four scrape intervals "
                        "wide at every zoom level"))
    if has_job:
        marked = substitute(expr, {**variables, "job": Variable([], literal=_JOB_SENTINEL)})
        try:
            selectors = [n for n, _ in walk(parse(marked)) if kind_of(n) == "VectorSelector"]
        except PromQLError:
            selectors = []
        for sel in selectors:
            name = selector_name(sel)
            if name in _NO_JOB:
                continue
            if not any(lab == "job" and op in ("=", "=~") and val == _JOB_SENTINEL
                       for lab, op, val in matchers(sel)):
                out.append(("job-selector", ERROR, f"{name or 'a selector'} does not filter "
                            'on job=~"$job": the panel ignores the job picker'))
    return out


def _variable(var: dict[str, Any]) -> Variable | None:
    """The value Grafana substitutes for one variable, by its type."""
    kind = var.get("type")
    current = as_dict(var.get("current")).get("value")
    multi = bool(var.get("multi"))
    chosen = [str(v) for v in current] if isinstance(current, list) else \
        [str(current)] if current not in (None, "") else []
    if any(v in ("$__all", "All") for v in chosen):
        chosen = []
    query = var.get("query")
    if kind == "datasource":
        return None
    if kind == "constant":
        return Variable([str(query if query is not None else "")])
    if kind in ("custom", "interval", "textbox"):
        options = [o.strip() for o in str(query or "").split(",") if o.strip()]
        # custom options may read `text : value`
        options = [o.split(" : ", 1)[1] if " : " in o else o for o in options]
        if kind == "interval":
            options = [o for o in options if o != "auto"] or ["1m"]
            chosen = [("1m" if v.startswith("$__auto") or v == "auto" else v)
                      for v in chosen]
        values = chosen or options[:1] or [".+"]
        if kind == "custom" and var.get("includeAll") and not chosen:
            if var.get("allValue"):
                return Variable([], literal=str(var["allValue"]))
            return Variable(options or [".+"], multi=True)
        return Variable(values, multi=multi)
    # query (and anything else): the values come from Prometheus at run time
    return Variable([], literal=str(var.get("allValue") or ".+"))


def _variables(dash: dict[str, Any], add, cat: Catalogue, queries: Queries
               ) -> dict[str, Variable]:
    """Values to substitute for the dashboard's variables; checks the datasource variable."""
    values: dict[str, Variable] = {}
    has_ds = False
    for var in as_list(as_dict(dash.get("templating")).get("list")):
        if not isinstance(var, dict) or not isinstance(var.get("name"), str):
            continue
        name = var["name"]
        loc = f"variable {name}"
        kind = var.get("type")
        if kind == "datasource":
            has_ds = has_ds or (name == "datasource" and var.get("query") == "prometheus")
            continue
        value = _variable(var)
        if value is not None:
            values[name] = value
        if kind == "query":
            if "datasource" in var and not _ds_ok(var["datasource"]):
                add("datasource", ERROR, loc, "variable query datasource must be "
                    "${datasource}")
            query = var.get("query")
            if isinstance(query, dict):
                query = query.get("query")
            if not isinstance(query, str):
                continue
            m = _LABEL_VALUES.match(query) or _QUERY_RESULT.match(query)
            expr = m.group("expr") if m else None
            if not expr:
                continue
            tree = _checked(expr, values, loc, add, cat, queries)
            if tree is None:
                continue
            if m is not None and "label" in m.groupdict():
                label = m.group("label")
                for node, _ in walk(tree):
                    if kind_of(node) != "VectorSelector":
                        continue
                    metric = selector_name(node)
                    series = cat.series.get(metric or "")
                    if series is not None and label not in series.labels:
                        add("metric-exported", ERROR, loc, f"{metric} has no label {label!r}")
    if not has_ds:
        add("datasource", ERROR, "templating", "no `datasource` variable of type datasource "
            "(query: prometheus): panels cannot say ${datasource}")
    return values


def _checked(expr: str, variables: dict[str, Variable], loc: str, add: Any, cat: Catalogue,
             queries: Queries) -> Any:
    """Parse one query of the dashboard (variables substituted), report what check_tree
    finds, and keep it for the query checks; None (reported) when it does not parse."""
    text = substitute(expr, variables)
    queries.items.append((loc, text, expr))
    try:
        tree = parse(text)
    except PromQLError as exc:
        add("promql", ERROR, loc, f"{exc} (in {text!r})")
        return None
    for rule, sev, msg in check_tree(tree, cat):
        add(rule, sev, loc, msg)
    return tree


def _links_and_annotations(dash: dict[str, Any], add, variables: dict[str, Variable],
                           cat: Catalogue, queries: Queries) -> None:
    tags = {t for t in as_list(dash.get("tags")) if isinstance(t, str)}
    links = [lk for lk in as_list(dash.get("links")) if isinstance(lk, dict)]
    if not any(lk.get("type") == "dashboards" and tags & set(as_list(lk.get("tags")))
               for lk in links):
        add("dashboard-links", ERROR, "links", "no link to the related dashboards: add a "
            "link of type `dashboards` with one of this dashboard's tags "
            f"({', '.join(sorted(tags)) or 'it has none'})")
    found = False
    for i, ann in enumerate(as_list(as_dict(dash.get("annotations")).get("list"))):
        if not isinstance(ann, dict) or not isinstance(ann.get("expr"), str):
            continue
        loc = f"annotation {ann.get('name', i)}"
        if not _ds_ok(ann.get("datasource")):
            add("datasource", ERROR, loc, "annotation datasource must be ${datasource}")
        tree = _checked(ann["expr"], variables, loc, add, cat, queries)
        if tree is None:
            continue
        if any(kind_of(n) == "VectorSelector" and selector_name(n) == "ALERTS"
               for n, _ in walk(tree)) and ann.get("enable", True):
            found = True
    if not found:
        add("alert-annotations", ERROR, "annotations", "no enabled annotation query over "
            'ALERTS (e.g. ALERTS{alertstate="firing"}): firing alerts do not show on the '
            "graphs")


def _schema(dash: dict[str, Any], add) -> None:
    """Unknown keys and enumeration values, against Grafana's dashboard model."""
    def keys(obj: dict[str, Any], allowed: frozenset[str], where: str) -> None:
        for key in obj:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                add("dashboard-schema", ERROR, where, f"unknown key {key!r}"
                    + (f" (did you mean {close[0]!r}?)" if close else ""))

    def enum(value: Any, allowed: set[Any] | frozenset[Any], where: str, what: str) -> None:
        if value not in allowed:
            close = difflib.get_close_matches(str(value), sorted(map(str, allowed)), n=1)
            add("dashboard-schema", ERROR, where, f"{what} {value!r} is not one of Grafana's "
                "values" + (f" (did you mean {close[0]!r}?)" if close else ""))

    keys(dash, grafana.DASHBOARD_KEYS, "dashboard")
    if "graphTooltip" in dash:
        enum(dash["graphTooltip"], {0, 1, 2}, "dashboard", "graphTooltip")
    for var in as_list(as_dict(dash.get("templating")).get("list")):
        if isinstance(var, dict):
            where = f"variable {var.get('name', '?')}"
            keys(var, grafana.VARIABLE_KEYS, where)
            enum(var.get("type"), grafana.VARIABLE_TYPES, where, "type")
    for panel, _row in _panels(as_list(dash.get("panels"))):
        where = _where(panel)
        keys(panel, grafana.PANEL_KEYS, where)
        kind = panel.get("type")
        enum(kind, grafana.PANEL_TYPES, where, "panel type")
        keys(as_dict(as_dict(panel.get("fieldConfig")).get("defaults")),
             grafana.FIELD_DEFAULT_KEYS, f"{where} fieldConfig.defaults")
        for i, target in enumerate(as_list(panel.get("targets"))):
            if isinstance(target, dict):
                tloc = f"{where} query {target.get('refId', i)}"
                keys(target, grafana.TARGET_KEYS, tloc)
                if "format" in target:
                    enum(target["format"], grafana.TARGET_FORMATS, tloc, "format")
        spec = grafana.PANEL_OPTIONS.get(str(kind))
        if spec is not None:
            _options(as_dict(panel.get("options")), spec, f"{where} options", keys, enum)


def _options(opts: dict[str, Any], spec: dict[str, object], where: str, keys, enum) -> None:
    keys(opts, frozenset(spec), where)
    for key, allowed in spec.items():
        if key not in opts or allowed is None:
            continue
        value = opts[key]
        if isinstance(allowed, dict):
            if isinstance(value, dict):
                _options(value, allowed, f"{where}.{key}", keys, enum)
        elif isinstance(value, list):
            for item in value:
                enum(item, allowed, where, key)
        else:
            enum(value, allowed, where, key)


def _grid(panels: list[Any]) -> list[tuple[str, str, str, str]]:
    out: list[tuple[str, str, str, str]] = []

    def boxes(group: list[Any]) -> None:
        placed: list[tuple[str, int, int, int, int]] = []
        for p in group:
            if not isinstance(p, dict):
                continue
            where = _where(p)
            g = p.get("gridPos")
            if not isinstance(g, dict) or not all(isinstance(g.get(k), int)
                                                  for k in ("x", "y", "w", "h")):
                out.append(("grid", ERROR, where, "gridPos needs integer x, y, w and h"))
                continue
            x, y, w, h = g["x"], g["y"], g["w"], g["h"]
            if w < 1 or h < 1 or x < 0 or y < 0:
                out.append(("grid", ERROR, where, f"gridPos {g} has a negative position or a "
                            "size below 1"))
                continue
            if x + w > 24:
                out.append(("grid", ERROR, where, f"x {x} + w {w} = {x + w} is wider than "
                            "the 24-column grid"))
            for other, ox, oy, ow, oh in placed:
                if x < ox + ow and ox < x + w and y < oy + oh and oy < y + h:
                    out.append(("grid", ERROR, where, f"overlaps {other}"))
            placed.append((where, x, y, w, h))

    boxes(panels)
    for p in panels:
        if isinstance(p, dict) and p.get("type") == "row" and p.get("collapsed"):
            boxes(as_list(p.get("panels")))
        elif isinstance(p, dict) and p.get("type") == "row" and p.get("panels"):
            out.append(("grid", WARNING, _where(p), "an expanded row should not hold "
                        "panels of its own; Grafana lists them after the row"))
    return out
