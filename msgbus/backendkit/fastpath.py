"""Choosing a driver fast path: a module that reaches into a driver's internals for speed.

A backend keeps its fast path in a module of its own that exposes ``unavailable() -> str |
None`` (why the installed driver cannot take it, None when it can). :func:`load_fast_path`
imports that module only when the fast path is wanted, runs the check, and otherwise hands
back None so the backend uses the stock driver path, after one log line naming the reason
(once per process and reason). The fast path is off when the backend's ``fast_path`` option
is false or the environment variable ``MSGBUS_FAST_PATH`` is ``0``/``false``/``no``/``off``
(the tox ``-stock`` environments set it to test the stock path).
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from types import ModuleType

__all__ = ["ENV_VAR", "fast_path_enabled", "load_fast_path", "unverified_version"]

ENV_VAR = "MSGBUS_FAST_PATH"
"""The environment variable that turns every driver fast path off when false."""

_logged: set[str] = set()
_lock = threading.Lock()


def fast_path_enabled(option: bool = True) -> bool:
    """False when ``option`` is false or :data:`ENV_VAR` says off."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    return option and value not in ("0", "false", "no", "off")


def load_fast_path(module: str, *, option: bool, log: logging.Logger) -> ModuleType | None:
    """The fast-path ``module`` when it is wanted and usable, else None (see the module
    docstring). Never raises for a driver the fast path does not recognise."""
    if not fast_path_enabled(option):
        _once(log, logging.INFO, f"the fast path {module} is turned off; using the stock path")
        return None
    try:
        loaded = importlib.import_module(module)
        reason = loaded.unavailable()
    except Exception as exc:  # an internal it subclasses at import time is gone
        loaded, reason = None, f"it could not be loaded ({type(exc).__name__}: {exc})"
    if reason is not None:
        _once(log, logging.WARNING, f"not using the fast path {module}: {reason}; stock path")
        return None
    return loaded


def _once(log: logging.Logger, level: int, text: str) -> None:
    with _lock:
        if text in _logged:
            return
        _logged.add(text)
    log.log(level, "%s", text)


def unverified_version(
    driver: str, version: str, verified: tuple[tuple[int, int], ...]
) -> str | None:
    """Why ``version`` of ``driver`` is not one of the ``verified`` (major, minor) versions,
    or None when it is: the first part of a fast path's ``unavailable()``."""
    try:
        major_minor = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        major_minor = ()
    if major_minor in verified:
        return None
    listed = ", ".join(f"{major}.{minor}" for major, minor in verified)
    return f"{driver} {version} is not a version it was verified on ({listed})"
