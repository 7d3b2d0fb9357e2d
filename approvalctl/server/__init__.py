"""The HTTP API server: a Starlette app over the core service (see specs/approval_api.yaml)."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app", "create_app_from_env"]


def create_app_from_env():  # -> Starlette
    """The app for `uvicorn --factory` (one per worker): settings from env and config file."""
    from ..config import Settings
    from ..store import open_store

    settings = Settings.load()
    return create_app(open_store(settings.db), settings)
