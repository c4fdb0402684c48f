"""On-demand refresh jobs over HTTP, and the planner the EventBridge schedule runs."""

from __future__ import annotations

import os
from datetime import timedelta
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from billhub import refresh
from billhub.api import caller_id, create_resolver
from billhub.queue import FetchQueue
from billhub.runtime import aws_client, utc_now
from billhub.settings import RefreshSettings
from billhub.store import BillsTable

logger = Logger()
app = create_resolver()
settings = RefreshSettings.from_environ(os.environ)


@cache
def store() -> BillsTable:
    return BillsTable(aws_client("dynamodb"), settings.TABLE_NAME)


@cache
def queue() -> FetchQueue:
    return FetchQueue(aws_client("sqs"), settings.FETCH_QUEUE_URL)


@app.post("/bills/refresh")
def start_refresh(request: refresh.RefreshRequest | None = None) -> tuple[refresh.RefreshStarted, int]:
    started = refresh.start_refresh(
        store(),
        queue(),
        caller_id(app),
        request or refresh.RefreshRequest(),
        utc_now(),
        timedelta(seconds=settings.MANUAL_REFRESH_MIN_INTERVAL_SECONDS),
    )
    return started, 202


@app.get("/bills/refresh/<job_id>")
def get_job(job_id: str) -> refresh.JobStatus:
    return refresh.job_status(store(), caller_id(app), job_id)


def _is_scheduled_event(event: dict[str, Any]) -> bool:
    return event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event"


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if _is_scheduled_event(event):
        planned = refresh.plan_due_refreshes(store(), queue(), utc_now())
        logger.info("planned refreshes", extra={"accounts": planned})
        return {"planned": planned}
    return app.resolve(event, context)
