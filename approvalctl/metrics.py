"""Prometheus exposition of the durable counters, read at scrape time.

Counters and the response-time histogram come from the `metric_counters` table (bumped in
the same transaction as each change, so every process and restart agrees); the queue and
outbox gauges from indexed counts whose cost follows the backlog, not the history. HTTP
metrics are per process and live in an ordinary prometheus-client registry.

Interface used by the server and `serve-metrics`:
    render(store, timeout=...) -> (body bytes, content type)
    render_reader(reader, timeout=...) -> the same, from a `DatabaseReader`
    observe_http(route, method, status, seconds)
    scrape_budget(header) -> seconds a scrape may spend reading the database

A scrape never waits on the database for more than a small share of Prometheus' scrape
timeout (`X-Prometheus-Scrape-Timeout-Seconds`): a database that does not answer within that
budget is reported as `approvalctl_database_up 0` in a scrape that succeeds, so the
database-down alert fires rather than the exporter-down one. Every database-derived series
carries a `database` label naming the database (host, port and name, or the SQLite file;
never a user or password), so the alerts can aggregate per database however many exporters
read it.
and by `lint-dashboards` and the docs: `catalogue()` — every exported series with its type
and labels, derived from the collector's `describe()` and the HTTP registry.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.utils import floatToGoString

from . import __version__
from . import counters as c
from .models import STATUSES, from_iso, utcnow
from .rbac import ROLES

if TYPE_CHECKING:
    from .store import Store

HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60)

#: Notification label values known in advance, so every series exists at 0 from the start.
NOTIFY_CHANNELS = ("slack", "email", "webhook", "ntfy")
NOTIFY_RESULTS = ("sent", "retry", "failed")
RBAC_RESULTS = ("allowed", "denied")

HTTP_REQUESTS_NAME = "approvalctl_http_requests"
HTTP_LATENCY_NAME = "approvalctl_http_request_duration_seconds"
HTTP_LABELS = ("route", "method", "status")
DATABASE_UP = "approvalctl_database_up"
BUILD_INFO = "approvalctl_build_info"
#: The label naming the database on every database-derived series.
DATABASE_LABEL = "database"
#: Prometheus' default scrape timeout, used when the scraper does not say its own.
DEFAULT_SCRAPE_TIMEOUT = 10.0
#: Share of the scrape timeout a scrape may spend waiting for the database, and its bounds:
#: the rest is left for rendering, the network and Prometheus' own margin.
SCRAPE_BUDGET_SHARE = 0.2
SCRAPE_BUDGET_MAX = 2.0
SCRAPE_BUDGET_MIN = 0.05
#: The classic text format that `generate_latest` writes, named the way every Prometheus
#: version parses it (prometheus-client >= 0.22 would announce "version=1.0.0").
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _base(name: str) -> str:
    """prometheus-client wants counter family names without the `_total` suffix."""
    return name[: -len("_total")] if name.endswith("_total") else name


def database_identity(target: str) -> str:
    """The `database` label value for a database path or URL: `postgresql://host:port/name`
    (user, password and query parameters left out) or `sqlite:/absolute/path`. Every
    exporter pointed at the same database with the same host name reports the same value."""
    if target.startswith(("postgresql://", "postgres://")):
        try:
            parts = urlsplit(target)
            query = dict(parse_qsl(parts.query))
            host = (parts.hostname or query.get("host") or "localhost").lower()
            port = parts.port or int(query.get("port") or 5432)
        except ValueError:
            return "postgresql://unparseable"
        name = parts.path.lstrip("/") or query.get("dbname") or parts.username or "postgres"
        return f"postgresql://{host}:{port}/{name}"
    if target.startswith("sqlite:///"):
        target = target[len("sqlite:///"):]
    return "sqlite:" + os.path.abspath(os.path.expanduser(target))


def scrape_budget(header: str | None) -> float:
    """Seconds one scrape may wait for the database, from the scraper's
    `X-Prometheus-Scrape-Timeout-Seconds` header (a decimal number of seconds; absent,
    malformed or out-of-range values fall back to Prometheus' default of 10 s)."""
    timeout = DEFAULT_SCRAPE_TIMEOUT
    if header:
        try:
            value = float(header.strip()[:32])
        except ValueError:
            value = 0.0
        if 0 < value <= 3600:
            timeout = value
    return min(SCRAPE_BUDGET_MAX, max(SCRAPE_BUDGET_MIN, timeout * SCRAPE_BUDGET_SHARE))


@dataclass
class Snapshot:
    """What one scrape read from the database."""

    rows: dict[tuple[str, str], float]
    pending: int
    oldest_age: float
    backlog: int


def read_snapshot(store: Store) -> Snapshot:
    """Read the counters and gauges of one scrape; raises whatever the store raises."""
    rows = {(name, lab): value for name, lab, value in store.counters()}
    pending, oldest = store.queue_gauges()
    backlog = store.outbox_backlog()
    age = max(0.0, (utcnow() - from_iso(oldest)).total_seconds()) if oldest else 0.0
    return Snapshot(rows, pending, age, backlog)


class DatabaseReader:
    """Reads scrape snapshots in a background thread so a scrape never waits past its budget.

    At most one read runs at a time: a scrape that finds the previous read still running
    (a database that hangs) waits on that one instead of piling up threads. Give it either
    an open `store` (the server's, shared with the API) or an `opener` that opens the store
    on demand (`serve-metrics`): then the exporter starts while the database is down, and
    after any failure the store is closed and opened afresh on the next scrape, so a
    database that comes back is seen at the next scrape (no pool reconnection backoff).
    """

    def __init__(self, store: Any = None, *, opener: Callable[[], Any] | None = None,
                 database: str = "") -> None:
        if store is None and opener is None:
            raise ValueError("DatabaseReader needs a store or an opener")
        self._store = None
        # a shared store is held weakly: the reader (and its thread) goes when the store does
        self._shared = weakref.ref(store) if store is not None else None
        self._opener = opener
        self.database = database or database_identity(str(getattr(store, "url", "") or ""))
        self._lock = threading.Lock()
        self._running: Future[Snapshot] | None = None
        # one long-lived thread: stores keep a connection per thread
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="approvalctl-scrape")
        self.last_error = ""

    def read(self, timeout: float) -> Snapshot | None:
        """The database's figures, or None when it failed or did not answer in `timeout` s."""
        with self._lock:
            fut = self._running
            if fut is None or fut.done():
                fut = self._running = self._worker.submit(self._read_once)
        try:
            return fut.result(timeout)
        except FutureTimeout:
            self.last_error = f"the database did not answer within {timeout:g}s"
            return None
        except Exception as exc:  # noqa: BLE001 - any database failure is reported as a gauge
            self.last_error = str(exc) or type(exc).__name__
            return None

    def _read_once(self) -> Snapshot:
        try:
            store = self._shared() if self._shared is not None else self._store
            if store is None:
                if self._opener is None:
                    raise RuntimeError("the store was closed")
                store = self._store = self._opener()
            return read_snapshot(store)
        except BaseException:
            if self._opener is not None and self._store is not None:
                store, self._store = self._store, None
                with contextlib.suppress(Exception):  # already failing; reopened next time
                    store.close()
            raise

    def close(self) -> None:
        """Stop the worker; close the store if this reader opened it."""
        self._worker.shutdown(wait=False, cancel_futures=True)
        if self._opener is not None and self._store is not None:
            self._store.close()
            self._store = None


class StoreCollector:
    """The database-derived metric families of one scrape.

    When the database could not be read in time, the scrape still succeeds with
    `approvalctl_database_up 0` (and the build info), so Prometheus can alert on it instead
    of seeing a failed scrape that looks like the exporter itself is down.
    """

    def __init__(self, snapshot: Snapshot | None, database: str = "") -> None:
        self.snapshot = snapshot
        self.database = database

    def describe(self) -> Iterator[Any]:
        # One sample per open-ended family, so the catalogue sees its label names; a rule's
        # name is the operator's, so its value is left empty (any value is valid).
        examples = {(c.POLICY_DECISIONS, c.labels(action=action, rule="")): 0.0
                    for action in ("allow", "deny")}
        yield from self._labelled(self._families(examples, 0, 0.0, 0), 1)

    def collect(self) -> Iterator[Any]:
        snap = self.snapshot
        if snap is None:
            yield from self._labelled(iter(()), 0)
            return
        yield from self._labelled(
            self._families(snap.rows, snap.pending, snap.oldest_age, snap.backlog), 1)

    def _labelled(self, families: Iterator[Any], up: int) -> Iterator[Any]:
        """Every family with the `database` label added, then `approvalctl_database_up`."""
        for fam in [*families, GaugeMetricFamily(DATABASE_UP, _DATABASE_UP_HELP, value=up)]:
            fam.samples = [s._replace(labels={**s.labels, DATABASE_LABEL: self.database})
                           for s in fam.samples]
            yield fam

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

        # Series exist once a rule has decided something: rule names are the operator's.
        policy = CounterMetricFamily(
            _base(c.POLICY_DECISIONS),
            "Requests a policy rule allowed or denied without a person, by action and rule.",
            labels=["action", "rule"])
        prefix = c.POLICY_DECISIONS
        for (name, lab), value in sorted(rows.items()):
            if name == prefix:
                parts = dict(p.split("=", 1) for p in lab.split(",") if "=" in p)
                policy.add_metric([parts.get("action", ""), parts.get("rule", "")], value)
        yield policy

        yield CounterMetricFamily(_base(c.TIMEOUT_TOTAL),
                                  "Approval requests that expired undecided.",
                                  value=val(c.TIMEOUT_TOTAL))
        yield CounterMetricFamily(_base(c.CONSUMED),
                                  "Approvals used (consumed), each at most once.",
                                  value=val(c.CONSUMED))

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
#: Long-polls and event streams held open (server/wakeups.py), by kind.
WAITER_KINDS = ("long_poll", "stream")
WAITERS = Gauge("approvalctl_waiters", "Long-polls and event streams held open now, by kind.",
                ["kind"], registry=_http_registry)
for _name in WAITER_KINDS:
    WAITERS.labels(_name)
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


#: The standard process_* metrics (CPU, memory, file descriptors, start time) of `serve`.
_process_registry = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=_process_registry)


def observe_http(route: str, method: str, status: int, seconds: float) -> None:
    """Count one served request; `route` is the route template, never the raw path."""
    HTTP_REQUESTS.labels(route, method, str(status)).inc()
    HTTP_LATENCY.labels(route, method, str(status)).observe(seconds)


_build_registry = CollectorRegistry(auto_describe=True)
BUILD = Gauge(BUILD_INFO, "approvalctl's version; always 1 (join on it by job and instance).",
              ["version"], registry=_build_registry)
BUILD.labels(__version__).set(1)

_readers: weakref.WeakKeyDictionary[Any, DatabaseReader] = weakref.WeakKeyDictionary()
_readers_lock = threading.Lock()


def reader_for(store: Any) -> DatabaseReader:
    """The one `DatabaseReader` of an open store (so its reads never overlap)."""
    with _readers_lock:
        reader = _readers.get(store)
        if reader is None:
            reader = _readers[store] = DatabaseReader(store)
        return reader


def render_reader(reader: DatabaseReader, *, include_http: bool = True,
                  include_process: bool = False,
                  timeout: float = SCRAPE_BUDGET_MAX) -> tuple[bytes, str]:
    """The exposition text for one scrape, waiting at most `timeout` s for the database."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(reader.read(timeout), reader.database))
    body = generate_latest(registry) + generate_latest(_build_registry)
    if include_process:
        body += generate_latest(_process_registry)
    if include_http:
        body += generate_latest(_http_registry)
    return body, CONTENT_TYPE


def render(store: Any, *, include_http: bool = True,
           timeout: float = SCRAPE_BUDGET_MAX) -> tuple[bytes, str]:
    """The exposition text for one scrape of an open store (`serve` adds its HTTP and
    process metrics), waiting at most `timeout` s for the database."""
    return render_reader(reader_for(store), include_http=include_http,
                         include_process=include_http, timeout=timeout)


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
    #: store: read from the database, every process agrees; http / process: per `serve`
    #: process; build: every exporter
    source: str = "store"

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
                if key != DATABASE_LABEL and value:  # "": open-ended, e.g. a rule's name
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
            buckets = {"le": tuple(floatToGoString(b) for b in HTTP_BUCKETS) + ("+Inf",)} \
                if fam.type == "histogram" else {}
            out.append(MetricInfo(name, fam.type, fam.documentation, HTTP_LABELS, buckets,
                                  source="http"))
    for fam in BUILD.describe():
        out.append(MetricInfo(fam.name, "gauge", fam.documentation, ("version",),
                              source="build"))
    for fam in _process_registry.collect():
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        out.append(MetricInfo(name, fam.type, fam.documentation, (), source="process"))
    for metric, label, known in ((QUOTA_REJECTIONS, "quota", QUOTAS),
                                 (HTTP_LIMIT_REJECTIONS, "limit", HTTP_LIMITS)):
        for fam in metric.describe():
            out.append(MetricInfo(fam.name + "_total", fam.type, fam.documentation, (label,),
                                  {label: tuple(sorted(known))}, source="http"))
    for fam in WAITERS.describe():
        out.append(MetricInfo(fam.name, fam.type, fam.documentation, ("kind",),
                              {"kind": WAITER_KINDS}, source="http"))
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
        source = {"store": "database", "build": "every exporter",
                  "process": "per `serve` process (Linux)"}.get(info.source,
                                                                "per `serve` process")
        rows.append(f"| `{info.name}` | {info.type} | {labels} | {source} | {info.help} |")
    return "\n".join(rows) + "\n"
