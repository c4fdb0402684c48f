"""The delivery's retry schedule, its setting, and the queue messages it takes (the deliveries themselves,
against a real receiver: tests/integration/test_webhook_delivery.py)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from billhub.events import Event, event_id
from billhub.settings import DeliverySettings
from billhub.webhook_delivery import EventMessage, RetryMessage, RetrySchedule, parse_message
from billhub.webhook_models import DeliveryRef

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ENVIRON = {"TABLE_NAME": "bills", "CREDENTIALS_KEY_ID": "key", "DELIVERY_QUEUE_URL": "https://queue"}


def test_each_retry_waits_its_delay_lengthened_by_at_most_a_fifth() -> None:
    schedule = RetrySchedule((5, 300, 1800))
    rng = random.Random(7)
    for attempts, delay in enumerate(schedule.delays, start=1):
        for _ in range(200):
            due = schedule.next_attempt_at(attempts, NOW, rng)
            assert due is not None
            assert timedelta(seconds=delay) <= due - NOW <= timedelta(seconds=delay * 1.2)
    # After the last delay, no retry: the delivery fails
    assert schedule.next_attempt_at(len(schedule.delays) + 1, NOW, rng) is None


def test_the_templates_schedule_retries_for_at_least_a_day(template: dict[str, Any]) -> None:
    default = template["Parameters"]["WebhookRetryDelaysSeconds"]["Default"]
    settings = DeliverySettings.from_environ({**ENVIRON, "WEBHOOK_RETRY_DELAYS_SECONDS": default})
    assert settings.WEBHOOK_RETRY_DELAYS_SECONDS == DeliverySettings.from_environ(ENVIRON).WEBHOOK_RETRY_DELAYS_SECONDS
    # Jitter only lengthens a wait, so the last retry comes at least the sum of the delays after the first
    assert sum(settings.WEBHOOK_RETRY_DELAYS_SECONDS) >= 24 * 3600


@pytest.mark.parametrize("value", ["", "5,,300", "5,0", "-1", "five"])
def test_a_schedule_of_anything_but_positive_seconds_is_refused(value: str) -> None:
    with pytest.raises(ValidationError):
        DeliverySettings.from_environ({**ENVIRON, "WEBHOOK_RETRY_DELAYS_SECONDS": value})


def test_the_local_clouds_settings_parse() -> None:
    settings = DeliverySettings.from_environ(
        {**ENVIRON, "WEBHOOK_ALLOW_LOOPBACK": "true", "WEBHOOK_RETRY_DELAYS_SECONDS": "1, 2,3"}
    )
    assert settings.WEBHOOK_ALLOW_LOOPBACK is True
    assert settings.WEBHOOK_RETRY_DELAYS_SECONDS == (1, 2, 3)
    assert DeliverySettings.from_environ(ENVIRON).WEBHOOK_ALLOW_LOOPBACK is False


EVENT = Event(
    event_id=event_id("bill.created", "acc", "1"),
    type="bill.created",
    user_id="u1",
    occurred_at=NOW,
    data={"bill": {"bill_id": "b1"}},
)


def test_an_eventbridge_envelope_and_a_retry_are_read_and_anything_else_dropped() -> None:
    envelope = {
        "version": "0",
        "id": "x",
        "detail-type": "bill.created",
        "source": "billhub",
        "detail": json.loads(EVENT.model_dump_json()),
    }
    read = parse_message(json.dumps(envelope))
    assert isinstance(read, EventMessage) and read.detail == EVENT
    ref = DeliveryRef(user_id="u1", webhook_id="wh_1", occurred_at=NOW, event_id=EVENT.event_id)
    retry = parse_message(json.dumps({"retry": json.loads(ref.model_dump_json())}))
    assert isinstance(retry, RetryMessage) and retry.retry == ref and retry.attempts is None
    for garbage in ("not json", "{}", json.dumps({**envelope, "source": "aws.events"}), json.dumps({"retry": {}})):
        assert parse_message(garbage) is None
