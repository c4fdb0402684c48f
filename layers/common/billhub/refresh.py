"""Refreshing bills: on-demand jobs for one user, and the scheduled planner for everyone, fanned out
one worker per shard of the refresh schedule."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from billhub.errors import Conflict, NotFound, ServiceError
from billhub.models import (
    REFRESH_PERIODS,
    Account,
    AccountStatus,
    FetchRequest,
    JobAccountResult,
    RefreshInterval,
    RefreshJob,
    ResourceId,
)
from billhub.queue import EnqueueFailed, FetchQueue
from billhub.store.errors import ItemMissing
from billhub.store.protocols import RefreshJobStore, Repositories

if TYPE_CHECKING:
    pass

# Attempts at rescheduling one account that planners or refreshes keep changing under us.
RESCHEDULE_ATTEMPTS = 3


class RefreshRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_ids: list[ResourceId] | None = Field(default=None, min_length=1, max_length=50)


class RefreshStarted(BaseModel):
    job_id: str
    accounts: list[str]


class JobStatus(BaseModel):
    job_id: str
    status: str
    succeeded: int
    failed: int
    pending: int
    errors: dict[str, str]
    created_at: datetime

    @classmethod
    def of(cls, job: RefreshJob) -> JobStatus:
        return cls(
            job_id=job.job_id,
            status=job.status,
            succeeded=job.succeeded,
            failed=job.failed,
            pending=job.pending,
            errors={aid: result.error for aid, result in job.results.items() if result.error},
            created_at=job.created_at,
        )


class NothingToRefresh(ServiceError):
    status = 409
    code = "nothing_to_refresh"


class RefreshTooSoon(ServiceError):
    status = 429
    code = "refresh_too_soon"


def start_refresh(
    store: Repositories,
    queue: FetchQueue,
    user_id: str,
    request: RefreshRequest,
    now: datetime,
    min_interval: timedelta = timedelta(0),
) -> RefreshStarted:
    """Creates a job for the user's accounts (or the ones named) and enqueues one fetch per account.

    A user starts at most one refresh per ``min_interval`` (zero: no limit); ``RefreshTooSoon`` says
    when the next may start. Only a request that would refresh something counts.
    """
    accounts = {
        account.account_id: account
        for account in store.accounts.list_accounts(user_id)
        if account.status is not AccountStatus.DELETING
    }
    if request.account_ids is not None:
        unknown = sorted(set(request.account_ids) - accounts.keys())
        if unknown:
            raise NotFound("Some accounts do not exist.", details={"account_ids": unknown})
        chosen = list(dict.fromkeys(request.account_ids))
    else:
        chosen = [aid for aid, account in accounts.items() if account.status is not AccountStatus.NEEDS_REAUTH]
    if not chosen:
        raise NothingToRefresh("There is no linked account to refresh.")
    throttled = min_interval > timedelta(0)
    if throttled:
        _take_refresh_turn(store, user_id, now, min_interval)
    job = RefreshJob(job_id=uuid.uuid4().hex, user_id=user_id, account_ids=chosen, created_at=now)
    # Needs-reauth accounts named explicitly are reported failed at once rather than fetched.
    for aid in chosen:
        if accounts[aid].status is AccountStatus.NEEDS_REAUTH:
            job.results[aid] = JobAccountResult(status="failed", error="The account needs to be linked again.")
    store.jobs.create_job(job)
    try:
        fetch_now(store, queue, [accounts[aid] for aid in chosen if aid not in job.results], "manual", now, job.job_id)
    except EnqueueFailed:
        # The refresh did not really start, so the user may try again at once rather than wait.
        if throttled:
            store.users.forget_manual_refresh(user_id, now)
        raise
    return RefreshStarted(job_id=job.job_id, accounts=chosen)


def _take_refresh_turn(store: Repositories, user_id: str, now: datetime, min_interval: timedelta) -> None:
    try:
        previous = store.users.start_manual_refresh(user_id, now, min_interval)
    except ItemMissing as error:
        raise NotFound("No such user.") from error
    if previous is None:
        return
    allowed_at = previous + min_interval
    wait_seconds = max(1, math.ceil((allowed_at - now).total_seconds()))
    allowed_at = now + timedelta(seconds=wait_seconds)
    raise RefreshTooSoon(
        f"A refresh was started less than {int(min_interval.total_seconds())} seconds ago; "
        f"you can refresh again at {allowed_at.isoformat(timespec='seconds')}.",
        retry_after=wait_seconds,
    )


def fetch_now(
    store: Repositories,
    queue: FetchQueue,
    accounts: Sequence[Account],
    reason: Literal["link", "manual"],
    now: datetime,
    job_id: str | None = None,
) -> None:
    """Enqueues one fetch per account, in its provider's lane, then moves each one's next scheduled
    refresh a full interval past ``now``, so the planner does not fetch it again soon after.

    Sent first and moved after: if sending fails (``EnqueueFailed``) the schedule is as it was and the
    planner still fetches the accounts. A move that finds the schedule changed meanwhile (a planner
    has just claimed the account and queued it itself) is skipped.
    """
    queue.send(
        [
            FetchRequest(
                user_id=account.user_id,
                account_id=account.account_id,
                job_id=job_id,
                reason=reason,
                provider=account.provider,
            )
            for account in accounts
        ]
    )
    for account in accounts:
        store.schedule.reschedule(account, now + REFRESH_PERIODS[account.refresh_interval], account.refresh_interval)


def job_status(jobs: RefreshJobStore, user_id: str, job_id: str) -> JobStatus:
    job = jobs.get_job(user_id, job_id)
    if job is None:
        raise NotFound("No such refresh job.")
    return JobStatus.of(job)


def apply_refresh_interval(store: Repositories, user_id: str, interval: RefreshInterval, now: datetime) -> None:
    """Gives each of the user's accounts the refresh interval of their preferences.

    An account's next refresh becomes one new interval after it was last queued (``next_refresh_at``
    minus the old interval): switching to weekly a day after a refresh waits six more days, switching
    to daily after four days makes it due now. An account already due stays due.
    """
    for account in store.accounts.list_accounts(user_id):
        if not _reschedule_for_interval(store, account, interval, now):
            raise Conflict("Your accounts kept changing while the new refresh interval was applied; try again.")


def _reschedule_for_interval(store: Repositories, account: Account, interval: RefreshInterval, now: datetime) -> bool:
    current: Account | None = account
    for _ in range(RESCHEDULE_ATTEMPTS):
        if current is None or current.status is AccountStatus.DELETING or current.refresh_interval == interval:
            return True
        next_refresh_at = current.next_refresh_at
        if next_refresh_at > now:
            next_refresh_at += REFRESH_PERIODS[interval] - REFRESH_PERIODS[current.refresh_interval]
        if store.schedule.reschedule(current, next_refresh_at, interval):
            return True
        stored = store.accounts.get_account(current.user_id, current.account_id)
        current = stored.account if stored else None
    return False
