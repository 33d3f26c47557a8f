"""The account service's HTTP API, served by uvicorn on loopback, called with httpx."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from msgbus.contrib.bank.http_api import create_app
from msgbus.contrib.bank.http_server import ServerThread
from msgbus.contrib.bank.store import AccountStore


def serve(store: AccountStore, on_created: Callable[[], None] = lambda: None) -> ServerThread:
    return ServerThread(create_app(store, on_created)).start()


@pytest.fixture
def store(tmp_path: Path) -> AccountStore:
    return AccountStore(tmp_path / "accounts.db")


@pytest.fixture
def client(store: AccountStore) -> Iterator[httpx.Client]:
    server = serve(store)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client
    server.stop()


def test_create_then_get(client: httpx.Client, store: AccountStore) -> None:
    created = client.post("/accounts", json={"owner": "  Ana Lima ", "email": "ana@EXAMPLE.com"})
    assert created.status_code == 201
    account = created.json()
    assert account["owner"] == "Ana Lima"
    assert account["email"] == "ana@example.com"  # domain normalized by email-validator
    assert created.headers["Location"] == f"/accounts/{account['id']}"
    assert len(created.headers["X-Correlation-ID"]) == 32  # made up when not given
    assert client.get(f"/accounts/{account['id']}").json() == account
    (entry,) = store.pending()
    assert entry.correlation_id == created.headers["X-Correlation-ID"]


def test_correlation_id_is_kept(client: httpx.Client, store: AccountStore) -> None:
    created = client.post(
        "/accounts",
        json={"owner": "Ana", "email": "ana@example.com"},
        headers={"X-Correlation-ID": "req-123"},
    )
    assert created.headers["X-Correlation-ID"] == "req-123"
    assert store.pending()[0].correlation_id == "req-123"


def test_missing_account_is_404(client: httpx.Client) -> None:
    response = client.get("/accounts/999")
    assert response.status_code == 404
    assert response.json() == {"detail": "account 999 not found"}
    assert client.get("/accounts/abc").status_code == 422


def test_healthz(client: httpx.Client) -> None:
    client.post("/accounts", json={"owner": "Ana", "email": "ana@example.com"})
    assert client.get("/healthz").json() == {"status": "ok", "outbox_pending": 1}


def test_validation_message_names_every_problem(client: httpx.Client, store: AccountStore) -> None:
    response = client.post("/accounts", json={"email": "nope"})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid request"
    assert "owner: Field required" in body["message"]
    assert "email: value is not a valid email address" in body["message"]
    assert len(body["detail"]) == 2
    assert store.counts()["accounts"] == 0


def test_on_created_runs_after_commit(store: AccountStore) -> None:
    seen: list[int] = []
    server = serve(store, on_created=lambda: seen.append(store.counts()["pending"]))
    try:
        httpx.post(server.url + "/accounts", json={"owner": "Ana", "email": "ana@example.com"})
    finally:
        server.stop()
    assert seen == [1]
