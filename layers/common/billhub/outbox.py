"""The events an account's changes make, kept in the account's outbox until they are published.

A change and its events are written in one request: the save of a fetch's bills adds ``account.synced``
or ``bill.created``/``bill.updated`` to the account item's ``outbox`` in the same transaction, a refusal
of its credentials adds ``account.needs_reauth`` in the same update, a repair ``account.restored``.
The writer then puts them on the bus and empties the outbox (conditionally: an event added meanwhile
stays). Whatever a crash or a refused ``PutEvents`` leaves there, the account's next fetch publishes
first, so no change is stored without its events going out; an event published twice keeps its id
(``billhub.events.event_id``) and is delivered once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from billhub.bills import bill_view
from billhub.events import Event, EventType, account_event_data, bill_event_data, event_id
from billhub.models import Account, AccountStatus, Bill, RefreshJob

if TYPE_CHECKING:
    from billhub.accounts import AccountView


def _account_view(account: Account) -> AccountView:
    # billhub.accounts (the link domain) announces restored accounts with this module: imported late.
    from billhub.accounts import AccountView

    return AccountView.of(account)


def _content_digest(bill: Bill) -> str:
    return hashlib.sha256(bill.model_dump_json().encode()).hexdigest()[:32]


def _event(event_type: EventType, fact: Sequence[str], user_id: str, at: datetime, data: dict[str, Any]) -> Event:
    return Event(event_id=event_id(event_type, *fact), type=event_type, user_id=user_id, occurred_at=at, data=data)


def synced(account: Account, bills: int, at: datetime) -> Event:
    """An account's first successful fetch: one event with its bill count, not one per historical bill."""
    after = account.model_copy(update={"status": AccountStatus.ACTIVE, "last_success_at": at, "last_error": None})
    data = account_event_data(_account_view(after), bills=bills)
    return _event("account.synced", [account.account_id], account.user_id, at, data)


def bill_created(account: Account, bill: Bill, at: datetime, today: date) -> Event:
    data = bill_event_data(bill_view(bill, today))
    return _event("bill.created", [bill.bill_id], account.user_id, at, data)


def bill_updated(account: Account, bill: Bill, at: datetime, today: date) -> Event:
    """A provider's revision of a bill (or the same revision changed: paid since): one event per content."""
    data = bill_event_data(bill_view(bill, today))
    return _event("bill.updated", [bill.bill_id, _content_digest(bill)], account.user_id, at, data)


def needs_reauth(account: Account, credentials_version: int, error: str, at: datetime) -> Event:
    """The provider refused the account's credentials: one event per credentials refused."""
    after = account.model_copy(
        update={"status": AccountStatus.NEEDS_REAUTH, "last_error": error, "last_attempt_at": at}
    )
    fact = [account.account_id, str(credentials_version)]
    return _event("account.needs_reauth", fact, account.user_id, at, account_event_data(_account_view(after)))


def restored(account: Account, credentials_version: int, at: datetime) -> Event:
    """An account that needed its user back to active after a repair (``credentials_version``: the
    repair's, so each repair is a fact of its own)."""
    after = account.model_copy(update={"status": AccountStatus.ACTIVE, "last_error": None})
    fact = [account.account_id, str(credentials_version)]
    return _event("account.restored", fact, account.user_id, at, account_event_data(_account_view(after)))


def refresh_completed(job: RefreshJob, at: datetime) -> Event:
    """A refresh job whose every account has a final result, with its counts."""
    from billhub.refresh import JobStatus

    data = {"job": JobStatus.of(job).model_dump(mode="json")}
    return _event("refresh.completed", [job.job_id], job.user_id, at, data)


def serialised(events: Sequence[Event]) -> list[str]:
    """Events as the outbox keeps them."""
    return [event.model_dump_json() for event in events]


def parsed(entries: Sequence[str]) -> list[Event]:
    """The outbox's events, each once (an entry added twice, by a save that started over, is one event)."""
    events = {event.event_id: event for event in (Event.model_validate_json(entry) for entry in entries)}
    return list(events.values())
