"""Test helpers that look for secrets where they must not be: log records, texts, errors.

:func:`every_log_record` captures every log record of every logger at DEBUG (whatever
levels and handlers the application set) as formatted text, traceback included.
:func:`secret_pieces` lists what of a secret must never show up, and :func:`find_leaks`
returns the texts that show one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from msgbus import secrets

__all__ = ["every_log_record", "find_leaks", "secret_cycle", "secret_pieces"]

_FORMAT = logging.Formatter("%(levelname)s %(name)s %(message)s")
_DELIMITERS = re.compile(r"[/?#@:&=,\[\]%+;\s]")


@contextmanager
def every_log_record() -> Iterator[list[str]]:
    """Within the block, every logger logs at DEBUG and each record is appended, formatted
    (message, arguments, traceback), to the yielded list; levels are restored afterwards.

    Records are taken from the log-record factory, after msgbus's own masking: what any
    handler of the application could see.
    """
    secrets.install_log_filter()  # first, so that this capture sees masked records
    manager = logging.root.manager
    loggers = [logging.root] + [
        lg for lg in list(manager.loggerDict.values()) if isinstance(lg, logging.Logger)
    ]
    levels = [(lg, lg.level, lg.disabled) for lg in loggers]
    disable = manager.disable
    captured: list[str] = []
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        captured.append(_FORMAT.format(record))
        return record

    logging.disable(logging.NOTSET)
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.disabled = False
    manager._clear_cache()  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
    try:
        yield captured
    finally:
        logging.setLogRecordFactory(previous)
        for lg, level, disabled in levels:
            lg.setLevel(level)
            lg.disabled = disabled
        logging.disable(disable)


def secret_pieces(secret: str, *, min_length: int = 4, anchors: tuple[str, ...] = ()) -> list[str]:
    """The secret itself and each of its parts between URL delimiters (``/ ? # @ :`` ...)
    that is at least ``min_length`` long: a parser that splits a secret at a delimiter must
    not show either half. With ``anchors`` (marker strings that begin and end a generated
    secret), only the parts holding one count: a middle part such as ``8080`` of
    ``Pw7x/8080/Qz9k`` also occurs in ports and timestamps, and a parser that splits the
    secret shows its first or last part anyway."""
    pieces = {secret}
    pieces.update(
        p
        for p in _DELIMITERS.split(secret)
        if len(p) >= min_length and (not anchors or any(a in p for a in anchors))
    )
    return sorted(pieces, key=len, reverse=True)


def find_leaks(
    secret: str, texts: Iterable[str], *, min_length: int = 4, anchors: tuple[str, ...] = ()
) -> list[str]:
    """Return the texts that contain ``secret`` or one of its :func:`secret_pieces`."""
    pieces = secret_pieces(secret, min_length=min_length, anchors=anchors)
    return [text for text in texts if any(piece in text for piece in pieces)]


def secret_cycle(url: str, bad_url: str, secret: str, *, timeout: float = 30.0) -> list[str]:
    """Run connect / publish / consume / fail on ``url`` (whose credentials hold ``secret``)
    and return every text produced on the way: every log record of every logger at DEBUG,
    ``repr``/``str`` of the bus and its backend, and the error of connecting to ``bad_url``
    (the same secret, a broker that refuses or does not answer).

    The consumed message must come back (the cycle really ran); the caller checks the
    returned texts with :func:`find_leaks`.
    """
    import uuid

    import msgbus
    from msgbus.testing.recorder import Recorder

    texts: list[str] = []
    topic = f"leak-{uuid.uuid4().hex[:8]}"
    with every_log_record() as records:
        with msgbus.connect(url) as bus:
            texts += [repr(bus), str(bus), repr(bus.backend), bus.backend.describe()]
            seen = Recorder()
            bus.subscribe(topic, seen, group="leak-check")
            bus.start()
            bus.publish(topic, {"n": 1}, headers={"h": "v"}).result(timeout)
            assert [m.payload for m in seen.wait_for(1, timeout)] == [{"n": 1}]
        try:
            msgbus.connect(bad_url).close()
        except msgbus.MsgBusError as exc:
            texts += [str(exc), repr(exc), *_chain(exc)]
        else:  # pragma: no cover - the caller's bad_url must fail
            raise AssertionError("connecting to the bad URL did not fail")
    assert records, "no log record was captured"
    return texts + records


def _chain(exc: BaseException) -> list[str]:
    """The texts of the exceptions ``exc`` was raised from (a traceback would show them)."""
    out: list[str] = []
    seen: set[int] = set()
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        out += [str(cause), repr(cause)]
        cause = cause.__cause__ or cause.__context__
    return out
