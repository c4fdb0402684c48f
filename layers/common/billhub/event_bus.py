"""Puts events on the service's EventBridge bus, whose rule routes them to the webhook delivery queue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from billhub.events import EVENT_SOURCE, Event

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

# PutEvents takes at most 10 entries a request.
PUT_EVENTS_LIMIT = 10
# Entries EventBridge refused (throttled, an internal failure) are put again this many times.
PUT_ATTEMPTS = 3


class EventsNotPublished(Exception):
    """Some events could not be put on the bus; the caller keeps them to publish again."""


class EventPublisher(Protocol):
    def publish(self, events: Sequence[Event]) -> None: ...


class EventBus:
    """``EventPublisher`` over EventBridge: each event an entry of source ``billhub``, its type the
    detail-type, the event itself the detail."""

    def __init__(self, client: EventBridgeClient, bus_name: str) -> None:
        self._client = client
        self._bus = bus_name

    def publish(self, events: Sequence[Event]) -> None:
        """Puts every event, or raises ``EventsNotPublished`` (some may have gone out: their ids are
        stable, so publishing them all again delivers each once)."""
        for start in range(0, len(events), PUT_EVENTS_LIMIT):
            self._put(events[start : start + PUT_EVENTS_LIMIT])

    def _put(self, events: Sequence[Event]) -> None:
        entries = [
            {
                "Source": EVENT_SOURCE,
                "DetailType": event.type,
                "Detail": event.model_dump_json(),
                "EventBusName": self._bus,
            }
            for event in events
        ]
        for _ in range(PUT_ATTEMPTS):
            answer = self._client.put_events(Entries=entries)  # type: ignore[arg-type]
            if not answer.get("FailedEntryCount"):
                return
            entries = [
                entry for entry, result in zip(entries, answer["Entries"], strict=True) if result.get("ErrorCode")
            ]
        raise EventsNotPublished(f"EventBridge refused {len(entries)} of the events")
