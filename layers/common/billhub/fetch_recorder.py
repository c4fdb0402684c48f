"""Writing what follows from a fetch: the store, the vault, the alerts and the deferrals are synchronous
(boto3); ``off_loop`` runs their calls in a thread, so the fetches of a batch keep running concurrently
meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from billhub.store import BillsTable


def off_loop[**Params, Result](call: Callable[Params, Result]) -> Callable[Params, Awaitable[Result]]:
    """``call`` as a coroutine function that runs it in a thread, off the event loop."""

    async def in_thread(*args: Params.args, **kwargs: Params.kwargs) -> Result:
        return await asyncio.to_thread(call, *args, **kwargs)

    return in_thread


class AsyncStore:
    """The bills table's calls a fetch makes, each awaited off the event loop."""

    def __init__(self, store: BillsTable) -> None:
        self.get_account = off_loop(store.get_account)
        self.save_renewed_credentials = off_loop(store.save_renewed_credentials)
        self.relink = off_loop(store.relink)
        self.save_fetched_bills = off_loop(store.save_fetched_bills)
        self.record_fetch_failure = off_loop(store.record_fetch_failure)
        self.mark_needs_reauth = off_loop(store.mark_needs_reauth)
        self.record_job_result = off_loop(store.record_job_result)
