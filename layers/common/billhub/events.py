"""What the service tells a user's webhooks: the event types, an event as published, and its payload.

An event is put on the EventBridge bus (``billhub.event_bus``) by what notices the change (the fetcher,
the planner, the webhooks API), routed to the delivery queue, and delivered to each of the user's
webhooks that subscribe to its type (``billhub.webhook_delivery``).

An event's id names the fact it reports, not the moment it was noticed (``event_id``): the same bill
created, revision stored or job finished always gives the same id. A publisher that is not sure an
event went out (a retried fetch, a crash after the save) can publish it again, and the delivery keeps
one delivery per webhook and id; a receiver can drop duplicates by the ``webhook-id`` header, which is
this id, as Standard Webhooks asks.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

EventType = Literal[
    "account.synced",
    "bill.created",
    "bill.updated",
    "bill.due_soon",
    "bill.overdue",
    "account.needs_reauth",
    "account.restored",
    "refresh.completed",
    "webhook.test",
]
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)
# The bus's source for every event the service puts (the delivery rule matches it).
EVENT_SOURCE = "billhub"
# Standard Webhooks' message ids are opaque strings; "msg_" and 32 hex digits, like Svix's.
EVENT_ID_PATTERN = r"^msg_[0-9a-f]{32}$"


def event_id(event_type: EventType, *fact: str) -> str:
    """The id of the event reporting ``fact`` (the ids and versions that make it one fact): the same
    every time that fact is reported."""
    digest = hashlib.sha256("\x1f".join((event_type, *fact)).encode()).hexdigest()
    return f"msg_{digest[:32]}"


def random_event_id() -> str:
    """An id for an event that is a fact of its own (a test delivery a user asked for)."""
    return f"msg_{secrets.token_hex(16)}"


class Event(BaseModel):
    """One event for one user, as it travels on the bus and waits in a delivery."""

    model_config = ConfigDict(frozen=True)

    event_id: str = Field(pattern=EVENT_ID_PATTERN)
    type: EventType
    user_id: str
    occurred_at: datetime
    # As the API answers: a bill as in ``GET /bills``, an account as in ``GET /accounts``, a job's counts.
    data: dict[str, Any]
    # Only this webhook receives it (a ``webhook.test``); None: every webhook of the user subscribed to it.
    webhook_id: str | None = None

    def payload(self) -> dict[str, Any]:
        """The body a receiver gets: Standard Webhooks' ``{"type", "timestamp", "data"}``."""
        return {"type": self.type, "timestamp": self.occurred_at.isoformat(), "data": self.data}


def bill_event_data(bill_view: BaseModel, account_view: BaseModel | None = None) -> dict[str, Any]:
    """A bill's event data: the bill as ``GET /bills`` answers it (and, where given, its account)."""
    data: dict[str, Any] = {"bill": bill_view.model_dump(mode="json")}
    if account_view is not None:
        data["account"] = account_view.model_dump(mode="json")
    return data


def account_event_data(account_view: BaseModel, **extra: Any) -> dict[str, Any]:
    """An account's event data: the account as ``GET /accounts`` answers it, and what the event adds."""
    return {"account": account_view.model_dump(mode="json"), **extra}
