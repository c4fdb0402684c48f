"""A per-provider request budget shared by every fetcher and linker, in the table.

Providers count requests per second; so does this: one counter per provider per wall-clock second
(``store.service_records.RequestBudgets``), raised by a conditional write that refuses to pass the
budget. One write leases several slots of a second at once, as many as this environment's acquirers
are waiting for (never more than the budget); the environment hands them out to its concurrent
requests, so a provider request costs a fraction of a write and no coordination between Lambdas
beyond the table. The budget is the provider's whole limit (published, or agreed at deploy); a slot
still held too late in its second to arrive within it is given up, and a slot leased but not used in
its second is lost with it: under the limit, never over.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from billhub.providers.errors import ProviderBusy
from billhub.store.protocols import RequestBudgetStore

# A slot used this close to the end of its second is given up for one in the next second: the request
# it allows would likely arrive after the boundary, counted in a second whose budget it did not take.
# This margin, not a share held back from the limit, is what keeps each second within the limit.
SEND_MARGIN_SECONDS = 0.25


@dataclass
class _ProviderSlots:
    """One provider's slots in this environment: those leased for ``second`` and not yet handed out."""

    second: int = -1
    left: int = 0
    # Nothing more to lease in ``second``: the table says its budget is spent, or it is too late in it.
    closed: bool = False
    # Known count of ``second`` in the table (every environment's), so a lease asks only for the rest.
    taken: int = 0
    # Acquirers in this environment without a slot yet: the next lease's size.
    waiting: int = 0
    # The one lease in flight for this provider, which every waiting acquirer shares.
    leasing: asyncio.Task[None] | None = None

    def start(self, second: int) -> None:
        if second != self.second:
            self.second, self.left, self.closed, self.taken = second, 0, False, 0


def provider_limits(agreed_limits: Mapping[str, int] | None = None) -> dict[str, int]:
    """Each registered provider's requests per second: its published limit, or the one agreed with it
    where ``agreed_limits`` (the deployment's PROVIDER_RATE_LIMITS) names one."""
    from billhub.providers import REGISTRY

    agreed = agreed_limits or {}
    return {name: agreed.get(name, adapter.requests_per_second) for name, adapter in REGISTRY.items()}


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
        self._slots = {provider: _ProviderSlots() for provider in self._budgets}

    @classmethod
    def for_registered_providers(
        cls,
        budgets: RequestBudgetStore,
        max_wait_seconds: float = 2.0,
        agreed_limits: Mapping[str, int] | None = None,
    ) -> ProviderRateLimiter:
        """A limiter holding every registered provider to its published limit, or to the limit agreed
        with it where ``agreed_limits`` names one."""
        return cls(budgets, provider_limits(agreed_limits), max_wait_seconds)

    async def acquire(self, provider: str) -> None:
        """Takes one request slot, waiting for the next second if this one is full; ``ProviderBusy``
        when none frees up within ``max_wait_seconds`` (the caller defers its work)."""
        slots = self._slots[provider]
        deadline = self._clock() + self._max_wait
        slots.waiting += 1
        try:
            while True:
                now = self._clock()
                second = math.floor(now)
                slots.start(second)
                if now >= second + 1 - SEND_MARGIN_SECONDS:
                    # Too late for a request of this second: what is left of it is given up.
                    slots.left, slots.closed = 0, True
                if slots.left > 0:
                    slots.left -= 1
                    return
                if not slots.closed:
                    await self._shared_lease(provider, slots, second)
                    continue
                next_second = second + 1
                if next_second > deadline:
                    raise ProviderBusy(f"The request budget for {provider} is spent for now.", retry_after=1.0)
                await self._sleep(max(next_second - self._clock(), 0.0))
        finally:
            slots.waiting -= 1

    async def _shared_lease(self, provider: str, slots: _ProviderSlots, second: int) -> None:
        """Waits for this provider's lease in flight, starting one if none is: one write at a time per
        provider in this environment, so concurrent acquirers never race each other for the table."""
        lease = slots.leasing
        if lease is None or lease.get_loop() is not asyncio.get_running_loop():  # a past invocation's
            lease = slots.leasing = asyncio.ensure_future(self._lease(provider, slots, second))
        # Shielded: an acquirer given up on (cancelled) does not cancel the lease the others wait for.
        await asyncio.shield(lease)

    async def _lease(self, provider: str, slots: _ProviderSlots, second: int) -> None:
        budget = self._budgets[provider]
        # As many as wait here now, up to what this second is known to have left.
        wanted = max(min(slots.waiting, budget - slots.taken), 1)
        try:
            granted, taken = await asyncio.to_thread(self._counters.lease, provider, second, budget, wanted)
        finally:
            if slots.leasing is asyncio.current_task():
                slots.leasing = None
        if slots.second != second or self._clock() >= second + 1 - SEND_MARGIN_SECONDS:
            # The write (nearly) outlasted its second: its requests would land in the next one,
            # uncounted. Its slots are given up (never over the budget, at worst under it).
            return
        slots.left += granted
        slots.taken = max(slots.taken, taken)
        slots.closed = taken >= budget
