"""Refreshing bills: on-demand jobs for one user, and the scheduled planner for everyone."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from billhub.errors import NotFound, ServiceError
from billhub.models import AccountStatus, FetchRequest, Identifier, JobAccountResult, RefreshJob
from billhub.queue import FetchQueue
from billhub.store import REFRESH_SHARDS, BillsTable

REFRESH_INTERVAL = timedelta(days=1)


class RefreshRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_ids: list[Identifier] | None = Field(default=None, min_length=1, max_length=50)


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


def start_refresh(
    store: BillsTable, queue: FetchQueue, user_id: str, request: RefreshRequest, now: datetime
) -> RefreshStarted:
    """Creates a job for the user's accounts (or the ones named) and enqueues one fetch per account."""
    accounts = {
        account.account_id: account
        for account in store.list_accounts(user_id)
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
    job = RefreshJob(job_id=uuid.uuid4().hex, user_id=user_id, account_ids=chosen, created_at=now)
    # Needs-reauth accounts named explicitly are reported failed at once rather than fetched.
    for aid in chosen:
        if accounts[aid].status is AccountStatus.NEEDS_REAUTH:
            job.results[aid] = JobAccountResult(status="failed", error="The account needs to be linked again.")
    store.create_job(job)
    queue.send(
        [
            FetchRequest(user_id=user_id, account_id=aid, job_id=job.job_id, reason="manual")
            for aid in chosen
            if aid not in job.results
        ]
    )
    return RefreshStarted(job_id=job.job_id, accounts=chosen)


def job_status(store: BillsTable, user_id: str, job_id: str) -> JobStatus:
    job = store.get_job(user_id, job_id)
    if job is None:
        raise NotFound("No such refresh job.")
    return JobStatus.of(job)


def plan_due_refreshes(store: BillsTable, queue: FetchQueue, now: datetime) -> int:
    """Enqueues a fetch for every account whose next refresh has come; returns how many.

    Each account is first claimed by moving its ``next_refresh_at`` forward with a conditional
    write, so two planners running at once never enqueue the same account twice.
    """
    planned: list[FetchRequest] = []
    for shard in range(REFRESH_SHARDS):
        for user_id, account_id, due_key in store.due_for_refresh(shard, now):
            if store.claim_due_refresh(user_id, account_id, due_key, now + REFRESH_INTERVAL):
                planned.append(FetchRequest(user_id=user_id, account_id=account_id, reason="schedule"))
    queue.send(planned)
    return len(planned)
