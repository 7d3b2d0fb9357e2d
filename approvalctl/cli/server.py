"""`approvalctl serve`: the HTTP API (with /metrics) under uvicorn.

It listens on loopback unless told otherwise: anything else needs `--allow-remote` and gets a
warning, because the API speaks plain HTTP and API keys must travel over TLS (put a reverse
proxy in front). The server also expires overdue requests in the background, and, when
notifications are configured, runs the notification worker.
"""

from __future__ import annotations

import typer

from ..errors import ApprovalctlError, InvalidInput
from .app import app, command, message, state_of


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _start_notifications(store, settings):  # -> Callable[[], None]
    """The notification worker, if configured and available (it ships separately)."""
    if not settings.notifications:
        return lambda: None
    try:
        from ..notify.worker import start_background
    except ImportError:
        message("warning: notifications are configured but this installation has no "
                "notification worker; nothing will be sent")
        return lambda: None
    return start_background(store, settings)


def _bind(host: str, port: int):  # -> socket.socket
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ApprovalctlError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


@command(app, "serve")
def serve_cmd(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8020, "--port", min=0, max=65535, help="Port to listen on."),
    workers: int = typer.Option(1, "--workers", min=1, max=64,
                                help="Server processes sharing the port."),
    allow_remote: bool = typer.Option(False, "--allow-remote",
                                      help="Permit a non-loopback --host (use TLS in front)."),
    sweep_interval: float = typer.Option(5.0, "--sweep-interval", min=0.1, hidden=True,
                                         help="Seconds between background expiry sweeps."),
) -> None:
    """Serve the HTTP API and /metrics (docs at /docs). Ctrl-C stops it gracefully."""
    # serve always works on the database: a `server:` in the config file (there for the
    # CLI's remote mode) must not stop the machine that is that server from serving.
    state = state_of(ctx)
    if not is_loopback(host):
        if not allow_remote:
            raise InvalidInput(f"refusing to listen on non-loopback address {host}: pass "
                               "--allow-remote, and put a TLS reverse proxy in front")
        message(f"warning: listening on {host}, reachable from other machines; API keys "
                "travel in clear text unless a TLS reverse proxy is in front")
    import uvicorn

    from ..server import create_app
    from ..store import open_store

    settings = state.settings
    store = open_store(settings.db)  # migrates and fails fast on a bad database
    sock = _bind(host, port)
    actual = sock.getsockname()[1]
    stop_notifications = _start_notifications(store, settings)
    message(f"approvalctl API on http://{host}:{actual} (docs /docs, metrics /metrics, "
            f"database {store.url}); Ctrl-C stops")
    try:
        if workers == 1:
            application = create_app(store, settings, sweep_interval=sweep_interval)
            config = uvicorn.Config(application, log_level="warning", access_log=False,
                                    timeout_graceful_shutdown=30, lifespan="on",
                                    **_limit_options(settings))
            _attach_limits(config, settings)
            server = _Server(config, application.state.api)
            server.run(sockets=[sock])
        else:
            import os

            os.environ["APPROVALCTL_DB"] = settings.db
            config = uvicorn.Config("approvalctl.server:create_app_from_env", factory=True,
                                    workers=workers, log_level="warning", access_log=False,
                                    timeout_graceful_shutdown=30, lifespan="on",
                                    **_limit_options(settings))
            _attach_limits(config, settings)
            from uvicorn.supervisors import Multiprocess

            Multiprocess(config, sockets=[sock]).run()
    finally:
        stop_notifications()
        sock.close()
        store.close()
    message("approvalctl API stopped")


def _limit_options(settings) -> dict:
    """uvicorn options for the connection limits (docs/api.md "Limits"): our protocol class,
    and uvicorn's own keep-alive timer, which runs between requests."""
    from ..server.protocol import LimitedHttpToolsProtocol

    return {"http": LimitedHttpToolsProtocol,
            "timeout_keep_alive": settings.http_limits.keep_alive_timeout}


def _attach_limits(config, settings) -> None:
    from ..server.protocol import CONFIG_ATTRIBUTE

    setattr(config, CONFIG_ATTRIBUTE, settings.http_limits)
    _raise_open_files(settings.http_limits.max_connections)


def _raise_open_files(connections: int) -> None:
    """Let the process hold `connections` sockets plus its own files: below that, accept()
    would fail with EMFILE long before the connection cap answers 503."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + 256  # the database, logs, pipes, the listening socket
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    new = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if new > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    if new < want:
        message(f"warning: the open-file limit ({new}) is below http_limits.max_connections "
                f"+ 256; raise it (ulimit -n) or lower max_connections")


def _server_class():  # -> type[uvicorn.Server]
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, telling long-polls to answer at once when asked to stop."""

        def __init__(self, config, api) -> None:
            super().__init__(config)
            self.api = api

        def handle_exit(self, sig, frame) -> None:
            # uvicorn would re-raise the signal after draining, killing the process before
            # `serve` can stop the notification worker and close the database; a drained
            # server is a clean exit, so only record that it should stop.
            import signal

            self.api.stopping = True
            self.api.wakeups.wake_all_threadsafe()  # long-polls answer, streams end
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True  # a second Ctrl-C: stop now
            else:
                self.should_exit = True

    return Server


def _Server(config, api):  # noqa: N802
    return _server_class()(config, api)
