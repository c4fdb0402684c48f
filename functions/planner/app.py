"""The planner the EventBridge schedule runs: a fetch enqueued for every account whose refresh is due,
then the deletions a crash left unfinished (users with everything of theirs, and single accounts)."""

from __future__ import annotations

import os
from datetime import timedelta
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from billhub import deletion, refresh
from billhub.queue import FetchQueue
from billhub.runtime import aws_client, utc_now
from billhub.settings import PlannerSettings
from billhub.store import BillsTable

logger = Logger()
settings = PlannerSettings.from_environ(os.environ)


@cache
def store() -> BillsTable:
    return BillsTable(aws_client("dynamodb"), settings.TABLE_NAME)


@cache
def queue() -> FetchQueue:
    return FetchQueue(aws_client("sqs"), settings.FETCH_QUEUE_URL)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """One run, whatever the event (the schedule's, or an invocation by hand): plans for a share of the
    time left, then sweeps; accounts still due after the time limit are the next run's, first in line."""
    now = utc_now()
    time_limit = timedelta(milliseconds=context.get_remaining_time_in_millis() * refresh.PLANNING_SHARE)
    run = refresh.plan_due_refreshes(store(), queue(), now, time_limit)
    # Users first: theirs include their accounts' deletions; then accounts deleted on their own.
    users_finished = deletion.finish_abandoned_user_deletions(store(), now)
    finished = deletion.finish_abandoned_deletions(store(), now)
    logger.info(
        "planned refreshes",
        extra={
            "accounts": run.planned,
            "all_due_planned": run.finished,
            "abandoned_deletions_finished": finished,
            "abandoned_user_deletions_finished": users_finished,
        },
    )
    if not run.finished:
        logger.warning("the planner ran out of time; the next run plans the accounts still due")
    return {
        "planned": run.planned,
        "all_due_planned": run.finished,
        "deletions_finished": finished,
        "user_deletions_finished": users_finished,
    }
