"""The local cloud's moto server behaves as DynamoDB does where moto does not: a retried transaction."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from localcloud.moto_server import _TransactionTokens


def transaction(token: str | None, items: list[dict[str, Any]]) -> Any:
    body: dict[str, Any] = {"TransactItems": items}
    if token:
        body["ClientRequestToken"] = token
    return SimpleNamespace(body=body)


def test_a_transaction_retried_with_its_token_is_applied_once() -> None:
    # Given a transaction that applies (and would fail its own conditions if applied again)
    applied: list[Any] = []

    def apply(handler: Any) -> str:
        applied.append(handler.body["TransactItems"])
        return f"result {len(applied)}"

    once = _TransactionTokens().wrap(apply)
    items = [{"Put": {"TableName": "t", "Item": {"PK": {"S": "a"}}}}]
    # When the client retries it with the same token (botocore reuses the token on retries)
    first, retried = once(transaction("token-1", items)), once(transaction("token-1", items))
    # Then it was applied once, and the retry gets the first answer
    assert (first, retried, len(applied)) == ("result 1", "result 1", 1)
    # while another token, another request under the same token, or no token at all apply again
    once(transaction("token-2", items))
    once(transaction("token-1", [{"Put": {"TableName": "t", "Item": {"PK": {"S": "b"}}}}]))
    once(transaction(None, items))
    assert len(applied) == 4


def test_a_failed_transaction_is_not_remembered() -> None:
    attempts = 0

    def fail_once(handler: Any) -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("TransactionCanceledException")
        return "applied"

    once = _TransactionTokens().wrap(fail_once)
    items = [{"Put": {"TableName": "t", "Item": {"PK": {"S": "a"}}}}]
    with pytest.raises(RuntimeError):
        once(transaction("token", items))
    assert once(transaction("token", items)) == "applied"
