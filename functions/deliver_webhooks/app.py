"""Consumes the delivery queue: events to fan out to the users' webhooks, and retries of failed
deliveries. A batch's attempts run at once; only a record whose store or queue call failed is reported
failed (a receiver's failure is the delivery's own retry, not the record's)."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from billhub import runtime, webhooks
from billhub.credentials import CredentialVault
from billhub.runtime import aws_client
from billhub.settings import DeliverySettings
from billhub.store import BillsTable
from billhub.webhook_delivery import QueueRetries, RetrySchedule, WebhookDeliverer, delivery_client
from billhub.webhook_urls import UrlPolicy

logger = Logger()
settings = DeliverySettings.from_environ(os.environ)
processor = AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
policy = UrlPolicy(allow_loopback_http=settings.WEBHOOK_ALLOW_LOOPBACK)
schedule = RetrySchedule(settings.WEBHOOK_RETRY_DELAYS_SECONDS)


@cache
def store() -> BillsTable:
    return BillsTable(aws_client("dynamodb"), settings.TABLE_NAME)


@cache
def vault() -> CredentialVault:
    # The webhooks' signing secrets are sealed under a purpose of their own (billhub.webhooks).
    return CredentialVault(aws_client("kms"), settings.CREDENTIALS_KEY_ID, purpose=webhooks.SECRET_PURPOSE)


@cache
def retries() -> QueueRetries:
    return QueueRetries(aws_client("sqs"), settings.DELIVERY_QUEUE_URL)


async def deliver_record(record: SQSRecord) -> None:
    tables = store()
    async with delivery_client() as client:
        deliverer = WebhookDeliverer(
            tables.webhooks,
            tables.deliveries,
            vault(),
            retries(),
            client,
            policy,
            schedule,
            clock=lambda: runtime.utc_now(),
        )
        await deliverer.handle(record.body)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return async_process_partial_response(
        event=event, record_handler=deliver_record, processor=processor, context=context
    )
