"""Human (table) output shows what agents wrote verbatim, whatever it looks like."""

from __future__ import annotations

from conftest import CliRunner

from approvalctl.cli import app
from approvalctl.models import Principal

# rich would read these as markup and emoji in a plain string; "[/oops]" made it raise.
TRICKY = "[/oops] go [b]now[/b] :warning: [link=http://x]y[/link]"  # < 60: list truncates


def test_list_and_show_print_agent_text_verbatim(db_url, service) -> None:
    req = service.create(Principal("deploy-bot", "user"), "git_push", {"note": TRICKY},
                         reason=TRICKY)
    runner = CliRunner()
    listed = runner.invoke(app, ["--db", db_url, "list"])
    assert listed.exit_code == 0, listed.output
    assert TRICKY in listed.stdout
    shown = runner.invoke(app, ["--db", db_url, "show", req.id])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.count(TRICKY) == 2  # the reason, and inside the arguments
