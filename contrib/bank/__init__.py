"""The bank example: an account service and an email service that talk over msgbus.

Uses only the public ``msgbus`` API; the broker is chosen by the URL alone. Modules:

- :mod:`.events` — the versioned ``account.created`` schema;
- :mod:`.db`, :mod:`.store`, :mod:`.outbox` — SQLite storage, the transactional outbox and
  its relay; :mod:`.http_api`, :mod:`.http_server`, :mod:`.account_service` — the HTTP side;
- :mod:`.processed`, :mod:`.mailer`, :mod:`.email_service` — idempotent confirmation mails;
- :mod:`.smtp_sink`, :mod:`.demo`, :mod:`.cli` — the local SMTP server, the demo, the
  ``msgbus-bank`` command; :mod:`.testing` — the end-to-end suite every broker reuses.

See docs/bank.md.
"""
