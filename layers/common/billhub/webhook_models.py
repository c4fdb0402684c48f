"""A user's webhooks and their deliveries, as the store keeps them and the domain uses them.

The HTTP shapes (what ``GET /webhooks`` answers) are ``billhub.webhooks``'s; these are the records.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from billhub.events import Event, EventType

DeliveryState = Literal["pending", "delivered", "failed"]


class WebhookSecret(BaseModel):
    """One signing secret, encrypted by the vault (context: the user and the webhook). The newest signs;
    a rotated-out one signs beside it until ``expires_at``."""

    model_config = ConfigDict(frozen=True)

    ciphertext: bytes
    created_at: datetime
    expires_at: datetime | None = None

    def signs_at(self, now: datetime) -> bool:
        return self.expires_at is None or now < self.expires_at


class Webhook(BaseModel):
    model_config = ConfigDict(frozen=True)

    webhook_id: str
    user_id: str
    url: str
    # None: every type, those added later too.
    events: tuple[EventType, ...] | None = None
    description: str | None = None
    created_at: datetime
    # Newest first.
    secrets: tuple[WebhookSecret, ...]
    # Since when every attempt has failed (None: the last attempt succeeded, or none was made).
    failing_since: datetime | None = None
    disabled_at: datetime | None = None
    disabled_reason: str | None = None

    def receives(self, event: Event) -> bool:
        """Whether ``event`` is delivered here: enabled, subscribed to its type (a test: addressed here)."""
        if self.disabled_at is not None:
            return False
        if event.type == "webhook.test":
            return event.webhook_id == self.webhook_id
        if event.webhook_id is not None and event.webhook_id != self.webhook_id:
            return False
        return self.events is None or event.type in self.events

    def signing_secrets(self, now: datetime) -> list[WebhookSecret]:
        return [secret for secret in self.secrets if secret.signs_at(now)]


def delivery_id(webhook_id: str, event_id: str) -> str:
    """One delivery per webhook and event: the same event published twice is delivered once."""
    digest = hashlib.sha256(f"{webhook_id}\x1f{event_id}".encode()).hexdigest()
    return f"dlv_{digest[:32]}"


class DeliveryRef(BaseModel):
    """What finds one delivery in the store (and what a retry message carries)."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    webhook_id: str
    # The event's time orders the delivery log (newest first) and is part of the key.
    occurred_at: datetime
    event_id: str

    @property
    def delivery_id(self) -> str:
        return delivery_id(self.webhook_id, self.event_id)


class Delivery(BaseModel):
    """One event's delivery to one webhook: its state, its attempts so far, and the event (kept for
    the retries)."""

    model_config = ConfigDict(frozen=True)

    webhook_id: str
    event: Event
    state: DeliveryState = "pending"
    attempts: int = 0
    last_status_code: int | None = None
    # Why the last attempt failed, and the start of the receiver's answer (at most a few hundred characters).
    last_error: str | None = None
    response_excerpt: str | None = None
    next_attempt_at: datetime | None = None
    created_at: datetime

    @property
    def ref(self) -> DeliveryRef:
        return DeliveryRef(
            user_id=self.event.user_id,
            webhook_id=self.webhook_id,
            occurred_at=self.event.occurred_at,
            event_id=self.event.event_id,
        )

    @property
    def delivery_id(self) -> str:
        return delivery_id(self.webhook_id, self.event.event_id)
