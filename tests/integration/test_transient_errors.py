"""The store still busy after every retry (botocore's for throttling and 500s, the store's for
transaction conflicts): the API answers 503 ``try_again`` with ``Retry-After``, never a bare 500, and
nothing was written; any other AWS error stays a 500."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import botocore.client
import pytest
from botocore.exceptions import ClientError

from billhub.store import CONFLICT_ATTEMPTS
from tests.integration.harness import Api


class StoreRefusing:
    """Answers every DynamoDB ``operation`` with ``code``, as it comes back once the retries are spent."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, operation: str, code: str, times: int = 10**6) -> None:
        self.calls = 0
        sent: Callable[..., Any] = botocore.client.BaseClient._make_api_call  # type: ignore[attr-defined]

        def refusing(client: Any, name: str, params: dict[str, Any]) -> Any:
            if client.meta.service_model.service_name == "dynamodb" and name == operation and self.calls < times:
                self.calls += 1
                raise ClientError({"Error": {"Code": code, "Message": "refused by the test"}}, name)
            return sent(client, name, params)

        monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", refusing)


def assert_try_again(status: int, body: Any, headers: dict[str, str]) -> None:
    assert status == 503, body
    assert body["code"] == "try_again"
    assert body["details"] == {"retry_after": 1}
    assert headers["Retry-After"] == "1"


@pytest.mark.parametrize(
    "code", ["ProvisionedThroughputExceededException", "ThrottlingException", "InternalServerError"]
)
def test_bills_read_while_the_table_stays_throttled_answer_try_again(
    api: Api, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    # Given a user with an account
    user_id = api.user()
    assert api.link_clearwater(user_id)[0] == 201
    # When every read of their bills is throttled past botocore's retries
    refusing = StoreRefusing(monkeypatch, "Query", code)
    answer = api.call(api.bills, "GET", "/bills", user_id=user_id)
    # Then the API says to try again, and it did try
    assert_try_again(*answer)
    assert refusing.calls >= 1


def test_a_manual_refresh_that_keeps_meeting_transactions_answers_try_again_and_records_nothing(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a user with an account
    user_id = api.user()
    assert api.link_clearwater(user_id)[0] == 201
    # When the profile's write meets another transaction on every one of the store's attempts
    refusing = StoreRefusing(monkeypatch, "UpdateItem", "TransactionConflictException", times=CONFLICT_ATTEMPTS)
    answer = api.call(api.refresh, "POST", "/bills/refresh", user_id=user_id)
    # Then the API says to try again, and nothing was recorded: the retry it asks for is not "too soon"
    assert_try_again(*answer)
    assert refusing.calls == CONFLICT_ATTEMPTS
    status, body, _ = api.call(api.refresh, "POST", "/bills/refresh", user_id=user_id)
    assert status == 202, body


def test_an_aws_error_a_retry_cannot_cure_is_still_an_internal_error(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    user_id = api.user()
    StoreRefusing(monkeypatch, "Query", "AccessDeniedException")
    status, body, _ = api.call(api.bills, "GET", "/bills", user_id=user_id)
    assert (status, body["code"]) == (500, "internal_error")
