"""Writes that meet another transaction in flight: on AWS they fail with ``TransactionConflictException``
(a transaction is cancelled with reason ``TransactionConflict``) and botocore does not retry them, so
the store does, a few times, then says the item kept changing (``ConcurrentUpdate``)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from billhub.keys import link_sk, user_pk
from billhub.models import Account, Preferences, User
from billhub.store import CONFLICT_ATTEMPTS, BillsTable, ConcurrentUpdate
from billhub.store.errors import AlreadyExists
from tests.conftest import Clock
from tests.integration.harness import Api


class Conflicts:
    """Answers the first ``times`` calls of ``operation`` on ``client`` with a transaction conflict
    instead of sending them (a single-item write's ``TransactionConflictException``, or a transaction
    cancelled with ``TransactionConflict`` on its last item and ``reasons`` given for the others)."""

    def __init__(self, client: Any, operation: str, times: int, reasons: list[str] | None = None) -> None:
        self.calls = 0
        self._times = times
        self._reasons = reasons
        self._operation = operation
        client.meta.events.register(f"before-call.dynamodb.{operation}", self._before_call)

    def _before_call(self, params: dict[str, Any], **_: Any) -> Any:
        self.calls += 1
        if self.calls > self._times:
            return None
        if self._operation != "TransactWriteItems":
            return SimpleNamespace(status_code=400), {
                "Error": {"Code": "TransactionConflictException", "Message": "in a transaction in flight"}
            }
        items = json.loads(params["body"])["TransactItems"]
        reasons = self._reasons or ["None"] * (len(items) - 1) + ["TransactionConflict"]
        assert len(reasons) == len(items)
        return SimpleNamespace(status_code=400), {
            "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
            "CancellationReasons": [{"Code": code} for code in reasons],
        }


@pytest.fixture
def now(clock: Clock) -> datetime:
    return clock()


@pytest.fixture
def client() -> Any:
    return boto3.client("dynamodb")


@pytest.fixture
def table(api: Api, client: Any) -> BillsTable:
    return BillsTable(client, api.stack.refs["BillsTable"])


def linked(api: Api, table: BillsTable) -> Any:
    user_id = api.user()
    status, body = api.link_clearwater(user_id)
    assert status == 201, body
    stored = table.accounts.get_account(user_id, body["account_id"])
    assert stored is not None
    return stored


def links_of(client: Any, api: Api, user_id: str) -> list[dict[str, Any]]:
    items = client.query(
        TableName=api.stack.refs["BillsTable"],
        KeyConditionExpression="PK = :pk AND begins_with(SK, :link)",
        ExpressionAttributeValues={":pk": {"S": user_pk(user_id)}, ":link": {"S": "LINK#"}},
        ConsistentRead=True,
    )["Items"]
    return list(items)


# ------------------------------------------------------------------ single-item account updates
def test_renewed_credentials_that_met_a_transaction_are_stored_once_on_a_retry(
    api: Api, table: BillsTable, client: Any
) -> None:
    stored = linked(api, table)
    conflicts = Conflicts(client, "UpdateItem", times=1)
    assert table.accounts.save_renewed_credentials(stored, b"rotated") is True
    assert conflicts.calls == 2
    current = table.accounts.get_account(stored.account.user_id, stored.account.account_id)
    assert current is not None
    assert (current.credentials_ciphertext, current.credentials_version) == (b"rotated", stored.credentials_version + 1)


def test_renewed_credentials_that_keep_meeting_transactions_raise_concurrent_update(
    api: Api, table: BillsTable, client: Any
) -> None:
    stored = linked(api, table)
    conflicts = Conflicts(client, "UpdateItem", times=CONFLICT_ATTEMPTS)
    with pytest.raises(ConcurrentUpdate):
        table.accounts.save_renewed_credentials(stored, b"rotated")
    assert conflicts.calls == CONFLICT_ATTEMPTS
    current = table.accounts.get_account(stored.account.user_id, stored.account.account_id)
    assert current is not None and current.credentials_version == stored.credentials_version


def test_a_reschedule_that_met_a_transaction_lands_on_a_retry(
    now: datetime, api: Api, table: BillsTable, client: Any
) -> None:
    stored = linked(api, table)
    account = stored.account
    Conflicts(client, "UpdateItem", times=1)
    assert table.schedule.reschedule(account, now + timedelta(days=3), account.refresh_interval) is True
    current = table.accounts.get_account(account.user_id, account.account_id)
    assert current is not None and current.account.next_refresh_at == now + timedelta(days=3)


def test_a_failed_condition_is_still_a_lost_race_and_not_retried(api: Api, table: BillsTable, client: Any) -> None:
    stored = linked(api, table)
    assert table.accounts.save_renewed_credentials(stored, b"first") is True
    conflicts = Conflicts(client, "UpdateItem", times=0)
    assert table.accounts.save_renewed_credentials(stored, b"stale") is False
    assert conflicts.calls == 1


# ------------------------------------------------------------------ manual refresh
def test_a_manual_refresh_that_met_a_transaction_starts_once_on_a_retry(
    now: datetime, api: Api, table: BillsTable, client: Any
) -> None:
    user_id = api.user()
    conflicts = Conflicts(client, "UpdateItem", times=1)
    assert table.users.start_manual_refresh(user_id, now, timedelta(minutes=5)) is None
    assert conflicts.calls == 2
    # It was recorded: a second one at once is refused with the time of the first.
    assert table.users.start_manual_refresh(user_id, now, timedelta(minutes=5)) == now


def test_a_manual_refresh_that_keeps_meeting_transactions_raises_concurrent_update(
    now: datetime, api: Api, table: BillsTable, client: Any
) -> None:
    user_id = api.user()
    conflicts = Conflicts(client, "UpdateItem", times=CONFLICT_ATTEMPTS)
    with pytest.raises(ConcurrentUpdate):
        table.users.start_manual_refresh(user_id, now, timedelta(minutes=5))
    assert conflicts.calls == CONFLICT_ATTEMPTS
    assert table.users.start_manual_refresh(user_id, now, timedelta(minutes=5)) is None  # nothing was recorded


# ------------------------------------------------------------------ linking
def another_account(stored: Any) -> Account:
    return stored.account.model_copy(update={"account_id": "acc-second"})  # type: ignore[no-any-return]


def test_a_link_that_met_a_transaction_is_stored_once_on_a_retry(api: Api, table: BillsTable, client: Any) -> None:
    stored = linked(api, table)
    account = another_account(stored)
    conflicts = Conflicts(client, "TransactWriteItems", times=1)
    table.accounts.create_account(account, "CW-00000002", b"ciphertext")
    assert conflicts.calls == 2
    assert table.accounts.get_account(account.user_id, account.account_id) is not None
    assert len(links_of(client, api, account.user_id)) == 2


def test_a_link_that_keeps_meeting_transactions_raises_concurrent_update(
    api: Api, table: BillsTable, client: Any
) -> None:
    stored = linked(api, table)
    account = another_account(stored)
    conflicts = Conflicts(client, "TransactWriteItems", times=CONFLICT_ATTEMPTS)
    with pytest.raises(ConcurrentUpdate):
        table.accounts.create_account(account, "CW-00000002", b"ciphertext")
    assert conflicts.calls == CONFLICT_ATTEMPTS
    assert table.accounts.get_account(account.user_id, account.account_id) is None
    assert len(links_of(client, api, account.user_id)) == 1


def test_a_cancellation_naming_a_failed_condition_is_not_retried_as_a_conflict(
    api: Api, table: BillsTable, client: Any
) -> None:
    stored = linked(api, table)
    conflicts = Conflicts(
        client, "TransactWriteItems", times=1, reasons=["ConditionalCheckFailed", "None", "TransactionConflict"]
    )
    with pytest.raises(AlreadyExists):
        table.accounts.create_account(another_account(stored), "CW-00000002", b"ciphertext")
    assert conflicts.calls == 1


def test_a_relink_that_met_a_transaction_moves_the_link_once_on_a_retry(
    now: datetime, api: Api, table: BillsTable, client: Any
) -> None:
    stored = linked(api, table)
    account = stored.account
    conflicts = Conflicts(client, "TransactWriteItems", times=1)
    table.accounts.relink(stored, "CW-00000009", "•••", now, b"repaired")
    assert conflicts.calls == 2
    current = table.accounts.get_account(account.user_id, account.account_id)
    assert current is not None
    assert current.link_key == link_sk(account.provider, "CW-00000009")
    assert (current.credentials_ciphertext, current.credentials_version) == (
        b"repaired",
        stored.credentials_version + 1,
    )
    assert [link["SK"]["S"] for link in links_of(client, api, account.user_id)] == [current.link_key]


def test_a_relink_that_keeps_meeting_transactions_raises_concurrent_update(
    now: datetime, api: Api, table: BillsTable, client: Any
) -> None:
    stored = linked(api, table)
    account = stored.account
    conflicts = Conflicts(client, "TransactWriteItems", times=CONFLICT_ATTEMPTS)
    with pytest.raises(ConcurrentUpdate):
        table.accounts.relink(stored, "CW-00000009", "•••", now, b"repaired")
    assert conflicts.calls == CONFLICT_ATTEMPTS
    current = table.accounts.get_account(account.user_id, account.account_id)
    assert current is not None
    assert (current.link_key, current.credentials_version) == (stored.link_key, stored.credentials_version)


def test_a_user_whose_creation_met_a_transaction_is_created_once_on_a_retry(
    now: datetime, table: BillsTable, client: Any
) -> None:
    # Given a registration whose transaction is first cancelled for a conflict
    conflicts = Conflicts(client, "TransactWriteItems", times=1)
    user = User(user_id="u-retried", email="retried@example.com", created_at=now)
    # When the user is created, Then it was sent again and stored once, under its email
    table.users.create_user(user, "hash")
    assert conflicts.calls == 2
    assert table.users.user_id_for_email("retried@example.com") == "u-retried"
    # and an email taken is still a conflict for the caller, not a retry
    with pytest.raises(AlreadyExists):
        table.users.create_user(user, "hash")
    assert conflicts.calls == 3


def test_a_link_in_progress_is_stored_and_redeemed_once_through_conflicts(
    now: datetime, api: Api, table: BillsTable, client: Any
) -> None:
    # Given a user starting an OAuth link, its state's transaction first cancelled for a conflict
    user_id = api.user()
    stored = Conflicts(client, "TransactWriteItems", times=1)
    table.oauth_states.put_oauth_state(user_id, "nonce-1", {"provider": "sparkgrid"}, now + timedelta(minutes=10))
    assert stored.calls == 2
    # When the callback redeems it and its write first meets a transaction in flight
    redeemed = Conflicts(client, "UpdateItem", times=2)
    # Then the link comes back once, and only once
    assert table.oauth_states.consume_oauth_state("nonce-1", now) == {"provider": "sparkgrid"}
    assert redeemed.calls == 3
    assert table.oauth_states.consume_oauth_state("nonce-1", now) is None


def test_preferences_that_keep_meeting_transactions_raise_concurrent_update(
    api: Api, table: BillsTable, client: Any
) -> None:
    user_id = api.user()
    conflicts = Conflicts(client, "UpdateItem", times=CONFLICT_ATTEMPTS)
    with pytest.raises(ConcurrentUpdate):
        table.users.update_preferences(user_id, Preferences(due_soon_days=3))
    assert conflicts.calls == CONFLICT_ATTEMPTS
    assert table.users.preferences(user_id).due_soon_days == 7  # nothing was written
    table.users.update_preferences(user_id, Preferences(due_soon_days=3))
    assert table.users.preferences(user_id).due_soon_days == 3
