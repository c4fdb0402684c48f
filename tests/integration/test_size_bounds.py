"""Issue 15, point 5: every size that grew without bound has one, tested at the bound. A page of bills
stays under Lambda's response limit, an account's open bills stay small in its item, a user's linked
accounts are capped, and an account's bills are kept for a documented time."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import boto3
import pytest

from billhub.bills import MAX_PAGE_SIZE, MAX_RESPONSE_BYTES
from billhub.insights import MAX_INSIGHT_MONTHS
from billhub.models import (
    MAX_ACCOUNTS_PER_USER,
    OPEN_BILLS_LISTED,
    Account,
    AccountSummary,
    Bill,
    BillStatus,
    Category,
    LineItem,
)
from billhub.store import BillsTable
from localcloud.provision import Stack
from tests.conftest import Clock
from tests.events import http_event, response_json
from tests.integration.harness import Api, LambdaContext, dynamodb_requests

# Lambda's limit on a synchronous invocation's answer, the whole JSON of it.
LAMBDA_RESPONSE_LIMIT = 6 * 1024 * 1024
# Outside the Basic Multilingual Plane: JSON escapes it as a surrogate pair, 12 bytes (the worst case).
WIDE = "\U0001f4a7"
pytestmark = pytest.mark.clock("2026-11-15T09:00:00+00:00")


@pytest.fixture
def table(stack: Stack) -> BillsTable:
    return BillsTable(boto3.client("dynamodb"), stack.refs["BillsTable"])


def linked_account(api: Api, table: BillsTable, email: str = "ada@example.com") -> Account:
    user_id = api.user(email)
    status, body = api.link_clearwater(user_id)
    assert status == 201, body
    stored = table.accounts.get_account(user_id, body["account_id"])
    assert stored is not None
    return stored.account


def largest_bill(account: Account, number: int, issued_on: date) -> Bill:
    """A bill with every text at the models' maximum length, all of it characters JSON escapes widest."""
    return Bill(
        provider=account.provider,
        account_id=account.account_id,
        provider_bill_id=f"{number:04d}" + WIDE * 124,
        category=Category.WATER,
        amount=Decimal("-99999999999.99"),
        currency="USD",
        issued_on=issued_on,
        due_on=issued_on + timedelta(days=21),
        period_start=issued_on - timedelta(days=30),
        period_end=issued_on,
        status=BillStatus.PAID,
        line_items=tuple(
            LineItem(description=f"{line:03d}" + WIDE * 197, amount=Decimal("-99999999999.99")) for line in range(100)
        ),
    )


def raw_bills_page(api: Api, user_id: str, **query: str) -> dict[str, Any]:
    response: dict[str, Any] = api.bills.handler(
        http_event("GET", "/bills", query=query, user_id=user_id), LambdaContext()
    )
    return response


# ------------------------------------------------------------------ a page of bills
def test_pages_of_the_largest_bills_stay_under_the_response_budget_and_miss_none(
    api: Api, table: BillsTable, clock: Clock
) -> None:
    # Given a user holding 30 bills at the models' maximum size (about 300 KB of JSON each)
    account = linked_account(api, table)
    held = [largest_bill(account, number, date(2024, 1, 1) + timedelta(days=number)) for number in range(30)]
    table.bills.save_fetched_bills(account, held, clock())
    # When they page through everything with the largest page size
    seen: list[str] = []
    pages = 0
    query = {"limit": str(MAX_PAGE_SIZE)}
    while True:
        response = raw_bills_page(api, account.user_id, **query)
        assert response["statusCode"] == 200, response["body"][:2000]
        # Then every answer is under the budget, measured as it leaves Lambda, and under Lambda's limit
        assert len(json.dumps(response["body"])) <= MAX_RESPONSE_BYTES
        assert len(json.dumps(response)) < LAMBDA_RESPONSE_LIMIT
        body = response_json(response)
        pages += 1
        seen.extend(bill["provider_bill_id"] for bill in body["bills"])
        if body["next_cursor"] is None:
            break
        query["cursor"] = body["next_cursor"]
    # and the pages hold every bill once, newest first, cut short by size rather than by the limit
    assert seen == [bill.provider_bill_id for bill in reversed(held)]
    assert pages >= 2


# ------------------------------------------------------------------ a fetch's transactions
def test_a_fetch_of_many_of_the_largest_bills_is_saved_in_transactions_under_4_mb(
    api: Api, table: BillsTable, clock: Clock
) -> None:
    # Given a fetch that read 60 bills at the models' maximum size (about 85 KB each, 5 MB in all)
    account = linked_account(api, table)
    fetched = [largest_bill(account, number, date(2024, 1, 1) + timedelta(days=number)) for number in range(60)]
    # When it is saved (DynamoDB refuses a transaction of more than 4 MB, as the tests' checks do)
    with dynamodb_requests(table.client) as sent:
        assert table.bills.save_fetched_bills(account, fetched, clock()) == 60
    # Then it took several transactions (none refused), and every bill is stored once
    assert len([name for name, _ in sent if name == "TransactWriteItems"]) >= 2
    stored = table.bills.bills_of_account(account)
    assert sorted(bill.provider_bill_id for bill in stored) == [bill.provider_bill_id for bill in fetched]
    current = table.accounts.get_account(account.user_id, account.account_id)
    assert current is not None and current.account.summary.bill_count == 60
    # and the same fetch saved again changes nothing
    clock.advance(hours=1)
    with dynamodb_requests(table.client) as again:
        assert table.bills.save_fetched_bills(account, fetched, clock()) == 0
    assert [name for name, _ in again if name == "TransactWriteItems"] == []
    assert table.bills.bills_of_account(account) == stored


# ------------------------------------------------------------------ an account's open bills
def unpaid_bill(account: Account, number: int) -> Bill:
    issued_on = date(2024, 1, 1) + timedelta(days=10 * number)  # all of them past due by the clock's day
    return Bill(
        provider=account.provider,
        account_id=account.account_id,
        provider_bill_id=f"b{number:03d}",
        category=Category.WATER,
        amount=Decimal(10 + number),
        currency="USD",
        issued_on=issued_on,
        due_on=issued_on + timedelta(days=21),
        status=BillStatus.UNPAID,
    )


@pytest.mark.parametrize("extra", [0, 1], ids=["at_the_bound", "one_past_it"])
def test_an_accounts_summary_lists_its_latest_open_bills_and_the_totals_count_every_one(
    api: Api, table: BillsTable, clock: Clock, extra: int
) -> None:
    # Given an account with as many unpaid bills as its summary lists, or one more
    account = linked_account(api, table)
    bills = [unpaid_bill(account, number) for number in range(OPEN_BILLS_LISTED + extra)]
    table.bills.save_fetched_bills(account, bills, clock())
    # Then its summary lists the latest due of them, and keeps the earlier one only in sums
    stored = table.accounts.get_account(account.user_id, account.account_id)
    assert stored is not None
    summary = stored.account.summary
    assert [bill.provider_bill_id for bill in summary.open_bills] == [bill.provider_bill_id for bill in bills[extra:]]
    if extra:
        assert summary.earlier_open is not None
        assert (summary.earlier_open.count, summary.earlier_open.amounts) == (1, {"USD": Decimal(10)})
    else:
        assert summary.earlier_open is None
    # and GET /bills still owes, and counts as overdue, every one of them
    body = response_json(raw_bills_page(api, account.user_id))
    owed = f"{sum(bill.amount for bill in bills)}.00"
    assert body["totals"]["due"] == body["totals"]["overdue"] == {"USD": owed}
    assert body["totals"]["overdue_count"] == len(bills)
    assert len(body["overdue"]) == OPEN_BILLS_LISTED


# ------------------------------------------------------------------ accounts per user
def fill_with_accounts(table: BillsTable, model: Account, count: int) -> None:
    """Links ``count`` more accounts like ``model`` straight through the store (each its own provider account)."""
    for number in range(count):
        account = model.model_copy(update={"account_id": f"{number:032x}"})
        table.accounts.create_account(account, f"CW-FILL-{number}", b"ciphertext")


def test_a_user_links_accounts_up_to_the_cap_and_again_after_deleting_one(api: Api, table: BillsTable) -> None:
    # Given a user with one account short of the cap
    first = linked_account(api, table)
    fill_with_accounts(table, first, MAX_ACCOUNTS_PER_USER - 2)
    # When they link the last one the cap allows, it is linked
    status, body = api.link_clearwater(first.user_id, "cw_sandbox_the_last_one")
    assert status == 201, body
    # and one more is refused, with the limit, and stores nothing
    status, body = api.link_clearwater(first.user_id, "cw_sandbox_one_too_many")
    assert (status, body["code"], body["details"]) == (409, "too_many_accounts", {"limit": MAX_ACCOUNTS_PER_USER})
    assert len(table.accounts.list_accounts(first.user_id)) == MAX_ACCOUNTS_PER_USER
    # After deleting one, that link succeeds
    assert api.delete_account(first.user_id, first.account_id)[0] == 204
    status, body = api.link_clearwater(first.user_id, "cw_sandbox_one_too_many")
    assert status == 201, body
    assert len(table.accounts.list_accounts(first.user_id)) == MAX_ACCOUNTS_PER_USER


def test_a_profile_from_before_the_count_is_counted_at_its_next_link(api: Api, table: BillsTable, stack: Stack) -> None:
    # Given a user at the cap whose profile predates the count
    first = linked_account(api, table)
    fill_with_accounts(table, first, MAX_ACCOUNTS_PER_USER - 1)
    boto3.client("dynamodb").update_item(
        TableName=stack.refs["BillsTable"],
        Key={"PK": {"S": f"USER#{first.user_id}"}, "SK": {"S": "PROFILE"}},
        UpdateExpression="REMOVE account_count",
    )
    # Then a link counts their accounts and refuses the one past the cap
    status, body = api.link_clearwater(first.user_id, "cw_sandbox_one_too_many")
    assert (status, body["code"]) == (409, "too_many_accounts")


# ------------------------------------------------------------------ bills kept per account
def kept_bill(account: Account, provider_bill_id: str, issued_on: date, status: BillStatus = BillStatus.PAID) -> Bill:
    return Bill(
        provider=account.provider,
        account_id=account.account_id,
        provider_bill_id=provider_bill_id,
        category=Category.WATER,
        amount=Decimal("40.00"),
        currency="USD",
        issued_on=issued_on,
        due_on=issued_on + timedelta(days=21),
        status=status,
    )


@pytest.mark.parametrize(
    ("clock", "first_kept"),
    [
        ("2028-02-29T23:59:00+00:00", date(2024, 2, 1)),
        ("2027-03-31T00:00:00+00:00", date(2023, 3, 1)),
        ("2027-01-01T00:00:00+00:00", date(2023, 1, 1)),
    ],
    indirect=["clock"],
)
def test_paid_bills_past_48_months_are_pruned_at_the_next_fetch_and_unpaid_ones_kept(
    api: Api, table: BillsTable, clock: Clock, first_kept: date
) -> None:
    # Given an account whose fetch a month ago stored a paid bill issued on the first day kept today, one
    # issued the day before, an unpaid one from two years before that, and a recent one
    account = linked_account(api, table)
    fetched = [
        kept_bill(account, "inside", first_kept),
        kept_bill(account, "outside", first_kept - timedelta(days=1)),
        kept_bill(account, "old-unpaid", first_kept - timedelta(days=730), BillStatus.UNPAID),
        kept_bill(account, "recent", clock.today() - timedelta(days=40)),
    ]
    assert table.bills.save_fetched_bills(account, fetched, clock.at(days=-31)) == 4
    insights_before = insights_of(api, account.user_id)
    # When the provider lists the same bills at today's fetch
    assert table.bills.save_fetched_bills(account, fetched, clock()) == 1
    # Then only the paid bill past the 48 months is gone, and the summary counts what remains
    remaining = sorted(table.bills.bills_of_account(account), key=lambda bill: bill.provider_bill_id)
    assert [bill.provider_bill_id for bill in remaining] == ["inside", "old-unpaid", "recent"]
    stored = table.accounts.get_account(account.user_id, account.account_id)
    assert stored is not None and stored.account.summary == AccountSummary.of(remaining)
    # and the bills API shows exactly those, still owing the old unpaid one, and insights are unchanged
    body = response_json(raw_bills_page(api, account.user_id))
    assert sorted(bill["provider_bill_id"] for bill in body["bills"]) == ["inside", "old-unpaid", "recent"]
    assert [account["bill_count"] for account in body["accounts"]] == [3]
    assert (body["totals"]["due"], body["totals"]["overdue_count"]) == ({"USD": "40.00"}, 1)
    assert insights_of(api, account.user_id) == insights_before
    # and the next fetch listing it again (within the same day) neither adds it back nor writes anything
    clock.advance(seconds=30)
    with dynamodb_requests(table.client) as sent:
        assert table.bills.save_fetched_bills(account, fetched, clock()) == 0
    assert [name for name, _ in sent if name == "TransactWriteItems"] == []
    assert table.bills.bills_of_account(account) == remaining


def insights_of(api: Api, user_id: str) -> dict[str, Any]:
    """The longest insights the API gives."""
    status, body, _ = api.call(
        api.insights, "GET", "/insights", user_id=user_id, query={"months": str(MAX_INSIGHT_MONTHS)}
    )
    assert status == 200, body
    return dict(body)
