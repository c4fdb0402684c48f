"""What a fetch attempt came to, decided in one place from the provider's answer or the error it raised.

The classifier only decides; ``billhub.fetch_recorder`` writes what follows from each outcome.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

from billhub.circuit import CircuitOpen
from billhub.models import Bill
from billhub.providers.base import ProviderAdapter
from billhub.providers.errors import ProviderAuthRejected, ProviderBusy, ProviderError, ProviderMisconfigured


class FetchFailed(Exception):
    """The fetch failed in a way worth retrying; the message goes back to the queue."""


class DuplicateLink(Exception):
    """A pending account turned out to be a provider account the user had already linked."""


@dataclass(frozen=True)
class FetchResult:
    account_id: str
    outcome: str
    bills_changed: int = 0


@dataclass(frozen=True)
class Alert:
    """An incident for the admins, raised once however many fetches see it."""

    incident: str
    subject: str
    message: str


@dataclass(frozen=True)
class Fetched:
    """The provider answered: its bills are to be stored."""

    bills: list[Bill]


@dataclass(frozen=True)
class Deferred:
    """The fetch has to wait (budget spent, circuit open): put off, nothing counted as failed."""

    reason: str
    wait_seconds: float
    alert: Alert | None = None


@dataclass(frozen=True)
class NeedsReauth:
    """Retrying cannot cure this: the user has to act. ``count_refusal`` when the provider refused
    the credentials (a burst of those at one provider is an incident)."""

    error: str
    count_refusal: bool


@dataclass(frozen=True)
class Failed:
    """The attempt failed; ``final`` on the message's last receive. ``error`` is what the account and
    the job show, ``message`` what goes back to the queue; ``unexpected`` for a bug or an unforeseen answer."""

    error: str
    message: str
    final: bool
    cause: Exception
    alert: Alert | None = None
    unexpected: bool = False


@dataclass(frozen=True)
class Gone:
    """The account was deleted (or is being deleted): nothing to do, and no retry."""


@dataclass(frozen=True)
class AwaitingReauth:
    """The account already waits for its user to link it again: not fetched."""


type Outcome = Fetched | Deferred | NeedsReauth | Failed
type Skip = Gone | AwaitingReauth


class CircuitView(Protocol):
    """What classifying needs of the provider circuits (``ProviderCircuits``)."""

    def counts(self, error: Exception) -> bool: ...

    def open_for(self, provider: str) -> Awaitable[float | None]: ...


async def classify(
    answer: list[Bill] | Exception, adapter: ProviderAdapter, *, final: bool, circuits: CircuitView | None
) -> Outcome:
    """The outcome of an attempt from the bills it fetched or the error it raised; ``final`` on the
    message's last receive."""
    match answer:
        case list():
            return Fetched(answer)
        case CircuitOpen() | ProviderBusy():
            return Deferred(str(answer), answer.retry_after)
        case ProviderAuthRejected() | DuplicateLink():
            # Unless the credentials changed meanwhile (repaired, or renewed by another fetch): then the
            # refusal was of credentials no longer held, which the store's write sees.
            return NeedsReauth(str(answer), count_refusal=isinstance(answer, ProviderAuthRejected))
        case ProviderError():
            return await _provider_failure(answer, adapter, final, circuits)
        case _:
            name = type(answer).__name__
            alert = Alert(f"unexpected#{name}", "Unexpected fetch error", f"{name} while fetching")
            return Failed("Unexpected error while fetching.", "unexpected error", final, answer, alert, True)


async def _provider_failure(
    error: ProviderError, adapter: ProviderAdapter, final: bool, circuits: CircuitView | None
) -> Deferred | Failed:
    alert = None
    if isinstance(error, ProviderMisconfigured):
        alert = Alert(f"misconfigured#{adapter.name}", f"{adapter.display_name} refuses the service", str(error))
    if final and (wait_seconds := await _down_for_everyone(error, adapter.name, circuits)) is not None:
        return Deferred(str(error), wait_seconds, alert)
    return Failed(str(error), str(error), final, error, alert)


async def _down_for_everyone(error: ProviderError, provider: str, circuits: CircuitView | None) -> float | None:
    """On a fetch's last receive, an outage that the provider's circuit shows (opened by this failure
    or by another environment meanwhile) is no fault of this account: the seconds to put it off for,
    as the open circuit puts off the fetches it stops; None when it fails as any other."""
    if circuits is None or not circuits.counts(error):
        return None
    return await circuits.open_for(provider)
