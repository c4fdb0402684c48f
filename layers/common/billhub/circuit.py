"""One circuit breaker per provider, shared by every fetcher through DynamoDB.

The state lives in Powertools' circuit breaker persistence (``CircuitBreakerDynamoDBPersistence``,
in the service's single table) and its tunables in ``CircuitBreakerConfig``. Powertools' decorator
only wraps synchronous functions, and a batch's fetches are coroutines on one event loop, so this
module ports its ``CircuitBreakerHandler`` (3.37) to an awaitable, step by step, each step naming the
method it mirrors: consecutive failures counted in memory and written only on a transition, every
transition's write unable to replace the work's own outcome, a streak dropped when another
environment closed the circuit, one half-open probe at a time, reads cached for a few seconds.
tests/unit/test_circuit_parity.py runs both on the same scenarios.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.circuit_breaker import CircuitBreakerConfig, CircuitState
from aws_lambda_powertools.utilities.circuit_breaker.persistence.base import CircuitBreakerPersistenceLayer
from aws_lambda_powertools.utilities.circuit_breaker.persistence.record import CircuitStateRecord

from billhub.providers.errors import ProviderBusy, ProviderUnavailable
from billhub.settings import FetchSettings

logger = Logger(child=True)

# The fetcher's settings own the thresholds it lets operators tune (the template's
# CircuitRecoverySeconds is checked against them); the rest is the circuit's own.
_FETCH_FIELDS = FetchSettings.model_fields
DEFAULT_CONFIG = CircuitBreakerConfig(
    failure_threshold=_FETCH_FIELDS["CIRCUIT_FAILURE_THRESHOLD"].default,
    recovery_timeout=_FETCH_FIELDS["CIRCUIT_RECOVERY_SECONDS"].default,
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
    """Powertools' ``CircuitBreakerHandler`` (3.37) step by step, around an awaitable. Its per-environment
    module-level counters are this instance's (one per execution environment); its per-thread prober id
    is this instance's, with ``_probing`` keeping the coroutines sharing it to one probe at a time."""

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
        self._failures: defaultdict[str, int] = defaultdict(int)  # _LOCAL_FAILURES
        self._probe_successes: defaultdict[str, int] = defaultdict(int)  # _LOCAL_SUCCESSES
        self._last_observed: dict[str, CircuitState] = {}  # _LAST_OBSERVED_STATE
        self._probing: set[str] = set()
        self._configured: set[str] = set()

    async def call[Result](self, provider: str, work: Callable[[], Awaitable[Result]]) -> Result:
        """Runs ``work`` unless the provider's circuit is open (``CircuitOpen``). Mirrors ``handle``."""
        self._configure(provider)
        record = await asyncio.to_thread(self._persistence.get_state, provider)
        now = int(self._clock())
        self._observe(provider, record.state)
        if record.state == CircuitState.CLOSED:
            return await self._call_closed(provider, work)
        if record.state == CircuitState.OPEN:
            opened_at = record.opened_at if record.opened_at is not None else now
            recovered = now >= opened_at + self._config.recovery_timeout
            # Recovery time over: try to become the one prober.
            if provider not in self._probing and recovered and await self._acquire_probe(provider, opened_at):
                await self._notify(provider, CircuitState.OPEN, CircuitState.HALF_OPEN, opened_at)
                return await self._call_probe(provider, work)
            raise self._open_response(provider, record, now)
        # HALF_OPEN: ours to continue, or a prober that vanished and whose lease lapsed.
        if provider not in self._probing:
            if record.half_open_owner == self._owner:
                return await self._call_probe(provider, work)
            lapsed = record.probe_lease_expiry is not None and now >= record.probe_lease_expiry
            if lapsed and await self._acquire_probe(provider, record.opened_at or 0):
                return await self._call_probe(provider, work)
        raise self._open_response(provider, record, now)

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

    def _observe(self, provider: str, state: CircuitState) -> None:
        """Mirrors ``handle``'s ``_LAST_OBSERVED_STATE`` bookkeeping: a circuit read closed after it was
        seen open or half-open was closed by another environment's recovery, so a streak of failures
        counted before it went open is stale and must not trip the circuit again at once."""
        previous = self._last_observed.get(provider)
        if state == CircuitState.CLOSED and previous is not None and previous != CircuitState.CLOSED:
            self._failures[provider] = 0
        self._last_observed[provider] = state

    async def _acquire_probe(self, provider: str, opened_at: int) -> bool:
        """``try_acquire_half_open``, then ``_reset_probe_successes`` when this environment won. Not
        wrapped by ``_safe_persist``, as in Powertools: a lost election is no write failure."""
        won: bool = await asyncio.to_thread(self._persistence.try_acquire_half_open, provider, self._owner, opened_at)
        if won:
            self._probe_successes[provider] = 0
        return won

    async def _call_closed[Result](self, provider: str, work: Callable[[], Awaitable[Result]]) -> Result:
        """Mirrors ``_call_closed``: consecutive failures counted here, the trip alone written."""
        try:
            result = await work()
        except Exception as error:
            if not self.counts(error):
                raise
            # Counted and reset before any await, so exactly one coroutine sees the threshold crossed.
            failures = self._failures[provider] + 1
            tripped = failures >= self._config.failure_threshold
            self._failures[provider] = 0 if tripped else failures
            if tripped:
                opened_at = int(self._clock())
                if await self._safe_persist(provider, self._persistence.save_open, provider, failures, opened_at):
                    await self._notify(provider, CircuitState.CLOSED, CircuitState.OPEN, opened_at)
                else:
                    # Where this departs from Powertools, which zeroes the count and announces the opening
                    # all the same: the circuit did not open, so nothing is announced and the streak is
                    # kept (on top of failures counted meanwhile), so the next failure tries again.
                    self._failures[provider] += failures
            raise
        self._failures[provider] = 0
        return result

    async def _call_probe[Result](self, provider: str, work: Callable[[], Awaitable[Result]]) -> Result:
        """Mirrors ``_call_probe``: a counted failure reopens the circuit, ``success_threshold``
        consecutive successes close it."""
        self._probing.add(provider)
        try:
            result = await work()
        except Exception as error:
            if not self.counts(error):
                raise
            opened_at = int(self._clock())
            await self._safe_persist(provider, self._persistence.save_reopen, provider, opened_at)
            self._probe_successes[provider] = 0
            await self._notify(provider, CircuitState.HALF_OPEN, CircuitState.OPEN, opened_at)
            raise
        finally:
            self._probing.discard(provider)
        successes = self._probe_successes[provider] + 1
        closed = successes >= self._config.success_threshold
        self._probe_successes[provider] = 0 if closed else successes
        if closed:
            self._failures[provider] = 0
            await self._safe_persist(provider, self._persistence.save_closed, provider)
            await self._notify(provider, CircuitState.HALF_OPEN, CircuitState.CLOSED, None)
        return result

    async def _safe_persist(self, provider: str, write: Callable[..., None], *arguments: Any) -> bool:
        """Mirrors ``_safe_persist``: a transition's write failing is logged and never replaces the
        work's own result or error (a ``ProviderUnavailable`` must not reach the caller as a DynamoDB
        error). Whether it was written, which Powertools does not tell."""
        try:
            await asyncio.to_thread(write, *arguments)
        except Exception:
            logger.warning(
                "Circuit '%s': persistence write (%s) failed; the transition may be delayed but the "
                "downstream result is preserved.",
                provider,
                getattr(write, "__name__", repr(write)),
                exc_info=True,
            )
            return False
        return True

    def _open_response(self, provider: str, record: CircuitStateRecord, now: int) -> CircuitOpen:
        """Mirrors ``_open_response`` without a callback: the open circuit's error, with when to come back."""
        opened_at = record.opened_at if record.opened_at is not None else now
        return CircuitOpen(provider, retry_after=max(opened_at + self._config.recovery_timeout - now, 1))

    async def _notify(
        self, provider: str, from_state: CircuitState, to_state: CircuitState, opened_at: int | None
    ) -> None:
        """Mirrors ``_notify``: the hook's failure is logged and never breaks the protected call."""
        if self._on_transition is None:
            return
        try:
            await self._on_transition(Transition(provider, from_state, to_state, opened_at))
        except Exception:
            logger.warning("on_transition hook for circuit '%s' raised; ignoring.", provider, exc_info=True)
