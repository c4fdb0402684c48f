"""The fetch classifier: each answer or error an attempt ends with, and the outcome it makes."""

from __future__ import annotations

import asyncio

import pytest

from billhub.circuit import DEFAULT_CONFIG, CircuitOpen
from billhub.fetch_outcomes import (
    Alert,
    CircuitView,
    Deferred,
    DuplicateLink,
    Failed,
    Fetched,
    NeedsReauth,
    Outcome,
    classify,
)
from billhub.models import Bill
from billhub.providers import REGISTRY
from billhub.providers.errors import (
    ProviderAuthRejected,
    ProviderBusy,
    ProviderDataError,
    ProviderMisconfigured,
    ProviderUnavailable,
)

ADAPTER = REGISTRY["sparkgrid"]


class StubCircuits:
    """The provider circuits as classifying sees them: open for ``open_seconds`` (None: closed)."""

    def __init__(self, open_seconds: float | None) -> None:
        self.open_seconds = open_seconds
        self.asked: list[str] = []

    def counts(self, error: Exception) -> bool:
        return DEFAULT_CONFIG.counts_as_failure(error) and not isinstance(error, ProviderBusy)

    async def open_for(self, provider: str) -> float | None:
        self.asked.append(provider)
        return self.open_seconds


def outcome_of(answer: list[Bill] | Exception, *, final: bool = False, circuits: CircuitView | None = None) -> Outcome:
    return asyncio.run(classify(answer, ADAPTER, final=final, circuits=circuits))


def test_bills_are_fetched() -> None:
    assert outcome_of([]) == Fetched([])


@pytest.mark.parametrize(
    "wait", [CircuitOpen("sparkgrid", 42.0), ProviderBusy("no budget left", 42.0)], ids=["circuit", "busy"]
)
def test_an_open_circuit_or_a_spent_budget_defers_for_as_long_as_it_says(wait: Exception) -> None:
    assert outcome_of(wait, final=True) == Deferred(str(wait), 42.0)


def test_refused_credentials_need_reauth_and_count_towards_a_burst() -> None:
    assert outcome_of(ProviderAuthRejected("refused")) == NeedsReauth("refused", count_refusal=True)


def test_a_duplicate_link_needs_reauth_without_counting_as_a_refusal() -> None:
    assert outcome_of(DuplicateLink("linked twice")) == NeedsReauth("linked twice", count_refusal=False)


@pytest.mark.parametrize("final", [False, True])
def test_a_provider_error_fails_final_on_the_last_receive(final: bool) -> None:
    error = ProviderDataError("bad statement")
    assert outcome_of(error, final=final) == Failed("bad statement", "bad statement", final, error)


def test_a_last_receive_failing_while_the_circuit_is_open_is_deferred_until_it_may_be_probed() -> None:
    circuits = StubCircuits(open_seconds=30.0)
    outcome = outcome_of(ProviderUnavailable("down"), final=True, circuits=circuits)
    assert outcome == Deferred("down", 30.0)
    assert circuits.asked == ["sparkgrid"]


def test_a_last_receive_failing_with_the_circuit_closed_fails_for_good() -> None:
    error = ProviderUnavailable("down")
    assert outcome_of(error, final=True, circuits=StubCircuits(None)) == Failed("down", "down", True, error)


def test_an_earlier_receive_or_an_error_the_circuit_ignores_never_asks_the_circuit() -> None:
    circuits = StubCircuits(open_seconds=30.0)
    assert isinstance(outcome_of(ProviderUnavailable("down"), final=False, circuits=circuits), Failed)
    assert isinstance(outcome_of(ProviderDataError("bad"), final=True, circuits=circuits), Failed)
    assert circuits.asked == []


def test_a_misconfigured_provider_fails_with_an_alert() -> None:
    error = ProviderMisconfigured("client id unknown")
    outcome = outcome_of(error, final=True, circuits=StubCircuits(open_seconds=30.0))
    alert = Alert("misconfigured#sparkgrid", f"{ADAPTER.display_name} refuses the service", "client id unknown")
    assert outcome == Failed("client id unknown", "client id unknown", True, error, alert)


def test_an_unexpected_error_fails_unexpectedly_with_an_alert_that_names_only_its_type() -> None:
    error = KeyError("secret detail")
    outcome = outcome_of(error)
    alert = Alert("unexpected#KeyError", "Unexpected fetch error", "KeyError while fetching")
    assert outcome == Failed("Unexpected error while fetching.", "unexpected error", False, error, alert, True)
