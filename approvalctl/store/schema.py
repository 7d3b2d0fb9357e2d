"""The ordered schema migrations, written once for both backends.

Each migration is a name and a list of steps: SQL statements, or (for what SQL cannot say)
callables `step(cursor, dialect)`; `store/migrations.py` runs them, one transaction per
migration. The few places where SQLite and
PostgreSQL disagree are spelled with placeholders: `{autoinc}` (an integer primary key that
numbers itself) and `{append_only}` (the triggers that make the audit log append-only).
In PostgreSQL every text column is declared `COLLATE "C"`: ids, ISO times and keys then
compare byte by byte exactly as in SQLite, whatever locale the database was created with, so
keyset pages, expiry comparisons and `migrate --to` order rows the same on both backends.
A statement may also be a Python function (a step that SQL alone cannot do, such as
computing digests of existing rows): it is called with `run(sql, params)` inside the
migration's transaction, `?` placeholders on both backends.
Add a migration at the end; never edit one that has shipped.
"""

from __future__ import annotations

import re
from typing import Any

MIGRATION_SET = "approvalctl"

_DIALECT = {
    "sqlite": {
        "autoinc": "INTEGER PRIMARY KEY",
        "real": "REAL",
        "bigint": "INTEGER",
    },
    "postgresql": {
        "autoinc": "BIGSERIAL PRIMARY KEY",
        "real": "DOUBLE PRECISION",
        "bigint": "BIGINT",
    },
}

_APPEND_ONLY = {
    "sqlite": [
        """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
           BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
        """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
           BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
    ],
    "postgresql": [
        """CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger AS $$
           BEGIN RAISE EXCEPTION 'audit_log is append-only'; END; $$ LANGUAGE plpgsql""",
        """CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
           FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()""",
        """CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
           FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()""",
    ],
}

def _fill_digests(cur: Any, dialect: str) -> None:
    """Migration step: the digest of every existing request, in batches by id.

    A legacy row whose arguments JCS cannot represent (an integer beyond ±2**53) keeps a
    NULL digest: it can never be consumed.
    """
    import json

    from ..digest import DigestError, digest

    mark = "?" if dialect == "sqlite" else "%s"
    after = ""
    while True:
        rows = cur.execute(f"SELECT id, tool_name, arguments FROM requests WHERE id > {mark} "
                           "ORDER BY id LIMIT 1000", (after,)).fetchall()
        for rid, tool_name, arguments in rows:
            try:
                value = digest(tool_name, json.loads(arguments))
            except (DigestError, ValueError):
                continue
            cur.execute(f"UPDATE requests SET digest = {mark} WHERE id = {mark}", (value, rid))
        if len(rows) < 1000:
            return
        after = rows[-1][0]


def _outbox_skipped(cur: Any, dialect: str) -> None:
    """Migration step: outbox rows may also be `skipped` (a reminder whose request was
    decided before its turn came). PostgreSQL swaps the CHECK constraint; SQLite cannot
    alter one, so the table is rebuilt as it was, rows and ids kept, with the new CHECK."""
    statuses = "('pending', 'sent', 'failed', 'skipped')"
    if dialect == "postgresql":
        cur.execute("ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_status_check")
        cur.execute(f"ALTER TABLE outbox ADD CONSTRAINT outbox_status_check CHECK (status IN "
                    f"{statuses})")
        return
    columns = ("id, event, channel, request_id, payload, status, attempts, next_attempt_at, "
               "claimed_until, last_error, created_at, sent_at, audit_seq, audit_hash")
    cur.execute(f"""CREATE TABLE outbox_new (
                id INTEGER PRIMARY KEY,
                event TEXT NOT NULL,
                channel TEXT NOT NULL,
                request_id TEXT NOT NULL,
                payload TEXT NOT NULL,
                status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN {statuses}),
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at TEXT NOT NULL,
                claimed_until TEXT,
                last_error TEXT,
                created_at TEXT NOT NULL,
                sent_at TEXT,
                audit_seq INTEGER,
                audit_hash TEXT
            )""")
    cur.execute(f"INSERT INTO outbox_new ({columns}) SELECT {columns} FROM outbox")
    cur.execute("DROP TABLE outbox")
    cur.execute("ALTER TABLE outbox_new RENAME TO outbox")
    cur.execute("CREATE INDEX outbox_due ON outbox (status, next_attempt_at)")
    cur.execute("CREATE INDEX outbox_request ON outbox (request_id)")


MIGRATIONS: list[tuple[str, list[Any]]] = [
    (
        "0001_requests",
        [
            """CREATE TABLE requests (
                id TEXT PRIMARY KEY,
                tool_name TEXT NOT NULL,
                arguments TEXT NOT NULL,
                reason TEXT,
                risk TEXT NOT NULL CHECK (risk IN ('low', 'medium', 'high')),
                user_id TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN
                    ('pending', 'approved', 'rejected', 'expired', 'cancelled')),
                created_at TEXT NOT NULL,
                expires_at TEXT NOT NULL,
                decided_at TEXT,
                decided_by TEXT,
                decision_note TEXT,
                response_ms {bigint}
            )""",
            # list: by status (pending oldest first), by user, by tool — all keyset on id
            "CREATE INDEX requests_status_id ON requests (status, id)",
            # sweep: pending rows by expiry (a partial index would not match a bound status)
            "CREATE INDEX requests_status_expiry ON requests (status, expires_at)",
            # stats: a covering index over the window
            "CREATE INDEX requests_created_stats ON requests (created_at, status, response_ms)",
        ],
    ),
    (
        "0002_audit_log",
        [
            """CREATE TABLE audit_log (
                seq {autoinc},
                at TEXT NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                request_id TEXT,
                from_status TEXT,
                to_status TEXT,
                detail TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL
            )""",
            "CREATE INDEX audit_log_request ON audit_log (request_id, seq)",
            "{append_only}",
        ],
    ),
    (
        "0003_metric_counters",
        [
            """CREATE TABLE metric_counters (
                name TEXT NOT NULL,
                labels TEXT NOT NULL,
                value {real} NOT NULL DEFAULT 0,
                PRIMARY KEY (name, labels)
            )""",
        ],
    ),
    (
        "0004_api_keys",
        [
            """CREATE TABLE api_keys (
                name TEXT PRIMARY KEY,
                key_id TEXT NOT NULL UNIQUE,
                secret_hash TEXT NOT NULL,
                role TEXT NOT NULL CHECK (role IN ('user', 'viewer', 'operator', 'admin')),
                created_at TEXT NOT NULL,
                created_by TEXT NOT NULL,
                expires_at TEXT,
                revoked_at TEXT,
                last_used_at TEXT
            )""",
            """CREATE TABLE idempotency_keys (
                owner TEXT NOT NULL,
                key TEXT NOT NULL,
                body_hash TEXT NOT NULL,
                request_id TEXT NOT NULL,
                response TEXT NOT NULL,
                created_at TEXT NOT NULL,
                PRIMARY KEY (owner, key)
            )""",
            "CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at)",
        ],
    ),
    (
        "0005_outbox",
        [
            """CREATE TABLE outbox (
                id {autoinc},
                event TEXT NOT NULL,
                channel TEXT NOT NULL,
                request_id TEXT NOT NULL,
                payload TEXT NOT NULL,
                status TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'failed')),
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at TEXT NOT NULL,
                claimed_until TEXT,
                last_error TEXT,
                created_at TEXT NOT NULL,
                sent_at TEXT
            )""",
            "CREATE INDEX outbox_due ON outbox (status, next_attempt_at)",
        ],
    ),
    (
        "0006_indexes_for_a_million_rows",
        [
            # stats: p50/p95 walk this index to the n-th row instead of sorting the window
            # (docs/benchmarks.md, a million rows); only decided-by-a-human rows are in
            # it, so neither creation nor expiry pays for it.
            "CREATE INDEX IF NOT EXISTS requests_response_time "
            "ON requests (response_ms, created_at) WHERE response_ms IS NOT NULL",
            # list --status all with --user or --tool (an agent's own history over HTTP):
            # keyset on id without sorting all of that user's or tool's rows (figures in
            # docs/benchmarks.md). Without status in them, decisions and expiry never touch
            # them.
            "CREATE INDEX IF NOT EXISTS requests_user_all ON requests (user_id, id)",
            "CREATE INDEX IF NOT EXISTS requests_tool_all ON requests (tool_name, id)",
        ],
    ),
    (
        "0007_digest_single_use",
        [
            # DESIGN.md §10: the call's digest, and single use of an approval.
            "ALTER TABLE requests ADD COLUMN digest TEXT",
            "ALTER TABLE requests ADD COLUMN use_by TEXT",
            "ALTER TABLE requests ADD COLUMN consumed_at TEXT",
            # Approvals given before single use existed authorised no particular use: their
            # use_by is their decision time, so they can never be consumed.
            "UPDATE requests SET use_by = decided_at WHERE status = 'approved'",
            _fill_digests,
        ],
    ),
    (
        "0008_audit_covers_state",
        [
            # Row format 2 (approvalctl/audit.py): the hash also covers the request's digest
            # and a hash of its whole row as the change left it; format-1 rows keep theirs.
            "ALTER TABLE audit_log ADD COLUMN format INTEGER NOT NULL DEFAULT 1",
            "ALTER TABLE audit_log ADD COLUMN digest TEXT",
            "ALTER TABLE audit_log ADD COLUMN state TEXT",
            # the chain head as the change that queued a notification left it
            "ALTER TABLE outbox ADD COLUMN audit_seq {bigint}",
            "ALTER TABLE outbox ADD COLUMN audit_hash TEXT",
            # prune deletes a batch of requests' outbox rows without a full scan
            "CREATE INDEX outbox_request ON outbox (request_id)",
        ],
    ),
    (
        "0009_policy_rules",
        [
            # The ordered policy (approvalctl/policy.py): one row per rule, its checked form
            # as JSON; `position` orders them. Changes go through the audit chain.
            """CREATE TABLE policy_rules (
                name TEXT PRIMARY KEY,
                position INTEGER NOT NULL,
                body TEXT NOT NULL
            )""",
        ],
    ),
    (
        "0010_decision_links",
        [
            # The key that signs decision links (approvalctl/notify/links.py): made on first
            # use, replaced by `approvalctl links rotate-secret`. Only the server reads it.
            """CREATE TABLE server_secrets (
                name TEXT PRIMARY KEY,
                value TEXT NOT NULL,
                created_at TEXT NOT NULL
            )""",
            # Quorum (approvals_required): how many distinct approvers a request needs, and
            # who has approved so far; a request without a row needs one.
            """CREATE TABLE request_quorum (
                request_id TEXT PRIMARY KEY,
                required INTEGER NOT NULL
            )""",
            """CREATE TABLE request_approvals (
                request_id TEXT NOT NULL,
                approver TEXT NOT NULL,
                at TEXT NOT NULL,
                PRIMARY KEY (request_id, approver)
            )""",
        ],
    ),
    (
        "0011_reminders",
        [
            # Reminders and escalation (approvalctl/store/reminders.py). A policy rule's own
            # schedule, fixed when the request is created (absolute times; NULL: the
            # config's global setting applies); requests without a row follow the config.
            """CREATE TABLE request_schedule (
                request_id TEXT PRIMARY KEY,
                remind_at TEXT,
                escalate_at TEXT,
                escalate_to TEXT
            )""",
            # One row per step taken (`remind`, `escalate`): the primary key is the claim,
            # inserted in the transaction that queues the step's outbox rows, so racing
            # sweepers (servers, cron) queue each step's messages exactly once.
            """CREATE TABLE request_steps (
                request_id TEXT NOT NULL,
                step TEXT NOT NULL,
                at TEXT NOT NULL,
                PRIMARY KEY (request_id, step)
            )""",
            # a reminder whose request was decided before it went out is `skipped`
            _outbox_skipped,
        ],
    ),
    (
        "0012_status_user",
        [
            # The pending quota (quotas.max_pending) counts one user's pending requests on
            # every create: by (status, user_id) the count walks that user's pending
            # requests and nobody else's (and never their history). Not a partial index on
            # status = 'pending': SQLite then re-prepares every statement that binds a
            # status (`status = ?`, each list page) on each run, in case the value makes the
            # partial index usable (its cost per list page: docs/benchmarks.md).
            "CREATE INDEX IF NOT EXISTS requests_status_user ON requests (status, user_id, id)",
        ],
    ),
]


def statements(dialect: str, body: list[Any]) -> list[Any]:
    """The steps of one migration, statements spelled for `dialect` (callables as given)."""
    out: list[Any] = []
    for stmt in body:
        if callable(stmt):
            out.append(stmt)
        elif stmt == "{append_only}":
            out.extend(_APPEND_ONLY[dialect])
        else:
            stmt = stmt.format(**_DIALECT[dialect])
            if dialect == "postgresql":
                stmt = _TEXT.sub('TEXT COLLATE "C"', stmt)
            out.append(stmt)
    return out


_TEXT = re.compile(r"\bTEXT\b(?! COLLATE)")
