"""A user's webhooks, in their partition (removed with the user): URL, subscribed types, encrypted
signing secrets, and health (failing since, disabled)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from billhub import keys
from billhub.store.base import BATCH_WRITE_LIMIT, Table, _chunks, _is_conditional_failure, _iso, _to_item
from billhub.webhook_models import Webhook, WebhookSecret

_KEPT = ("url", "events", "description", "created_at", "failing_since", "disabled_at", "disabled_reason")


def _secrets_value(secrets: tuple[WebhookSecret, ...]) -> list[dict[str, Any]]:
    return [
        {"ciphertext": secret.ciphertext, "created_at": _iso(secret.created_at)}
        | ({"expires_at": _iso(secret.expires_at)} if secret.expires_at else {})
        for secret in secrets
    ]


def _webhook_of(item: dict[str, Any]) -> Webhook:
    secrets = [
        {
            "ciphertext": bytes(secret["ciphertext"]),
            "created_at": secret["created_at"],
            "expires_at": secret.get("expires_at"),
        }
        for secret in item["secrets"]
    ]
    fields = {key: item.get(key) for key in _KEPT}
    return Webhook.model_validate(
        {**fields, "webhook_id": item["webhook_id"], "user_id": item["user_id"], "secrets": secrets}
    )


class Webhooks(Table):
    def create_webhook(self, webhook: Webhook, limit: int) -> bool:
        """Stores a new webhook; False when the user has ``limit`` webhooks already. Two creations at
        once may both pass the count (the limit bounds a user's table space, not a security property)."""
        held = sum(1 for _ in self._query_prefix(webhook.user_id, keys.webhooks_prefix(), ProjectionExpression="SK"))
        if held >= limit:
            return False
        item: dict[str, Any] = {
            "PK": keys.user_pk(webhook.user_id),
            "SK": keys.webhook_sk(webhook.webhook_id),
            "type": "webhook",
            "webhook_id": webhook.webhook_id,
            "user_id": webhook.user_id,
            "url": webhook.url,
            "events": list(webhook.events) if webhook.events is not None else None,
            "description": webhook.description,
            "created_at": _iso(webhook.created_at),
            "secrets": _secrets_value(webhook.secrets),
        }
        self._client.put_item(
            TableName=self._table, Item=_to_item(item), ConditionExpression="attribute_not_exists(PK)"
        )
        return True

    def list_webhooks(self, user_id: str) -> list[Webhook]:
        """The user's webhooks, oldest first."""
        webhooks = [_webhook_of(item) for item in self._query_prefix(user_id, keys.webhooks_prefix())]
        return sorted(webhooks, key=lambda webhook: (webhook.created_at, webhook.webhook_id))

    def get_webhook(self, user_id: str, webhook_id: str) -> Webhook | None:
        item = self._get(keys.user_pk(user_id), keys.webhook_sk(webhook_id), consistent=True)
        return _webhook_of(item) if item else None

    def delete_webhook(self, user_id: str, webhook_id: str) -> bool:
        """Removes the webhook, then its delivery log; False if it was not there. A delivery in flight
        meanwhile finds its webhook gone and is dropped."""
        try:
            self._client.delete_item(
                TableName=self._table,
                Key=_to_item({"PK": keys.user_pk(user_id), "SK": keys.webhook_sk(webhook_id)}),
                ConditionExpression="attribute_exists(PK)",
            )
        except ClientError as error:
            if _is_conditional_failure(error):
                return False
            raise
        deliveries = [
            {"PK": item["PK"], "SK": item["SK"]}
            for item in self._query_prefix(user_id, keys.deliveries_prefix(webhook_id), ProjectionExpression="PK, SK")
        ]
        for chunk in _chunks(deliveries, BATCH_WRITE_LIMIT):
            requests: list[Any] = [{"DeleteRequest": {"Key": _to_item(key)}} for key in chunk]
            while requests:
                answer = self._client.batch_write_item(RequestItems={self._table: requests})
                requests = answer.get("UnprocessedItems", {}).get(self._table, [])
        return True

    def replace_secrets(self, webhook: Webhook, secrets: tuple[WebhookSecret, ...]) -> bool:
        """Sets the signing secrets, if they are still those of ``webhook`` (False: changed or gone)."""
        return self._update(
            webhook,
            UpdateExpression="SET secrets = :new",
            ConditionExpression="attribute_exists(PK) AND secrets = :old",
            ExpressionAttributeValues=_to_item(
                {":new": _secrets_value(secrets), ":old": _secrets_value(webhook.secrets)}
            ),
        )

    def record_webhook_health(
        self, webhook: Webhook, failing_since: datetime | None, disabled_at: datetime | None, reason: str | None
    ) -> None:
        """Since when every attempt failed (None: the last succeeded), and whether it is disabled."""
        health = {"failing_since": _iso(failing_since), "disabled_at": _iso(disabled_at), "disabled_reason": reason}
        held = {f":{name}": value for name, value in health.items() if value is not None}
        clauses = []
        if held:
            clauses.append("SET " + ", ".join(f"{name[1:]} = {name}" for name in held))
        if len(held) < len(health):
            clauses.append("REMOVE " + ", ".join(name for name, value in health.items() if value is None))
        self._update(
            webhook,
            UpdateExpression=" ".join(clauses),
            ConditionExpression="attribute_exists(PK)",
            **({"ExpressionAttributeValues": _to_item(held)} if held else {}),
        )

    def _update(self, webhook: Webhook, **update: Any) -> bool:
        try:
            self._client.update_item(
                TableName=self._table,
                Key=_to_item({"PK": keys.user_pk(webhook.user_id), "SK": keys.webhook_sk(webhook.webhook_id)}),
                **update,
            )
        except ClientError as error:
            if _is_conditional_failure(error):
                return False
            raise
        return True
