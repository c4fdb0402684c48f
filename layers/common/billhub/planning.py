"""The scheduled refresh: the schedule's run hands each refresh shard of each provider to a worker
(``dispatch_shard_work``), and each shard worker claims its due accounts, as many as its provider's
admissions of the hour allow (``billhub.admission``), and enqueues one fetch for each (``plan_shard``)."""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from billhub import keys
from billhub.admission import Admissions, hour_of
from billhub.models import REFRESH_PERIODS, FetchRequest
from billhub.queue import SQS_BATCH_LIMIT, EnqueueFailed, FetchQueue, PlanQueue, ShardWork
from billhub.store import DueRefresh, RefreshShard
from billhub.store.protocols import RefreshScheduleStore, Repositories

# Batches of due accounts (claimed, then sent) one planner works on at once: its calls mostly wait on
# the network. Below the 10 connections botocore pools per client, so none waits for a connection.
PLANNER_CONCURRENCY = 8
# The share of a scheduled invocation's time the planner plans for; the rest is for the batches under way
# and the sweep of abandoned deletions. Accounts still due then are the next run's, first in line.
PLANNING_SHARE = 0.75


# Why a planner stopped: nothing due was left; its time ran out (the rest is a continuation's); its
# provider's admissions of the hour were spent (the rest waits, still due, for the next hour's).
StopReason = Literal["all_due_planned", "out_of_time", "admissions_spent"]


@dataclass(frozen=True)
class PlannerRun:
    """What one run of the planner did."""

    planned: int
    # False when it stopped at its time limit with accounts still due: the next run takes them.
    finished: bool
    stopped: StopReason = "all_due_planned"


def plan_due_refreshes(
    store: Repositories,
    queue: FetchQueue,
    now: datetime,
    time_limit: timedelta | None = None,
    concurrency: int = PLANNER_CONCURRENCY,
    clock: Callable[[], float] = time.monotonic,
    shards: Sequence[RefreshShard] | None = None,
    admissions: Admissions | None = None,
) -> PlannerRun:
    """Enqueues a fetch for every account whose next refresh has come (of the ``shards`` given, every
    shard of every provider and of the keys from before providers by default), the longest due first.

    Each account is first claimed by moving its ``next_refresh_at`` one interval (its owner's daily
    or weekly) forward with a conditional write, so two planners running at once never enqueue the
    same account twice. Due accounts are taken ten at a time (one SQS batch): claimed, then sent
    together, ``concurrency`` batches at once. A batch SQS does not take is released, due again for
    the next run, and the planner stops with ``EnqueueFailed``.

    With a ``time_limit`` no batch starts after it has passed: the accounts still due are left for the
    next run (``finished`` is False), which takes them first.

    With ``admissions`` (for shards of one provider) each batch is first admitted: as many of its
    accounts as the provider's hour has admissions left, the longest due first; once none are left the
    planner stops (``finished``, as nothing of this hour is left to do; ``stopped`` says why) and the
    rest stay due for the next hour. An admission whose claim then fails (another planner claimed the
    account first) is not given back: the hour admits fewer, never more.
    """
    chosen = all_refresh_shards() if shards is None else shards
    admitted_provider = _one_provider(chosen) if admissions is not None else None
    deadline = None if time_limit is None else clock() + time_limit.total_seconds()
    planned = 0
    stopped: StopReason = "all_due_planned"
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="planner") as pool:
        running: set[Future[int]] = set()
        try:
            for found in itertools.batched(store.schedule.due_refreshes(now, chosen), SQS_BATCH_LIMIT, strict=False):
                if deadline is not None and clock() >= deadline:
                    stopped = "out_of_time"
                    break
                batch: Sequence[DueRefresh] = found
                if admissions is not None and admitted_provider is not None:
                    batch = found[: admissions.admit(admitted_provider, now, len(found))]
                    if not batch:
                        stopped = "admissions_spent"
                        break
                if len(running) >= concurrency:
                    done, running = wait(running, return_when=FIRST_COMPLETED)
                    planned += sum(future.result() for future in done)
                running.add(pool.submit(_plan_batch, store.schedule, queue, batch, now))
                if len(batch) < len(found):
                    stopped = "admissions_spent"
                    break
        finally:
            # The batches under way finish (sent, or released) before the planner returns or raises.
            done, _ = wait(running)
        planned += sum(future.result() for future in done)
    return PlannerRun(planned=planned, finished=stopped != "out_of_time", stopped=stopped)


def all_refresh_shards(first: int = 0) -> list[RefreshShard]:
    """Every shard planned: each below the count (which covers every smaller count before it) of each
    registered provider, and of the keys written before providers were in them (a set that only
    shrinks, as each of its accounts moves to its provider's key at its next claim). Each provider's
    shards in a row, from shard ``first`` round."""
    from billhub.providers import REGISTRY

    count = len(keys.refresh_shards())
    order = [(first + step) % count for step in range(count)]
    providers: list[str | None] = [*REGISTRY, None]
    return [RefreshShard(provider, shard) for provider in providers for shard in order]


def _first_shard(now: datetime) -> int:
    """The shard each provider's dispatch starts from in the hour of ``now``: a different one from hour
    to hour (a digest of the hour, whatever the schedule's rate), so no shard's worker is always the
    last of its provider's to lease the hour's admissions."""
    digest = hashlib.sha256(str(hour_of(now)).encode()).digest()
    return int.from_bytes(digest[:4]) % len(keys.refresh_shards())


def _one_provider(shards: Sequence[RefreshShard]) -> str | None:
    """The provider every shard is of; None (nothing to admit by) for the keys from before providers.
    Admission is per provider, so shards of several providers are never planned under one."""
    providers = {shard.provider for shard in shards}
    if len(providers) != 1:
        raise ValueError(f"admissions are per provider, not for shards of {sorted(map(str, providers))}")
    return next(iter(providers))


def dispatch_shard_work(plan_queue: PlanQueue, now: datetime | None = None) -> int:
    """The scheduled run's planning: one unit of work per shard of each provider, and per shard of the
    keys from before providers were in them, on the PlanQueue, for the shard workers to plan in
    parallel; returns how many units. Every shard below the count is dispatched, so the shards of any
    smaller count before it, where accounts not yet moved still are, are too.

    A provider's shards are sent in a row, so their workers run at once and take turns at its hour's
    admissions a batch at a time, each its longest due first; the order starts from another shard
    each hour of ``now`` (``_first_shard``; from shard 0 without one), so when they do run one after
    another no shard is always served last.
    """
    first = 0 if now is None else _first_shard(now)
    work = [ShardWork(shard=shard.shard, provider=shard.provider) for shard in all_refresh_shards(first)]
    plan_queue.send(work)
    return len(work)


@dataclass(frozen=True)
class ShardRun:
    """What one shard worker did."""

    shard: int
    planned: int
    # False when it stopped at its time limit with accounts still due; then it queued a continuation.
    # True otherwise, accounts still due included when its provider's admissions were spent: those wait
    # for the next hour, and a continuation would only find the hour spent.
    finished: bool
    provider: str | None = None
    stopped: StopReason = "all_due_planned"


def plan_shard(
    store: Repositories,
    fetch_queue: FetchQueue,
    plan_queue: PlanQueue,
    work: ShardWork,
    now: datetime,
    time_limit: timedelta | None = None,
    concurrency: int = PLANNER_CONCURRENCY,
    clock: Callable[[], float] = time.monotonic,
    admissions: Admissions | None = None,
) -> ShardRun:
    """A shard worker: plans the due accounts of ``work``'s shard as ``plan_due_refreshes`` does, within
    its provider's ``admissions`` of the hour when given. Out of time with accounts still due, it
    queues the same shard's work again, so a backlog goes on at once with the next worker rather than
    waiting for the next scheduled run, however long it is. Out of admissions it queues nothing: the
    accounts left are due still, first in line for the next hour, so a provider that cannot serve them
    all today stretches their interval in order rather than growing the fetch queue.

    A worker of a shard of the keys from before providers were in them admits nothing: its accounts'
    providers are known only once claimed, and they are a set that only shrinks (each moves to its
    provider's key as it is claimed), so what they take of a provider beyond its admissions is brief.

    Two workers on one shard (a continuation beside the next run's work, a redelivery) are safe: each
    account's claim is conditional, so each is enqueued once.
    """
    shard = RefreshShard(work.provider, work.shard)
    run = plan_due_refreshes(
        store,
        fetch_queue,
        now,
        time_limit,
        concurrency,
        clock,
        shards=[shard],
        admissions=admissions if work.provider is not None else None,
    )
    if not run.finished:
        plan_queue.send([work])
    return ShardRun(
        shard=work.shard, planned=run.planned, finished=run.finished, provider=work.provider, stopped=run.stopped
    )


def _plan_batch(schedule: RefreshScheduleStore, queue: FetchQueue, batch: Sequence[DueRefresh], now: datetime) -> int:
    """Claims each account of ``batch``, then sends one fetch per account claimed; returns how many.

    What was claimed is sent even if a later claim raised, and what SQS did not take is released.
    """
    claimed: list[DueRefresh] = []
    try:
        for due in batch:
            if (account := schedule.claim_due_refresh(due, _claimed_until(due, now))) is not None:
                claimed.append(account)
    finally:
        if claimed:
            _send_claimed(schedule, queue, claimed, now)
    return len(claimed)


def _send_claimed(
    schedule: RefreshScheduleStore, queue: FetchQueue, claimed: Sequence[DueRefresh], now: datetime
) -> None:
    try:
        # Each to its provider's fetch lane (a claim learns an old key's provider, so every one is known).
        queue.send(
            [
                FetchRequest(user_id=due.user_id, account_id=due.account_id, provider=due.provider, reason="schedule")
                for due in claimed
            ]
        )
    except EnqueueFailed as error:
        unsent = {request.account_id for request in error.unsent}
        for due in claimed:
            if due.account_id in unsent:
                schedule.release_refresh_claim(due, _claimed_until(due, now))
        raise


def _claimed_until(due: DueRefresh, now: datetime) -> datetime:
    return now + REFRESH_PERIODS[due.refresh_interval]
