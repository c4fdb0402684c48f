"""The webhook and delivery repositories against moto's DynamoDB: conditional writes keep one delivery
per event and webhook and one outcome per attempt, the log pages newest first, and a webhook's
deletion takes its log with it."""

from __future__ import annotations

import boto3
import pytest

from billhub.events import Event, event_id
from billhub.store import BillsTable
from billhub.store.errors import MalformedCursor
from billhub.webhook_models import Delivery, Webhook, WebhookSecret
from localcloud.provision import Stack
from tests.conftest import Clock


@pytest.fixture
def table(stack: Stack) -> BillsTable:
    return BillsTable(boto3.client("dynamodb"), stack.refs["BillsTable"])


def _webhook(clock: Clock, webhook_id: str = "wh_1", user_id: str = "u1") -> Webhook:
    return Webhook(
        webhook_id=webhook_id,
        user_id=user_id,
        url="https://hooks.example.com/billhub",
        events=("bill.created", "bill.updated"),
        created_at=clock.now,
        secrets=(WebhookSecret(ciphertext=b"\x00sealed", created_at=clock.now),),
    )


def _event(clock: Clock, number: int, user_id: str = "u1") -> Event:
    return Event(
        event_id=event_id("bill.created", "acc", str(number)),
        type="bill.created",
        user_id=user_id,
        occurred_at=clock.at(minutes=number),
        data={"bill": {"bill_id": str(number)}},
    )


def test_a_webhook_round_trips_and_the_limit_holds(table: BillsTable, clock: Clock) -> None:
    # Given two webhooks of a user, the limit two
    assert table.webhooks.create_webhook(_webhook(clock, "wh_1"), limit=2)
    assert table.webhooks.create_webhook(_webhook(clock, "wh_2"), limit=2)
    # When a third is created, Then it is refused
    assert not table.webhooks.create_webhook(_webhook(clock, "wh_3"), limit=2)
    # And each reads back as written, its secret's ciphertext as bytes
    assert table.webhooks.get_webhook("u1", "wh_1") == _webhook(clock, "wh_1")
    assert [w.webhook_id for w in table.webhooks.list_webhooks("u1")] == ["wh_1", "wh_2"]
    # And another user has none of them
    assert table.webhooks.get_webhook("u2", "wh_1") is None
    assert table.webhooks.list_webhooks("u2") == []


def test_secrets_are_replaced_only_from_what_was_read(table: BillsTable, clock: Clock) -> None:
    webhook = _webhook(clock)
    table.webhooks.create_webhook(webhook, limit=10)
    rotated = (
        WebhookSecret(ciphertext=b"\x00new", created_at=clock.now),
        webhook.secrets[0].model_copy(update={"expires_at": clock.at(hours=24)}),
    )
    assert table.webhooks.replace_secrets(webhook, rotated)
    # A second rotation from the stale read loses
    assert not table.webhooks.replace_secrets(webhook, rotated[:1])
    assert table.webhooks.get_webhook("u1", "wh_1").secrets == rotated  # type: ignore[union-attr]


def test_health_is_recorded_and_cleared(table: BillsTable, clock: Clock) -> None:
    webhook = _webhook(clock)
    table.webhooks.create_webhook(webhook, limit=10)
    table.webhooks.record_webhook_health(webhook, clock.now, clock.at(days=3), "every delivery failed for 3 days")
    stored = table.webhooks.get_webhook("u1", "wh_1")
    assert stored is not None
    assert (stored.failing_since, stored.disabled_at, stored.disabled_reason) == (
        clock.now,
        clock.at(days=3),
        "every delivery failed for 3 days",
    )
    table.webhooks.record_webhook_health(webhook, None, None, None)
    stored = table.webhooks.get_webhook("u1", "wh_1")
    assert stored is not None and (stored.failing_since, stored.disabled_at, stored.disabled_reason) == (
        None,
        None,
        None,
    )


def test_one_delivery_per_event_and_one_outcome_per_attempt(table: BillsTable, clock: Clock) -> None:
    delivery = Delivery(webhook_id="wh_1", event=_event(clock, 1), created_at=clock.now)
    expires = clock.at(days=30)
    assert table.deliveries.start_delivery(delivery, expires)
    # The same event again is not a second delivery
    assert not table.deliveries.start_delivery(delivery, expires)
    failed = delivery.model_copy(
        update={
            "attempts": 1,
            "last_status_code": 500,
            "last_error": "HTTP 500",
            "next_attempt_at": clock.at(seconds=5),
        }
    )
    assert table.deliveries.record_attempt(delivery, failed, expires)
    # A second worker that attempted from the same read records nothing
    assert not table.deliveries.record_attempt(delivery, failed, expires)
    delivered = failed.model_copy(
        update={
            "attempts": 2,
            "state": "delivered",
            "last_status_code": 204,
            "last_error": None,
            "next_attempt_at": None,
        }
    )
    assert table.deliveries.record_attempt(failed, delivered, expires)
    assert table.deliveries.get_delivery(delivery.ref) == delivered


def test_the_log_pages_newest_first_and_refuses_foreign_cursors(table: BillsTable, clock: Clock) -> None:
    for number in range(5):
        table.deliveries.start_delivery(
            Delivery(webhook_id="wh_1", event=_event(clock, number), created_at=clock.now), clock.at(days=30)
        )
    table.deliveries.start_delivery(
        Delivery(webhook_id="wh_2", event=_event(clock, 9), created_at=clock.now), clock.at(days=30)
    )
    first, cursor = table.deliveries.deliveries_page("u1", "wh_1", 3, None)
    assert cursor is not None
    rest, _ = table.deliveries.deliveries_page("u1", "wh_1", 3, cursor)
    seen = [d.event.occurred_at for d in [*first, *rest]]
    assert seen == [clock.at(minutes=n) for n in (4, 3, 2, 1, 0)]
    # A cursor of another webhook's log, or made up, is refused
    other_first, _ = table.deliveries.deliveries_page("u1", "wh_2", 1, None)
    assert other_first[0].webhook_id == "wh_2"
    for forged in ("bm9wZQ", "WyJERUxJVkVSWSN3aF8yIzIwMjYjbXNnIl0", "!!"):
        with pytest.raises(MalformedCursor):
            table.deliveries.deliveries_page("u1", "wh_1", 3, forged)


def test_deleting_a_webhook_takes_its_log(table: BillsTable, clock: Clock) -> None:
    table.webhooks.create_webhook(_webhook(clock), limit=10)
    for number in range(30):
        table.deliveries.start_delivery(
            Delivery(webhook_id="wh_1", event=_event(clock, number), created_at=clock.now), clock.at(days=30)
        )
    assert table.webhooks.delete_webhook("u1", "wh_1")
    assert table.webhooks.get_webhook("u1", "wh_1") is None
    assert table.deliveries.deliveries_page("u1", "wh_1", 100, None) == ([], None)
    assert not table.webhooks.delete_webhook("u1", "wh_1")
