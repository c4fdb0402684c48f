"""Each event's delivery to each webhook, in the user's partition beside the webhook: the event as it
is retried, the state and the attempts so far. Kept 30 days after the last attempt (TTL), removed with
its webhook or its user; ``GET /webhooks/{id}/deliveries`` reads them newest first."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from billhub import keys
from billhub.events import Event
from billhub.store.base import Table, _from_item, _is_conditional_failure, _iso, _to_item
from billhub.store.errors import MalformedCursor
from billhub.webhook_models import Delivery, DeliveryRef

# What an attempt changes; the rest of a delivery is written once.
_ATTEMPT_FIELDS = ("state", "attempts", "last_status_code", "last_error", "response_excerpt", "next_attempt_at")


def _key(ref: DeliveryRef) -> dict[str, Any]:
    return _to_item(
        {"PK": keys.user_pk(ref.user_id), "SK": keys.delivery_sk(ref.webhook_id, ref.occurred_at, ref.event_id)}
    )


def _attempt_values(delivery: Delivery) -> dict[str, Any]:
    values = delivery.model_dump(include=set(_ATTEMPT_FIELDS))
    values["next_attempt_at"] = _iso(delivery.next_attempt_at)
    return values


def _delivery_of(item: dict[str, Any]) -> Delivery:
    attempt = {name: item[name] for name in _ATTEMPT_FIELDS if item.get(name) is not None}
    return Delivery.model_validate(
        {
            **attempt,
            "webhook_id": item["webhook_id"],
            "event": Event.model_validate_json(item["event"]),
            "created_at": item["created_at"],
        }
    )


def _cursor_of(sort_key: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([sort_key], ensure_ascii=False).encode()).decode().rstrip("=")


def _sort_key_of(cursor: str, webhook_id: str) -> str:
    try:
        (sort_key,) = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, binascii.Error) as error:
        raise MalformedCursor() from error
    if not (isinstance(sort_key, str) and keys.is_delivery_sk(sort_key, webhook_id)):
        raise MalformedCursor()
    return sort_key


class Deliveries(Table):
    def start_delivery(self, delivery: Delivery, expires_at: datetime) -> bool:
        """Stores a new delivery; False if this event's delivery to this webhook exists already."""
        item = {
            **_key(delivery.ref),
            **_to_item(
                {
                    "type": "delivery",
                    "webhook_id": delivery.webhook_id,
                    "delivery_id": delivery.delivery_id,
                    "event": delivery.event.model_dump_json(),
                    "created_at": _iso(delivery.created_at),
                    "expires_at": int(expires_at.timestamp()),
                    **_attempt_values(delivery),
                }
            ),
        }
        try:
            self._client.put_item(TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(PK)")
        except ClientError as error:
            if _is_conditional_failure(error):
                return False
            raise
        return True

    def get_delivery(self, ref: DeliveryRef) -> Delivery | None:
        answer = self._client.get_item(TableName=self._table, Key=_key(ref), ConsistentRead=True)
        return _delivery_of(_from_item(answer["Item"])) if "Item" in answer else None

    def record_attempt(self, before: Delivery, after: Delivery, expires_at: datetime) -> bool:
        """Saves an attempt's outcome, if the delivery is still as ``before`` (pending, with as many
        attempts): False when another attempt recorded first, or the delivery is gone."""
        values = _attempt_values(after)
        held = {name: value for name, value in values.items() if value is not None}
        removed = [name for name, value in values.items() if value is None]
        expression = "SET " + ", ".join(f"#{name} = :{name}" for name in [*held, "expires_at"])
        if removed:
            expression += " REMOVE " + ", ".join(f"#{name}" for name in removed)
        try:
            self._client.update_item(
                TableName=self._table,
                Key=_key(before.ref),
                UpdateExpression=expression,
                ConditionExpression="attribute_exists(PK) AND #state = :was AND #attempts = :tried",
                ExpressionAttributeNames={f"#{name}": name for name in [*values, "expires_at"]},
                ExpressionAttributeValues=_to_item(
                    {
                        **{f":{name}": value for name, value in held.items()},
                        ":expires_at": int(expires_at.timestamp()),
                        ":was": before.state,
                        ":tried": before.attempts,
                    }
                ),
            )
        except ClientError as error:
            if _is_conditional_failure(error):
                return False
            raise
        return True

    def deliveries_page(
        self, user_id: str, webhook_id: str, limit: int, cursor: str | None
    ) -> tuple[list[Delivery], str | None]:
        """One page of a webhook's deliveries, newest event first, and the next page's cursor;
        ``MalformedCursor`` for a cursor this listing did not hand out (another webhook's included)."""
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "PK = :pk AND begins_with(SK, :prefix)",
            "ExpressionAttributeValues": _to_item(
                {":pk": keys.user_pk(user_id), ":prefix": keys.deliveries_prefix(webhook_id)}
            ),
            "ScanIndexForward": False,
            "ConsistentRead": True,
            "Limit": limit,
        }
        if cursor is not None:
            request["ExclusiveStartKey"] = _to_item(
                {"PK": keys.user_pk(user_id), "SK": _sort_key_of(cursor, webhook_id)}
            )
        answer = self._client.query(**request)
        deliveries = [_delivery_of(_from_item(item)) for item in answer["Items"]]
        last = answer.get("LastEvaluatedKey")
        return deliveries, _cursor_of(_from_item(last)["SK"]) if last else None
