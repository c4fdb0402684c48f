"""Writing what follows from a fetch's outcome: the account, the job, metrics, alerts, a deferral.

The store, the vault, the alerts and the deferrals are synchronous (boto3); ``off_loop`` runs their
calls in a thread, so the fetches of a batch keep running concurrently meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.logging.types import LogRecord

from billhub import outbox
from billhub.alerts import AdminAlerts
from billhub.circuit import ProviderCircuits
from billhub.deferral import FetchDeferrals
from billhub.event_bus import EventPublisher
from billhub.events import Event
from billhub.fetch_outcomes import (
    Alert,
    AwaitingReauth,
    Deferred,
    Failed,
    Fetched,
    FetchFailed,
    FetchResult,
    Gone,
    NeedsReauth,
    Outcome,
    Skip,
)
from billhub.metrics import FetchMetrics
from billhub.models import Account, Bill, FetchRequest, JobAccountResult
from billhub.providers.base import ProviderAdapter
from billhub.providers.session import ProviderSession
from billhub.store import AccountGone, StoredAccount
from billhub.store.bills import BillChanges
from billhub.store.protocols import Repositories
from billhub.threads import off_loop

logger = Logger(child=True)

DELETED = JobAccountResult(status="failed", error="The account was deleted.")
NOT_LINKED = JobAccountResult(status="failed", error="The account needs to be linked again.")
# Credential refusals at one provider within this window that make an incident worth an alert.
CREDENTIAL_BURST = (5, 600)


# Keys Powertools puts on every line that tell nothing the log group and the invocation's request id do
# not already tell (CloudWatch Logs bills ingestion per byte, and the fetcher writes a line per account):
# the function's name, ARN and memory size (one log group per function; the REPORT line gives the
# memory), and the asyncio task's name (Python 3.12's ``taskName``, a counter of no meaning).
LOG_KEYS_DROPPED = frozenset({"function_name", "function_arn", "function_memory_size", "taskName"})


class FetchLogFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON lines without ``LOG_KEYS_DROPPED``; the request id, cold start, level, location,
    message, timestamp, service and each line's own fields stay."""

    def serialize(self, log: LogRecord) -> str:
        return super().serialize({key: value for key, value in log.items() if key not in LOG_KEYS_DROPPED})


class AsyncStore:
    """The bills table's calls a fetch makes, each awaited off the event loop."""

    def __init__(self, store: Repositories) -> None:
        self.get_account = off_loop(store.accounts.get_account)
        self.save_renewed_credentials = off_loop(store.accounts.save_renewed_credentials)
        self.relink = off_loop(store.accounts.relink)
        self.save_fetched_bills = off_loop(store.bills.save_fetched_bills)
        self.record_fetch_failure = off_loop(store.accounts.record_fetch_failure)
        self.mark_needs_reauth = off_loop(store.accounts.mark_needs_reauth)
        self.clear_outbox = off_loop(store.accounts.clear_outbox)
        self.record_job_result = off_loop(store.jobs.record_job_result)


@dataclass(frozen=True)
class Safeguards:
    """What keeps fetching from hurting a provider or going unnoticed; each is optional so a test
    can exercise the fetcher without the others."""

    circuits: ProviderCircuits | None = None
    deferrals: FetchDeferrals | None = None
    alerts: AdminAlerts | None = None
    metrics: FetchMetrics | None = None
    # Where the users' events go (the EventBridge bus); None: they stay in the accounts' outboxes.
    events: EventPublisher | None = None


@dataclass(frozen=True)
class Attempt:
    """What an attempt's outcome is recorded against: the account as the attempt began, when the
    provider was asked, and the account as the attempt left it (its credentials perhaps renewed)."""

    account: Account
    adapter: ProviderAdapter
    session: ProviderSession
    attempted_at: datetime
    current: StoredAccount


class OutcomeRecorder:
    """Records one fetch request's outcome; returns its ``FetchResult`` or raises ``FetchFailed``."""

    def __init__(self, store: AsyncStore, guards: Safeguards, request: FetchRequest) -> None:
        self._store = store
        self._guards = guards
        self._request = request

    async def skipped(self, skip: Skip) -> FetchResult:
        """A request not attempted: the account is gone, or waits to be linked again."""
        match skip:
            case Gone():
                await self._report(DELETED)
                return FetchResult(self._request.account_id, "skipped_deleted")
            case AwaitingReauth():
                await self._report(NOT_LINKED)
                return FetchResult(self._request.account_id, "skipped_needs_reauth")

    async def record(self, outcome: Outcome, attempt: Attempt) -> FetchResult:
        match outcome:
            case Fetched():
                return await self._fetched(outcome, attempt)
            case Deferred():
                await self._alert(outcome.alert)
                return await self._deferred(outcome, attempt)
            case NeedsReauth():
                return await self._needs_reauth(outcome, attempt)
            case Failed():
                await self._failed(outcome, attempt)
                raise FetchFailed(outcome.message) from outcome.cause

    def measure(self, provider: str, outcome: str, latency_ms: float, retries: int) -> None:
        if self._guards.metrics is not None:
            self._guards.metrics.record(provider, outcome, latency_ms, retries)

    async def publish_outbox(self, account: Account, entries: Sequence[str]) -> None:
        """Puts the account's outbox ``entries`` on the bus, then empties the outbox of them; raises
        ``FetchFailed`` if the bus refused them (the retry, or the next fetch, sends them again)."""
        if not entries or self._guards.events is None:
            return
        await self._publish(outbox.parsed(entries))
        await self._store.clear_outbox(account.user_id, account.account_id, list(entries))

    async def _publish(self, events: Sequence[Event]) -> None:
        publisher = self._guards.events
        if publisher is None or not events:
            return
        try:
            await off_loop(publisher.publish)(events)
        except Exception as error:
            logger.warning("events not published", extra={"events": len(events), "reason": str(error)})
            raise FetchFailed("The account's events could not be published; they are sent again.") from error

    async def _fetched(self, outcome: Fetched, attempt: Attempt) -> FetchResult:
        account = attempt.account
        announced: list[str] = []
        kept = len(Bill.latest_revisions(outcome.bills))

        def announce(changes: BillChanges) -> list[str]:
            at = attempt.attempted_at
            if changes.first_success:
                events = [outbox.synced(account, kept, at)]
            else:
                today = at.date()
                events = [outbox.bill_created(account, bill, at, today) for bill in changes.created]
                events += [outbox.bill_updated(account, bill, at, today) for bill in changes.updated]
            entries = outbox.serialised(events)
            announced.extend(entries)
            return entries

        try:
            # As of when the provider was asked: a slower, older fetch can then never overwrite this one.
            # The account as this fetch read it spares the save a read of its own (its conditions catch a change).
            changed = await self._store.save_fetched_bills(
                account, outcome.bills, attempt.attempted_at, seen=attempt.current, announce=announce
            )
        except AccountGone:
            # Deleted while the provider answered: its bills must not come back.
            return await self.skipped(Gone())
        await self.publish_outbox(account, announced)
        await self._report(JobAccountResult(status="succeeded"))
        logger.info(
            "fetched bills",
            extra={
                "account_id": account.account_id,
                "provider": account.provider,
                "bills": len(outcome.bills),
                "changed": changed,
                "tokens_renewed": attempt.session.renewed_tokens,
                "retries": attempt.session.http.retries,
            },
        )
        return FetchResult(account.account_id, "succeeded", changed)

    async def _deferred(self, outcome: Deferred, attempt: Attempt) -> FetchResult:
        """Puts the fetch off: a new delayed message, the original done, nothing counted as failed."""
        account, reason = attempt.account, outcome.reason
        deferrals = self._guards.deferrals
        # Back to its provider's lane, which a request the planner sent before it knew providers did not name.
        later = self._request.model_copy(update={"provider": account.provider})
        if deferrals is not None and await off_loop(deferrals.defer)(later, outcome.wait_seconds):
            await self._report(JobAccountResult(status="retrying", error=reason))
            logger.info("fetch deferred", extra={"account_id": account.account_id, "reason": reason})
            return FetchResult(account.account_id, "deferred")
        # Put off too often (or nowhere to put it): the last good bills stay, the next schedule tries again.
        await self._store.record_fetch_failure(account, reason, attempt.attempted_at)
        await self._report(JobAccountResult(status="failed", error=reason))
        return FetchResult(account.account_id, "gave_up")

    async def _needs_reauth(self, outcome: NeedsReauth, attempt: Attempt) -> FetchResult:
        current = attempt.current
        event = outbox.needs_reauth(current.account, current.credentials_version, outcome.error, attempt.attempted_at)
        entries = outbox.serialised([event])
        if await self._store.mark_needs_reauth(current, outcome.error, attempt.attempted_at, entries):
            await self.publish_outbox(current.account, entries)
        await self._report(JobAccountResult(status="failed", error=outcome.error))
        if outcome.count_refusal:
            await self._count_credential_refusal(attempt.adapter)
        return FetchResult(attempt.account.account_id, "needs_reauth")

    async def _failed(self, outcome: Failed, attempt: Attempt) -> None:
        """The last good bills stay in place; the account and the job record the failed attempt."""
        account = attempt.account
        if outcome.unexpected:
            # A bug or an unforeseen answer: say so on the account rather than fail silently.
            logger.exception("unexpected fetch error", exc_info=outcome.cause, extra={"account_id": account.account_id})
        await self._alert(outcome.alert)
        await self._store.record_fetch_failure(account, outcome.error, attempt.attempted_at)
        await self._report(JobAccountResult(status="failed" if outcome.final else "retrying", error=outcome.error))
        logger.warning(
            "fetch failed",
            extra={"account_id": account.account_id, "provider": account.provider, "final": outcome.final},
        )

    async def _count_credential_refusal(self, adapter: ProviderAdapter) -> None:
        alerts = self._guards.alerts
        threshold, window = CREDENTIAL_BURST
        incident = f"credentials#{adapter.name}"
        if alerts is not None and await off_loop(alerts.count_towards)(incident, threshold, window):
            await self._alert(
                Alert(
                    incident,
                    f"Credential failures at {adapter.display_name}",
                    f"{threshold} accounts were refused within {window // 60} minutes",
                )
            )

    async def _alert(self, alert: Alert | None) -> None:
        if alert is not None and self._guards.alerts is not None:
            await raise_alert(self._guards.alerts, alert.incident, alert.subject, {"message": alert.message})

    async def _report(self, result: JobAccountResult) -> None:
        """Records the account's result in its job; the result that completes the job announces it.
        (Every later delivery of a message of the job finds it complete and announces it again, under
        the same event id: a publish that failed is made good by the retry.)"""
        request = self._request
        if not request.job_id:
            return
        job = await self._store.record_job_result(request.user_id, request.job_id, request.account_id, result)
        if job is not None and job.status != "running":
            await self._publish([outbox.refresh_completed(job, job.created_at)])


async def raise_alert(alerts: AdminAlerts, incident: str, subject: str, details: dict[str, object]) -> None:
    """Raises the incident once; an alert that cannot be sent never turns into a failed fetch."""
    try:
        await off_loop(alerts.raise_once)(incident, subject, details)
    except Exception:
        logger.exception("alert not sent", extra={"incident": incident})
