"""What every repository of the table shares: the typed-item conversions, the handling of failed
conditions and of transactions met in flight, and ``Table``, their access to the one DynamoDB table."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from billhub import keys
from billhub.store.errors import ConcurrentUpdate

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

BATCH_WRITE_LIMIT = 25
# A single write (or one transaction) that met another transaction in flight is sent again, this often.
CONFLICT_ATTEMPTS = 3

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {key: _serializer.serialize(value) for key, value in values.items() if value is not None}


def _from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {key: _deserializer.deserialize(value) for key, value in item.items()}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _is_transaction_conflict(error: ClientError) -> bool:
    """Another transaction on the same items was in flight (real DynamoDB cancels rather than waits)."""
    code = error.response["Error"]["Code"]
    if code in ("TransactionInProgressException", "TransactionConflictException"):
        return True
    reasons = error.response.get("CancellationReasons", [])
    return code == "TransactionCanceledException" and any(r.get("Code") == "TransactionConflict" for r in reasons)


# Pauses of up to 50 ms, 100 ms, ... drawn at random, so retrying writers spread out.
_JITTERED_BACK_OFF = wait_random_exponential(multiplier=0.05)


def _only_a_transaction_conflict(error: ClientError) -> bool:
    """The write met another transaction in flight and nothing else refused it: sending it again is safe.

    A cancellation that also names a failed condition is not one: that condition means what it means.
    """
    code = error.response["Error"]["Code"]
    if code == "TransactionConflictException":
        return True
    if code != "TransactionCanceledException":
        return False
    reasons = [reason.get("Code") for reason in error.response.get("CancellationReasons", [])]
    return "TransactionConflict" in reasons and all(r in ("TransactionConflict", "None", None) for r in reasons)


def _retrying_conflicts[T](write: Callable[[], T], concurrent: str) -> T:
    """``write()``, sent again (after a jittered pause) while it only met another transaction in flight,
    which botocore does not retry; ``ConcurrentUpdate(concurrent)`` once ``CONFLICT_ATTEMPTS`` ran out.
    Any other error, a failed condition included, is raised as it is."""
    try:
        return Retrying(
            stop=stop_after_attempt(CONFLICT_ATTEMPTS),
            wait=_JITTERED_BACK_OFF,
            retry=retry_if_exception(_is_only_a_transaction_conflict),
            reraise=True,
        )(write)
    except ClientError as error:
        if not _only_a_transaction_conflict(error):
            raise
        raise ConcurrentUpdate(concurrent) from error


def _is_only_a_transaction_conflict(error: BaseException) -> bool:
    return isinstance(error, ClientError) and _only_a_transaction_conflict(error)


class _ConflictsRetried:
    """A DynamoDB client whose calls go through ``_retrying_conflicts``: ``ConcurrentUpdate`` once a write
    kept meeting other transactions in flight on its items."""

    def __init__(self, client: DynamoDBClient) -> None:
        self._client = client

    def __getattr__(self, operation: str) -> Callable[..., Any]:
        call = getattr(self._client, operation)

        def retried(**request: Any) -> Any:
            return _retrying_conflicts(
                lambda: call(**request), f"{operation} kept meeting other transactions on its items"
            )

        return retried


def _condition_failed_at(error: ClientError, index: int) -> bool:
    reasons = error.response.get("CancellationReasons", [])
    return len(reasons) > index and reasons[index].get("Code") == "ConditionalCheckFailed"


def _is_conditional_failure(error: ClientError) -> bool:
    code = error.response["Error"]["Code"]
    if code == "ConditionalCheckFailedException":
        return True
    if code == "TransactionCanceledException":
        reasons = error.response.get("CancellationReasons", [])
        return any(reason.get("Code") == "ConditionalCheckFailed" for reason in reasons)
    return False


# An account's outbox (``billhub.outbox``): events written in the same request as the change they report.
OUTBOX_APPEND = "outbox = list_append(if_not_exists(outbox, :no_events), :events)"


def outbox_values(events: Sequence[str]) -> dict[str, Any]:
    """The values ``OUTBOX_APPEND`` names, adding ``events``."""
    return {":no_events": [], ":events": list(events)}


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Table:
    """One repository's access to the table: its client (and the same client retrying conflicts), its
    name, and the reads every repository makes."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        # For writes of items that transactions also write, which may meet one in flight.
        self._retried = _ConflictsRetried(client)
        self._table = table_name

    def _get(self, pk: str, sk: str, consistent: bool = False) -> dict[str, Any] | None:
        response = self._client.get_item(
            TableName=self._table, Key=_to_item({"PK": pk, "SK": sk}), ConsistentRead=consistent
        )
        return _from_item(response["Item"]) if "Item" in response else None

    def _query_prefix(self, user_id: str, prefix: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        return self._query(
            KeyConditionExpression="PK = :pk AND begins_with(SK, :prefix)",
            ExpressionAttributeValues=_to_item({":pk": keys.user_pk(user_id), ":prefix": prefix}),
            **kwargs,
        )

    def _query(self, consistent: bool = True, **kwargs: Any) -> Iterator[dict[str, Any]]:
        paginator = self._client.get_paginator("query")
        for page in paginator.paginate(TableName=self._table, ConsistentRead=consistent, **kwargs):
            for item in page["Items"]:
                yield _from_item(item)

    def _update_account(self, user_id: str, account_id: str, **update: Any) -> bool:
        """A conditional ``UpdateItem`` of one account (the account's own writes make them, and so do the
        saves of its bills); False when its condition did not hold, ``ConcurrentUpdate`` when it kept
        meeting other transactions in flight."""
        return self._update_account_returning(user_id, account_id, **update) is not None

    def _update_account_returning(self, user_id: str, account_id: str, **update: Any) -> dict[str, Any] | None:
        """As ``_update_account``, with the attributes its ``ReturnValues`` asked for ({} when none);
        None when its condition did not hold."""
        try:
            response = _retrying_conflicts(
                lambda: self._client.update_item(
                    TableName=self._table,
                    Key=_to_item({"PK": keys.user_pk(user_id), "SK": keys.account_sk(account_id)}),
                    **update,
                ),
                f"account {account_id} kept meeting other transactions while it was updated",
            )
        except ClientError as error:
            if _is_conditional_failure(error):
                return None
            raise
        return _from_item(response.get("Attributes", {}))
