"""The calendar's edges through the handlers: bills fetched and read at a month end, a leap day, a year's
last minute, the day a bill falls due, a daylight-saving change in the machine's time zone, and at
whatever moment the suite runs. The service and the sandbox share the test's one clock; every
expectation is computed from that clock and the sandbox's own generator, never from a second reading."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tests.conftest import Clock
from tests.integration.harness import Api
from tests.sandbox import SandboxAccount, expected_bill_views, money

LINKS = (
    ("clearwater", {"api_key": "cw_sandbox_any_day"}, SandboxAccount.clearwater("cw_sandbox_any_day")),
    (
        "northgas",
        {"account_number": "NG20003000", "postcode": "NG1 1AA"},
        SandboxAccount.northgas("NG20003000"),
    ),
)
INSTANTS = {
    "wall_clock": None,  # whatever date the suite runs at (libfaketime's too)
    "month_end": "2027-01-31T23:50:00+00:00",
    "leap_day": "2028-02-29T12:00:00+00:00",
    "year_end": "2027-12-31T23:59:00+00:00",
    # Sandbox bills are issued on the 1st and due 21 days later: the whole of the 22nd is their due day.
    "due_day_starts": "2026-11-22T00:00:00+00:00",
    "due_day_ends": "2026-11-22T23:59:59+00:00",
    # 02:00 in New York, when its clocks jump to 03:00 (the machine's zone is set so below)
    "dst_change": "2027-03-14T07:00:00+00:00",
}


@pytest.fixture(autouse=True)
def _local_time_zone_with_daylight_saving(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A machine in New York: code reading local time instead of UTC would see another date near
    midnight UTC and a missing hour at the change."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def household(api: Api) -> tuple[str, dict[str, SandboxAccount]]:
    user_id = api.user()
    accounts = {}
    for provider, credentials, sandbox in LINKS:
        status, body = api.link_provider(user_id, provider, credentials)
        assert status == 201, body
        accounts[body["account_id"]] = sandbox
    assert api.refresh_all(user_id) == {"batchItemFailures": []}
    return user_id, accounts


def read(api: Api, user_id: str, path: str, **query: str) -> dict[str, Any]:
    function = api.insights if path == "/insights" else api.bills
    status, body, _ = api.call(function, "GET", path, user_id=user_id, query=query or None)
    assert status == 200, body
    return dict(body)


def sums(bills: list[Any]) -> dict[str, str]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for bill in bills:
        totals[bill.currency] += bill.amount
    return {currency: money(total) for currency, total in sorted(totals.items())}


def assert_page_as_the_sandbox_says(
    page: dict[str, Any], accounts: dict[str, SandboxAccount], today: date, fetched_on: date
) -> None:
    views = [
        view
        for account_id, sandbox in accounts.items()
        for view in expected_bill_views(sandbox, account_id, today, fetched_on)
    ]
    key = ("issued_on", "provider", "account_id", "provider_bill_id")
    assert page["bills"] == sorted(views, key=lambda view: tuple(view[k] for k in key), reverse=True)
    unpaid = [bill for sandbox in accounts.values() for bill in sandbox.bills(fetched_on) if bill.status != "paid"]
    overdue = [bill for bill in unpaid if bill.status == "overdue" or bill.due_date < today]
    upcoming = [bill for bill in unpaid if bill not in overdue]
    assert page["totals"]["due"] == sums(unpaid)
    assert (page["totals"]["overdue"], page["totals"]["overdue_count"]) == (sums(overdue), len(overdue))
    next_due = min((bill.due_date for bill in upcoming), default=None)
    assert page["totals"]["next_due_on"] == (next_due.isoformat() if next_due else None)


def months_ending(today: date, count: int) -> list[str]:
    index = today.year * 12 + today.month - 1
    return [f"{i // 12}-{i % 12 + 1:02d}" for i in range(index - count + 1, index + 1)]


@pytest.mark.parametrize("clock", list(INSTANTS.values()), ids=list(INSTANTS), indirect=True)
def test_bills_totals_and_insights_follow_the_one_clock(api: Api, clock: Clock) -> None:
    # Given a household whose bills were fetched at the instant under test
    user_id, accounts = household(api)
    fetched_on = clock.today()
    # When they read their bills at once
    page = read(api, user_id, "/bills", limit="200")
    # Then statuses and totals are the sandbox's, as of the clock's date in UTC
    assert page["as_of"].startswith(fetched_on.isoformat())
    assert_page_as_the_sandbox_says(page, accounts, fetched_on, fetched_on)
    # and the insights' year ends with the clock's month
    insights = read(api, user_id, "/insights")
    assert [month["month"] for month in insights["monthly"]] == months_ending(fetched_on, 12)
    assert insights["as_of"] == fetched_on.isoformat()

    # When a day has gone by without a refresh (past a midnight, maybe a month's or a year's end)
    clock.advance(days=1)
    page = read(api, user_id, "/bills", limit="200")
    # Then the same stored bills are shown as of the new date: what fell due yesterday is overdue now
    assert_page_as_the_sandbox_says(page, accounts, fetched_on + timedelta(days=1), fetched_on)
