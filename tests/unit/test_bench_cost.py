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


WEBHOOKS: dict[str, Any] = {
    "throughput": {
        "aws_requests_per_delivery": {
            "DynamoDB.PutItem": 1.0,
            "DynamoDB.Query": 1.0,
            "DynamoDB.UpdateItem": 1.0,
            "KMS.Decrypt": 0.05,
            "SQS.DeleteMessageBatch": 0.1,
        },
        "delivery_item_kb": {"median_kb": 0.97},
        "function": {
            "deliveries_per_invocation": 10.0,
            "cpu_seconds_per_delivery": 0.02,
            "duration_seconds_per_delivery": 0.08,
            "log_bytes_per_delivery": 500,
        },
    }
}
# 1 M accounts x (1 + 0.1 + 1 + 0.1 + 0.03) events, and 250,000 users x 2 refresh.completed
EVENTS = 1e6 * 2.23 + 250_000 * 2


def webhook_estimate(webhooks: dict[str, Any] = WEBHOOKS) -> dict[str, Any]:
    return cost.estimate({"refresh_throughput": {"scheduled": REFRESH}, "webhook_delivery": webhooks})


def line(estimate: dict[str, Any], service: str) -> float:
    (found,) = [x for x in estimate["lines"] if x["service"] == service]
    return float(found["monthly_usd"])


def test_without_the_webhook_benchmark_there_are_no_webhook_lines() -> None:
    estimate = cost.estimate({"refresh_throughput": {"scheduled": REFRESH}})
    assert "webhooks_usd_per_month" not in estimate
    assert not [x for x in estimate["lines"] if "webhook" in x["service"].lower()]


def test_the_webhook_lines_are_in_the_total_and_reported_apart() -> None:
    without = cost.estimate({"refresh_throughput": {"scheduled": REFRESH}})
    estimate = webhook_estimate()
    webhook_lines = estimate["lines"][len(without["lines"]) :]
    assert len(webhook_lines) == 7
    assert estimate["webhooks_usd_per_month"] == pytest.approx(sum(x["monthly_usd"] for x in webhook_lines), abs=0.05)
    assert estimate["total_usd_per_month"] == pytest.approx(
        without["total_usd_per_month"] + estimate["webhooks_usd_per_month"], abs=0.05
    )
    assert estimate["webhook_events_per_month"] == EVENTS
    assert "webhooks" in cost.report(estimate)


def test_every_event_is_billed_on_the_bus_and_the_queue_and_every_events_fan_out_queries() -> None:
    estimate = webhook_estimate()
    assert line(estimate, "EventBridge (webhook events)") == pytest.approx(EVENTS / 1e6 * 1.00, abs=0.01)
    # the rule's send per event, a receive and a delete per batch of 10
    assert line(estimate, "SQS (webhook deliveries)") == pytest.approx(
        (EVENTS + 2 * EVENTS / 10) * 0.40 / 1e6, abs=0.01
    )
    # a user without a webhook still costs the Query: every event, not only the 20% delivered
    assert line(estimate, "DynamoDB reads (webhooks)") == pytest.approx(EVENTS * 0.5 * 0.125 / 1e6, abs=0.01)


def test_deliveries_write_their_item_twice_and_a_changed_fetch_its_outbox_update() -> None:
    estimate = webhook_estimate()
    deliveries = EVENTS * cost.WEBHOOK_USER_SHARE
    # a delivery item of 1.5 KB (2 units), put and updated; the outbox's account update (1 unit: account
    # items of 1 KB in REFRESH) per bill.created, bill.updated and needs_reauth/restored
    units = deliveries * 2 * 2 + 1e6 * (1 + 0.1 + 0.03) * 1
    assert line(estimate, "DynamoDB writes (webhooks)") == pytest.approx(units * 0.625 / 1e6, abs=0.01)
    # a measured item of 2.3 KB costs 3 units a write
    larger = copy.deepcopy(WEBHOOKS)
    larger["throughput"]["delivery_item_kb"]["median_kb"] = 2.3
    more = line(webhook_estimate(larger), "DynamoDB writes (webhooks)") - line(estimate, "DynamoDB writes (webhooks)")
    assert more == pytest.approx(deliveries * 2 * 1 * 0.625 / 1e6, abs=0.01)


def test_the_delivery_function_is_billed_its_cpu_and_shared_waits_not_the_local_wall_time() -> None:
    estimate = webhook_estimate()
    cpu = 0.02 * 1769 / 512
    # per event its CPU and its Query's 5 ms shared by 10; per delivery its 2.05 other AWS requests (PutItem,
    # UpdateItem, KMS 0.05) and the receiver's answer, shared by 10
    seconds = EVENTS * (cpu + 0.005 / 10) + EVENTS * 0.2 * (2.05 * 0.005 + cost.RECEIVER_SECONDS) / 10
    expected = seconds * 0.5 * cost.LAMBDA_GB_SECOND_ARM + EVENTS / 10 * 0.20 / 1e6
    assert line(estimate, "Lambda: webhook delivery") == pytest.approx(expected, abs=0.005)
    slower = copy.deepcopy(WEBHOOKS)
    slower["throughput"]["function"]["duration_seconds_per_delivery"] = 0.8
    assert line(webhook_estimate(slower), "Lambda: webhook delivery") == line(estimate, "Lambda: webhook delivery")
