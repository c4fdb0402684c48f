"""A person deletes their own account (``DELETE /me``): everything of theirs goes, through the handlers,
against moto provisioned from the template; nothing of anyone else's changes; their tokens stop working;
a crash half-way is finished by sending the request again or by the planner's sweep."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from billhub.models import Account, AccountStatus
from billhub.store import BillsTable, ConcurrentUpdate
from billhub.store.bills import Bills
from billhub.store.deletions import Deletions
from billhub.store.errors import ItemMissing
from localcloud.provision import Stack
from tests.conftest import Clock
from tests.events import authorizer_event, scheduled_event
from tests.integration.harness import Api, LambdaContext, dynamodb_requests

PASSWORD = "pw-" * 4  # what ``Api.user`` registers everyone with
EMAIL = "leaver@example.com"
OTHER_EMAIL = "stayer@example.com"
# One account at each sandbox provider (mock_provider/README.md), SparkGrid through OAuth2, and a second
# ClearWater one: five accounts of 24 bills each, so the deletion goes past 100 items.
CREDENTIALS = {
    "northgas": {"account_number": "NG20005000", "postcode": "NG1 1AA"},
    "clearwater": {"api_key": "cw_sandbox_leaver_home"},
    "fibrelink": {"username": "leaver", "password": "pass_good"},
}
SECOND_CLEARWATER = "cw_sandbox_leaver_cabin"
BILLS_PER_ACCOUNT = 24


@pytest.fixture
def table(stack: Stack) -> BillsTable:
    return BillsTable(boto3.client("dynamodb"), stack.refs["BillsTable"])


def scan(stack: Stack) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in boto3.client("dynamodb").get_paginator("scan").paginate(TableName=stack.refs["BillsTable"]):
        items += page["Items"]
    return items


def sign_in_counter(email: str) -> str:
    """The partition of the failed-login counter of an email (the store keys it by a digest)."""
    return f"LOGINATTEMPTS#account#{hashlib.sha256(email.encode()).hexdigest()[:32]}"


def is_of(item: dict[str, Any], user_id: str, email: str) -> bool:
    """Whether a raw item holds something of the user's: it names them (their partition, their
    idempotency records, an OAuth2 state), or it is their email's guard or its sign-in counter."""
    return user_id in json.dumps(item, default=str) or item["PK"]["S"] in (f"EMAIL#{email}", sign_in_counter(email))


def items_of(stack: Stack, user_id: str, email: str) -> list[dict[str, Any]]:
    return [item for item in scan(stack) if is_of(item, user_id, email)]


def kinds(items: list[dict[str, Any]]) -> Counter[str]:
    """How many items of each kind: the first part of the sort key, or of the partition key outside the
    user's partition."""
    return Counter(
        item["SK"]["S"].split("#")[0] if item["PK"]["S"].startswith("USER#") else item["PK"]["S"].split("#")[0]
        for item in items
    )


# Bookkeeping that is nobody's: requests sent to each provider per second, and sign-in counts per source
# IP (any request with a password, the deletion's too, counts an attempt against its IP).
NOBODYS = ("RATE#", "LOGINATTEMPTS#source#")


def everyone_else(stack: Stack, user_id: str, email: str) -> list[str]:
    """Every item of everyone else's, as canonical JSON."""
    return sorted(
        json.dumps(item, sort_keys=True, default=str)
        for item in scan(stack)
        if not is_of(item, user_id, email) and not item["PK"]["S"].startswith(NOBODYS)
    )


def token_of(api: Api, email: str, password: str = PASSWORD) -> str:
    status, body, _ = api.call(api.auth, "POST", "/auth/login", body={"email": email, "password": password})
    assert status == 200, body
    return str(body["access_token"])


def authorized(api: Api, token: str) -> bool:
    verdict = api.authorizer.handler(authorizer_event(f"Bearer {token}"), LambdaContext())
    return bool(verdict["isAuthorized"])


@dataclass(frozen=True)
class Leaver:
    user_id: str
    account_ids: list[str]


def leaver_with_everything(api: Api) -> Leaver:
    """A user holding one of every kind of item: five accounts with their link guards and 120 bills, a
    deleted account's marker, a refresh job, an ``Idempotency-Key`` record, a used and an unused OAuth2
    state, and a failed login counted against their email."""
    user_id = api.user(EMAIL)
    account_ids = []
    for provider, values in CREDENTIALS.items():
        status, body = api.link_provider(user_id, provider, values)
        assert status == 201, body
        account_ids.append(body["account_id"])
    status, body = api.oauth_link(user_id, "sparkgrid", "leaver_sg")
    assert status == 201, body
    account_ids.append(body["account_id"])
    status, body = api.link_clearwater(user_id, SECOND_CLEARWATER)
    assert status == 201, body
    account_ids.append(body["account_id"])
    status, body = api.link_clearwater(user_id, "cw_sandbox_leaver_sold")
    assert api.delete_account(user_id, body["account_id"]) == (204, None)
    status, body, _ = api.call(
        api.refresh, "POST", "/bills/refresh", user_id=user_id, headers={"Idempotency-Key": "leaving-soon"}
    )
    assert status == 202, body
    api.deliver_until_settled()
    assert api.oauth_start(user_id, "sparkgrid")[0] == 200
    wrong = {"email": EMAIL, "password": "not-the-password"}
    assert api.call(api.auth, "POST", "/auth/login", body=wrong)[0] == 401
    return Leaver(user_id, account_ids)


def stayer(api: Api) -> str:
    """Another user with an account and bills, who must notice nothing."""
    user_id = api.user(OTHER_EMAIL)
    assert api.link_clearwater(user_id, "cw_sandbox_stayer")[0] == 201
    api.refresh_all(user_id)
    return user_id


def assert_everything_of_the_leaver(stack: Stack, leaver: Leaver) -> None:
    held = kinds(items_of(stack, leaver.user_id, EMAIL))
    assert held == {
        "PROFILE": 1,
        "EMAIL": 1,
        "ACCOUNT": 5,
        "LINK": 5,
        "BILL": 5 * BILLS_PER_ACCOUNT,
        "DELETED": 1,
        "JOB": 1,
        "IDEMPOTENCY": 1,
        "OAUTHSTATE": 4,  # two states, and the pointer to each in the user's partition
        "LOGINATTEMPTS": 1,
    }, held


# ------------------------------------------------------------------ the whole deletion
def test_delete_me_removes_the_user_and_everything_of_theirs_and_nothing_else(api: Api, stack: Stack) -> None:
    # Given a user with 120 bills over five accounts at the four providers, and everything else a user
    # can have, beside another user with their own
    leaver = leaver_with_everything(api)
    stayer(api)
    assert_everything_of_the_leaver(stack, leaver)
    others = everyone_else(stack, leaver.user_id, EMAIL)
    token = token_of(api, EMAIL)
    assert authorized(api, token)
    # When they delete themselves, typing their password again
    with dynamodb_requests(api.auth.bills_table().client) as sent:
        assert api.delete_me(leaver.user_id) == (204, None)
    # Then nothing of theirs is left, and nobody else's item changed
    assert items_of(stack, leaver.user_id, EMAIL) == []
    assert everyone_else(stack, leaver.user_id, EMAIL) == others
    # in a bounded number of requests: batches of at most 25 deletes, transactions far below 100 items
    table_name = stack.refs["BillsTable"]
    batches = [len(params["RequestItems"][table_name]) for name, params in sent if name == "BatchWriteItem"]
    transactions = [len(params["TransactItems"]) for name, params in sent if name == "TransactWriteItems"]
    assert max(batches) <= 25 and sum(batches) >= 5 * BILLS_PER_ACCOUNT
    assert max(transactions) <= 3  # an account's last: the account, its marker and the profile's count
    assert Counter(name for name, _ in sent) == {
        # the profile; per account (5) its read before it is marked, and its bills' keys; the rest of the
        # partition and the idempotency records
        "GetItem": 1 + 5,
        "Query": 1 + 5 + 2,
        # the email's sign-in count (opened again by a put: the login for the token cleared it), the
        # source IP's, the IP's attempt given back, the profile marked
        "UpdateItem": 2 + 1 + 1,
        "PutItem": 1,
        # the email's count cleared on the right password
        "DeleteItem": 1,
        # per account: marked and its link guard freed, then removed; last the profile with the email
        "TransactWriteItems": 5 + 5 + 1,
        # 24 bills per account in one batch each, then the 13 other items: those outside the partition
        # (2 OAuth2 states, the idempotency record, the email's sign-in count), then those in it (6
        # deleted-account markers, the job, the 2 states' pointers)
        "BatchWriteItem": 5 + 1 + 1,
    }
    # and their token is refused from now on
    assert not authorized(api, token)
    assert api.delete_me(leaver.user_id) == (204, None), "a repeat (a token still cached) has nothing left"
    # and the email registers again as a new user, who sees none of the old data
    newcomer = api.user(EMAIL)
    assert newcomer != leaver.user_id
    assert authorized(api, token_of(api, EMAIL))
    assert api.call(api.auth, "GET", "/me", user_id=newcomer)[1]["user_id"] == newcomer
    assert api.accounts(newcomer) == []
    status, page, _ = api.call(api.bills, "GET", "/bills", user_id=newcomer)
    assert (status, page["bills"], page["accounts"]) == (200, [], [])
    assert items_of(stack, leaver.user_id, "nobody@example.com") == []


def test_a_wrong_password_deletes_nothing(api: Api, stack: Stack) -> None:
    user_id = api.user(EMAIL)
    assert api.link_clearwater(user_id, "cw_sandbox_careful")[0] == 201
    before = items_of(stack, user_id, EMAIL)
    status, body = api.delete_me(user_id, "not-the-password")
    assert (status, body["code"]) == (401, "unauthorized"), body
    after = items_of(stack, user_id, EMAIL)
    # Only the failed attempt was counted against the email.
    assert [item for item in after if item["PK"]["S"] != sign_in_counter(EMAIL)] == before
    assert len(after) == len(before) + 1
    assert api.call(api.auth, "GET", "/me", user_id=user_id)[0] == 200


# ------------------------------------------------------------------ a crash half-way
@pytest.mark.parametrize("finisher", ["repeated_delete", "planner_sweep"])
def test_a_user_deletion_that_crashed_half_way_is_finished_by_a_retry_or_the_sweep(
    api: Api, stack: Stack, clock: Clock, monkeypatch: pytest.MonkeyPatch, finisher: str
) -> None:
    # Given the user's deletion crashes after two batches of bill deletes (the first two accounts' bills)
    leaver = leaver_with_everything(api)
    stayer(api)
    others = everyone_else(stack, leaver.user_id, EMAIL)
    token = token_of(api, EMAIL)
    delete_batch = Deletions._delete_batch
    calls = 0

    def crash_after_two_batches(self: Deletions, keys: list[dict[str, Any]]) -> None:
        nonlocal calls
        calls += 1
        if calls > 2:
            raise RuntimeError("the function ran out of time")
        delete_batch(self, keys)

    monkeypatch.setattr(Deletions, "_delete_batch", crash_after_two_batches)
    status, body = api.delete_me(leaver.user_id)
    assert (status, body["code"]) == (500, "internal_error")
    monkeypatch.setattr(Deletions, "_delete_batch", delete_batch)
    # Then some bills are gone, not all; every account is hidden, its credentials destroyed
    held = items_of(stack, leaver.user_id, EMAIL)
    assert kinds(held)["BILL"] == 3 * BILLS_PER_ACCOUNT
    accounts = [item for item in held if item["SK"]["S"].startswith("ACCOUNT#")]
    assert len(accounts) == 3
    assert all(item["status"]["S"] == "deleting" and "credentials" not in item for item in accounts)
    # and for the service they are gone already: no profile, no accounts, no bills, nothing new linked
    assert api.call(api.auth, "GET", "/me", user_id=leaver.user_id)[0] == 404
    assert api.accounts(leaver.user_id) == []
    assert api.call(api.bills, "GET", "/bills", user_id=leaver.user_id)[0] == 404
    assert api.link_clearwater(leaver.user_id, "cw_sandbox_leaver_new")[0] == 404
    assert api.oauth_start(leaver.user_id, "sparkgrid")[0] == 404
    assert api.call(api.refresh, "POST", "/bills/refresh", user_id=leaver.user_id)[0] == 409
    assert api.call(api.auth, "POST", "/auth/login", body={"email": EMAIL, "password": PASSWORD})[0] == 401
    # but their token still passes the authorizer, so that DELETE /me again can finish
    assert authorized(api, token)
    # When it is finished: by the user sending DELETE /me again (the password is checked against the
    # profile, kept to the end), or by the planner's sweep once the deletion is 15 minutes old
    if finisher == "repeated_delete":
        assert api.delete_me(leaver.user_id, "not-the-password")[0] == 401
        assert api.delete_me(leaver.user_id) == (204, None)
    else:
        outcome = api.planner.handler(scheduled_event(), LambdaContext())
        assert outcome["user_deletions_finished"] == 0, "a deletion that may still be under way is left alone"
        clock.advance(minutes=16)
        outcome = api.planner.handler(scheduled_event(), LambdaContext())
        assert (outcome["user_deletions_finished"], outcome["deletions_finished"]) == (1, 0)
    # Then nothing of theirs is left, nobody else's item changed, and their token is refused
    assert items_of(stack, leaver.user_id, EMAIL) == []
    assert everyone_else(stack, leaver.user_id, EMAIL) == others
    assert not authorized(api, token)


# ------------------------------------------------------------------ writes racing the deletion
def test_a_fetch_in_flight_cannot_bring_back_a_deleted_users_bills(
    api: Api, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a user whose refresh is under way, and another user
    user_id = api.user(EMAIL)
    assert api.link_clearwater(user_id, "cw_sandbox_in_flight")[0] == 201
    stayer(api)
    others = everyone_else(stack, user_id, EMAIL)
    save = Bills.save_fetched_bills

    def delete_while_the_provider_answers(self: Bills, *args: Any, **kwargs: Any) -> int:
        assert api.delete_me(user_id) == (204, None)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Bills, "save_fetched_bills", delete_while_the_provider_answers)
    # When the user deletes themselves after the fetcher read the account, before its bills are written
    result = api.refresh_all(user_id)
    # Then the fetch ends quietly (nothing to retry), writing neither bills nor its job's result
    assert result == {"batchItemFailures": []}
    assert items_of(stack, user_id, EMAIL) == []
    assert everyone_else(stack, user_id, EMAIL) == others


def test_nothing_new_is_linked_to_a_user_whose_deletion_began(api: Api, table: BillsTable, clock: Clock) -> None:
    # Given a link that read the user's preferences before their deletion began
    user_id = api.user(EMAIL)
    now = clock.now
    interval = table.users.preferred_refresh_interval(user_id)
    table.user_deletions.begin_user_deletion(user_id, now)
    account = Account(
        account_id="a" * 32,
        user_id=user_id,
        provider="clearwater",
        external_ref="••••0042",
        status=AccountStatus.ACTIVE,
        created_at=now,
        next_refresh_at=now,
        refresh_interval=interval,
    )
    # Then its write is refused (the deletion lists accounts after marking the profile, so an account
    # is either in that list or never stored), and so is a new OAuth2 state, or a read of preferences
    with pytest.raises(ConcurrentUpdate):
        table.accounts.create_account(account, "CW-0042", b"ciphertext")
    with pytest.raises(ItemMissing):
        table.oauth_states.put_oauth_state(user_id, "nonce", {"user_id": user_id, "provider": "sparkgrid"}, now)
    with pytest.raises(ItemMissing):
        table.users.preferred_refresh_interval(user_id)
    assert table.accounts.list_accounts(user_id) == []
