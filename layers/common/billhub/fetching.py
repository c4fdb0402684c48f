"""Fetching one account's bills from its provider and storing them (the FetchQueue consumer's work).

An attempt runs, ``billhub.fetch_outcomes.classify`` says what it came to, and
``billhub.fetch_recorder.OutcomeRecorder`` writes what follows from that.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.circuit_breaker import CircuitState
from pydantic import BaseModel

from billhub.alerts import AdminAlerts
from billhub.circuit import Transition
from billhub.credentials import CredentialVault
from billhub.errors import NotFound
from billhub.fetch_outcomes import AwaitingReauth, DuplicateLink, FetchFailed, FetchResult, Gone, classify
from billhub.fetch_recorder import AsyncStore, Attempt, OutcomeRecorder, Safeguards, raise_alert
from billhub.models import AccountStatus, Bill, FetchRequest
from billhub.providers import REGISTRY
from billhub.providers.base import ProviderAdapter
from billhub.providers.session import ProviderConnector, ProviderSession
from billhub.store import ConcurrentUpdate, StoredAccount
from billhub.store.errors import AlreadyExists, ItemMissing
from billhub.store.protocols import Repositories
from billhub.threads import off_loop

__all__ = ["DuplicateLink", "FetchFailed", "FetchResult", "Fetcher", "Safeguards", "alert_when_a_circuit_opens"]

logger = Logger(child=True)


class _CredentialsKeeper:
    """Saves credentials a token renewal produced (at once: a rotated refresh token exists only in
    memory until then) and reloads what another fetch saved."""

    def __init__(
        self, store: AsyncStore, vault: CredentialVault, adapter: ProviderAdapter, stored: StoredAccount
    ) -> None:
        self._store = store
        self._encrypt = off_loop(vault.encrypt)
        self._decrypt = off_loop(vault.decrypt)
        self._adapter = adapter
        self._stored = stored

    async def save(self, credentials: BaseModel) -> None:
        account = self._stored.account
        ciphertext = await self._encrypt(account.user_id, account.account_id, credentials.model_dump(mode="json"))
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
        plaintext = await self._decrypt(account.user_id, account.account_id, stored.credentials_ciphertext)
        return self._adapter.parse_credentials(plaintext)


class Fetcher:
    def __init__(
        self,
        store: Repositories,
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
        recorder = OutcomeRecorder(self._store, self._guards, request)
        stored = await self._store.get_account(request.user_id, request.account_id)
        if stored is None or stored.account.status is AccountStatus.DELETING:
            # Deleted (or being deleted) since the message was sent: nothing to do, and no retry.
            return await recorder.skipped(Gone())
        # Events an earlier write left unpublished (a crash, a refused PutEvents) go out first.
        await recorder.publish_outbox(stored.account, stored.outbox)
        if stored.account.status is AccountStatus.NEEDS_REAUTH:
            return await recorder.skipped(AwaitingReauth())
        return await self._measured(recorder, stored, receive_count)

    async def _measured(self, recorder: OutcomeRecorder, stored: StoredAccount, receive_count: int) -> FetchResult:
        """The attempt, its latency and outcome measured whatever it comes to ("failed" when it raises)."""
        adapter = REGISTRY[stored.account.provider]
        keeper = _CredentialsKeeper(self._store, self._vault, adapter, stored)
        session = self._connector.session(
            adapter.name, await keeper.decrypt(stored), save=keeper.save, reload=keeper.reload
        )
        started = time.monotonic()
        outcome = "failed"
        try:
            result = await self._attempt(recorder, receive_count, adapter, session, keeper)
            outcome = result.outcome
            return result
        finally:
            latency_ms = (time.monotonic() - started) * 1000
            recorder.measure(adapter.name, outcome, latency_ms, session.http.retries)

    async def _attempt(
        self,
        recorder: OutcomeRecorder,
        receive_count: int,
        adapter: ProviderAdapter,
        session: ProviderSession,
        keeper: _CredentialsKeeper,
    ) -> FetchResult:
        stored = keeper.current
        attempted_at = self._clock()
        answer = await self._ask(adapter, session, stored)
        final = receive_count >= self._max_receive_count
        outcome = await classify(answer, adapter, final=final, circuits=self._guards.circuits)
        return await recorder.record(outcome, Attempt(stored.account, adapter, session, attempted_at, keeper.current))

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

    async def _confirm_identity(
        self, adapter: ProviderAdapter, session: ProviderSession, stored: StoredAccount
    ) -> None:
        """An account linked while its provider was down learns whose account it is on its first fetch."""
        identity = await adapter.verify(session)
        try:
            await self._store.relink(stored, identity.external_id, identity.masked, self._clock())
        except AlreadyExists as error:
            raise DuplicateLink(
                f"This {adapter.display_name} account ({identity.masked}) is already linked as another "
                "account; remove this one."
            ) from error
        except ItemMissing as error:
            raise NotFound("No such account.") from error
        except ConcurrentUpdate as error:
            # Another fetch or a repair confirmed it first (their identity stands), or the write kept
            # meeting other transactions (the next fetch confirms it): the reason tells which.
            logger.info(
                "identity not confirmed by this fetch: confirmed elsewhere, or kept meeting other transactions",
                extra={"account_id": stored.account.account_id, "reason": str(error)},
            )


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
