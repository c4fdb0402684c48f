"""Fetching one account's bills from its provider and storing them (the FetchQueue consumer's work)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime

from aws_lambda_powertools import Logger
from pydantic import BaseModel

from billhub.credentials import CredentialVault
from billhub.errors import Conflict
from billhub.models import Account, AccountStatus, FetchRequest, JobAccountResult
from billhub.providers import REGISTRY
from billhub.providers.base import ProviderAdapter
from billhub.providers.errors import ProviderAuthRejected, ProviderError
from billhub.providers.session import ProviderConnector, ProviderSession
from billhub.store import BillsTable, ConcurrentUpdate, StoredAccount

logger = Logger(child=True)


class FetchFailed(Exception):
    """The fetch failed in a way worth retrying; the message goes back to the queue."""


class DuplicateLink(Exception):
    """A pending account turned out to be a provider account the user had already linked."""


@dataclass(frozen=True)
class FetchResult:
    account_id: str
    outcome: str
    bills_changed: int = 0


class _CredentialsKeeper:
    """Saves credentials a token renewal produced (at once: a rotated refresh token exists only in
    memory until then) and reloads what another fetch saved."""

    def __init__(
        self, store: BillsTable, vault: CredentialVault, adapter: ProviderAdapter, stored: StoredAccount
    ) -> None:
        self._store = store
        self._vault = vault
        self._adapter = adapter
        self._stored = stored

    async def save(self, credentials: BaseModel) -> None:
        account = self._stored.account
        ciphertext = await asyncio.to_thread(
            self._vault.encrypt, account.user_id, account.account_id, credentials.model_dump(mode="json")
        )
        if await asyncio.to_thread(self._store.save_renewed_credentials, self._stored, ciphertext):
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
        fresh = await asyncio.to_thread(self._store.get_account, account.user_id, account.account_id)
        if fresh is None:
            return None
        self._stored = fresh
        return await self.decrypt(fresh)

    async def decrypt(self, stored: StoredAccount) -> BaseModel:
        account = stored.account
        plaintext = await asyncio.to_thread(
            self._vault.decrypt, account.user_id, account.account_id, stored.credentials_ciphertext
        )
        return self._adapter.parse_credentials(plaintext)


class Fetcher:
    def __init__(
        self,
        store: BillsTable,
        vault: CredentialVault,
        connector: ProviderConnector,
        max_receive_count: int,
    ) -> None:
        self._store = store
        self._vault = vault
        self._connector = connector
        self._max_receive_count = max_receive_count
        self._clock = connector.clock

    async def fetch(self, request: FetchRequest, receive_count: int) -> FetchResult:
        """Fetches and stores; raises ``FetchFailed`` when the message should be retried."""
        stored = await asyncio.to_thread(self._store.get_account, request.user_id, request.account_id)
        if stored is None or stored.account.status is AccountStatus.DELETING:
            # Deleted (or being deleted) since the message was sent: nothing to do, and no retry.
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
        attempted_at = self._clock()
        try:
            if stored.identity_pending:
                await self._confirm_identity(adapter, session, stored)
            bills = await adapter.fetch_bills(session, account)
        except (ProviderAuthRejected, DuplicateLink) as error:
            # Retrying cannot cure this: the user has to act. Unless the credentials changed meanwhile
            # (repaired, or renewed by another fetch): then the refusal was of credentials no longer held.
            await asyncio.to_thread(self._store.mark_needs_reauth, keeper.current, str(error), attempted_at)
            await self._report(request, JobAccountResult(status="failed", error=str(error)))
            return FetchResult(account.account_id, "needs_reauth")
        except ProviderError as error:
            await self._failed(request, account, str(error), attempted_at, receive_count)
            raise FetchFailed(str(error)) from error
        except Exception as error:
            # A bug or an unforeseen answer: say so on the account rather than fail silently.
            logger.exception("unexpected fetch error", extra={"account_id": account.account_id})
            await self._failed(request, account, "Unexpected error while fetching.", attempted_at, receive_count)
            raise FetchFailed("unexpected error") from error

        changed = await asyncio.to_thread(self._store.save_fetched_bills, account, bills, self._clock())
        await self._report(request, JobAccountResult(status="succeeded"))
        logger.info(
            "fetched bills",
            extra={
                "account_id": account.account_id,
                "provider": account.provider,
                "bills": len(bills),
                "changed": changed,
                "tokens_renewed": session.renewed_tokens,
            },
        )
        return FetchResult(account.account_id, "succeeded", changed)

    async def _confirm_identity(
        self, adapter: ProviderAdapter, session: ProviderSession, stored: StoredAccount
    ) -> None:
        """An account linked while its provider was down learns whose account it is on its first fetch."""
        identity = await adapter.verify(session)
        try:
            await asyncio.to_thread(self._store.relink, stored, identity.external_id, identity.masked, self._clock())
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
        await asyncio.to_thread(self._store.record_fetch_failure, account, error, attempted_at)
        await self._report(request, JobAccountResult(status="failed" if final else "retrying", error=error))
        logger.warning(
            "fetch failed", extra={"account_id": account.account_id, "provider": account.provider, "final": final}
        )

    async def _report(self, request: FetchRequest, result: JobAccountResult) -> None:
        if request.job_id:
            await asyncio.to_thread(
                self._store.record_job_result, request.user_id, request.job_id, request.account_id, result
            )
