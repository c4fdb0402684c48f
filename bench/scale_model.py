"""The whole service at 10 million accounts refreshed daily, on paper, from the unit costs the benchmarks
measured in the same run: each component's requests per second against AWS's quotas, the providers'
limits against the accounts they would hold, and which ceiling comes first.

Quotas are AWS's documented defaults (us-east-1; most can be raised through Service Quotas): inputs, not
measurements. Everything else comes from ``results.json`` or ``template.yaml``.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from bench.cost import fetcher_memory_mb, fetcher_seconds_on_aws
from localcloud.runtime import LAYER_DIR

if str(LAYER_DIR) not in sys.path:
    sys.path.insert(0, str(LAYER_DIR))

from billhub import keys

ACCOUNTS = 10_000_000
SECONDS_PER_DAY = 86_400
# Documented default quotas.
LAMBDA_CONCURRENT_EXECUTIONS = 1_000  # per account and region
DYNAMODB_PARTITION_WRITE_UNITS = 1_000  # per partition key value, per second
DYNAMODB_TABLE_WRITE_UNITS = 40_000  # on-demand table's initial throughput ceiling
SQS_BATCH_REQUESTS_PER_SECOND = 3_000  # standard queues: "nearly unlimited"; a conservative figure
# A claim rewrites the account's GSI1 entry: a delete and a put in the index, a unit each.
GSI_WRITES_PER_CLAIM = 2
# The budget's writes per provider request with leased slots, counted against moto: 3 writes for 25 slots
# at once (tests/integration/test_fetch_safeguards.py asserts it), 0.135 to 0.149 for 24 accounts of three
# pages each in one environment (issue 17's measurement); rounded up.
BUDGET_WRITES_PER_PROVIDER_REQUEST = 0.15


def estimate(benchmarks: dict[str, Any]) -> dict[str, Any]:
    refresh = benchmarks["refresh_throughput"]
    scheduled = refresh["scheduled"]
    planner = benchmarks["planner_scale"]["estimates"]
    due_per_second = ACCOUNTS / SECONDS_PER_DAY
    providers = _providers(refresh)
    accounts_per_provider = ACCOUNTS / len(providers)
    fetcher_mb = fetcher_memory_mb()
    fetcher_seconds = fetcher_seconds_on_aws(scheduled, fetcher_mb)["seconds_per_account"]
    requests = scheduled["aws_requests_per_account"]
    dynamodb_requests = sum(n for op, n in requests.items() if op.startswith("DynamoDB."))
    lease_writes = BUDGET_WRITES_PER_PROVIDER_REQUEST
    partitions = len(providers) * keys.REFRESH_SHARDS
    provider_rate = max(p["limit"] for p in providers.values())
    components = [
        _component(
            "planner shard workers",
            due_per_second,
            planner["capacity_accounts_per_second"],
            f"{planner['concurrent_workers']} workers x {planner['per_shard_per_second']} accounts/s "
            "(planner benchmark's model)",
        ),
        _component(
            "fetch queues (SendMessageBatch)",
            due_per_second * requests.get("SQS.SendMessageBatch", 0.1),
            SQS_BATCH_REQUESTS_PER_SECOND,
            "SQS standard queues' API rate (nearly unlimited; a conservative figure)",
        ),
        _component(
            "fetcher concurrent executions",
            due_per_second * fetcher_seconds,
            LAMBDA_CONCURRENT_EXECUTIONS,
            f"{fetcher_seconds:.3f} Lambda-seconds per account (cost model) x the due rate; the region's default "
            "concurrency quota, shared with every other function",
        ),
        _component(
            "table (DynamoDB requests)",
            due_per_second * dynamodb_requests,
            DYNAMODB_TABLE_WRITE_UNITS,
            f"{dynamodb_requests:.2f} requests per fetch, measured; an on-demand table's initial ceiling",
        ),
        _component(
            "busiest GSI1 partition (a refresh shard)",
            due_per_second * GSI_WRITES_PER_CLAIM / partitions,
            DYNAMODB_PARTITION_WRITE_UNITS,
            f"claims spread over {partitions} refresh partitions (provider x shard)",
        ),
        _component(
            "busiest budget counter (one item per provider per second)",
            provider_rate * lease_writes,
            DYNAMODB_PARTITION_WRITE_UNITS,
            f"{lease_writes} lease writes per provider request at the highest limit ({provider_rate}/s)",
        ),
    ]
    for p in providers.values():
        p["accounts_at_10m"] = round(accounts_per_provider)
        p["limit_needed_per_second"] = round(accounts_per_provider * p["requests_per_account"] / SECONDS_PER_DAY, 1)
        p["times_the_published_limit"] = round(p["limit_needed_per_second"] / p["limit"], 1)
        p["interval_days_at_published_limit"] = round(accounts_per_provider / p["daily_capacity"], 1)
    first_provider = min(providers, key=lambda name: providers[name]["daily_capacity"])
    # With accounts split evenly, the whole service outgrows its first provider at this many accounts.
    service_ceiling = providers[first_provider]["daily_capacity"] * len(providers)
    first_component = max(components, key=lambda c: c["load_over_ceiling"])
    return {
        "accounts": ACCOUNTS,
        "due_per_second": round(due_per_second, 1),
        "components": components,
        "providers": providers,
        "first_ceiling": {
            "provider": first_provider,
            "accounts_when_reached": service_ceiling,
            "component_nearest_its_ceiling": first_component["component"],
            "its_load_over_ceiling": first_component["load_over_ceiling"],
        },
    }


def _component(name: str, load: float, ceiling: float, rests_on: str) -> dict[str, Any]:
    return {
        "component": name,
        "per_second": round(load, 1),
        "ceiling_per_second": ceiling,
        "load_over_ceiling": round(load / ceiling, 3),
        "rests_on": rests_on,
    }


def _providers(refresh: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each provider's measured requests per account (the scheduled refresh's) and the accounts a day its
    published limit can refresh."""
    scheduled = refresh["scheduled"]
    per_provider_accounts = refresh["accounts"] / len(scheduled["providers"])
    figures = {}
    for name, p in scheduled["providers"].items():
        per_account = p["requests"] / per_provider_accounts
        figures[name] = {
            "limit": p["limit"],
            "requests_per_account": round(per_account, 2),
            "daily_capacity": math.floor(p["limit"] * SECONDS_PER_DAY / per_account),
        }
    return figures


def report(model: dict[str, Any]) -> str:
    rows = [
        "| component | needs /s | ceiling /s | share of ceiling | rests on |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    rows += [
        f"| {c['component']} | {c['per_second']:,} | {c['ceiling_per_second']:,} | {c['load_over_ceiling']:.1%} "
        f"| {c['rests_on']} |"
        for c in model["components"]
    ]
    provider_rows = [
        "| provider | published limit /s | requests per account | accounts a day at its limit | accounts at 10 M "
        "| limit needed /s | x published | interval at its limit (days) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    provider_rows += [
        f"| {name} | {p['limit']} | {p['requests_per_account']} | {p['daily_capacity']:,} | {p['accounts_at_10m']:,} "
        f"| {p['limit_needed_per_second']} | {p['times_the_published_limit']} "
        f"| {p['interval_days_at_published_limit']} |"
        for name, p in model["providers"].items()
    ]
    first = model["first_ceiling"]
    return "\n".join(
        [
            f"{model['accounts']:,} accounts refreshed daily, split evenly over the providers: "
            f"{model['due_per_second']} accounts fall due a second.",
            "",
            *rows,
            "",
            *provider_rows,
            "",
            f"- First ceiling: **{first['provider']}'s published limit**, reached at about "
            f"{first['accounts_when_reached']:,} accounts in all (split evenly). Of AWS's, the nearest is the "
            f"{first['component_nearest_its_ceiling']} at {first['its_load_over_ceiling']:.1%} of its ceiling.",
            "- Past a provider's daily capacity the planner admits each hour only what that provider can serve "
            "(`planning.py`), the longest due first: every account of that provider is refreshed in turn, at the "
            "interval in the last column, and the fetch queues never hold more than an hour's work.",
            "",
            "Method: `bench/scale_model.py`, from the scheduled refresh's measured requests per account and the "
            "planner benchmark's capacity model; quotas are AWS's documented defaults.",
        ]
    )
