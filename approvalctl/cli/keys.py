"""`approvalctl keys create|list|revoke`: API keys for agents and remote operators.

The secret is printed once, alone on stdout (or as `key` in the JSON), and never again:
only its hash is stored.
"""

from __future__ import annotations

import typer

from ..durations import parse_duration
from .app import YES_OPT, app, backend, command, confirm, emit, message, print_table

JSON_OPT = typer.Option(False, "--json", help="Print JSON on stdout instead of a table.")

keys_app = typer.Typer(help="API keys: create (the secret is shown once), list, revoke.",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@command(keys_app, "create")
def create_cmd(
    ctx: typer.Context,
    name: str = typer.Option(..., "--name", help="Who holds the key; becomes the user_id of "
                                                 "their requests."),
    role: str = typer.Option(..., "--role", help="user, viewer, operator or admin."),
    expires: str | None = typer.Option(None, "--expires", metavar="DURATION",
                                       help="Stop working after this long, e.g. 30d."),
    as_json: bool = JSON_OPT,
) -> None:
    """Create an API key and print its secret (once: store it now)."""
    seconds = None if expires is None else parse_duration(expires, what="--expires")
    secret, record = backend(ctx).create_key(name, role, seconds)
    if as_json:
        emit({**record, "key": secret})
    else:
        print(secret, flush=True)
    until = f", expires {record['expires_at']}" if record.get("expires_at") else ""
    message(f"created API key {record['name']!r} (role {record['role']}{until}); "
            "the secret is shown only this once")


@command(keys_app, "list")
def list_cmd(ctx: typer.Context, as_json: bool = JSON_OPT) -> None:
    """List API keys (never their secrets)."""
    rows = backend(ctx).list_keys()
    if as_json:
        emit(rows)
        return
    if not rows:
        message("no API keys (create one with: approvalctl keys create --name N --role R)")
        return
    print_table(["NAME", "ROLE", "STATE", "PREFIX", "CREATED", "BY", "EXPIRES", "REVOKED"],
                [[k["name"], k["role"], k["state"], k["key_prefix"], k["created_at"],
                  k["created_by"], k["expires_at"] or "never", k["revoked_at"] or "-"]
                 for k in rows])


@command(keys_app, "revoke")
def revoke_cmd(ctx: typer.Context,
               name: str = typer.Argument(..., help="The key's name."),
               yes: bool = YES_OPT, as_json: bool = JSON_OPT) -> None:
    """Revoke an API key: it fails from the very next request. Asks on a terminal; off a
    terminal it needs --yes."""
    confirm(f"Revoke API key {name!r}? Whoever holds it is locked out at once.", yes,
            "revoking an API key")
    backend(ctx).revoke_key(name)
    if as_json:
        emit({"name": name, "state": "revoked"})
    message(f"revoked API key {name!r}")
