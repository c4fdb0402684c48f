"""Deterministic sandbox accounts and bills: the same account always has the same 24 months of bills.

Every bill is itemised (standing charge, usage, sometimes a network charge, sometimes tax) and, unless a
quirk says otherwise, its line items add up exactly to its amount. Quirks plant the data-quality
problems a real bill history has, so the service's insights have something real to flag.
"""

from __future__ import annotations

import calendar
import hashlib
import os
import re
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

HISTORY_MONTHS = 24
DUE_AFTER_DAYS = 21
# Percent above or below the account's base amount, by the month the bill covers.
SEASONAL_SWING = {1: 20, 2: 20, 7: 20, 8: 20, 12: 20, 4: -10, 5: -10, 10: -10}
CENT = Decimal("0.01")
# What the username-based sandboxes (SparkGrid, FibreLink) accept as a username.
SANDBOX_USERNAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


class Quirk(StrEnum):
    """A data-quality problem planted in an account's bills. Quirks touch different bills, so they combine."""

    ANOMALY = "anomaly"  # one bill is a spike
    MISMATCH = "mismatch"  # one bill's line items do not add up to its amount
    CREDIT = "credit"  # one bill is a credit note with a negative amount
    CURRENCY_CHANGE = "currency_change"  # the older bills are in another currency


# ANOMALY: the bill from two months back is three times its usual amount (rounded to the cent).
ANOMALY_MONTHS_BACK = 2
ANOMALY_FACTOR = 3
# MISMATCH: the bill from three months back lacks its standing-charge line, so its line items come to
# its amount minus the standing charge.
MISMATCH_MONTHS_BACK = 3
# CREDIT: the bill from four months back is a paid credit note for minus its usual amount.
CREDIT_MONTHS_BACK = 4
# CURRENCY_CHANGE: bills from more than six months back are in the account's previous currency (EUR for
# an account now billed in GBP, CAD for any other), same amounts.
CURRENCY_CHANGE_MONTHS_BACK = 6
PREVIOUS_CURRENCY = {"GBP": "EUR"}
DEFAULT_PREVIOUS_CURRENCY = "CAD"
# The username-based sandboxes (SparkGrid, FibreLink) plant a quirk for each of these words in a username.
USERNAME_MARKS = {
    "anomaly": Quirk.ANOMALY,
    "mismatch": Quirk.MISMATCH,
    "credit": Quirk.CREDIT,
    "moved": Quirk.CURRENCY_CHANGE,
}
# Tax rates (percent, included in the amount) an account can be charged; 0 means no tax line.
TAX_RATES = (0, 5, 7, 8)
# The line a revised bill gains so its line items still come to the new amount (revisions.py).
REVISION_ADJUSTMENT = "Revision adjustment"


@dataclass(frozen=True)
class SandboxLineItem:
    description: str
    amount: Decimal  # at the cent; negative for a credit


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
    line_items: tuple[SandboxLineItem, ...] = ()

    def revised(self, amount: Decimal, revision: int) -> SandboxBill:
        """The bill re-issued with a new amount: its line items are kept and, when the amount changed,
        one ``Revision adjustment`` line of (new amount - original amount) is added, so they come to the
        new amount exactly (a mismatch bill keeps its shortfall). Always applied to the generated bill."""
        change = amount - self.amount
        lines = self.line_items + ((SandboxLineItem(REVISION_ADJUSTMENT, change),) if change else ())
        return replace(self, amount=amount, revision=revision, line_items=lines)


def quirks_in_username(username: str) -> frozenset[Quirk]:
    """``"moved_credit_kim"`` has CURRENCY_CHANGE and CREDIT; ``"ann"`` has none."""
    return frozenset(quirk for mark, quirk in USERNAME_MARKS.items() if mark in username)


def seed_of(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _first_of_month(day: date, months_back: int) -> date:
    index = day.year * 12 + (day.month - 1) - months_back
    return date(index // 12, index % 12 + 1, 1)


def previous_currency(currency: str) -> str:
    """The currency a CURRENCY_CHANGE account was billed in before it moved."""
    return PREVIOUS_CURRENCY.get(currency, DEFAULT_PREVIOUS_CURRENCY)


def _cents(value: int) -> Decimal:
    return Decimal(value) / 100


def _line(description: str, amount: Decimal) -> SandboxLineItem:
    return SandboxLineItem(description, amount.quantize(CENT))


def standing_charge(account_number: str) -> Decimal:
    """The account's monthly standing charge, 5.00 to 12.99: the line a MISMATCH bill is missing."""
    seed = seed_of(f"{account_number}:lines")
    return (Decimal(5 + seed % 8) + _cents(seed // 8 % 100)).quantize(CENT)


def _itemised(account_number: str, issued: date, amount: Decimal) -> tuple[SandboxLineItem, ...]:
    """2 to 4 lines that add up to ``amount`` exactly: the standing charge, usage (the rest), a network
    charge on about a third of the bills and, for accounts that pay it, tax included at the account's
    rate. Every line is positive for any amount the generator makes (22.50 and up)."""
    account_seed = seed_of(f"{account_number}:lines")
    bill_seed = seed_of(f"{account_number}:{issued.isoformat()}:lines")
    standing = standing_charge(account_number)
    network = Decimal(2 + bill_seed // 3 % 4) + _cents(bill_seed // 12 % 100) if bill_seed % 3 == 0 else None
    rate = TAX_RATES[account_seed // 800 % len(TAX_RATES)]
    tax = (amount * rate / (100 + rate)).quantize(CENT) if rate else None
    usage = amount - standing - (network or 0) - (tax or 0)
    lines = [_line("Standing charge", standing), _line("Usage", usage)]
    if network is not None:
        lines.append(_line("Network charge", network))
    if tax is not None:
        lines.append(_line(f"Tax at {rate}%", tax))
    return tuple(lines)


def _credit_note(account_number: str, amount: Decimal) -> tuple[SandboxLineItem, ...]:
    """A refund and a goodwill credit (5 to 10) that add up to the (negative) ``amount``."""
    goodwill = Decimal(5 + seed_of(f"{account_number}:credit") % 6)
    return (
        _line("Refund of overcharge", amount + goodwill),
        _line("Goodwill credit", -goodwill),
    )


def monthly_bills(
    account_number: str,
    today: date,
    currency: str = "USD",
    base_range: tuple[int, int] = (25, 90),
    *,
    quirks: Collection[Quirk] = frozenset(),
) -> list[SandboxBill]:
    """24 monthly bills, newest first, each itemised so its line items add up to its amount. Paid,
    except the current one (unpaid until due) and, for about a third of accounts, last month's, which
    is left overdue. ``quirks`` plant problems in particular bills (counting months back from the
    current bill, 0):

    - ``ANOMALY``: the bill 2 months back is 3 times its usual amount, rounded to the cent; its lines
      are itemised from that amount, so they still add up.
    - ``MISMATCH``: the bill 3 months back lacks its "Standing charge" line, so its line items come
      to its amount minus ``standing_charge(account_number)``.
    - ``CREDIT``: the bill 4 months back is a paid credit note for minus its usual amount, with the
      lines "Refund of overcharge" and "Goodwill credit" adding up to it.
    - ``CURRENCY_CHANGE``: the bills more than 6 months back are in ``previous_currency(currency)``.

    Without quirks every amount, date and status is what it always was: quirks change only their bills.
    """
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
        if Quirk.ANOMALY in quirks and months_back == ANOMALY_MONTHS_BACK:
            amount = (amount * ANOMALY_FACTOR).quantize(CENT)
        due = issued + timedelta(days=DUE_AFTER_DAYS)
        if due >= today:
            status = "unpaid"
        elif months_back == 1 and leaves_one_overdue:
            status = "overdue"
        else:
            status = "paid"
        if Quirk.CREDIT in quirks and months_back == CREDIT_MONTHS_BACK:
            amount, status = -amount, "paid"
            line_items = _credit_note(account_number, amount)
        else:
            line_items = _itemised(account_number, issued, amount)
        if Quirk.MISMATCH in quirks and months_back == MISMATCH_MONTHS_BACK:
            line_items = tuple(line for line in line_items if line.description != "Standing charge")
        moved = Quirk.CURRENCY_CHANGE in quirks and months_back > CURRENCY_CHANGE_MONTHS_BACK
        bills.append(
            SandboxBill(
                bill_id=f"{account_number}-{issued:%Y%m}",
                amount=amount,
                currency=previous_currency(currency) if moved else currency,
                issue_date=issued,
                due_date=due,
                period_start=period_start,
                period_end=period_end,
                status=status,
                line_items=line_items,
            )
        )
    return bills


def sandbox_today(pinned: date | None = None) -> date:
    """The sandbox's idea of today: pinned by the server, else ``MOCK_PROVIDER_TODAY``, else today in UTC,
    the service's time zone (the machine's local date would disagree with it around midnight)."""
    if pinned:
        return pinned
    configured = os.environ.get("MOCK_PROVIDER_TODAY")
    return date.fromisoformat(configured) if configured else datetime.now(UTC).date()
