"""Fetching one account's bills from its provider and storing them (the FetchQueue consumer's work)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aws_lambda_powertools import Logger

from billhub.credentials import CredentialVault
from billhub.models import AccountStatus, FetchRequest, JobAccountResult
from billhub.providers import REGISTRY
from billhub.providers.base import ProviderAuthRejected, ProviderError
from billhub.providers.http import ProviderHttp
from billhub.store import BillsTable

logger = Logger(child=True)


class FetchFailed(Exception):
    """The fetch failed in a way worth retrying; the message goes back to the queue."""


@dataclass(frozen=True)
class FetchResult:
    account_id: str
    outcome: str
    bills_changed: int = 0


class Fetcher:
    def __init__(
        self,
        store: BillsTable,
        vault: CredentialVault,
        http: ProviderHttp,
        max_receive_count: int,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._vault = vault
        self._http = http
        self._max_receive_count = max_receive_count
        self._clock = clock

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
        credentials = adapter.parse_credentials(
            await asyncio.to_thread(
                self._vault.decrypt, account.user_id, account.account_id, stored.credentials_ciphertext
            )
        )
        attempted_at = self._clock()
        try:
            bills = await adapter.fetch_bills(self._http, account, credentials)
        except ProviderAuthRejected as error:
            # Retrying cannot cure refused credentials: the user has to act.
            await asyncio.to_thread(
                self._store.record_fetch_failure, account, str(error), attempted_at, AccountStatus.NEEDS_REAUTH
            )
            await self._report(request, JobAccountResult(status="failed", error=str(error)))
            return FetchResult(account.account_id, "needs_reauth")
        except ProviderError as error:
            final = receive_count >= self._max_receive_count
            # The last good bills stay in place; the account records the failed attempt.
            await asyncio.to_thread(self._store.record_fetch_failure, account, str(error), attempted_at, account.status)
            await self._report(request, JobAccountResult(status="failed" if final else "retrying", error=str(error)))
            logger.warning(
                "fetch failed", extra={"account_id": account.account_id, "provider": account.provider, "final": final}
            )
            raise FetchFailed(str(error)) from error

        changed = await asyncio.to_thread(self._store.save_fetched_bills, account, bills, self._clock())
        await self._report(request, JobAccountResult(status="succeeded"))
        logger.info(
            "fetched bills",
            extra={
                "account_id": account.account_id,
                "provider": account.provider,
                "bills": len(bills),
                "changed": changed,
            },
        )
        return FetchResult(account.account_id, "succeeded", changed)

    async def _report(self, request: FetchRequest, result: JobAccountResult) -> None:
        if request.job_id:
            await asyncio.to_thread(
                self._store.record_job_result, request.user_id, request.job_id, request.account_id, result
            )
