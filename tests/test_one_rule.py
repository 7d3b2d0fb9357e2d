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


@pytest.mark.parametrize("data, message", [
    ({"quotas": {"max_waits": 2.5}}, "config: quotas.max_waits must be a whole number, got 2.5"),
    ({"quotas": {"create_rate": True}}, "config: quotas.create_rate must be a number greater "
                                        "than zero (or null for no limit), got True"),
    ({"http_limits": {"max_headers": False}}, "config: http_limits.max_headers must be a "
                                              "number greater than zero, got False"),
    ({"http_limits": {"keep_alive_timeout": "soon"}}, "config: http_limits.keep_alive_timeout: "
                                                      "'soon' is not a duration (e.g. 30s, 5m, "
                                                      "or seconds)"),
    ({"quotas": []}, "config: quotas must be a mapping of limits, got []"),
])
def test_limits_are_validated_by_the_one_config_schema(data, message) -> None:
    from approvalctl.config import validate_config

    with pytest.raises(InvalidInput) as info:
        validate_config(data)
    assert str(info.value) == message


def test_limits_py_only_builds_what_the_schema_allows() -> None:
    from approvalctl.config import validate_config
    from approvalctl.limits import http_limits_from, quotas_from

    validate_config({"quotas": {"max_pending": False, "max_waits": 3.0},
                     "http_limits": {"header_timeout": "2m"}})
    quotas = quotas_from({"max_pending": False, "max_waits": 3.0})
    assert (quotas.max_pending, quotas.max_waits) == (None, 3)
    assert isinstance(quotas.max_waits, int)
    assert http_limits_from({"header_timeout": "2m"}).header_timeout == 120.0
    with pytest.raises(InvalidInput, match="quotas.max_waits must be a whole number"):
        quotas_from({"max_waits": 2.5})  # settings built in code are checked the same way
