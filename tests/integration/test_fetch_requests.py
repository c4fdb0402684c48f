"""The DynamoDB requests one scheduled fetch makes, each named by operation and by the key prefixes of
what it reads or writes, against moto and the sandbox over HTTP: every request the fetcher needs has a
reason, and one more fails here. The local moto server answers about 80 DynamoDB requests a second, so
these counts set how many accounts a second it can feed the providers' limits with.

Each counted fetch runs in a fresh execution environment (the fetcher's module loaded again), so the
circuit's state is read once, as on a cold start; a warm environment serves it from Powertools' cache.
The request budget's leases are the limiter's (``test_fetch_safeguards`` counts them): here they are
only held to the budget's own keys.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import date, timedelta
from types import ModuleType
from typing import Any

import boto3
import botocore.client
import pytest

from billhub import keys
from billhub.models import AccountStatus, FetchRequest
from billhub.store import BillsTable
from billhub.store.accounts import StoredAccount
from localcloud.provision import Stack
from tests.conftest import Clock
from tests.integration.harness import Api, dynamodb_requests
from tests.integration.test_consistency import (
    T0,
    T1,
    T2,
    assert_summary_matches_bills,
    bill,
    linked_account,
    stored_state,
)

type Sent = list[tuple[str, dict[str, Any]]]

REQUEST_BUDGET = "RATE#"


@pytest.fixture
def every_dynamodb_request(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Sent:
    """Every DynamoDB request any client sends (the fetcher builds several), in order."""
    sent: Sent = []
    make_api_call = botocore.client.BaseClient._make_api_call  # type: ignore[attr-defined]

    def recorded(client: Any, operation: str, params: dict[str, Any]) -> Any:
        if client.meta.service_model.service_name == "dynamodb":
            sent.append((operation, params))
        return make_api_call(client, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", recorded)
    return sent


def key_prefixes(key: dict[str, Any]) -> str:
    """What an item is, by its keys' prefixes (``billhub.keys``): ``ACCOUNT#``, ``BILL#``, ``RATE#``..."""
    pk, sk = key["PK"]["S"], key["SK"]["S"]
    if pk == keys.CIRCUIT_PK:
        return keys.CIRCUIT_PK
    if not pk.startswith(keys.USER):
        return next(prefix for prefix in keys.PREFIXES if pk.startswith(prefix))
    return next(prefix for prefix in keys.PREFIXES if sk.startswith(prefix))


def described(operation: str, params: dict[str, Any]) -> tuple[str, str]:
    """(operation, what it reads or writes); a transaction's items joined with ``+``."""
    if operation == "TransactWriteItems":
        parts = [next(iter(item.values())) for item in params["TransactItems"]]
        return operation, "+".join(key_prefixes(part.get("Key") or part["Item"]) for part in parts)
    if operation == "Query":
        return operation, key_prefixes(
            {"PK": params["ExpressionAttributeValues"][":pk"], "SK": params["ExpressionAttributeValues"][":prefix"]}
        )
    return operation, key_prefixes(params.get("Key") or params["Item"])


def scheduled_fetch(api: Api, load_handler: Callable[[str], ModuleType], user_id: str, account_id: str) -> None:
    """The planner's message for the account (no job), delivered to a fetcher in a fresh environment."""
    request = FetchRequest(user_id=user_id, account_id=account_id, reason="schedule")
    boto3.client("sqs").send_message(QueueUrl=api.stack.refs["FetchQueue"], MessageBody=request.model_dump_json())
    api.fetch = load_handler("FetchProviderFunction")
    assert api.deliver() == {"batchItemFailures": []}


def requests_of_the_fetch(sent: Sent, user_id: str, account_id: str) -> Counter[tuple[str, str]]:
    """The fetch's requests but the budget's leases, counted; checks each user item is this account's."""
    counted: Counter[tuple[str, str]] = Counter()
    for operation, params in sent:
        key = params.get("Key") or params.get("Item")
        if key is not None and key["PK"]["S"].startswith(keys.USER):
            assert keys.user_id_of(key["PK"]["S"]) == user_id
            if key["SK"]["S"].startswith(keys.ACCOUNT):
                assert keys.account_id_of(key["SK"]["S"]) == account_id
        request = described(operation, params)
        if request[1] == REQUEST_BUDGET:
            assert operation == "UpdateItem"  # a lease of provider request slots
            continue
        counted[request] += 1
    return counted


@pytest.mark.clock("2026-10-31T12:00:00+00:00")
def test_a_scheduled_fetch_makes_only_the_requests_it_needs(
    api: Api, clock: Clock, load_handler: Callable[[str], ModuleType], every_dynamodb_request: Sent
) -> None:
    # Given a ClearWater account whose bills were fetched on the last day of a month
    user_id = api.user()
    status, body = api.link_clearwater(user_id)
    assert status == 201, body
    account_id = body["account_id"]
    scheduled_fetch(api, load_handler, user_id, account_id)
    assert api.bills_of(user_id, "clearwater")["bills"]

    # When it is fetched again, its bills unchanged at the provider
    every_dynamodb_request.clear()
    scheduled_fetch(api, load_handler, user_id, account_id)
    # Then the fetch reads the account once (the save goes by that read) and the circuit's state once
    # (cold), and writes the account once: its bills are what the last saved fetch read, so they are
    # not read again; no transaction, no bill, no job result (no job)
    assert requests_of_the_fetch(every_dynamodb_request, user_id, account_id) == {
        ("GetItem", keys.ACCOUNT): 1,
        ("GetItem", keys.CIRCUIT_PK): 1,
        ("UpdateItem", keys.ACCOUNT): 1,
    }

    # When a month's new bill is out at the next fetch
    clock.advance(days=1)
    every_dynamodb_request.clear()
    scheduled_fetch(api, load_handler, user_id, account_id)
    # Then its bills are read too, and one transaction writes the new bill with the account's summary
    # and its bill.created event (in the account's outbox), which one update empties once it is published
    assert requests_of_the_fetch(every_dynamodb_request, user_id, account_id) == {
        ("GetItem", keys.ACCOUNT): 1,
        ("GetItem", keys.CIRCUIT_PK): 1,
        ("Query", keys.BILL): 1,
        ("TransactWriteItems", f"{keys.BILL}+{keys.ACCOUNT}"): 1,
        ("UpdateItem", keys.ACCOUNT): 1,
    }
    assert len(api.bills_of(user_id, "clearwater")["bills"]) == 25


# ------------------------------------------------------------------ a save going by the fetcher's read
@pytest.fixture
def table(stack: Stack) -> BillsTable:
    return BillsTable(boto3.client("dynamodb"), stack.refs["BillsTable"])


def read_now(table: BillsTable, user_id: str, account_id: str) -> StoredAccount:
    stored = table.accounts.get_account(user_id, account_id)
    assert stored is not None
    return stored


def test_a_save_whose_read_of_the_account_went_stale_starts_over_from_a_fresh_one(api: Api, table: BillsTable) -> None:
    # Given a fetch that read its account, and another fetch that saved a bill since
    account = linked_account(api, table)
    seen = read_now(table, account.user_id, account.account_id)
    table.bills.save_fetched_bills(account, [bill(account, "b1")], T1)
    # When the first saves what it fetched, going by its read
    fetched = [bill(account, "b1"), bill(account, "b2")]
    with dynamodb_requests(table.client) as sent:
        changed = table.bills.save_fetched_bills(account, fetched, T2, seen=seen)
    # Then its write was refused (the bills' version moved), and it saved again from a fresh read
    assert [name for name, _ in sent] == ["Query", "TransactWriteItems", "GetItem", "Query", "TransactWriteItems"]
    assert changed == 1
    assert sorted(stored_state(table, account)[0]) == ["b1", "b2"]
    assert_summary_matches_bills(table, account)


def test_a_save_whose_read_went_stale_never_overwrites_a_newer_fetch(api: Api, table: BillsTable) -> None:
    # Given a fetch that read its account and asked the provider at T1, and a newer fetch (T2) that saved since
    account = linked_account(api, table)
    seen = read_now(table, account.user_id, account.account_id)
    table.bills.save_fetched_bills(account, [bill(account, "b1", amount="50.00", revision=2)], T2)
    # When the older one saves, going by its read
    changed = table.bills.save_fetched_bills(account, [bill(account, "b1")], T1, seen=seen)
    # Then it stores nothing: the newer bill and the time of the newer success stay
    bills, current = stored_state(table, account)
    assert changed == 0
    assert (bills["b1"].revision, current.last_success_at) == (2, T2)


def test_a_save_whose_read_went_stale_keeps_a_later_refusal(api: Api, table: BillsTable) -> None:
    # Given a fetch that read its account and asked the provider at T1, and a refusal recorded at T2 since
    account = linked_account(api, table)
    table.bills.save_fetched_bills(account, [bill(account, "b1")], T0)
    seen = read_now(table, account.user_id, account.account_id)
    assert table.accounts.mark_needs_reauth(seen, "refused", T2)
    # When the fetch saves unchanged bills, going by its read
    assert table.bills.save_fetched_bills(account, [bill(account, "b1")], T1, seen=seen) == 0
    # Then the account still asks its user to act, and records the success
    current = stored_state(table, account)[1]
    assert (current.status, current.last_attempt_at, current.last_success_at) == (AccountStatus.NEEDS_REAUTH, T2, T1)


# ------------------------------------------------------------------ skipping the read of the bills
def account_item(stack: Stack, account: Any) -> dict[str, Any]:
    key = {"PK": {"S": keys.user_pk(account.user_id)}, "SK": {"S": keys.account_sk(account.account_id)}}
    return boto3.client("dynamodb").get_item(TableName=stack.refs["BillsTable"], Key=key)["Item"]


def test_the_same_bills_again_are_read_again_once_the_retention_would_prune_one(api: Api, table: BillsTable) -> None:
    # Given a paid bill kept on T0 (issued after the cutoff of November 2026) but not a month later
    account = linked_account(api, table)
    fetched = [bill(account, "old", issued_on=date(2022, 11, 15)), bill(account, "b1")]
    table.bills.save_fetched_bills(account, fetched, T0)
    # When the provider still lists both in December
    later = T0 + timedelta(days=31)
    seen = read_now(table, account.user_id, account.account_id)
    with dynamodb_requests(table.client) as sent:
        changed = table.bills.save_fetched_bills(account, fetched, later, seen=seen)
    # Then the bills are read, and the old one is pruned with the summary
    assert [name for name, _ in sent] == ["Query", "TransactWriteItems"]
    assert changed == 1
    assert sorted(stored_state(table, account)[0]) == ["b1"]
    assert_summary_matches_bills(table, account)


def test_a_save_cut_short_between_its_transactions_counts_as_no_saved_fetch(
    api: Api, table: BillsTable, stack: Stack
) -> None:
    # Given an account whose fetch of 10 bills was saved, then a save of 150 that stops after its first
    # transaction (99 bills), as a Lambda timing out
    account = linked_account(api, table)
    many = [
        bill(account, f"b{index:03}", issued_on=date(2023, 1, 1) + timedelta(days=9 * index)) for index in range(150)
    ]
    table.bills.save_fetched_bills(account, many[-10:], T0)
    assert "last_fetch" in account_item(stack, account)
    transactions = 0

    def cut_short(**_: Any) -> None:
        nonlocal transactions
        transactions += 1
        if transactions == 2:
            raise TimeoutError("the function timed out")

    table.client.meta.events.register("before-call.dynamodb.TransactWriteItems", cut_short)
    with pytest.raises(TimeoutError):
        table.bills.save_fetched_bills(account, many, T1)
    table.client.meta.events.unregister("before-call.dynamodb.TransactWriteItems", cut_short)
    # Then the account names no fetch as saved: the one before is no longer what its bills are
    assert "last_fetch" not in account_item(stack, account)
    # When the same bills are fetched again
    seen = read_now(table, account.user_id, account.account_id)
    with dynamodb_requests(table.client) as sent:
        changed = table.bills.save_fetched_bills(account, many, T2, seen=seen)
    # Then they are read and the rest saved; the next fetch of the same bills reads none
    assert [name for name, _ in sent] == ["Query", "TransactWriteItems"]
    assert changed == 41
    assert_summary_matches_bills(table, account)
    seen = read_now(table, account.user_id, account.account_id)
    with dynamodb_requests(table.client) as sent:
        table.bills.save_fetched_bills(account, many, T2 + timedelta(hours=1), seen=seen)
    assert [name for name, _ in sent] == ["UpdateItem"]
