"""The bank example end to end on the memory backend (the suite every broker reuses)."""

from __future__ import annotations

from msgbus.contrib.bank.testing import BankEndToEnd


class TestBankOnMemory(BankEndToEnd):
    """Every end-to-end test on a fresh named memory broker (``bank_url``'s default)."""

    accounts = 30
