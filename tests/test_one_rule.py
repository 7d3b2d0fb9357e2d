"""Rules that used to be written twice now live once (issue 17): each test drives every
path that applies the rule and checks they agree."""

from __future__ import annotations

import pytest

from approvalctl.client import Client
from approvalctl.config import Settings
from approvalctl.errors import Forbidden, InvalidInput
from approvalctl.models import PENDING, id_prefix
from approvalctl.service import ApprovalService
from approvalctl.store import outbox, sql


@pytest.mark.parametrize("allowed", [False, True])
def test_self_approval_is_one_rule_on_both_decision_paths(store, admin, allowed) -> None:
    svc = ApprovalService(store, Settings(db="", allow_self_approval=allowed))
    full = svc.create(admin, "deploy", {}, reason="mine")  # one statement (a full id)
    short = svc.create(admin, "deploy", {}, reason="mine too")  # step by step (a prefix)
    for ref in (full.id, short.id[:20]):
        if allowed:
            assert svc.decide(admin, ref, "approve").decided_by == admin.name
        else:
            with pytest.raises(Forbidden, match="cannot approve their own request"):
                svc.decide(admin, ref, "approve")
    if not allowed:
        assert {svc.get(admin, full.id).status, svc.get(admin, short.id).status} == {PENDING}


BAD_IDS = ["", "   ", "bad/id", "x" * 27, "01h-..", "ä" * 27, "a b"]


@pytest.mark.parametrize("text", BAD_IDS)
def test_id_check_is_the_same_in_the_service_and_the_client(service, operator, text) -> None:
    with pytest.raises(InvalidInput) as by_rule:
        id_prefix(text)
    with pytest.raises(InvalidInput) as by_service:
        service.get(operator, text)
    with pytest.raises(InvalidInput) as by_client:
        Client._id(text)
    assert str(by_rule.value) == str(by_service.value) == str(by_client.value) == \
        f"invalid request id {text!r}"


def test_ids_as_people_type_them() -> None:
    assert id_prefix(" 01HQZ8ILO ") == "01hqz8110"
    assert Client._id("01HQZ8") == "01hqz8"


def test_outbox_columns_are_declared_once_and_match_the_table(store, raw_db) -> None:
    assert sql.OUTBOX_COLUMNS is outbox.OUTBOX_FIELDS
    assert sql.TABLES["outbox"][1] is outbox.OUTBOX_FIELDS
    cur = raw_db.execute("SELECT * FROM outbox WHERE 1 = 0")
    assert sorted(d[0] for d in cur.description) == sorted(outbox.OUTBOX_FIELDS)
