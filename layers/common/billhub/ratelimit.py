"""A per-provider request budget shared by every fetcher and linker, in the table.

Providers count requests per second; so does this: one counter per provider per wall-clock second
(``store.service_records.RequestBudgets``), raised by a conditional write that refuses to pass the
budget. That is one write per provider request, no read, and no coordination between Lambdas beyond
the table. The budget is the provider's whole limit (published, or agreed at deploy); a slot taken too
late in its second to arrive within it is given up.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping

from billhub.providers.errors import ProviderBusy
from billhub.store.protocols import RequestBudgetStore

# A slot taken this close to the end of its second is given up for one in the next second: the request
# it allows would likely arrive after the boundary, counted in a second whose budget it did not take.
# This margin, not a share held back from the limit, is what keeps each second within the limit.
SEND_MARGIN_SECONDS = 0.25


class ProviderRateLimiter:
    def __init__(
        self,
        budgets: RequestBudgetStore,
        limits: Mapping[str, int],
        max_wait_seconds: float = 2.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._counters = budgets
        self._budgets = dict(limits)
        self._max_wait = max_wait_seconds
        self._clock = clock
        self._sleep = sleep

    @classmethod
    def for_registered_providers(
        cls,
        budgets: RequestBudgetStore,
        max_wait_seconds: float = 2.0,
        agreed_limits: Mapping[str, int] | None = None,
    ) -> ProviderRateLimiter:
        """A limiter holding every registered provider to its published limit, or to the limit agreed
        with it where ``agreed_limits`` names one."""
        from billhub.providers import REGISTRY

        agreed = agreed_limits or {}
        limits = {name: agreed.get(name, adapter.requests_per_second) for name, adapter in REGISTRY.items()}
        return cls(budgets, limits, max_wait_seconds)

    async def acquire(self, provider: str) -> None:
        """Takes one request slot, waiting for the next second if this one is full; ``ProviderBusy``
        when none frees up within ``max_wait_seconds`` (the caller defers its work)."""
        deadline = self._clock() + self._max_wait
        while True:
            second = math.floor(self._clock())
            if await asyncio.to_thread(self._counters.take, provider, second, self._budgets[provider]):
                if self._clock() < second + 1 - SEND_MARGIN_SECONDS:
                    return
                # The write (nearly) outlasted its second: the request would land in the next one,
                # uncounted. The slot is given up (never over the budget, at worst under it).
                await self._sleep(max(second + 1 - self._clock(), 0.0))
                continue
            next_second = second + 1
            if next_second > deadline:
                raise ProviderBusy(f"The request budget for {provider} is spent for now.", retry_after=1.0)
            await self._sleep(max(next_second - self._clock(), 0.0))
