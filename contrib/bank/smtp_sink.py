"""A local SMTP server (aiosmtpd) that keeps every mail it receives in memory.

For the demo and the tests: it listens on loopback only, on a free port unless given one, and
can be stopped and started again on the same port (an SMTP outage).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from msgbus.contrib.bank.mailer import CORRELATION_HEADER, EVENT_HEADER

__all__ = ["ReceivedMail", "SmtpSink"]

_HEADERS = BytesParser(policy=email.policy.compat32)


@dataclass(frozen=True)
class ReceivedMail:
    """One accepted mail: the envelope, the raw bytes, and the parsed headers.

    ``message`` parses the whole mail (headers and MIME parts) on each access; the headers
    alone (``headers``) are parsed once on arrival, which keeps the sink cheap.
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes = field(repr=False)
    headers: Message = field(repr=False)
    received_at: float

    @property
    def message(self) -> EmailMessage:
        """The full parsed mail."""
        message = BytesParser(policy=email.policy.default).parsebytes(self.raw)
        assert isinstance(message, EmailMessage)
        return message

    @property
    def correlation_id(self) -> str | None:
        """The ``X-Correlation-ID`` header, if any."""
        return self.headers.get(CORRELATION_HEADER)

    @property
    def event_id(self) -> str | None:
        """The ``X-Event-ID`` header, if any."""
        return self.headers.get(EVENT_HEADER)


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        hook = self.sink.before_accept
        if hook is not None:  # may block (tests hold a mail this way): not on the loop
            await asyncio.get_running_loop().run_in_executor(None, hook, envelope)
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8")
        self.sink._record(
            ReceivedMail(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                raw=content,
                headers=_HEADERS.parsebytes(content, headersonly=True),
                received_at=time.time(),
            )
        )
        return "250 Message accepted for delivery"


class SmtpSink:
    """An in-memory SMTP server on ``host`` (loopback) and ``port`` (0: a free one).

    :meth:`start` binds and serves from a daemon thread; :meth:`stop` closes the listener and
    drops open connections, keeping ``port`` so that :meth:`start` reopens the same one.
    ``before_accept(envelope)``, if set, runs (in a worker thread) before each mail is
    accepted; if it raises, the mail is refused with a 5xx. All methods are thread-safe.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        before_accept: Callable[[Envelope], Any] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.before_accept = before_accept
        self._mails: list[ReceivedMail] = []
        self._cond = threading.Condition(threading.RLock())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._protocols: weakref.WeakSet[SMTP] = weakref.WeakSet()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> SmtpSink:
        """Listen and serve; returns when connections are accepted. Idempotent."""
        if self._thread is not None:
            return self
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says
        # TCP, and without it every multi-line SMTP reply waits out a 40 ms delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        sock.listen(128)
        self.port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        handler = _Handler(self)

        def factory() -> SMTP:
            protocol = SMTP(handler, hostname="bank-sink.local", loop=loop)
            self._protocols.add(protocol)
            return protocol

        self._server = loop.run_until_complete(loop.create_server(factory, sock=sock))
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="bank-smtp-sink", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop open connections (the mails received are kept)."""
        loop, thread, server = self._loop, self._thread, self._server
        if loop is None or thread is None or server is None:
            return

        async def shutdown() -> None:
            server.close()
            for protocol in list(self._protocols):
                transport = getattr(protocol, "transport", None)
                if transport is not None:
                    transport.abort()
            self._protocols.clear()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        self._loop = self._thread = self._server = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """``host:port`` as the email service's ``--smtp`` option takes it."""
        return f"{self.host}:{self.port}"

    # ------------------------------------------------------------------ what arrived

    def _record(self, mail: ReceivedMail) -> None:
        with self._cond:
            self._mails.append(mail)
            self._cond.notify_all()

    @property
    def mails(self) -> list[ReceivedMail]:
        """A copy of the mails received so far, in arrival order."""
        with self._cond:
            return list(self._mails)

    def mails_since(self, index: int) -> list[ReceivedMail]:
        """The mails received after the first ``index`` ones (cheap incremental reads)."""
        with self._cond:
            return self._mails[index:]

    def count(self) -> int:
        """How many mails were received (duplicates included)."""
        with self._cond:
            return len(self._mails)

    def duplicates(self) -> int:
        """Mails received beyond the first for the same ``X-Event-ID``."""
        with self._cond:
            counts = Counter(mail.event_id for mail in self._mails)
        return sum(n - 1 for n in counts.values())

    def wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Block until ``predicate()`` is true (checked at once and after each mail) or timeout.

        ``predicate`` may call this sink's methods. Returns the predicate's last value.
        """
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def wait_for(self, count: int, timeout: float) -> bool:
        """Block until at least ``count`` mails arrived (True) or ``timeout`` passed (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._mails) >= count, timeout)
