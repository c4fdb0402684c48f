"""Fetching one account's bills from its provider and storing them (the FetchQueue consumer's work)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.circuit_breaker import CircuitState
from pydantic import BaseModel

from billhub.alerts import AdminAlerts
from billhub.circuit import ProviderCircuits, Transition
from billhub.credentials import CredentialVault
from billhub.deferral import FetchDeferrals
from billhub.errors import Conflict
from billhub.fetch_outcomes import (
    Alert,
    Deferred,
    DuplicateLink,
    Failed,
    Fetched,
    FetchFailed,
    FetchResult,
    NeedsReauth,
    classify,
)
from billhub.fetch_recorder import AsyncStore, off_loop
from billhub.metrics import FetchMetrics
from billhub.models import Account, AccountStatus, Bill, FetchRequest, JobAccountResult
from billhub.providers import REGISTRY
from billhub.providers.base import ProviderAdapter
from billhub.providers.session import ProviderConnector, ProviderSession
from billhub.store import AccountGone, BillsTable, ConcurrentUpdate, StoredAccount

__all__ = ["DuplicateLink", "FetchFailed", "FetchResult", "Fetcher", "Safeguards", "alert_when_a_circuit_opens"]

logger = Logger(child=True)


class _CredentialsKeeper:
    """Saves credentials a token renewal produced (at once: a rotated refresh token exists only in
    memory until then) and reloads what another fetch saved."""

    def __init__(
        self, store: AsyncStore, vault: CredentialVault, adapter: ProviderAdapter, stored: StoredAccount
    ) -> None:
        self._store = store
        self._vault = vault
        self._adapter = adapter
        self._stored = stored

    async def save(self, credentials: BaseModel) -> None:
        account = self._stored.account
        ciphertext = await off_loop(self._vault.encrypt)(
            account.user_id, account.account_id, credentials.model_dump(mode="json")
        )
        if await self._store.save_renewed_credentials(self._stored, ciphertext):
            self._stored = replace(
                self._stored,
                credentials_ciphertext=ciphertext,
                credentials_version=self._stored.credentials_version + 1,
            )

    @property
    def current(self) -> StoredAccount:
        """The account as last read or written by this fetch (its credentials version included)."""
        return self._stored

    async def reload(self) -> BaseModel | None:
        account = self._stored.account
        fresh = await self._store.get_account(account.user_id, account.account_id)
        if fresh is None:
            return None
        self._stored = fresh
        return await self.decrypt(fresh)

    async def decrypt(self, stored: StoredAccount) -> BaseModel:
        account = stored.account
        plaintext = await off_loop(self._vault.decrypt)(
            account.user_id, account.account_id, stored.credentials_ciphertext
        )
        return self._adapter.parse_credentials(plaintext)


@dataclass(frozen=True)
class Safeguards:
    """What keeps fetching from hurting a provider or going unnoticed; each is optional so a test
    can exercise the fetcher without the others."""

    circuits: ProviderCircuits | None = None
    deferrals: FetchDeferrals | None = None
    alerts: AdminAlerts | None = None
    metrics: FetchMetrics | None = None


DELETED = JobAccountResult(status="failed", error="The account was deleted.")
# Credential refusals at one provider within this window that make an incident worth an alert.
CREDENTIAL_BURST = (5, 600)


class Fetcher:
    def __init__(
        self,
        store: BillsTable,
        vault: CredentialVault,
        connector: ProviderConnector,
        max_receive_count: int,
        safeguards: Safeguards | None = None,
    ) -> None:
        self._store = AsyncStore(store)
        self._vault = vault
        self._connector = connector
        self._max_receive_count = max_receive_count
        self._clock = connector.clock
        self._guards = safeguards or Safeguards()

    async def fetch(self, request: FetchRequest, receive_count: int) -> FetchResult:
        """Fetches and stores; raises ``FetchFailed`` when the message should be retried."""
        stored = await self._store.get_account(request.user_id, request.account_id)
        if stored is None or stored.account.status is AccountStatus.DELETING:
            # Deleted (or being deleted) since the message was sent: nothing to do, and no retry.
            await self._report(request, DELETED)
            return FetchResult(request.account_id, "skipped_deleted")
        account = stored.account
        if account.status is AccountStatus.NEEDS_REAUTH:
            await self._report(
                request, JobAccountResult(status="failed", error="The account needs to be linked again.")
            )
            return FetchResult(account.account_id, "skipped_needs_reauth")

        adapter = REGISTRY[account.provider]
        keeper = _CredentialsKeeper(self._store, self._vault, adapter, stored)
        session = self._connector.session(
            account.provider, await keeper.decrypt(stored), save=keeper.save, reload=keeper.reload
        )
        started = time.monotonic()
        outcome = "failed"
        try:
            result = await self._attempt(request, receive_count, adapter, session, keeper)
            outcome = result.outcome
            return result
        finally:
            if self._guards.metrics is not None:
                latency_ms = (time.monotonic() - started) * 1000
                self._guards.metrics.record(account.provider, outcome, latency_ms, session.http.retries)

    async def _attempt(
        self,
        request: FetchRequest,
        receive_count: int,
        adapter: ProviderAdapter,
        session: ProviderSession,
        keeper: _CredentialsKeeper,
    ) -> FetchResult:
        stored = keeper.current
        account = stored.account
        attempted_at = self._clock()

        answer = await self._ask(adapter, session, stored)
        final = receive_count >= self._max_receive_count
        match await classify(answer, adapter, final=final, circuits=self._guards.circuits):
            case Fetched(bills):
                pass
            case Deferred() as deferred:
                await self._alert(deferred.alert)
                return await self._defer(request, account, deferred.reason, deferred.wait_seconds, attempted_at)
            case NeedsReauth() as needs:
                await self._store.mark_needs_reauth(keeper.current, needs.error, attempted_at)
                await self._report(request, JobAccountResult(status="failed", error=needs.error))
                if needs.count_refusal:
                    await self._count_credential_refusal(adapter)
                return FetchResult(account.account_id, "needs_reauth")
            case Failed() as failed:
                if failed.unexpected:
                    # A bug or an unforeseen answer: say so on the account rather than fail silently.
                    logger.exception(
                        "unexpected fetch error", exc_info=failed.cause, extra={"account_id": account.account_id}
                    )
                await self._alert(failed.alert)
                await self._failed(request, account, failed.error, attempted_at, receive_count)
                raise FetchFailed(failed.message) from failed.cause

        try:
            # As of when the provider was asked: a slower, older fetch can then never overwrite this one.
            changed = await self._store.save_fetched_bills(account, bills, attempted_at)
        except AccountGone:
            # Deleted while the provider answered: its bills must not come back.
            await self._report(request, DELETED)
            return FetchResult(account.account_id, "skipped_deleted")
        await self._report(request, JobAccountResult(status="succeeded"))
        logger.info(
            "fetched bills",
            extra={
                "account_id": account.account_id,
                "provider": account.provider,
                "bills": len(bills),
                "changed": changed,
                "tokens_renewed": session.renewed_tokens,
                "retries": session.http.retries,
            },
        )
        return FetchResult(account.account_id, "succeeded", changed)

    async def _ask(
        self, adapter: ProviderAdapter, session: ProviderSession, stored: StoredAccount
    ) -> list[Bill] | Exception:
        """The account's bills from its provider (within the deadline, through the provider's circuit),
        or the error that stopped them."""

        async def fetch_from_provider() -> list[Bill]:
            if stored.identity_pending:
                await self._confirm_identity(adapter, session, stored)
            return await adapter.fetch_bills(session, stored.account)

        async def within_deadline() -> list[Bill]:
            return await self._connector.within_deadline(fetch_from_provider())

        circuits = self._guards.circuits
        try:
            if circuits is None:
                return await within_deadline()
            return await circuits.call(adapter.name, within_deadline)
        except Exception as error:
            return error

    async def _defer(
        self, request: FetchRequest, account: Account, reason: str, wait_seconds: float, attempted_at: datetime
    ) -> FetchResult:
        """Puts the fetch off: a new delayed message, the original done, nothing counted as failed."""
        deferrals = self._guards.deferrals
        if deferrals is not None and await off_loop(deferrals.defer)(request, wait_seconds):
            await self._report(request, JobAccountResult(status="retrying", error=reason))
            logger.info("fetch deferred", extra={"account_id": account.account_id, "reason": reason})
            return FetchResult(account.account_id, "deferred")
        # Put off too often (or nowhere to put it): the last good bills stay, the next schedule tries again.
        await self._store.record_fetch_failure(account, reason, attempted_at)
        await self._report(request, JobAccountResult(status="failed", error=reason))
        return FetchResult(account.account_id, "gave_up")

    async def _count_credential_refusal(self, adapter: ProviderAdapter) -> None:
        alerts = self._guards.alerts
        threshold, window = CREDENTIAL_BURST
        if alerts is not None and await off_loop(alerts.count_towards)(
            f"credentials#{adapter.name}", threshold, window
        ):
            await self._alert(
                Alert(
                    f"credentials#{adapter.name}",
                    f"Credential failures at {adapter.display_name}",
                    f"{threshold} accounts were refused within {window // 60} minutes",
                )
            )

    async def _alert(self, alert: Alert | None) -> None:
        if alert is not None and self._guards.alerts is not None:
            await raise_alert(self._guards.alerts, alert.incident, alert.subject, {"message": alert.message})

    async def _confirm_identity(
        self, adapter: ProviderAdapter, session: ProviderSession, stored: StoredAccount
    ) -> None:
        """An account linked while its provider was down learns whose account it is on its first fetch."""
        identity = await adapter.verify(session)
        try:
            await self._store.relink(stored, identity.external_id, identity.masked, self._clock())
        except Conflict as error:
            raise DuplicateLink(
                f"This {adapter.display_name} account ({identity.masked}) is already linked as another "
                "account; remove this one."
            ) from error
        except ConcurrentUpdate:
            # Another fetch or a repair confirmed it first; their identity stands.
            logger.info("identity confirmed elsewhere", extra={"account_id": stored.account.account_id})

    async def _failed(
        self, request: FetchRequest, account: Account, error: str, attempted_at: datetime, receive_count: int
    ) -> None:
        """The last good bills stay in place; the account and the job record the failed attempt."""
        final = receive_count >= self._max_receive_count
        await self._store.record_fetch_failure(account, error, attempted_at)
        await self._report(request, JobAccountResult(status="failed" if final else "retrying", error=error))
        logger.warning(
            "fetch failed", extra={"account_id": account.account_id, "provider": account.provider, "final": final}
        )

    async def _report(self, request: FetchRequest, result: JobAccountResult) -> None:
        if request.job_id:
            await self._store.record_job_result(request.user_id, request.job_id, request.account_id, result)


def alert_when_a_circuit_opens(alerts: AdminAlerts) -> Callable[[Transition], Awaitable[None]]:
    """The circuits' transition hook: an opening is an incident, raised once however many fetchers see it."""

    async def on_transition(transition: Transition) -> None:
        if transition.from_state == CircuitState.CLOSED and transition.to_state == CircuitState.OPEN:
            await raise_alert(
                alerts,
                f"circuit-open#{transition.provider}",
                f"{transition.provider} circuit opened",
                {"provider": transition.provider, "opened_at": transition.opened_at},
            )

    return on_transition


async def raise_alert(alerts: AdminAlerts, incident: str, subject: str, details: dict[str, object]) -> None:
    """Raises the incident once; an alert that cannot be sent never turns into a failed fetch."""
    try:
        await off_loop(alerts.raise_once)(incident, subject, details)
    except Exception:
        logger.exception("alert not sent", extra={"incident": incident})
