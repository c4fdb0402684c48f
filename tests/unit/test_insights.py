"""Spending insights from constructed accounts and bills: every rule with exact figures, and the default
unusual-bill threshold checked against the sandbox's planted anomalies and seasonal swings."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pydantic
import pytest

from billhub.insights import MAX_INSIGHT_MONTHS, Insights, history_start, spending_insights, window_months
from billhub.models import Account, AccountStatus, Bill, BillStatus, Category, LineItem, retention_cutoff
from billhub.settings import InsightsSettings
from mock_provider.sandbox import ANOMALY_MONTHS_BACK, Quirk
from tests.sandbox import SandboxAccount, expected_bills

TODAY = date(2026, 11, 15)
THRESHOLD = Decimal("1.8")
CATEGORIES = {"clearwater": Category.WATER, "northgas": Category.GAS, "sparkgrid": Category.ELECTRICITY}
CREATED = datetime(2024, 1, 1, tzinfo=UTC)


def account(account_id: str, provider: str = "clearwater", status: AccountStatus = AccountStatus.ACTIVE) -> Account:
    return Account(
        account_id=account_id,
        user_id="u1",
        provider=provider,
        external_ref="••••1234",
        status=status,
        created_at=CREATED,
        next_refresh_at=CREATED + timedelta(days=1),
    )


def bill(
    account_id: str,
    issued_on: str,
    amount: str,
    currency: str = "USD",
    provider: str = "clearwater",
    line_items: tuple[tuple[str, str], ...] = (),
) -> Bill:
    issued = date.fromisoformat(issued_on)
    return Bill(
        provider=provider,
        account_id=account_id,
        provider_bill_id=f"{account_id}-{issued:%Y%m%d}",
        category=CATEGORIES[provider],
        amount=Decimal(amount),
        currency=currency,
        issued_on=issued,
        due_on=issued + timedelta(days=21),
        status=BillStatus.PAID,
        line_items=tuple(LineItem(description=text, amount=Decimal(value)) for text, value in line_items),
    )


def monthly(account_id: str, first_month: str, amounts: list[str], **kwargs: Any) -> list[Bill]:
    """One bill on the 1st of each month from ``first_month`` (YYYY-MM) on."""
    year, month = map(int, first_month.split("-"))
    bills = []
    for offset, amount in enumerate(amounts):
        index = year * 12 + month - 1 + offset
        bills.append(bill(account_id, f"{index // 12}-{index % 12 + 1:02d}-01", amount, **kwargs))
    return bills


def insights(
    accounts: list[Account], bills: list[Bill], months: int = 12, threshold: Decimal = THRESHOLD, today: date = TODAY
) -> Insights:
    return spending_insights(accounts, bills, today, months, threshold)


def as_json(result: Insights) -> dict[str, Any]:
    return result.model_dump(mode="json", by_alias=True)


# ------------------------------------------------------------------ the window
def test_the_window_is_the_calendar_months_ending_with_the_current_one() -> None:
    assert [str(month) for month in window_months(TODAY, 3)] == ["2026-09", "2026-10", "2026-11"]
    assert [str(month) for month in window_months(date(2026, 2, 1), 3)] == ["2025-12", "2026-01", "2026-02"]
    # Six months of history before the window, for unusual bills.
    assert history_start(TODAY, 12) == date(2025, 6, 1)
    assert history_start(TODAY, 1) == date(2026, 5, 1)


@pytest.mark.parametrize(
    ("today", "first_kept"),
    [
        (date(2028, 2, 29), date(2024, 2, 1)),
        (date(2027, 3, 31), date(2023, 3, 1)),
        (date(2027, 1, 1), date(2023, 1, 1)),
        (date(2026, 12, 31), date(2022, 12, 1)),
    ],
)
def test_paid_bills_are_kept_from_the_first_of_the_month_48_months_back(today: date, first_kept: date) -> None:
    assert retention_cutoff(today) == first_kept


def test_the_longest_insights_never_reach_a_pruned_bill_on_any_day() -> None:
    # Every day of four years, leap day and month ends included
    day = date(2026, 1, 1)
    while day < date(2030, 1, 1):
        cutoff = retention_cutoff(day)
        assert (cutoff.day, cutoff.year * 12 + cutoff.month) == (1, day.year * 12 + day.month - 48)
        assert cutoff < history_start(day, MAX_INSIGHT_MONTHS)
        day += timedelta(days=1)


def test_months_without_bills_appear_empty_and_only_the_current_month_is_partial() -> None:
    # Given one bill, in September
    result = as_json(insights([account("w")], [bill("w", "2026-09-10", "40.00")], months=4))
    # Then every month of the window is there, the empty ones with empty totals
    assert (result["months"], result["from"], result["to"], result["as_of"]) == (4, "2026-08", "2026-11", "2026-11-15")
    assert [(m["month"], m["partial"], m["bill_count"], m["total"]) for m in result["monthly"]] == [
        ("2026-08", False, 0, {}),
        ("2026-09", False, 1, {"USD": "40.00"}),
        ("2026-10", False, 0, {}),
        ("2026-11", True, 0, {}),
    ]
    assert result["monthly"][0] == {
        "month": "2026-08",
        "partial": False,
        "bill_count": 0,
        "total": {},
        "by_category": {},
        "by_provider": {},
        "change": {},
    }


def test_a_bill_counts_in_the_month_it_was_issued_and_only_inside_the_window() -> None:
    # Given bills on either side of the window's first day, and one issued after the current month
    bills = [
        bill("w", "2026-08-31", "10.00"),
        bill("w", "2026-09-01", "20.00"),
        bill("w", "2026-11-30", "30.00"),
        bill("w", "2026-12-01", "99.00"),
    ]
    result = as_json(insights([account("w")], bills, months=3))
    # Then August's bill is outside, November 30th's is November's and December's is ignored
    assert [(m["month"], m["total"]) for m in result["monthly"]] == [
        ("2026-09", {"USD": "20.00"}),
        ("2026-10", {}),
        ("2026-11", {"USD": "30.00"}),
    ]
    # And September's change is against August, which is history outside the window
    assert result["monthly"][0]["change"] == {"USD": {"amount": "10.00", "percent": "100.00"}}


# ------------------------------------------------------------------ spend per month, category and provider
def test_spend_per_month_per_category_and_per_provider_keeps_currencies_apart() -> None:
    # Given water and electricity billed in USD, gas in GBP
    accounts = [account("w"), account("g", "northgas"), account("e", "sparkgrid")]
    bills = [
        bill("w", "2026-09-01", "40.00"),
        bill("w", "2026-10-03", "45.50"),
        bill("w", "2026-11-01", "50.25"),
        bill("g", "2026-09-05", "60.00", "GBP", "northgas"),
        bill("g", "2026-10-05", "66.00", "GBP", "northgas"),
        bill("e", "2026-10-20", "100.10", provider="sparkgrid"),
    ]
    # When the last three months are summarised
    result = as_json(insights(accounts, bills, months=3))
    # Then each month has totals per currency, per category and per provider, never mixing currencies
    september, october, november = result["monthly"]
    assert september == {
        "month": "2026-09",
        "partial": False,
        "bill_count": 2,
        "total": {"GBP": "60.00", "USD": "40.00"},
        "by_category": {"gas": {"GBP": "60.00"}, "water": {"USD": "40.00"}},
        "by_provider": {"clearwater": {"USD": "40.00"}, "northgas": {"GBP": "60.00"}},
        # August had nothing: no percent
        "change": {"GBP": {"amount": "60.00", "percent": None}, "USD": {"amount": "40.00", "percent": None}},
    }
    assert october == {
        "month": "2026-10",
        "partial": False,
        "bill_count": 3,
        "total": {"GBP": "66.00", "USD": "145.60"},
        "by_category": {"electricity": {"USD": "100.10"}, "gas": {"GBP": "66.00"}, "water": {"USD": "45.50"}},
        "by_provider": {"clearwater": {"USD": "45.50"}, "northgas": {"GBP": "66.00"}, "sparkgrid": {"USD": "100.10"}},
        "change": {"GBP": {"amount": "6.00", "percent": "10.00"}, "USD": {"amount": "105.60", "percent": "264.00"}},
    }
    assert november == {
        "month": "2026-11",
        "partial": True,
        "bill_count": 1,
        "total": {"USD": "50.25"},
        "by_category": {"water": {"USD": "50.25"}},
        "by_provider": {"clearwater": {"USD": "50.25"}},
        # No gas bill yet this month: down by all of October's; USD -95.35 / 145.60 = -65.487...%
        "change": {"GBP": {"amount": "-66.00", "percent": "-100.00"}, "USD": {"amount": "-95.35", "percent": "-65.49"}},
    }


def test_one_account_billing_in_two_currencies_keeps_them_apart() -> None:
    bills = [bill("w", "2026-11-01", "10.00"), bill("w", "2026-11-02", "20.00", "GBP")]
    (month,) = as_json(insights([account("w")], bills, months=1))["monthly"]
    assert month["total"] == {"GBP": "20.00", "USD": "10.00"}
    assert month["by_provider"] == {"clearwater": {"GBP": "20.00", "USD": "10.00"}}


def test_change_has_no_percent_when_last_months_total_was_zero() -> None:
    # Given a credit that cancelled October's charge exactly
    bills = [bill("w", "2026-10-01", "25.00"), bill("w", "2026-10-02", "-25.00"), bill("w", "2026-11-01", "30.00")]
    result = as_json(insights([account("w")], bills, months=2))
    assert result["monthly"][0]["total"] == {"USD": "0.00"}
    assert result["monthly"][1]["change"] == {"USD": {"amount": "30.00", "percent": None}}


def test_change_from_a_negative_month_is_signed_as_its_amount() -> None:
    # Given a month of nothing but a credit of 10.00, then a bill of 20.00: up by 30.00, 300% of 10.00
    bills = [bill("w", "2026-10-01", "-10.00"), bill("w", "2026-11-01", "20.00")]
    result = as_json(insights([account("w")], bills, months=1))
    assert result["monthly"][0]["change"] == {"USD": {"amount": "30.00", "percent": "300.00"}}


# ------------------------------------------------------------------ trailing average and forecast
def test_trailing_average_covers_complete_months_from_the_first_with_a_bill_in_each_currency() -> None:
    # Given USD bills from August (none in September) and GBP bills from June, in a window from June
    accounts = [account("w"), account("g", "northgas")]
    bills = [
        bill("w", "2026-08-01", "30.00"),
        bill("w", "2026-10-01", "45.00"),
        bill("w", "2026-11-01", "999.00"),  # the current month never counts
        bill("g", "2026-06-01", "10.00", "GBP", "northgas"),
        bill("g", "2026-07-01", "20.00", "GBP", "northgas"),
    ]
    result = as_json(insights(accounts, bills, months=6))
    # Then USD: (30 + 0 + 45) / 3 months (Aug-Oct); GBP: (10 + 20 + 0 + 0 + 0) / 5 months (Jun-Oct)
    assert result["trailing_average"] == {"GBP": "6.00", "USD": "25.00"}


def test_averages_are_rounded_to_the_currencys_minor_units() -> None:
    bills = monthly("w", "2026-08", ["10.00", "10.00", "10.01"])
    result = as_json(insights([account("w")], bills, months=4))
    assert result["trailing_average"] == {"USD": "10.00"}  # 30.01 / 3
    assert result["forecast"]["total"] == {"USD": "10.00"}


def test_forecast_is_the_mean_of_the_last_three_complete_months_whatever_the_window() -> None:
    # Given USD bills in July, August and October (none in September), and GBP first billed in October
    accounts = [account("w"), account("g", "northgas")]
    bills = [
        bill("w", "2026-07-01", "500.00"),  # four months back: not in the forecast
        bill("w", "2026-08-01", "30.00"),
        bill("w", "2026-10-01", "45.00"),
        bill("w", "2026-11-01", "80.00"),  # the current month is not complete
        bill("g", "2026-10-01", "12.00", "GBP", "northgas"),
    ]
    # When only the current month is shown
    result = as_json(insights(accounts, bills, months=1))
    # Then the forecast still reads the three complete months before it: USD (30 + 0 + 45) / 3;
    # GBP from its first month, October, only
    assert result["forecast"]["month"] == "2026-12"
    assert result["forecast"]["total"] == {"GBP": "12.00", "USD": "25.00"}
    assert "mean of the last 3 complete months" in result["forecast"]["method"]
    # And with no complete month in the window there is no trailing average
    assert result["trailing_average"] == {}
    assert [(m["month"], m["partial"]) for m in result["monthly"]] == [("2026-11", True)]


def test_no_bills_at_all() -> None:
    result = as_json(insights([account("w")], [], months=12))
    assert [m["month"] for m in result["monthly"]] == ["2025-12"] + [f"2026-{m:02d}" for m in range(1, 12)]
    assert all(m["total"] == {} and m["change"] == {} for m in result["monthly"])
    assert result["trailing_average"] == {}
    assert result["forecast"]["total"] == {}
    assert result["unusual_bills"] == []
    assert result["data_quality"] == []


def test_accounts_being_deleted_and_their_bills_are_invisible() -> None:
    # Given an account being deleted, with a negative bill and a spike
    gone = account("gone", status=AccountStatus.DELETING)
    bills = [*monthly("gone", "2026-05", ["40.00"] * 6), bill("gone", "2026-11-01", "-400.00")]
    bills.append(bill("gone", "2026-11-02", "400.00"))
    result = as_json(insights([gone, account("w")], [*bills, bill("w", "2026-11-01", "12.00")], months=6))
    # Then it shows nowhere
    assert [m["total"] for m in result["monthly"]] == [{}] * 5 + [{"USD": "12.00"}]
    assert (result["trailing_average"], result["forecast"]["total"]) == ({}, {})
    assert (result["unusual_bills"], result["data_quality"]) == ([], [])


# ------------------------------------------------------------------ unusual bills
def test_a_bill_well_above_its_accounts_median_is_unusual_with_the_expected_amount_beside_it() -> None:
    # Given six ordinary bills before the window, a spike in September, then an ordinary October
    bills = [*monthly("w", "2026-03", ["40.00", "42.00", "38.00", "41.00", "39.00", "44.00", "123.00", "41.00"])]
    result = as_json(insights([account("w")], bills, months=3))
    # Then only the spike is reported: median of 38, 39, 40, 41, 42, 44 is 40.50; 123 / 40.50 = 3.037...
    assert result["unusual_threshold"] == "1.8"
    assert result["unusual_bills"] == [
        {
            "bill_id": "clearwater.w.w-20260901",
            "account_id": "w",
            "provider": "clearwater",
            "category": "water",
            "issued_on": "2026-09-01",
            "amount": "123.00",
            "currency": "USD",
            "expected": "40.50",
            "ratio": "3.04",
        }
    ]


def test_a_spike_before_the_window_is_history_not_news() -> None:
    bills = monthly("w", "2026-01", ["40.00", "40.00", "40.00", "40.00", "200.00", "40.00", "40.00", "40.00"])
    assert insights([account("w")], bills, months=3).unusual_bills == []


def test_only_the_previous_six_bills_count() -> None:
    # Given seven bills of 100, then six of 40, then 80: twice the last six bills' median
    amounts = ["100.00"] * 7 + ["40.00"] * 6 + ["80.00"]
    found = insights([account("w")], monthly("w", "2025-06", amounts), months=12).unusual_bills
    # Then it is unusual (over all thirteen earlier bills the median would be 100)
    assert [(u.issued_on, u.expected, u.ratio) for u in found] == [(date(2026, 7, 1), "40.00", "2.00")]


@pytest.mark.parametrize(("earlier", "unusual"), [(2, False), (3, True)])
def test_an_account_needs_three_earlier_bills(earlier: int, unusual: bool) -> None:
    bills = monthly("w", "2026-06", ["10.00"] * earlier + ["100.00"])
    found = insights([account("w")], bills, months=12).unusual_bills
    assert [u.amount for u in found] == (["100.00"] if unusual else [])


@pytest.mark.parametrize(
    ("threshold", "amount", "unusual"),
    [
        ("1.8", "90.00", False),  # exactly 1.8 x 50.00 is not above it
        ("1.8", "90.01", True),
        ("2.5", "125.00", False),
        ("2.5", "125.01", True),
    ],
)
def test_unusual_means_strictly_above_the_configured_threshold(threshold: str, amount: str, unusual: bool) -> None:
    bills = monthly("w", "2026-06", ["50.00", "50.00", "50.00", amount])
    found = insights([account("w")], bills, months=12, threshold=Decimal(threshold)).unusual_bills
    assert [(u.amount, u.expected) for u in found] == ([(amount, "50.00")] if unusual else [])


def test_a_bill_is_compared_with_earlier_bills_in_its_own_currency_only() -> None:
    # Given three USD bills of 50, then the account bills 200 GBP, then 51 USD
    bills = [*monthly("w", "2026-05", ["50.00"] * 3), bill("w", "2026-08-01", "200.00", "GBP")]
    bills.append(bill("w", "2026-09-01", "51.00"))
    assert insights([account("w")], bills, months=6).unusual_bills == []


def test_no_bill_is_unusual_against_a_median_that_is_not_positive() -> None:
    bills = monthly("w", "2026-06", ["-10.00", "-10.00", "-10.00", "5.00"])
    assert insights([account("w")], bills, months=12).unusual_bills == []


def test_unusual_bills_are_listed_newest_first() -> None:
    bills = [*monthly("a", "2026-03", ["10.00"] * 6 + ["50.00"]), *monthly("b", "2026-04", ["10.00"] * 6 + ["50.00"])]
    found = insights([account("a"), account("b")], bills, months=6).unusual_bills
    assert [(u.account_id, u.issued_on) for u in found] == [("b", date(2026, 10, 1)), ("a", date(2026, 9, 1))]


# ------------------------------------------------------------------ data quality
def test_line_items_that_do_not_add_up_are_flagged_with_both_figures() -> None:
    bills = [
        bill("w", "2026-09-01", "60.00", line_items=(("Water", "50.00"), ("Sewer", "5.00"))),
        bill("w", "2026-10-01", "47.50", line_items=(("Water", "50.00"), ("Credit", "-2.50"))),  # adds up
        bill("w", "2026-11-01", "52.00"),  # not itemised
    ]
    result = as_json(insights([account("w")], bills, months=3))
    assert result["data_quality"] == [
        {
            "kind": "line_items_mismatch",
            "account_id": "w",
            "provider": "clearwater",
            "bill_id": "clearwater.w.w-20260901",
            "message": "The line items of this bill add up to 55.00 USD, not to its total of 60.00 USD.",
            "details": {"amount": "60.00", "line_items_total": "55.00", "difference": "5.00", "currency": "USD"},
        }
    ]


def test_a_negative_amount_is_flagged_and_still_counted() -> None:
    bills = [bill("w", "2026-10-01", "30.00"), bill("w", "2026-10-15", "-12.50"), bill("w", "2026-06-01", "-1.00")]
    result = as_json(insights([account("w")], bills, months=3))
    # The June credit is before the window: not flagged
    assert [(flag["kind"], flag["bill_id"], flag["details"]) for flag in result["data_quality"]] == [
        ("negative_amount", "clearwater.w.w-20261015", {"amount": "-12.50", "currency": "USD"})
    ]
    assert result["monthly"][1]["total"] == {"USD": "17.50"}


def test_a_currency_change_is_flagged_once_per_account_from_its_latest_switch() -> None:
    # Given an account billing USD, then GBP, then EUR; and one that switched before the window
    bills = [
        *monthly("w", "2026-07", ["40.00"] * 3),
        *monthly("w", "2026-10", ["35.00", "36.00"], currency="GBP"),
        bill("w", "2026-11-10", "41.00", "EUR"),
        *monthly("old", "2026-04", ["40.00", "40.00"]),
        *monthly("old", "2026-06", ["35.00"] * 6, currency="GBP"),
    ]
    result = as_json(insights([account("w"), account("old")], bills, months=4))
    # Then one flag, for the account whose bills changed currency inside the window, naming the switch
    assert result["data_quality"] == [
        {
            "kind": "currency_changed",
            "account_id": "w",
            "provider": "clearwater",
            "bill_id": "clearwater.w.w-20261110",
            "message": "This account's bills are in EUR since the bill issued on 2026-11-10, in GBP before; "
            "totals keep the currencies apart.",
            "details": {"from": "GBP", "to": "EUR", "since_bill_id": "clearwater.w.w-20261110", "since": "2026-11-10"},
        }
    ]


def test_a_switch_against_history_before_the_window_is_flagged() -> None:
    bills = [*monthly("w", "2026-06", ["40.00"] * 4), *monthly("w", "2026-10", ["35.00", "36.00"], currency="GBP")]
    flags = insights([account("w")], bills, months=2).data_quality
    assert [(flag.kind, flag.details["from"], flag.details["to"]) for flag in flags] == [
        ("currency_changed", "USD", "GBP")
    ]


# ------------------------------------------------------------------ configuration
def test_the_threshold_comes_from_the_environment_and_the_template_defaults_it(template: dict[str, Any]) -> None:
    default = InsightsSettings.from_environ({"TABLE_NAME": "bills"}).UNUSUAL_BILL_THRESHOLD
    assert default == Decimal("1.8")
    assert Decimal(str(template["Parameters"]["UnusualBillThreshold"]["Default"])) == default
    variables = template["Resources"]["InsightsFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["UNUSUAL_BILL_THRESHOLD"] == {"Ref": "UnusualBillThreshold"}
    # Only the insights read it: the bills function is not configured with it.
    bills = template["Resources"]["GetBillsFunction"]["Properties"].get("Environment", {}).get("Variables", {})
    assert "UNUSUAL_BILL_THRESHOLD" not in bills
    configured = InsightsSettings.from_environ({"TABLE_NAME": "bills", "UNUSUAL_BILL_THRESHOLD": "2.5"})
    assert str(configured.UNUSUAL_BILL_THRESHOLD) == "2.5"
    with pytest.raises(pydantic.ValidationError):
        InsightsSettings.from_environ({"TABLE_NAME": "bills", "UNUSUAL_BILL_THRESHOLD": "0.5"})


# ------------------------------------------------------------------ the default threshold, against the sandbox
# Planted quirks, alone and combined, as the username-based sandboxes read them from a username.
MARKS = ["", "anomaly_", "credit_", "moved_", "mismatch_", "anomaly_credit_", "anomaly_moved_"]


def sandbox_accounts(count: int) -> list[SandboxAccount]:
    """``count`` accounts at each provider for each planted quirk (and none), as the sandbox makes them."""
    accounts = []
    for index in range(count):
        for mark in MARKS:
            accounts += [
                SandboxAccount.sparkgrid(f"{mark}user_{index}"),
                SandboxAccount.fibrelink(f"{mark}user_{index}"),
                SandboxAccount.clearwater(f"cw_sandbox_{mark or 'plain_'}{index}"),
            ]
        accounts += [
            SandboxAccount.northgas(f"NG{300000 + index}{suffix}") for suffix in ("10", "96", "97", "98", "99")
        ]
    return accounts


@pytest.mark.parametrize("today", [date(2026, month, 15) for month in range(1, 13)], ids=lambda day: f"{day:%b}")
def test_the_default_threshold_flags_every_planted_anomaly_and_no_ordinary_sandbox_bill(today: date) -> None:
    # Given sandbox accounts at every provider with every planted quirk, seasonal swings and all, on a
    # date in each calendar month (so the planted spike falls in every season)
    sandboxes = sandbox_accounts(10)
    bills = [bill for sandbox in sandboxes for bill in expected_bills(sandbox, sandbox.account_number, today)]
    accounts = [account(sandbox.account_number, sandbox.provider) for sandbox in sandboxes]
    threshold = InsightsSettings.from_environ({"TABLE_NAME": "bills"}).UNUSUAL_BILL_THRESHOLD
    # When 18 months of them are judged (every bill with at least six earlier ones)
    found = spending_insights(accounts, bills, today, 18, threshold).unusual_bills
    # Then exactly the planted bills are unusual: the one from two months back at each anomaly account
    spike = window_months(today, ANOMALY_MONTHS_BACK + 1)[0].first_day
    planted = {(sandbox.account_number, spike) for sandbox in sandboxes if Quirk.ANOMALY in sandbox.quirks}
    assert len(planted) == 10 * 10  # three anomaly marks at three providers, and NorthGas's 99
    assert {(unusual.account_id, unusual.issued_on) for unusual in found} == planted
