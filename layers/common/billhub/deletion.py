"""Deleting a linked account: hidden at once, then its bills, then the account itself.

The first step (one transaction) is what the user sees: from then on the account is gone from every
read, its credentials are destroyed, its provider account can be linked again, and no fetch in flight
can write to it or its bills. The rest is cleanup that any later attempt can finish: a repeated
``DELETE``, or the planner's sweep of deletions left half-way by a crash.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from aws_lambda_powertools import Logger

from billhub.errors import Conflict, NotFound
from billhub.models import Account
from billhub.store import BillsLeftBehind, BillsTable, ConcurrentUpdate

logger = Logger(child=True)

# A deletion still unfinished this long after it started was abandoned (its request crashed or timed out).
ABANDONED_AFTER = timedelta(minutes=15)


def delete_account(store: BillsTable, user_id: str, account_id: str, now: datetime) -> None:
    """Deletes the caller's account. Deleting again is fine; someone else's account is ``NotFound``."""
    try:
        account = store.begin_account_deletion(user_id, account_id, now)
    except ConcurrentUpdate as error:
        raise Conflict("The account kept changing while it was being deleted; try again.") from error
    if account is None:
        if store.was_deleted(user_id, account_id):
            return
        raise NotFound("No such account.")
    try:
        _finish(store, account, now)
    except (BillsLeftBehind, ConcurrentUpdate):
        # Already gone for the user (hidden, credentials destroyed); the rest is cleanup that a
        # repeated DELETE or the planner's sweep finishes.
        logger.warning("account deletion left for the sweep", extra={"account_id": account_id})


def finish_abandoned_deletions(store: BillsTable, now: datetime) -> int:
    """Finishes deletions that started over ``ABANDONED_AFTER`` ago and never completed; returns how many."""
    finished = 0
    for user_id, account_id in store.unfinished_deletions(now - ABANDONED_AFTER):
        account = store.account_being_deleted(user_id, account_id)
        if account is not None:
            _finish(store, account, now)
            finished += 1
    return finished


def _finish(store: BillsTable, account: Account, now: datetime) -> None:
    removed = store.remove_account_bills(account)
    store.finish_account_deletion(account, now)
    logger.info(
        "account deleted", extra={"account_id": account.account_id, "provider": account.provider, "bills": removed}
    )
