"""The cost model bills the fetcher's own CPU and AWS's waits, never the local wall time spent on moto."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bench import cost

REFRESH: dict[str, Any] = {
    "aws_requests_per_account": {"DynamoDB.UpdateItem": 3.0, "DynamoDB.GetItem": 2.0, "KMS.Decrypt": 0.1},
    "provider_requests_per_account": 2.5,
    "fetcher": {
        "duration_seconds_per_account": 0.4,
        "cpu_seconds_per_account": 0.02,
        "accounts_per_invocation": 10.0,
        "log_bytes_per_account": 800,
    },
}


def fetcher_line(refresh: dict[str, Any]) -> dict[str, Any]:
    estimate = cost.estimate({"refresh_throughput": {"scheduled": refresh}})
    (line,) = [line for line in estimate["lines"] if line["service"] == "Lambda: fetcher"]
    return dict(line)


def test_the_fetcher_is_billed_its_cpu_at_its_vcpu_share_plus_waits_shared_by_the_batch() -> None:
    estimate = cost.estimate({"refresh_throughput": {"scheduled": REFRESH}})
    # At 512 MB a function gets 512/1769 of a vCPU: the CPU measured here takes 1769/512 as long there
    cpu = 0.02 * 1769 / 512
    waits = (2.5 * cost.REAL_PROVIDER_LATENCY_SECONDS + 5.1 * cost.AWS_REQUEST_SECONDS) / 10
    assert estimate["fetcher_lambda"]["seconds_per_account"] == pytest.approx(cpu + waits, abs=1e-4)
    assert estimate["total_usd_per_month"] == pytest.approx(sum(x["monthly_usd"] for x in estimate["lines"]), abs=0.05)
    assert "total_usd" not in estimate


def test_the_local_wall_time_does_not_move_the_fetchers_bill() -> None:
    slower_moto = copy.deepcopy(REFRESH)
    slower_moto["fetcher"]["duration_seconds_per_account"] = 4.0
    more_cpu = copy.deepcopy(REFRESH)
    more_cpu["fetcher"]["cpu_seconds_per_account"] = 0.04
    assert fetcher_line(slower_moto)["monthly_usd"] == fetcher_line(REFRESH)["monthly_usd"]
    assert fetcher_line(more_cpu)["monthly_usd"] > fetcher_line(REFRESH)["monthly_usd"]
    # and the line says what it rests on
    assert "0.02 s measured here" in fetcher_line(REFRESH)["rests_on"]


def test_an_account_item_over_1_kb_bills_each_update_by_its_size() -> None:
    # Given account items of 1.3 KB (a claim and a save rewrite one)
    small = cost.estimate({"refresh_throughput": {"scheduled": REFRESH, "account_item_kb": {"median_kb": 0.8}}})
    large = cost.estimate({"refresh_throughput": {"scheduled": REFRESH, "account_item_kb": {"median_kb": 1.3}}})

    def writes(estimate: dict[str, Any]) -> float:
        (line,) = [x for x in estimate["lines"] if x["service"] == "DynamoDB writes (refresh)"]
        return float(line["monthly_usd"])

    # Then each of the 3 UpdateItems a fetch makes costs two write units, not one
    one_unit_a_fetch = cost.ACCOUNTS * cost.DAYS_PER_MONTH * cost.DYNAMODB_PER_MILLION_WRITE_UNITS / 1e6
    assert writes(large) - writes(small) == pytest.approx(3.0 * one_unit_a_fetch, abs=0.02)


def test_the_planners_time_is_billed_when_its_benchmark_ran() -> None:
    planner = {"lambda_memory_mb": 1024, "estimates": {"by_memory_mb": {"1024": {"worker_per_second": 147}}}}
    with_planner = cost.estimate({"refresh_throughput": {"scheduled": REFRESH}, "planner_scale": planner})
    (line,) = [x for x in with_planner["lines"] if x["service"] == "Lambda: planner"]
    fetches = cost.ACCOUNTS * cost.DAYS_PER_MONTH
    assert line["monthly_usd"] == pytest.approx(round(fetches / 147 * cost.LAMBDA_GB_SECOND_ARM, 2))


def test_counted_by_item_only_an_accounts_writes_cost_its_size() -> None:
    # Given 3 UpdateItems a fetch, counted by item: 2 of an account (1.3 KB), 1 of a rate counter
    by_item = {**REFRESH, "dynamodb_items_per_account": {"UpdateItem": {"ACCOUNT": 2.0, "RATE": 1.0}}}
    counted = cost.estimate({"refresh_throughput": {"scheduled": by_item, "account_item_kb": {"median_kb": 1.3}}})
    (line,) = [x for x in counted["lines"] if x["service"] == "DynamoDB writes (refresh)"]
    # Then a fetch writes 2 x 2 + 1 units in the table, and the claim's 2 in GSI1
    units = 2 * 2 + 1 + cost.GSI_WRITE_UNITS_PER_FETCH
    one_unit_a_fetch = cost.ACCOUNTS * cost.DAYS_PER_MONTH * cost.DYNAMODB_PER_MILLION_WRITE_UNITS / 1e6
    assert line["monthly_usd"] == pytest.approx(units * one_unit_a_fetch, abs=0.02)
    assert "RATE 1.0" in line["rests_on"]
