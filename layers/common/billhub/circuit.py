"""One circuit breaker per provider, shared by every fetcher through DynamoDB.

The state lives in Powertools' circuit breaker persistence (``CircuitBreakerDynamoDBPersistence``,
in the service's single table) and its tunables in ``CircuitBreakerConfig``. Powertools' decorator
only wraps synchronous functions, and a batch's fetches are coroutines on one event loop, so this
module runs the same state machine around an awaitable: consecutive failures counted in memory and
written only on a transition, one half-open probe at a time, reads cached for a few seconds.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.circuit_breaker import CircuitBreakerConfig, CircuitState
from aws_lambda_powertools.utilities.circuit_breaker.persistence.base import CircuitBreakerPersistenceLayer
from aws_lambda_powertools.utilities.circuit_breaker.persistence.record import CircuitStateRecord

from billhub.providers.errors import ProviderBusy, ProviderUnavailable

DEFAULT_CONFIG = CircuitBreakerConfig(
    failure_threshold=5,
    recovery_timeout=30,
    success_threshold=2,
    # Only a provider that is down, slow or failing trips its circuit; refused credentials or one
    # account's bad data say nothing about the provider's health.
    handled_exceptions=(ProviderUnavailable,),
)


class CircuitOpen(Exception):
    """The provider's circuit is open: the work is put off, nothing is sent."""

    def __init__(self, provider: str, retry_after: float) -> None:
        super().__init__(f"{provider} is failing; its circuit is open.")
        self.provider = provider
        self.retry_after = retry_after


@dataclass(frozen=True)
class Transition:
    provider: str
    from_state: CircuitState
    to_state: CircuitState
    opened_at: int | None


class ProviderCircuits:
    def __init__(
        self,
        persistence: CircuitBreakerPersistenceLayer,
        config: CircuitBreakerConfig = DEFAULT_CONFIG,
        on_transition: Callable[[Transition], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._persistence = persistence
        self._config = config
        self._on_transition = on_transition
        self._clock = clock
        self._owner = f"billhub-{uuid.uuid4().hex}"  # this execution environment, as a prober
        self._failures: defaultdict[str, int] = defaultdict(int)
        self._probe_successes: defaultdict[str, int] = defaultdict(int)
        self._probing: set[str] = set()
        self._configured: set[str] = set()

    async def call[Result](self, provider: str, work: Callable[[], Awaitable[Result]]) -> Result:
        """Runs ``work`` unless the provider's circuit is open (``CircuitOpen``)."""
        self._configure(provider)
        record = await asyncio.to_thread(self._persistence.get_state, provider)
        now = int(self._clock())
        if record.state == CircuitState.CLOSED:
            return await self._closed(provider, work)
        opened_at = record.opened_at if record.opened_at is not None else now
        reopens_at = opened_at + self._config.recovery_timeout
        if provider not in self._probing:
            if record.state == CircuitState.OPEN:
                if now >= reopens_at and await self._acquire_probe(provider, opened_at):
                    await self._notify(provider, CircuitState.OPEN, CircuitState.HALF_OPEN, opened_at)
                    return await self._probe(provider, work)
            else:  # HALF_OPEN: ours to continue, or a prober that vanished and whose lease lapsed
                lapsed = record.probe_lease_expiry is not None and now >= record.probe_lease_expiry
                if record.half_open_owner == self._owner or (lapsed and await self._acquire_probe(provider, opened_at)):
                    return await self._probe(provider, work)
        raise CircuitOpen(provider, retry_after=max(reopens_at - now, 1))

    async def open_for(self, provider: str) -> float | None:
        """Seconds until the provider's circuit may be probed (at least 1), or None while it is closed.

        The read cache holds what this environment saved itself, but a circuit another environment
        opened since the cache last read the store would look closed for up to ``local_cache_max_age``;
        so a closed answer is checked against the store (rarely: a failure on a fetch's last receive)."""
        self._configure(provider)
        record = await asyncio.to_thread(self._persistence.get_state, provider)
        if record.state == CircuitState.CLOSED:
            record = await asyncio.to_thread(self._stored_state, provider)
        if record.state == CircuitState.CLOSED:
            return None
        now = int(self._clock())
        opened_at = record.opened_at if record.opened_at is not None else now
        return max(opened_at + self._config.recovery_timeout - now, 1)

    def counts(self, error: Exception) -> bool:
        """Whether ``error`` tells of the provider's health (it counts towards opening the circuit)."""
        return self._config.counts_as_failure(error) and not isinstance(error, ProviderBusy)

    def _configure(self, provider: str) -> None:
        if provider not in self._configured:
            self._persistence.configure(self._config, provider)
            self._configured.add(provider)

    def _stored_state(self, provider: str) -> CircuitStateRecord:
        """The state in the store, past the read cache; closed when unknown or unreadable (failing open,
        as ``get_state`` does)."""
        try:
            # The persistence layer's own backend read (every backend implements it); get_state adds the cache.
            record = self._persistence._get_record(provider)
        except Exception:
            return CircuitStateRecord(name=provider, state=CircuitState.CLOSED)
        return record if record is not None else CircuitStateRecord(name=provider, state=CircuitState.CLOSED)

    async def _acquire_probe(self, provider: str, opened_at: int) -> bool:
        won: bool = await asyncio.to_thread(self._persistence.try_acquire_half_open, provider, self._owner, opened_at)
        if won:
            self._probe_successes[provider] = 0
        return won

    async def _closed[Result](self, provider: str, work: Callable[[], Awaitable[Result]]) -> Result:
        try:
            result = await work()
        except Exception as error:
            if not self.counts(error):
                raise
            self._failures[provider] += 1
            if self._failures[provider] >= self._config.failure_threshold:
                failures, self._failures[provider] = self._failures[provider], 0
                opened_at = int(self._clock())
                await asyncio.to_thread(self._persistence.save_open, provider, failures, opened_at)
                await self._notify(provider, CircuitState.CLOSED, CircuitState.OPEN, opened_at)
            raise
        self._failures[provider] = 0
        return result

    async def _probe[Result](self, provider: str, work: Callable[[], Awaitable[Result]]) -> Result:
        self._probing.add(provider)
        try:
            result = await work()
        except Exception as error:
            if self.counts(error):
                opened_at = int(self._clock())
                await asyncio.to_thread(self._persistence.save_reopen, provider, opened_at)
                await self._notify(provider, CircuitState.HALF_OPEN, CircuitState.OPEN, opened_at)
            raise
        finally:
            self._probing.discard(provider)
        self._probe_successes[provider] += 1
        if self._probe_successes[provider] >= self._config.success_threshold:
            self._probe_successes[provider] = 0
            self._failures[provider] = 0
            await asyncio.to_thread(self._persistence.save_closed, provider)
            await self._notify(provider, CircuitState.HALF_OPEN, CircuitState.CLOSED, None)
        return result

    async def _notify(self, provider: str, from_state: Any, to_state: Any, opened_at: int | None) -> None:
        if self._on_transition is not None:
            await self._on_transition(Transition(provider, from_state, to_state, opened_at))
