"""Prefix resolution sees only what the caller may read (issue #12.7).

Requests made in the same millisecond share their first ten characters, so a fixed clock
gives two users' requests a common prefix without touching the store's internals.
"""

from __future__ import annotations

import pytest

from approvalctl.errors import InvalidInput
from approvalctl.models import Principal, utcnow
from approvalctl.service import ApprovalService

MOMENT = utcnow()  # now-ish, so the requests are not overdue for the server's sweeper
ALICE = Principal("alice", "user")
BOB = Principal("bob", "user")


@pytest.fixture
def same_moment(store, settings) -> ApprovalService:
    return ApprovalService(store, settings, clock=lambda: MOMENT)


def test_a_user_resolves_a_shared_prefix_among_their_own_requests(same_moment, service):
    mine = same_moment.create(ALICE, "deploy").id
    theirs = [same_moment.create(BOB, "deploy").id for _ in range(2)]
    prefix = mine[:10]
    assert all(t.startswith(prefix) for t in theirs)
    assert service.get(ALICE, prefix).id == mine
    with pytest.raises(InvalidInput) as err:  # bob has two: ambiguous among his own only
        service.get(BOB, prefix)
    assert mine not in err.value.detail
    assert all(t in err.value.detail for t in theirs)


def test_an_ambiguous_prefix_never_names_another_users_id(same_moment, service):
    theirs = same_moment.create(BOB, "deploy").id
    mine = [same_moment.create(ALICE, "deploy").id for _ in range(2)]
    with pytest.raises(InvalidInput) as err:
        service.get(ALICE, theirs[:10])
    assert theirs not in err.value.detail
    assert "ambiguous" in err.value.detail
    assert service.get(BOB, theirs[:10]).id == theirs
    # Readers of every request still see every match.
    with pytest.raises(InvalidInput):
        service.get(Principal("vera", "viewer"), mine[0][:10])


def test_over_http_a_user_key_learns_only_its_own_ids(make_server, db_url):
    live = make_server()
    alice, bob = live.key("alice", "user"), live.key("bob", "user")
    stamp = ApprovalService(live.store, clock=lambda: MOMENT)
    theirs = stamp.create(BOB, "deploy").id
    mine = [stamp.create(ALICE, "deploy").id for _ in range(2)]
    import httpx

    with httpx.Client(base_url=live.url) as http:
        r = http.get(f"/api/v1/approvals/{theirs[:10]}", headers={"X-API-Key": alice})
        assert r.status_code == 400, r.text
        assert theirs not in r.text and "ambiguous" in r.text
        r = http.get(f"/api/v1/approvals/{theirs[:10]}", headers={"X-API-Key": bob})
        assert r.status_code == 200 and r.json()["id"] == theirs
        r = http.put(f"/api/v1/approvals/{theirs[:10]}", json={"action": "approve"},
                     headers={"X-API-Key": alice})
        assert theirs not in r.text
        r = http.delete(f"/api/v1/approvals/{mine[0][:10]}", headers={"X-API-Key": bob})
        assert r.status_code == 200 and r.json()["id"] == theirs  # bob's only match
