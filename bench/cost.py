"""The monthly AWS bill per 1 million linked accounts at daily refresh, from the request counts the
benchmarks measured in the same run and AWS's list prices (us-east-1, arm64, on-demand).

Prices are inputs, not measurements: check them against AWS's pricing pages before budgeting. Every
other figure comes from `results.json` (named in the table's "rests on" column) or is an assumption
written down here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bench.planner_scale import ASSUMED_UPDATE_ITEM_MS, FULL_VCPU_MB
from localcloud.template import load_template

# List prices, USD (us-east-1, as published in 2025-2026).
LAMBDA_GB_SECOND_ARM = 0.0000133334
LAMBDA_PER_MILLION_REQUESTS = 0.20
HTTP_API_PER_MILLION = 1.00
DYNAMODB_PER_MILLION_WRITE_UNITS = 0.625
DYNAMODB_PER_MILLION_READ_UNITS = 0.125
DYNAMODB_GB_MONTH = 0.25
SQS_PER_MILLION = 0.40
KMS_PER_10K_REQUESTS = 0.03
KMS_KEY_MONTH = 1.00
SECRETS_PER_10K_CALLS = 0.05
LOGS_PER_GB_INGESTED = 0.50
SNS_PER_MILLION = 0.50
EVENTBRIDGE_PER_MILLION_EVENTS = 1.00  # custom events put on a bus (each 64 KB chunk of an entry)
# SnapStart (Lambda pricing, "SnapStart Pricing"): a snapshot cached per GB-second of the version's memory.
SNAPSTART_CACHE_GB_SECOND = 0.0000015046

# Assumptions about the population and its use of the app.
ACCOUNTS = 1_000_000
ACCOUNTS_PER_USER = 4  # electricity, water, gas, internet
DAYS_PER_MONTH = 30.4
SECONDS_PER_MONTH = DAYS_PER_MONTH * 86400
# A person opens the app about daily: the bills page each time, insights weekly, accounts now and then.
READS_PER_USER_PER_MONTH = {"GET /bills": 30, "GET /insights": 4, "GET /accounts": 4}
# Read handlers run ~100 ms at 512 MB on AWS (the local figure, through moto, is an upper bound).
READ_HANDLER_SECONDS = 0.1
FUNCTION_GB = 0.5
# A provider across the internet answers in ~300 ms, not the sandbox's 40-80 ms; the fetcher's Lambda
# time grows with it (its requests are sequential per account, concurrent across the batch).
REAL_PROVIDER_LATENCY_SECONDS = 0.3
# An AWS request from Lambda in its region (DynamoDB, KMS, SQS) answers in a few ms: the planner
# benchmark's assumed UpdateItem latency, for every AWS request the fetcher makes.
AWS_REQUEST_SECONDS = ASSUMED_UPDATE_ITEM_MS / 1000
# DynamoDB units per request: items are under 1 KB (writes) / 4 KB (reads) except an account's bills,
# read as one Query when a fetch compares what changed (24 bills of ~0.8 KB: 5 units).
WRITE_UNITS = {"PutItem": 1, "UpdateItem": 1, "DeleteItem": 1, "TransactWriteItems": 4, "BatchWriteItem": 25}
# A claim changes the account's GSI1 key: DynamoDB writes the index too, a delete and a put (a unit each,
# its entries being small). One claim per scheduled fetch.
GSI_WRITE_UNITS_PER_FETCH = 2
READ_UNITS = {"GetItem": 1, "Query": 5, "BatchGetItem": 10}
# 24 months of bills per account (~0.8 KB each, twice: the table and the all-attribute LSI) plus the account.
STORED_GB = ACCOUNTS * (24 * 0.8 * 2 + 2) / 1024 / 1024

# Webhooks. The events an account makes a month: its monthly bill (bill.created), a provider's revision
# of one bill in ten (bill.updated), a reminder before each due date (bill.due_soon) and one bill in ten
# paid late (bill.overdue), and now and then its credentials refused or repaired (needs_reauth/restored).
EVENTS_PER_ACCOUNT_PER_MONTH = {
    "bill.created": 1.0,
    "bill.updated": 0.1,
    "bill.due_soon": 1.0,
    "bill.overdue": 0.1,
    "account.needs_reauth/restored": 0.03,
}
# Of them, the ones a fetch's change makes (saved with the account's outbox, which the fetch then empties).
OUTBOX_EVENTS = ("bill.created", "bill.updated", "account.needs_reauth/restored")
# Plus refresh.completed for each refresh a user asks for: about two a month.
MANUAL_REFRESHES_PER_USER_PER_MONTH = 2
# The share of users with a webhook (one each); the others' events still go through the bus, the queue
# and the delivery function, whose fan-out Queries their (no) webhooks.
WEBHOOK_USER_SHARE = 0.2
# A delivery item holds the event (a bill as GET /bills shows it, its line items): ~1.5 KB, 2 write
# units; the benchmark's items, of a bill with two line items, are the floor of that (used if larger).
DELIVERY_ITEM_KB = 1.5
# The fan-out's Query of the user's webhooks: one small item or none, eventually consistent.
WEBHOOK_QUERY_READ_UNITS = 0.5
# A real receiver across the internet answers in ~300 ms (the benchmark's answers at once, on loopback);
# a batch's attempts run at once, so the wait is shared by the deliveries of an invocation.
RECEIVER_SECONDS = 0.3


@dataclass(frozen=True)
class Line:
    service: str
    monthly_usd: float
    rests_on: str


def estimate(benchmarks: dict[str, Any]) -> dict[str, Any]:
    """Cost lines from the refresh benchmark's per-account request counts (the rest are assumptions)."""
    # The daily refresh is the scheduled one (a manual refresh writes its job too).
    refresh = benchmarks["refresh_throughput"]["scheduled"]
    per_account: dict[str, float] = refresh["aws_requests_per_account"]
    # An UpdateItem rewrites an account (the claim, the save): billed by that item's size, by the 1 KB.
    account_kb = benchmarks["refresh_throughput"].get("account_item_kb", {}).get("median_kb", 1.0)
    account_units = max(1, math.ceil(account_kb))
    write_units_per_request = {**WRITE_UNITS, "UpdateItem": account_units}
    # Counted by item where the run did: only an account's writes cost its size, a lease's one unit.
    by_item = refresh.get("dynamodb_items_per_account", {})
    fetches = ACCOUNTS * DAYS_PER_MONTH
    keys, snapshot_gb = _template_fixed_costs()
    users = ACCOUNTS / ACCOUNTS_PER_USER
    reads = users * sum(READS_PER_USER_PER_MONTH.values())

    def per_fetch(service: str) -> dict[str, float]:
        return {name.split(".")[-1]: count for name, count in per_account.items() if name.startswith(f"{service}.")}

    dynamodb = per_fetch("DynamoDB")
    if by_item:
        table_write_units = sum(
            WRITE_UNITS[op] * n for op, n in dynamodb.items() if op in WRITE_UNITS and op not in by_item
        ) + sum(
            (account_units if kind == "ACCOUNT" else WRITE_UNITS[op]) * n
            for op, kinds in by_item.items()
            if op in WRITE_UNITS
            for kind, n in kinds.items()
        )
    else:
        table_write_units = sum(write_units_per_request[op] * n for op, n in dynamodb.items() if op in WRITE_UNITS)
    write_units = table_write_units + GSI_WRITE_UNITS_PER_FETCH
    read_units = sum(READ_UNITS.get(op, 1) * n for op, n in dynamodb.items() if op in READ_UNITS)
    provider_requests = refresh["provider_requests_per_account"]
    fetcher = refresh["fetcher"]
    fetcher_mb = fetcher_memory_mb()
    lambda_time = fetcher_seconds_on_aws(refresh, fetcher_mb)
    lines = [
        Line(
            "Lambda: fetcher",
            fetches * lambda_time["seconds_per_account"] * fetcher_mb / 1024 * LAMBDA_GB_SECOND_ARM
            + fetches / lambda_time["accounts_per_invocation"] * LAMBDA_PER_MILLION_REQUESTS / 1e6,
            f"{lambda_time['seconds_per_account']:.3f} s per account at {fetcher_mb} MB = its own CPU, "
            f"{fetcher['cpu_seconds_per_account']} s measured here x {lambda_time['cpu_scale']:.2f} "
            f"({FULL_VCPU_MB} MB / {fetcher_mb} MB of a vCPU): {lambda_time['cpu_seconds']:.3f} s, + waits shared by "
            f"the {lambda_time['accounts_per_invocation']:g} accounts of a batch (measured): "
            f"{provider_requests} provider requests x {REAL_PROVIDER_LATENCY_SECONDS * 1000:.0f} ms (assumed) + "
            f"{lambda_time['aws_requests']:.1f} AWS requests x {AWS_REQUEST_SECONDS * 1000:g} ms (assumed): "
            f"{lambda_time['wait_seconds']:.3f} s; added, not overlapped (an upper bound). Not the "
            f"{fetcher['duration_seconds_per_account']} s wall time measured here (moto's waits), nor waits for "
            "budget slots (fetches assumed to arrive within the providers' limits)",
        ),
        *_planner_lines(benchmarks, fetches),
        Line(
            "Lambda: API handlers + authorizer",
            reads * 2 * (READ_HANDLER_SECONDS * FUNCTION_GB * LAMBDA_GB_SECOND_ARM + LAMBDA_PER_MILLION_REQUESTS / 1e6),
            f"{reads / 1e6:.1f} M reads/month (assumed use), authorizer on every call (cache ignored)",
        ),
        Line("API Gateway HTTP API", reads * HTTP_API_PER_MILLION / 1e6, "the same reads"),
        Line(
            "DynamoDB writes (refresh)",
            fetches * write_units * DYNAMODB_PER_MILLION_WRITE_UNITS / 1e6,
            f"{write_units:.1f} write units per fetch: "
            + ", ".join(f"{op} {n}" for op, n in dynamodb.items() if op in WRITE_UNITS)
            + (
                "; by item: "
                + "; ".join(f"{op} " + ", ".join(f"{k} {n}" for k, n in kinds.items()) for op, kinds in by_item.items())
                if by_item
                else ""
            )
            + f"; an account's write {account_units} unit(s) (account items {account_kb} KB, measured)"
            + ("" if by_item else ", every UpdateItem taken as one (an upper bound)")
            + "; "
            f"+ {GSI_WRITE_UNITS_PER_FETCH} in GSI1 for the claim's new key",
        ),
        Line(
            "DynamoDB reads (refresh + API)",
            (fetches * read_units + reads * 3 * READ_UNITS["Query"]) * DYNAMODB_PER_MILLION_READ_UNITS / 1e6,
            f"{read_units:.1f} read units per fetch: "
            + ", ".join(f"{op} {n}" for op, n in dynamodb.items() if op in READ_UNITS)
            + "; 3 requests per API read",
        ),
        Line("DynamoDB storage", STORED_GB * DYNAMODB_GB_MONTH, f"{STORED_GB:.0f} GB: 24 months of bills, table + LSI"),
        Line(
            "SQS",
            fetches * sum(per_fetch("SQS").values()) * SQS_PER_MILLION / 1e6,
            ", ".join(f"{op} {n}" for op, n in per_fetch("SQS").items()) + " per fetch",
        ),
        Line(
            "KMS",
            fetches * sum(per_fetch("KMS").values()) * KMS_PER_10K_REQUESTS / 1e4 + keys * KMS_KEY_MONTH,
            ", ".join(f"{op} {n}" for op, n in per_fetch("KMS").items()) + f" per fetch, {keys} keys (template.yaml)",
        ),
        Line(
            "Lambda SnapStart cache",
            snapshot_gb * SECONDS_PER_MONTH * SNAPSTART_CACHE_GB_SECOND,
            f"{snapshot_gb:g} GB of snapshots (template.yaml's SnapStart functions, one version each); "
            "restores not counted (cold starts per month unknown)",
        ),
        Line(
            "Secrets Manager calls",
            fetches * sum(per_fetch("SecretsManager").values()) * SECRETS_PER_10K_CALLS / 1e4,
            ", ".join(f"{op} {n}" for op, n in per_fetch("SecretsManager").items()) + " per fetch",
        ),
        Line(
            "CloudWatch Logs",
            fetches * fetcher["log_bytes_per_account"] / 1024**3 * LOGS_PER_GB_INGESTED,
            f"{fetcher['log_bytes_per_account']} bytes of fetcher log per fetch",
        ),
    ]
    webhook_lines = _webhook_lines(benchmarks, account_units)
    lines += webhook_lines
    total = sum(line.monthly_usd for line in lines)
    estimate = {
        "accounts": ACCOUNTS,
        "fetches_per_month": fetches,
        "fetcher_lambda": {name: round(value, 4) for name, value in lambda_time.items()},
        "lines": [
            {"service": x.service, "monthly_usd": round(x.monthly_usd, 2), "rests_on": x.rests_on} for x in lines
        ],
        "total_usd_per_month": round(total, 2),
        "per_account_cents": round(total / ACCOUNTS * 100, 3),
    }
    if webhook_lines:
        webhooks = sum(line.monthly_usd for line in webhook_lines)
        estimate["webhooks_usd_per_month"] = round(webhooks, 2)
        estimate["webhook_events_per_month"] = round(webhook_events_per_month())
    return estimate


def webhook_events_per_month() -> float:
    """Every event the service puts on its bus a month (for users with webhooks or not)."""
    per_account = sum(EVENTS_PER_ACCOUNT_PER_MONTH.values())
    return ACCOUNTS * per_account + ACCOUNTS / ACCOUNTS_PER_USER * MANUAL_REFRESHES_PER_USER_PER_MONTH


def _webhook_lines(benchmarks: dict[str, Any], account_units: int) -> list[Line]:
    """The webhooks' lines, from the delivery benchmark's requests per delivery (each of its events went
    to one webhook) and the assumed event rate; none if the benchmark has not run."""
    bench = benchmarks.get("webhook_delivery")
    if not bench:
        return []
    measured = bench["throughput"]
    per_delivery: dict[str, float] = measured["aws_requests_per_delivery"]
    function = measured["function"]
    events = webhook_events_per_month()
    deliveries = events * WEBHOOK_USER_SHARE
    outbox_changes = ACCOUNTS * sum(EVENTS_PER_ACCOUNT_PER_MONTH[name] for name in OUTBOX_EVENTS)
    # An invocation takes a batch of events; the receive and the delete of each batch are SQS requests.
    per_invocation = function["deliveries_per_invocation"] or 1.0
    batches = events / per_invocation
    sqs_requests = events + 2 * batches  # the rule's send per event, a receive and a delete per batch
    memory_mb = function_memory_mb("DeliverWebhooksFunction")
    cpu_scale = max(1.0, FULL_VCPU_MB / memory_mb)
    cpu_seconds = function["cpu_seconds_per_delivery"] * cpu_scale
    aws_requests = sum(n for name, n in per_delivery.items() if not name.startswith("SQS."))
    # Every event: its CPU (an upper bound for one without a webhook) and its Query's wait; a delivery
    # adds its other AWS requests' waits and the receiver's answer, shared by the batch's attempts.
    event_seconds = cpu_seconds + AWS_REQUEST_SECONDS / per_invocation
    delivery_seconds = (max(0.0, aws_requests - 1) * AWS_REQUEST_SECONDS + RECEIVER_SECONDS) / per_invocation
    lambda_seconds = events * event_seconds + deliveries * delivery_seconds
    item_kb = max(DELIVERY_ITEM_KB, measured.get("delivery_item_kb", {}).get("median_kb", 0.0))
    delivery_units = math.ceil(item_kb)
    write_units = deliveries * 2 * delivery_units + outbox_changes * account_units
    read_units = events * WEBHOOK_QUERY_READ_UNITS
    kms = deliveries * per_delivery.get("KMS.Decrypt", 0.0)
    return [
        Line(
            "EventBridge (webhook events)",
            events * EVENTBRIDGE_PER_MILLION_EVENTS / 1e6,
            f"{events / 1e6:.2f} M events a month (assumed: "
            + ", ".join(f"{name} {n:g}" for name, n in EVENTS_PER_ACCOUNT_PER_MONTH.items())
            + f" per account, refresh.completed {MANUAL_REFRESHES_PER_USER_PER_MONTH} per user)",
        ),
        Line(
            "SQS (webhook deliveries)",
            sqs_requests * SQS_PER_MILLION / 1e6,
            f"the rule's send per event + a receive and a delete per batch of {per_invocation:g} (measured)",
        ),
        Line(
            "Lambda: webhook delivery",
            lambda_seconds * memory_mb / 1024 * LAMBDA_GB_SECOND_ARM + batches * LAMBDA_PER_MILLION_REQUESTS / 1e6,
            f"per event {event_seconds:.3f} s at {memory_mb} MB (its own CPU, {function['cpu_seconds_per_delivery']} s "
            f"measured x {cpu_scale:.2f}, + its Query's wait shared by the batch); per delivery "
            f"({WEBHOOK_USER_SHARE:.0%} of users with a webhook, assumed) + {delivery_seconds:.3f} s "
            f"({aws_requests - 1:.2f} more AWS requests x {AWS_REQUEST_SECONDS * 1000:g} ms + the receiver's "
            f"{RECEIVER_SECONDS * 1000:.0f} ms, assumed, shared by the batch); not the "
            f"{function['duration_seconds_per_delivery']} s wall measured here",
        ),
        Line(
            "DynamoDB writes (webhooks)",
            write_units * DYNAMODB_PER_MILLION_WRITE_UNITS / 1e6,
            f"{deliveries / 1e6:.2f} M deliveries x (PutItem + attempt UpdateItem) x {delivery_units} units "
            f"(delivery items {item_kb:g} KB; {measured.get('delivery_item_kb', {}).get('median_kb', '?')} KB "
            f"measured) + the outbox's account UpdateItem ({account_units} units) per changed fetch, "
            f"{outbox_changes / 1e6:.2f} M a month",
        ),
        Line(
            "DynamoDB reads (webhooks)",
            read_units * DYNAMODB_PER_MILLION_READ_UNITS / 1e6,
            f"the fan-out's Query of the user's webhooks ({WEBHOOK_QUERY_READ_UNITS} units) for every event",
        ),
        Line(
            "KMS (webhook secrets)",
            kms * KMS_PER_10K_REQUESTS / 1e4,
            f"Decrypt {per_delivery.get('KMS.Decrypt', 0.0)} per delivery (measured; data keys cached)",
        ),
        Line(
            "CloudWatch Logs (webhooks)",
            events * function["log_bytes_per_delivery"] / 1024**3 * LOGS_PER_GB_INGESTED,
            f"{function['log_bytes_per_delivery']} bytes of delivery log per event (measured per delivery)",
        ),
    ]


def _planner_lines(benchmarks: dict[str, Any], fetches: float) -> list[Line]:
    """The shard workers' Lambda time: one account planned per fetch, at the rate the planner benchmark's
    model gives one worker at its memory (its CPU measured, AWS's latencies assumed)."""
    planner = benchmarks.get("planner_scale")
    if not planner:
        return []
    estimates = planner["estimates"]
    memory_mb = planner["lambda_memory_mb"]
    per_second = estimates["by_memory_mb"][str(memory_mb)]["worker_per_second"]
    return [
        Line(
            "Lambda: planner",
            fetches / per_second * memory_mb / 1024 * LAMBDA_GB_SECOND_ARM,
            f"{per_second} accounts/s per shard worker at {memory_mb} MB (planner benchmark's model)",
        )
    ]


def fetcher_seconds_on_aws(refresh: dict[str, Any], memory_mb: int) -> dict[str, float]:
    """The fetcher's Lambda time per account as AWS would bill it: its own CPU measured here, scaled to
    the vCPU share its memory gets (Lambda gives CPU in proportion to memory, a whole vCPU at
    ``FULL_VCPU_MB``; the GIL uses one, as in the planner benchmark's estimates), plus the waits AWS would
    see (real providers' latency, AWS requests), each account's sequential, shared by the accounts one
    invocation fetches at once. The local wait on moto is left out: it is this machine's, not AWS's."""
    fetcher = refresh["fetcher"]
    cpu_scale = max(1.0, FULL_VCPU_MB / memory_mb)
    cpu_seconds = fetcher["cpu_seconds_per_account"] * cpu_scale
    aws_requests = sum(refresh["aws_requests_per_account"].values())
    waits = (
        refresh["provider_requests_per_account"] * REAL_PROVIDER_LATENCY_SECONDS + aws_requests * AWS_REQUEST_SECONDS
    )
    at_once = fetcher["accounts_per_invocation"]
    return {
        "measured_wall_seconds": fetcher["duration_seconds_per_account"],
        "measured_cpu_seconds": fetcher["cpu_seconds_per_account"],
        "cpu_scale": cpu_scale,
        "cpu_seconds": cpu_seconds,
        "aws_requests": aws_requests,
        "wait_seconds": waits / at_once,
        "accounts_per_invocation": at_once,
        "seconds_per_account": cpu_seconds + waits / at_once,
    }


def fetcher_memory_mb() -> int:
    return function_memory_mb("FetchProviderFunction")


def function_memory_mb(name: str) -> int:
    template = load_template()
    default_mb = template.get("Globals", {}).get("Function", {}).get("MemorySize", 128)
    return int(template["Resources"][name]["Properties"].get("MemorySize", default_mb))


def _template_fixed_costs() -> tuple[int, float]:
    """The customer-managed KMS keys, and the GB of memory of the functions that keep a snapshot."""
    template = load_template()
    resources = template["Resources"].values()
    keys = sum(1 for resource in resources if resource["Type"] == "AWS::KMS::Key")
    default_mb = template.get("Globals", {}).get("Function", {}).get("MemorySize", 128)
    snapshot_gb = sum(
        resource["Properties"].get("MemorySize", default_mb) / 1024
        for resource in resources
        if resource["Type"] == "AWS::Serverless::Function" and resource["Properties"].get("SnapStart")
    )
    return keys, snapshot_gb


def report(cost: dict[str, Any]) -> str:
    rows = ["| service | USD per month | rests on |", "| --- | ---: | --- |"]
    rows += [f"| {x['service']} | {x['monthly_usd']:,.2f} | {x['rests_on']} |" for x in cost["lines"]]
    rows.append(
        f"| **total** | **{cost['total_usd_per_month']:,.2f}** | {cost['per_account_cents']} cents per account |"
    )
    if "webhooks_usd_per_month" in cost:
        rows += [
            "",
            "Of the total, webhooks (the lines from EventBridge on): "
            f"**{cost['webhooks_usd_per_month']:,.2f}** USD a month, "
            f"for {cost['webhook_events_per_month'] / 1e6:.2f} M events, {WEBHOOK_USER_SHARE:.0%} of users with "
            "a webhook (assumed).",
        ]
    return "\n".join(
        [
            f"{cost['accounts']:,} linked accounts refreshed daily ({math.ceil(cost['fetches_per_month']):,} fetches "
            "a month). Prices and assumptions are in `bench/cost.py`; the reasoning is in `docs/cost.md`.",
            "",
            *rows,
        ]
    )
