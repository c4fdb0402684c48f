"""The daily reminders, on a schedule of their own (the template's ReminderSchedule, hourly by default):
each run reminds every user whose reminder (the next 08:00 UTC) is due, shard after shard, announcing
their bills newly due soon or overdue on the event bus and emailing them the day's list through SES
(``billhub.reminders``). A run that runs out of time leaves the rest due, for the next run."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from billhub import keys, reminders
from billhub.event_bus import EventBus
from billhub.runtime import aws_client, utc_now
from billhub.settings import ReminderSettings
from billhub.store import BillsTable

logger = Logger()
settings = ReminderSettings.from_environ(os.environ)
# A run stops taking users with this much of its time left, so it always ends before its timeout.
TIME_RESERVE_MS = 5_000


@cache
def store() -> BillsTable:
    return BillsTable(aws_client("dynamodb"), settings.TABLE_NAME)


@cache
def bus() -> EventBus:
    return EventBus(aws_client("events"), settings.EVENT_BUS_NAME)


@cache
def mail() -> reminders.SesEmailSender:
    return reminders.SesEmailSender(aws_client("ses"), settings.REMINDER_SENDER)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    run = reminders.send_reminders(
        store(),
        bus(),
        mail(),
        utc_now(),
        keys.reminder_shards(),
        out_of_time=lambda: context.get_remaining_time_in_millis() < TIME_RESERVE_MS,
    )
    if run.events_failed:
        logger.warning(
            "some users' events were not published; the next day's run publishes them",
            extra={"users": run.events_failed},
        )
    if run.emails_failed:
        logger.error("some users' reminder emails were not sent", extra={"users": run.emails_failed})
    logger.info(
        "sent the reminders due",
        extra={
            "reminded": run.reminded,
            "emails": run.emails,
            "events": run.events,
            "skipped": run.skipped,
            "finished": run.finished,
        },
    )
    return {
        "reminded": run.reminded,
        "emails": run.emails,
        "events": run.events,
        "skipped": run.skipped,
        "events_failed": len(run.events_failed),
        "emails_failed": len(run.emails_failed),
        "finished": run.finished,
    }
