"""Liveness and readiness probes for the bank services (Kubernetes-style).

- ``GET /healthz``: 200 while the process serves HTTP (liveness; says nothing of the broker,
  so a broker outage never gets the pod restarted).
- ``GET /readyz``: 200 when the bus is ready (``health().ready``: connected, every
  subscription receiving) and the SQLite database answers a query; 503 otherwise. The JSON
  body says why: ``{"ready": bool, "database": "ok" | "<error>", "bus": health.as_dict()}``
  (no credentials: see :meth:`msgbus.BusHealth.as_dict`).

The account service adds ``/readyz`` to its API app (its ``/healthz`` is the API's own); the
email service, which has no HTTP API, serves :func:`probe_app` on a small port of its own
(``msgbus-bank emails --port N``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Protocol

from fastapi import FastAPI
from fastapi.responses import JSONResponse

__all__ = ["HasHealth", "add_readiness", "probe_app", "readiness"]


class HasHealth(Protocol):
    """A bus: :class:`msgbus.Bus` or :class:`msgbus.aio.AsyncBus` (``health()`` is cheap)."""

    def health(self) -> Any: ...


def readiness(bus: HasHealth, ping_database: Callable[[], None]) -> tuple[bool, dict[str, Any]]:
    """Whether the service is ready, and the JSON body saying why (or why not).

    ``ping_database`` raises ``sqlite3.Error`` when the database cannot be read; it blocks,
    so call this from a worker thread (FastAPI runs a plain ``def`` endpoint on one).
    """
    health = bus.health()
    try:
        ping_database()
        database = "ok"
    except sqlite3.Error as exc:
        database = f"{type(exc).__name__}: {exc}"[:300]
    ready = bool(health.ready) and database == "ok"
    return ready, {"ready": ready, "database": database, "bus": health.as_dict()}


def add_readiness(app: FastAPI, bus: HasHealth, ping_database: Callable[[], None]) -> FastAPI:
    """Add ``GET /readyz`` (200 ready, 503 not; JSON body) to ``app``; return ``app``."""

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:  # a plain def: FastAPI runs it on a worker thread
        ready, body = readiness(bus, ping_database)
        return JSONResponse(body, status_code=200 if ready else 503)

    return app


def probe_app(bus: HasHealth, ping_database: Callable[[], None], *, title: str) -> FastAPI:
    """A FastAPI app serving only ``/healthz`` (always 200) and ``/readyz``."""
    app = FastAPI(title=title, version="1", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    def healthz() -> Any:
        return {"status": "ok"}

    return add_readiness(app, bus, ping_database)
