"""Deleting a linked account: hidden at once, then its bills, then the account itself.

The first step (one transaction) is what the user sees: from then on the account is gone from every
read, its credentials are destroyed, its provider account can be linked again, and no fetch in flight
can write to it or its bills. The rest is cleanup that any later attempt can finish: a repeated
``DELETE``, or the planner's sweep of deletions left half-way by a crash.

Deleting a user (``DELETE /me``) marks their profile first, so nothing new can be linked to them, then
takes every account through that same deletion (all of them hidden and their credentials destroyed
before any bill goes), then the rest of their items, and last the profile with the email's guard. Every
step can be repeated, so a repeated ``DELETE /me`` or the planner's sweep finishes a crashed one.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from aws_lambda_powertools import Logger

from billhub.errors import Conflict, NotFound, ServiceError
from billhub.models import Account, User
from billhub.store import BillsLeftBehind, ConcurrentUpdate
from billhub.store.protocols import Repositories

logger = Logger(child=True)

# A deletion still unfinished this long after it started was abandoned (its request crashed or timed out).
ABANDONED_AFTER = timedelta(minutes=15)
# When to send DELETE /me again after a deletion DynamoDB kept throttling.
RETRY_USER_DELETION_AFTER_SECONDS = 5


class DeletionUnfinished(ServiceError):
    status = 503
    code = "deletion_unfinished"


def delete_account(store: Repositories, user_id: str, account_id: str, now: datetime) -> None:
    """Deletes the caller's account. Deleting again is fine; someone else's account is ``NotFound``."""
    try:
        account = store.account_deletions.begin_account_deletion(user_id, account_id, now)
    except ConcurrentUpdate as error:
        raise Conflict("The account kept changing while it was being deleted; try again.") from error
    if account is None:
        if store.account_deletions.was_deleted(user_id, account_id):
            return
        raise NotFound("No such account.")
    try:
        _finish(store, account, now)
    except (BillsLeftBehind, ConcurrentUpdate):
        # Already gone for the user (hidden, credentials destroyed); the rest is cleanup that a
        # repeated DELETE or the planner's sweep finishes.
        logger.warning("account deletion left for the sweep", extra={"account_id": account_id})


def finish_abandoned_deletions(store: Repositories, now: datetime) -> int:
    """Finishes deletions that started over ``ABANDONED_AFTER`` ago and never completed; returns how many."""
    finished = 0
    for user_id, account_id in store.account_deletions.unfinished_deletions(now - ABANDONED_AFTER):
        account = store.account_deletions.account_being_deleted(user_id, account_id)
        if account is not None:
            _finish(store, account, now)
            finished += 1
    return finished


def _finish(store: Repositories, account: Account, now: datetime) -> None:
    removed = store.account_deletions.remove_account_bills(account)
    store.account_deletions.finish_account_deletion(account, now)
    logger.info(
        "account deleted", extra={"account_id": account.account_id, "provider": account.provider, "bills": removed}
    )


def delete_user(store: Repositories, user: User, now: datetime) -> None:
    """Deletes the user and everything of theirs; repeating it finishes a deletion that stopped half-way.

    Returns only when nothing of theirs is left: a deletion that keeps meeting throttling or concurrent
    writes raises ``DeletionUnfinished`` (everything of theirs already hidden, the rest left to a retry
    or the planner's sweep), rather than let the caller believe their tokens are dead already.
    """
    store.user_deletions.begin_user_deletion(user.user_id, now)
    try:
        _finish_user(store, user, now)
    except (BillsLeftBehind, ConcurrentUpdate) as error:
        logger.warning("user deletion left for a retry or the sweep", extra={"reason": type(error).__name__})
        raise DeletionUnfinished(
            "Your account is being deleted and can no longer be used; send the request again to finish "
            "it now, or it finishes by itself within the hour.",
            retry_after=RETRY_USER_DELETION_AFTER_SECONDS,
        ) from error


def finish_abandoned_user_deletions(store: Repositories, now: datetime) -> int:
    """Finishes user deletions that started over ``ABANDONED_AFTER`` ago and never completed; returns how
    many. One that cannot finish now is left for the next run, and the others still go ahead."""
    finished = 0
    for user_id in store.user_deletions.unfinished_user_deletions(now - ABANDONED_AFTER):
        user = store.user_deletions.user_being_deleted(user_id)
        if user is None:
            continue
        try:
            _finish_user(store, user, now)
        except (BillsLeftBehind, ConcurrentUpdate):
            logger.warning("abandoned user deletion left for the next sweep", extra={"user_id": user_id})
            continue
        finished += 1
    return finished


def _finish_user(store: Repositories, user: User, now: datetime) -> None:
    # Every account hidden and its credentials destroyed first, then the bills, account by account.
    accounts = [
        store.account_deletions.begin_account_deletion(user.user_id, account.account_id, now)
        for account in store.accounts.list_accounts(user.user_id)
    ]
    for account in accounts:
        if account is not None:
            _finish(store, account, now)
    removed = store.user_deletions.remove_user_items(user.user_id, user.email)
    store.user_deletions.finish_user_deletion(user.user_id, user.email)
    logger.info("user deleted", extra={"user_id": user.user_id, "accounts": len(accounts), "other_items": removed})
