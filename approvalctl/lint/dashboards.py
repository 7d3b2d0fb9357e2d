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
    legend-label        `{{label}}` in a legend names a label the query's result carries
    + every query: the rules of `queries.py`, after substituting Grafana variables
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .findings import ERROR, WARNING, Finding
from .promql import substitute
from .queries import Catalogue, check, missing_labels
from .rules import as_dict, as_list

_UID = re.compile(r"[A-Za-z0-9_-]{1,40}")
_DS_REFS = {"${datasource}", "$datasource", "[[datasource]]"}
_NO_UNIT = {"row", "text", "news", "dashlist", "alertlist", "annolist", "logs", "table"}
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

    variables = _variables(dash, add, cat, queries)

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
            for rule, sev, msg in check(text, cat):
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


def _variables(dash: dict[str, Any], add, cat: Catalogue, queries: Queries) -> dict[str, str]:
    """Values to substitute for the dashboard's variables; checks the datasource variable."""
    values: dict[str, str] = {}
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
        if kind in ("interval",):
            values[name] = "5m"
            continue
        values[name] = str(var.get("allValue") or ".+")
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
            if expr:
                text = substitute(expr, values)
                queries.items.append((loc, text, expr))
                for rule, sev, msg in check(text, cat):
                    add(rule, sev, loc, msg)
            if m and "label" in m.groupdict() and expr:
                from .promql import Selector, parse, walk

                try:
                    names = [n.name for n, _ in walk(parse(substitute(expr, values)))
                             if isinstance(n, Selector)]
                except ValueError:
                    continue
                label = m.group("label")
                for metric in names:
                    series = cat.series.get(metric or "")
                    if series is not None and label not in series.labels:
                        add("metric-exported", ERROR, loc, f"{metric} has no label {label!r}")
    if not has_ds:
        add("datasource", ERROR, "templating", "no `datasource` variable of type datasource "
            "(query: prometheus): panels cannot say ${datasource}")
    return values


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
