"""Scheme → backend class.

Backends are found through the entry-point group ``msgbus.backends`` (name = URL scheme,
value = ``"module:Class"``); msgbus registers its own built-ins there too, and keeps the
same table below for source checkouts that were never installed. Third-party packages add a
backend by declaring an entry point; :func:`register_backend` does it at run time.
Lookup tries the full scheme (``stomp+ssl``), then the part before ``+`` (``kombu`` for
``kombu+redis``). Modules are imported only when their scheme is used.
"""

from __future__ import annotations

import difflib
import importlib
import threading
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from msgbus.errors import BackendNotInstalled, ConfigurationError, UnknownBackend

if TYPE_CHECKING:
    from msgbus.backend import Backend

__all__ = ["ENTRY_POINT_GROUP", "available_schemes", "load_backend", "register_backend"]

ENTRY_POINT_GROUP = "msgbus.backends"

BUILTIN_BACKENDS: dict[str, str] = {
    "memory": "msgbus.backends.memory:MemoryBackend",
    "kafka": "msgbus.backends.kafka:KafkaBackend",
    "amqp": "msgbus.backends.rabbitmq:RabbitMQBackend",
    "amqps": "msgbus.backends.rabbitmq:RabbitMQBackend",
    "stomp": "msgbus.backends.activemq:ActiveMQBackend",
    "stomp+ssl": "msgbus.backends.activemq:ActiveMQBackend",
    "activemq": "msgbus.backends.activemq:ActiveMQBackend",
    "kombu": "msgbus.backends.kombu:KombuBackend",
}
"""The built-in schemes, also declared as entry points in pyproject.toml."""

BUILTIN_EXTRAS: dict[str, str] = {
    scheme: target.partition(":")[0].rpartition(".")[2]
    for scheme, target in BUILTIN_BACKENDS.items()
    if scheme != "memory"
}
"""The pip extra of each built-in scheme: the name of its backend module (``rabbitmq`` for
``amqp``), which is also the backend's ``extra`` attribute; derived, not a second list."""

_lock = threading.Lock()
_registered: dict[str, str | type[Backend]] = {}
_loaded: dict[str, type[Backend]] = {}


def register_backend(scheme: str, backend: str | type[Backend]) -> None:
    """Register ``backend`` (a class or a ``"module:Class"`` string) for ``scheme``.

    Overrides an entry point or built-in of the same scheme for this process.
    """
    with _lock:
        _registered[scheme.lower()] = backend
        _loaded.pop(scheme.lower(), None)


def _table() -> dict[str, str | type[Backend]]:
    table: dict[str, str | type[Backend]] = dict(BUILTIN_BACKENDS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        table[ep.name.lower()] = ep.value
    table.update(_registered)
    return table


def available_schemes() -> list[str]:
    """Every scheme that has a backend (installed or not), sorted."""
    return sorted(_table())


def load_backend(scheme: str) -> type[Backend]:
    """Return the backend class for ``scheme`` (the full scheme, e.g. ``kombu+redis``).

    Raises :class:`UnknownBackend` listing the known schemes (with a "did you mean"), or
    :class:`BackendNotInstalled` naming the pip extra when the driver library is missing.
    """
    scheme = scheme.lower()
    with _lock:
        if scheme in _loaded:
            return _loaded[scheme]
    table = _table()
    name = scheme if scheme in table else scheme.partition("+")[0]
    if name not in table:
        known = sorted(table)
        close = difflib.get_close_matches(scheme, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownBackend(
            f"no msgbus backend for scheme {scheme!r}.{hint} Known schemes: {', '.join(known)}"
        )
    target = table[name]
    cls = _import(name, target) if isinstance(target, str) else target
    with _lock:
        _loaded[scheme] = cls
    return cls


def _import(scheme: str, target: str) -> type[Backend]:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            raise ConfigurationError(
                f"the backend for {scheme!r} points to {target!r}, which cannot be imported"
            ) from exc
        extra = BUILTIN_EXTRAS.get(scheme)
        how = f'pip install "msgbus[{extra}]"' if extra else "install the package that provides it"
        raise BackendNotInstalled(
            f"the {scheme!r} backend needs the Python package {missing!r}, "
            f"which is not installed: {how}"
        ) from exc
    try:
        return getattr(module, attr)  # type: ignore[no-any-return]
    except AttributeError:
        raise ConfigurationError(f"{module_name!r} has no backend class {attr!r}") from None
