"""On-demand refresh jobs over HTTP: start one for the caller's accounts, follow its progress.

The scheduled planner is a function of its own (functions/planner)."""

from __future__ import annotations

import os
from datetime import timedelta
from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from billhub import refresh, snapstart
from billhub.api import CallerId, Store, bills_table, create_resolver, documented
from billhub.idempotency import IdempotencyKey, IdempotentRequest, IdempotentRoutes
from billhub.queue import FetchQueue
from billhub.runtime import aws_client, utc_now
from billhub.settings import RefreshSettings

logger = Logger()
app = create_resolver()
settings = RefreshSettings.from_environ(os.environ)
JobIdPath = Annotated[str, Path(pattern=r"^[a-f0-9]{32}$")]


@cache
def queue() -> FetchQueue:
    return FetchQueue(aws_client("sqs"), settings.FETCH_QUEUE_URL, settings.FETCH_QUEUE_URLS)


@cache
def idempotency() -> IdempotentRoutes:
    return IdempotentRoutes(aws_client("dynamodb"), settings.TABLE_NAME)


# SnapStart: the clients are built before the snapshot.
snapstart.register(before_snapshot=[bills_table, queue, idempotency])


@app.post(
    "/bills/refresh",
    summary="Start refreshing the caller's accounts",
    tags=["refresh"],
    responses=documented(202, 400, 404, 409, 413, 415, 429, 503, description="The refresh job was started."),
)
def start_refresh(
    store: Store,
    user_id: CallerId,
    request: refresh.RefreshRequest | None = None,
    idempotency_key: IdempotencyKey = None,
) -> Response[refresh.RefreshStarted]:
    body = request or refresh.RefreshRequest()
    # A retry answered from its record never reaches the throttle: the first 202 comes back, not a 429.
    return idempotency().respond(
        IdempotentRequest(user_id, "POST /bills/refresh", idempotency_key, body),
        lambda: refresh.start_refresh(
            store,
            queue(),
            user_id,
            body,
            utc_now(),
            timedelta(seconds=settings.MANUAL_REFRESH_MIN_INTERVAL_SECONDS),
        ),
        refresh.RefreshStarted,
        202,
        app.lambda_context,
    )


@app.get(
    "/bills/refresh/<job_id>",
    summary="A refresh job's progress",
    tags=["refresh"],
    responses=documented(200, 404),
)
def get_job(store: Store, user_id: CallerId, job_id: JobIdPath) -> refresh.JobStatus:
    return refresh.job_status(store.jobs, user_id, job_id)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
