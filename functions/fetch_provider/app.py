"""Consumes the fetch lanes' batches (each provider's lane, and the default FetchQueue): fetches the
batch's accounts concurrently, reports only failed records."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import httpx
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.circuit_breaker import CircuitBreakerConfig
from aws_lambda_powertools.utilities.circuit_breaker.persistence import CircuitBreakerDynamoDBPersistence
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from billhub import keys
from billhub.alerts import AdminAlerts
from billhub.circuit import DEFAULT_CONFIG as CIRCUIT_DEFAULTS
from billhub.circuit import ProviderCircuits
from billhub.credentials import CredentialVault
from billhub.deferral import FetchDeferrals
from billhub.event_bus import EventBus
from billhub.fetch_recorder import FetchLogFormatter
from billhub.fetching import Fetcher, FetchResult, Safeguards, alert_when_a_circuit_opens
from billhub.metrics import FetchMetrics
from billhub.models import FetchRequest
from billhub.providers.http import RetryPolicy, tls_context
from billhub.providers.session import ProviderConnector, ProviderDirectory
from billhub.ratelimit import ProviderRateLimiter
from billhub.runtime import aws_client, utc_now
from billhub.settings import FetchSettings
from billhub.store import BillsTable
from billhub.store.service_records import AlertMarkers, RequestBudgets

logger = Logger(logger_formatter=FetchLogFormatter())
settings = FetchSettings.from_environ(os.environ)
# Report every failed record, even when the whole batch failed, so the queue retries record by record.
processor = AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
metrics = FetchMetrics()
retry_policy = RetryPolicy(read_timeout=settings.PROVIDER_READ_TIMEOUT_SECONDS)
# Every fetch of a batch runs at once; each gets this long, retries included, inside the 30 s timeout.
FETCH_DEADLINE_SECONDS = 20.0


@cache
def store() -> BillsTable:
    return BillsTable(aws_client("dynamodb"), settings.TABLE_NAME)


@cache
def vault() -> CredentialVault:
    return CredentialVault(aws_client("kms"), settings.CREDENTIALS_KEY_ID)


@cache
def rate_limiter() -> ProviderRateLimiter:
    return ProviderRateLimiter.for_registered_providers(
        RequestBudgets(aws_client("dynamodb"), settings.TABLE_NAME), agreed_limits=settings.PROVIDER_RATE_LIMITS
    )


@cache
def alerts() -> AdminAlerts:
    markers = AlertMarkers(aws_client("dynamodb"), settings.TABLE_NAME)
    return AdminAlerts(aws_client("sns"), settings.ALERTS_TOPIC_ARN, markers)


@cache
def safeguards() -> Safeguards:
    # One circuit per provider, its state in the single table beside everything else.
    persistence = CircuitBreakerDynamoDBPersistence(
        table_name=settings.TABLE_NAME,
        key_attr="PK",
        sort_key_attr="SK",
        static_pk_value=keys.CIRCUIT_PK,
        expiry_attr="expires_at",
        boto3_client=aws_client("dynamodb"),
    )
    config = CircuitBreakerConfig(
        failure_threshold=settings.CIRCUIT_FAILURE_THRESHOLD,
        recovery_timeout=settings.CIRCUIT_RECOVERY_SECONDS,
        success_threshold=CIRCUIT_DEFAULTS.success_threshold,
        handled_exceptions=CIRCUIT_DEFAULTS.handled_exceptions,
    )
    circuits = ProviderCircuits(persistence, config, on_transition=alert_when_a_circuit_opens(alerts()))
    deferrals = FetchDeferrals(aws_client("sqs"), settings.FETCH_QUEUE_URL, lanes=settings.FETCH_QUEUE_URLS)
    events = EventBus(aws_client("events"), settings.EVENT_BUS_NAME)
    return Safeguards(circuits=circuits, deferrals=deferrals, alerts=alerts(), metrics=metrics, events=events)


def directory() -> ProviderDirectory:
    return ProviderDirectory.configured(
        settings.PROVIDER_ENDPOINTS, settings.PROVIDER_CLIENTS_SECRET_ARN, settings.PROVIDER_CLIENTS_MAX_AGE_SECONDS
    )


async def fetch_record(record: SQSRecord) -> FetchResult:
    # A message that is not a FetchRequest fails here on every delivery and ends in the DLQ.
    request = FetchRequest.model_validate_json(record.body)
    async with httpx.AsyncClient(verify=tls_context()) as client:
        connector = ProviderConnector(
            client, directory(), utc_now, retry_policy, FETCH_DEADLINE_SECONDS, rate_limiter=rate_limiter()
        )
        fetcher = Fetcher(store(), vault(), connector, settings.FETCH_MAX_RECEIVE_COUNT, safeguards())
        return await fetcher.fetch(request, int(record.attributes.approximate_receive_count))


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    try:
        return async_process_partial_response(
            event=event, record_handler=fetch_record, processor=processor, context=context
        )
    finally:
        metrics.flush()
