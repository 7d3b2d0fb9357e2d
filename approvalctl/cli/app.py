"""The Typer application, its global options, and the helpers every command shares.

A command gets its backend with `backend(ctx)` — the core service acting as the local
operator, or `approvalctl.Client` talking to `--server` — calls one method on it, and prints
with `emit()`/`print_table()`. Errors are the core's exceptions; `run()` maps them to the
documented exit codes with one line on stderr. Heavy imports stay inside functions so that
`approvalctl approve ID` starts fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import typer
import typer.core

from ..errors import ApprovalctlError, InvalidInput, exit_code

app = typer.Typer(
    name="approvalctl",
    help="Put a human operator between AI agents and the risky tool calls they make.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class State:
    db: str | None = None
    server: str | None = None
    _settings: Any = None
    _backend: Any = None
    _closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def settings(self):  # -> Settings
        if self._settings is None:
            from ..config import Settings

            self._settings = Settings.load(db=self.db, server=self.server)
        return self._settings

    @property
    def remote(self) -> bool:
        return bool(self.settings.server)

    def close(self) -> None:
        for closer in reversed(self._closers):
            closer()
        self._closers.clear()


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        sys.stdout.write(f"approvalctl {__version__}\n")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    db: str | None = typer.Option(
        None, "--db", metavar="URL|PATH",
        help="Database path or postgresql:// URL \\[env: APPROVALCTL_DB; default: "
             "$XDG_DATA_HOME/approvalctl/approvals.db]."),
    server: str | None = typer.Option(
        None, "--server", metavar="URL",
        help="Talk to an approvalctl server instead of the database \\[env: APPROVALCTL_SERVER]."
             " The API key comes from APPROVALCTL_API_KEY or the config file."),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                 help="Print the version and exit."),
) -> None:
    """Put a human operator between AI agents and the risky tool calls they make.

    Exit codes: 0 ok (approved) · 1 error · 2 bad input · 3 not found · 4 not pending ·
    5 unauthenticated/forbidden · 6 unreachable · 10 rejected · 11 expired · 12 cancelled ·
    124 still pending when the wait timed out.
    """
    state = State(db=db, server=server)
    ctx.obj = state
    ctx.call_on_close(state.close)


def state_of(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):  # commands invoked without the callback (tests)
        root.obj = State()
    return root.obj


def local_service(ctx: typer.Context):  # -> ApprovalService
    """The core service over the configured database (local mode only)."""
    state = state_of(ctx)
    from ..service import ApprovalService
    from ..store import open_store

    store = open_store(state.settings.db)
    # No flush of buffered RBAC-check counters at exit: a read command must write nothing
    # (it would wait on, or fail for, a lock or a full disk it never needed). A command that
    # changes something writes the checks made before it in the same transaction.
    state._closers.append(store.close)
    return ApprovalService(store, state.settings)


def local_principal(ctx: typer.Context):  # -> Principal
    """Local use without --server acts as the local operator, guarded by file permissions."""
    from ..config import local_user
    from ..models import Principal

    return Principal(name=local_user(), role="admin", local=True)


def backend(ctx: typer.Context):
    """What commands call: a `Client` in remote mode, else the service bound to `$USER`.

    Both offer the same methods (without the actor argument) and raise the same errors.
    """
    state = state_of(ctx)
    if state._backend is None:
        if state.remote:
            from ..client import Client

            if not state.settings.api_key:
                from ..errors import Unauthenticated

                raise Unauthenticated("--server needs an API key: set APPROVALCTL_API_KEY or "
                                      "api_key in the config file")
            client = Client(state.settings.server, state.settings.api_key)
            state._closers.append(client.close)
            state._backend = client
        else:
            state._backend = LocalBackend(local_service(ctx), local_principal(ctx))
    return state._backend


class LocalBackend:
    """The service with the actor filled in: the same call shape as `Client`."""

    def __init__(self, service, actor) -> None:
        self.service = service
        self.actor = actor

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.service, name)

        def bound(*args: Any, **kwargs: Any) -> Any:
            return method(self.actor, *args, **kwargs)

        return bound


# ---------------------------------------------------------------- output
def _no_color() -> bool:
    return bool(os.environ.get("NO_COLOR")) or not sys.stdout.isatty()


def can_encode(stream: Any, text: str) -> bool:
    try:
        text.encode(getattr(stream, "encoding", None) or "utf-8")
    except UnicodeEncodeError:
        return False
    except LookupError:  # an encoding name Python does not know: assume the worst
        return text.isascii()
    return True


def fit_stream(stream: Any, text: str) -> str:
    """`text` with every character `stream` cannot encode as a visible escape (`\\u00e9`).

    On a non-UTF-8 stdout/stderr (`LANG=C`, `PYTHONIOENCODING=ascii`, latin-1) human output
    degrades instead of dying with UnicodeEncodeError. The text is already rendered, so its
    backslashes are escaped and an added escape cannot be confused with the agent's text.
    """
    if text.isascii() or can_encode(stream, text):
        return text
    from ..render import escape_unencodable

    return escape_unencodable(text, getattr(stream, "encoding", None) or "ascii")


def emit(data: Any) -> None:
    """Exactly one JSON document on stdout: the exact stored values, valid JSON on any
    stdout encoding (non-ASCII as \\u escapes when the stream cannot carry it)."""
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    if not can_encode(sys.stdout, text):
        text = json.dumps(data, indent=2, ensure_ascii=True, default=str)
    sys.stdout.write(text + "\n")


def message(text: str) -> None:
    """A human message: always stderr, never mixed into data.

    The whole line goes through `render.escape`: messages quote agent text (tool names,
    notes, error details), and nothing in it may act on the terminal or start a new line.
    """
    from ..render import escape

    sys.stderr.write(fit_stream(sys.stderr, escape(text)) + "\n")


def print_table(columns: list[str], rows: list[list[Any]], *, title: str | None = None) -> None:
    """A table on stdout; every cell is rendered with `render.escape` (a rich `Text`
    passed in was rendered by the caller, e.g. cut to a width, and is printed as it is),
    then degraded to what stdout can encode."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from ..render import escape

    plain = _no_color()
    # Off a terminal nothing wraps: pipes and logs get whole ids and values.
    console = Console(no_color=plain, highlight=False, emoji=False, markup=False,
                      width=400 if not sys.stdout.isatty() else None)
    table = Table(title=title, box=None, header_style="" if plain else "bold", pad_edge=False)
    for i, col in enumerate(columns):
        table.add_column(col, no_wrap=i == 0, overflow="fold")
    # Cells are Text, not str: values come from agents, and rich would read "[...]" in a
    # str as markup (a stray "[/x]" crashed the listing) and ":name:" as an emoji. It also
    # spares rich parsing every cell, a large share of the time a table takes.
    for row in rows:
        table.add_row(*[Text(fit_stream(sys.stdout, v.plain)) if isinstance(v, Text) else
                        Text(fit_stream(sys.stdout, escape(v))) for v in row])
    console.print(table)


def utf8_argv(argv: list[str]) -> list[str]:
    """The command-line arguments as UTF-8 text, whatever the locale.

    Under `LANG=C` (without Python's UTF-8 mode) non-ASCII argument bytes arrive as lone
    surrogates, which no database or stream can encode. Arguments are read as UTF-8; one
    that is not valid UTF-8 is refused (exit 2, one line) rather than stored mangled.
    """
    out = []
    for arg in argv:
        if arg.isascii() or not any("\udc80" <= ch <= "\udcff" for ch in arg):
            out.append(arg)
            continue
        raw = arg.encode(sys.getfilesystemencoding(), "surrogateescape")
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            from ..render import escape

            message(f"error: command-line argument is not valid UTF-8: "
                    f"{escape(raw.decode('utf-8', 'backslashreplace'))}")
            raise SystemExit(2) from None
    return out


def fail(exc: ApprovalctlError) -> typer.Exit:
    message(f"error: {exc.detail}")
    return typer.Exit(exit_code(exc))


@contextmanager
def errors_to_exit() -> Iterator[None]:
    """Turn the core's named errors into one stderr line and the documented exit code."""
    try:
        yield
    except ApprovalctlError as exc:
        raise fail(exc) from None


def environment_error(exc: OSError) -> ApprovalctlError:
    """An operating-system fault outside approvalctl as exit 6 with one line."""
    from ..errors import Unavailable

    where = f" on {exc.filename}" if getattr(exc, "filename", None) else ""
    return Unavailable(f"{exc.strerror or exc}{where}: check the disk, the path and its "
                       "permissions")


def parse_json_object(text: str | None, what: str = "--args") -> dict[str, Any] | None:
    """`text` as a JSON object; duplicate keys at any depth and NaN/Infinity are refused
    (strictjson), each with one line naming the problem."""
    if text is None:
        return None
    from ..strictjson import loads

    value = loads(text, what)
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object, e.g. '{{\"branch\": \"main\"}}'")
    return value


def handles_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for every command function: core errors become exit codes, not tracebacks."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ApprovalctlError as exc:
            raise fail(exc) from None
        except OSError as exc:  # the environment (disk, permissions), never a traceback
            raise fail(environment_error(exc)) from None
        except KeyboardInterrupt:
            message("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def _late_global(ctx: Any, param: Any, value: str | None) -> None:
    if value is not None:
        setattr(state_of(ctx), param.name.removeprefix("global_"), value)


class Command(typer.core.TyperCommand):
    """A Typer command that also accepts the global `--db` and `--server` after its name
    (`approvalctl list --server URL`), as people type them; given twice, the later wins.

    Click parses the group's options, runs its callback (which makes the `State`), and only
    then parses the subcommand's, so these callbacks find the state in place.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = {opt for p in self.params for opt in getattr(p, "opts", ())}
        for flag, metavar, text in (
                ("--db", "URL|PATH", "Database path or postgresql:// URL (as before the "
                                     "command)."),
                ("--server", "URL", "Talk to an approvalctl server (as before the command).")):
            if flag not in names:
                self.params.append(typer.core.TyperOption(
                    param_decls=[flag, f"global_{flag[2:]}"], metavar=metavar, help=text,
                    hidden=True, expose_value=False, callback=_late_global))


def confirm(question: str, yes: bool, what: str, declined: str = "nothing done") -> None:
    """Ask `question` on a terminal before a destructive or bulk action; `--yes` skips it.

    Off a terminal nothing is asked and nothing is assumed: without `--yes` the action is
    refused with exit 2 (`what` names it in that one line), as `prune` always did. A "no"
    exits 1 with nothing done, saying `declined`.
    """
    if yes:
        return
    if not sys.stdin.isatty():
        raise InvalidInput(f"{what}: pass --yes to confirm, stdin is not a terminal")
    if not typer.confirm(question, default=False, err=True):
        message(declined)
        raise typer.Exit(1)


YES_OPT = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation (needed when "
                                                 "stdin is not a terminal).")


def command(typer_app: typer.Typer = app, *args: Any, **kwargs: Any
            ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`@command()` registers a command on `typer_app` with error handling."""
    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        kwargs.setdefault("cls", Command)
        typer_app.command(*args, **kwargs)(handles_errors(func))
        return func

    return register
