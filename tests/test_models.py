"""The state machine, ids, durations: the small rules everything else leans on."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from approvalctl.durations import format_duration, parse_duration
from approvalctl.errors import InvalidInput
from approvalctl.models import (
    FINAL_STATUSES,
    PENDING,
    STATUSES,
    can_transition,
    from_iso,
    new_id,
    normalise_id,
    to_iso,
)


@pytest.mark.parametrize("target", sorted(FINAL_STATUSES))
def test_pending_moves_to_every_final_state(target: str) -> None:
    assert can_transition(PENDING, target)


@pytest.mark.parametrize("final", sorted(FINAL_STATUSES))
@pytest.mark.parametrize("target", STATUSES)
def test_nothing_leaves_a_final_state(final: str, target: str) -> None:
    assert not can_transition(final, target)


def test_pending_cannot_move_to_pending() -> None:
    assert not can_transition(PENDING, PENDING)


def test_ids_sort_by_creation_time_even_within_a_millisecond() -> None:
    moment = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ids = [new_id(moment) for _ in range(1000)]
    later = new_id(moment + timedelta(seconds=1))
    assert ids == sorted(ids)
    assert len(set(ids)) == 1000
    assert later > ids[-1]
    assert all(len(i) == 26 and i.isalnum() and i == i.lower() for i in ids)


def test_typed_ids_are_normalised() -> None:
    assert normalise_id(" 01ABCIL0O ") == "01abc1100"


def test_iso_times_are_fixed_width_utc_and_round_trip() -> None:
    moment = datetime(2026, 11, 26, 11, 22, 2, 123456, tzinfo=timezone.utc)
    text = to_iso(moment)
    assert text == "2026-11-26T11:22:02.123Z"
    assert from_iso(text) == moment.replace(microsecond=123000)


@pytest.mark.parametrize("text,seconds", [
    ("30s", 30), ("10m", 600), ("2h", 7200), ("7d", 604800), ("1h30m", 5400), ("45", 45),
    ("1.5m", 90), ("2W", 1209600),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "m", "-5m", "0", "0s", "10m5", "1e3q"])
def test_bad_durations_are_named(text: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_duration(text, what="--ttl")
    assert "--ttl" in err.value.detail


def test_format_duration() -> None:
    assert [format_duration(s) for s in (5, 90, 3600, 3720, 90000, None)] == \
        ["5s", "1m30s", "1h00m", "1h02m", "1d01h", "-"]
