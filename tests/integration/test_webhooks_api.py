"""The webhooks API through API Gateway-shaped events (moto in process): registering, listing, reading,
deleting, rotating a secret, enabling a disabled one, sending a test event and reading the delivery log; the
URL policy; the secret shown once and stored only sealed; another user's webhook absent everywhere; hostile
bodies."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest
import standardwebhooks
from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidTag

from billhub import webhooks as domain
from billhub.credentials import CredentialVault
from billhub.events import EVENT_TYPES, Event
from billhub.store import BillsTable
from billhub.webhook_models import Delivery
from localcloud.provision import Stack
from tests.conftest import Clock
from tests.integration.harness import Api

PUBLIC_URL = "https://93.184.215.14/hooks/billhub"  # a public address literal: no DNS lookup in the tests
ROUTES = (
    ("GET", "/webhooks/{webhook_id}"),
    ("DELETE", "/webhooks/{webhook_id}"),
    ("POST", "/webhooks/{webhook_id}/rotate-secret"),
    ("POST", "/webhooks/{webhook_id}/enable"),
    ("POST", "/webhooks/{webhook_id}/test"),
    ("GET", "/webhooks/{webhook_id}/deliveries"),
)


def create(api: Api, user_id: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
    status, answer, _ = api.call(
        api.webhooks, "POST", "/webhooks", user_id=user_id, body={"url": PUBLIC_URL} if body is None else body, **kwargs
    )
    return status, answer


def on(api: Api, method: str, route: str, user_id: str, webhook_id: str, **kwargs: Any) -> tuple[int, Any]:
    status, body, _ = api.route(api.webhooks, method, route, {"webhook_id": webhook_id}, user_id=user_id, **kwargs)
    return status, body


def table(stack: Stack) -> BillsTable:
    return BillsTable(boto3.client("dynamodb"), stack.refs["BillsTable"])


def sealer(stack: Stack) -> domain.SecretSealer:
    vault = CredentialVault(boto3.client("kms"), stack.refs["CredentialsKey"], purpose=domain.SECRET_PURPOSE)
    return domain.SecretSealer(vault)


def raw_items(stack: Stack) -> str:
    client = boto3.client("dynamodb")
    items: list[dict[str, Any]] = []
    for page in client.get_paginator("scan").paginate(TableName=stack.refs["BillsTable"]):
        items += page["Items"]
    return json.dumps(items, default=str)


def test_a_webhook_is_registered_with_a_secret_shown_once(api: Api, stack: Stack, clock: Clock) -> None:
    # Given a user
    user_id = api.user()
    # When they register a webhook with no event types
    status, created = create(api, user_id, {"url": PUBLIC_URL, "description": "My ledger"})
    # Then it is answered once with its Standard Webhooks secret, subscribed to every type
    assert status == 201, created
    assert created["secret"].startswith("whsec_")
    assert len(base64.b64decode(created["secret"].removeprefix("whsec_"))) == 32
    assert created["webhook_id"].startswith("wh_") and len(created["webhook_id"]) == 27
    assert created["events"] == list(EVENT_TYPES)
    assert (created["url"], created["description"], created["disabled"]) == (PUBLIC_URL, "My ledger", False)
    assert datetime.fromisoformat(created["created_at"]) == clock.now
    # And a receiver can verify what that secret signs
    signer = standardwebhooks.Webhook(created["secret"])
    body = '{"type":"webhook.test"}'
    timestamp = datetime.fromtimestamp(int(clock.now.timestamp()), tz=clock.now.tzinfo)
    signature = signer.sign("msg_1", timestamp, body)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
    }
    assert standardwebhooks.Webhook(created["secret"]).verify(body, headers) == {"type": "webhook.test"}
    # And neither the listing nor the webhook's own GET ever shows the secret
    status, listing, _ = api.call(api.webhooks, "GET", "/webhooks", user_id=user_id)
    assert status == 200 and [hook["webhook_id"] for hook in listing["webhooks"]] == [created["webhook_id"]]
    status, one = on(api, "GET", "/webhooks/{webhook_id}", user_id, created["webhook_id"])
    assert status == 200 and one == {key: value for key, value in created.items() if key != "secret"}
    for answer in (listing, one):
        assert "secret" not in json.dumps(answer)
    # And the table holds the secret only sealed: neither it nor its key bytes appear in any raw item,
    # and the sealed one opens, with the webhook vault, to the secret answered
    stored = raw_items(stack)
    key_b64 = created["secret"].removeprefix("whsec_")
    assert key_b64 not in stored and created["secret"] not in stored
    webhook = table(stack).webhooks.get_webhook(user_id, created["webhook_id"])
    assert webhook is not None and len(webhook.secrets) == 1
    assert sealer(stack).open(user_id, webhook.webhook_id, webhook.secrets[0].ciphertext) == created["secret"]


def test_a_webhook_secret_and_a_credential_never_open_as_each_other(api: Api, stack: Stack) -> None:
    # Given a webhook's sealed secret and a linked account's sealed credentials
    user_id = api.user()
    status, created = create(api, user_id)
    assert status == 201, created
    status, account = api.link_clearwater(user_id)
    assert status == 201, account
    records = table(stack)
    webhook = records.webhooks.get_webhook(user_id, created["webhook_id"])
    stored_account = records.accounts.get_account(user_id, account["account_id"])
    assert webhook is not None and stored_account is not None
    credentials_vault = CredentialVault(boto3.client("kms"), stack.refs["CredentialsKey"])
    webhook_vault = CredentialVault(boto3.client("kms"), stack.refs["CredentialsKey"], purpose=domain.SECRET_PURPOSE)
    # When each is opened by the other purpose's vault, even under the other's ids, Then neither opens
    for vault, owner, ciphertext in (
        (credentials_vault, created["webhook_id"], webhook.secrets[0].ciphertext),
        (credentials_vault, account["account_id"], webhook.secrets[0].ciphertext),
        (webhook_vault, account["account_id"], stored_account.credentials_ciphertext),
        (webhook_vault, created["webhook_id"], stored_account.credentials_ciphertext),
    ):
        with pytest.raises((ClientError, InvalidTag)):
            vault.decrypt(user_id, owner, ciphertext)
    # And each opens with its own
    assert credentials_vault.decrypt(user_id, account["account_id"], stored_account.credentials_ciphertext)
    assert webhook_vault.decrypt(user_id, created["webhook_id"], webhook.secrets[0].ciphertext)["secret"]


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.215.14/hook",  # http to a public host
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.1/hook",
        "https://192.168.1.1/hook",
        "https://[fd00::1]/hook",
        "https://2130706433/hook",  # 127.0.0.1 as one integer
        "https://user:pass@93.184.215.14/hook",
        "ftp://93.184.215.14/hook",
        "https:///hook",
        "not a url",
    ],
)
def test_a_url_outside_the_public_internet_is_refused(api: Api, url: str) -> None:
    # Given a user, When they register a webhook at a URL the policy refuses
    status, body = create(api, api.user(), {"url": url})
    # Then it is a 422 saying why, and nothing is registered
    assert status == 422, body
    assert body["code"] == "webhook_url_refused" and body["details"]["reason"], body


def test_a_name_resolving_to_a_private_address_is_refused(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a name that resolves to a public and a private address
    from billhub import webhook_urls

    monkeypatch.setattr(webhook_urls, "system_resolver", lambda host, port: ["93.184.215.14", "10.1.2.3"])
    user_id = api.user()
    # When it is registered, Then it is refused (the connection could land on either)
    status, body = create(api, user_id, {"url": "https://hooks.example.com/in"})
    assert status == 422 and body["code"] == "webhook_url_refused", body
    # And a name resolving to public addresses only is accepted
    monkeypatch.setattr(webhook_urls, "system_resolver", lambda host, port: ["93.184.215.14"])
    status, body = create(api, user_id, {"url": "https://hooks.example.com/in"})
    assert status == 201, body


def test_the_default_stack_refuses_loopback_http(api: Api) -> None:
    status, body = create(api, api.user(), {"url": "http://127.0.0.1:8080/hook"})
    assert status == 422 and body["code"] == "webhook_url_refused", body


@pytest.mark.stack_parameters(WebhookAllowLoopback="true")
@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("http://127.0.0.1:8080/hook", True),
        ("http://localhost:8080/hook", True),
        ("http://10.0.0.1/hook", False),
        ("http://169.254.169.254/latest/meta-data", False),
        ("https://192.168.0.10/hook", False),
        ("http://93.184.215.14/hook", False),
    ],
)
def test_the_loopback_parameter_allows_loopback_and_nothing_more(api: Api, url: str, accepted: bool) -> None:
    status, body = create(api, api.user(), {"url": url})
    assert status == (201 if accepted else 422), body


def test_another_users_webhook_is_not_found_on_every_route(api: Api, stack: Stack) -> None:
    # Given Alice's webhook
    alice, bob = api.user("alice@example.com"), api.user("bob@example.com")
    status, created = create(api, alice)
    assert status == 201, created
    before = table(stack).webhooks.get_webhook(alice, created["webhook_id"])
    # When Bob calls each route with its id (and with an id nobody has), Then each is a 404
    for method, route in ROUTES:
        for webhook_id in (created["webhook_id"], "wh_" + "0" * 24):
            status, body = on(api, method, route, bob, webhook_id)
            assert status == 404 and body["code"] == "not_found", (method, route, body)
    # And Bob's listing is empty, and Alice's webhook is as it was
    status, listing, _ = api.call(api.webhooks, "GET", "/webhooks", user_id=bob)
    assert status == 200 and listing == {"webhooks": []}
    assert table(stack).webhooks.get_webhook(alice, created["webhook_id"]) == before


@pytest.mark.parametrize(
    "body",
    [
        [{"url": PUBLIC_URL}],
        "https://93.184.215.14/",
        {"url": PUBLIC_URL, "events": ["bill.paid"]},
        {"url": PUBLIC_URL, "events": []},
        {"url": PUBLIC_URL, "events": ["bill.created", "bill.created"]},
        {"url": PUBLIC_URL, "events": "bill.created"},
        {"url": PUBLIC_URL, "description": "x" * 201},
        {"url": PUBLIC_URL, "description": "line\nbreak"},
        {"url": PUBLIC_URL, "description": "bidi\u202eoverride"},
        {"url": PUBLIC_URL + "\u0000"},
        {"url": "https://93.184.215.14/" + "a" * 2048},
        {"url": 42},
        {"url": PUBLIC_URL, "user_id": "someone-else"},
        {},
    ],
)
def test_a_hostile_body_is_a_json_4xx(api: Api, body: Any) -> None:
    status, answer = create(api, api.user(), body)
    assert 400 <= status < 500, answer
    assert set(answer) == {"code", "message", "details"}, answer


def test_an_invalid_webhook_id_is_refused_before_the_store(api: Api) -> None:
    user_id = api.user()
    for webhook_id in ("wh_XYZ", "../../etc", "wh_" + "0" * 25):
        status, body = on(api, "GET", "/webhooks/{webhook_id}", user_id, webhook_id)
        assert 400 <= status < 500 and set(body) == {"code", "message", "details"}, body


def test_rotating_keeps_the_previous_secret_signing_for_24_hours(api: Api, stack: Stack, clock: Clock) -> None:
    # Given a webhook registered an hour ago
    user_id = api.user()
    status, created = create(api, user_id)
    assert status == 201, created
    clock.advance(hours=1)
    # When its secret is rotated
    status, rotated = on(api, "POST", "/webhooks/{webhook_id}/rotate-secret", user_id, created["webhook_id"])
    # Then the new secret is answered, and the previous one ends a day from now
    assert status == 200, rotated
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
    standardwebhooks.Webhook(rotated["secret"])
    assert datetime.fromisoformat(rotated["previous_secret_expires_at"]) == clock.now + timedelta(hours=24)
    # And both sign now, newest first, the previous one until then
    webhook = table(stack).webhooks.get_webhook(user_id, created["webhook_id"])
    assert webhook is not None
    assert domain.signing_secrets(sealer(stack), webhook, clock.now) == [rotated["secret"], created["secret"]]
    assert webhook.secrets[1].expires_at == clock.now + timedelta(hours=24)
    assert domain.signing_secrets(sealer(stack), webhook, clock.now + timedelta(hours=24)) == [rotated["secret"]]
    # And a second rotation keeps the first's expiry (never extends it) and gives the second a day
    clock.advance(hours=2)
    status, again = on(api, "POST", "/webhooks/{webhook_id}/rotate-secret", user_id, created["webhook_id"])
    assert status == 200, again
    webhook = table(stack).webhooks.get_webhook(user_id, created["webhook_id"])
    assert webhook is not None
    assert domain.signing_secrets(sealer(stack), webhook, clock.now) == [
        again["secret"],
        rotated["secret"],
        created["secret"],
    ]
    assert [secret.expires_at for secret in webhook.secrets] == [
        None,
        clock.now + timedelta(hours=24),
        clock.now + timedelta(hours=22),
    ]
    # And once the first has expired, a rotation drops it
    clock.advance(hours=23)
    status, third = on(api, "POST", "/webhooks/{webhook_id}/rotate-secret", user_id, created["webhook_id"])
    assert status == 200, third
    webhook = table(stack).webhooks.get_webhook(user_id, created["webhook_id"])
    assert webhook is not None and len(webhook.secrets) == 3
    assert domain.signing_secrets(sealer(stack), webhook, clock.now) == [
        third["secret"],
        again["secret"],
        rotated["secret"],
    ]
    # And the listing never shows one
    status, listing, _ = api.call(api.webhooks, "GET", "/webhooks", user_id=user_id)
    assert status == 200 and "whsec_" not in json.dumps(listing)


def test_the_eleventh_webhook_is_refused(api: Api, clock: Clock) -> None:
    user_id = api.user()
    ids = []
    for _ in range(10):
        status, body = create(api, user_id)
        assert status == 201, body
        ids.append(body["webhook_id"])
        clock.advance(seconds=1)
    status, body = create(api, user_id)
    assert status == 409 and body["code"] == "too_many_webhooks" and body["details"] == {"limit": 10}, body
    # The listing is newest first
    status, listing, _ = api.call(api.webhooks, "GET", "/webhooks", user_id=user_id)
    assert status == 200 and [hook["webhook_id"] for hook in listing["webhooks"]] == ids[::-1]
    # And deleting one makes room
    assert on(api, "DELETE", "/webhooks/{webhook_id}", user_id, ids[0])[0] == 204
    assert create(api, user_id)[0] == 201


def test_a_deleted_webhook_is_gone(api: Api) -> None:
    user_id = api.user()
    status, created = create(api, user_id)
    assert status == 201, created
    status, body, _ = api.route(
        api.webhooks, "DELETE", "/webhooks/{webhook_id}", {"webhook_id": created["webhook_id"]}, user_id=user_id
    )
    assert status == 204, body
    for method, route in ROUTES:
        status, body = on(api, method, route, user_id, created["webhook_id"])
        assert status == 404, (method, route, body)
    status, listing, _ = api.call(api.webhooks, "GET", "/webhooks", user_id=user_id)
    assert listing == {"webhooks": []}


def test_a_test_event_goes_to_the_delivery_queue(api: Api, stack: Stack, clock: Clock) -> None:
    # Given a webhook
    user_id = api.user()
    status, created = create(api, user_id, {"url": PUBLIC_URL, "events": ["bill.created"]})
    assert status == 201, created
    assert created["events"] == ["bill.created"]
    # When its test is asked for
    status, sent = on(api, "POST", "/webhooks/{webhook_id}/test", user_id, created["webhook_id"])
    # Then it is accepted, and the bus routed a webhook.test event for this webhook only to the queue
    assert status == 202, sent
    sqs = boto3.client("sqs")
    messages = sqs.receive_message(QueueUrl=stack.refs["DeliveryQueue"], MaxNumberOfMessages=10).get("Messages", [])
    assert len(messages) == 1, messages
    envelope = json.loads(messages[0]["Body"])
    assert envelope["detail-type"] == "webhook.test" and envelope["source"] == "billhub"
    event = Event.model_validate(envelope["detail"])
    assert (event.event_id, event.type, event.user_id, event.webhook_id) == (
        sent["event_id"],
        "webhook.test",
        user_id,
        created["webhook_id"],
    )
    assert event.data["webhook_id"] == created["webhook_id"] and event.data["message"]
    assert event.occurred_at == clock.now


def test_a_disabled_webhook_takes_no_test(api: Api, stack: Stack, clock: Clock) -> None:
    # Given a webhook disabled after three days of failures
    user_id = api.user()
    status, created = create(api, user_id)
    assert status == 201, created
    records = table(stack).webhooks
    webhook = records.get_webhook(user_id, created["webhook_id"])
    assert webhook is not None
    since = clock.now - timedelta(days=3)
    records.record_webhook_health(webhook, since, clock.now, "every delivery failed for 3 days")
    # When its test is asked for, Then it is a 409 saying so, and nothing is published
    status, body = on(api, "POST", "/webhooks/{webhook_id}/test", user_id, created["webhook_id"])
    assert status == 409 and body["code"] == "webhook_disabled", body
    messages = boto3.client("sqs").receive_message(QueueUrl=stack.refs["DeliveryQueue"]).get("Messages", [])
    assert messages == []
    # And the listing says it is disabled, why and since when
    status, listing, _ = api.call(api.webhooks, "GET", "/webhooks", user_id=user_id)
    [shown] = listing["webhooks"]
    assert (shown["disabled"], shown["disabled_reason"]) == (True, "every delivery failed for 3 days")
    assert datetime.fromisoformat(shown["disabled_at"]) == clock.now
    assert datetime.fromisoformat(shown["failing_since"]) == since


def test_a_disabled_webhook_is_enabled_again_and_takes_a_test(api: Api, stack: Stack, clock: Clock) -> None:
    # Given a webhook disabled after three days of failures, which takes no test
    user_id = api.user()
    status, created = create(api, user_id)
    assert status == 201, created
    webhook_id = created["webhook_id"]
    records = table(stack).webhooks
    webhook = records.get_webhook(user_id, webhook_id)
    assert webhook is not None
    records.record_webhook_health(webhook, clock.now - timedelta(days=3), clock.now, "every delivery failed for 3 days")
    status, body = on(api, "POST", "/webhooks/{webhook_id}/test", user_id, webhook_id)
    assert status == 409 and body["code"] == "webhook_disabled", body
    # When it is enabled, Then it answers 200 with the webhook, no longer disabled nor failing
    status, enabled = on(api, "POST", "/webhooks/{webhook_id}/enable", user_id, webhook_id)
    assert status == 200, enabled
    assert (enabled["disabled"], enabled["disabled_at"], enabled["disabled_reason"], enabled["failing_since"]) == (
        False,
        None,
        None,
        None,
    )
    # And GET answers the same, the same id (its secret unchanged)
    status, shown = on(api, "GET", "/webhooks/{webhook_id}", user_id, webhook_id)
    assert status == 200 and shown == enabled and shown["webhook_id"] == webhook_id, shown
    after = records.get_webhook(user_id, webhook_id)
    assert after is not None and after.secrets == webhook.secrets
    # And enabling it again answers it unchanged
    status, again = on(api, "POST", "/webhooks/{webhook_id}/enable", user_id, webhook_id)
    assert status == 200 and again == enabled, again
    # And it takes a test event again
    status, sent = on(api, "POST", "/webhooks/{webhook_id}/test", user_id, webhook_id)
    assert status == 202, sent


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_the_delivery_log_pages_newest_first_and_refuses_a_tampered_cursor(
    api: Api, stack: Stack, clock: Clock
) -> None:
    # Given a webhook with no deliveries yet
    user_id = api.user()
    status, created = create(api, user_id)
    assert status == 201, created
    route = "/webhooks/{webhook_id}/deliveries"
    status, log = on(api, "GET", route, user_id, created["webhook_id"])
    assert status == 200 and log == {"deliveries": [], "next_cursor": None}, log
    # When three deliveries are logged, a second apart
    deliveries = table(stack).deliveries
    ids = []
    for second in range(3):
        event = Event(
            event_id=f"msg_{second:032x}",
            type="bill.created",
            user_id=user_id,
            occurred_at=clock.now + timedelta(seconds=second),
            data={},
        )
        delivery = Delivery(webhook_id=created["webhook_id"], event=event, created_at=event.occurred_at)
        assert deliveries.start_delivery(delivery, clock.now + timedelta(days=30))
        ids.append(delivery.delivery_id)
    # Then the log pages through them newest first
    status, first = on(api, "GET", route, user_id, created["webhook_id"], query={"limit": "2"})
    assert status == 200, first
    assert [row["delivery_id"] for row in first["deliveries"]] == ids[:0:-1]
    assert first["deliveries"][0]["state"] == "pending" and first["deliveries"][0]["attempts"] == 0
    assert first["next_cursor"]
    status, second_page = on(
        api, "GET", route, user_id, created["webhook_id"], query={"limit": "2", "cursor": first["next_cursor"]}
    )
    assert status == 200 and [row["delivery_id"] for row in second_page["deliveries"]] == ids[:1], second_page
    # And a cursor it never handed out is a 400; a limit out of range a 422
    for cursor in (_cursor('["DELIVERY#wh_000000000000000000000000#x"]'), _cursor("not json"), _cursor("[1, 2]")):
        status, body = on(api, "GET", route, user_id, created["webhook_id"], query={"cursor": cursor})
        assert status == 400 and body["code"] == "invalid_cursor", body
    for limit in ("0", "101", "x"):
        status, body = on(api, "GET", route, user_id, created["webhook_id"], query={"limit": limit})
        assert status == 422 and body["code"] == "validation_error", body
