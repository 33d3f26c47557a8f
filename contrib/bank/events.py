"""The ``account.created`` event: a versioned schema shared by the two services.

Wire form (JSON object, the message body; the correlation id travels in the message
headers, not in the body)::

    {"type": "account.created", "version": 1, "event_id": "5f0c...",
     "account_id": 7, "owner": "Ana Lima", "email": "ana@example.com",
     "created_at": "2024-05-01T12:00:00.123456+00:00"}

A consumer accepts ``version`` values it knows (:data:`SUPPORTED_VERSIONS`) and rejects
anything else with :class:`UnsupportedVersion`; unknown extra fields are ignored so that a
compatible producer may add optional fields without a version bump.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "ACCOUNT_CREATED",
    "SCHEMA_VERSION",
    "SUPPORTED_VERSIONS",
    "AccountCreated",
    "EventError",
    "InvalidEvent",
    "UnsupportedVersion",
]

ACCOUNT_CREATED = "account.created"
"""The event type, and the default topic it is published to."""
SCHEMA_VERSION = 1
"""The version this code writes."""
SUPPORTED_VERSIONS = frozenset({1})
"""The versions this code can read."""

_MAX_TEXT = 320


class EventError(ValueError):
    """A body is not a valid event this code can handle (root of the event errors)."""


class InvalidEvent(EventError):
    """The body is not an ``account.created`` event: wrong type, missing or bad field."""


class UnsupportedVersion(EventError):
    """The event's ``version`` is not one of :data:`SUPPORTED_VERSIONS`."""


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidEvent(f"field {name!r} must be a non-empty string, got {value!r}")
    if len(value) > _MAX_TEXT:
        raise InvalidEvent(f"field {name!r} is longer than {_MAX_TEXT} characters")
    return value


@dataclass(frozen=True)
class AccountCreated:
    """An account was created (schema version 1). Immutable; validated on construction.

    - ``event_id``: unique per event (32 hex chars by default); consumers deduplicate on it.
    - ``account_id``: the new account's id (a positive int); also the message key.
    - ``owner``, ``email``: as stored by the account service (email already normalized).
    - ``created_at``: ISO 8601 timestamp with a UTC offset.

    Raises :class:`InvalidEvent` if a field is missing or malformed.
    """

    event_id: str
    account_id: int
    owner: str
    email: str
    created_at: str
    type: str = ACCOUNT_CREATED
    version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def new(cls, account_id: int, owner: str, email: str, created_at: datetime) -> AccountCreated:
        """Build a fresh event with a new random ``event_id``."""
        return cls(
            event_id=uuid.uuid4().hex,
            account_id=account_id,
            owner=owner,
            email=email,
            created_at=created_at.astimezone(UTC).isoformat(),
        )

    def validate(self) -> None:
        """Raise :class:`InvalidEvent` (or :class:`UnsupportedVersion`) unless well-formed."""
        if self.type != ACCOUNT_CREATED:
            raise InvalidEvent(f"type must be {ACCOUNT_CREATED!r}, got {self.type!r}")
        if self.version not in SUPPORTED_VERSIONS:
            raise UnsupportedVersion(f"unsupported {self.type} version {self.version!r}")
        fields = {
            "event_id": self.event_id,
            "owner": self.owner,
            "email": self.email,
            "created_at": self.created_at,
        }
        for name in fields:
            _text(fields, name)
        if isinstance(self.account_id, bool) or not isinstance(self.account_id, int):
            raise InvalidEvent(f"field 'account_id' must be an int, got {self.account_id!r}")
        if self.account_id < 1:
            raise InvalidEvent(f"field 'account_id' must be positive, got {self.account_id}")
        if "@" not in self.email:
            raise InvalidEvent(f"field 'email' is not an address: {self.email!r}")
        try:
            stamp = datetime.fromisoformat(self.created_at)
        except ValueError:
            raise InvalidEvent(f"field 'created_at' is not ISO 8601: {self.created_at!r}") from None
        if stamp.tzinfo is None:
            raise InvalidEvent("field 'created_at' must carry a UTC offset")

    def to_dict(self) -> dict[str, Any]:
        """The wire form: a JSON-ready dict with every field (``type`` and ``version`` first)."""
        return {
            "type": self.type,
            "version": self.version,
            "event_id": self.event_id,
            "account_id": self.account_id,
            "owner": self.owner,
            "email": self.email,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: object) -> AccountCreated:
        """Parse the wire form.

        Raises :class:`UnsupportedVersion` for a version this code cannot read (checked
        before anything else, so a future schema is never half-parsed) and
        :class:`InvalidEvent` for anything that is not a valid event. Unknown extra fields
        are ignored.
        """
        if not isinstance(data, Mapping):
            raise InvalidEvent(f"an event must be a JSON object, got {type(data).__name__}")
        if data.get("type") != ACCOUNT_CREATED:
            raise InvalidEvent(f"type must be {ACCOUNT_CREATED!r}, got {data.get('type')!r}")
        version = data.get("version")
        if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
            raise UnsupportedVersion(f"unsupported {ACCOUNT_CREATED} version {version!r}")
        missing = [
            name
            for name in ("event_id", "account_id", "owner", "email", "created_at")
            if name not in data
        ]
        if missing:
            raise InvalidEvent(f"missing field(s): {', '.join(missing)}")
        return cls(
            event_id=data["event_id"],
            account_id=data["account_id"],
            owner=data["owner"],
            email=data["email"],
            created_at=data["created_at"],
            type=data["type"],
            version=version,
        )
