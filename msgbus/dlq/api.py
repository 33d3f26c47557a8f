"""Operate dead letters: list, show, redrive, purge — the same on every backend.

Every function takes the *original* topic (``account.created``), never its DLQ, and a
:class:`~msgbus.Bus` (or a backend). It works on the dead-letter store: the consumer group
``msgbus-dlq`` of ``<topic>.dlq`` (see :mod:`msgbus.deadletters`), read through the backend
SPI like any group:

- *reading without removing* (``list``, ``show``, the messages a redrive or purge leaves):
  where the backend has a browser (:meth:`~msgbus.backend.Backend.browse`: ActiveMQ's STOMP
  queue browser) ``list`` and ``show`` use it and nothing changes. Otherwise the store's
  messages are received and never acknowledged, then handed back when the reader closes.
  On RabbitMQ and kombu that is get-and-requeue: the broker puts each one back at its old
  place where it can (RabbitMQ does, for a queue nobody else consumes), so the order holds,
  but each comes back marked *redelivered*; a message that arrives while the reader holds
  the others may end up ahead of them. On Kafka it is a read whose offsets are not
  committed. On memory they are requeued in order. (``redrive`` and ``purge`` hand back the
  messages they leave the same way, on ActiveMQ too: redelivered there.)
- *removing* (``redrive``, ``purge``): a message is acknowledged — on Kafka, the store
  group commits past it — only after what replaces it is confirmed (the republish of a
  redrive). A redrive takes one dead letter at a time: republish, wait for the confirm,
  acknowledge, wait until the broker confirms the acknowledgement
  (:meth:`~msgbus.backend.Subscription.confirm_settled`: a channel round trip on AMQP, a
  receipt on STOMP, the group's committed offset on Kafka), then the next. A redrive killed
  at any moment loses nothing and sends at most one message twice (the one republished
  whose removal was not confirmed yet). On Kafka a message past one that a redrive skipped
  stays in the store, since a group commits up to its first unsettled record, and is sent
  again by the next redrive.
- A read ends when the store has handed out nothing for ``idle`` seconds (or ``limit``
  messages matched, or ``scan`` were read). The broker hands out at most ``scan`` messages
  without acknowledgement, so a store larger than ``scan`` is seen in part (``list`` says so).

Thread safety: each call opens its own subscription; calls may run from several threads,
but two redrives of one topic at once may both republish a message.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from msgbus.backend import Backend, Delivery
from msgbus.deadletters import DEAD_LETTER_SUFFIX, STORE_GROUP, dead_letter_topic, original_topic
from msgbus.errors import ConfigurationError
from msgbus.message import (
    ATTEMPT,
    CONTENT_TYPE,
    DLQ_ATTEMPTS,
    DLQ_CONTENT_TYPE,
    DLQ_ERROR,
    DLQ_ERROR_TYPE,
    DLQ_GROUP,
    DLQ_TOPIC,
    MESSAGE_ID,
    TIMESTAMP,
)
from msgbus.serialization import codec_for_content_type

__all__ = [
    "DEFAULT_IDLE",
    "DEFAULT_MAX_REDRIVES",
    "DEFAULT_SCAN",
    "DLQ_HEADER_PREFIX",
    "REDRIVEN",
    "DeadLetter",
    "DeadLetterSummary",
    "RedriveReport",
    "dead_letter_topics",
    "list_dead_letters",
    "purge",
    "redrive",
    "show",
]

log = logging.getLogger("msgbus.dlq")

REDRIVEN = "msgbus-redriven"
"""Header on a redriven message: how many times it was redriven so far."""
DLQ_HEADER_PREFIX = "msgbus-dlq-"
"""Every dead-letter header starts with this; a redrive removes them."""
DEFAULT_MAX_REDRIVES = 3
DEFAULT_IDLE = 1.0
DEFAULT_SCAN = 10_000
_PREVIEW = 200


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """One dead letter as the store holds it (immutable).

    ``topic`` is the original topic; ``headers`` are every header of the dead letter
    (``msgbus-dlq-*`` included); ``timestamp`` the original publish time in ms (or None).
    """

    topic: str
    group: str
    attempts: int
    error_type: str
    error: str
    id: str | None
    key: str | None
    content_type: str | None
    timestamp: int | None
    redriven: int
    headers: dict[str, str]
    body: bytes

    @classmethod
    def from_delivery(cls, topic: str, delivery: Delivery) -> DeadLetter:
        """The dead letter ``delivery`` of ``topic``'s store (headers missing: defaults)."""
        h = delivery.headers
        content_type = h.get(DLQ_CONTENT_TYPE) or h.get(CONTENT_TYPE)
        return cls(
            topic=h.get(DLQ_TOPIC, topic),
            group=h.get(DLQ_GROUP, ""),
            attempts=_int(h.get(DLQ_ATTEMPTS)),
            error_type=h.get(DLQ_ERROR_TYPE, ""),
            error=h.get(DLQ_ERROR, ""),
            id=h.get(MESSAGE_ID) or delivery.native_id,
            key=delivery.key,
            content_type=content_type,
            timestamp=_int(h.get(TIMESTAMP)) or None,
            redriven=_int(h.get(REDRIVEN)),
            headers=dict(h),
            body=bytes(delivery.body),
        )

    def preview(self, size: int = _PREVIEW) -> str:
        """The body as text where the content type allows (JSON, text), else a hex preview;
        cut to ``size`` characters."""
        codec = codec_for_content_type(self.content_type)
        text: str
        if codec is not None and codec.name in ("json", "text"):
            try:
                text = self.body.decode("utf-8")
            except UnicodeDecodeError:
                text = self.body[: size // 2].hex()
        else:
            text = self.body[: size // 2].hex()
        return text if len(text) <= size else text[: size - 1] + "…"

    def user_headers(self) -> dict[str, str]:
        """The headers a redrive keeps: everything but ``msgbus-dlq-*``, the redrive count and
        a durable retry's attempt number (a redriven message starts again at attempt 1)."""
        return {
            k: v
            for k, v in self.headers.items()
            if not k.startswith(DLQ_HEADER_PREFIX) and k not in (REDRIVEN, ATTEMPT)
        }

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (body as a preview, plus its size)."""
        return {
            "topic": self.topic,
            "group": self.group,
            "attempts": self.attempts,
            "error_type": self.error_type,
            "error": self.error,
            "id": self.id,
            "key": self.key,
            "content_type": self.content_type,
            "timestamp": self.timestamp,
            "redriven": self.redriven,
            "headers": self.headers,
            "body_bytes": len(self.body),
            "body_preview": self.preview(),
        }


@dataclasses.dataclass(frozen=True)
class DeadLetterSummary:
    """What ``list`` reports for one topic: count, oldest/newest publish time (ms, or None),
    count per error type, and ``complete`` False when the scan limit cut the read short."""

    topic: str
    count: int
    oldest: int | None
    newest: int | None
    error_types: dict[str, int]
    complete: bool = True

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class RedriveReport:
    """What a redrive did: ids redriven (or, with ``dry_run``, that would be), ids skipped
    for exceeding ``max_redrives``, and how many dead letters did not match the filter."""

    redriven: list[str | None] = dataclasses.field(default_factory=list)
    skipped: list[str | None] = dataclasses.field(default_factory=list)
    unmatched: int = 0
    dry_run: bool = False


def _int(value: str | None) -> int:
    try:
        return int(value) if value else 0
    except ValueError:
        return 0


def _backend(bus: Any) -> Backend:
    backend = getattr(bus, "backend", bus)
    if not isinstance(backend, Backend):
        raise TypeError(f"expected a msgbus Bus or Backend, not {type(bus).__name__}")
    return backend


@contextmanager
def _store(backend: Backend, topic: str, scan: int, *, browse: bool = False) -> Iterator[Any]:
    if not topic or topic.endswith(".dlq"):
        raise ConfigurationError(
            f"give the original topic, not its dead-letter topic: {topic!r}"
            if topic
            else "a topic is required"
        )
    prefetch = max(1, min(scan, 65535))
    sub = None
    if browse:  # a real browser where the broker has one (ActiveMQ)
        sub = backend.browse(dead_letter_topic(topic), STORE_GROUP, prefetch=prefetch)
    if sub is None:
        sub = backend.subscribe(
            dead_letter_topic(topic),
            STORE_GROUP,
            prefetch=prefetch,
            from_beginning=backend.features.replay,
        )
    try:
        yield sub
    finally:
        sub.close()  # everything not acknowledged goes back to the store


def _read(sub: Any, idle: float, scan: int) -> Iterator[Delivery]:
    """Deliveries until ``idle`` s pass without one, or ``scan`` were read."""
    seen = 0
    while seen < scan:
        batch = sub.receive(min(1000, scan - seen), idle)
        if not batch:
            return
        for delivery in batch:
            seen += 1
            yield delivery


def show(
    bus: Any,
    topic: str,
    *,
    limit: int | None = None,
    error_type: str | None = None,
    idle: float = DEFAULT_IDLE,
    scan: int = DEFAULT_SCAN,
) -> list[DeadLetter]:
    """The dead letters of ``topic`` (oldest first; those of ``error_type`` only; at most
    ``limit``), left in the store. Raises the backend's errors."""
    backend = _backend(bus)
    out: list[DeadLetter] = []
    with _store(backend, topic, scan, browse=True) as sub:
        for delivery in _read(sub, idle, scan):
            letter = DeadLetter.from_delivery(topic, delivery)
            if _matches(letter, error_type):
                out.append(letter)
                if limit is not None and len(out) >= limit:
                    break
    return out


def dead_letter_topics(
    bus: Any, *, match: str | None = None, management_url: str | None = None
) -> list[str]:
    """The original topics that have a dead-letter store on the broker (sorted), those whose
    name matches the shell pattern ``match`` only (``account.*``).

    Asks the backend (:meth:`~msgbus.backend.Backend.topics`: Kafka's topic list, the
    queues kombu's Redis or SQL transport keeps, the memory broker's topics); with
    ``management_url``, RabbitMQ's management HTTP API instead (the queues of the backend's
    virtual host: :mod:`msgbus.dlq.management`). Raises :class:`~msgbus.ConfigurationError`
    naming the fix where the broker cannot tell (AMQP, STOMP: name the topics, or give
    RabbitMQ's management URL), and the backend's errors."""
    backend = _backend(bus)
    if management_url is not None:
        from msgbus.dlq.management import management_queues, vhost_of

        known: list[str] | None = management_queues(management_url, vhost_of(backend))
    else:
        known = backend.topics()
    if known is None:
        raise ConfigurationError(
            f"{backend.describe()} cannot list its queues or topics: name the topics to list "
            "(msgbus dlq list URL TOPIC...), or on RabbitMQ give its management plugin's URL "
            "(--management-url http://USER:PASSWORD@HOST:15672)"
        )
    names = {original_topic(t) for t in known if t.endswith(DEAD_LETTER_SUFFIX) and t != ".dlq"}
    return sorted(t for t in names if match is None or fnmatch.fnmatchcase(t, match))


def list_dead_letters(
    bus: Any,
    topics: list[str],
    *,
    match: str | None = None,
    management_url: str | None = None,
    idle: float = DEFAULT_IDLE,
    scan: int = DEFAULT_SCAN,
) -> list[DeadLetterSummary]:
    """A :class:`DeadLetterSummary` per topic of ``topics`` (original topics), read
    without removing anything. Empty ``topics``: every topic with a dead-letter store
    (:func:`dead_letter_topics`, matching ``match``, through ``management_url`` on
    RabbitMQ). Each topic is one read of its store
    (on Kafka a join of the ``msgbus-dlq`` group: about ``idle`` s each). Raises the
    backend's errors."""
    backend = _backend(bus)
    if not topics:
        topics = dead_letter_topics(backend, match=match, management_url=management_url)
    out = []
    for topic in topics:
        stamps: list[int] = []
        kinds: Counter[str] = Counter()
        count = 0
        with _store(backend, topic, scan, browse=True) as sub:
            for delivery in _read(sub, idle, scan):
                letter = DeadLetter.from_delivery(topic, delivery)
                count += 1
                kinds[letter.error_type or "?"] += 1
                if letter.timestamp is not None:
                    stamps.append(letter.timestamp)
        out.append(
            DeadLetterSummary(
                topic=topic,
                count=count,
                oldest=min(stamps) if stamps else None,
                newest=max(stamps) if stamps else None,
                error_types=dict(kinds.most_common()),
                complete=count < scan,
            )
        )
    return out


def redrive(
    bus: Any,
    topic: str,
    *,
    to: str | None = None,
    error_type: str | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    max_redrives: int = DEFAULT_MAX_REDRIVES,
    idle: float = DEFAULT_IDLE,
    scan: int = DEFAULT_SCAN,
    timeout: float = 30.0,
    on_redriven: Callable[[DeadLetter], None] | None = None,
    window: int = 1,
) -> RedriveReport:
    """Republish ``topic``'s dead letters to their original topic (or ``to``), then remove
    each from the store once its republish is confirmed.

    Key, body, content type, message id, correlation id and user headers are kept; the
    ``msgbus-dlq-*`` headers are removed and ``msgbus-redriven`` counts the redrives. A dead
    letter already redriven ``max_redrives`` times is skipped (left in the store) with a
    warning. ``dry_run`` reports what would be redriven and changes nothing.
    ``on_redriven`` is called after each removal. A failed republish raises (the message
    and the rest stay in the store).

    The broker confirms the removals every ``window`` messages (default 1: each one before
    the next republish), so a redrive killed at any moment sends at most ``window`` messages
    twice; a larger window trades that bound for speed (on Kafka a confirmation waits for
    the group's commit: about a tenth of a second).
    """
    if window < 1:
        raise ConfigurationError("window must be at least 1")
    backend = _backend(bus)
    report = RedriveReport(dry_run=dry_run)
    unconfirmed = 0
    with _store(backend, topic, scan) as sub:
        for delivery in _read(sub, idle, scan):
            letter = DeadLetter.from_delivery(topic, delivery)
            if not _matches(letter, error_type):
                report.unmatched += 1
                continue
            if letter.redriven >= max_redrives:
                log.warning(
                    "dead letter %s of %s was redriven %d time(s) already (max_redrives=%d): "
                    "skipped, left in the dead-letter queue",
                    letter.id,
                    topic,
                    letter.redriven,
                    max_redrives,
                )
                report.skipped.append(letter.id)
                continue
            if not dry_run:
                _republish(backend, letter, to or letter.topic, delivery, timeout)
                unconfirmed += 1
                if unconfirmed >= window:  # removed for good before the next republish
                    sub.confirm_settled(timeout)
                    unconfirmed = 0
                if on_redriven is not None:
                    on_redriven(letter)
            report.redriven.append(letter.id)
            if limit is not None and len(report.redriven) >= limit:
                break
        if unconfirmed:
            sub.confirm_settled(timeout)
    return report


def _republish(
    backend: Backend, letter: DeadLetter, target: str, delivery: Delivery, timeout: float
) -> None:
    headers = letter.user_headers()
    if DLQ_CONTENT_TYPE in letter.headers:  # undecodable: it gets its own content type back
        headers[CONTENT_TYPE] = letter.headers[DLQ_CONTENT_TYPE]
    if letter.id is not None:
        headers.setdefault(MESSAGE_ID, letter.id)
    headers[REDRIVEN] = str(letter.redriven + 1)
    # routed: a broker that confirms a message no queue took (RabbitMQ) must fail it here,
    # or the dead letter below would go for a message that went nowhere
    future: Future[None] = backend.publish_routed(
        target, letter.body, key=letter.key, headers=headers
    )
    future.result(timeout)  # confirmed: only now may the dead letter go
    delivery.ack()


def purge(
    bus: Any,
    topic: str,
    *,
    error_type: str | None = None,
    idle: float = DEFAULT_IDLE,
    scan: int = DEFAULT_SCAN,
) -> int:
    """Remove ``topic``'s dead letters (of ``error_type`` only); return how many. Raises the
    backend's errors."""
    backend = _backend(bus)
    removed = 0
    with _store(backend, topic, scan) as sub:
        for delivery in _read(sub, idle, scan):
            if _matches(DeadLetter.from_delivery(topic, delivery), error_type):
                delivery.ack()
                removed += 1
    return removed


def _matches(letter: DeadLetter, error_type: str | None) -> bool:
    if error_type is None:
        return True
    return letter.error_type == error_type or letter.error_type.rsplit(".", 1)[-1] == error_type
