"""Deterministic sandbox accounts and bills: the same account always has the same 24 months of bills."""

from __future__ import annotations

import calendar
import hashlib
import os
import re
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

HISTORY_MONTHS = 24
DUE_AFTER_DAYS = 21
# Percent above or below the account's base amount, by the month the bill covers.
SEASONAL_SWING = {1: 20, 2: 20, 7: 20, 8: 20, 12: 20, 4: -10, 5: -10, 10: -10}
# Anomaly accounts carry one planted spike, so anomaly detection has something real to find.
ANOMALY_MONTHS_BACK = 2
ANOMALY_FACTOR = 3
CENT = Decimal("0.01")
# What the username-based sandboxes (SparkGrid, FibreLink) accept as a username.
SANDBOX_USERNAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


@dataclass(frozen=True)
class SandboxBill:
    bill_id: str
    amount: Decimal
    currency: str
    issue_date: date
    due_date: date
    period_start: date
    period_end: date
    status: str  # "paid" | "unpaid" | "overdue"
    revision: int = 1


def seed_of(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _first_of_month(day: date, months_back: int) -> date:
    index = day.year * 12 + (day.month - 1) - months_back
    return date(index // 12, index % 12 + 1, 1)


def monthly_bills(
    account_number: str,
    today: date,
    currency: str = "USD",
    base_range: tuple[int, int] = (25, 90),
    anomaly: bool = False,
) -> list[SandboxBill]:
    """24 monthly bills, newest first. Paid, except the current one (unpaid until due) and, for
    about a third of accounts, last month's, which is left overdue. With ``anomaly`` the bill from
    two months back is three times its usual amount."""
    seed = seed_of(account_number)
    low, high = base_range
    base = Decimal(low + seed % (high - low)) + Decimal(seed % 97) / 100
    leaves_one_overdue = seed % 3 == 0
    bills = []
    for months_back in range(HISTORY_MONTHS):
        issued = _first_of_month(today, months_back)
        if issued > today:
            continue
        period_start = _first_of_month(issued, 1)
        period_end = period_start.replace(day=calendar.monthrange(period_start.year, period_start.month)[1])
        # A seasonal swing of +-20% plus a per-month wobble, all derived from the seed.
        season = Decimal(100 + SEASONAL_SWING.get(period_start.month, 0))
        wobble = Decimal(seed_of(f"{account_number}:{issued.isoformat()}") % 1000) / 100
        amount = (base * season / 100 + wobble).quantize(CENT)
        if anomaly and months_back == ANOMALY_MONTHS_BACK:
            amount = (amount * ANOMALY_FACTOR).quantize(CENT)
        due = issued + timedelta(days=DUE_AFTER_DAYS)
        if due >= today:
            status = "unpaid"
        elif months_back == 1 and leaves_one_overdue:
            status = "overdue"
        else:
            status = "paid"
        bills.append(
            SandboxBill(
                bill_id=f"{account_number}-{issued:%Y%m}",
                amount=amount,
                currency=currency,
                issue_date=issued,
                due_date=due,
                period_start=period_start,
                period_end=period_end,
                status=status,
            )
        )
    return bills


def sandbox_today(pinned: date | None = None) -> date:
    """The sandbox's idea of today: pinned by the server, else ``MOCK_PROVIDER_TODAY``, else the real date."""
    if pinned:
        return pinned
    configured = os.environ.get("MOCK_PROVIDER_TODAY")
    return date.fromisoformat(configured) if configured else date.today()
