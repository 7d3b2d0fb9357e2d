"""Prometheus exposition of the durable counters, read at scrape time.

Counters and the response-time histogram come from the `metric_counters` table (bumped in
the same transaction as each change, so every process and restart agrees); the queue
gauges from two indexed queries. A scrape therefore costs O(1) in the number of requests.
HTTP metrics are per process and live in an ordinary prometheus-client registry.

Interface used by the server and `serve-metrics`:
    render(store) -> (body bytes, content type)
    observe_http(route, method, status, seconds)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from . import counters as c
from .models import STATUSES, from_iso, utcnow
from .rbac import ROLES

HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60)


class StoreCollector:
    """Reads the durable counters from the database on every scrape."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def describe(self) -> Iterator[Any]:
        yield from self._families({}, 0, None)

    def collect(self) -> Iterator[Any]:
        rows = {(name, lab): value for name, lab, value in self.store.counters()}
        pending, oldest = self.store.queue_gauges()
        age = (utcnow() - from_iso(oldest)).total_seconds() if oldest else 0.0
        yield from self._families(rows, pending, age)

    def _families(self, rows: dict[tuple[str, str], float], pending: int,
                  oldest_age: float | None) -> Iterator[Any]:
        def val(name: str, lab: str = "") -> float:
            return rows.get((name, lab), 0.0)

        requests = CounterMetricFamily(
            c.REQUESTS_TOTAL[:-len("_total")], "Approval requests entering each status.",
            labels=["status"])
        for status in STATUSES:
            requests.add_metric([status], val(c.REQUESTS_TOTAL, c.labels(status=status)))
        yield requests

        buckets = [(str(b), val(c.RESPONSE_TIME + "_bucket", c.labels(le=str(b))))
                   for b in c.RESPONSE_BUCKETS]
        buckets.append(("+Inf", val(c.RESPONSE_TIME + "_bucket", c.labels(le="+Inf"))))
        yield HistogramMetricFamily(
            c.RESPONSE_TIME, "Seconds from creation to an approve or reject decision.",
            buckets=buckets, sum_value=val(c.RESPONSE_TIME + "_sum"))

        yield CounterMetricFamily(c.TIMEOUT_TOTAL[:-len("_total")],
                                  "Approval requests that expired undecided.",
                                  value=val(c.TIMEOUT_TOTAL))

        checks = CounterMetricFamily(c.RBAC_CHECKS[:-len("_total")],
                                     "Permission checks by result.", labels=["result"])
        for result in ("allowed", "denied"):
            checks.add_metric([result], val(c.RBAC_CHECKS, c.labels(result=result)))
        yield checks

        roles = CounterMetricFamily(c.ROLE_ASSIGNMENTS[:-len("_total")],
                                    "API keys created, by role.", labels=["role"])
        for role in ROLES:
            roles.add_metric([role], val(c.ROLE_ASSIGNMENTS, c.labels(role=role)))
        yield roles

        yield GaugeMetricFamily("approval_pending_requests", "Requests waiting for a decision.",
                                value=pending)
        yield GaugeMetricFamily("approval_oldest_pending_age_seconds",
                                "Age of the oldest pending request (0 when none).",
                                value=oldest_age or 0.0)


_http_registry = CollectorRegistry(auto_describe=True)
HTTP_REQUESTS = Counter("approvalctl_http_requests", "HTTP requests served, by route and status.",
                        ["route", "method", "status"], registry=_http_registry)
HTTP_LATENCY = Histogram("approvalctl_http_request_duration_seconds",
                         "HTTP request latency by route.", ["route", "method"],
                         buckets=HTTP_BUCKETS, registry=_http_registry)


def observe_http(route: str, method: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(route, method, str(status)).inc()
    HTTP_LATENCY.labels(route, method).observe(seconds)


def render(store: Any, *, include_http: bool = True) -> tuple[bytes, str]:
    """The exposition text for one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    body = generate_latest(registry)
    if include_http:
        body += generate_latest(_http_registry)
    return body, CONTENT_TYPE_LATEST
