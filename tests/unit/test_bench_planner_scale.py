"""The planner benchmark's capacity model, per (provider, shard) unit: only the provider units' workers
plan, each bound by its CPU, its waits shared or its admission leases one after another, and each below
its (provider, shard) partition's write ceiling."""

from __future__ import annotations

from typing import Any

import pytest

from bench import planner_scale


def measured(cpu_ms: float = 2.0, leases: float = 0.1, provider_units: int = 32) -> dict[str, Any]:
    return {
        "client_cpu_ms_per_account": cpu_ms,
        "claim_writes_per_account": 1.0,
        "admission_writes_per_account": leases,
        "lambda_timeout_seconds": 300,
        "planning_share": 0.75,
        "worker_concurrency": 8,
        "lambda_memory_mb": 1769,
        "provider_units": provider_units,
        "max_concurrent_workers": 8,
        "hourly_caps": {"sparkgrid": 19_200, "northgas": 9_600, "clearwater": 36_000, "fibrelink": 14_400},
    }


def test_the_capacity_is_the_concurrent_provider_workers_at_one_workers_rate() -> None:
    estimates = planner_scale._estimates(measured())
    # 2 ms of CPU an account binds before the waits shared over 8 batches ((2 + 5 + 1.5) / 8).
    assert estimates["by_memory_mb"]["1769"]["worker_per_second"] == 500
    assert estimates["concurrent_workers"] == 8
    assert estimates["capacity_accounts_per_second"] == 8 * 500


def test_a_worker_is_held_below_its_provider_shards_partition() -> None:
    estimates = planner_scale._estimates(measured(cpu_ms=1.0))
    assert estimates["by_memory_mb"]["1769"]["worker_per_second"] == 1000
    assert estimates["per_shard_per_second"] == 500
    assert estimates["capacity_accounts_per_second"] == 4000


def test_leases_made_one_after_another_can_bind_a_worker() -> None:
    # One lease an account (batches of one), 5 ms each, made by the worker's loop in turn.
    estimates = planner_scale._estimates(measured(cpu_ms=1.0, leases=1.0))
    assert estimates["by_memory_mb"]["1769"]["worker_per_second"] == 200
    assert estimates["admission_counter_ceiling_per_provider"] == 1000


def test_fewer_provider_units_than_the_concurrency_run_fewer_workers() -> None:
    estimates = planner_scale._estimates(measured(provider_units=4))
    assert estimates["concurrent_workers"] == 4


def test_the_providers_admitted_rate_is_their_hourly_caps_over_an_hour() -> None:
    assert planner_scale._estimates(measured())["admitted_per_second_all_providers"] == pytest.approx(22.0)


def test_units_are_named_by_provider_with_their_shards_as_ranges() -> None:
    units = ["northgas#0", "northgas#1", "northgas#2", "northgas#5", "legacy#0", "legacy#1"]
    assert planner_scale._units_text(units) == "northgas#0-2,5, legacy#0-1"
