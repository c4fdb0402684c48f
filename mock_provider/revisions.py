"""Bills re-issued with a new amount after the fact, as real providers do; thread-safe.

A revised bill keeps its line items and gains one ``Revision adjustment`` line for the difference, so
they still add up to the new amount (``SandboxBill.revised``)."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import NamedTuple

from mock_provider.sandbox import SandboxBill


class _Revision(NamedTuple):
    amount: Decimal
    number: int


class Revisions:
    """The latest amount and revision number of every revised bill, keyed by provider and bill id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, str], _Revision] = {}

    def revise(self, provider: str, bill: SandboxBill, amount: Decimal) -> int:
        """Gives the bill a new amount and the next revision number, which it returns."""
        key = (provider, bill.bill_id)
        with self._lock:
            previous = self._latest.get(key, _Revision(bill.amount, bill.revision))
            self._latest[key] = _Revision(amount, previous.number + 1)
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
