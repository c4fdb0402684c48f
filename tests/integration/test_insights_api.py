"""GET /insights through the handlers, against moto and the mock provider over HTTP: accounts linked at
several sandbox providers, their bills fetched, and every figure checked against what the sandbox's own
generator says those bills are (sums, means and medians worked out here, not read from the service)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import boto3
import pytest

from billhub.store import BillsTable
from localcloud.provision import Stack
from mock_provider.sandbox import SandboxBill, standing_charge
from tests.conftest import Clock
from tests.integration.harness import Api
from tests.sandbox import SandboxAccount

# These tests check figures against bills of named months (the spike of September 2026, ...), so their
# one clock, the service's and the sandbox's alike, is on a named day; marked ``ON_A_NAMED_DAY``.
NOW = datetime(2026, 11, 15, 9, 30, tzinfo=UTC)
SANDBOX_TODAY = NOW.date()
ON_A_NAMED_DAY = pytest.mark.clock(NOW.isoformat())
CENT = Decimal("0.01")
CATEGORY = {"clearwater": "water", "northgas": "gas", "fibrelink": "internet"}
# A water account with the planted spike (USD), gas billed in pounds, broadband in USD.
CLEARWATER_ANOMALY = "cw_sandbox_anomaly_insights"
NORTHGAS = {"account_number": "NG20003000", "postcode": "NG1 1AA"}
FIBRELINK = {"username": "grace", "password": "pass_good"}


def link_and_fetch(api: Api, user_id: str, links: dict[str, tuple[str, dict[str, str]]]) -> dict[str, str]:
    """Links each ``label: (provider, credentials)`` and fetches every bill: the account id by label."""
    ids = {}
    for label, (provider, credentials) in links.items():
        status, account = api.link_provider(user_id, provider, credentials)
        assert status == 201, account
        ids[label] = str(account["account_id"])
    assert api.refresh_all(user_id) == {"batchItemFailures": []}
    return ids


def get_insights(api: Api, user_id: str, **query: str) -> dict[str, Any]:
    status, body, _ = api.call(api.insights, "GET", "/insights", user_id=user_id, query=query or None)
    assert status == 200, body
    return dict(body)


def money(amount: Decimal) -> str:
    return str(amount.quantize(CENT, rounding=ROUND_HALF_EVEN))


def month_of(day: date) -> str:
    return f"{day:%Y-%m}"


def months_ending(today: date, count: int) -> list[str]:
    index = today.year * 12 + today.month - 1
    return [f"{i // 12}-{i % 12 + 1:02d}" for i in range(index - count + 1, index + 1)]


# ------------------------------------------------------------------ what the sandbox says
def by_month(accounts: Iterable[SandboxAccount]) -> dict[str, list[tuple[SandboxAccount, SandboxBill]]]:
    grouped: dict[str, list[tuple[SandboxAccount, SandboxBill]]] = defaultdict(list)
    for account in accounts:
        for bill in account.bills(SANDBOX_TODAY):
            grouped[month_of(bill.issue_date)].append((account, bill))
    return grouped


def sums(pairs: Iterable[tuple[str, Decimal]]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for key, amount in pairs:
        totals[key] += amount
    return dict(totals)


def formatted(amounts: dict[str, Decimal]) -> dict[str, str]:
    return {currency: money(amounts[currency]) for currency in sorted(amounts)}


def expected_month(month: str, bills: dict[str, list[tuple[SandboxAccount, SandboxBill]]]) -> dict[str, Any]:
    this = bills.get(month, [])
    total = sums((bill.currency, bill.amount) for _, bill in this)
    year, number = map(int, month.split("-"))
    previous = f"{year - 1}-12" if number == 1 else f"{year}-{number - 1:02d}"
    before = sums((bill.currency, bill.amount) for _, bill in bills.get(previous, []))
    categories = sorted({CATEGORY[account.provider] for account, _ in this})
    providers = sorted({account.provider for account, _ in this})
    change = {}
    for currency in sorted(set(total) | set(before)):
        now, then = total.get(currency, Decimal(0)), before.get(currency, Decimal(0))
        percent = money((now - then) / abs(then) * 100) if then else None
        change[currency] = {"amount": money(now - then), "percent": percent}
    return {
        "month": month,
        "partial": month == month_of(SANDBOX_TODAY),
        "bill_count": len(this),
        "total": formatted(total),
        "by_category": {
            name: formatted(sums((b.currency, b.amount) for a, b in this if CATEGORY[a.provider] == name))
            for name in categories
        },
        "by_provider": {
            name: formatted(sums((b.currency, b.amount) for a, b in this if a.provider == name)) for name in providers
        },
        "change": change,
    }


def mean_of_months(months: list[str], bills: dict[str, list[tuple[SandboxAccount, SandboxBill]]]) -> dict[str, str]:
    """Every account here bills every month, so each currency counts from the first month given."""
    totals = sums((bill.currency, bill.amount) for month in months for _, bill in bills.get(month, []))
    return formatted({currency: total / len(months) for currency, total in totals.items()})


# ------------------------------------------------------------------ the tests
@ON_A_NAMED_DAY
def test_insights_over_three_providers_in_two_currencies_with_a_planted_spike(api: Api) -> None:
    # Given a user with a ClearWater anomaly account (USD), NorthGas gas (GBP) and FibreLink broadband (USD)
    user_id = api.user()
    links = {
        "water": ("clearwater", {"api_key": CLEARWATER_ANOMALY}),
        "gas": ("northgas", NORTHGAS),
        "broadband": ("fibrelink", FIBRELINK),
    }
    ids = link_and_fetch(api, user_id, links)
    water = SandboxAccount.clearwater(CLEARWATER_ANOMALY)
    gas = SandboxAccount.northgas(NORTHGAS["account_number"])
    broadband = SandboxAccount.fibrelink(FIBRELINK["username"])
    bills = by_month([water, gas, broadband])

    # When they ask for the last six months
    result = get_insights(api, user_id, months="6")

    # Then each month has the sandbox's bills summed per currency, category and provider
    window = months_ending(SANDBOX_TODAY, 6)
    assert (result["months"], result["from"], result["to"], result["as_of"]) == (6, "2026-06", "2026-11", "2026-11-15")
    assert result["monthly"] == [expected_month(month, bills) for month in window]
    # Pounds and dollars are never added together
    assert all(set(month["total"]) == {"GBP", "USD"} for month in result["monthly"])
    # The trailing average is over the five complete months, the forecast over the last three
    assert result["trailing_average"] == mean_of_months(window[:-1], bills)
    assert result["forecast"]["month"] == "2026-12"
    assert result["forecast"]["total"] == mean_of_months(window[-4:-1], bills)
    # The one unusual bill is the planted spike, two months back, beside the median of its six before it
    water_bills = sorted(water.bills(SANDBOX_TODAY), key=lambda bill: bill.issue_date)
    spike = water_bills[-3]
    expected = statistics.median(bill.amount for bill in water_bills[-9:-3])
    assert spike.issue_date == date(2026, 9, 1)
    assert result["unusual_threshold"] == "1.8"
    assert result["unusual_bills"] == [
        {
            "bill_id": f"clearwater.{ids['water']}.{spike.bill_id}",
            "account_id": ids["water"],
            "provider": "clearwater",
            "category": "water",
            "issued_on": "2026-09-01",
            "amount": money(spike.amount),
            "currency": "USD",
            "expected": money(expected),
            "ratio": money(spike.amount / expected),
        }
    ]
    # And nothing in these accounts' data is suspicious
    assert result["data_quality"] == []


@ON_A_NAMED_DAY
def test_data_quality_flags_from_the_sandboxs_planted_quirks(api: Api) -> None:
    # Given ClearWater accounts whose bills carry a line-item mismatch, a credit note and a currency move
    keys = {"mismatch": "cw_sandbox_mismatch_q", "credit": "cw_sandbox_credit_q", "moved": "cw_sandbox_moved_q"}
    user_id = api.user()
    account_of = link_and_fetch(api, user_id, {quirk: ("clearwater", {"api_key": key}) for quirk, key in keys.items()})
    sandboxes = {quirk: SandboxAccount.clearwater(key) for quirk, key in keys.items()}

    # When they ask for a year of insights
    result = get_insights(api, user_id)

    # Then: the mismatch bill (three months back) lacks its standing charge
    mismatch = next(b for b in sandboxes["mismatch"].bills(SANDBOX_TODAY) if b.issue_date == date(2026, 8, 1))
    itemised = sum((line.amount for line in mismatch.line_items), Decimal(0))
    assert mismatch.amount - itemised == standing_charge(sandboxes["mismatch"].account_number) > 0
    # the credit note (four months back) is negative
    credit = next(b for b in sandboxes["credit"].bills(SANDBOX_TODAY) if b.issue_date == date(2026, 7, 1))
    assert credit.amount < 0
    # and the moved account's bills are in USD since six months back, CAD before
    moved = sorted(sandboxes["moved"].bills(SANDBOX_TODAY), key=lambda bill: bill.issue_date)
    since = next(bill for bill in moved if bill.currency == "USD")
    assert (since.issue_date, moved[0].currency) == (date(2026, 5, 1), "CAD")

    def bill_id(quirk: str, bill: SandboxBill) -> str:
        return f"clearwater.{account_of[quirk]}.{bill.bill_id}"

    flags = {(flag["kind"], flag["account_id"]): flag for flag in result["data_quality"]}
    assert set(flags) == {
        ("line_items_mismatch", account_of["mismatch"]),
        ("negative_amount", account_of["credit"]),
        ("currency_changed", account_of["moved"]),
    }
    assert flags["line_items_mismatch", account_of["mismatch"]] | {"message": ""} == {
        "kind": "line_items_mismatch",
        "account_id": account_of["mismatch"],
        "provider": "clearwater",
        "bill_id": bill_id("mismatch", mismatch),
        "message": "",
        "details": {
            "amount": money(mismatch.amount),
            "line_items_total": money(itemised),
            "difference": money(mismatch.amount - itemised),
            "currency": "USD",
        },
    }
    negative = flags["negative_amount", account_of["credit"]]
    assert (negative["bill_id"], negative["details"]) == (
        bill_id("credit", credit),
        {"amount": money(credit.amount), "currency": "USD"},
    )
    changed = flags["currency_changed", account_of["moved"]]
    assert (changed["bill_id"], changed["details"]) == (
        bill_id("moved", since),
        {"from": "CAD", "to": "USD", "since_bill_id": bill_id("moved", since), "since": "2026-05-01"},
    )
    assert all(flag["message"] for flag in result["data_quality"])
    # The credit note still counts in its month, and the CAD months keep their own currency
    july = next(month for month in result["monthly"] if month["month"] == "2026-07")
    july_bills = [bill for sandbox in sandboxes.values() for bill in sandbox.bills(SANDBOX_TODAY)]
    july_usd = sum((bill.amount for bill in july_bills if month_of(bill.issue_date) == "2026-07"), Decimal(0))
    assert july["total"] == {"USD": money(july_usd)}
    assert result["monthly"][0]["total"].keys() == {"CAD", "USD"}
    # And none of these quirks makes an ordinary bill look unusual
    assert result["unusual_bills"] == []


@ON_A_NAMED_DAY
def test_an_account_being_deleted_is_left_out(api: Api, stack: Stack) -> None:
    # Given a user with gas and broadband, whose broadband account is being deleted (its bills not yet gone)
    user_id = api.user()
    ids = link_and_fetch(api, user_id, {"gas": ("northgas", NORTHGAS), "broadband": ("fibrelink", FIBRELINK)})
    table = BillsTable(boto3.client("dynamodb"), stack.refs["BillsTable"])
    assert table.account_deletions.begin_account_deletion(user_id, ids["broadband"], NOW) is not None
    # When they ask for insights
    result = get_insights(api, user_id, months="3")
    # Then only the gas bills count
    bills = by_month([SandboxAccount.northgas(NORTHGAS["account_number"])])
    assert result["monthly"] == [expected_month(month, bills) for month in months_ending(SANDBOX_TODAY, 3)]
    assert set(result["trailing_average"]) == set(result["forecast"]["total"]) == {"GBP"}


def test_a_user_with_nothing_linked_gets_a_year_of_empty_months(api: Api, clock: Clock) -> None:
    # On whatever day the suite runs: the year ends with the current month
    result = get_insights(api, api.user())
    year = months_ending(clock.today(), 12)
    assert [month["month"] for month in result["monthly"]] == year
    assert (result["from"], result["to"]) == (year[0], year[-1])
    assert all(month["total"] == {} for month in result["monthly"])
    assert (result["trailing_average"], result["forecast"]["total"]) == ({}, {})
    assert (result["unusual_bills"], result["data_quality"]) == ([], [])


@pytest.mark.parametrize("months", ["0", "37", "-1", "twelve", "1.5"])
def test_months_outside_1_to_36_is_a_422(api: Api, months: str) -> None:
    status, body, _ = api.call(api.insights, "GET", "/insights", user_id=api.user(), query={"months": months})
    assert (status, body["code"]) == (422, "validation_error")
    assert body["details"][0]["loc"] == ["query", "months"]
