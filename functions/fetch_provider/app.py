"""Consumes FetchQueue batches: fetches the batch's accounts concurrently, reports only failed records."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import httpx
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from billhub.credentials import CredentialVault
from billhub.fetching import Fetcher, FetchResult
from billhub.models import FetchRequest
from billhub.providers.session import ProviderConnector, ProviderDirectory, load_oauth_clients
from billhub.runtime import aws_client, utc_now
from billhub.settings import FetchSettings
from billhub.store import BillsTable

logger = Logger()
settings = FetchSettings.from_environ(os.environ)
# Report every failed record, even when the whole batch failed, so the queue retries record by record.
processor = AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@cache
def store() -> BillsTable:
    return BillsTable(aws_client("dynamodb"), settings.TABLE_NAME)


@cache
def vault() -> CredentialVault:
    return CredentialVault(aws_client("kms"), settings.CREDENTIALS_KEY_ID)


def directory() -> ProviderDirectory:
    clients = load_oauth_clients(settings.PROVIDER_CLIENTS_SECRET_ARN, settings.PROVIDER_CLIENTS_MAX_AGE_SECONDS)
    return ProviderDirectory(str(settings.PROVIDER_BASE_URL), clients)


async def fetch_record(record: SQSRecord) -> FetchResult:
    # A message that is not a FetchRequest fails here on every delivery and ends in the DLQ.
    request = FetchRequest.model_validate_json(record.body)
    async with httpx.AsyncClient() as client:
        connector = ProviderConnector(client, directory(), utc_now)
        fetcher = Fetcher(store(), vault(), connector, settings.FETCH_MAX_RECEIVE_COUNT)
        return await fetcher.fetch(request, int(record.attributes.approximate_receive_count))


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return async_process_partial_response(
        event=event, record_handler=fetch_record, processor=processor, context=context
    )
