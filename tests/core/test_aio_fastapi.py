"""msgbus.aio inside FastAPI: a lifespan starts and closes the bus; endpoints ``await`` publish.

The app is served by Starlette's TestClient, which runs the lifespan and the endpoints on one
event loop (as uvicorn does), so the bus's handlers run on the application's loop.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

import msgbus
import msgbus.aio
from msgbus.testing.recorder import wait_until

fastapi = pytest.importorskip("fastapi")
testclient = pytest.importorskip("fastapi.testclient")

TIMEOUT = 10.0


def test_lifespan_starts_and_closes_the_bus_and_endpoints_await_publish() -> None:
    bus = msgbus.aio.connect(f"memory://fastapi-{uuid.uuid4().hex[:8]}")
    audited: list[Any] = []
    handler_threads: set[int] = set()
    endpoint_threads: set[int] = set()
    lock = threading.Lock()

    @bus.subscribe("orders", group="audit", concurrency=2)
    async def audit(msg: msgbus.Message) -> None:
        with lock:
            audited.append(msg.payload)
            handler_threads.add(threading.get_ident())

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await bus.start()
        yield
        await bus.close()

    app = fastapi.FastAPI(lifespan=lifespan)

    @app.post("/orders/{number}", status_code=202)
    async def create_order(number: int) -> dict[str, Any]:
        endpoint_threads.add(threading.get_ident())
        await bus.publish("orders", {"number": number}, key=str(number))  # the broker has it
        return {"queued": number}

    @app.post("/bad")
    async def bad() -> dict[str, Any]:
        try:
            bus.publish("orders", 1, headers={"msgbus-id": "mine"})
        except msgbus.ReservedHeader as exc:
            return {"error": str(exc)}
        return {"error": None}

    with testclient.TestClient(app) as client:
        assert not bus.closed
        for number in range(5):
            response = client.post(f"/orders/{number}")
            assert response.status_code == 202 and response.json() == {"queued": number}
        assert "msgbus-id" in client.post("/bad").json()["error"]
        wait_until(lambda: len(audited) == 5, TIMEOUT, "five audited orders")
    assert bus.closed, "the lifespan's shutdown closed the bus"
    assert sorted(p["number"] for p in audited) == list(range(5))
    assert handler_threads == endpoint_threads, "handlers run on the application's loop"
