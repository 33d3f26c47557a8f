"""kombu's SQLAlchemy transport with its exchange bindings kept in the database.

kombu's virtual transports keep the table of queue bindings in the memory of the process
that declared them (only Redis stores them on the server), so on ``sqla+sqlite://`` a
publisher in one process never sees the queues another process bound, and its messages
are dropped. :class:`SharedBindingsTransport` is kombu's own SQLAlchemy transport whose
channel also writes every binding to a table ``kombu_binding`` of the same database and
reads the routing table from there when it publishes: two processes on one machine can then
talk through one SQLite file, with no broker.

The kombu backend uses it for ``kombu+sqla+...`` URLs (the URL itself goes to kombu
unchanged). Bindings of a queue are removed when the queue is deleted; those of a process
that died stay (its group queue keeps collecting messages, as a durable queue would).

Delivery is at least once, as on the other transports: kombu's own channel marks a message
taken when it hands it out and never deletes it, so a consumer that dies loses it. Here an
acknowledged message's row is deleted, a rejected or restored one is replaced by a new
row, and a taken message whose consumer died is handed out again once the transport
option ``visibility_timeout`` (seconds, default 3600, as on Redis) has passed.
"""

from __future__ import annotations

import datetime
import threading
from queue import Empty
from typing import Any

import sqlalchemy as sa
from kombu.transport import sqlalchemy as kombu_sqla
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

__all__ = ["BINDING_TABLE", "SharedBindingsChannel", "SharedBindingsTransport"]

DEFAULT_VISIBILITY_TIMEOUT = 3600.0
"""Seconds before a message taken by a consumer that never acknowledged it (it died) is
handed out again; the transport option ``visibility_timeout`` changes it (as on Redis)."""

BINDING_TABLE = "kombu_binding"
"""The table holding the bindings (exchange, routing key, pattern, queue)."""

_metadata = sa.MetaData()
_bindings = sa.Table(
    BINDING_TABLE,
    _metadata,
    sa.Column("exchange", sa.String(255), primary_key=True),
    sa.Column("routing_key", sa.String(255), primary_key=True),
    sa.Column("pattern", sa.String(255), primary_key=True),
    sa.Column("queue", sa.String(255), primary_key=True),
)
_created: set[int] = set()
_lock = threading.Lock()


class SharedBindingsChannel(kombu_sqla.Channel):  # type: ignore[misc]
    """A kombu SQLAlchemy channel whose routing table lives in the database."""

    def _engine_from_config(self) -> sa.engine.Engine:
        """kombu's engine, without the options that are this transport's own or kombu's
        (``polling_interval``), which SQLAlchemy's ``create_engine`` would refuse."""
        client = self.connection.client
        kept = dict(client.transport_options or {})
        for own in ("visibility_timeout", "polling_interval"):
            kept.pop(own, None)
        saved, client.transport_options = client.transport_options, kept
        try:
            return super()._engine_from_config()
        finally:
            client.transport_options = saved

    def _binding_engine(self) -> sa.engine.Engine:
        engine = self._open()[0]
        if id(engine) not in _created:
            with _lock:
                if id(engine) not in _created:
                    _metadata.create_all(engine, checkfirst=True)
                    _created.add(id(engine))
        return engine

    def queue_bind(
        self, queue: str, exchange: str | None = None, routing_key: str = "", *a: Any, **kw: Any
    ) -> None:
        """Bind as kombu does, and record the binding in the database (idempotent)."""
        super().queue_bind(queue, exchange, routing_key, *a, **kw)
        exchange = exchange or "amq.direct"
        key, pattern, _ = self.typeof(exchange).prepare_bind(queue, exchange, routing_key, None)
        row = {"exchange": exchange, "routing_key": key or "", "pattern": pattern or ""}
        row["queue"] = queue
        with self._binding_engine().begin() as db:
            exists = db.execute(
                sa.select(_bindings.c.queue).where(
                    *(getattr(_bindings.c, name) == value for name, value in row.items())
                )
            ).first()
            if exists is None:
                db.execute(_bindings.insert().values(**row))

    def get_table(self, exchange: str) -> list[tuple[str, str, str]]:
        """The bindings of ``exchange`` recorded by every process using this database."""
        with self._binding_engine().connect() as db:
            rows = db.execute(
                sa.select(_bindings.c.routing_key, _bindings.c.pattern, _bindings.c.queue).where(
                    _bindings.c.exchange == exchange
                )
            ).all()
        return [(r.routing_key, r.pattern or None, r.queue) for r in rows]

    def queue_unbind(
        self, queue: str, exchange: str | None = None, routing_key: str = "", *a: Any, **kw: Any
    ) -> None:
        """Remove the binding from this process and from the database."""
        self.state.binding_delete(queue, exchange, routing_key)
        with self._binding_engine().begin() as db:
            db.execute(
                _bindings.delete().where(
                    _bindings.c.queue == queue,
                    _bindings.c.exchange == (exchange or "amq.direct"),
                    _bindings.c.routing_key == (routing_key or ""),
                )
            )

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        """Deleting a queue removes its bindings (and its messages, as kombu does)."""
        super()._delete(queue, *args, **kwargs)
        with self._binding_engine().begin() as db:
            db.execute(_bindings.delete().where(_bindings.c.queue == queue))

    # ---------------------------------------------------------------- at-least-once

    def _lease(self) -> float:
        options = self.connection.client.transport_options or {}
        return float(options.get("visibility_timeout", DEFAULT_VISIBILITY_TIMEOUT))

    def _get(self, queue: str) -> dict[str, Any]:
        """Take the oldest message that is visible or whose lease ran out (its consumer
        died unacknowledged): mark it taken now and remember its row for the ack."""
        obj = self._get_or_create(queue)
        model = self.message_cls
        now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
        expired = now - datetime.timedelta(seconds=self._lease())
        session = self.session
        if session.bind.name == "sqlite":
            session.execute(sa.text("BEGIN IMMEDIATE TRANSACTION"))
        try:
            msg = (
                session.query(model)
                .with_for_update()
                .filter(model.queue_id == obj.id)
                .filter(sa.or_(model.visible != False, model.sent_at < expired))  # noqa: E712
                .order_by(model.id)
                .limit(1)
                .first()
            )
            if msg is None:
                raise Empty()
            msg.visible = False
            msg.sent_at = now
            payload: dict[str, Any] = loads(bytes_to_str(msg.payload))
            tag = payload.get("properties", {}).get("delivery_tag")
            if tag is not None:
                self._taken[tag] = msg.id
            return payload
        finally:
            session.commit()

    @property
    def _taken(self) -> dict[Any, int]:
        taken = self.__dict__.get("_msgbus_taken")
        if taken is None:
            taken = self.__dict__["_msgbus_taken"] = {}
        return taken

    def _forget(self, tag: Any) -> None:
        row = self._taken.pop(tag, None)
        if row is not None:
            model = self.message_cls
            self.session.query(model).filter(model.id == row).delete(synchronize_session=False)
            self.session.commit()

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        """Acknowledge, then delete the message's row."""
        super().basic_ack(delivery_tag, multiple)
        self._forget(delivery_tag)

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        """Reject (requeue puts a new copy first), then delete the old row."""
        super().basic_reject(delivery_tag, requeue)
        self._forget(delivery_tag)

    def _restore(self, message: Any) -> None:
        """A message handed back unacknowledged (channel closed): a new row, the old gone."""
        self._forget(message.delivery_tag)
        super()._restore(message)


class SharedBindingsTransport(kombu_sqla.Transport):  # type: ignore[misc]
    """kombu's SQLAlchemy transport using :class:`SharedBindingsChannel`."""

    Channel = SharedBindingsChannel
