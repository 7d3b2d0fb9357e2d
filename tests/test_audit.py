"""The audit trail is append-only, and tampering behind the tool's back is found and named."""

from __future__ import annotations

import pytest

from approvalctl.errors import Unavailable


@pytest.fixture
def trail(service, agent, operator):
    """Six audit rows: three requests created, two decided, one cancelled."""
    ids = [service.create(agent, f"tool{i}").id for i in range(3)]
    service.decide(operator, ids[0], "approve")
    service.decide(operator, ids[1], "reject", "no")
    service.cancel(agent, ids[2])
    assert service.audit_verify(operator_admin()).ok
    return service


def operator_admin():
    from approvalctl.models import Principal

    return Principal("root-admin", "admin")


@pytest.fixture
def raw(raw_db):
    """The database with its append-only triggers dropped, as an attacker would."""
    raw_db.drop_audit_guards()
    return raw_db


def test_updates_and_deletes_are_refused_by_the_database(trail, raw_db) -> None:
    with pytest.raises(raw_db.error, match="append-only"):
        raw_db.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
    with pytest.raises(raw_db.error, match="append-only"):
        raw_db.execute("DELETE FROM audit_log WHERE seq = 2")
    assert trail.audit_verify(operator_admin()).ok


def test_intact_chain_verifies(trail, admin) -> None:
    result = trail.audit_verify(admin)
    assert (result.ok, result.rows, result.bad_seq) == (True, 6, None)


def test_an_edited_row_is_named(trail, admin, raw) -> None:
    raw.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 4")
    result = trail.audit_verify(admin)
    assert (result.ok, result.bad_seq) == (False, 4)
    assert "modified" in result.problem


def test_a_deleted_row_is_named(trail, admin, raw) -> None:
    raw.execute("DELETE FROM audit_log WHERE seq = 3")
    result = trail.audit_verify(admin)
    assert (result.ok, result.bad_seq) == (False, 4)
    assert "missing" in result.problem


def test_deleting_the_last_row_cannot_hide_behind_the_chain(trail, admin, raw) -> None:
    raw.execute("DELETE FROM audit_log WHERE seq = 1")
    result = trail.audit_verify(admin)
    assert (result.ok, result.bad_seq) == (False, 2)


def test_reordered_rows_are_named(trail, admin, raw) -> None:
    conn = raw
    # swap the contents of rows 2 and 3, keeping their seq numbers
    cols = "at, actor, action, request_id, from_status, to_status, detail, prev_hash, hash"
    r2 = conn.execute(f"SELECT {cols} FROM audit_log WHERE seq = 2").fetchone()
    r3 = conn.execute(f"SELECT {cols} FROM audit_log WHERE seq = 3").fetchone()
    sets = ", ".join(f"{c.strip()} = ?" for c in cols.split(","))
    conn.execute(f"UPDATE audit_log SET {sets} WHERE seq = 2", r3)
    conn.execute(f"UPDATE audit_log SET {sets} WHERE seq = 3", r2)
    result = trail.audit_verify(admin)
    assert (result.ok, result.bad_seq) == (False, 2)


def test_a_forged_row_with_a_recomputed_own_hash_still_breaks_the_next(trail, admin,
                                                                        raw) -> None:
    from approvalctl import audit

    row = raw.fetch_dict("SELECT * FROM audit_log WHERE seq = 4")
    row["actor"] = "mallory"
    forged = audit.row_hash(row["prev_hash"], row)
    raw.execute("UPDATE audit_log SET actor = 'mallory', hash = ? WHERE seq = 4", (forged,))
    result = trail.audit_verify(admin)
    assert (result.ok, result.bad_seq) == (False, 5)


def test_the_audit_rows_of_one_request(trail, admin) -> None:
    rid = trail.store.audit_rows()[1]["request_id"]
    rows = trail.audit_list(admin, request_id=rid[:15])
    assert [r["action"] for r in rows] == ["create", "reject"]
    assert rows[1]["detail"] == {"note": "no"}


def test_store_refuses_a_file_that_is_not_a_database(tmp_path) -> None:
    from approvalctl.store import open_store

    bogus = tmp_path / "notes.db"
    bogus.write_text("these are my notes, not a database\n" * 200)
    with pytest.raises(Unavailable) as err:
        open_store(str(bogus))
    assert "not a database" in err.value.detail
    assert bogus.read_text().startswith("these are my notes")


def _insert_format_1(raw_db, rid: str, seq: int, prev: str) -> str:
    """A request and its `create` audit row as approvalctl wrote them before migration
    0008 (row format 1: no digest, no state)."""
    from approvalctl import audit

    raw_db.execute("INSERT INTO requests (id, tool_name, arguments, reason, risk, user_id, "
                   "status, created_at, expires_at) VALUES (?, 'deploy', '{\"env\": \"prod\"}',"
                   " NULL, 'medium', 'deploy-bot', 'pending', '2026-01-01T00:00:00.000Z', "
                   "'2099-01-01T00:00:00.000Z')", (rid,))
    row = {"seq": seq, "at": "2026-01-01T00:00:00.000Z", "actor": "deploy-bot",
           "action": "create", "request_id": rid, "from_status": None, "to_status": "pending",
           "detail": '{"risk":"medium","tool_name":"deploy","user_id":"deploy-bot"}',
           "format": 1}
    row["hash"] = audit.row_hash(prev, row)
    raw_db.execute("INSERT INTO audit_log (seq, at, actor, action, request_id, from_status, "
                   "to_status, detail, prev_hash, hash, format) VALUES "
                   "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                   (seq, row["at"], row["actor"], row["action"], rid, None, "pending",
                    row["detail"], prev, row["hash"]))
    return row["hash"]


def test_rows_from_before_format_2_still_verify_and_are_cross_checked(
        service, admin, operator, raw_db, store) -> None:
    from approvalctl import audit

    old, older = "01aaaaaaaaaaaaaaaaaaaaaaaa", "01aaaaaaaaaaaaaaaaaaaaaaab"
    head = _insert_format_1(raw_db, old, 1, audit.GENESIS)
    _insert_format_1(raw_db, older, 2, head)
    if raw_db.postgres:  # rows inserted with explicit seq: move the sequence past them
        raw_db.execute("SELECT setval(pg_get_serial_sequence('audit_log', 'seq'), 2)")
    service.decide(operator, old, "approve")  # appended as a format-2 row
    assert [r["format"] for r in store.audit_rows()] == [1, 1, 2]
    assert service.audit_verify(admin).ok
    # a request whose last row is format 1 is still checked for what that row holds
    raw_db.execute("UPDATE requests SET status = 'approved' WHERE id = ?", (older,))
    result = service.audit_verify(admin)
    assert not result.ok and result.request_id == older and "status" in result.problem


def test_a_format_2_row_passed_off_as_format_1_is_caught(trail, admin, raw) -> None:
    raw.execute("UPDATE audit_log SET format = 1 WHERE seq = 6")
    result = trail.audit_verify(admin)
    assert (result.ok, result.bad_seq) == (False, 6)
    assert "format 1 after format 2" in result.problem


def test_verify_reads_in_chunks_and_finds_what_lies_past_the_first(service, agent, operator,
                                                                    raw_db, store) -> None:
    """Keyset pages of two rows: every page boundary of the merge is crossed."""
    ids = [service.create(agent, f"tool{i}", {"i": i}).id for i in range(7)]
    for rid in ids[::2]:
        service.decide(operator, rid, "approve")
    assert store.verify_audit([], chunk=2).ok
    assert store.verify_audit([], chunk=2).rows == 11
    raw_db.execute("UPDATE requests SET arguments = '{\"i\": 99}' WHERE id = ?", (ids[5],))
    result = store.verify_audit([], chunk=2)
    assert (result.ok, result.request_id) == (False, ids[5])
