"""The caller's webhooks over HTTP: register, list, read, delete, rotate a signing secret, enable a
disabled one again, send a test event, and the delivery log. Deliveries themselves are functions/deliver_webhooks'."""

from __future__ import annotations

import os
from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from billhub import snapstart, webhooks
from billhub.api import CallerId, Store, bills_table, create_resolver, documented
from billhub.credentials import CredentialVault
from billhub.event_bus import EventBus
from billhub.runtime import aws_client, utc_now
from billhub.settings import WebhookSettings
from billhub.webhook_urls import UrlPolicy

logger = Logger()
app = create_resolver()
settings = WebhookSettings.from_environ(os.environ)
policy = UrlPolicy(allow_loopback_http=settings.WEBHOOK_ALLOW_LOOPBACK)
WebhookIdPath = Annotated[str, Path(pattern=webhooks.WEBHOOK_ID_PATTERN)]


@cache
def sealer() -> webhooks.SecretSealer:
    return webhooks.SecretSealer(
        CredentialVault(aws_client("kms"), settings.CREDENTIALS_KEY_ID, purpose=webhooks.SECRET_PURPOSE)
    )


@cache
def publisher() -> EventBus:
    return EventBus(aws_client("events"), settings.EVENT_BUS_NAME)


# SnapStart: the clients are built before the snapshot; no data key is made before it, and any held
# after a restore is dropped (its age was reckoned in another environment).
snapstart.register(
    before_snapshot=[bills_table, sealer, publisher],
    after_restore=[lambda: sealer().forget()],
)


@app.post(
    "/webhooks",
    summary="Register a webhook (its signing secret is answered here only)",
    description=(
        "Takes no `Idempotency-Key`: a remembered answer would keep the secret in the table in plain text for "
        "24 hours. A client that lost a 201 finds the webhook in `GET /webhooks` (by its `url` and "
        "`created_at`) and deletes it, or rotates its secret to learn one."
    ),
    tags=["webhooks"],
    responses=documented(201, 400, 409, 413, 415, description="The webhook was registered."),
)
def create_webhook(
    store: Store, user_id: CallerId, request: webhooks.WebhookCreate
) -> Response[webhooks.WebhookCreated]:
    # No Idempotency-Key here (see the description): the answer holds the secret, which is only kept sealed.
    created = webhooks.create_webhook(store.webhooks, sealer(), policy, user_id, request, utc_now())
    return Response(status_code=201, content_type=content_types.APPLICATION_JSON, body=created)


@app.get("/webhooks", summary="The caller's webhooks", tags=["webhooks"], responses=documented(200))
def list_webhooks(store: Store, user_id: CallerId) -> webhooks.WebhookList:
    return webhooks.list_webhooks(store.webhooks, user_id)


@app.get(
    "/webhooks/<webhook_id>", summary="One of the caller's webhooks", tags=["webhooks"], responses=documented(200, 404)
)
def get_webhook(store: Store, user_id: CallerId, webhook_id: WebhookIdPath) -> webhooks.WebhookView:
    return webhooks.get_webhook(store.webhooks, user_id, webhook_id)


@app.delete(
    "/webhooks/<webhook_id>",
    summary="Delete a webhook",
    tags=["webhooks"],
    responses=documented(204, 404, description="The webhook was deleted."),
)
def delete_webhook(store: Store, user_id: CallerId, webhook_id: WebhookIdPath) -> Response[None]:
    webhooks.delete_webhook(store.webhooks, user_id, webhook_id)
    return Response(status_code=204)


@app.post(
    "/webhooks/<webhook_id>/rotate-secret",
    summary="A new signing secret; the previous one signs beside it for 24 hours",
    tags=["webhooks"],
    responses=documented(200, 404),
)
def rotate_secret(store: Store, user_id: CallerId, webhook_id: WebhookIdPath) -> webhooks.SecretRotated:
    return webhooks.rotate_secret(store.webhooks, sealer(), user_id, webhook_id, utc_now())


@app.post(
    "/webhooks/<webhook_id>/enable",
    summary="Turn a disabled webhook back on (deliveries that already failed stay failed)",
    tags=["webhooks"],
    responses=documented(200, 404),
)
def enable_webhook(store: Store, user_id: CallerId, webhook_id: WebhookIdPath) -> webhooks.WebhookView:
    return webhooks.enable_webhook(store.webhooks, user_id, webhook_id)


@app.post(
    "/webhooks/<webhook_id>/test",
    summary="Send the webhook a webhook.test event",
    tags=["webhooks"],
    responses=documented(202, 404, 409, description="The test event was published for delivery."),
)
def send_test(store: Store, user_id: CallerId, webhook_id: WebhookIdPath) -> Response[webhooks.WebhookTestSent]:
    sent = webhooks.send_test(store.webhooks, publisher(), user_id, webhook_id, utc_now())
    return Response(status_code=202, content_type=content_types.APPLICATION_JSON, body=sent)


@app.get(
    "/webhooks/<webhook_id>/deliveries",
    summary="A webhook's delivery log, newest first",
    tags=["webhooks"],
    responses=documented(200, 400, 404),
)
def delivery_log(
    store: Store, user_id: CallerId, webhook_id: WebhookIdPath, query: Annotated[webhooks.DeliveryQuery, Query()]
) -> webhooks.DeliveryLog:
    return webhooks.delivery_log(store.webhooks, store.deliveries, user_id, webhook_id, query)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
