"""The audit trail is append-only, and tampering behind the tool's back is found and named."""

from __future__ import annotations

import sqlite3

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


def raw(db_path) -> sqlite3.Connection:
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("DROP TRIGGER audit_log_no_delete")
    return conn


def test_updates_and_deletes_are_refused_by_the_database(trail, db_path) -> None:
    conn = sqlite3.connect(db_path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit_log WHERE seq = 2")


def test_intact_chain_verifies(trail, admin) -> None:
    result = trail.audit_verify(admin)
    assert (result.ok, result.rows, result.bad_seq) == (True, 6, None)


def test_an_edited_row_is_named(trail, admin, db_path) -> None:
    raw(db_path).execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 4")
    result = trail.audit_verify(admin)
    assert (result.ok, result.bad_seq) == (False, 4)
    assert "modified" in result.problem


def test_a_deleted_row_is_named(trail, admin, db_path) -> None:
    raw(db_path).execute("DELETE FROM audit_log WHERE seq = 3")
    result = trail.audit_verify(admin)
    assert (result.ok, result.bad_seq) == (False, 4)
    assert "missing" in result.problem


def test_deleting_the_last_row_cannot_hide_behind_the_chain(trail, admin, db_path) -> None:
    conn = raw(db_path)
    conn.execute("DELETE FROM audit_log WHERE seq = 1")
    result = trail.audit_verify(admin)
    assert (result.ok, result.bad_seq) == (False, 2)


def test_reordered_rows_are_named(trail, admin, db_path) -> None:
    conn = raw(db_path)
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
                                                                        db_path) -> None:
    from approvalctl import audit

    conn = raw(db_path)
    conn.row_factory = sqlite3.Row
    row = dict(conn.execute("SELECT * FROM audit_log WHERE seq = 4").fetchone())
    row["actor"] = "mallory"
    forged = audit.row_hash(row["prev_hash"], row)
    conn.execute("UPDATE audit_log SET actor = 'mallory', hash = ? WHERE seq = 4", (forged,))
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
