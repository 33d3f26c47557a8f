"""The account service's HTTP API, served by uvicorn on loopback, called with httpx."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from msgbus.contrib.bank.http_api import MAX_BODY_BYTES, NewAccount, create_app
from msgbus.contrib.bank.http_server import ServerThread
from msgbus.contrib.bank.store import ABANDONED_CLAIM, IDEMPOTENCY_TTL, AccountStore


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


# --------------------------------------------------------------------------- bad input (issue 14)

ANA = {"owner": "Ana", "email": "ana@example.com"}


@pytest.mark.parametrize("account_id", ["99999999999999999999999", str(2**63), "0", "-1"])
def test_ids_no_account_can_have_are_404(client: httpx.Client, account_id: str) -> None:
    response = client.get(f"/accounts/{account_id}")
    assert response.status_code == 404
    assert response.json() == {"detail": f"account {int(account_id)} not found"}


def test_a_body_over_the_limit_is_413_from_its_content_length(
    client: httpx.Client, store: AccountStore
) -> None:
    big = json.dumps({"owner": "x" * (20 * 1024 * 1024), "email": "ana@example.com"})
    response = client.post("/accounts", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["message"] == f"the request body is limited to {MAX_BODY_BYTES} bytes"
    assert len(response.content) < 500 and store.counts()["accounts"] == 0


def test_a_chunked_body_over_the_limit_is_413_before_it_is_read_whole(
    client: httpx.Client, store: AccountStore
) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"owner": "'
        for _ in range(20 * 1024):  # 20 MB in 1 KiB chunks, unless the server stops reading
            sent += 1024
            yield b"x" * 1024

    try:
        response = client.post(
            "/accounts", content=chunks(), headers={"Content-Type": "application/json"}
        )
    except httpx.TransportError:  # the server answered and closed while we were sending
        assert sent < 20 * 1024 * 1024
    else:
        assert response.status_code == 413
    assert store.counts()["accounts"] == 0


def test_error_replies_repeat_only_an_excerpt_of_the_input(client: httpx.Client) -> None:
    owner = "y" * (MAX_BODY_BYTES - 100)
    response = client.post("/accounts", json={"owner": owner, "email": "ana@example.com"})
    assert response.status_code == 422
    assert len(response.content) < 1000
    assert "owner: String should have at most 200 characters" in response.json()["message"]


def test_a_body_not_declared_json_is_415_with_the_fix(client: httpx.Client) -> None:
    response = client.post(
        "/accounts", content=json.dumps(ANA), headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    assert "Content-Type: application/json" in response.json()["message"]
    response = client.post("/accounts", content=json.dumps(ANA))  # no content type at all
    assert response.status_code == 415


def test_malformed_json_says_so(client: httpx.Client) -> None:
    response = client.post(
        "/accounts", content=b'{"owner": "Ana",', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["message"].startswith("body: not valid JSON (")


def test_owner_names_are_1_to_200_characters(client: httpx.Client) -> None:
    assert client.post("/accounts", json={**ANA, "owner": "o" * 200}).status_code == 201
    assert client.post("/accounts", json={**ANA, "owner": "o" * 201}).status_code == 422
    assert client.post("/accounts", json={**ANA, "owner": "  "}).status_code == 422


def test_idempotency_key_replays_the_first_response(
    client: httpx.Client, store: AccountStore
) -> None:
    headers = {"Idempotency-Key": "req-1", "X-Correlation-ID": "c-1"}
    first = client.post("/accounts", json=ANA, headers=headers)
    again = client.post("/accounts", json=ANA, headers={"Idempotency-Key": "req-1"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["X-Correlation-ID"] == "c-1"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert store.counts()["accounts"] == 1 and len(store.pending()) == 1


def test_idempotency_key_with_another_body_is_422(
    client: httpx.Client, store: AccountStore
) -> None:
    assert client.post("/accounts", json=ANA, headers={"Idempotency-Key": "k"}).status_code == 201
    other = client.post("/accounts", json={**ANA, "owner": "Bob"}, headers={"Idempotency-Key": "k"})
    assert other.status_code == 422 and "another request body" in other.json()["message"]
    assert store.counts()["accounts"] == 1


def test_a_key_still_being_processed_is_409(client: httpx.Client, store: AccountStore) -> None:
    """Another instance of the service claimed the key and has not finished."""
    from msgbus.contrib.bank.http_api import _fingerprint

    assert store.claim_key("busy", _fingerprint(NewAccount(**ANA))).state == "new"
    response = client.post("/accounts", json=ANA, headers={"Idempotency-Key": "busy"})
    assert response.status_code == 409 and store.counts()["accounts"] == 0


def test_keys_are_kept_24_hours(store: AccountStore) -> None:
    now = time.time()
    assert store.claim_key("old", "f1", now=now).state == "new"
    store.create_account("Ana", "ana@example.com", idempotency_key="old")
    assert store.claim_key("old", "f2", now=now + IDEMPOTENCY_TTL - 1).state == "mismatch"
    assert store.claim_key("old", "f1", now=now + IDEMPOTENCY_TTL - 1).state == "done"
    assert store.claim_key("old", "f2", now=now + IDEMPOTENCY_TTL + 1).state == "new"


def test_a_claim_abandoned_by_a_dead_request_is_taken_over(store: AccountStore) -> None:
    now = time.time()
    assert store.claim_key("k", "f", now=now).state == "new"
    assert store.claim_key("k", "f", now=now + 1).state == "in_progress"
    assert store.claim_key("k", "f", now=now + ABANDONED_CLAIM + 1).state == "new"
