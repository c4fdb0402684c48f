"""The 10 M accounts model: each provider's daily capacity from its limit and measured requests per
account, and the first ceiling the service meets."""

from __future__ import annotations

from typing import Any

import pytest

from bench import scale_model


def provider(limit: int, requests: int) -> dict[str, Any]:
    return {"limit": limit, "requests": requests}


REFRESH: dict[str, Any] = {
    "accounts": 1000,
    "scheduled": {
        "aws_requests_per_account": {"DynamoDB.UpdateItem": 2.1, "DynamoDB.GetItem": 1.0, "SQS.SendMessageBatch": 0.2},
        "provider_requests_per_account": 2.5,
        "fetcher": {
            "cpu_seconds_per_account": 0.02,
            "duration_seconds_per_account": 0.4,
            "accounts_per_invocation": 10.0,
        },
        # 250 accounts each: NorthGas and FibreLink take 3 requests an account, the others 2.
        "providers": {
            "sparkgrid": provider(20, 500),
            "northgas": provider(10, 750),
            "clearwater": provider(25, 500),
            "fibrelink": provider(15, 750),
        },
    },
}
PLANNER: dict[str, Any] = {
    "estimates": {"capacity_accounts_per_second": 1176, "concurrent_workers": 8, "per_shard_per_second": 147}
}


def model() -> dict[str, Any]:
    return scale_model.estimate({"refresh_throughput": REFRESH, "planner_scale": PLANNER})


def test_each_providers_daily_capacity_and_the_limit_ten_million_accounts_need() -> None:
    # Given NorthGas at 10 requests a second and 3 requests an account
    northgas = model()["providers"]["northgas"]
    # Then it refreshes 288,000 accounts a day, and 2.5 M of them need 86.8 requests a second
    assert northgas["daily_capacity"] == 288_000
    assert northgas["limit_needed_per_second"] == pytest.approx(86.8)
    assert northgas["times_the_published_limit"] == pytest.approx(8.7)
    assert northgas["interval_days_at_published_limit"] == pytest.approx(8.7)
    assert model()["providers"]["clearwater"]["daily_capacity"] == 1_080_000


def test_the_first_ceiling_is_the_provider_with_the_smallest_daily_capacity() -> None:
    first = model()["first_ceiling"]
    assert first["provider"] == "northgas"
    # Split evenly, the service outgrows NorthGas at four times its daily capacity
    assert first["accounts_when_reached"] == 4 * 288_000


def test_the_planner_is_measured_against_its_modelled_capacity() -> None:
    planner = next(c for c in model()["components"] if c["component"] == "planner shard workers")
    assert planner["per_second"] == pytest.approx(115.7)
    assert planner["load_over_ceiling"] == pytest.approx(115.7 / 1176, abs=1e-3)


def test_more_aws_requests_per_fetch_bring_the_table_nearer_its_ceiling() -> None:
    more = {"DynamoDB.UpdateItem": 6.0}
    heavier = {**REFRESH, "scheduled": {**REFRESH["scheduled"], "aws_requests_per_account": more}}
    table = "table (DynamoDB requests)"

    def load(refresh: dict[str, Any]) -> float:
        components = scale_model.estimate({"refresh_throughput": refresh, "planner_scale": PLANNER})["components"]
        return float(next(c["load_over_ceiling"] for c in components if c["component"] == table))

    assert load(heavier) > load(REFRESH)
