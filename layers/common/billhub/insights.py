"""Spending insights: spend per month, category and provider, trends, a forecast, unusual bills and
data-quality flags, from a user's accounts and bills. Pure domain: no I/O, no environment.

Rules (see docs/decisions.md):
- A bill belongs to the calendar month of its ``issued_on``. The window is the ``months`` calendar
  months ending with the current one, which is partial.
- Every figure is per currency; amounts in different currencies are never added together.
- Bills up to ``HISTORY_MONTHS`` before the window are the history that unusual bills and the
  forecast are judged against; they are not reported themselves.
- Accounts being deleted, and their bills, are invisible.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from billhub.models import Account, AccountStatus, Bill, Category
from billhub.money import format_amount, totals_by_currency

# An unusual bill is judged against up to this many previous bills of its account, and needs at least
# ``MIN_HISTORY_BILLS`` of them.
HISTORY_BILLS = 6
MIN_HISTORY_BILLS = 3
# How far before the window bills are read for that history (monthly bills: six months, six bills).
HISTORY_MONTHS = 6
# The most months ``GET /insights`` covers: its bills reach back ``MAX_INSIGHT_MONTHS - 1 + HISTORY_MONTHS``
# months before the current one, well within the bills kept (``models.BILL_RETENTION_MONTHS``).
MAX_INSIGHT_MONTHS = 36
# The forecast is the mean of this many complete months.
FORECAST_MONTHS = 3
FORECAST_METHOD = (
    f"Per currency, the mean of the last {FORECAST_MONTHS} complete months' totals, "
    "counted from the first of them with a bill in that currency."
)

_HUNDREDTH = Decimal("0.01")

Amounts = dict[str, str]
"""Decimal strings at each currency's minor units, by ISO 4217 currency code."""


# ------------------------------------------------------------------ response models
class _InsightsModel(BaseModel):
    # Built at the first GET /insights, not at every cold start of the function, which serves GET /bills too.
    model_config = ConfigDict(defer_build=True)


class Change(_InsightsModel):
    """A month's total against the month before, in one currency."""

    amount: str = Field(description="This month's total minus last month's, in the currency")
    percent: str | None = Field(
        description="The change as a percentage of last month's total (2 decimals); null when last "
        "month had nothing in this currency"
    )


class MonthlySpend(_InsightsModel):
    month: str = Field(description="YYYY-MM; bills count in the month they were issued")
    partial: bool = Field(description="True for the current month, which is not over yet")
    bill_count: int
    total: Amounts
    by_category: dict[str, Amounts]
    by_provider: dict[str, Amounts]
    change: dict[str, Change] = Field(description="Against the previous calendar month, per currency")


class Forecast(_InsightsModel):
    month: str = Field(description="YYYY-MM, the month after the current one")
    total: Amounts
    method: str


class UnusualBill(_InsightsModel):
    bill_id: str
    account_id: str
    provider: str
    category: Category
    issued_on: date
    amount: str
    currency: str
    expected: str = Field(description="The median of the account's previous bills in this currency")
    ratio: str = Field(description="amount / expected, 2 decimals")


DataQualityKind = Literal["line_items_mismatch", "negative_amount", "currency_changed"]


class DataQualityFlag(_InsightsModel):
    kind: DataQualityKind
    account_id: str
    provider: str
    bill_id: str | None = None
    message: str
    details: dict[str, str]


class Insights(_InsightsModel):
    months: int
    from_month: str = Field(serialization_alias="from", description="YYYY-MM, the window's first month")
    to_month: str = Field(serialization_alias="to", description="YYYY-MM, the current month")
    as_of: date
    monthly: list[MonthlySpend] = Field(description="Every month of the window, oldest first")
    trailing_average: Amounts = Field(
        description="Per currency, the mean monthly total over the window's complete months, from the "
        "first month with a bill in that currency"
    )
    forecast: Forecast
    unusual_threshold: str = Field(description="A bill above this many times its expected amount is unusual")
    unusual_bills: list[UnusualBill] = Field(description="Newest first")
    data_quality: list[DataQualityFlag]


# ------------------------------------------------------------------ calendar months
@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def of(cls, day: date) -> Month:
        return cls(day.year, day.month)

    def plus(self, months: int) -> Month:
        index = self.year * 12 + self.month - 1 + months
        return Month(index // 12, index % 12 + 1)

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


def window_months(today: date, months: int) -> list[Month]:
    """The ``months`` calendar months ending with the current one, oldest first."""
    current = Month.of(today)
    return [current.plus(offset) for offset in range(1 - months, 1)]


def history_start(today: date, months: int) -> date:
    """The first issue date the insights need: ``HISTORY_MONTHS`` before the window (and never fewer
    than the forecast's complete months before the current one)."""
    back = max(months - 1 + HISTORY_MONTHS, FORECAST_MONTHS)
    return Month.of(today).plus(-back).first_day


# ------------------------------------------------------------------ the insights
def spending_insights(
    accounts: Iterable[Account],
    bills: Iterable[Bill],
    today: date,
    months: int,
    unusual_threshold: Decimal,
) -> Insights:
    """Insights over the ``months`` calendar months ending with ``today``'s; ``bills`` should reach back
    to ``history_start(today, months)``; earlier ones, and any issued after the current month, are ignored."""
    if months < 1:
        raise ValueError("months must be at least 1")
    visible = {account.account_id for account in accounts if account.status is not AccountStatus.DELETING}
    window = window_months(today, months)
    current = window[-1]
    since = history_start(today, months)
    known = sorted(
        (
            bill
            for bill in bills
            if bill.account_id in visible and bill.issued_on >= since and Month.of(bill.issued_on) <= current
        ),
        key=lambda bill: (bill.issued_on, bill.bill_id),
    )
    issued_in: dict[Month, list[Bill]] = defaultdict(list)
    for bill in known:
        issued_in[Month.of(bill.issued_on)].append(bill)
    totals = _monthly_totals(known)
    return Insights(
        months=months,
        from_month=str(window[0]),
        to_month=str(current),
        as_of=today,
        monthly=[_monthly_spend(month, issued_in[month], totals, current) for month in window],
        trailing_average=_mean_per_currency([month for month in window if month < current], totals),
        forecast=Forecast(
            month=str(current.plus(1)),
            total=_mean_per_currency([current.plus(-back) for back in range(FORECAST_MONTHS, 0, -1)], totals),
            method=FORECAST_METHOD,
        ),
        unusual_threshold=str(unusual_threshold),
        unusual_bills=_unusual_bills(known, window[0], unusual_threshold),
        data_quality=_data_quality(known, window[0]),
    )


def _monthly_totals(bills: Iterable[Bill]) -> dict[Month, dict[str, Decimal]]:
    """Exact (unrounded) totals per month and currency."""
    totals: dict[Month, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for bill in bills:
        totals[Month.of(bill.issued_on)][bill.currency] += bill.amount
    return totals


def _monthly_spend(
    month: Month, of_month: Sequence[Bill], totals: dict[Month, dict[str, Decimal]], current: Month
) -> MonthlySpend:
    by_category: dict[str, list[tuple[Decimal, str]]] = defaultdict(list)
    by_provider: dict[str, list[tuple[Decimal, str]]] = defaultdict(list)
    for bill in of_month:
        by_category[bill.category.value].append((bill.amount, bill.currency))
        by_provider[bill.provider].append((bill.amount, bill.currency))
    return MonthlySpend(
        month=str(month),
        partial=month == current,
        bill_count=len(of_month),
        total=totals_by_currency((bill.amount, bill.currency) for bill in of_month),
        by_category={name: totals_by_currency(amounts) for name, amounts in sorted(by_category.items())},
        by_provider={name: totals_by_currency(amounts) for name, amounts in sorted(by_provider.items())},
        change=_change(totals.get(month, {}), totals.get(month.plus(-1), {})),
    )


def _change(this_month: dict[str, Decimal], last_month: dict[str, Decimal]) -> dict[str, Change]:
    changes = {}
    for currency in sorted(set(this_month) | set(last_month)):
        now, before = this_month.get(currency, Decimal(0)), last_month.get(currency, Decimal(0))
        changes[currency] = Change(
            amount=format_amount(now - before, currency),
            # Against a negative month (credits only) the change is still signed as the amount is.
            percent=None if before == 0 else _two_places((now - before) / abs(before) * 100),
        )
    return changes


def _mean_per_currency(months: Sequence[Month], totals: dict[Month, dict[str, Decimal]]) -> Amounts:
    """Per currency, the mean of the months' totals from the first of them with a bill in that currency
    (months without one after that count as nothing spent)."""
    means = {}
    currencies = {currency for month in months for currency in totals.get(month, {})}
    for currency in sorted(currencies):
        first = next(index for index, month in enumerate(months) if currency in totals.get(month, {}))
        counted = months[first:]
        spent = sum((totals.get(month, {}).get(currency, Decimal(0)) for month in counted), Decimal(0))
        means[currency] = format_amount(spent / len(counted), currency)
    return means


def _unusual_bills(bills: Sequence[Bill], first_month: Month, threshold: Decimal) -> list[UnusualBill]:
    """Bills issued in the window above ``threshold`` times the median of their account's previous
    ``HISTORY_BILLS`` bills in the same currency (at least ``MIN_HISTORY_BILLS`` of them)."""
    unusual = []
    for account_bills in _by_account(bills).values():
        for index, bill in enumerate(account_bills):
            if Month.of(bill.issued_on) < first_month:
                continue
            previous = [earlier.amount for earlier in account_bills[:index] if earlier.currency == bill.currency]
            history = previous[-HISTORY_BILLS:]
            if len(history) < MIN_HISTORY_BILLS:
                continue
            expected = statistics.median(history)
            if expected <= 0 or bill.amount <= threshold * expected:
                continue
            unusual.append(
                UnusualBill(
                    bill_id=bill.bill_id,
                    account_id=bill.account_id,
                    provider=bill.provider,
                    category=bill.category,
                    issued_on=bill.issued_on,
                    amount=format_amount(bill.amount, bill.currency),
                    currency=bill.currency,
                    expected=format_amount(expected, bill.currency),
                    ratio=_two_places(bill.amount / expected),
                )
            )
    return sorted(unusual, key=lambda found: (found.issued_on, found.bill_id), reverse=True)


def _data_quality(bills: Sequence[Bill], first_month: Month) -> list[DataQualityFlag]:
    """What looks wrong in the bills issued in the window: line items that do not add up, negative
    amounts, and (once per account, its latest) a switch of currency from the bill before."""
    flags = []
    for account_bills in _by_account(bills).values():
        switch: tuple[Bill, Bill] | None = None
        for previous, bill in zip([None, *account_bills], account_bills, strict=False):
            if Month.of(bill.issued_on) < first_month:
                continue
            flags += _bill_flags(bill)
            if previous is not None and previous.currency != bill.currency:
                switch = (previous, bill)
        if switch is not None:
            flags.append(_currency_changed(*switch))
    return sorted(flags, key=lambda flag: (flag.provider, flag.account_id, flag.bill_id or "", flag.kind))


def _bill_flags(bill: Bill) -> list[DataQualityFlag]:
    flags = []
    amount = format_amount(bill.amount, bill.currency)
    if bill.line_items:
        itemised = sum((item.amount for item in bill.line_items), Decimal(0))
        if itemised != bill.amount:
            listed = format_amount(itemised, bill.currency)
            flags.append(
                _flag(
                    "line_items_mismatch",
                    bill,
                    f"The line items of this bill add up to {listed} {bill.currency}, "
                    f"not to its total of {amount} {bill.currency}.",
                    {
                        "amount": amount,
                        "line_items_total": listed,
                        "difference": format_amount(bill.amount - itemised, bill.currency),
                        "currency": bill.currency,
                    },
                )
            )
    if bill.amount < 0:
        flags.append(
            _flag(
                "negative_amount",
                bill,
                f"This bill's amount is negative ({amount} {bill.currency}): a credit or a provider error.",
                {"amount": amount, "currency": bill.currency},
            )
        )
    return flags


def _currency_changed(previous: Bill, bill: Bill) -> DataQualityFlag:
    return _flag(
        "currency_changed",
        bill,
        f"This account's bills are in {bill.currency} since the bill issued on {bill.issued_on.isoformat()}, "
        f"in {previous.currency} before; totals keep the currencies apart.",
        {
            "from": previous.currency,
            "to": bill.currency,
            "since_bill_id": bill.bill_id,
            "since": bill.issued_on.isoformat(),
        },
    )


def _flag(kind: DataQualityKind, bill: Bill, message: str, details: dict[str, str]) -> DataQualityFlag:
    return DataQualityFlag(
        kind=kind,
        account_id=bill.account_id,
        provider=bill.provider,
        bill_id=bill.bill_id,
        message=message,
        details=details,
    )


def _by_account(bills: Sequence[Bill]) -> dict[tuple[str, str], list[Bill]]:
    """Each account's bills in issue order (``bills`` are already sorted so)."""
    grouped: dict[tuple[str, str], list[Bill]] = defaultdict(list)
    for bill in bills:
        grouped[(bill.provider, bill.account_id)].append(bill)
    return grouped


def _two_places(value: Decimal) -> str:
    return str(value.quantize(_HUNDREDTH, rounding=ROUND_HALF_EVEN))
