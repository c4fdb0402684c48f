"""``GET /bills`` and ``GET /bills/{provider}``: exact figures from the sandbox's deterministic bills for a
user billed in two currencies, pages, filters, and the answers to bad queries."""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import product
from typing import Any

import boto3
import pytest

from billhub.bills import effective_status
from billhub.models import Bill, BillStatus, Category
from billhub.store import BillQuery, BillsTable
from localcloud.provision import Stack
from mock_provider.sandbox import SandboxBill
from tests.conftest import Clock
from tests.integration.harness import Api
from tests.sandbox import SandboxAccount, expected_bill_views, money

CLEARWATER_KEY = "cw_sandbox_household"
NORTHGAS = {"account_number": "NG20003000", "postcode": "NG1 1AA"}
FIBRELINK = {"username": "grace", "password": "pass_good"}
# The bills are fetched on 2026-11-15 (the tests' clock starts there), then read on a day the test
# names: November's bills (issued on the 1st) are due on the 22nd.
FETCHED_ON = date(2026, 11, 15)
BEFORE_NOVEMBER_DUE = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)
AFTER_NOVEMBER_DUE = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
pytestmark = pytest.mark.clock(f"{FETCHED_ON.isoformat()}T09:00:00+00:00")


@pytest.fixture
def household(api: Api) -> tuple[str, dict[str, SandboxAccount]]:
    """A user with water and internet billed in USD and gas in GBP, all fetched: account id -> sandbox account."""
    user_id = api.user()
    accounts: dict[str, SandboxAccount] = {}
    for provider, credentials, sandbox in (
        ("clearwater", {"api_key": CLEARWATER_KEY}, SandboxAccount.clearwater(CLEARWATER_KEY)),
        ("northgas", NORTHGAS, SandboxAccount.northgas(NORTHGAS["account_number"])),
        ("fibrelink", FIBRELINK, SandboxAccount.fibrelink(FIBRELINK["username"])),
    ):
        status, body = api.link_provider(user_id, provider, credentials)
        assert status == 201, body
        accounts[body["account_id"]] = sandbox
    assert api.refresh_all(user_id) == {"batchItemFailures": []}
    return user_id, accounts


def get(api: Api, user_id: str, path: str = "/bills", **query: Any) -> tuple[int, Any]:
    route = "/bills/{provider}" if path != "/bills" else None
    parameters = {"provider": path.rsplit("/", 1)[1]} if route else None
    status, body, _ = api.call(
        api.bills,
        "GET",
        path,
        route=route,
        path_parameters=parameters,
        query={name: str(value) for name, value in query.items()},
        user_id=user_id,
    )
    return status, body


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def newest_first(views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The API's order: issue date, then provider, account and bill id, newest first."""
    return sorted(
        views,
        key=lambda view: (view["issued_on"], view["provider"], view["account_id"], view["provider_bill_id"]),
        reverse=True,
    )


def every_view(accounts: dict[str, SandboxAccount], today: date) -> list[dict[str, Any]]:
    views = [
        view
        for account_id, sandbox in accounts.items()
        for view in expected_bill_views(sandbox, account_id, today, FETCHED_ON)
    ]
    return newest_first(views)


def shown_status(bill: SandboxBill, today: date) -> str:
    return "overdue" if bill.status == "unpaid" and bill.due_date < today else bill.status


def totals(bills: list[SandboxBill]) -> dict[str, str]:
    sums: dict[str, Decimal] = defaultdict(Decimal)
    for bill in bills:
        sums[bill.currency] += bill.amount
    return {currency: money(total) for currency, total in sorted(sums.items())}


def open_bills(accounts: dict[str, SandboxAccount]) -> list[SandboxBill]:
    return [bill for sandbox in accounts.values() for bill in sandbox.bills(FETCHED_ON) if bill.status != "paid"]


@pytest.mark.parametrize("now", [BEFORE_NOVEMBER_DUE, AFTER_NOVEMBER_DUE], ids=["before_due", "after_due"])
def test_totals_per_currency_overdue_and_due_soon_match_the_providers_bills(
    api: Api, clock: Clock, household: tuple[str, dict[str, SandboxAccount]], now: datetime
) -> None:
    # Given a user billed in USD and GBP by three providers
    user_id, accounts = household
    clock.now = now
    today = now.date()
    # When they ask for their bills
    status, page = get(api, user_id, limit=200)
    # Then every bill is there, newest first, an unpaid bill past its due date shown as overdue
    assert status == 200
    assert page["bills"] == every_view(accounts, today)
    assert page["next_cursor"] is None
    # and the totals are per currency, never summed across them
    unpaid = open_bills(accounts)
    overdue = [bill for bill in unpaid if shown_status(bill, today) == "overdue"]
    upcoming = [bill for bill in unpaid if shown_status(bill, today) != "overdue"]
    due_soon = [bill for bill in upcoming if bill.due_date <= today + timedelta(days=7)]
    assert page["totals"]["due"] == totals(unpaid)
    assert set(page["totals"]["due"]) == {"USD", "GBP"}
    assert page["totals"]["overdue"] == totals(overdue)
    assert page["totals"]["overdue_count"] == len(overdue)
    assert page["totals"]["due_soon"] == totals(due_soon)
    assert page["totals"]["due_soon_count"] == len(due_soon) == len(page["due_soon"])
    assert page["totals"]["next_due_on"] == (min(b.due_date for b in upcoming).isoformat() if upcoming else None)
    # November's bills are due soon before the 22nd, overdue after it
    november = {bill.bill_id for bill in unpaid if bill.issue_date == date(2026, 11, 1)}
    listed = {view["bill_id"].rsplit(".", 1)[1] for view in page["due_soon" if now < AFTER_NOVEMBER_DUE else "overdue"]}
    assert november <= listed and len(november) == 3
    # and each account says how many bills it holds and how fresh they are (daily: stale after 2 days)
    assert {(a["account_id"], a["bill_count"]) for a in page["accounts"]} == {(aid, 24) for aid in accounts}
    for account in page["accounts"]:
        old = now - datetime.fromisoformat(account["last_success_at"]) > timedelta(hours=48)
        assert account["stale"] is old and (account["stale_reason"] is not None) is old


def test_due_soon_follows_the_users_preference(
    api: Api, clock: Clock, household: tuple[str, dict[str, SandboxAccount]]
) -> None:
    user_id, _ = household
    clock.now = BEFORE_NOVEMBER_DUE
    # November's bills fall due in 6 days: not within 3
    status, _, _ = api.call(api.auth, "PATCH", "/me", body={"preferences": {"due_soon_days": 3}}, user_id=user_id)
    assert status == 200
    _, page = get(api, user_id)
    assert (page["totals"]["due_soon_days"], page["totals"]["due_soon_count"], page["due_soon"]) == (3, 0, [])


def test_pages_cover_every_bill_once_in_order(
    api: Api, clock: Clock, household: tuple[str, dict[str, SandboxAccount]]
) -> None:
    user_id, accounts = household
    clock.now = BEFORE_NOVEMBER_DUE
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        status, page = get(api, user_id, limit=10, **({"cursor": cursor} if cursor else {}))
        assert status == 200 and len(page["bills"]) <= 10
        seen += page["bills"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == every_view(accounts, BEFORE_NOVEMBER_DUE.date())
    assert (len(seen), pages) == (72, 8)


@pytest.mark.parametrize("status_filter", ["paid", "unpaid", "overdue"])
def test_the_status_filter_uses_the_status_shown(
    api: Api, clock: Clock, household: tuple[str, dict[str, SandboxAccount]], status_filter: str
) -> None:
    user_id, accounts = household
    clock.now = AFTER_NOVEMBER_DUE
    bills: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        _, page = get(api, user_id, status=status_filter, limit=5, **({"cursor": cursor} if cursor else {}))
        bills += page["bills"]
        if (cursor := page["next_cursor"]) is None:
            break
    expected = [view for view in every_view(accounts, AFTER_NOVEMBER_DUE.date()) if view["status"] == status_filter]
    assert bills == expected
    # After the 22nd, November's unpaid bills count as overdue: none is merely unpaid any more.
    assert (len(bills) == 0) is (status_filter == "unpaid")


def test_the_stores_status_filter_finds_exactly_the_bills_shown_with_that_status(api: Api, stack: Stack) -> None:
    # Given a bill of each stored status due the day before, the day of and the day after the reading
    table = BillsTable(boto3.client("dynamodb"), stack.refs["BillsTable"])
    user_id = api.user()
    status, body = api.link_clearwater(user_id, "cw_sandbox_a")
    assert status == 201, body
    stored = table.accounts.get_account(user_id, body["account_id"])
    assert stored is not None
    today = date(2026, 11, 20)
    bills = [
        Bill(
            provider="clearwater",
            account_id=stored.account.account_id,
            provider_bill_id=f"{stored_status.value}-{days:+d}",
            category=Category.WATER,
            amount=Decimal("10.00"),
            currency="USD",
            issued_on=date(2026, 11, 1),
            due_on=today + timedelta(days=days),
            status=stored_status,
        )
        for stored_status, days in product(BillStatus, (-1, 0, 1))
    ]
    table.bills.save_fetched_bills(stored.account, bills, datetime(2026, 11, 15, 9, 0, tzinfo=UTC))
    # Then the store's filter for each status returns exactly the bills ``effective_status`` shows with it
    for shown in BillStatus:
        page, _ = table.bills.bills_page(user_id, BillQuery(today=today, limit=50, status=shown))
        expected = {bill.provider_bill_id for bill in bills if effective_status(bill, today) is shown}
        assert {bill.provider_bill_id for bill in page} == expected, shown


def test_an_issue_date_range_and_one_provider(
    api: Api, clock: Clock, household: tuple[str, dict[str, SandboxAccount]]
) -> None:
    user_id, accounts = household
    clock.now = BEFORE_NOVEMBER_DUE
    today = BEFORE_NOVEMBER_DUE.date()
    status, page = get(api, user_id, **{"from": "2026-02-01", "to": "2026-04-30"})
    assert status == 200
    assert page["bills"] == [v for v in every_view(accounts, today) if "2026-02-01" <= v["issued_on"] <= "2026-04-30"]
    assert len(page["bills"]) == 9
    # One provider: its bills only, and totals of its account only (in its currency).
    gas_id = next(account_id for account_id, sandbox in accounts.items() if sandbox.provider == "northgas")
    status, gas = get(api, user_id, "/bills/northgas", limit=200)
    assert gas["bills"] == expected_bill_views(accounts[gas_id], gas_id, today, FETCHED_ON)
    assert [a["account_id"] for a in gas["accounts"]] == [gas_id]
    assert gas["totals"]["due"] == totals(open_bills({gas_id: accounts[gas_id]}))
    assert set(gas["totals"]["due"]) == {"GBP"}
    # whatever page or filter is asked for (docs/decisions.md: the path picks the accounts, the query the bills)
    _, first_paid = get(api, user_id, "/bills/northgas", status="paid", limit=1)
    assert (len(first_paid["bills"]), first_paid["totals"]) == (1, gas["totals"])


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ({"cursor": "bm90IGEgY3Vyc29y"}, 400, "invalid_cursor"),
        # A well-formed cursor pointing outside the user's bills (at an account item).
        ({"cursor": cursor_of(["2026-01-01#clearwater#a#b", "ACCOUNT#a"])}, 400, "invalid_cursor"),
        ({"cursor": "has spaces"}, 422, "validation_error"),
        ({"from": "2026-05-01", "to": "2026-04-01"}, 422, "validation_error"),
        ({"from": "yesterday"}, 422, "validation_error"),
        ({"limit": "0"}, 422, "validation_error"),
        ({"limit": "201"}, 422, "validation_error"),
        ({"status": "late"}, 422, "validation_error"),
    ],
)
def test_bad_queries_are_a_clear_4xx(api: Api, query: dict[str, str], status: int, code: str) -> None:
    got, body = get(api, api.user(), **query)
    assert (got, body["code"]) == (status, code)


def test_as_of_is_the_time_of_reading_to_the_second(
    api: Api, clock: Clock, household: tuple[str, dict[str, SandboxAccount]]
) -> None:
    user_id, _ = household
    clock.now = BEFORE_NOVEMBER_DUE.replace(microsecond=654321)
    for path in ("/bills", "/bills/clearwater"):
        assert get(api, user_id, path)[1]["as_of"] == "2026-11-16T09:00:00Z"
