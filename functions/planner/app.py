"""The planner, two events in one function. The EventBridge schedule's run puts one unit of work per
refresh shard on the PlanQueue, then finishes the deletions a crash left unfinished (users with everything
of theirs, and single accounts). Each PlanQueue message (one a batch) is a shard worker's: it enqueues a
fetch for every due account of its shard that its provider's admissions of the hour allow, and queues its
shard again if its time ran out first."""

from __future__ import annotations

import os
from datetime import timedelta
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from billhub import deletion, planning
from billhub.admission import Admissions
from billhub.queue import DispatchFailed, EnqueueFailed, FetchQueue, PlanQueue, ShardWork
from billhub.runtime import aws_client, utc_now
from billhub.settings import PlannerSettings
from billhub.store import BillsTable
from billhub.store.service_records import AdmissionCounters

logger = Logger()
settings = PlannerSettings.from_environ(os.environ)


@cache
def store() -> BillsTable:
    return BillsTable(aws_client("dynamodb"), settings.TABLE_NAME)


@cache
def queue() -> FetchQueue:
    return FetchQueue(aws_client("sqs"), settings.FETCH_QUEUE_URL, settings.FETCH_QUEUE_URLS)


@cache
def plan_queue() -> PlanQueue:
    return PlanQueue(aws_client("sqs"), settings.PLAN_QUEUE_URL)


@cache
def admissions() -> Admissions:
    """Each provider's hourly admissions, at the rate limits the fetchers hold it to."""
    counters = AdmissionCounters(aws_client("dynamodb"), settings.TABLE_NAME)
    return Admissions.for_registered_providers(counters, settings.PROVIDER_RATE_LIMITS)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """A PlanQueue batch (``Records``) is shard work; any other event (the schedule's, or an invocation
    by hand) is a scheduled run."""
    if "Records" in event:
        return _plan_shards(event["Records"], context)
    return _scheduled_run()


def _scheduled_run() -> dict[str, Any]:
    now = utc_now()
    shards = planning.dispatch_shard_work(plan_queue(), now)
    # Users first: theirs include their accounts' deletions; then accounts deleted on their own.
    users_finished = deletion.finish_abandoned_user_deletions(store(), now)
    finished = deletion.finish_abandoned_deletions(store(), now)
    logger.info(
        "dispatched the shards' planning",
        extra={
            "shards": shards,
            "abandoned_deletions_finished": finished,
            "abandoned_user_deletions_finished": users_finished,
        },
    )
    return {"shards_dispatched": shards, "deletions_finished": finished, "user_deletions_finished": users_finished}


def _plan_shards(records: list[dict[str, Any]], context: LambdaContext) -> dict[str, Any]:
    """Plans each record's shard (the mapping's BatchSize is 1) for a share of the time left; a record
    that fails comes back through the queue, and after its last delivery lands in PlanDLQ."""
    failures = []
    for record in records:
        try:
            work = ShardWork.model_validate_json(record["body"])
            time_limit = timedelta(milliseconds=context.get_remaining_time_in_millis() * planning.PLANNING_SHARE)
            run = planning.plan_shard(
                store(), queue(), plan_queue(), work, utc_now(), time_limit, admissions=admissions()
            )
        except (ValidationError, DispatchFailed, EnqueueFailed):
            logger.exception("a shard's planning failed; its message comes back", extra={"body": record["body"]})
            failures.append({"itemIdentifier": record["messageId"]})
            continue
        logger.info(
            "planned a shard",
            extra={
                "shard": run.shard,
                "provider": run.provider,
                "accounts": run.planned,
                "all_due_planned": run.stopped == "all_due_planned",
                "stopped": run.stopped,
            },
        )
        if not run.finished:
            logger.info("the shard's worker ran out of time; a continuation plans the rest", extra={"shard": run.shard})
        elif run.stopped == "admissions_spent":
            logger.info(
                "the provider's admissions of this hour are spent; the accounts left wait, due, for the next hour",
                extra={"shard": run.shard, "provider": run.provider},
            )
    return {"batchItemFailures": failures}
