"""`approvalctl serve-metrics` (the exporter alone) and `approvalctl lint-dashboards`.

`serve-metrics` is for setups that run only the CLI and cron: it serves the same
store-backed exposition as `serve`'s `/metrics` (minus per-process HTTP metrics), read from
the database at every scrape. `lint-dashboards` checks the Grafana dashboards and
Prometheus rule files against the metrics this application actually exports.

The exporter reads the store directly, not through the service: a scrape has no principal,
must not bump the counters it reports, and must answer within its time budget (the intended
exceptions of docs/design.md section 2).
"""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import InvalidInput
from .app import app, command, emit, message, state_of


def metrics_app(reader):  # -> starlette.applications.Starlette
    """The exporter as an ASGI app: `/metrics` and `/healthz` over a `metrics.DatabaseReader`.

    `/metrics` always answers 200 within its scrape budget (the database's state is the
    `approvalctl_database_up` gauge); `/healthz` answers 503 while the database is down.
    """
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    from .. import metrics

    def budget(request) -> float:
        return metrics.scrape_budget(request.headers.get("x-prometheus-scrape-timeout-seconds"))

    def scrape(request):  # sync: Starlette runs it in a worker thread
        body, content_type = metrics.render_reader(reader, include_http=False,
                                                   timeout=budget(request))
        return Response(body, media_type=content_type)

    def healthz(request):
        if reader.read(budget(request)) is None:
            return JSONResponse({"status": "unavailable", "detail": reader.last_error},
                                status_code=503)
        return JSONResponse({"status": "ok"})

    def index(request):
        return PlainTextResponse("approvalctl metrics exporter: see /metrics and /healthz\n")

    return Starlette(routes=[Route("/metrics", scrape), Route("/healthz", healthz),
                             Route("/", index)])


def _open_for_metrics(target: str):
    """Open the database for the exporter; a SQLite file whose folder is missing (a volume
    not mounted yet) is a database that is down, not one to create afresh."""
    from ..errors import Unavailable
    from ..store import is_postgres_url, open_store

    if not is_postgres_url(target):
        path = Path(target.removeprefix("sqlite:///")).expanduser()
        if not path.parent.is_dir():
            raise Unavailable(f"cannot open database {path}: its folder does not exist")
    return open_store(target)


@command(app, "serve-metrics")
def serve_metrics_cmd(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(9108, "--port", min=0, max=65535, help="Port to listen on."),
) -> None:
    """Serve Prometheus metrics read from the database (/metrics, /healthz)."""
    state = state_of(ctx)
    if state.remote:
        raise InvalidInput("serve-metrics reads the database; it cannot be used with --server "
                           "(scrape the server's own /metrics instead)")
    import uvicorn

    from ..metrics import DatabaseReader, database_identity

    target = state.settings.db
    # Opened at the first scrape, and afresh after any failure: the exporter starts and
    # reports `approvalctl_database_up 0` while the database is down.
    reader = DatabaseReader(opener=lambda: _open_for_metrics(target),
                            database=database_identity(target))
    state._closers.append(reader.close)
    message(f"serving metrics of {reader.database} on http://{host}:{port}/metrics")
    config = uvicorn.Config(metrics_app(reader), host=host, port=port, log_level="warning",
                            access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    try:
        server.run()
    except OSError as exc:  # port in use, address not available
        raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    if not server.started:
        raise typer.Exit(1)


@command(app, "lint-dashboards")
def lint_dashboards_cmd(
    paths: list[Path] = typer.Argument(
        None, help="Files or folders to lint [default: dashboards/ and alerts/]."),
    fmt: str = typer.Option("text", "--format", help="text (path:rule:severity:location:"
                            "message) or json."),
    exclusions: Path = typer.Option(
        None, "--exclusions", help="Exclusions file [default: .lint-dashboards-ignore in the "
        "current folder, if present]."),
    promtool: bool = typer.Option(True, "--promtool/--no-promtool",
                                  help="Also run promtool check/test rules when installed."),
) -> None:
    """Lint Grafana dashboards and Prometheus alert rules; exit 1 on any error."""
    if fmt not in ("text", "json"):
        raise InvalidInput(f"--format must be text or json, not {fmt!r}")
    from ..lint import lint, load_exclusions

    targets = list(paths) if paths else [p for p in (Path("dashboards"), Path("alerts"))
                                         if p.exists()]
    if not targets:
        raise InvalidInput("nothing to lint: no dashboards/ or alerts/ here; name the files")
    for target in targets:
        if not target.exists():
            raise InvalidInput(f"no such file or folder: {target}")
    if exclusions is None and Path(".lint-dashboards-ignore").exists():
        exclusions = Path(".lint-dashboards-ignore")
    if exclusions is not None and not exclusions.exists():
        raise InvalidInput(f"no such exclusions file: {exclusions}")
    ignore = load_exclusions(exclusions) if exclusions else None
    report = lint(targets, exclusions=ignore, use_promtool=promtool)
    if fmt == "json":
        emit({"findings": [f.to_dict() for f in report.findings],
              "excluded": [f.to_dict() for f in report.excluded],
              "errors": report.errors, "warnings": report.warnings,
              "files": [str(p) for p in report.files]})
    else:
        for finding in report.findings:
            typer.echo(finding.line())
        message(f"{len(report.files)} files: {report.errors} errors, {report.warnings} "
                f"warnings, {len(report.excluded)} excluded")
    if report.errors:
        raise typer.Exit(1)
