"""The HTTP API server: a Starlette app over the core service (see specs/approval_api.yaml)."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app", "create_app_from_env"]


def create_app_from_env():  # -> Starlette
    """The app for `uvicorn --factory` (one per worker): settings from env and config file."""
    from ..config import Settings
    from ..store import open_store

    settings = Settings.load()
    app = create_app(open_store(settings.db), settings)
    _stop_long_polls_on_signal(app.state.api)
    return app


def _stop_long_polls_on_signal(api) -> None:
    """In a worker process, make SIGTERM/SIGINT end long-polls at once (then drain as usual).

    uvicorn has installed its own handlers by the time the factory runs; chain onto them.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum, frame, previous=previous):
            api.stopping = True
            previous(signum, frame)

        signal.signal(sig, handler)
