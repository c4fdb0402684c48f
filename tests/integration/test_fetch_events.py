"""What a fetch tells the user's webhooks, through the handlers and moto's EventBridge rule to the
delivery queue: one account.synced for a first fetch (not a bill.created per historical bill), a
bill.created for a bill that appears later, an account.needs_reauth for refused credentials, and an
event the bus refused kept in the account's outbox until a fetch publishes it, under the same id."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

import boto3
import pytest

from billhub import event_bus
from billhub.events import Event
from billhub.store import BillsTable
from mock_provider.control import Control
from tests.conftest import Clock
from tests.integration.harness import API_KEY, Api
from tests.integration.test_fetch_requests import scheduled_fetch
from tests.sandbox import SandboxAccount, sandbox_admin


def events_on_the_delivery_queue(api: Api) -> list[Event]:
    """Every event the rule routed to the delivery queue since the last call (taken off it)."""
    sqs, url = boto3.client("sqs"), api.stack.refs["DeliveryQueue"]
    events: list[Event] = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        for message in messages:
            events.append(Event.model_validate(json.loads(message["Body"])["detail"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return events


def outbox_of(api: Api, user_id: str, account_id: str) -> tuple[str, ...]:
    stored = BillsTable(boto3.client("dynamodb"), api.stack.refs["BillsTable"]).accounts.get_account(
        user_id, account_id
    )
    assert stored is not None
    return stored.outbox


def linked_and_fetched(api: Api, load_handler: Callable[[str], ModuleType]) -> tuple[str, str]:
    user_id = api.user()
    status, body = api.link_clearwater(user_id)
    assert status == 201, body
    scheduled_fetch(api, load_handler, user_id, body["account_id"])
    return user_id, str(body["account_id"])


@pytest.mark.clock("2026-10-31T12:00:00+00:00")
def test_a_first_fetch_is_one_account_synced_and_a_new_bill_one_bill_created(
    api: Api, clock: Clock, load_handler: Callable[[str], ModuleType]
) -> None:
    # Given a ClearWater account linked and fetched for the first time
    user_id, account_id = linked_and_fetched(api, load_handler)
    # Then one account.synced went out, with the account and its bill count, and no bill.created
    (synced,) = events_on_the_delivery_queue(api)
    held = api.bills_of(user_id, "clearwater")["bills"]
    assert (synced.type, synced.user_id) == ("account.synced", user_id)
    assert synced.data["account"]["account_id"] == account_id and synced.data["account"]["status"] == "active"
    assert synced.data["bills"] == len(held) == len(SandboxAccount.clearwater(API_KEY).bills(clock.today()))
    assert outbox_of(api, user_id, account_id) == ()

    # When it is fetched again unchanged, Then nothing is announced
    scheduled_fetch(api, load_handler, user_id, account_id)
    assert events_on_the_delivery_queue(api) == []

    # When the next month's bill is out at the next fetch, Then exactly one bill.created, the bill as
    # GET /bills shows it
    clock.advance(days=1)
    scheduled_fetch(api, load_handler, user_id, account_id)
    (created,) = events_on_the_delivery_queue(api)
    newest = max(api.bills_of(user_id, "clearwater")["bills"], key=lambda bill: bill["issued_on"])
    assert created.type == "bill.created"
    assert created.data["bill"] == newest
    assert outbox_of(api, user_id, account_id) == ()


@pytest.mark.clock("2026-10-31T12:00:00+00:00")
def test_an_event_the_bus_refused_waits_in_the_outbox_and_goes_out_with_the_next_fetch(
    api: Api, clock: Clock, load_handler: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id, account_id = linked_and_fetched(api, load_handler)
    events_on_the_delivery_queue(api)
    # Given EventBridge refusing every PutEvents
    refused: list[int] = []
    put = event_bus.EventBus.publish

    def refuse(self: event_bus.EventBus, events: Any) -> None:
        refused.append(len(events))
        raise event_bus.EventsNotPublished("EventBridge refused 1 of the events")

    monkeypatch.setattr(event_bus.EventBus, "publish", refuse)
    # When a fetch stores a new bill
    clock.advance(days=1)
    request_body = json.dumps({"user_id": user_id, "account_id": account_id, "reason": "schedule"})
    boto3.client("sqs").send_message(QueueUrl=api.stack.refs["FetchQueue"], MessageBody=request_body)
    api.fetch = load_handler("FetchProviderFunction")
    outcome = api.deliver()
    # Then the record fails (SQS delivers it again), the bill is stored, and its event waits in the outbox
    assert len(outcome["batchItemFailures"]) == 1 and refused == [1]
    assert len(api.bills_of(user_id, "clearwater")["bills"]) == 25
    (waiting,) = outbox_of(api, user_id, account_id)
    assert Event.model_validate_json(waiting).type == "bill.created"
    assert events_on_the_delivery_queue(api) == []

    # When the bus takes events again and the account is fetched next, Then that event goes out first,
    # under its id, and the outbox is empty
    monkeypatch.setattr(event_bus.EventBus, "publish", put)
    scheduled_fetch(api, load_handler, user_id, account_id)
    (published,) = events_on_the_delivery_queue(api)
    assert published == Event.model_validate_json(waiting)
    assert outbox_of(api, user_id, account_id) == ()


def test_refused_credentials_are_one_account_needs_reauth(
    api: Api, load_handler: Callable[[str], ModuleType], mock_provider: tuple[str, Control]
) -> None:
    user_id, account_id = linked_and_fetched(api, load_handler)
    events_on_the_delivery_queue(api)
    # When ClearWater refuses the key at the next fetch
    sandbox_admin(mock_provider[0], "faults/clearwater", {"auth_failure": True})
    scheduled_fetch(api, load_handler, user_id, account_id)
    # Then one account.needs_reauth, the account as GET /accounts now shows it
    (reauth,) = events_on_the_delivery_queue(api)
    (shown,) = api.accounts(user_id)
    assert reauth.type == "account.needs_reauth"
    assert reauth.data["account"]["status"] == shown["status"] == "needs_reauth"
    # And the fetches that skip it meanwhile announce nothing more
    scheduled_fetch(api, load_handler, user_id, account_id)
    assert events_on_the_delivery_queue(api) == []
