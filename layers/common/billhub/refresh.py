"""Refreshing bills: on-demand jobs for one user, and the scheduled planner for everyone, fanned out
one worker per shard of the refresh schedule."""

from __future__ import annotations

import itertools
import math
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field

from billhub import keys
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
from billhub.queue import SQS_BATCH_LIMIT, EnqueueFailed, FetchQueue
from billhub.store import DueRefresh
from billhub.store.errors import ItemMissing
from billhub.store.protocols import RefreshJobStore, RefreshScheduleStore, Repositories

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

# Attempts at rescheduling one account that planners or refreshes keep changing under us.
RESCHEDULE_ATTEMPTS = 3
# Batches of due accounts (claimed, then sent) one planner works on at once: its calls mostly wait on
# the network. Below the 10 connections botocore pools per client, so none waits for a connection.
PLANNER_CONCURRENCY = 8
# The share of a scheduled invocation's time the planner plans for; the rest is for the batches under way
# and the sweep of abandoned deletions. Accounts still due then are the next run's, first in line.
PLANNING_SHARE = 0.75


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
    """Enqueues one fetch per account, then moves each one's next scheduled refresh a full interval past
    ``now``, so the planner does not fetch it again soon after.

    Sent first and moved after: if sending fails (``EnqueueFailed``) the schedule is as it was and the
    planner still fetches the accounts. A move that finds the schedule changed meanwhile (a planner
    has just claimed the account and queued it itself) is skipped.
    """
    queue.send(
        [
            FetchRequest(user_id=account.user_id, account_id=account.account_id, job_id=job_id, reason=reason)
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


@dataclass(frozen=True)
class PlannerRun:
    """What one run of the planner did."""

    planned: int
    # False when it stopped at its time limit with accounts still due: the next run takes them.
    finished: bool


def plan_due_refreshes(
    store: Repositories,
    queue: FetchQueue,
    now: datetime,
    time_limit: timedelta | None = None,
    concurrency: int = PLANNER_CONCURRENCY,
    clock: Callable[[], float] = time.monotonic,
    shards: Sequence[int] | None = None,
) -> PlannerRun:
    """Enqueues a fetch for every account whose next refresh has come (of the ``shards`` given, every
    shard by default), the longest due first.

    Each account is first claimed by moving its ``next_refresh_at`` one interval (its owner's daily
    or weekly) forward with a conditional write, so two planners running at once never enqueue the
    same account twice. Due accounts are taken ten at a time (one SQS batch): claimed, then sent
    together, ``concurrency`` batches at once. A batch SQS does not take is released, due again for
    the next run, and the planner stops with ``EnqueueFailed``.

    With a ``time_limit`` no batch starts after it has passed: the accounts still due are left for the
    next run (``finished`` is False), which takes them first.
    """
    deadline = None if time_limit is None else clock() + time_limit.total_seconds()
    planned = 0
    finished = True
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="planner") as pool:
        running: set[Future[int]] = set()
        try:
            for batch in itertools.batched(store.schedule.due_refreshes(now, shards), SQS_BATCH_LIMIT, strict=False):
                if deadline is not None and clock() >= deadline:
                    finished = False
                    break
                if len(running) >= concurrency:
                    done, running = wait(running, return_when=FIRST_COMPLETED)
                    planned += sum(future.result() for future in done)
                running.add(pool.submit(_plan_batch, store.schedule, queue, batch, now))
        finally:
            # The batches under way finish (sent, or released) before the planner returns or raises.
            done, _ = wait(running)
        planned += sum(future.result() for future in done)
    return PlannerRun(planned=planned, finished=finished)


class ShardWork(BaseModel):
    """One shard worker's unit of work, a PlanQueue message: plan the due accounts of this shard."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shard: int = Field(ge=0, lt=keys.MAX_REFRESH_SHARDS)


class DispatchFailed(RuntimeError):
    """SQS did not take every shard's unit of work (the shards named were not queued)."""

    def __init__(self, message: str, unsent: Sequence[int]) -> None:
        super().__init__(message)
        self.unsent = list(unsent)


class PlanQueue:
    """The PlanQueue: units of planning work, one message per shard, that shard workers take."""

    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self._sqs = sqs
        self._url = queue_url

    def send(self, shards: Sequence[int]) -> None:
        """One message per shard, 10 a request; ``DispatchFailed`` unless SQS took them all."""
        for start in range(0, len(shards), SQS_BATCH_LIMIT):
            batch = shards[start : start + SQS_BATCH_LIMIT]
            try:
                response = self._sqs.send_message_batch(
                    QueueUrl=self._url,
                    Entries=[
                        {"Id": str(index), "MessageBody": ShardWork(shard=shard).model_dump_json()}
                        for index, shard in enumerate(batch)
                    ],
                )
            except (BotoCoreError, ClientError) as error:
                raise DispatchFailed(
                    f"SQS could not take {len(batch)} shards' work: {error}", shards[start:]
                ) from error
            if response.get("Failed"):
                refused = [batch[int(failure["Id"])] for failure in response["Failed"]]
                raise DispatchFailed(
                    f"SQS refused the work of shards {refused}", refused + list(shards[start + SQS_BATCH_LIMIT :])
                )


def dispatch_shard_work(plan_queue: PlanQueue) -> int:
    """The scheduled run's planning: one unit of work per shard on the PlanQueue, for the shard workers
    to plan in parallel; returns how many shards. Every shard below the count is dispatched, so the
    shards of any smaller count before it, where accounts not yet moved still are, are too."""
    shards = list(keys.refresh_shards())
    plan_queue.send(shards)
    return len(shards)


@dataclass(frozen=True)
class ShardRun:
    """What one shard worker did."""

    shard: int
    planned: int
    # False when it stopped at its time limit with accounts still due; then it queued a continuation.
    finished: bool


def plan_shard(
    store: Repositories,
    fetch_queue: FetchQueue,
    plan_queue: PlanQueue,
    work: ShardWork,
    now: datetime,
    time_limit: timedelta | None = None,
    concurrency: int = PLANNER_CONCURRENCY,
    clock: Callable[[], float] = time.monotonic,
) -> ShardRun:
    """A shard worker: plans the due accounts of ``work.shard`` as ``plan_due_refreshes`` does. Out of
    time with accounts still due, it queues the same shard's work again, so a backlog goes on at once
    with the next worker rather than waiting for the next scheduled run, however long it is.

    Two workers on one shard (a continuation beside the next run's work, a redelivery) are safe: each
    account's claim is conditional, so each is enqueued once.
    """
    run = plan_due_refreshes(store, fetch_queue, now, time_limit, concurrency, clock, shards=[work.shard])
    if not run.finished:
        plan_queue.send([work.shard])
    return ShardRun(shard=work.shard, planned=run.planned, finished=run.finished)


def _plan_batch(schedule: RefreshScheduleStore, queue: FetchQueue, batch: Sequence[DueRefresh], now: datetime) -> int:
    """Claims each account of ``batch``, then sends one fetch per account claimed; returns how many.

    What was claimed is sent even if a later claim raised, and what SQS did not take is released.
    """
    claimed: list[DueRefresh] = []
    try:
        for due in batch:
            if schedule.claim_due_refresh(due, _claimed_until(due, now)):
                claimed.append(due)
    finally:
        if claimed:
            _send_claimed(schedule, queue, claimed, now)
    return len(claimed)


def _send_claimed(
    schedule: RefreshScheduleStore, queue: FetchQueue, claimed: Sequence[DueRefresh], now: datetime
) -> None:
    try:
        queue.send([FetchRequest(user_id=due.user_id, account_id=due.account_id, reason="schedule") for due in claimed])
    except EnqueueFailed as error:
        unsent = {request.account_id for request in error.unsent}
        for due in claimed:
            if due.account_id in unsent:
                schedule.release_refresh_claim(due, _claimed_until(due, now))
        raise


def _claimed_until(due: DueRefresh, now: datetime) -> datetime:
    return now + REFRESH_PERIODS[due.refresh_interval]


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
