"""`approvalctl migrate`: schema state, and (with --to) copying all data to another database."""

from __future__ import annotations

import typer

from ..errors import InvalidInput
from .app import app, command, emit, local_service, message, print_table, state_of

JSON_OPT = typer.Option(False, "--json", help="Print JSON on stdout instead of a table.")


@command(app, "migrate")
def migrate_cmd(
    ctx: typer.Context,
    show_list: bool = typer.Option(False, "--list", help="Show each migration and its state."),
    as_json: bool = JSON_OPT,
) -> None:
    """Apply schema migrations (they also apply on every open); --list shows the state."""
    if state_of(ctx).remote:
        raise InvalidInput("migrate works on a database; it cannot be used with --server")
    store = local_service(ctx).store  # opening migrates
    rows = store.migration_state()
    if as_json:
        emit(rows)
    elif show_list:
        print_table(["MIGRATION", "APPLIED AT"],
                    [[r["name"], r["applied_at"] or "pending"] for r in rows])
    else:
        message(f"{store.url}: schema up to date ({len(rows)} migrations applied)")
