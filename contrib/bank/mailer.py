"""The confirmation mail: rendering from templates, and sending over SMTP.

Templates live in ``msgbus/contrib/bank/templates/`` (``subject.txt``, ``confirmation.txt``,
``confirmation.html``) and use :class:`string.Template` placeholders: ``$owner``, ``$email``,
``$account_id``, ``$created_at``, ``$bank_name``, ``$correlation_id``. Values are
HTML-escaped in the HTML part.
"""

from __future__ import annotations

import html
from email.message import EmailMessage
from email.utils import formatdate
from functools import cache
from importlib import resources
from string import Template

import aiosmtplib

from msgbus.contrib.bank.events import AccountCreated
from msgbus.contrib.bank.tracing import client_span

__all__ = [
    "CORRELATION_HEADER",
    "DEFAULT_SENDER",
    "EVENT_HEADER",
    "SmtpMailer",
    "parse_hostport",
    "render_confirmation",
]

DEFAULT_SENDER = "msgbus bank <no-reply@bank.example>"
"""The ``From`` of every confirmation mail unless configured."""
CORRELATION_HEADER = "X-Correlation-ID"
"""Mail header carrying the correlation id of the HTTP request that created the account."""
EVENT_HEADER = "X-Event-ID"
"""Mail header carrying the ``event_id`` the mail was sent for."""
BANK_NAME = "msgbus bank"


@cache
def _template(name: str) -> Template:
    text = resources.files("msgbus.contrib.bank").joinpath("templates", name).read_text("utf-8")
    return Template(text)


def render_confirmation(
    event: AccountCreated, *, correlation_id: str | None, sender: str = DEFAULT_SENDER
) -> EmailMessage:
    """Build the plain-text + HTML confirmation mail for ``event``.

    The ``Message-ID`` is derived from ``event_id``, so a mail sent twice for one event (see
    the at-least-once window in docs/bank.md) carries the same id and mail clients that
    deduplicate on it show it once. Raises ``KeyError`` if a template names an unknown field.
    """
    values = {
        "owner": event.owner,
        "email": event.email,
        "account_id": str(event.account_id),
        "created_at": event.created_at,
        "bank_name": BANK_NAME,
        "correlation_id": correlation_id or "-",
    }
    escaped = {name: html.escape(value) for name, value in values.items()}
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = event.email
    mail["Subject"] = _template("subject.txt").substitute(values).strip()
    mail["Date"] = formatdate(localtime=False, usegmt=True)
    mail["Message-ID"] = f"<{event.event_id}.account-created@bank.example>"
    mail[EVENT_HEADER] = event.event_id
    if correlation_id:
        mail[CORRELATION_HEADER] = correlation_id
    mail.set_content(_template("confirmation.txt").substitute(values))
    mail.add_alternative(_template("confirmation.html").substitute(escaped), subtype="html")
    return mail


def parse_hostport(text: str, *, default_port: int = 25) -> tuple[str, int]:
    """``"host:port"`` (or ``"host"``, or ``"[::1]:25"``) → ``(host, port)``; ValueError if bad."""
    host, sep, port_text = text.rpartition(":")
    if not sep or "]" in port_text:
        host, port_text = text, str(default_port)
    host = host.strip("[]")
    if not host:
        raise ValueError(f"no host in {text!r}; expected host:port")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad port in {text!r}; expected host:port") from None
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return host, port


class SmtpMailer:
    """Sends mails with :mod:`aiosmtplib` to ``host:port`` (one connection per mail).

    ``await send(mail)`` returns once the server accepted the mail for every recipient and
    raises ``aiosmtplib.SMTPException`` or ``OSError`` otherwise (including a timeout after
    ``timeout`` seconds). Plain SMTP, as to a local relay or sink (no STARTTLS). Safe for
    concurrent sends (no shared connection). Each send is a ``CLIENT`` span ``smtp send``
    (a child of the current span: the handler's ``process`` span), when OpenTelemetry is on.
    """

    def __init__(self, host: str, port: int, *, timeout: float = 30.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"SmtpMailer({self.host}:{self.port})"

    async def send(self, mail: EmailMessage) -> None:
        """Deliver ``mail`` to the SMTP server (envelope from ``From`` to ``To``)."""
        attributes = {"server.address": self.host, "server.port": self.port}
        with client_span("smtp send", **attributes):
            refused, _reply = await aiosmtplib.send(
                mail, hostname=self.host, port=self.port, timeout=self.timeout, start_tls=False
            )
            if refused:
                raise aiosmtplib.SMTPRecipientsRefused(
                    [
                        aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)
                        for recipient, reply in refused.items()
                    ]
                )
