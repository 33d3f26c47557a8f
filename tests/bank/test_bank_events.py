"""The account.created schema: round trip, validation, versions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from msgbus.contrib.bank.events import (
    ACCOUNT_CREATED,
    AccountCreated,
    InvalidEvent,
    UnsupportedVersion,
)


def make() -> AccountCreated:
    return AccountCreated.new(7, "Ana Lima", "ana@example.com", datetime(2024, 5, 1, tzinfo=UTC))


def test_round_trip_and_wire_form() -> None:
    event = make()
    data = event.to_dict()
    assert list(data)[:2] == ["type", "version"]
    assert data["type"] == ACCOUNT_CREATED and data["version"] == 1
    assert data["created_at"] == "2024-05-01T00:00:00+00:00"
    assert len(data["event_id"]) == 32
    assert AccountCreated.from_dict(data) == event


def test_extra_fields_are_ignored() -> None:
    data = {**make().to_dict(), "branch": "Lisbon"}
    assert AccountCreated.from_dict(data).owner == "Ana Lima"


@pytest.mark.parametrize("version", [0, 2, 99, "1", None, True])
def test_unknown_versions_are_refused(version: object) -> None:
    with pytest.raises(UnsupportedVersion):
        AccountCreated.from_dict({**make().to_dict(), "version": version})


@pytest.mark.parametrize(
    "change",
    [
        {"type": "account.deleted"},
        {"account_id": "7"},
        {"account_id": 0},
        {"account_id": True},
        {"owner": ""},
        {"owner": None},
        {"email": "no-at-sign"},
        {"created_at": "yesterday"},
        {"created_at": "2024-05-01T00:00:00"},
        {"event_id": 5},
    ],
)
def test_malformed_events_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(InvalidEvent):
        AccountCreated.from_dict({**make().to_dict(), **change})


@pytest.mark.parametrize("body", [None, [1], "text", b"bytes", 5])
def test_non_objects_are_refused(body: object) -> None:
    with pytest.raises(InvalidEvent):
        AccountCreated.from_dict(body)


def test_missing_fields_are_named() -> None:
    with pytest.raises(InvalidEvent, match="account_id, owner"):
        AccountCreated.from_dict({"type": ACCOUNT_CREATED, "version": 1, "event_id": "x"})


def test_construction_validates() -> None:
    with pytest.raises(InvalidEvent):
        AccountCreated("e", -1, "Ana", "ana@example.com", "2024-05-01T00:00:00+00:00")
