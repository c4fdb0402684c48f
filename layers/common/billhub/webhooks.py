"""A user's webhooks over HTTP: register one, list, read and delete them, rotate a signing secret, send a
test event, read the delivery log.

The domain behind ``functions/webhooks``: it is given the stores, the vault that seals the secrets, the
publisher that puts events on the bus, the URL policy and the time, and builds none of them.

- A webhook's URL must pass ``webhook_urls.check_url`` and resolve to allowed addresses only
  (``public_addresses``) when it is registered; the delivery checks it again, against fresh DNS, before
  every attempt.
- Its signing secret is Standard Webhooks' ``whsec_`` and the base64 of 32 random bytes. It is answered
  once, by ``POST /webhooks`` (and each rotation's new one by ``rotate-secret``), and stored only sealed
  by a ``CredentialVault`` of purpose ``SECRET_PURPOSE``, bound to the user and the webhook.
- A rotation's new secret signs at once; each older one still signing goes on signing beside it for
  ``ROTATION_OVERLAP`` at most, so a receiver has a day to switch.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, Protocol

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from billhub.errors import InvalidCursor, NotFound, TooManyWebhooks, TryAgain, WebhookDisabled
from billhub.event_bus import EventPublisher, EventsNotPublished
from billhub.events import EVENT_TYPES, Event, EventType, random_event_id
from billhub.models import Visible
from billhub.store.errors import MalformedCursor
from billhub.store.protocols import DeliveryStore, WebhookStore
from billhub.webhook_models import Delivery, DeliveryState, Webhook, WebhookSecret, delivery_id
from billhub.webhook_urls import MAX_URL_CHARS, Resolver, UrlPolicy, check_url, public_addresses

# Webhooks per user: a few receivers (an app, a spreadsheet, a home automation) and their staging twins;
# each event is delivered to every one of them, so this also bounds one event's fan-out.
MAX_WEBHOOKS_PER_USER = 10
# The vault purpose of webhooks' signing secrets: a provider credential never decrypts as one.
SECRET_PURPOSE = "webhook-secret"  # noqa: S105 (a name, not a secret)
SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
SECRET_BYTES = 32
# How long a rotated-out secret goes on signing beside the new one.
ROTATION_OVERLAP = timedelta(hours=24)
# The secrets a webhook keeps (the newest, and those rotated out less than a day ago): each signs every
# delivery, so a burst of rotations drops the oldest of them early rather than growing every request.
MAX_SECRETS_KEPT = 5
MAX_DESCRIPTION_CHARS = 200
WEBHOOK_ID_PATTERN = r"^wh_[0-9a-f]{24}$"
DEFAULT_DELIVERIES_PAGE = 20
MAX_DELIVERIES_PAGE = 100
TEST_MESSAGE = "This is a test event from billhub: your endpoint received and verified it."


def _no_duplicates(events: list[EventType]) -> list[EventType]:
    if len(set(events)) != len(events):
        raise ValueError("lists an event type twice")
    return events


class WebhookCreate(BaseModel):
    """``POST /webhooks``: where to deliver, which event types (none: every type), and a note for the user."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=MAX_URL_CHARS, description="An https URL on the public internet")
    events: (
        Annotated[
            list[EventType],
            Field(min_length=1, max_length=len(EVENT_TYPES)),
            AfterValidator(_no_duplicates),
        ]
        | None
    ) = Field(default=None, description="The event types delivered here; omitted: every type, those added later too")
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION_CHARS), Visible] | None = None


# As GET /bills's cursors: base64url without padding, opaque to the caller.
Cursor = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,2048}$")]


class DeliveryQuery(BaseModel):
    """``GET /webhooks/{webhook_id}/deliveries`` query: which page."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=DEFAULT_DELIVERIES_PAGE, ge=1, le=MAX_DELIVERIES_PAGE, description="Deliveries a page")
    cursor: Cursor | None = Field(default=None, description="The `next_cursor` of the previous page")


class WebhookView(BaseModel):
    """A webhook as the API shows it: never a secret."""

    webhook_id: str
    url: str
    events: list[EventType]
    description: str | None
    created_at: datetime
    disabled: bool
    disabled_at: datetime | None
    disabled_reason: str | None
    # Since when every delivery attempt has failed; after three days of that the webhook is disabled.
    failing_since: datetime | None


class WebhookCreated(WebhookView):
    # Shown here only: the service keeps it sealed and never answers it again.
    secret: str


class WebhookList(BaseModel):
    """The caller's webhooks, newest ``created_at`` first."""

    webhooks: list[WebhookView]


class SecretRotated(BaseModel):
    secret: str
    # When the secret it replaces stops signing (None: there was none still signing).
    previous_secret_expires_at: datetime | None


class WebhookTestSent(BaseModel):
    """The ``webhook.test`` event published: its id (the ``webhook-id`` header the receiver gets) and the
    delivery's id in the log."""

    event_id: str
    delivery_id: str


class DeliveryView(BaseModel):
    delivery_id: str
    event_id: str
    event_type: EventType
    state: DeliveryState
    attempts: int
    last_status_code: int | None
    next_attempt_at: datetime | None
    created_at: datetime


class DeliveryLog(BaseModel):
    """A page of a webhook's deliveries, newest event first, and the cursor of the next page (None: the last)."""

    deliveries: list[DeliveryView]
    next_cursor: str | None


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def new_webhook_id() -> str:
    return f"wh_{secrets.token_hex(12)}"


class SecretVault(Protocol):
    """What ``SecretSealer`` needs of ``billhub.credentials.CredentialVault``."""

    def encrypt(self, user_id: str, account_id: str, credentials: dict[str, Any]) -> bytes: ...

    def decrypt(self, user_id: str, account_id: str, ciphertext: bytes) -> dict[str, Any]: ...

    def forget(self) -> None: ...


class SecretSealer:
    """Seals and opens webhooks' signing secrets with a vault of purpose ``SECRET_PURPOSE``, each bound to
    its user and webhook. (The vault is any object with ``CredentialVault``'s ``encrypt``/``decrypt``.)"""

    def __init__(self, vault: SecretVault) -> None:
        self._vault = vault

    def seal(self, user_id: str, webhook_id: str, secret: str) -> bytes:
        return self._vault.encrypt(user_id, webhook_id, {"secret": secret})

    def open(self, user_id: str, webhook_id: str, ciphertext: bytes) -> str:
        return str(self._vault.decrypt(user_id, webhook_id, ciphertext)["secret"])

    def forget(self) -> None:
        """Drops the vault's data keys (after a SnapStart restore)."""
        self._vault.forget()


def view(webhook: Webhook) -> WebhookView:
    return WebhookView(
        webhook_id=webhook.webhook_id,
        url=webhook.url,
        events=list(webhook.events) if webhook.events is not None else list(EVENT_TYPES),
        description=webhook.description,
        created_at=webhook.created_at,
        disabled=webhook.disabled_at is not None,
        disabled_at=webhook.disabled_at,
        disabled_reason=webhook.disabled_reason,
        failing_since=webhook.failing_since,
    )


def create_webhook(
    store: WebhookStore,
    sealer: SecretSealer,
    policy: UrlPolicy,
    user_id: str,
    request: WebhookCreate,
    now: datetime,
    resolve: Resolver | None = None,
) -> WebhookCreated:
    """Registers a webhook and answers it with its secret (the only time the secret is shown).

    ``RefusedUrl`` (422) for a URL that may not receive webhooks (its form, or an address its host resolves
    to); ``TooManyWebhooks`` (409) past ``MAX_WEBHOOKS_PER_USER``."""
    url = check_url(request.url, policy)
    public_addresses(url, policy, resolve)
    webhook_id = new_webhook_id()
    secret = new_secret()
    webhook = Webhook(
        webhook_id=webhook_id,
        user_id=user_id,
        url=request.url,
        events=tuple(request.events) if request.events is not None else None,
        description=request.description,
        created_at=now,
        secrets=(WebhookSecret(ciphertext=sealer.seal(user_id, webhook_id, secret), created_at=now),),
    )
    if not store.create_webhook(webhook, MAX_WEBHOOKS_PER_USER):
        raise TooManyWebhooks(MAX_WEBHOOKS_PER_USER)
    return WebhookCreated(**view(webhook).model_dump(), secret=secret)


def list_webhooks(store: WebhookStore, user_id: str) -> WebhookList:
    webhooks = sorted(
        store.list_webhooks(user_id), key=lambda webhook: (webhook.created_at, webhook.webhook_id), reverse=True
    )
    return WebhookList(webhooks=[view(webhook) for webhook in webhooks])


def _owned(store: WebhookStore, user_id: str, webhook_id: str) -> Webhook:
    webhook = store.get_webhook(user_id, webhook_id)
    if webhook is None:
        raise NotFound("No such webhook.")
    return webhook


def get_webhook(store: WebhookStore, user_id: str, webhook_id: str) -> WebhookView:
    return view(_owned(store, user_id, webhook_id))


def delete_webhook(store: WebhookStore, user_id: str, webhook_id: str) -> None:
    if not store.delete_webhook(user_id, webhook_id):
        raise NotFound("No such webhook.")


def rotated_secrets(
    webhook: Webhook, new: WebhookSecret, now: datetime
) -> tuple[tuple[WebhookSecret, ...], datetime | None]:
    """The secrets after a rotation to ``new``: it first, then each older one still signing, ending at
    ``now + ROTATION_OVERLAP`` at the latest (at most ``MAX_SECRETS_KEPT`` in all); and when the one it
    replaces stops signing."""
    ends = now + ROTATION_OVERLAP
    older = [
        secret.model_copy(update={"expires_at": min(secret.expires_at or ends, ends)})
        for secret in webhook.signing_secrets(now)
    ]
    kept = (new, *older[: MAX_SECRETS_KEPT - 1])
    return kept, older[0].expires_at if older else None


def rotate_secret(
    store: WebhookStore, sealer: SecretSealer, user_id: str, webhook_id: str, now: datetime
) -> SecretRotated:
    """A new signing secret, answered once; the previous ones sign beside it for a day at most.

    The write is conditional on the secrets read: a concurrent rotation makes it read and try once more,
    then ``TryAgain`` (503)."""
    secret = new_secret()
    new = WebhookSecret(ciphertext=sealer.seal(user_id, webhook_id, secret), created_at=now)
    for _ in range(2):
        webhook = _owned(store, user_id, webhook_id)
        kept, previous_expires_at = rotated_secrets(webhook, new, now)
        if store.replace_secrets(webhook, kept):
            return SecretRotated(secret=secret, previous_secret_expires_at=previous_expires_at)
    raise TryAgain()


def enable_webhook(store: WebhookStore, user_id: str, webhook_id: str) -> WebhookView:
    """Turns a disabled webhook back on: it is no longer disabled and no longer failing since any time, and
    new events are delivered to it again; the deliveries that already failed stay failed (they are not
    retried). An enabled webhook is answered unchanged; ``NotFound`` for another user's or an unknown id."""
    webhook = _owned(store, user_id, webhook_id)
    if webhook.disabled_at is None:
        return view(webhook)
    store.record_webhook_health(webhook, None, None, None)
    # Read again: the write does nothing to a webhook deleted meanwhile, which is then a 404.
    return get_webhook(store, user_id, webhook_id)


def send_test(
    store: WebhookStore, publisher: EventPublisher, user_id: str, webhook_id: str, now: datetime
) -> WebhookTestSent:
    """Publishes a ``webhook.test`` event for this webhook only; ``WebhookDisabled`` (409) for a disabled one."""
    webhook = _owned(store, user_id, webhook_id)
    if webhook.disabled_at is not None:
        raise WebhookDisabled()
    event = Event(
        event_id=random_event_id(),
        type="webhook.test",
        user_id=user_id,
        occurred_at=now,
        webhook_id=webhook_id,
        data={"webhook_id": webhook_id, "message": TEST_MESSAGE},
    )
    try:
        publisher.publish([event])
    except EventsNotPublished as error:
        raise TryAgain() from error
    return WebhookTestSent(event_id=event.event_id, delivery_id=delivery_id(webhook_id, event.event_id))


def delivery_view(delivery: Delivery) -> DeliveryView:
    return DeliveryView(
        delivery_id=delivery.delivery_id,
        event_id=delivery.event.event_id,
        event_type=delivery.event.type,
        state=delivery.state,
        attempts=delivery.attempts,
        last_status_code=delivery.last_status_code,
        next_attempt_at=delivery.next_attempt_at,
        created_at=delivery.created_at,
    )


def delivery_log(
    webhooks: WebhookStore,
    deliveries: DeliveryStore,
    user_id: str,
    webhook_id: str,
    query: DeliveryQuery,
) -> DeliveryLog:
    """A page of the webhook's deliveries, newest first; ``NotFound`` for another user's webhook,
    ``InvalidCursor`` (400) for a cursor this listing never handed out."""
    _owned(webhooks, user_id, webhook_id)
    try:
        page, next_cursor = deliveries.deliveries_page(user_id, webhook_id, query.limit, query.cursor)
    except MalformedCursor as error:
        raise InvalidCursor() from error
    return DeliveryLog(deliveries=[delivery_view(delivery) for delivery in page], next_cursor=next_cursor)


def signing_secrets(sealer: SecretSealer, webhook: Webhook, now: datetime) -> Sequence[str]:
    """The secrets that sign a delivery to ``webhook`` now, opened, newest first."""
    return [
        sealer.open(webhook.user_id, webhook.webhook_id, secret.ciphertext) for secret in webhook.signing_secrets(now)
    ]
