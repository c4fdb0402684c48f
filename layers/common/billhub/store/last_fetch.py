"""What a fetch's save goes by of its account, and the record that lets a fetch which read exactly what
the last one did skip reading the account's bills.

``last_fetch`` on the account item names the last fetch whose save completed: the ``bills_version`` it
left, the oldest issue date among the bills then held, and a digest of the bills it read. A fetch that
reads the same bills at that same version would change nothing: each bill held is that statement, or a
later revision or read (every bill's ``fetched_at`` is at most ``last_success_at``, which only a save
moves forward); so unless the retention now prunes a bill, a save has nothing to write but the account.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from billhub.models import Account, Bill
from billhub.store.base import _iso


def digest_of(latest: Sequence[Bill]) -> str:
    """The bills' digest, whatever order the provider listed them in (their latest revisions)."""
    canonical = sorted((bill.model_dump(mode="json") for bill in latest), key=lambda bill: bill["provider_bill_id"])
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def last_fetch_of(bills_version: int, held: Sequence[Bill], latest: Sequence[Bill]) -> str:
    """``last_fetch`` for a save that leaves ``held`` at ``bills_version``, having read ``latest``."""
    oldest = min((bill.issued_on for bill in held), default=None)
    return f"{bills_version}/{oldest.isoformat() if oldest else ''}/{digest_of(latest)}"


@dataclass(frozen=True)
class AccountAsRead:
    """What a save goes by of its account; ``last_attempt_at`` and ``last_fetch`` as stored, which
    conditions compare."""

    bills_version: int
    last_success_at: datetime | None
    last_attempt_at: str | None
    last_fetch: str | None

    @classmethod
    def of_item(cls, item: dict[str, Any]) -> AccountAsRead:
        success, attempt = item.get("last_success_at"), item.get("last_attempt_at")
        return cls(
            int(item.get("bills_version", 0)),
            datetime.fromisoformat(str(success)) if success is not None else None,
            str(attempt) if attempt is not None else None,
            str(item["last_fetch"]) if item.get("last_fetch") is not None else None,
        )

    @classmethod
    def of_account(cls, account: Account, bills_version: int, last_fetch: str | None) -> AccountAsRead:
        # Stored as ``_iso`` writes it, which the parsed time's isoformat gives back.
        return cls(bills_version, account.last_success_at, _iso(account.last_attempt_at), last_fetch)

    def saved_in_full(self, latest: Sequence[Bill], cutoff: date) -> bool:
        """Whether the last fetch saved read exactly ``latest`` at this version, and the retention
        (``cutoff``) prunes none of the bills then held: then a save of ``latest`` writes no bill."""
        if self.last_fetch is None:
            return False
        version, oldest, digest = self.last_fetch.split("/", 2)
        return (
            int(version) == self.bills_version
            and (not oldest or date.fromisoformat(oldest) >= cutoff)
            and digest == digest_of(latest)
        )
