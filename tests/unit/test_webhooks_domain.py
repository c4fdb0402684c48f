"""The webhooks domain with fake stores: what the API tests cannot stage easily (a rotation meeting
another, a burst of rotations, a bus refusing the event) and the function's settings."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic
import pytest
import standardwebhooks

from billhub import webhooks
from billhub.errors import NotFound, TryAgain
from billhub.event_bus import EventsNotPublished
from billhub.events import Event
from billhub.settings import WebhookSettings
from billhub.webhook_models import Webhook, WebhookSecret
from billhub.webhook_urls import UrlPolicy

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
USER = "u1"


class PlainVault:
    """Seals nothing (the vault's own tests cover the sealing): the secret, tagged with its context."""

    def encrypt(self, user_id: str, account_id: str, credentials: dict[str, Any]) -> bytes:
        return f"{user_id}|{account_id}|{credentials['secret']}".encode()

    def decrypt(self, user_id: str, account_id: str, ciphertext: bytes) -> dict[str, Any]:
        owner, webhook_id, secret = ciphertext.decode().split("|")
        assert (owner, webhook_id) == (user_id, account_id)
        return {"secret": secret}

    def forget(self) -> None:
        pass


class FakeWebhooks:
    def __init__(self) -> None:
        self.webhooks: dict[tuple[str, str], Webhook] = {}
        self.conflicts = 0  # replace_secrets calls to answer False (another writer got there first)

    def create_webhook(self, webhook: Webhook, limit: int) -> bool:
        if sum(1 for user_id, _ in self.webhooks if user_id == webhook.user_id) >= limit:
            return False
        self.webhooks[(webhook.user_id, webhook.webhook_id)] = webhook
        return True

    def list_webhooks(self, user_id: str) -> list[Webhook]:
        return [webhook for (owner, _), webhook in self.webhooks.items() if owner == user_id]

    def get_webhook(self, user_id: str, webhook_id: str) -> Webhook | None:
        return self.webhooks.get((user_id, webhook_id))

    def delete_webhook(self, user_id: str, webhook_id: str) -> bool:
        return self.webhooks.pop((user_id, webhook_id), None) is not None

    def replace_secrets(self, webhook: Webhook, secrets: tuple[WebhookSecret, ...]) -> bool:
        if self.conflicts:
            self.conflicts -= 1
            return False
        key = (webhook.user_id, webhook.webhook_id)
        if key not in self.webhooks or self.webhooks[key].secrets != webhook.secrets:
            return False
        self.webhooks[key] = webhook.model_copy(update={"secrets": secrets})
        return True

    def record_webhook_health(
        self, webhook: Webhook, failing_since: datetime | None, disabled_at: datetime | None, reason: str | None
    ) -> None:
        raise NotImplementedError


class RefusingBus:
    def publish(self, events: Sequence[Event]) -> None:
        raise EventsNotPublished("EventBridge refused 1 of the events")


@pytest.fixture
def store() -> FakeWebhooks:
    return FakeWebhooks()


sealer = webhooks.SecretSealer(PlainVault())


def register(store: FakeWebhooks) -> webhooks.WebhookCreated:
    request = webhooks.WebhookCreate(url="https://93.184.215.14/in")
    return webhooks.create_webhook(store, sealer, UrlPolicy(), USER, request, NOW)


def test_a_secret_is_standard_webhooks_format() -> None:
    for _ in range(20):
        secret = webhooks.new_secret()
        assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
        standardwebhooks.Webhook(secret)  # accepted as a signing key


def test_a_rotation_meeting_another_reads_again_and_retries_once(store: FakeWebhooks) -> None:
    created = register(store)
    store.conflicts = 1
    rotated = webhooks.rotate_secret(store, sealer, USER, created.webhook_id, NOW)
    webhook = store.get_webhook(USER, created.webhook_id)
    assert webhook is not None
    assert webhooks.signing_secrets(sealer, webhook, NOW) == [rotated.secret, created.secret]


def test_a_rotation_that_keeps_meeting_others_asks_to_try_again_and_changes_nothing(store: FakeWebhooks) -> None:
    created = register(store)
    before = store.get_webhook(USER, created.webhook_id)
    store.conflicts = 2
    with pytest.raises(TryAgain):
        webhooks.rotate_secret(store, sealer, USER, created.webhook_id, NOW)
    assert store.get_webhook(USER, created.webhook_id) == before


def test_a_rotation_of_a_webhook_deleted_meanwhile_is_not_found(store: FakeWebhooks) -> None:
    with pytest.raises(NotFound):
        webhooks.rotate_secret(store, sealer, USER, "wh_" + "0" * 24, NOW)


def test_a_burst_of_rotations_keeps_the_newest_secrets_only(store: FakeWebhooks) -> None:
    created = register(store)
    answered = [created.secret]
    for minute in range(1, 9):
        answered.append(
            webhooks.rotate_secret(store, sealer, USER, created.webhook_id, NOW + timedelta(minutes=minute)).secret
        )
    webhook = store.get_webhook(USER, created.webhook_id)
    assert webhook is not None and len(webhook.secrets) == webhooks.MAX_SECRETS_KEPT
    later = NOW + timedelta(minutes=9)
    assert webhooks.signing_secrets(sealer, webhook, later) == answered[::-1][: webhooks.MAX_SECRETS_KEPT]
    # Each rotated-out one ends a day after the rotation that replaced it, never later
    assert [secret.expires_at for secret in webhook.secrets[1:]] == [
        NOW + timedelta(minutes=minute, hours=24) for minute in (8, 7, 6, 5)
    ]


def test_a_test_event_the_bus_refuses_asks_to_try_again(store: FakeWebhooks) -> None:
    created = register(store)
    with pytest.raises(TryAgain):
        webhooks.send_test(store, RefusingBus(), USER, created.webhook_id, NOW)


def test_the_listing_is_newest_first(store: FakeWebhooks) -> None:
    ids = []
    for minute in range(3):
        request = webhooks.WebhookCreate(url="https://93.184.215.14/in")
        at = NOW + timedelta(minutes=minute)
        ids.append(webhooks.create_webhook(store, sealer, UrlPolicy(), USER, request, at).webhook_id)
    assert [view.webhook_id for view in webhooks.list_webhooks(store, USER).webhooks] == ids[::-1]


@pytest.mark.parametrize(("value", "allowed"), [("true", True), ("false", False)])
def test_the_loopback_setting_is_the_template_parameter(value: str, allowed: bool) -> None:
    environ = {"TABLE_NAME": "bills", "CREDENTIALS_KEY_ID": "k", "EVENT_BUS_NAME": "b", "WEBHOOK_ALLOW_LOOPBACK": value}
    assert WebhookSettings.from_environ(environ).WEBHOOK_ALLOW_LOOPBACK is allowed


@pytest.mark.parametrize("value", ["1", "yes", "True", "on", ""])
def test_a_loopback_setting_other_than_true_or_false_is_refused(value: str) -> None:
    environ = {"TABLE_NAME": "bills", "CREDENTIALS_KEY_ID": "k", "EVENT_BUS_NAME": "b", "WEBHOOK_ALLOW_LOOPBACK": value}
    with pytest.raises(pydantic.ValidationError):
        WebhookSettings.from_environ(environ)


def test_without_the_setting_loopback_is_refused() -> None:
    environ = {"TABLE_NAME": "bills", "CREDENTIALS_KEY_ID": "k", "EVENT_BUS_NAME": "b"}
    assert WebhookSettings.from_environ(environ).WEBHOOK_ALLOW_LOOPBACK is False
