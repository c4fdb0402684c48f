"""The scheduled refresh: the schedule's run hands each refresh shard to a worker (``dispatch_shard_work``),
and each shard worker claims its due accounts and enqueues one fetch for each (``plan_shard``)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta

from billhub import keys
from billhub.models import REFRESH_PERIODS, FetchRequest
from billhub.queue import SQS_BATCH_LIMIT, EnqueueFailed, FetchQueue, PlanQueue, ShardWork
from billhub.store import DueRefresh
from billhub.store.protocols import RefreshScheduleStore, Repositories

# Batches of due accounts (claimed, then sent) one planner works on at once: its calls mostly wait on
# the network. Below the 10 connections botocore pools per client, so none waits for a connection.
PLANNER_CONCURRENCY = 8
# The share of a scheduled invocation's time the planner plans for; the rest is for the batches under way
# and the sweep of abandoned deletions. Accounts still due then are the next run's, first in line.
PLANNING_SHARE = 0.75


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
