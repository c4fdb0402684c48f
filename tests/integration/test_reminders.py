"""Issue 18: the daily reminders. A user's bills due soon and overdue are announced once per bill on the
event bus (``bill.due_soon``, ``bill.overdue``, which the bus routes to the DeliveryQueue) and listed in a
daily email through SES, unless the user turned reminders off; against moto provisioned from the
template, the reminders function's real handler run as its schedule runs it, dates relative to the
test's clock."""

from __future__ import annotations

import email
import json
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from email.message import Message
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto.ses.models import ses_backends

from billhub import keys, reminders
from billhub.event_bus import EventBus, EventsNotPublished
from billhub.events import event_id
from billhub.models import Account, Bill, BillStatus, Category, bill_id_of
from billhub.reminder_times import next_reminder_at
from billhub.store import BillsTable
from localcloud.provision import ACCOUNT_ID, Stack
from tests.conftest import REGION, Clock
from tests.events import scheduled_event
from tests.integration.harness import Api, LambdaContext

EMAIL = "ada@example.com"


@pytest.fixture
def table(stack: Stack) -> BillsTable:
    return BillsTable(boto3.client("dynamodb"), stack.refs["BillsTable"])


@pytest.fixture
def run_reminders(load_handler: Callable[[str], ModuleType]) -> Callable[[], dict[str, Any]]:
    module = load_handler("RemindersFunction")

    def run() -> dict[str, Any]:
        answer: dict[str, Any] = module.handler(scheduled_event(), LambdaContext())
        return answer

    return run


def sent_emails() -> list[Message]:
    """Every email moto's SES took, oldest first."""
    return [email.message_from_string(sent.raw_data) for sent in ses_backends[ACCOUNT_ID][REGION].sent_messages]


def text_of(message: Message, subtype: str) -> str:
    for part in message.walk():
        if part.get_content_type() == f"text/{subtype}":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode()
    raise AssertionError(f"no text/{subtype} part")


def events_delivered(stack: Stack) -> list[dict[str, Any]]:
    """The events the bus routed to the DeliveryQueue since last asked (taken off it)."""
    sqs = boto3.client("sqs")
    url = stack.refs["DeliveryQueue"]
    found: list[dict[str, Any]] = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            found.append(json.loads(message["Body"])["detail"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return found


def a_bill(account: Account, number: str, due_on: date, amount: str, status: BillStatus = BillStatus.UNPAID) -> Bill:
    return Bill(
        provider=account.provider,
        account_id=account.account_id,
        provider_bill_id=number,
        category=Category.WATER,
        amount=Decimal(amount),
        currency="USD",
        issued_on=due_on - timedelta(days=21),
        due_on=due_on,
        status=status,
    )


def user_with_account(api: Api, table: BillsTable, email_address: str = EMAIL) -> Account:
    user_id = api.user(email_address)
    status, body = api.link_clearwater(user_id, api_key=f"cw_sandbox_{user_id[:8]}")
    assert status == 201, body
    stored = table.accounts.get_account(user_id, body["account_id"])
    assert stored is not None
    return stored.account


def to_reminder_time(clock: Clock, days: int = 0) -> date:
    """Moves the clock to a minute after the next reminder time (08:00 UTC) ``days`` days on; that day."""
    clock.now = next_reminder_at(clock.now) + timedelta(days=days, minutes=1)
    return clock.today()


def bill_id(account: Account, number: str) -> str:
    return bill_id_of(account.provider, account.account_id, number)


def test_a_user_gets_one_email_of_their_bills_due_soon_and_overdue_and_each_event_once(
    api: Api, table: BillsTable, stack: Stack, clock: Clock, run_reminders: Callable[[], dict[str, Any]]
) -> None:
    # Given a user (due-soon days 7, the default) whose account holds, as of tomorrow's reminder, a bill
    # due in 3 days, one 2 days overdue, one due in 20 days and one paid
    account = user_with_account(api, table)
    today = next_reminder_at(clock.now).date()
    table.bills.save_fetched_bills(
        account,
        [
            a_bill(account, "SOON-1", today + timedelta(days=3), "30.5"),
            a_bill(account, "LATE-1", today - timedelta(days=2), "42.10"),
            a_bill(account, "LATER-1", today + timedelta(days=20), "99.00"),
            a_bill(account, "PAID-1", today + timedelta(days=1), "10.00", BillStatus.PAID),
        ],
        clock(),
    )
    events_delivered(stack)
    # When the reminders run at the reminder time
    to_reminder_time(clock)
    answer = run_reminders()
    # Then one email went to the user, listing both bills and the totals
    assert answer["emails"] == 1
    [message] = sent_emails()
    assert message["To"] == EMAIL and message["From"] == stack.parameters["ReminderSender"]
    assert message["Subject"] == "1 bill due soon, 1 overdue"
    text = text_of(message, "plain")
    assert "ClearWater Utilities, bill SOON-1: 30.50 USD, due " + (today + timedelta(days=3)).isoformat() in text
    assert "due in 3 days" in text
    assert "ClearWater Utilities, bill LATE-1: 42.10 USD" in text and "overdue by 2 days" in text
    assert "Total: 72.60 USD" in text
    assert "LATER-1" not in text and "PAID-1" not in text
    assert "SOON-1" in text_of(message, "html") and "72.60 USD" in text_of(message, "html")
    # and one bill.due_soon and one bill.overdue are on the DeliveryQueue, with the bills as GET /bills shows them
    delivered = {event["type"]: event for event in events_delivered(stack)}
    assert set(delivered) == {"bill.due_soon", "bill.overdue"}
    soon, late = delivered["bill.due_soon"], delivered["bill.overdue"]
    assert soon["event_id"] == event_id("bill.due_soon", bill_id(account, "SOON-1"))
    assert soon["data"]["bill"]["amount"] == "30.50" and soon["data"]["bill"]["currency"] == "USD"
    assert soon["data"]["days_until_due"] == 3 and soon["data"]["bill"]["status"] == "unpaid"
    assert late["event_id"] == event_id("bill.overdue", bill_id(account, "LATE-1"))
    assert late["data"]["days_overdue"] == 2 and late["data"]["bill"]["status"] == "overdue"
    assert late["occurred_at"].startswith((today - timedelta(days=1)).isoformat())

    # When the reminders run again the same day (hourly), nothing more is sent
    clock.advance(hours=1)
    assert run_reminders()["reminded"] == 0
    assert len(sent_emails()) == 1 and events_delivered(stack) == []

    # When they run the next day: an email again (daily), but no event again for the same bills
    to_reminder_time(clock)
    assert run_reminders()["emails"] == 1
    assert len(sent_emails()) == 2
    assert sent_emails()[1]["Subject"] == "1 bill due soon, 1 overdue"
    assert events_delivered(stack) == []

    # When the bill due soon becomes overdue, days later: one bill.overdue for it
    to_reminder_time(clock, days=3)
    run_reminders()
    delivered_later = events_delivered(stack)
    assert [(event["type"], event["event_id"]) for event in delivered_later] == [
        ("bill.overdue", event_id("bill.overdue", bill_id(account, "SOON-1")))
    ]
    assert sent_emails()[-1]["Subject"] == "2 bills overdue"


def test_reminders_turned_off_send_no_email_but_the_events_still_go_out(
    api: Api, table: BillsTable, stack: Stack, clock: Clock, run_reminders: Callable[[], dict[str, Any]]
) -> None:
    # Given a user with an overdue bill who turned reminders off through PATCH /me
    account = user_with_account(api, table)
    today = next_reminder_at(clock.now).date()
    table.bills.save_fetched_bills(account, [a_bill(account, "LATE-1", today - timedelta(days=1), "5.00")], clock())
    status, body, _ = api.call(
        api.auth, "PATCH", "/me", user_id=account.user_id, body={"preferences": {"reminders": False}}
    )
    assert status == 200 and body["preferences"]["reminders"] is False
    events_delivered(stack)
    # When the reminders run
    to_reminder_time(clock)
    answer = run_reminders()
    # Then no email, but the bill.overdue event
    assert answer["reminded"] == 1 and answer["emails"] == 0
    assert sent_emails() == []
    assert [event["type"] for event in events_delivered(stack)] == ["bill.overdue"]


def test_two_runs_at_once_send_one_email(
    api: Api, table: BillsTable, stack: Stack, clock: Clock, run_reminders: Callable[[], dict[str, Any]]
) -> None:
    # Given a user with a bill due soon, found due by a run that has not claimed them yet
    account = user_with_account(api, table)
    today = next_reminder_at(clock.now).date()
    table.bills.save_fetched_bills(account, [a_bill(account, "SOON-1", today + timedelta(days=1), "5.00")], clock())
    to_reminder_time(clock)
    [found] = list(table.reminders.due_reminders(clock(), keys.reminder_shards()))
    # When another run reminds them meanwhile, and then the first goes on
    assert run_reminders()["emails"] == 1
    sender = reminders.SesEmailSender(boto3.client("ses"), stack.parameters["ReminderSender"])
    bus = EventBus(boto3.client("events"), stack.refs["EventBus"])
    claimed = reminders.remind_user(table, bus, sender, found, clock())
    # Then the first run's claim failed: one email in all, one event delivered once
    assert claimed is False
    assert len(sent_emails()) == 1
    assert len({event["event_id"] for event in events_delivered(stack)}) == 1


def test_a_user_being_deleted_gets_nothing_and_is_never_filed_again(
    api: Api, table: BillsTable, stack: Stack, clock: Clock, run_reminders: Callable[[], dict[str, Any]]
) -> None:
    # Given a user with an overdue bill who began deleting themselves
    account = user_with_account(api, table)
    today = next_reminder_at(clock.now).date()
    table.bills.save_fetched_bills(account, [a_bill(account, "LATE-1", today - timedelta(days=1), "5.00")], clock())
    table.user_deletions.begin_user_deletion(account.user_id, clock())
    events_delivered(stack)
    # When the reminders run, and a lazy filing is attempted for them
    to_reminder_time(clock)
    answer = run_reminders()
    filed = table.users.file_for_reminders(account.user_id, next_reminder_at(clock()))
    # Then nothing was sent or published, and the profile stays under the deletion sweep's key
    assert answer["reminded"] == 0 and sent_emails() == [] and events_delivered(stack) == []
    assert filed is False
    raw = boto3.client("dynamodb").get_item(
        TableName=stack.refs["BillsTable"], Key={"PK": {"S": keys.user_pk(account.user_id)}, "SK": {"S": "PROFILE"}}
    )["Item"]
    assert raw["GSI1PK"]["S"] == keys.DELETING_USERS


def test_a_new_user_is_filed_on_the_reminder_schedule_at_registration(api: Api, stack: Stack, clock: Clock) -> None:
    # When a user registers
    user_id = api.user()
    # Then their profile, in the write that created it, is due at the next 08:00 UTC in their shard
    raw = boto3.client("dynamodb").get_item(
        TableName=stack.refs["BillsTable"], Key={"PK": {"S": keys.user_pk(user_id)}, "SK": {"S": "PROFILE"}}
    )["Item"]
    expected = next_reminder_at(clock())
    assert raw["GSI1PK"]["S"] == keys.reminder_shard(user_id)
    assert raw["GSI1SK"]["S"] == keys.reminder_sk(user_id, expected)
    assert expected.hour == 8 and timedelta(0) < expected - clock() <= timedelta(days=1)


def test_a_profile_from_before_the_reminders_is_filed_at_its_next_login(api: Api, stack: Stack, clock: Clock) -> None:
    # Given a profile from before the reminders (no schedule entry)
    user_id = api.user()
    dynamodb = boto3.client("dynamodb")
    key = {"PK": {"S": keys.user_pk(user_id)}, "SK": {"S": "PROFILE"}}
    dynamodb.update_item(
        TableName=stack.refs["BillsTable"], Key=key, UpdateExpression="REMOVE next_reminder_at, GSI1PK, GSI1SK"
    )
    # When the user logs in
    status, body, _ = api.call(api.auth, "POST", "/auth/login", body={"email": EMAIL, "password": "pw-" * 4})
    assert status == 200, body
    # Then they are on the schedule, due at the next 08:00 UTC
    raw = dynamodb.get_item(TableName=stack.refs["BillsTable"], Key=key)["Item"]
    assert raw["GSI1SK"]["S"] == keys.reminder_sk(user_id, next_reminder_at(clock()))


def test_events_the_bus_refused_go_out_the_next_day_and_the_email_still_goes_today(
    api: Api,
    table: BillsTable,
    stack: Stack,
    clock: Clock,
    run_reminders: Callable[[], dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a user with an overdue bill, and EventBridge refusing every entry today
    account = user_with_account(api, table)
    today = next_reminder_at(clock.now).date()
    table.bills.save_fetched_bills(account, [a_bill(account, "LATE-1", today - timedelta(days=1), "5.00")], clock())
    events_delivered(stack)
    refused = EventBus.publish

    def refuse(self: EventBus, events: Any) -> None:
        raise EventsNotPublished("throttled")

    monkeypatch.setattr(EventBus, "publish", refuse)
    # When the reminders run
    to_reminder_time(clock)
    answer = run_reminders()
    # Then the email went, no event did, and the bill is not recorded as announced
    assert (answer["emails"], answer["events"], answer["events_failed"]) == (1, 0, 1)
    assert events_delivered(stack) == []
    # and the next day, with the bus back, its bill.overdue goes out
    monkeypatch.setattr(EventBus, "publish", refused)
    to_reminder_time(clock)
    assert run_reminders()["events"] == 1
    assert [event["type"] for event in events_delivered(stack)] == ["bill.overdue"]


def test_an_email_ses_refuses_is_reported_and_never_sent_twice(
    api: Api, table: BillsTable, stack: Stack, clock: Clock, run_reminders: Callable[[], dict[str, Any]]
) -> None:
    # Given a user with an overdue bill, and the sender no longer a verified identity
    account = user_with_account(api, table)
    today = next_reminder_at(clock.now).date()
    table.bills.save_fetched_bills(account, [a_bill(account, "LATE-1", today - timedelta(days=1), "5.00")], clock())
    boto3.client("ses").delete_identity(Identity=stack.parameters["ReminderSender"])
    # When the reminders run, and again within the hour
    to_reminder_time(clock)
    answer = run_reminders()
    clock.advance(minutes=30)
    again = run_reminders()
    # Then nothing was sent, the run says so, and the claim held: the second run did not try again
    assert (answer["reminded"], answer["emails"], answer["emails_failed"]) == (1, 0, 1)
    assert again["reminded"] == 0
    assert sent_emails() == []
