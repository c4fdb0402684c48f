"""``Idempotency-Key`` on POST /accounts/link and POST /bills/refresh, through the handlers, against moto
and the sandbox provider over HTTP: a retry gets the first answer back and does no second piece of work,
keys belong to their caller and their body, only successes are remembered, and a first attempt still
running (or one that died) is handled as a client would need."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest

from billhub import accounts
from billhub.idempotency import IdempotentRoutes
from billhub.models import FetchRequest
from localcloud.provision import Stack
from mock_provider.control import Control
from tests.events import http_event, response_json
from tests.integration.harness import API_KEY, Api, LambdaContext, raw_items
from tests.sandbox import requests_seen

LINK = "/accounts/link"
REFRESH = "/bills/refresh"
KEY = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
LINK_BODY = {"provider": "clearwater", "credentials": {"api_key": API_KEY}}
THROTTLED = pytest.mark.stack_parameters(ManualRefreshMinIntervalSeconds="300")
DAY_SECONDS = 24 * 3600


def post(
    api: Api, module: ModuleType, path: str, user_id: str, body: Any = None, key: str | None = None
) -> tuple[int, Any, dict[str, str]]:
    # API Gateway's HTTP APIs hand header names to the function lower-cased.
    return api.call(
        module, "POST", path, user_id=user_id, body=body, headers={"idempotency-key": key} if key is not None else None
    )


def records(stack: Stack) -> list[dict[str, Any]]:
    return [item for item in raw_items(stack) if item["PK"]["S"].startswith("IDEMPOTENCY#")]


def jobs(stack: Stack) -> list[dict[str, Any]]:
    return [item for item in raw_items(stack) if item["SK"]["S"].startswith("JOB#")]


def clearwater_requests(mock_provider: tuple[str, Control]) -> int:
    return requests_seen(mock_provider[0], "clearwater")


def linked_user(api: Api, email: str = "ada@example.com") -> tuple[str, str]:
    """A user with one ClearWater account, its first fetch already taken off the queue."""
    user_id = api.user(email)
    status, account = api.link_clearwater(user_id)
    assert status == 201, account
    return user_id, str(account["account_id"])


# ------------------------------------------------------------------ replays
def test_a_retried_link_gets_the_first_answer_and_links_once(
    api: Api, stack: Stack, mock_provider: tuple[str, Control]
) -> None:
    # Given a user whose link with a key succeeded
    user_id = api.user()
    status, first, first_headers = post(api, api.link, LINK, user_id, LINK_BODY, KEY)
    assert status == 201, first
    assert "Idempotent-Replayed" not in first_headers
    assert clearwater_requests(mock_provider) == 1  # the verification
    # When the client, never having seen that answer, sends the same request again with the key
    status, again, headers = post(api, api.link, LINK, user_id, LINK_BODY, KEY)
    # Then it gets the same 201 and body, marked as replayed
    assert (status, again, headers["Idempotent-Replayed"]) == (201, first, "true")
    # And the provider was not asked again, one account exists, and one first fetch was enqueued
    assert clearwater_requests(mock_provider) == 1
    assert [account["account_id"] for account in api.accounts(user_id)] == [first["account_id"]]
    assert api.take_fetch_requests() == [
        FetchRequest(user_id=user_id, account_id=first["account_id"], reason="link", provider="clearwater")
    ]


@THROTTLED
def test_a_retried_refresh_gets_the_same_job_not_a_second_one_nor_a_429(api: Api, stack: Stack) -> None:
    # Given a user who started a refresh with a key (one refresh per 300 s)
    user_id, account_id = linked_user(api)
    status, first, _ = post(api, api.refresh, REFRESH, user_id, key=KEY)
    assert status == 202, first
    # When the client sends the same request again
    status, again, headers = post(api, api.refresh, REFRESH, user_id, key=KEY)
    # Then it gets the first 202 back, not a 429 from the throttle
    assert (status, again, headers["Idempotent-Replayed"]) == (202, first, "true")
    # And one job exists, with one fetch enqueued for it
    assert [job["SK"]["S"] for job in jobs(stack)] == [f"JOB#{first['job_id']}"]
    assert api.take_fetch_requests() == [
        FetchRequest(
            user_id=user_id, account_id=account_id, job_id=first["job_id"], reason="manual", provider="clearwater"
        )
    ]
    # While a new request (another key) is still held back by the throttle
    status, body, _ = post(api, api.refresh, REFRESH, user_id, key=f"{KEY}-2")
    assert (status, body["code"]) == (429, "refresh_too_soon")


def test_the_record_is_the_callers_own_expires_in_a_day_and_holds_no_credentials(api: Api, stack: Stack) -> None:
    # Given a link with a key
    user_id = api.user()
    before = int(time.time())
    status, account, _ = post(api, api.link, LINK, user_id, LINK_BODY, KEY)
    assert status == 201, account
    # Then its record sits in the caller's own partition, answered, expiring through the table's TTL in 24 h
    (record,) = records(stack)
    assert record["PK"]["S"] == f"IDEMPOTENCY#{user_id}"
    assert record["SK"]["S"].startswith("POST /accounts/link#")
    assert KEY not in record["SK"]["S"]
    assert record["status"]["S"] == "COMPLETED"
    assert json.loads(record["response"]["S"]) == account
    ttl = boto3.client("dynamodb").describe_time_to_live(TableName=stack.refs["BillsTable"])
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at"
    assert before + DAY_SECONDS <= int(record["expires_at"]["N"]) <= int(time.time()) + DAY_SECONDS
    # And neither the credentials nor a plain hash of the body is stored: the fingerprint is keyed, so a
    # guessed body (a guessed API key or password) cannot be confirmed from the table
    assert API_KEY not in json.dumps(record)
    canonical = json.dumps({**LINK_BODY, "nickname": None}, sort_keys=True, separators=(",", ":"))
    guesses = {canonical, json.dumps(canonical), json.dumps(LINK_BODY), json.dumps(LINK_BODY, sort_keys=True)}
    plain_hashes = {
        getattr(hashlib, name)(guess.encode()).hexdigest() for guess in guesses for name in ("md5", "sha256")
    }
    assert record["payload_hash"]["S"] not in plain_hashes
    assert "GSI1PK" not in record and "LSI1SK" not in record


def test_a_record_past_its_expiry_no_longer_replays(api: Api, stack: Stack) -> None:
    # Given a refresh answered with a key, whose record has expired (DynamoDB's TTL may not have removed it yet)
    user_id, _ = linked_user(api)
    status, first, _ = post(api, api.refresh, REFRESH, user_id, key=KEY)
    assert status == 202, first
    (record,) = records(stack)
    boto3.client("dynamodb").update_item(
        TableName=stack.refs["BillsTable"],
        Key={"PK": record["PK"], "SK": record["SK"]},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 1)}},
    )
    # When the key comes again
    status, second, headers = post(api, api.refresh, REFRESH, user_id, key=KEY)
    # Then the request runs as a new one
    assert status == 202 and "Idempotent-Replayed" not in headers
    assert second["job_id"] != first["job_id"]
    assert len(jobs(stack)) == 2


# ------------------------------------------------------------------ keys belong to a caller and a body
@pytest.mark.parametrize(
    "other_body",
    [
        {"provider": "clearwater", "credentials": {"api_key": "cw_sandbox_another"}},
        {**LINK_BODY, "nickname": "Cabin"},
    ],
    ids=["other-credentials", "other-nickname"],
)
def test_the_same_key_with_another_link_body_is_refused_and_does_nothing(
    api: Api, stack: Stack, mock_provider: tuple[str, Control], other_body: dict[str, Any]
) -> None:
    # Given a link answered with a key
    user_id = api.user()
    status, first, _ = post(api, api.link, LINK, user_id, LINK_BODY, KEY)
    assert status == 201, first
    api.take_fetch_requests()
    # When the key comes with another body
    status, body, _ = post(api, api.link, LINK, user_id, other_body, KEY)
    # Then it is refused, and nothing was done for it
    assert (status, body["code"]) == (422, "idempotency_key_reused")
    assert body["message"]
    assert clearwater_requests(mock_provider) == 1
    assert [account["account_id"] for account in api.accounts(user_id)] == [first["account_id"]]
    assert api.take_fetch_requests() == []
    # And the first answer is still what the first body gets
    assert post(api, api.link, LINK, user_id, LINK_BODY, KEY)[:2] == (201, first)


def test_the_same_key_with_another_refresh_body_is_refused(api: Api, stack: Stack) -> None:
    user_id, account_id = linked_user(api)
    assert post(api, api.refresh, REFRESH, user_id, key=KEY)[0] == 202
    status, body, _ = post(api, api.refresh, REFRESH, user_id, {"account_ids": [account_id]}, KEY)
    assert (status, body["code"]) == (422, "idempotency_key_reused")
    assert len(jobs(stack)) == 1
    # No body and an empty body are the same request
    assert post(api, api.refresh, REFRESH, user_id, {}, KEY)[2]["Idempotent-Replayed"] == "true"


def test_the_same_key_from_two_users_are_two_requests(
    api: Api, stack: Stack, mock_provider: tuple[str, Control]
) -> None:
    # Given two users sending the very same link request with the very same key
    ada, bob = api.user("ada@example.com"), api.user("bob@example.com")
    ada_status, ada_account, ada_headers = post(api, api.link, LINK, ada, LINK_BODY, KEY)
    bob_status, bob_account, bob_headers = post(api, api.link, LINK, bob, LINK_BODY, KEY)
    # Then each gets an account of their own, neither a replay of the other's
    assert (ada_status, bob_status) == (201, 201)
    assert "Idempotent-Replayed" not in ada_headers and "Idempotent-Replayed" not in bob_headers
    assert ada_account["account_id"] != bob_account["account_id"]
    assert [a["account_id"] for a in api.accounts(bob)] == [bob_account["account_id"]]
    assert clearwater_requests(mock_provider) == 2
    assert {record["PK"]["S"] for record in records(stack)} == {f"IDEMPOTENCY#{ada}", f"IDEMPOTENCY#{bob}"}
    # And their refreshes with one key are independent too
    ada_job = post(api, api.refresh, REFRESH, ada, key=KEY)[1]
    bob_job = post(api, api.refresh, REFRESH, bob, key=KEY)[1]
    assert ada_job["job_id"] != bob_job["job_id"]


def test_one_key_on_the_two_routes_is_two_requests(api: Api, stack: Stack) -> None:
    user_id = api.user()
    status, account, _ = post(api, api.link, LINK, user_id, LINK_BODY, KEY)
    assert status == 201, account
    status, started, headers = post(api, api.refresh, REFRESH, user_id, key=KEY)
    assert (status, started["accounts"]) == (202, [account["account_id"]])
    assert "Idempotent-Replayed" not in headers


# ------------------------------------------------------------------ without a key, or with a bad one
def test_without_a_key_nothing_is_remembered(api: Api, stack: Stack) -> None:
    user_id = api.user()
    status, _, headers = post(api, api.link, LINK, user_id, LINK_BODY)
    assert status == 201 and "Idempotent-Replayed" not in headers
    # A second link of the same provider account is the domain's duplicate, as before
    status, body, _ = post(api, api.link, LINK, user_id, LINK_BODY)
    assert (status, body["code"]) == (409, "conflict")
    # And two refreshes are two jobs (the stack's throttle is off)
    first, second = (post(api, api.refresh, REFRESH, user_id)[1] for _ in range(2))
    assert first["job_id"] != second["job_id"]
    assert records(stack) == []


@pytest.mark.parametrize(
    "key", ["", "has space", "tab\there", "x" * 256, "clé", "line\nbreak"], ids=lambda key: repr(key)[:20]
)
def test_a_malformed_key_is_a_400_and_does_nothing(
    api: Api, stack: Stack, mock_provider: tuple[str, Control], key: str
) -> None:
    user_id = api.user()
    status, body, _ = post(api, api.link, LINK, user_id, LINK_BODY, key)
    assert (status, body["code"]) == (400, "invalid_idempotency_key")
    assert "Idempotency-Key" in body["message"]
    assert clearwater_requests(mock_provider) == 0
    assert api.accounts(user_id) == []
    assert records(stack) == []


def test_the_longest_key_and_any_header_case_are_accepted(api: Api) -> None:
    user_id = api.user()
    key = "~" + "K" * 253 + "!"
    status, first, _ = api.call(
        api.link, "POST", LINK, user_id=user_id, body=LINK_BODY, headers={"Idempotency-Key": key}
    )
    assert status == 201, first
    status, again, headers = post(api, api.link, LINK, user_id, LINK_BODY, key)
    assert (status, again, headers["Idempotent-Replayed"]) == (201, first, "true")


# ------------------------------------------------------------------ only successes are remembered
def test_a_refused_link_leaves_no_record_so_the_corrected_retry_with_the_key_links(
    api: Api, stack: Stack, mock_provider: tuple[str, Control]
) -> None:
    # Given a link with a key that the provider refused
    user_id = api.user()
    wrong = {"provider": "clearwater", "credentials": {"api_key": "wrong_key_123"}}
    status, body, _ = post(api, api.link, LINK, user_id, wrong, KEY)
    assert (status, body["code"]) == (422, "credentials_rejected")
    assert records(stack) == []
    # When the user corrects the key and the client retries with the same Idempotency-Key
    status, account, headers = post(api, api.link, LINK, user_id, LINK_BODY, KEY)
    # Then the corrected request runs, and is what the key answers from now on
    assert (status, account["status"]) == (201, "active")
    assert "Idempotent-Replayed" not in headers
    assert clearwater_requests(mock_provider) == 2
    assert post(api, api.link, LINK, user_id, LINK_BODY, KEY)[:2] == (201, account)


def test_a_refresh_with_nothing_to_refresh_leaves_no_record(api: Api, stack: Stack) -> None:
    user_id = api.user()
    status, body, _ = post(api, api.refresh, REFRESH, user_id, key=KEY)
    assert (status, body["code"]) == (409, "nothing_to_refresh")
    api.link_clearwater(user_id)
    status, started, headers = post(api, api.refresh, REFRESH, user_id, key=KEY)
    assert status == 202 and "Idempotent-Replayed" not in headers
    assert len(started["accounts"]) == 1


def test_records_that_cannot_be_written_stop_the_request_before_any_work(
    api: Api, stack: Stack, mock_provider: tuple[str, Control], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the idempotency records cannot be reached (a table that is not there stands in for an outage)
    broken = IdempotentRoutes(boto3.client("dynamodb"), f"{stack.refs['BillsTable']}-missing")
    monkeypatch.setattr(api.link, "idempotency", lambda: broken)
    user_id = api.user()
    # When a keyed link arrives
    status, body, headers = post(api, api.link, LINK, user_id, LINK_BODY, KEY)
    # Then it is refused as retryable rather than run without its protection
    assert (status, body["code"], headers["Retry-After"]) == (503, "idempotency_unavailable", "2")
    assert body["details"] == {"retry_after": 2}
    assert clearwater_requests(mock_provider) == 0
    assert api.accounts(user_id) == []


# ------------------------------------------------------------------ a first attempt still running
class Gate:
    """Holds the first ``link_account`` call until released; later calls go straight through."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self._taken = False

    def wrap(self, link_account: Callable[..., Any]) -> Callable[..., Any]:
        async def gated(*args: Any, **kwargs: Any) -> Any:
            if not self._taken:
                self._taken = True
                self.entered.set()
                assert await asyncio.to_thread(self.release.wait, 10), "never released"
            return await link_account(*args, **kwargs)

        return gated


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    gate = Gate()
    monkeypatch.setattr(accounts, "link_account", gate.wrap(accounts.link_account))
    yield gate
    gate.release.set()


def test_a_retry_while_the_first_attempt_runs_is_a_409_with_retry_after_and_then_the_answer(
    api: Api, load_handler: Callable[[str], ModuleType], mock_provider: tuple[str, Control], gate: Gate
) -> None:
    # Given a keyed link still running in one Lambda environment
    user_id = api.user()
    first: list[tuple[int, Any, dict[str, str]]] = []
    running = threading.Thread(target=lambda: first.append(post(api, api.link, LINK, user_id, LINK_BODY, KEY)))
    running.start()
    assert gate.entered.wait(10)
    # When the client's retry reaches another environment of the function
    other_environment = load_handler("LinkAccountFunction")
    status, body, headers = post(api, other_environment, LINK, user_id, LINK_BODY, KEY)
    # Then it is told the request is in progress and when to come back, and nothing is done for it
    assert (status, body["code"], headers["Retry-After"]) == (409, "idempotency_in_progress", "2")
    assert body["details"] == {"retry_after": 2}
    assert clearwater_requests(mock_provider) == 0
    # And once the first attempt has answered, the retry gets that answer
    gate.release.set()
    running.join(10)
    ((first_status, first_body, _),) = first
    assert first_status == 201, first_body
    status, again, headers = post(api, other_environment, LINK, user_id, LINK_BODY, KEY)
    assert (status, again, headers["Idempotent-Replayed"]) == (201, first_body, "true")
    assert len(api.accounts(user_id)) == 1
    assert clearwater_requests(mock_provider) == 1


class InvocationTimedOut(BaseException):
    """What the Lambda runtime does to an invocation out of time: it stops, no ``except Exception`` runs."""


class ShortContext(LambdaContext):
    def get_remaining_time_in_millis(self) -> int:
        return 300


def test_a_first_attempt_that_died_holds_the_key_only_until_its_invocation_would_have_timed_out(
    api: Api, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a keyed link whose invocation died, 300 ms before its timeout, leaving its record in progress
    user_id = api.user()
    working = api.link.with_provider

    def dies(work: Any) -> Any:
        raise InvocationTimedOut

    monkeypatch.setattr(api.link, "with_provider", dies)
    with pytest.raises(InvocationTimedOut):
        api.link.handler(
            http_event("POST", LINK, user_id=user_id, body=LINK_BODY, headers={"idempotency-key": KEY}), ShortContext()
        )
    monkeypatch.setattr(api.link, "with_provider", working)
    (record,) = records(stack)
    assert record["status"]["S"] == "INPROGRESS"
    # When the client retries at once, it is asked to wait
    assert post(api, api.link, LINK, user_id, LINK_BODY, KEY)[0] == 409
    # But once that invocation's time is up, the retry runs the link
    time.sleep(0.4)
    response = api.link.handler(
        http_event("POST", LINK, user_id=user_id, body=LINK_BODY, headers={"idempotency-key": KEY}), LambdaContext()
    )
    assert response["statusCode"] == 201, response
    assert "Idempotent-Replayed" not in response.get("headers", {})
    assert [account["account_id"] for account in api.accounts(user_id)] == [response_json(response)["account_id"]]
