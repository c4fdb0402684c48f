"""The async circuit against Powertools' own: each scenario runs through Powertools' synchronous
``CircuitBreakerHandler`` and through ``ProviderCircuits``, each on an in-memory store, and both must
answer the same calls the same way and leave the same state stored."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import pytest
from aws_lambda_powertools.utilities.circuit_breaker import (
    CircuitBreakerConfig,
    CircuitBreakerOpenError,
    CircuitState,
    CircuitTransition,
)
from aws_lambda_powertools.utilities.circuit_breaker import base as powertools_base
from aws_lambda_powertools.utilities.circuit_breaker.base import CircuitBreakerHandler
from aws_lambda_powertools.utilities.circuit_breaker.persistence.base import (
    CircuitBreakerExistingLockError,
    CircuitBreakerPersistenceLayer,
)
from aws_lambda_powertools.utilities.circuit_breaker.persistence.record import CircuitStateRecord
from botocore.exceptions import ClientError

from billhub.circuit import DEFAULT_CONFIG, CircuitOpen, ProviderCircuits, Transition
from billhub.providers.errors import ProviderUnavailable
from billhub.settings import FetchSettings
from localcloud.template import load_template

PROVIDER = "clearwater"
CONFIG = CircuitBreakerConfig(
    failure_threshold=3,
    recovery_timeout=30,
    success_threshold=2,
    handled_exceptions=(ProviderUnavailable,),
    # No read cache: every call reads the store, so another environment's writes show at once.
    local_cache_max_age=0,
)


class Clock:
    """Whole seconds, moved by hand."""

    def __init__(self) -> None:
        self.now = int(time.time())

    def __call__(self) -> int:
        return self.now


class MemoryStore(CircuitBreakerPersistenceLayer):
    """Powertools' persistence interface over a dict, with DynamoDB's semantics (the conditional probe
    election, updates clearing the probe lock) and a switch making every write fail as DynamoDB can."""

    def __init__(self, table: dict[str, CircuitStateRecord], clock: Clock) -> None:
        super().__init__()
        self.table = table
        self.clock = clock
        self.writes_fail = False

    def _get_record(self, name: str) -> CircuitStateRecord | None:
        return self.table.get(name)

    def _put_record(
        self, record: CircuitStateRecord, condition: str | None = None, expected_opened_at: int | None = None
    ) -> None:
        self._fail_if_down("PutItem")
        if condition == "half_open":
            stored = self.table.get(record.name)
            open_unclaimed = (
                stored is not None
                and stored.state == CircuitState.OPEN
                and stored.half_open_owner is None
                and (expected_opened_at is None or stored.opened_at == expected_opened_at)
            )
            lease_lapsed = (
                stored is not None
                and stored.state == CircuitState.HALF_OPEN
                and stored.probe_lease_expiry is not None
                and stored.probe_lease_expiry <= self.clock()
            )
            if not (open_unclaimed or lease_lapsed):
                raise CircuitBreakerExistingLockError
        self.table[record.name] = record

    def _update_record(self, record: CircuitStateRecord) -> None:
        self._fail_if_down("UpdateItem")
        self.table[record.name] = record  # the owner and lease cleared, as the DynamoDB update removes them

    def _fail_if_down(self, operation: str) -> None:
        if self.writes_fail:
            error = {"Error": {"Code": "InternalServerError", "Message": "DynamoDB is failing"}}
            raise ClientError(error, operation)  # type: ignore[arg-type]


Work = Callable[[], str]


def healthy() -> str:
    return "bills"


def failing() -> str:
    raise ProviderUnavailable("ClearWater is unavailable (HTTP 503).")


class Environment(Protocol):
    """One execution environment's circuit: what a call came to, and the transitions it announced."""

    transitions: list[tuple[str, str]]

    def call(self, work: Work) -> str: ...


class PowertoolsEnvironment:
    def __init__(self, store: MemoryStore, on_transition: Callable[[Any], None] | None = None) -> None:
        self.store = store
        self.transitions: list[tuple[str, str]] = []
        self.on_transition = on_transition

    def _announce(self, transition: CircuitTransition) -> None:
        self.transitions.append((str(transition.from_state), str(transition.to_state)))
        if self.on_transition is not None:
            self.on_transition(transition)

    def call(self, work: Work) -> str:
        handler = CircuitBreakerHandler(
            function=work, name=PROVIDER, config=CONFIG, persistence_store=self.store, on_transition=self._announce
        )
        try:
            return str(handler.handle())
        except CircuitBreakerOpenError:
            return "open"
        except Exception as error:
            return type(error).__name__


class BillhubEnvironment:
    def __init__(self, store: MemoryStore, on_transition: Callable[[Any], None] | None = None) -> None:
        self.transitions: list[tuple[str, str]] = []
        self.on_transition = on_transition
        self.circuits = ProviderCircuits(store, CONFIG, on_transition=self._announce, clock=store.clock)

    async def _announce(self, transition: Transition) -> None:
        self.transitions.append((str(transition.from_state), str(transition.to_state)))
        if self.on_transition is not None:
            self.on_transition(transition)

    def call(self, work: Work) -> str:
        async def awaitable() -> str:
            return work()

        try:
            return asyncio.run(self.circuits.call(PROVIDER, awaitable))
        except CircuitOpen:
            return "open"
        except Exception as error:
            return type(error).__name__


EnvironmentKind = Callable[..., Environment]


@pytest.fixture(autouse=True)
def powertools_environment_is_fresh(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    """Powertools keeps an environment's counters at module level and reads the wall clock: each test
    starts a fresh environment on the test's clock."""
    monkeypatch.setattr(powertools_base, "_LOCAL_FAILURES", {})
    monkeypatch.setattr(powertools_base, "_LOCAL_SUCCESSES", {})
    monkeypatch.setattr(powertools_base, "_LAST_OBSERVED_STATE", {})
    monkeypatch.setattr(CircuitBreakerHandler, "_now", staticmethod(clock))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def table() -> dict[str, CircuitStateRecord]:
    return {}


@pytest.fixture
def store(table: dict[str, CircuitStateRecord], clock: Clock) -> MemoryStore:
    """This environment's view of the circuits' table."""
    return MemoryStore(table, clock)


@pytest.fixture
def elsewhere(table: dict[str, CircuitStateRecord], clock: Clock) -> MemoryStore:
    """Another execution environment's view of the same table."""
    return MemoryStore(table, clock)


both = pytest.mark.parametrize("kind", [PowertoolsEnvironment, BillhubEnvironment], ids=["powertools", "billhub"])


def stored(table: dict[str, CircuitStateRecord]) -> str:
    record = table.get(PROVIDER)
    return str(record.state) if record is not None else "CLOSED"


def run(environment: Environment, table: dict[str, CircuitStateRecord], *works: Work) -> list[tuple[str, str]]:
    """Each call's outcome and the state stored after it."""
    return [(environment.call(work), stored(table)) for work in works]


# ------------------------------------------------------------------ a store write failing
@both
def test_a_store_failing_as_the_circuit_trips_leaves_the_provider_error_to_the_caller(
    kind: EnvironmentKind,
    store: MemoryStore,
    table: dict[str, CircuitStateRecord],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given an environment two failures short of tripping
    environment = kind(store)
    assert run(environment, table, failing, failing) == [("ProviderUnavailable", "CLOSED")] * 2
    # When the failure that trips it meets DynamoDB failing
    store.writes_fail = True
    with caplog.at_level(logging.WARNING):
        outcome = run(environment, table, failing)
    # Then the caller gets the provider's error, not DynamoDB's, and the write's failure is logged
    assert outcome == [("ProviderUnavailable", "CLOSED")]
    assert "persistence write (save_open) failed" in caplog.text


@both
def test_a_store_failing_as_a_probe_ends_keeps_the_probes_outcome(
    kind: EnvironmentKind, store: MemoryStore, table: dict[str, CircuitStateRecord], clock: Clock
) -> None:
    # Given a circuit tripped, its recovery time passed, and this environment elected its prober
    environment = kind(store)
    run(environment, table, failing, failing, failing)
    clock.now += CONFIG.recovery_timeout
    assert run(environment, table, healthy) == [("bills", "HALF_OPEN")]
    # When DynamoDB fails as a probe fails, and as the probes that close the circuit succeed
    store.writes_fail = True
    reopening = run(environment, table, failing)
    closing = run(environment, table, healthy, healthy)
    # Then the callers get the probes' own outcomes; the store keeps the probe this environment holds
    assert reopening == [("ProviderUnavailable", "HALF_OPEN")]
    assert closing == [("bills", "HALF_OPEN"), ("bills", "HALF_OPEN")]


@both
def test_a_failing_transition_hook_leaves_the_provider_error_to_the_caller(
    kind: EnvironmentKind, store: MemoryStore, table: dict[str, CircuitStateRecord]
) -> None:
    # Given a transition hook that raises (its alert could not be sent)
    def broken_hook(transition: Any) -> None:
        raise RuntimeError("SNS is failing")

    environment = kind(store, broken_hook)
    # When the failure that trips the circuit announces it
    outcomes = run(environment, table, failing, failing, failing)
    # Then the caller still gets the provider's error, and the circuit is open
    assert outcomes[-1] == ("ProviderUnavailable", "OPEN")


def test_a_trip_the_store_failed_to_keep_is_tried_again_at_the_next_failure(
    store: MemoryStore, table: dict[str, CircuitStateRecord]
) -> None:
    # Where billhub departs from Powertools, which zeroes its count (and announces the opening) even
    # when the write fails: a full streak more is then needed, and operators hear of an opening that
    # never happened.
    # Given an environment whose trip met DynamoDB failing
    environment = BillhubEnvironment(store)
    run(environment, table, failing, failing)
    store.writes_fail = True
    assert run(environment, table, failing) == [("ProviderUnavailable", "CLOSED")]
    # When DynamoDB answers again and the provider fails once more
    store.writes_fail = False
    outcome = run(environment, table, failing)
    # Then that failure opens the circuit, announced once, when it was stored
    assert outcome == [("ProviderUnavailable", "OPEN")]
    assert environment.transitions == [("CLOSED", "OPEN")]


# ------------------------------------------------------------------ another environment
@both
def test_another_environment_closing_the_circuit_restarts_the_failure_count(
    kind: EnvironmentKind, store: MemoryStore, elsewhere: MemoryStore, table: dict[str, CircuitStateRecord]
) -> None:
    # Given an environment one failure short of tripping
    environment = kind(store)
    run(environment, table, failing, failing)
    # and another environment tripping the circuit, seen open here, then probing and closing it
    elsewhere.configure(CONFIG, PROVIDER)
    elsewhere.save_open(PROVIDER, CONFIG.failure_threshold, store.clock())
    assert run(environment, table, healthy) == [("open", "OPEN")]
    assert elsewhere.try_acquire_half_open(PROVIDER, "elsewhere", store.clock())
    elsewhere.save_closed(PROVIDER)
    # When the provider fails here again
    outcomes = run(environment, table, failing, failing, failing)
    # Then the count started again: a whole streak of failures trips the circuit, not one
    assert outcomes == [("ProviderUnavailable", "CLOSED")] * 2 + [("ProviderUnavailable", "OPEN")]


# ------------------------------------------------------------------ probing
@both
def test_probes_succeeding_success_threshold_times_close_the_circuit(
    kind: EnvironmentKind, store: MemoryStore, table: dict[str, CircuitStateRecord], clock: Clock
) -> None:
    # Given a tripped circuit
    environment = kind(store)
    tripping = run(environment, table, failing, failing, failing)
    assert tripping[-1] == ("ProviderUnavailable", "OPEN")
    # When calls come before and after its recovery time, the provider healthy again
    before = run(environment, table, healthy)
    clock.now += CONFIG.recovery_timeout
    probes = run(environment, table, healthy, healthy)
    after = run(environment, table, failing, failing)
    # Then nothing is sent while it is open, the first probe half-opens it, the second closes it, and
    # the failure count starts again from nothing
    assert before == [("open", "OPEN")]
    assert probes == [("bills", "HALF_OPEN"), ("bills", "CLOSED")]
    assert after == [("ProviderUnavailable", "CLOSED")] * 2
    assert environment.transitions == [("CLOSED", "OPEN"), ("OPEN", "HALF_OPEN"), ("HALF_OPEN", "CLOSED")]


@both
def test_a_probe_failing_reopens_the_circuit_for_a_whole_recovery_time(
    kind: EnvironmentKind, store: MemoryStore, table: dict[str, CircuitStateRecord], clock: Clock
) -> None:
    # Given a tripped circuit past its recovery time
    environment = kind(store)
    run(environment, table, failing, failing, failing)
    clock.now += CONFIG.recovery_timeout
    # When the probe fails, and calls come within and after the next recovery time
    probe = run(environment, table, healthy, failing)
    clock.now += CONFIG.recovery_timeout - 1
    within = run(environment, table, healthy)
    clock.now += 1
    after = run(environment, table, healthy)
    # Then the failure reopens it from that moment: nothing is sent until a recovery time later
    assert probe == [("bills", "HALF_OPEN"), ("ProviderUnavailable", "OPEN")]
    assert table[PROVIDER].opened_at == clock.now - CONFIG.recovery_timeout
    assert within == [("open", "OPEN")]
    assert after == [("bills", "HALF_OPEN")]
    assert environment.transitions == [
        ("CLOSED", "OPEN"),
        ("OPEN", "HALF_OPEN"),
        ("HALF_OPEN", "OPEN"),
        ("OPEN", "HALF_OPEN"),
    ]


# ------------------------------------------------------------------ defaults
def test_the_circuits_defaults_are_the_fetchers_settings_and_the_templates() -> None:
    # Given the fetcher's settings, which own the circuit's tunable defaults
    fields = FetchSettings.model_fields
    # When the circuit's defaults and the template's parameter are read
    parameter = load_template()["Parameters"]["CircuitRecoverySeconds"]
    # Then they are the same values
    assert DEFAULT_CONFIG.failure_threshold == fields["CIRCUIT_FAILURE_THRESHOLD"].default
    assert DEFAULT_CONFIG.recovery_timeout == fields["CIRCUIT_RECOVERY_SECONDS"].default
    assert parameter["Default"] == fields["CIRCUIT_RECOVERY_SECONDS"].default
