"""Prometheus exposition of the durable counters, read at scrape time.

Counters and the response-time histogram come from the `metric_counters` table (bumped in
the same transaction as each change, so every process and restart agrees); the queue and
outbox gauges from indexed counts whose cost follows the backlog, not the history. HTTP
metrics are per process and live in an ordinary prometheus-client registry.

Interface used by the server and `serve-metrics`:
    render(store) -> (body bytes, content type)
    observe_http(route, method, status, seconds)
and by `lint-dashboards` and the docs: `catalogue()` — every exported series with its type
and labels, derived from the collector's `describe()` and the HTTP registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.utils import floatToGoString

from . import counters as c
from .models import STATUSES, from_iso, utcnow
from .rbac import ROLES

HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60)

#: Notification label values known in advance, so every series exists at 0 from the start.
NOTIFY_CHANNELS = ("slack", "email", "webhook")
NOTIFY_RESULTS = ("sent", "retry", "failed")
RBAC_RESULTS = ("allowed", "denied")

HTTP_REQUESTS_NAME = "approvalctl_http_requests"
HTTP_LATENCY_NAME = "approvalctl_http_request_duration_seconds"
HTTP_LABELS = ("route", "method", "status")
DATABASE_UP = "approvalctl_database_up"
#: The classic text format that `generate_latest` writes, named the way every Prometheus
#: version parses it (prometheus-client >= 0.22 would announce "version=1.0.0").
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _base(name: str) -> str:
    """prometheus-client wants counter family names without the `_total` suffix."""
    return name[: -len("_total")] if name.endswith("_total") else name


class StoreCollector:
    """Reads the durable counters and queue gauges from the database on every scrape.

    When the database cannot be read, the scrape still succeeds with
    `approvalctl_database_up 0` (and nothing else), so Prometheus can alert on it instead
    of seeing a failed scrape that looks like the exporter itself is down.
    """

    def __init__(self, store: Any) -> None:
        self.store = store

    def describe(self) -> Iterator[Any]:
        yield from self._families({}, 0, 0.0, 0)
        yield GaugeMetricFamily(DATABASE_UP, _DATABASE_UP_HELP, value=1)

    def collect(self) -> Iterator[Any]:
        try:
            rows = {(name, lab): value for name, lab, value in self.store.counters()}
            pending, oldest = self.store.queue_gauges()
            backlog = self.store.outbox_backlog()
        except Exception:  # noqa: BLE001 - any database failure is reported as a gauge
            yield GaugeMetricFamily(DATABASE_UP, _DATABASE_UP_HELP, value=0)
            return
        age = max(0.0, (utcnow() - from_iso(oldest)).total_seconds()) if oldest else 0.0
        yield from self._families(rows, pending, age, backlog)
        yield GaugeMetricFamily(DATABASE_UP, _DATABASE_UP_HELP, value=1)

    def _families(self, rows: dict[tuple[str, str], float], pending: int,
                  oldest_age: float, backlog: int) -> Iterator[Any]:
        def val(name: str, lab: str = "") -> float:
            return rows.get((name, lab), 0.0)

        requests = CounterMetricFamily(
            _base(c.REQUESTS_TOTAL), "Approval requests entering each status.",
            labels=["status"])
        for status in STATUSES:
            requests.add_metric([status], val(c.REQUESTS_TOTAL, c.labels(status=status)))
        yield requests

        # `le` as prometheus-client (and Prometheus 3's normalisation) spell it: "60.0"
        buckets = [(floatToGoString(b), val(c.RESPONSE_TIME + "_bucket", c.labels(le=str(b))))
                   for b in c.RESPONSE_BUCKETS]
        buckets.append(("+Inf", val(c.RESPONSE_TIME + "_bucket", c.labels(le="+Inf"))))
        yield HistogramMetricFamily(
            c.RESPONSE_TIME, "Seconds from creation to an approve or reject decision.",
            buckets=buckets, sum_value=val(c.RESPONSE_TIME + "_sum"))

        yield CounterMetricFamily(_base(c.TIMEOUT_TOTAL),
                                  "Approval requests that expired undecided.",
                                  value=val(c.TIMEOUT_TOTAL))

        checks = CounterMetricFamily(_base(c.RBAC_CHECKS),
                                     "Permission checks by result.", labels=["result"])
        for result in RBAC_RESULTS:
            checks.add_metric([result], val(c.RBAC_CHECKS, c.labels(result=result)))
        yield checks

        roles = CounterMetricFamily(_base(c.ROLE_ASSIGNMENTS),
                                    "API keys created, by role.", labels=["role"])
        for role in ROLES:
            roles.add_metric([role], val(c.ROLE_ASSIGNMENTS, c.labels(role=role)))
        yield roles

        yield GaugeMetricFamily("approval_pending_requests", "Requests waiting for a decision.",
                                value=pending)
        yield GaugeMetricFamily("approval_oldest_pending_age_seconds",
                                "Age of the oldest pending request (0 when none).",
                                value=oldest_age)

        deliveries = CounterMetricFamily(
            _base(c.NOTIFY_DELIVERIES),
            "Notification delivery attempts by channel and result (sent, retry, failed).",
            labels=["channel", "result"])
        for channel in NOTIFY_CHANNELS:
            for result in NOTIFY_RESULTS:
                deliveries.add_metric([channel, result], val(
                    c.NOTIFY_DELIVERIES, c.labels(channel=channel, result=result)))
        yield deliveries

        yield GaugeMetricFamily("notification_outbox_backlog",
                                "Notifications waiting in the outbox to be delivered.",
                                value=backlog)


_DATABASE_UP_HELP = "Whether the last scrape could read the database (1) or not (0)."

_http_registry = CollectorRegistry(auto_describe=True)
HTTP_REQUESTS = Counter(HTTP_REQUESTS_NAME, "HTTP requests served, by route and status.",
                        list(HTTP_LABELS), registry=_http_registry)
HTTP_LATENCY = Histogram(HTTP_LATENCY_NAME, "HTTP request latency by route and status.",
                         list(HTTP_LABELS), buckets=HTTP_BUCKETS, registry=_http_registry)
#: The per-key quotas (limits.Quotas) and the connection limits (limits.HttpLimits), as
#: label values known in advance so every series exists at 0 from the start.
QUOTAS = ("request_rate", "create_rate", "pending", "waits", "response_bytes")
HTTP_LIMITS = ("header_bytes", "header_count", "header_timeout", "connections")
QUOTA_REJECTIONS = Counter("approvalctl_quota_rejections",
                           "Requests refused by a per-key quota (list pages cut short, for "
                           "response_bytes), by quota.", ["quota"], registry=_http_registry)
HTTP_LIMIT_REJECTIONS = Counter("approvalctl_http_limit_rejections",
                                "Connections cut off by an HTTP limit before authentication, "
                                "by limit.", ["limit"], registry=_http_registry)
for _name in QUOTAS:
    QUOTA_REJECTIONS.labels(_name)
for _name in HTTP_LIMITS:
    HTTP_LIMIT_REJECTIONS.labels(_name)


def count_quota(quota: str) -> None:
    """Count one request refused by the per-key quota `quota` (one of QUOTAS)."""
    QUOTA_REJECTIONS.labels(quota).inc()


def count_http_limit(limit: str) -> None:
    """Count one connection cut off by the HTTP limit `limit` (one of HTTP_LIMITS)."""
    HTTP_LIMIT_REJECTIONS.labels(limit).inc()


def observe_http(route: str, method: str, status: int, seconds: float) -> None:
    """Count one served request; `route` is the route template, never the raw path."""
    HTTP_REQUESTS.labels(route, method, str(status)).inc()
    HTTP_LATENCY.labels(route, method, str(status)).observe(seconds)


def render(store: Any, *, include_http: bool = True) -> tuple[bytes, str]:
    """The exposition text for one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    body = generate_latest(registry)
    if include_http:
        body += generate_latest(_http_registry)
    return body, CONTENT_TYPE


# ---------------------------------------------------------------- catalogue
@dataclass
class MetricInfo:
    """One exported metric family: what a dashboard or alert may query."""

    name: str  # the family name as queried for gauges; counters carry `_total`
    type: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...]
    #: label -> every value it can take, when they are known in advance (else absent)
    values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = "store"  # store: every process agrees; http: per `serve` process

    def series(self) -> dict[str, tuple[str, ...]]:
        """Every series name this family exposes, with the labels each carries."""
        out: dict[str, tuple[str, ...]] = {self.name: self.labels}
        if self.type == "histogram":
            out = {self.name + "_bucket": self.labels + ("le",),
                   self.name + "_sum": self.labels, self.name + "_count": self.labels}
        if self.source == "http" and self.type in ("counter", "histogram"):
            # prometheus-client's own metrics also expose when each series was created
            out[_base(self.name) + "_created"] = self.labels
        return out


def catalogue() -> list[MetricInfo]:
    """Every metric family this application exports, from the registry itself."""
    out: list[MetricInfo] = []
    for fam in StoreCollector(None).describe():
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        label_names: list[str] = []
        values: dict[str, set[str]] = {}
        for sample in fam.samples:
            for key, value in sample.labels.items():
                values.setdefault(key, set()).add(value)
                if key == "le":
                    continue
                if key not in label_names:
                    label_names.append(key)
        out.append(MetricInfo(name, fam.type, fam.documentation, tuple(label_names),
                              {k: tuple(sorted(v)) for k, v in values.items()}))
    for metric in (HTTP_REQUESTS, HTTP_LATENCY):
        for fam in metric.describe():
            name = fam.name + "_total" if fam.type == "counter" else fam.name
            values = {"le": tuple(floatToGoString(b) for b in HTTP_BUCKETS) + ("+Inf",)} \
                if fam.type == "histogram" else {}
            out.append(MetricInfo(name, fam.type, fam.documentation, HTTP_LABELS, values,
                                  source="http"))
    for metric, label, known in ((QUOTA_REJECTIONS, "quota", QUOTAS),
                                 (HTTP_LIMIT_REJECTIONS, "limit", HTTP_LIMITS)):
        for fam in metric.describe():
            out.append(MetricInfo(fam.name + "_total", fam.type, fam.documentation, (label,),
                                  {label: tuple(sorted(known))}, source="http"))
    return out


def reference_markdown() -> str:
    """The metric reference table of docs/monitoring.md, generated from `catalogue()`."""
    rows = ["| metric | type | labels | source | meaning |", "| --- | --- | --- | --- | --- |"]
    for info in catalogue():
        parts = [f"`{lab}`: {', '.join(info.values[lab])}" if lab in info.values
                 else f"`{lab}`" for lab in info.labels]
        if info.type == "histogram" and "le" in info.values:
            bounds = sorted((v for v in info.values["le"] if v != "+Inf"), key=float)
            parts.append("buckets " + ", ".join(bounds))
        labels = "; ".join(parts) or "—"
        source = "database" if info.source == "store" else "per `serve` process"
        rows.append(f"| `{info.name}` | {info.type} | {labels} | {source} | {info.help} |")
    return "\n".join(rows) + "\n"
