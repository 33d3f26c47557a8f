"""The account service's HTTP API (FastAPI): thin handlers over :class:`AccountStore`.

- ``POST /accounts`` ``{"owner": "...", "email": "..."}`` (``Content-Type:
  application/json``, at most :data:`MAX_BODY_BYTES`) → 201 with the account (and a
  ``Location`` header). The optional request header ``X-Correlation-ID`` is carried to the
  event and on to the mail; without it a new one is made. Either way the response echoes it.
  The optional header ``Idempotency-Key`` (1–255 visible ASCII characters) makes a retry
  safe: the same key with the same body returns the first response (with
  ``Idempotent-Replayed: true``) and creates nothing; the same key with another body is 422;
  a key whose first request is still being processed is 409. Keys are kept 24 hours.
- ``GET /accounts/{id}`` → 200 with the account, or 404 (also for ids no account can have).
- ``GET /healthz`` → 200 ``{"status": "ok", "outbox_pending": n}`` (liveness).
- ``GET /readyz`` (added by the account service): see :mod:`msgbus.contrib.bank.probes`.

Errors are ``{"error": "...", "message": "<one line per problem>", "detail": [...]}``:
invalid input (missing field, bad email, unknown field, bad header, malformed JSON) → 422,
a body that is not declared JSON → 415, a body over :data:`MAX_BODY_BYTES` → 413 (refused
from its ``Content-Length``, or as soon as that many bytes arrived, never read whole). No
error repeats more than :data:`EXCERPT_CHARS` characters of the input. Nothing is written
and nothing is published on an error.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, EmailStr, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from msgbus.contrib.bank.store import AccountStore
from msgbus.contrib.bank.tracing import capture, instrument_app

__all__ = [
    "CORRELATION_HEADER",
    "EXCERPT_CHARS",
    "IDEMPOTENCY_HEADER",
    "MAX_BODY_BYTES",
    "MAX_OWNER_CHARS",
    "NewAccount",
    "create_app",
]

CORRELATION_HEADER = "X-Correlation-ID"
"""The request/response header carrying the correlation id (also set on the mail)."""
IDEMPOTENCY_HEADER = "Idempotency-Key"
"""The request header that makes ``POST /accounts`` safe to retry."""
MAX_BODY_BYTES = 16 * 1024
"""The largest request body accepted; larger ones get 413."""
MAX_OWNER_CHARS = 200
"""An owner name is 1 to this many characters (after stripping whitespace)."""
EXCERPT_CHARS = 64
"""The most characters of the client's input an error reply repeats."""
_CORRELATION_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_IDEMPOTENCY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
_MAX_ID = 2**63 - 1  # SQLite's largest integer: no account has a larger id
_JSON_TYPE = re.compile(r"application/([a-z0-9.+\-]+\+)?json\s*(;.*)?$", re.IGNORECASE)


class NewAccount(BaseModel):
    """The body of ``POST /accounts``: an owner name and a syntactically valid email address.

    Surrounding whitespace is stripped; unknown fields are refused; the email is normalized by
    email-validator (no DNS lookup).
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    owner: str = Field(
        min_length=1,
        max_length=MAX_OWNER_CHARS,
        pattern=r"\S",  # after stripping: not blank
        description="the account holder's name (1-200 characters, not blank)",
    )
    email: EmailStr = Field(description="where the confirmation mail goes")


class AccountOut(BaseModel):
    """An account as the API returns it."""

    id: int
    owner: str
    email: str
    created_at: str


class ErrorOut(BaseModel):
    """Every error reply but 404: a kind, one line for people, and the details."""

    error: str
    message: str
    detail: list[Any] = Field(default_factory=list)


class NotFoundOut(BaseModel):
    """The 404 reply."""

    detail: str


class HealthOut(BaseModel):
    """``GET /healthz``."""

    status: str
    outbox_pending: int


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """``value`` as text, cut to ``limit`` characters (with ``…`` when cut)."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(errors: list[dict[str, Any]]) -> str:
    lines = []
    for error in errors:
        if error.get("type") == "json_invalid":
            position = error.get("loc", ("body", "?"))[-1]
            reason = (error.get("ctx") or {}).get("error", "invalid JSON")
            lines.append(f"body: not valid JSON ({reason} at character {position})")
            continue
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        lines.append(f"{where or 'body'}: {excerpt(error.get('msg', 'invalid'), 200)}")
    return "; ".join(lines)


def _short_detail(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's error list without anything long from the input."""
    out = []
    for error in errors:
        item = {k: v for k, v in error.items() if k in ("type", "loc", "msg")}
        item["loc"] = [
            excerpt(part, 32) if isinstance(part, str) else part for part in item.get("loc", ())
        ]
        if "input" in error:
            item["input"] = excerpt(error["input"])
        out.append(item)
    return out


def _error(status: int, kind: str, message: str, detail: Any = ()) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"error": kind, "message": message, "detail": jsonable_encoder(list(detail))},
    )


def _invalid(message: str, detail: Any) -> JSONResponse:
    return _error(422, "invalid request", message, detail)


class BodyLimit:
    """ASGI middleware: request bodies over ``limit`` bytes get 413 without being read whole
    (at once from ``Content-Length``, else as soon as that many bytes arrived), and a body
    sent to one of ``json_routes`` (method, path) must be declared JSON (415 otherwise)."""

    def __init__(
        self,
        app: Any,
        limit: int = MAX_BODY_BYTES,
        json_routes: frozenset[tuple[str, str]] = frozenset({("POST", "/accounts")}),
    ) -> None:
        self.app = app
        self.limit = limit
        self.json_routes = json_routes

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            await self._reply(scope, receive, send, self._too_large())
            return
        json_route = (scope["method"], scope["path"]) in self.json_routes
        if json_route and not _JSON_TYPE.match(headers.get("content-type", "").strip()):
            shown = excerpt(headers.get("content-type", "none"), 40)
            await self._reply(
                scope,
                receive,
                send,
                _error(
                    415,
                    "unsupported media type",
                    f"send the body as JSON with 'Content-Type: application/json' "
                    f"(got Content-Type {shown!r})",
                ),
            )
            return
        seen = 0
        refused = False

        async def limited_receive() -> MutableMapping[str, Any]:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # answer now; the app sees a client that went away
                    refused = True
                    await self._reply(scope, receive, send, self._too_large())
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: MutableMapping[str, Any]) -> None:
            if not refused:  # after a 413 whatever the app says goes nowhere
                await send(message)

        await self.app(scope, limited_receive, guarded_send)

    def _too_large(self) -> JSONResponse:
        return _error(
            413,
            "request too large",
            f"the request body is limited to {self.limit} bytes",
        )

    @staticmethod
    async def _reply(
        scope: MutableMapping[str, Any], receive: Any, send: Any, response: JSONResponse
    ) -> None:
        response.headers["Connection"] = "close"  # the unread body must not be parsed as a request
        await response(scope, receive, send)


def _fingerprint(body: NewAccount) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorOut, "description": f"the body is over {MAX_BODY_BYTES} bytes"},
    415: {"model": ErrorOut, "description": "the body is not declared as JSON"},
    422: {"model": ErrorOut, "description": "invalid input; nothing was written"},
}


def create_app(
    store: AccountStore,
    on_created: Callable[[], None] = lambda: None,
    *,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """Build the FastAPI app over ``store``; ``on_created`` runs after each committed account.

    (The account service passes the outbox relay's ``notify`` as ``on_created``, and its
    ``lifespan``, which starts and closes the bus and the relay.) With
    ``opentelemetry-instrumentation-fastapi`` installed, requests are traced (see
    :mod:`msgbus.contrib.bank.tracing`).
    """
    app = FastAPI(title="msgbus bank: account service", version="1", lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)

    @app.exception_handler(RequestValidationError)
    async def validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        return _invalid(_describe(errors), _short_detail(errors))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:  # FastAPI could not decode the body (not UTF-8 JSON)
            message = "body: not valid JSON (it could not be decoded as UTF-8 JSON text)"
            return _invalid(message, [{"loc": ["body"], "msg": message}])
        return await http_exception_handler(request, exc)

    def reply(account_id: int, correlation_id: str | None, status: int, **extra: str) -> Any:
        account = store.get_account(account_id)
        assert account is not None
        headers = {"Location": f"/accounts/{account.id}", **extra}
        if correlation_id is not None:
            headers[CORRELATION_HEADER] = correlation_id
        return JSONResponse(status_code=status, content=account.to_dict(), headers=headers)

    @app.post(
        "/accounts",
        status_code=201,
        response_model=AccountOut,
        responses={
            409: {"model": ErrorOut, "description": "the Idempotency-Key is in use"},
            **_ERRORS,
        },
    )
    def create_account(
        body: NewAccount,
        correlation_id: Annotated[
            str | None, Header(alias=CORRELATION_HEADER, pattern=_CORRELATION_RE.pattern)
        ] = None,
        idempotency_key: Annotated[
            str | None, Header(alias=IDEMPOTENCY_HEADER, pattern=_IDEMPOTENCY_RE.pattern)
        ] = None,
    ) -> Any:
        if correlation_id is None:
            correlation_id = uuid.uuid4().hex
        elif not _CORRELATION_RE.fullmatch(correlation_id):
            message = f"{CORRELATION_HEADER}: must be 1-128 letters, digits, '.', '_', ':' or '-'"
            return _invalid(message, [{"loc": ["header", CORRELATION_HEADER], "msg": message}])
        if idempotency_key is not None:
            if not _IDEMPOTENCY_RE.fullmatch(idempotency_key):
                message = f"{IDEMPOTENCY_HEADER}: must be 1-255 visible ASCII characters"
                return _invalid(message, [{"loc": ["header", IDEMPOTENCY_HEADER], "msg": message}])
            claim = store.claim_key(idempotency_key, _fingerprint(body))
            if claim.state == "mismatch":
                message = f"{IDEMPOTENCY_HEADER} was already used with another request body"
                return _invalid(message, [{"loc": ["header", IDEMPOTENCY_HEADER], "msg": message}])
            if claim.state == "in_progress":
                return _error(
                    409,
                    "request in progress",
                    f"a request with this {IDEMPOTENCY_HEADER} is still being processed; "
                    "retry later",
                )
            if claim.state == "done":
                assert claim.account_id is not None
                return reply(
                    claim.account_id, claim.correlation_id, 201, **{"Idempotent-Replayed": "true"}
                )
        try:
            account, _event = store.create_account(
                body.owner,
                str(body.email),
                correlation_id=correlation_id,
                idempotency_key=idempotency_key,
                trace_context=capture(),  # the relay's publish continues this request's trace
            )
        except BaseException:
            if idempotency_key is not None:
                store.release_key(idempotency_key)
            raise
        on_created()
        return JSONResponse(
            status_code=201,
            content=account.to_dict(),
            headers={"Location": f"/accounts/{account.id}", CORRELATION_HEADER: correlation_id},
        )

    @app.get(
        "/accounts/{account_id}",
        response_model=AccountOut,
        responses={404: {"model": NotFoundOut}, 422: _ERRORS[422]},
    )
    def get_account(account_id: int) -> Any:
        account = store.get_account(account_id) if 0 < account_id <= _MAX_ID else None
        if account is None:
            return JSONResponse(
                status_code=404, content={"detail": f"account {excerpt(str(account_id))} not found"}
            )
        return account.to_dict()

    @app.get("/healthz", response_model=HealthOut)
    def healthz() -> Any:
        return {"status": "ok", "outbox_pending": store.counts()["pending"]}

    return instrument_app(app)
