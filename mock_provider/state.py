"""Everything one sandbox app remembers, kept in ``app.extensions`` so two apps (two tests) never share it."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, cast

from flask import current_app

from mock_provider.control import Control
from mock_provider.revisions import Revisions
from mock_provider.sandbox import Quirk, SandboxBill, monthly_bills, sandbox_today
from mock_provider.tokens import TokenStore

EXTENSION = "mock_provider"


@dataclass(frozen=True)
class SandboxState:
    control: Control
    revisions: Revisions
    tokens: Mapping[str, TokenStore]  # per provider that issues OAuth tokens
    pinned_today: date | Callable[[], date] | None = None

    def today(self) -> date:
        pinned = self.pinned_today
        return sandbox_today(pinned() if callable(pinned) else pinned)

    def bills(
        self,
        provider: str,
        account_number: str,
        *,
        currency: str = "USD",
        base_range: tuple[int, int] = (25, 90),
        quirks: Collection[Quirk] = frozenset(),
    ) -> list[SandboxBill]:
        """The account's 24 generated bills, newest first, with any revisions applied."""
        generated = monthly_bills(account_number, self.today(), currency, base_range, quirks=quirks)
        return self.revisions.apply(provider, generated)

    def revise(self, provider: str, account_number: str, bill_id: str, amount: Decimal) -> int | None:
        """Re-issues one of the account's bills with a new amount; its new revision, or None if no such bill."""
        bill = next((bill for bill in monthly_bills(account_number, self.today()) if bill.bill_id == bill_id), None)
        return None if bill is None else self.revisions.revise(provider, bill, amount)

    def changes(self) -> int:
        """Goes up with every change to what ``snapshot`` holds."""
        return self.revisions.changes + sum(store.changes for store in self.tokens.values())

    def snapshot(self) -> dict[str, Any]:
        """What the sandbox must remember across a restart for its clients' grants and bills to hold:
        the OAuth codes and tokens it issued and the bills it revised. Faults and counters are not in it."""
        return {
            "tokens": {provider: store.snapshot() for provider, store in self.tokens.items()},
            "revisions": self.revisions.snapshot(),
        }

    def restore(self, snapshot: dict[str, Any]) -> dict[str, int]:
        """Takes a ``snapshot`` back; how many tokens (per provider) and revisions it held."""
        restored = {provider: self.tokens[provider].restore(tokens) for provider, tokens in snapshot["tokens"].items()}
        restored["revisions"] = self.revisions.restore(snapshot["revisions"])
        return restored

    def reset(self) -> None:
        self.control.reset()
        self.revisions.clear()
        for store in self.tokens.values():
            store.clear()


def current_state() -> SandboxState:
    return cast(SandboxState, current_app.extensions[EXTENSION])
