"""`approvalctl rules list|add|rm|test|import|export`: the policy the service applies on create.

Rules are kept in the database (locally or behind `--server`, the same commands); import
and export speak YAML, a list of rules in order, so a policy can live in git. See
docs/policy.md for what a rule matches.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from ..errors import InvalidInput
from .app import app, backend, command, emit, message, parse_json_object, print_table

JSON_OPT = typer.Option(False, "--json", help="Print JSON on stdout instead of a table.")

rules_app = typer.Typer(help="Policy rules: which calls pass, fail or go to the operator.",
                        no_args_is_help=True)
app.add_typer(rules_app, name="rules")


def _summary(rule: dict[str, Any]) -> list[Any]:
    match = " ".join(f"{k}={v}" for k, v in (rule.get("match") or {}).items())
    if rule.get("exact"):
        match = (match + " (exact)").strip()
    return [rule["name"], rule["action"], ",".join(rule["tools"]), match or "-",
            rule.get("risk") or "-", rule.get("ttl") or "-", rule.get("note") or ""]


@command(rules_app, "list")
def list_cmd(ctx: typer.Context, as_json: bool = JSON_OPT) -> None:
    """List the rules in the order they are tried (first match wins)."""
    rules = backend(ctx).list_rules()
    if as_json:
        emit(rules)
        return
    if not rules:
        message("no policy rules: every call goes to the operator (add one with: approvalctl "
                "rules add NAME --action allow --tool GLOB)")
        return
    print_table(["NAME", "ACTION", "TOOLS", "MATCH", "RISK", "TTL", "NOTE"],
                [_summary(r) for r in rules])


@command(rules_app, "add")
def add_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The rule's name (letters, digits, _ . -)."),
    action: str = typer.Option(..., "--action", help="allow, deny or ask."),
    tools: list[str] = typer.Option(..., "--tool", metavar="GLOB",
                                    help="fnmatch glob on the tool name (repeatable)."),
    match: list[str] = typer.Option([], "--match", metavar="PATH=GLOB",
                                    help="Glob on the argument at a dot path, e.g. "
                                         "'command=git push*' (repeatable; all must match)."),
    risk: str | None = typer.Option(None, "--risk", help="Set the request's risk: low, "
                                                         "medium or high."),
    ttl: str | None = typer.Option(None, "--ttl", metavar="DURATION",
                                   help="Cap the request's time to live, e.g. 10m."),
    note: str | None = typer.Option(None, "--note", help="The decision note of an allow "
                                                         "or deny."),
    before: str | None = typer.Option(None, "--before", metavar="NAME",
                                      help="Insert before this rule (default: at the end)."),
    remind_after: str | None = typer.Option(
        None, "--remind-after", metavar="DURATION",
        help="Ask rules: remind the request's channels once if still pending then."),
    escalate_after: str | None = typer.Option(
        None, "--escalate-after", metavar="DURATION",
        help="Ask rules: tell the --escalate-to channels once if still pending then."),
    escalate_to: list[str] = typer.Option(
        [], "--escalate-to", metavar="CHANNEL",
        help="A configured channel (slack, email, ntfy, webhook:N) to escalate to "
             "(repeatable)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Add a rule; a rule that can never match is refused."""
    pairs: dict[str, str] = {}
    for item in match:
        path, sep, glob = item.partition("=")
        if not sep:
            raise InvalidInput(f"--match {item!r}: expected PATH=GLOB, e.g. command='git push*'")
        pairs[path] = glob
    rule: dict[str, Any] = {"name": name, "tools": list(tools), "action": action}
    if pairs:
        rule["match"] = pairs
    for key, value in (("risk", risk), ("note", note)):
        if value is not None:
            rule[key] = value
    if ttl is not None:
        from ..durations import parse_duration

        rule["ttl"] = parse_duration(ttl, what="--ttl")
    for key, value in (("remind_after", remind_after), ("escalate_after", escalate_after)):
        if value is not None:
            from ..durations import parse_duration

            rule[key] = parse_duration(value, what=f"--{key.replace('_', '-')}")
    if escalate_to:
        rule["escalate_to"] = list(escalate_to)
    stored = backend(ctx).add_rule(rule, before=before)
    if as_json:
        emit(stored)
    message(f"added policy rule {stored['name']!r} ({stored['action']})")


@command(rules_app, "rm")
def rm_cmd(ctx: typer.Context, name: str = typer.Argument(..., help="The rule's name.")) -> None:
    """Remove a rule."""
    backend(ctx).remove_rule(name)
    message(f"removed policy rule {name!r}")


@command(rules_app, "test")
def test_cmd(
    ctx: typer.Context,
    tool: str = typer.Argument(..., metavar="TOOL", help="The tool name."),
    args: str | None = typer.Option(None, "--args", metavar="JSON",
                                    help="The call's arguments, a JSON object."),
    as_json: bool = JSON_OPT,
) -> None:
    """Dry run: what the policy does with this call, and which rule says so."""
    result = backend(ctx).test_rule(tool, parse_json_object(args) or {})
    if as_json:
        emit(result)
    else:
        who = f"rule {result['rule']}" if result["rule"] else "no rule matched (the default)"
        print(f"{result['action']}\t{who}")


@command(rules_app, "import")
def import_cmd(
    ctx: typer.Context,
    file: str = typer.Argument(..., metavar="FILE", help="YAML: a list of rules ('-' for "
                                                          "stdin)."),
    replace: bool = typer.Option(False, "--replace", help="Make these the whole policy "
                                                          "instead of appending them."),
) -> None:
    """Import rules from YAML, all or nothing: with any error nothing is imported and every
    error is listed."""
    import yaml

    try:
        if file == "-":
            text = sys.stdin.read()
        else:
            with open(file, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as exc:
        raise InvalidInput(f"cannot read {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{file} is not UTF-8 text") from None
    from ..errors import DuplicateKey
    from ..strictyaml import load

    try:
        data = load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{file} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except DuplicateKey as exc:
        raise InvalidInput(f"{file}: {exc}") from None
    rules = backend(ctx).import_rules(data if data is not None else [], replace=replace)
    message(f"imported; the policy now has {len(rules)} rule(s)")


@command(rules_app, "export")
def export_cmd(ctx: typer.Context) -> None:
    """Print the rules as YAML, in order (for `rules import`)."""
    import yaml

    rules = backend(ctx).list_rules()
    # allow_unicode off: anything outside ASCII (an agent's argument captured by an
    # --always rule may hold bidi or invisible characters) is written as a YAML escape
    sys.stdout.write(yaml.safe_dump(rules, sort_keys=False, allow_unicode=False)
                     if rules else "[]\n")
