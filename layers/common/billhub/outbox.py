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
from typing import TYPE_CHECKING

from billhub.bills import bill_view
from billhub.events import Event, account_event_data, bill_event_data, event_id
from billhub.models import Account, AccountStatus, Bill, RefreshJob

if TYPE_CHECKING:
    from billhub.accounts import AccountView


def _account_view(account: Account) -> AccountView:
    # billhub.accounts (the link domain) announces restored accounts with this module: imported late.
    from billhub.accounts import AccountView

    return AccountView.of(account)


def _content_digest(bill: Bill) -> str:
    return hashlib.sha256(bill.model_dump_json().encode()).hexdigest()[:32]


def synced(account: Account, bills: int, at: datetime) -> Event:
    """An account's first successful fetch: one event with its bill count, not one per historical bill."""
    after = account.model_copy(update={"status": AccountStatus.ACTIVE, "last_success_at": at, "last_error": None})
    return Event(
        event_id=event_id("account.synced", account.account_id),
        type="account.synced",
        user_id=account.user_id,
        occurred_at=at,
        data=account_event_data(_account_view(after), bills=bills),
    )


def bill_created(account: Account, bill: Bill, at: datetime, today: date) -> Event:
    return Event(
        event_id=event_id("bill.created", bill.bill_id),
        type="bill.created",
        user_id=account.user_id,
        occurred_at=at,
        data=bill_event_data(bill_view(bill, today)),
    )


def bill_updated(account: Account, bill: Bill, at: datetime, today: date) -> Event:
    """A provider's revision of a bill (or the same revision changed: paid since): one event per content."""
    return Event(
        event_id=event_id("bill.updated", bill.bill_id, _content_digest(bill)),
        type="bill.updated",
        user_id=account.user_id,
        occurred_at=at,
        data=bill_event_data(bill_view(bill, today)),
    )


def needs_reauth(account: Account, credentials_version: int, error: str, at: datetime) -> Event:
    """The provider refused the account's credentials: one event per credentials refused."""
    after = account.model_copy(
        update={"status": AccountStatus.NEEDS_REAUTH, "last_error": error, "last_attempt_at": at}
    )
    return Event(
        event_id=event_id("account.needs_reauth", account.account_id, str(credentials_version)),
        type="account.needs_reauth",
        user_id=account.user_id,
        occurred_at=at,
        data=account_event_data(_account_view(after)),
    )


def restored(account: Account, credentials_version: int, at: datetime) -> Event:
    """An account that needed its user back to active after a repair (``credentials_version``: the
    repair's, so each repair is a fact of its own)."""
    after = account.model_copy(update={"status": AccountStatus.ACTIVE, "last_error": None})
    return Event(
        event_id=event_id("account.restored", account.account_id, str(credentials_version)),
        type="account.restored",
        user_id=account.user_id,
        occurred_at=at,
        data=account_event_data(_account_view(after)),
    )


def refresh_completed(job: RefreshJob, at: datetime) -> Event:
    """A refresh job whose every account has a final result, with its counts."""
    from billhub.refresh import JobStatus

    return Event(
        event_id=event_id("refresh.completed", job.job_id),
        type="refresh.completed",
        user_id=job.user_id,
        occurred_at=at,
        data={"job": JobStatus.of(job).model_dump(mode="json")},
    )


def serialised(events: Sequence[Event]) -> list[str]:
    """Events as the outbox keeps them."""
    return [event.model_dump_json() for event in events]


def parsed(entries: Sequence[str]) -> list[Event]:
    """The outbox's events, each once (an entry added twice, by a save that started over, is one event)."""
    events = {event.event_id: event for event in (Event.model_validate_json(entry) for entry in entries)}
    return list(events.values())
