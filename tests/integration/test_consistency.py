"""Bills a person can trust: each consistency rule of the store proved against moto, through the store
and through the handlers (races, stale writes, revisions, deletes of many bills, crashes half-way)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
import pytest

from billhub import deletion
from billhub.api import bills_table
from billhub.models import Account, AccountStatus, AccountSummary, Bill, BillStatus, Category
from billhub.store import AccountGone, BillsTable
from billhub.store.bills import Bills
from billhub.store.deletions import Deletions
from localcloud.provision import Stack
from mock_provider.control import Control
from tests.conftest import Clock
from tests.events import scheduled_event
from tests.integration.harness import Api, LambdaContext, ReadsBeforeWrites, dynamodb_requests, raw_items
from tests.sandbox import sandbox_admin

T0 = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
T2 = T0 + timedelta(hours=2)


@pytest.fixture
def table(stack: Stack) -> BillsTable:
    return BillsTable(boto3.client("dynamodb"), stack.refs["BillsTable"])


def linked_account(api: Api, table: BillsTable, email: str = "ada@example.com", key: str = "cw_sandbox_a") -> Account:
    """A ClearWater account with no bills yet (its first fetch is taken off the queue by the harness)."""
    user_id = api.user(email)
    status, body = api.link_clearwater(user_id, key)
    assert status == 201, body
    stored = table.accounts.get_account(user_id, body["account_id"])
    assert stored is not None
    return stored.account


def bill(
    account: Account,
    provider_bill_id: str,
    amount: str = "40.00",
    issued_on: date = date(2026, 9, 1),
    status: BillStatus = BillStatus.PAID,
    revision: int = 1,
) -> Bill:
    return Bill(
        provider=account.provider,
        account_id=account.account_id,
        provider_bill_id=provider_bill_id,
        category=Category.WATER,
        amount=Decimal(amount),
        currency="USD",
        issued_on=issued_on,
        due_on=issued_on + timedelta(days=21),
        status=status,
        revision=revision,
    )


def stored_state(table: BillsTable, account: Account) -> tuple[dict[str, Bill], Account]:
    """The account's bills by provider bill id, and the account as stored (with its summary)."""
    bills = {stored.provider_bill_id: stored for stored in table.bills.bills_of_account(account)}
    current = table.accounts.get_account(account.user_id, account.account_id)
    assert current is not None
    return bills, current.account


def assert_summary_matches_bills(table: BillsTable, account: Account) -> None:
    bills, current = stored_state(table, account)
    assert current.summary == AccountSummary.of(bills.values())


# ------------------------------------------------------------------ bill writes
@pytest.mark.parametrize("first", ["older", "newer"])
def test_two_fetches_racing_leave_the_newer_data_whoever_writes_first(api: Api, table: BillsTable, first: str) -> None:
    # Given an account holding six bills, the last one unpaid
    account = linked_account(api, table)
    held = [bill(account, f"b{month}", issued_on=date(2026, month, 1)) for month in range(4, 10)]
    held[-1] = bill(account, "b9", issued_on=date(2026, 9, 1), status=BillStatus.UNPAID)
    table.bills.save_fetched_bills(account, held, T0)
    # and two fetches: an older one that saw a new unpaid bill b10, and a newer one that also saw b9
    # paid since and b8 corrected by the provider (revision 2)
    b10 = bill(account, "b10", "51.00", date(2026, 10, 1), BillStatus.UNPAID)
    older = [*held, b10]
    newer = [
        *held[:-2],
        bill(account, "b8", "12.34", date(2026, 8, 1), revision=2),
        bill(account, "b9", issued_on=date(2026, 9, 1), status=BillStatus.PAID),
        b10,
    ]
    saves = {
        "older": lambda: table.bills.save_fetched_bills(account, older, T1),
        "newer": lambda: table.bills.save_fetched_bills(account, newer, T2),
    }
    order = [first, "newer" if first == "older" else "older"]
    # When both read the account before either writes, and then write in the given order
    ReadsBeforeWrites([table.client], [saves[name] for name in order]).run()
    # Then the newer data stands: b8 corrected, b9 paid, b10 once, nothing merged or lost
    bills, current = stored_state(table, account)
    assert sorted(bills) == sorted(["b4", "b5", "b6", "b7", "b8", "b9", "b10"])
    assert (bills["b8"].amount, bills["b8"].revision) == (Decimal("12.34"), 2)
    assert bills["b9"].status is BillStatus.PAID
    assert bills["b10"] == b10
    assert current.last_success_at == T2
    # and the account's summary describes exactly those bills
    assert current.summary.bill_count == 7
    assert [open_bill.provider_bill_id for open_bill in current.summary.open_bills] == ["b10"]
    assert_summary_matches_bills(table, account)


@pytest.mark.parametrize("first", ["older", "newer"])
def test_a_bill_pruned_by_a_fetch_never_comes_back_from_an_older_one(api: Api, table: BillsTable, first: str) -> None:
    # Given an account holding a paid bill issued in October 2022, inside the 48 months kept in October
    # 2026 but not from November, and an unpaid bill of this year
    account = linked_account(api, table)
    old = bill(account, "old", issued_on=date(2022, 10, 15))
    recent = bill(account, "recent", issued_on=date(2026, 10, 1), status=BillStatus.UNPAID)
    table.bills.save_fetched_bills(account, [old, recent], datetime(2026, 10, 31, 21, 0, tzinfo=UTC))
    # and two fetches that both read the old bill corrected (revision 2): one asked the provider late on
    # 31 October, one on 1 November, when the old bill is past the retention
    corrected = bill(account, "old", "41.00", date(2022, 10, 15), revision=2)
    saves = {
        "older": lambda: table.bills.save_fetched_bills(
            account, [corrected, recent], datetime(2026, 10, 31, 23, 0, tzinfo=UTC)
        ),
        "newer": lambda: table.bills.save_fetched_bills(account, [corrected, recent], T0),
    }
    order = [first, "newer" if first == "older" else "older"]
    # When both read the account before either writes, and then write in the given order
    ReadsBeforeWrites([table.client], [saves[name] for name in order]).run()
    # Then the old bill is gone, whoever wrote first, and the summary describes what remains
    bills, current = stored_state(table, account)
    assert sorted(bills) == ["recent"]
    assert current.last_success_at == T0
    assert current.summary.bill_count == 1
    assert_summary_matches_bills(table, account)


def test_an_older_fetch_arriving_late_overwrites_nothing(api: Api, table: BillsTable) -> None:
    # Given a fetch at T2 stored that the bill was paid
    account = linked_account(api, table)
    table.bills.save_fetched_bills(account, [bill(account, "b1", status=BillStatus.PAID)], T2)
    # When a fetch that asked the provider earlier (T1, when it was still unpaid) saves afterwards
    changed = table.bills.save_fetched_bills(account, [bill(account, "b1", status=BillStatus.UNPAID)], T1)
    # Then it changes nothing: neither the bill nor the time of the last success
    bills, current = stored_state(table, account)
    assert changed == 0
    assert bills["b1"].status is BillStatus.PAID
    assert current.last_success_at == T2
    assert current.summary.open_bills == ()


def test_two_fetches_that_changed_nothing_never_move_the_last_success_back(api: Api, table: BillsTable) -> None:
    # Given an account holding one bill, and two fetches finding it unchanged: one asked at T2, one at T1
    account = linked_account(api, table)
    held = [bill(account, "b1")]
    table.bills.save_fetched_bills(account, held, T0)
    # When both read the account first, and the newer one writes first
    ReadsBeforeWrites(
        [table.client],
        [
            lambda: table.bills.save_fetched_bills(account, held, T2),
            lambda: table.bills.save_fetched_bills(account, held, T1),
        ],
    ).run()
    # Then the account was last refreshed at T2, not at T1
    assert stored_state(table, account)[1].last_success_at == T2


def test_a_success_older_than_a_refusal_keeps_the_account_needing_the_user(api: Api, table: BillsTable) -> None:
    # Given a fetch that asked the provider at T1, and another whose credentials were refused at T2
    account = linked_account(api, table)
    table.bills.save_fetched_bills(account, [bill(account, "b1")], T0)
    stored = table.accounts.get_account(account.user_id, account.account_id)
    assert stored is not None
    newer_bill = bill(account, "b2", issued_on=date(2026, 10, 1), status=BillStatus.UNPAID)
    # When the refusal is recorded between the older fetch's read and its write
    ReadsBeforeWrites(
        [table.client],
        [
            lambda: table.accounts.mark_needs_reauth(stored, "refused", T2),
            lambda: table.bills.save_fetched_bills(account, [bill(account, "b1"), newer_bill], T1),
        ],
    ).run()
    # Then the bills it read are kept (with the summary), but the account still asks the user to act
    bills, current = stored_state(table, account)
    assert sorted(bills) == ["b1", "b2"]
    assert (current.status, current.last_error, current.last_attempt_at) == (AccountStatus.NEEDS_REAUTH, "refused", T2)
    assert current.last_success_at == T1
    assert_summary_matches_bills(table, account)


def test_a_refetch_of_unchanged_bills_writes_no_bill(api: Api, table: BillsTable, stack: Stack) -> None:
    account = linked_account(api, table)
    bills = [bill(account, "b1"), bill(account, "b2", issued_on=date(2026, 10, 1), status=BillStatus.UNPAID)]
    table.bills.save_fetched_bills(account, bills, T1)
    before = [item for item in raw_items(stack) if item["SK"]["S"].startswith("BILL#")]
    with dynamodb_requests(table.client) as sent:
        changed = table.bills.save_fetched_bills(account, bills, T2)
    assert changed == 0
    assert [item for item in raw_items(stack) if item["SK"]["S"].startswith("BILL#")] == before
    # Reading the account (the bills are what the last saved fetch read, so they are not read again),
    # then one conditional update of the account's refresh time: no transaction.
    assert [name for name, _ in sent] == ["GetItem", "UpdateItem"]
    assert stored_state(table, account)[1].last_success_at == T2


def test_a_corrected_statement_replaces_the_bill_and_the_totals(
    api: Api, clock: Clock, mock_provider: tuple[str, Control]
) -> None:
    # Given a NorthGas account whose bills were fetched, the newest one unpaid (before its due day, the 22nd)
    clock.start_on_day_of_month(10)
    user_id = api.user()
    assert api.link_provider(user_id, "northgas", {"account_number": "NG20003000", "postcode": "NG1 1AA"})[0] == 201
    api.refresh_all(user_id)
    first = api.bills_of(user_id, "northgas")
    newest = first["bills"][0]
    assert newest["status"] == "unpaid"
    # When the provider corrects it (a new revision of the same statement) and the account is refetched
    sandbox_admin(
        mock_provider[0],
        "revise/northgas",
        {"account": "NG20003000", "bill_id": newest["provider_bill_id"], "amount": "99.99"},
    )
    assert api.refresh_all(user_id) == {"batchItemFailures": []}
    # Then the same bill holds the new amount and revision, and the totals follow it
    second = api.bills_of(user_id, "northgas")
    assert len(second["bills"]) == len(first["bills"])
    assert (second["bills"][0]["bill_id"], second["bills"][0]["amount"]) == (newest["bill_id"], "99.99")
    assert second["bills"][0]["revision"] == newest["revision"] + 1
    others_due = Decimal(first["totals"]["due"]["GBP"]) - Decimal(newest["amount"])
    assert second["totals"]["due"] == {"GBP": str(others_due + Decimal("99.99"))}


def test_equal_but_distinct_bills_are_never_merged(api: Api, table: BillsTable) -> None:
    account = linked_account(api, table)
    twins = [bill(account, "INV-1", "30.00"), bill(account, "INV-2", "30.00")]
    table.bills.save_fetched_bills(account, twins, T1)
    bills, current = stored_state(table, account)
    assert sorted(bills) == ["INV-1", "INV-2"]
    assert current.summary.bill_count == 2


def test_a_large_change_keeps_every_transaction_within_the_limit_and_the_summary_exact(
    api: Api, table: BillsTable
) -> None:
    account = linked_account(api, table)
    many = [
        bill(account, f"b{index:03}", issued_on=date(2023, 1, 1) + timedelta(days=9 * index)) for index in range(150)
    ]
    with dynamodb_requests(table.client) as sent:
        assert table.bills.save_fetched_bills(account, many, T1) == 150
    transactions = [len(params["TransactItems"]) for name, params in sent if name == "TransactWriteItems"]
    assert transactions == [100, 52]  # 99 bills + the account, then 51 + the account
    assert_summary_matches_bills(table, account)
    assert stored_state(table, account)[1].summary.bill_count == 150


# ------------------------------------------------------------------ deleting an account
def bill_count(stack: Stack, account_id: str) -> int:
    return sum(1 for item in raw_items(stack) if f"#{account_id}#" in item["SK"]["S"])


def test_deleting_an_account_with_150_bills_removes_everything_in_batches_of_25(
    api: Api, table: BillsTable, stack: Stack
) -> None:
    # Given an account holding 150 bills, and another account of the same user
    account = linked_account(api, table)
    user_id = account.user_id
    assert api.link_clearwater(user_id, "cw_sandbox_other")[0] == 201
    many = [
        bill(account, f"b{index:03}", issued_on=date(2023, 1, 1) + timedelta(days=9 * index)) for index in range(150)
    ]
    table.bills.save_fetched_bills(account, many, T1)
    assert bill_count(stack, account.account_id) == 150
    # When the user deletes it
    # The table the delete function's route is given (its module builds none of its own).
    with dynamodb_requests(bills_table().client) as sent:
        status, body = api.delete_account(user_id, account.account_id)
    # Then it is gone with all its bills, its credentials and its link; deletes went 25 at a time
    assert (status, body) == (204, None)
    batches = [
        len(params["RequestItems"][stack.refs["BillsTable"]]) for name, params in sent if name == "BatchWriteItem"
    ]
    assert batches == [25] * 6
    leftovers = [item["SK"]["S"] for item in raw_items(stack) if account.account_id in str(item)]
    assert leftovers == [f"DELETED#{account.account_id}"]
    assert [a["account_id"] for a in api.accounts(user_id)] != [] and all(
        a["account_id"] != account.account_id for a in api.accounts(user_id)
    )
    # and deleting again is fine, while someone else (or a made-up id) gets 404
    assert api.delete_account(user_id, account.account_id) == (204, None)
    assert api.delete_account(api.user("eve@example.com"), account.account_id)[0] == 404
    assert api.delete_account(user_id, "0" * 32)[0] == 404
    # and the provider account can be linked again at once
    assert api.link_clearwater(user_id, "cw_sandbox_a")[0] == 201


def test_a_fetch_in_flight_cannot_bring_back_a_deleted_accounts_bills(
    api: Api, table: BillsTable, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an account whose refresh is under way
    account = linked_account(api, table)
    save = Bills.save_fetched_bills

    def delete_while_the_provider_answers(self: Bills, *args: Any, **kwargs: Any) -> int:
        assert api.delete_account(account.user_id, account.account_id)[0] == 204
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Bills, "save_fetched_bills", delete_while_the_provider_answers)
    # When the account is deleted after the fetcher read it, before its bills are written
    result = api.refresh_all(account.user_id)
    # Then the fetch ends quietly (nothing to retry) and nothing of the account is left
    assert result == {"batchItemFailures": []}
    assert bill_count(stack, account.account_id) == 0
    assert table.accounts.get_account(account.user_id, account.account_id) is None


def test_a_deletion_that_lands_between_a_fetchs_read_and_its_write_wins(
    api: Api, table: BillsTable, stack: Stack
) -> None:
    # Given an account, a fetch that has read it, and a deletion that writes before the fetch does
    account = linked_account(api, table)
    outcome: list[str] = []

    def save() -> None:
        try:
            table.bills.save_fetched_bills(account, [bill(account, "b1")], T1)
            outcome.append("saved")
        except AccountGone:
            outcome.append("gone")

    ReadsBeforeWrites(
        [table.client],
        [lambda: table.account_deletions.begin_account_deletion(account.user_id, account.account_id, T2), save],
    ).run()
    # Then the fetch's transaction is refused (the account is being deleted) and it writes no bill
    assert outcome == ["gone"]
    assert bill_count(stack, account.account_id) == 0


def test_a_deletion_racing_the_first_fetchs_identity_leaves_no_link_behind(
    api: Api, table: BillsTable, stack: Stack
) -> None:
    # Given an account linked while its provider was down (its link guard still a pending one)
    account = linked_account(api, table)
    stored = table.accounts.get_account(account.user_id, account.account_id)
    assert stored is not None
    table.accounts.relink(stored, f"pending:{account.account_id}", "pending verification", T0)
    pending = table.accounts.get_account(account.user_id, account.account_id)
    assert pending is not None
    # When its first fetch confirms whose account it is between the deletion's read and its write
    ReadsBeforeWrites(
        [table.client],
        [
            lambda: table.accounts.relink(pending, "CW-REAL-1", "••••L-1", T1),
            lambda: table.account_deletions.begin_account_deletion(account.user_id, account.account_id, T2),
        ],
    ).run()
    deletion.delete_account(table, account.user_id, account.account_id, T2)
    # Then no link guard survives the account, and the provider account can be linked again
    links = [item["SK"]["S"] for item in raw_items(stack) if item["SK"]["S"].startswith("LINK#")]
    assert links == []


@pytest.mark.parametrize("finisher", ["repeated_delete", "planner_sweep"])
def test_a_deletion_that_crashed_half_way_is_hidden_at_once_and_finished_later(
    api: Api, table: BillsTable, stack: Stack, clock: Clock, monkeypatch: pytest.MonkeyPatch, finisher: str
) -> None:
    # Given an account with 60 bills whose deletion crashes after its first batch of deletes
    account = linked_account(api, table)
    many = [
        bill(account, f"b{index:03}", issued_on=date(2023, 1, 1) + timedelta(days=20 * index)) for index in range(60)
    ]
    table.bills.save_fetched_bills(account, many, T1)
    delete_batch = Deletions._delete_batch
    calls = 0

    def crash_after_one_batch(self: Deletions, keys: list[dict[str, Any]]) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("the function ran out of time")
        delete_batch(self, keys)

    monkeypatch.setattr(Deletions, "_delete_batch", crash_after_one_batch)
    status, body = api.delete_account(account.user_id, account.account_id)
    assert (status, body["code"]) == (500, "internal_error")
    monkeypatch.setattr(Deletions, "_delete_batch", delete_batch)
    # Then the account is already gone from every read, its credentials destroyed
    assert api.accounts(account.user_id) == []
    status, page, _ = api.call(api.bills, "GET", "/bills", user_id=account.user_id)
    assert (status, page["bills"], page["accounts"]) == (200, [], [])
    item = next(i for i in raw_items(stack) if i["SK"]["S"] == f"ACCOUNT#{account.account_id}")
    assert "credentials" not in item and item["status"]["S"] == "deleting"
    assert bill_count(stack, account.account_id) == 35
    # When it is finished: by the user trying again, or by the planner's sweep a while later
    if finisher == "repeated_delete":
        assert api.delete_account(account.user_id, account.account_id) == (204, None)
    else:
        clock.advance(minutes=16)
        outcome = api.planner.handler(scheduled_event(), LambdaContext())
        assert outcome["deletions_finished"] == 1
    # Then nothing of it is left
    assert bill_count(stack, account.account_id) == 0
    assert table.account_deletions.account_being_deleted(account.user_id, account.account_id) is None


def test_the_sweep_leaves_deletions_still_in_progress_alone(api: Api, table: BillsTable, clock: Clock) -> None:
    account = linked_account(api, table)
    assert table.account_deletions.begin_account_deletion(account.user_id, account.account_id, clock.now) is not None
    outcome = api.planner.handler(scheduled_event(), LambdaContext())
    assert outcome["deletions_finished"] == 0
    assert table.account_deletions.account_being_deleted(account.user_id, account.account_id) is not None


# ------------------------------------------------------------------ reads
def read_operations(api: Api, module: Any, path: str, user_id: str) -> list[str]:
    client = module.bills_table().client
    with dynamodb_requests(client) as sent:
        status, body, _ = api.call(module, "GET", path, user_id=user_id)
    assert status == 200, body
    return [name for name, _ in sent]


def test_reads_cost_the_same_requests_whatever_the_number_of_accounts(api: Api) -> None:
    one, three = api.user("one@example.com"), api.user("three@example.com")
    api.link_clearwater(one, "cw_sandbox_1")
    for key in ("cw_sandbox_2", "cw_sandbox_3", "cw_sandbox_4"):
        api.link_clearwater(three, key)
    api.refresh_all(one)
    api.refresh_all(three)
    # The profile (due-soon days), the accounts, one page of bills: one request each.
    assert read_operations(api, api.bills, "/bills", one) == ["GetItem", "Query", "Query"]
    assert read_operations(api, api.bills, "/bills", three) == ["GetItem", "Query", "Query"]
    assert read_operations(api, api.link, "/accounts", three) == ["Query"]
