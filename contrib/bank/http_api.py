"""The account service's HTTP API (FastAPI): thin handlers over :class:`AccountStore`.

- ``POST /accounts`` ``{"owner": "...", "email": "..."}`` → 201 with the account (and a
  ``Location`` header). The optional request header ``X-Correlation-ID`` is carried to the
  event and on to the mail; without it a new one is made. Either way the response echoes it.
- ``GET /accounts/{id}`` → 200 with the account, or 404.
- ``GET /healthz`` → 200 ``{"status": "ok", "outbox_pending": n}``.

Invalid input (missing field, bad email, unknown field, bad correlation id) → 422 with
``{"error": "invalid request", "message": "<one line per problem>", "detail": [...]}``; nothing
is written and nothing is published.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, EmailStr, Field

from msgbus.contrib.bank.store import AccountStore

__all__ = ["CORRELATION_HEADER", "NewAccount", "create_app"]

CORRELATION_HEADER = "X-Correlation-ID"
"""The request/response header carrying the correlation id (also set on the mail)."""
_CORRELATION_RE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class NewAccount(BaseModel):
    """The body of ``POST /accounts``: an owner name and a syntactically valid email address.

    Surrounding whitespace is stripped; unknown fields are refused; the email is normalized by
    email-validator (no DNS lookup).
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    owner: str = Field(min_length=1, max_length=200, description="the account holder's name")
    email: EmailStr = Field(description="where the confirmation mail goes")


def _describe(errors: list[dict[str, Any]]) -> str:
    lines = []
    for error in errors:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        lines.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(lines)


def _invalid(message: str, detail: Any) -> JSONResponse:
    return JSONResponse(
        status_code=422,
        content={
            "error": "invalid request",
            "message": message,
            "detail": jsonable_encoder(detail),
        },
    )


def create_app(
    store: AccountStore,
    on_created: Callable[[], None] = lambda: None,
    *,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """Build the FastAPI app over ``store``; ``on_created`` runs after each committed account.

    (The account service passes the outbox relay's ``notify`` as ``on_created``, and its
    ``lifespan``, which starts and closes the bus and the relay.)
    """
    app = FastAPI(title="msgbus bank: account service", version="1", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        return _invalid(_describe(errors), errors)

    @app.post("/accounts", status_code=201)
    def create_account(
        body: NewAccount,
        response: Response,
        correlation_id: Annotated[str | None, Header(alias=CORRELATION_HEADER)] = None,
    ) -> Any:
        if correlation_id is None:
            correlation_id = uuid.uuid4().hex
        elif not _CORRELATION_RE.fullmatch(correlation_id):
            message = f"{CORRELATION_HEADER}: must be 1-128 letters, digits, '.', '_', ':' or '-'"
            return _invalid(message, [{"loc": ["header", CORRELATION_HEADER], "msg": message}])
        account, _event = store.create_account(
            body.owner, str(body.email), correlation_id=correlation_id
        )
        on_created()
        response.headers[CORRELATION_HEADER] = correlation_id
        response.headers["Location"] = f"/accounts/{account.id}"
        return account.to_dict()

    @app.get("/accounts/{account_id}")
    def get_account(account_id: int) -> Any:
        account = store.get_account(account_id)
        if account is None:
            raise HTTPException(status_code=404, detail=f"account {account_id} not found")
        return account.to_dict()

    @app.get("/healthz")
    def healthz() -> Any:
        return {"status": "ok", "outbox_pending": store.counts()["pending"]}

    return app
