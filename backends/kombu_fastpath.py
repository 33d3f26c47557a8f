"""The py-amqp fast path of the kombu backend (``kombu+amqp://``), behind a capability check.

py-amqp spends more system calls and Python per message than the broker needs: three
``recv`` calls per frame read, a ``sendall`` per frame written, and a generic property
encoder per published message. This module replaces those pieces of py-amqp for the kombu
backend (measured gains: docs/kombu.md):

- :class:`BufferedTCPTransport`: buffered frame reads with ``poll`` waits that another
  thread can end early (``wake_on``);
- :func:`encode_basic_properties` and a frame writer that sends an :class:`EncodedMessage`
  (body + pre-encoded properties) as three frames in one write;
- :func:`coalesced_writes`: the frames written inside a block go out in one ``sendall``;
- :class:`Connection`: a ``kombu.Connection`` whose py-amqp transports use all of the above.

They reach into py-amqp internals (``TCPTransport._setup_transport``, ``_write``,
``method_framing.frame_writer``, ``Connection.on_inbound_frame``). :func:`unavailable`
checks that the installed py-amqp is a version this was verified on (:data:`VERIFIED`) and
has those internals; when not, or when turned off (the backend option ``fast_path=false``
or the environment variable ``MSGBUS_FAST_PATH=0``), the backend uses kombu and py-amqp
unchanged and logs one line saying why.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import struct
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import amqp
import amqp.method_framing
import amqp.transport
import kombu
import kombu.transport.pyamqp
from amqp.exceptions import UnexpectedFrame

from msgbus.backendkit.fastpath import unverified_version

__all__ = [
    "VERIFIED",
    "BufferedTCPTransport",
    "Connection",
    "EncodedMessage",
    "coalesced_writes",
    "encode_basic_properties",
    "encoded",
    "unavailable",
    "wake_on",
]

VERIFIED = ((5, 4),)
"""py-amqp (major, minor) versions the fast path was verified on (the ``kombu`` extra pins
this range)."""

_INTERNALS = (
    (amqp.transport.TCPTransport, "_setup_transport"),
    (amqp.transport.TCPTransport, "_write"),
    (amqp.Connection, "on_inbound_frame"),
    (amqp.Connection, "negotiate_capabilities"),
    (amqp.method_framing, "frame_writer"),
)


def unavailable() -> str | None:
    """Why the fast path cannot be used with the installed py-amqp, or None when it can."""
    version = getattr(amqp, "__version__", "unknown")
    reason = unverified_version("py-amqp", version, VERIFIED)
    if reason is not None:
        return reason
    for owner, name in _INTERNALS:
        if not hasattr(owner, name):
            return f"py-amqp {version} has no {getattr(owner, '__name__', owner)}.{name}"
    return None


# --------------------------------------------------------------------------- py-amqp reads

_READ_SIZE = 65536
_FRAME_HEADER = struct.Struct(">BHI")
_FRAME_END = 0xCE
_RETRY = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)


class BufferedTCPTransport(amqp.transport.TCPTransport):
    """py-amqp's TCP transport with buffered reads (``kombu+amqp://``, not ``amqps://``).

    py-amqp's own transport reads every frame with three ``recv`` calls (header, payload,
    frame end), and ``Connection.blocking_read`` changes the socket's timeout before and
    after each frame. This one keeps what one ``recv`` of up to 64 KiB returned and cuts
    frames out of it, and waits for data with ``poll`` instead of socket timeouts, so a
    frame that is already buffered costs no system call. A frame is taken from the buffer
    only once it is complete, so a timeout never loses a partial frame. Writes are
    py-amqp's (``sendall``). Used by the I/O thread only, like the connection.
    """

    def _setup_transport(self) -> None:
        super()._setup_transport()
        self._inbox = b""
        self._inpos = 0
        self._poller = select.poll()
        self._poller.register(self.sock, select.POLLIN)
        self._waker: socket.socket | None = None

    def wake_on(self, waker: socket.socket) -> None:
        """Let a byte arriving on the (non-blocking) socket ``waker`` end a wait for broker
        data early, as a timeout (the byte is read), so that other threads can hand the
        I/O thread work while it waits."""
        self._waker = waker
        self._poller.register(waker, select.POLLIN)

    def read_frame_within(self, timeout: float | None) -> tuple[int, int, bytes]:
        """The next frame as ``(type, channel, payload)``.

        Waits up to ``timeout`` seconds for each ``recv`` (None: no limit; 0: only what has
        arrived) and raises :class:`socket.timeout` when nothing came; OSError when the
        connection failed or the broker closed it; ``UnexpectedFrame`` on a corrupt frame.
        """
        while True:
            inbox, pos = self._inbox, self._inpos
            if len(inbox) - pos >= 8:
                frame_type, channel, size = _FRAME_HEADER.unpack_from(inbox, pos)
                end = pos + 7 + size
                if len(inbox) > end:
                    if inbox[end] != _FRAME_END:
                        raise UnexpectedFrame(
                            f"Received frame_end {inbox[end]:#04x} while expecting 0xce"
                        )
                    self._inpos = end + 1
                    return frame_type, channel, inbox[pos + 7 : end]
            self._receive(timeout)

    def read_frame(self, unpack: Any = None) -> tuple[int, int, bytes]:
        """py-amqp's entry point: the next frame, waiting as long as the socket's timeout."""
        return self.read_frame_within(self.sock.gettimeout())

    def _receive(self, timeout: float | None) -> None:
        sock = self.sock
        try:
            try:
                if timeout is None:
                    data = sock.recv(_READ_SIZE)
                else:
                    data = sock.recv(_READ_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                if not timeout or not self._wait(timeout):
                    raise TimeoutError() from None
                data = sock.recv(_READ_SIZE, socket.MSG_DONTWAIT)
        except TimeoutError:
            raise
        except OSError as exc:
            if exc.errno in _RETRY:
                raise TimeoutError() from None
            self.connected = False
            raise
        if not data:
            self.connected = False
            raise OSError("Server unexpectedly closed connection")
        rest = self._inbox[self._inpos :]
        self._inbox = rest + data if rest else data
        self._inpos = 0

    def _wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s; True when the broker's socket is readable."""
        readable = False
        waker = self._waker
        for fd, _events in self._poller.poll(timeout * 1000):
            if waker is not None and fd == waker.fileno():
                with contextlib.suppress(OSError):
                    waker.recv(4096)
            else:
                readable = True
        return readable


class _AMQPConnection(kombu.transport.pyamqp.Connection):
    """kombu's py-amqp connection, on a :class:`BufferedTCPTransport` for plain TCP.

    It does not ask for ``connection.blocked`` notifications: with them py-amqp tries to
    read the socket before every ``basic_publish`` (a system call per message), only to
    hand them to an ``on_blocked`` callback that kombu never sets. A blocked connection
    still holds publishes back (the broker stops reading); their confirms come later.
    """

    negotiate_capabilities: ClassVar[dict[str, bool]] = {
        **amqp.Connection.negotiate_capabilities,
        "connection.blocked": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("frame_writer", _frame_writer)
        super().__init__(*args, **kwargs)

    def Transport(
        self,
        host: str,
        connect_timeout: float | None,
        ssl: Any = False,
        read_timeout: float | None = None,
        write_timeout: float | None = None,
        socket_settings: Any = None,
        **kwargs: Any,
    ) -> Any:
        if ssl:
            return super().Transport(
                host,
                connect_timeout,
                ssl,
                read_timeout,
                write_timeout,
                socket_settings=socket_settings,
                **kwargs,
            )
        return BufferedTCPTransport(
            host,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            write_timeout=write_timeout,
            socket_settings=socket_settings,
            **kwargs,
        )

    def blocking_read(self, timeout: float | None = None) -> Any:
        transport = self.transport
        if not isinstance(transport, BufferedTCPTransport):
            return super().blocking_read(timeout)
        return self.on_inbound_frame(transport.read_frame_within(timeout))


class _AMQPTransport(kombu.transport.pyamqp.Transport):
    Connection = _AMQPConnection


class _AMQPSSLTransport(kombu.transport.pyamqp.SSLTransport):
    Connection = _AMQPConnection


_OUR_AMQP = {
    kombu.transport.pyamqp.Transport: _AMQPTransport,
    kombu.transport.pyamqp.SSLTransport: _AMQPSSLTransport,
}


class Connection(kombu.Connection):
    """A ``kombu.Connection`` whose py-amqp transports use :class:`_AMQPConnection` (also
    after a failover switch); the other transports are kombu's own."""

    def get_transport_cls(self) -> Any:
        cls = super().get_transport_cls()
        return _OUR_AMQP.get(cls, cls)


# --------------------------------------------------------------------------- py-amqp writes

_FLAG = {
    "content_type": 1 << 15,
    "application_headers": 1 << 13,
    "delivery_mode": 1 << 12,
    "correlation_id": 1 << 10,
    "message_id": 1 << 7,
    "timestamp": 1 << 6,
}
_PROPERTY_NAMES = ("delivery_mode", "correlation_id", "message_id", "timestamp")  # flag order
_PROPERTY_SET = frozenset(_PROPERTY_NAMES)
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_LONGSTR = struct.Struct(">cI")
_METHOD_FRAME = struct.Struct(">BHIHH")
_FRAME = struct.Struct(">BHI")
_CONTENT_HEADER = struct.Struct(">HHQ")


def _shortstr(text: str) -> bytes | None:
    data = text.encode("utf-8", "surrogatepass")
    return bytes((len(data),)) + data if len(data) <= 255 else None


_NAMES: dict[str, bytes] = {}  # header names and content types recur: encoded once


def _name(text: str) -> bytes | None:
    field = _NAMES.get(text)
    if field is None:
        field = _shortstr(text)
        if field is not None and len(_NAMES) < 1024:
            _NAMES[text] = field
    return field


def encode_basic_properties(
    content_type: str | None, headers: Mapping[str, Any], properties: Mapping[str, Any]
) -> bytes | None:
    """The AMQP 0-9-1 property flags and list of a published message, as py-amqp would
    write them: ``content_type``, the ``headers`` table (string values, as ``S``),
    ``delivery_mode``, ``correlation_id``, ``message_id`` and ``timestamp`` (seconds) from
    ``properties``. None when something does not fit this form (py-amqp then encodes it).
    """
    flags = 0
    parts: list[bytes] = []
    if content_type is not None:
        field = _name(content_type)
        if field is None:
            return None
        flags |= _FLAG["content_type"]
        parts.append(field)
    if headers:
        table: list[bytes] = []
        for name, value in headers.items():
            field = _name(name)
            if field is None or value.__class__ is not str:
                return None
            data = value.encode("utf-8", "surrogatepass")
            table += (field, _LONGSTR.pack(b"S", len(data)), data)
        encoded = b"".join(table)
        flags |= _FLAG["application_headers"]
        parts += (_U32.pack(len(encoded)), encoded)
    if not properties.keys() <= _PROPERTY_SET:
        return None
    for name in _PROPERTY_NAMES:
        value = properties.get(name)
        if value is None:
            continue
        if name == "delivery_mode" and value.__class__ is int and 0 <= value <= 255:
            parts.append(bytes((value,)))
        elif name == "timestamp" and value.__class__ is int and 0 <= value < 1 << 64:
            parts.append(_U64.pack(value))
        elif name in ("correlation_id", "message_id") and value.__class__ is str:
            field = _shortstr(value)
            if field is None:
                return None
            parts.append(field)
        else:
            return None
        flags |= _FLAG[name]
    return _U16.pack(flags) + b"".join(parts)


class EncodedMessage:
    """A message body with its properties already encoded (see
    :func:`encode_basic_properties`), for ``basic_publish`` on a :class:`_AMQPConnection`
    channel: its frame writer sends the three frames without py-amqp's per-message
    serialization."""

    __slots__ = ("body", "properties")

    def __init__(self, body: bytes, properties: bytes) -> None:
        self.body = body
        self.properties = properties


def _frame_writer(connection: Any, transport: Any) -> Callable[..., None]:
    """py-amqp's frame writer (``amqp.Connection(frame_writer=...)``) with a short path for
    :class:`EncodedMessage` content: method, content-header and body frames (the body cut
    at ``frame_max``) built with precompiled structs and written at once. Everything else
    goes through py-amqp's own writer."""
    standard = amqp.method_framing.frame_writer(connection, transport)
    write = transport.write

    def write_frame(kind: int, channel: int, method_sig: Any, args: Any, content: Any) -> None:
        if content.__class__ is not EncodedMessage:
            standard(kind, channel, method_sig, args, content)
            return
        if args.__class__ is str:
            args = args.encode("utf-8")
        class_id, method_id = method_sig
        body, properties = content.body, content.properties
        header = _CONTENT_HEADER.pack(class_id, 0, len(body)) + properties
        parts = [
            _METHOD_FRAME.pack(1, channel, 4 + len(args), class_id, method_id),
            args,
            b"\xce",
            _FRAME.pack(2, channel, len(header)),
            header,
            b"\xce",
        ]
        chunk = connection.frame_max - 8
        view = memoryview(body)
        for start in range(0, len(body), chunk):
            piece = view[start : start + chunk]
            parts += (_FRAME.pack(3, channel, len(piece)), piece, b"\xce")
        write(b"".join(parts))
        connection.bytes_sent += 1

    return write_frame


def wake_on(conn: Any, waker: socket.socket) -> None:
    """Let a byte on ``waker`` end the I/O thread's wait for broker frames on ``conn`` (a
    connected kombu connection), where its transport is a :class:`BufferedTCPTransport`."""
    transport = getattr(conn.connection, "transport", None)
    if isinstance(transport, BufferedTCPTransport):
        transport.wake_on(waker)


def encoded(channel: Any) -> bool:
    """True when ``channel`` belongs to a fast-path connection (it takes EncodedMessage)."""
    return isinstance(getattr(channel, "connection", None), _AMQPConnection)


@contextlib.contextmanager
def coalesced_writes(conn: Any) -> Iterator[None]:
    """I/O thread: on py-amqp, collect the frames written inside the block and send them
    with one system call (py-amqp otherwise calls ``sendall`` once per frame)."""
    amqp_conn = getattr(conn, "_connection", None)
    transport = getattr(amqp_conn, "transport", None)
    original = getattr(transport, "_write", None)
    if original is None:
        yield
        return
    chunks: list[bytes] = []

    def collect(data: Any) -> None:
        chunks.append(bytes(data))  # py-amqp reuses its frame buffer: copy

    transport._write = collect
    try:
        yield
    finally:
        transport._write = original
        if chunks:
            transport.write(b"".join(chunks))
