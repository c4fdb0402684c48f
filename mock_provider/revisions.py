"""Bills re-issued with a new amount after the fact, as real providers do; thread-safe.

A revised bill keeps its line items and gains one ``Revision adjustment`` line for the difference, so
they still add up to the new amount (``SandboxBill.revised``)."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any, NamedTuple

from mock_provider.sandbox import SandboxBill


class _Revision(NamedTuple):
    amount: Decimal
    number: int


class Revisions:
    """The latest amount and revision number of every revised bill, keyed by provider and bill id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, str], _Revision] = {}
        self.changes = 0  # counts every change, so whoever keeps revisions on disk knows when to write

    def snapshot(self) -> list[dict[str, Any]]:
        """Every revision as JSON-ready data (``restore`` takes it back)."""
        with self._lock:
            return [
                {"provider": provider, "bill_id": bill_id, "amount": str(revision.amount), "number": revision.number}
                for (provider, bill_id), revision in self._latest.items()
            ]

    def restore(self, snapshot: list[dict[str, Any]]) -> int:
        latest = {
            (str(entry["provider"]), str(entry["bill_id"])): _Revision(Decimal(entry["amount"]), int(entry["number"]))
            for entry in snapshot
        }
        with self._lock:
            self._latest = latest
            self.changes += 1
            return len(latest)

    def revise(self, provider: str, bill: SandboxBill, amount: Decimal) -> int:
        """Gives the bill a new amount and the next revision number, which it returns."""
        key = (provider, bill.bill_id)
        with self._lock:
            previous = self._latest.get(key, _Revision(bill.amount, bill.revision))
            self._latest[key] = _Revision(amount, previous.number + 1)
            self.changes += 1
            return previous.number + 1

    def apply(self, provider: str, bills: list[SandboxBill]) -> list[SandboxBill]:
        with self._lock:
            latest = [self._latest.get((provider, bill.bill_id)) for bill in bills]
        return [
            bill if revision is None else bill.revised(revision.amount, revision.number)
            for bill, revision in zip(bills, latest, strict=True)
        ]

    def clear(self) -> None:
        with self._lock:
            self._latest.clear()
            self.changes += 1
