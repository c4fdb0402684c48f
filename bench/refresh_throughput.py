"""Refresh throughput: how close a refresh of 1,000 accounts gets to the providers' published rate limits.

The whole local cloud runs (gateway, the real planner and fetcher handlers in worker processes, the SQS
poller, moto, the sandbox). Accounts are linked through the API, as people link them, and their first
fetches land. Then two refreshes of every account are measured: a manual one (every user asks at once)
and the scheduled one (every account due, the planner's shard workers claim and enqueue them), which
the cost model rests on. The sandbox counts the requests each provider received in each wall-clock
second, as it counts them for its own rate limit; the AWS requests each phase made are counted by the
local moto server, and reported per second beside the shares, to show which ceiling was reached (moto
serves one request at a time, all services together).
"""

from __future__ import annotations

import functools
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from localcloud.cloud import STACK_NAME
from localcloud.demo import link_with_oauth
from localcloud.launch import Launched, launched, wait_for
from localcloud.runtime import LAYER_DIR
from localcloud.template import load_template, queues_bound_to

if str(LAYER_DIR) not in sys.path:
    sys.path.insert(0, str(LAYER_DIR))

from billhub import keys, planning
from billhub.providers import REGISTRY
from billhub.queue import PlanQueue

TITLE = "Refresh throughput against provider rate limits"
ACCOUNTS_PER_PROVIDER_PER_USER = 2
USERS = 125  # x 4 providers x 2 = 1,000 accounts, eight per person
# The providers' published limits, on both sides (the service's budget and the sandbox's rate limit).
PROVIDER_LIMITS = {name: adapter.requests_per_second for name, adapter in REGISTRY.items()}
# Every provider answers in 40 to 80 ms, as a real API across the internet might.
LATENCY = {"latency_ms": 40, "jitter_ms": 40}
# What the fetcher's EMF lines count, summed per provider.
FETCH_METRICS = ("FetchSucceeded", "FetchFailed", "FetchDeferred", "FetchRetries")
TARGET_SHARE = 0.9
PLAN_QUEUE = f"{STACK_NAME}-PlanQueue"
REPORT_DURATION = re.compile(r"^REPORT RequestId: \S+\tDuration: ([\d.]+) ms", re.MULTILINE)
# The local runtime's own field on the same line: the invocation's CPU, without its waits.
REPORT_CPU = re.compile(r"^REPORT RequestId: .*\tCPU Time: ([\d.]+) ms", re.MULTILINE)
LINKERS = 4
PASSWORD = "bench-password-1"  # noqa: S105 - a throwaway local user


def run(workdir: Path) -> dict[str, Any]:
    overrides = {"ManualRefreshMinIntervalSeconds": "0"}
    with launched(
        workdir,
        # Only the benchmark's own refreshes: it starts the scheduled one itself.
        LOCALCLOUD_SCHEDULE_SECONDS="3600",
        LOCALCLOUD_PARAMETER_OVERRIDES=json.dumps(overrides),
    ) as cloud:
        api = httpx.Client(base_url=cloud.state["api"], timeout=60)
        sandbox = cloud.state["mock_provider"]
        for provider in PROVIDER_LIMITS:
            httpx.post(f"{sandbox}/_admin/faults/{provider}", json=LATENCY).raise_for_status()
        began = time.monotonic()
        with ThreadPoolExecutor(LINKERS) as pool:
            users = list(pool.map(lambda number: _link_user(cloud.state["api"], number), range(USERS)))
        wait_for(lambda: _queue_drained(cloud), 600, "every first fetch", 2)
        linking_seconds = time.monotonic() - began
        accounts = USERS * 4 * ACCOUNTS_PER_PROVIDER_PER_USER

        jobs: list[tuple[dict[str, str], str]] = []

        def start_refreshes() -> None:
            jobs.extend((headers, _start_refresh(api, headers)) for headers in users)

        # Watched through the queue, not the API, so the watching adds no DynamoDB requests to the count.
        manual = _measure(cloud, start_refreshes, lambda log: _queue_drained(cloud))
        finished = wait_for(lambda: _all_finished(api, jobs), 60, "every refresh job", 1)
        manual["jobs"] = {
            "succeeded": sum(job["succeeded"] for job in finished),
            "failed": sum(job["failed"] for job in finished),
            "pending": sum(job["pending"] for job in finished),
        }

        account_item = _fall_due(cloud)
        scheduled = _measure(
            cloud,
            lambda: _run_schedule(cloud),
            lambda log: _fetches_done(log) >= accounts and _queue_drained(cloud),
        )
    return {
        "accounts": accounts,
        "users": USERS,
        "latency": LATENCY,
        "mean_provider_latency_s": (LATENCY["latency_ms"] + LATENCY["jitter_ms"] / 2) / 1000,
        "linking_seconds": round(linking_seconds, 1),
        "target_share": TARGET_SHARE,
        # DynamoDB bills a write by the item's size in 1 KB units: the cost model checks these against it.
        "account_item_kb": account_item,
        "manual": manual,
        "scheduled": scheduled,
    }


def _measure(
    cloud: Launched,
    start: Callable[[], None],
    done: Callable[[str], bool],
) -> dict[str, Any]:
    """One refresh of every account, from ``start`` until ``done`` (given the fetcher's log since the
    start): what each provider received per second, what AWS was asked, and the fetcher's time."""
    sandbox = cloud.state["mock_provider"]
    accounts = USERS * 4 * ACCOUNTS_PER_PROVIDER_PER_USER
    httpx.post(f"{sandbox}/_admin/stats/reset").raise_for_status()
    fetcher_log = Path(cloud.state["logs"]) / "FetchProviderFunction.log"
    log_offset = fetcher_log.stat().st_size

    def written_since() -> str:
        with fetcher_log.open("rb") as log:
            log.seek(log_offset)
            return log.read().decode(errors="replace")

    aws_before = _aws_requests(cloud.state["aws_endpoint"])
    items_before = _item_requests(cloud.state["aws_endpoint"])
    started = time.monotonic()
    start()
    wait_for(lambda: done(written_since()), 900, "every account's fetch", 0.5)
    refresh_seconds = time.monotonic() - started
    aws_after = _aws_requests(cloud.state["aws_endpoint"])
    items_after = _item_requests(cloud.state["aws_endpoint"])
    stats = httpx.get(f"{sandbox}/_admin/stats").json()
    written = written_since()
    durations = [float(m) for m in REPORT_DURATION.findall(written)]
    cpu_times = [float(m) for m in REPORT_CPU.findall(written)]

    providers = {provider: _throughput(stats[provider], limit) for provider, limit in PROVIDER_LIMITS.items()}
    ideal_seconds = max(figures["requests"] / PROVIDER_LIMITS[name] for name, figures in providers.items())
    aws_requests = {name: aws_after[name] - aws_before.get(name, 0) for name in aws_after}
    # The refresh as AWS would bill it, per account refreshed (the cost model rests on these).
    per_account = {
        _operation(name): round(count / accounts, 2)
        for name, count in sorted(aws_requests.items())
        # Leaving out the local poller's receives (Lambda's event source mapping polls for free) and the
        # benchmark's own look at the queue.
        if count and name not in ("AmazonSQS.ReceiveMessage", "AmazonSQS.GetQueueUrl", "AmazonSQS.GetQueueAttributes")
    }
    dynamodb_requests = sum(count for name, count in aws_requests.items() if name.startswith("DynamoDB"))
    # DynamoDB's one-item requests by the kind of item (an account's writes are billed by its size).
    by_item = {
        operation: {
            kind: round((count - items_before.get(operation, {}).get(kind, 0)) / accounts, 2)
            for kind, count in sorted(kinds.items())
            if count > items_before.get(operation, {}).get(kind, 0)
        }
        for operation, kinds in sorted(items_after.items())
    }
    return {
        "aws_requests_per_account": per_account,
        "dynamodb_items_per_account": by_item,
        "dynamodb_requests_per_second": round(dynamodb_requests / refresh_seconds, 1),
        "fetch_outcomes": _fetch_metrics(written),
        "fetcher": {
            "invocations": len(durations),
            "mean_duration_ms": round(statistics.fmean(durations), 1) if durations else None,
            "p95_duration_ms": round(_percentile(durations, 95), 1) if durations else None,
            "duration_seconds_per_account": round(sum(durations) / 1000 / accounts, 3),
            # The fetcher's own CPU (every thread of its environment), on this machine's cores.
            "cpu_seconds_per_account": round(sum(cpu_times) / 1000 / accounts, 4),
            "mean_cpu_ms": round(statistics.fmean(cpu_times), 1) if cpu_times else None,
            "accounts_per_invocation": round(accounts / len(durations), 2) if durations else None,
            "log_bytes_per_account": round(len(written.encode()) / accounts),
        },
        "provider_requests_per_account": round(sum(p["requests"] for p in providers.values()) / accounts, 2),
        "refresh_seconds": round(refresh_seconds, 1),
        "ideal_seconds": round(ideal_seconds, 1),
        "time_over_ideal": round(refresh_seconds / ideal_seconds, 2),
        "providers": providers,
    }


def _fall_due(cloud: Launched) -> dict[str, float]:
    """Makes every account due now, as a day's accounts are found due on AWS. Written straight to the
    table before the measurement starts: the benchmark's set-up, not the service's work. Returns the
    account items' sizes, as DynamoDB bills a write to one (by the 1 KB)."""
    dynamodb = cloud.aws("dynamodb")
    table = next(name for name in dynamodb.list_tables()["TableNames"] if "BillsTable" in name)
    due = datetime.now(UTC)
    scheduled = [
        item
        for page in dynamodb.get_paginator("scan").paginate(
            TableName=table,
            FilterExpression="begins_with(GSI1PK, :refresh)",
            ExpressionAttributeValues={":refresh": {"S": keys.REFRESH}},
        )
        for item in page["Items"]
    ]
    for item in scheduled:
        refresh_key = item["GSI1SK"]["S"]
        account_id = keys.account_id_of(item["SK"]["S"])
        dynamodb.update_item(
            TableName=table,
            Key={"PK": item["PK"], "SK": item["SK"]},
            UpdateExpression="SET next_refresh_at = :due, GSI1SK = :key",
            ConditionExpression="GSI1SK = :seen",
            ExpressionAttributeValues={
                ":due": {"S": due.isoformat()},
                ":key": {"S": keys.refresh_sk(account_id, due, keys.interval_of(refresh_key))},
                ":seen": {"S": refresh_key},
            },
        )
    sizes = [_item_bytes(item) / 1024 for item in scheduled]
    return {"median_kb": round(statistics.median(sizes), 2), "max_kb": round(max(sizes), 2)}


def _item_bytes(item: dict[str, Any]) -> int:
    """An item's size by DynamoDB's rules: each attribute's name plus its value (strings and binaries by
    their bytes, numbers about one byte per two digits, maps and lists 3 bytes plus their elements)."""
    return sum(len(name.encode()) + _value_bytes(value) for name, value in item.items())


def _value_bytes(value: dict[str, Any]) -> int:
    (kind, content), *_ = value.items()
    if kind == "S":
        return len(str(content).encode())
    if kind == "B":
        return len(content)
    if kind == "N":
        return len(str(content)) // 2 + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(1 + len(name.encode()) + _value_bytes(inner) for name, inner in content.items())
    if kind == "L":
        return 3 + sum(1 + _value_bytes(inner) for inner in content)
    return sum(len(str(element).encode()) for element in content)  # SS, NS, BS


def _run_schedule(cloud: Launched) -> None:
    """The scheduled run's planning, as the planner's schedule event does it: one unit of work per shard on
    the PlanQueue, which the local cloud's shard workers (the real PlannerFunction) take."""
    sqs = cloud.aws("sqs")
    url = sqs.get_queue_url(QueueName=PLAN_QUEUE)["QueueUrl"]
    planning.dispatch_shard_work(PlanQueue(sqs, url))


def _fetches_done(log: str) -> int:
    outcomes = _fetch_metrics(log)
    return outcomes["FetchSucceeded"] + outcomes["FetchFailed"]


# X-Amz-Target prefixes, as the services are called on their price lists.
SERVICES = {
    "DynamoDB_20120810": "DynamoDB",
    "AmazonSQS": "SQS",
    "TrentService": "KMS",
    "secretsmanager": "SecretsManager",
    "GraniteServiceVersion20100801": "CloudWatch",
}


def _operation(target: str) -> str:
    """``DynamoDB_20120810.GetItem`` as ``DynamoDB.GetItem``; SNS (no target header) stays ``other``."""
    service, _, operation = target.partition(".")
    return f"{SERVICES.get(service, service)}.{operation}" if operation else target


def _fetch_metrics(log: str) -> dict[str, int]:
    """The fetcher's own counts (its EMF lines), summed over every provider."""
    totals = dict.fromkeys(FETCH_METRICS, 0)
    for line in log.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            document = json.loads(line)
            for name in FETCH_METRICS:
                totals[name] += int(sum(document.get(name, [0])))
    return totals


def _queue_drained(cloud: Launched) -> bool:
    """Every fetch lane (FetchQueue and each provider's) empty: nothing queued, in flight or delayed."""
    sqs = cloud.aws("sqs")
    waiting = (
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    )
    for lane in queues_bound_to(load_template(), "FetchProviderFunction"):
        url = sqs.get_queue_url(QueueName=f"{STACK_NAME}-{lane}")["QueueUrl"]
        counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        if any(counts[name] != "0" for name in waiting):
            return False
    return True


def _aws_requests(endpoint: str) -> dict[str, int]:
    counts: dict[str, int] = httpx.get(f"{endpoint}/_localcloud/requests").json()
    return counts


def _item_requests(endpoint: str) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = httpx.get(f"{endpoint}/_localcloud/requests/by-item").json()
    return counts


def _percentile(values: list[float], percentile: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[percentile - 1] if len(values) > 1 else values[0]


def _link_user(api_url: str, number: int) -> dict[str, str]:
    with httpx.Client(base_url=api_url, timeout=60) as api:
        email = f"bench-{number}@example.com"
        api.post("/auth/register", json={"email": email, "password": PASSWORD}).raise_for_status()
        login = api.post("/auth/login", json={"email": email, "password": PASSWORD})
        login.raise_for_status()
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        for copy in range(ACCOUNTS_PER_PROVIDER_PER_USER):
            tag = f"b{number}x{copy}"
            credentials = {
                "northgas": {"account_number": f"NG8{number:04d}{copy:03d}", "postcode": "NG1 1AA"},
                "clearwater": {"api_key": f"cw_sandbox_{tag}"},
                "fibrelink": {"username": tag, "password": "pass_good"},
            }
            for provider, secret in credentials.items():
                # The same Idempotency-Key on every attempt: a retry of a link that did land replays it.
                key = {**headers, "Idempotency-Key": f"bench-{tag}-{provider}"}
                body = {"provider": provider, "credentials": secret}
                _as_a_client_would(functools.partial(api.post, "/accounts/link", headers=key, json=body))
            _as_a_client_would(functools.partial(_oauth_link, api, headers, tag))
        return headers


def _oauth_link(api: httpx.Client, headers: dict[str, str], login: str) -> httpx.Response:
    try:
        return link_with_oauth(api, headers, "sparkgrid", login)
    except httpx.HTTPStatusError as error:  # the flow's start refused: the answer is what counts
        return error.response


def _as_a_client_would(link: Callable[[], httpx.Response], attempts: int = 8) -> None:
    """Retries what the API asks to be retried after the pause it names: 429, 5xx (a provider or this
    machine too busy) and 409 idempotency_in_progress; any other 409 on a retry is an earlier attempt
    having landed after all."""
    for attempt in range(attempts):
        answer = link()
        if answer.status_code in (200, 201):
            return
        in_progress = answer.status_code == 409 and answer.json().get("code") == "idempotency_in_progress"
        if answer.status_code == 409 and attempt and not in_progress:
            return
        if not (in_progress or answer.status_code in (429, 500, 503)) or attempt == attempts - 1:
            raise RuntimeError(f"linking answered {answer.status_code}: {answer.text[:300]}")
        time.sleep(float(answer.headers.get("Retry-After", 2)))


def _start_refresh(api: httpx.Client, headers: dict[str, str]) -> str:
    started = api.post("/bills/refresh", headers=headers)
    started.raise_for_status()
    return str(started.json()["job_id"])


def _all_finished(api: httpx.Client, jobs: list[tuple[dict[str, str], str]]) -> list[dict[str, Any]] | None:
    answers = []
    for headers, job_id in jobs:
        job = api.get(f"/bills/refresh/{job_id}", headers=headers).json()
        if job["status"] == "running":
            return None
        answers.append(job)
    return answers


def _throughput(stats: dict[str, Any], limit: int) -> dict[str, Any]:
    """Requests per second over the provider's busy span, as a share of its limit. The first and last
    seconds are partial (the work starts and ends inside them), so the steady state leaves them out."""
    by_second = {int(second): count for second, count in stats["requests_by_second"].items()}
    first, last = min(by_second), max(by_second)
    span = [by_second.get(second, 0) for second in range(first, last + 1)]
    inner = span[1:-1] or span
    return {
        "limit": limit,
        "requests": stats["requests"],
        "by_status": stats["by_status"],
        "busy_seconds": len(span),
        "per_second": round(stats["requests"] / len(span), 2),
        "share_of_limit": round(stats["requests"] / len(span) / limit, 3),
        "steady_share_of_limit": round(sum(inner) / len(inner) / limit, 3),
        "max_in_one_second": stats["max_requests_in_one_second"],
        "seconds_at_limit": sum(1 for count in span if count >= limit),
        "requests_by_second": span,
    }


def report(result: dict[str, Any]) -> str:
    phases = (("manual", "Every user asks for a refresh at once"), ("scheduled", "The schedule's refresh"))
    lines = [
        f"{result['accounts']:,} accounts ({result['users']} users, each with "
        f"{result['accounts'] // result['users'] // 4} at each of the four providers); every provider "
        f"answering in {result['latency']['latency_ms']} to "
        f"{result['latency']['latency_ms'] + result['latency']['jitter_ms']} ms, at its published limit "
        f"({', '.join(f'{name} {limit}/s' for name, limit in PROVIDER_LIMITS.items())}).",
        f"Linking them first (through the API, {LINKERS} clients at once, first fetches included) took "
        f"{result['linking_seconds']} s. An account item (what a claim or a fetch's save rewrites) is "
        f"{result['account_item_kb']['median_kb']} KB (median; at most {result['account_item_kb']['max_kb']} KB).",
        "",
    ]
    for phase, title in phases:
        lines += [f"### {title} ({phase})", "", *_phase_report(result[phase], result["target_share"]), ""]
    lines += [
        "The cost model rests on the scheduled phase: it is the daily refresh. A manual refresh also writes "
        "each account's outcome to its job and reschedules the account.",
        "",
        "Method: the whole local cloud runs on this machine; accounts are linked through the API and their "
        "first fetches land. Manual phase: the sandbox's counters are reset and every user starts a refresh "
        "(`POST /bills/refresh`) at once. Scheduled phase: every account's next refresh is set to now, straight in "
        "the table (not counted), and the scheduled run's planning (`planning.dispatch_shard_work`) puts the "
        "shards' work on the PlanQueue, where the real planner and fetcher functions take it as on AWS. The "
        "sandbox counts requests per provider per wall-clock second, the window its rate limit uses. Achieved "
        "rate = requests / seconds from the provider's first to its last request; the steady share leaves out "
        "the first and last (partial) seconds. Requests include token calls and retries: everything a provider "
        "counts. The local moto server serves one request at a time, all services together; the DynamoDB "
        "requests per second show when it, not a provider's limit, was the ceiling.",
    ]
    return "\n".join(lines)


def _phase_report(phase: dict[str, Any], target_share: float) -> list[str]:
    rows = [
        "| provider | limit/s | requests | busy s | achieved/s | share of limit | steady share | max in 1 s "
        "| statuses |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    met: list[str] = []
    missed: list[str] = []
    for name, p in phase["providers"].items():
        statuses = ", ".join(f"{code}: {n}" for code, n in p["by_status"].items())
        rows.append(
            f"| {name} | {p['limit']} | {p['requests']} | {p['busy_seconds']} | {p['per_second']} | "
            f"{p['share_of_limit']:.2f} | {p['steady_share_of_limit']:.2f} | {p['max_in_one_second']} | {statuses} |"
        )
        within = p["max_in_one_second"] <= p["limit"]
        (met if p["share_of_limit"] >= target_share and within else missed).append(name)
    fetcher = phase["fetcher"]
    jobs = phase.get("jobs")
    return [
        *rows,
        "",
        f"- Refresh of every account: {phase['refresh_seconds']} s; the ideal the limits allow (the busiest "
        f"provider's requests / its limit) is {phase['ideal_seconds']} s: **{phase['time_over_ideal']}x** the ideal.",
        *(
            [f"- Jobs: {jobs['succeeded']} accounts refreshed, {jobs['failed']} failed, {jobs['pending']} pending."]
            if jobs
            else []
        ),
        "- The fetcher's own counts: "
        + ", ".join(f"{name} {count}" for name, count in phase["fetch_outcomes"].items())
        + " (a deferred fetch waited too long for a slot and came back later as a new message).",
        f"- DynamoDB requests: {phase['dynamodb_requests_per_second']} a second.",
        f"- Fetcher: {fetcher['invocations']} invocations (batches of up to 10), "
        f"mean {fetcher['mean_duration_ms']} ms, p95 {fetcher['p95_duration_ms']} ms; "
        f"{fetcher['duration_seconds_per_account']} s of Lambda time (wall) per account; "
        "its own CPU (every thread of its environment, on this machine) "
        f"{fetcher['cpu_seconds_per_account']} s per account, mean {fetcher['mean_cpu_ms']} ms per invocation: "
        "the rest of the wall time is waiting on moto, the providers and the budget; "
        f"{fetcher['log_bytes_per_account']} bytes of log per account.",
        "- AWS requests per account: "
        + ", ".join(f"{name} {count}" for name, count in phase["aws_requests_per_account"].items())
        + "; DynamoDB's one-item requests by item: "
        + "; ".join(
            f"{operation} " + ", ".join(f"{kind} {n}" for kind, n in kinds.items())
            for operation, kinds in phase.get("dynamodb_items_per_account", {}).items()
        )
        + ".",
        f"- Target (at least {target_share:.0%} of the limit, never above it in any one second): "
        f"met by {', '.join(met) or 'none'}; missed by {', '.join(missed) or 'none'}.",
    ]
