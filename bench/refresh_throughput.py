"""Refresh throughput: how close a refresh of 1,000 accounts gets to the providers' rate limits.

The whole local cloud runs (gateway, the real fetcher handlers in worker processes, the SQS poller,
moto, the sandbox). Accounts are linked through the API, as people link them, and their first fetches
land; then the sandbox's counters are reset and every user asks for a refresh at once. The sandbox
counts the requests each provider received in each wall-clock second, as it counts them for its own
rate limit.

The limits are set on both sides (the sandbox's rate limit, the service's ``ProviderRateLimits``) to
4 requests a second per provider: the providers' published limits (70 a second together) would need
~230 DynamoDB requests a second from the local moto server, which serves one at a time and peaks near
80 here, so with them the benchmark would measure moto. The DynamoDB requests the refresh made per
second are reported beside it, to show which ceiling was reached.
"""

from __future__ import annotations

import functools
import json
import re
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from localcloud.cloud import STACK_NAME
from localcloud.demo import link_with_oauth
from localcloud.launch import Launched, launched, wait_for
from localcloud.template import load_template, queues_bound_to

TITLE = "Refresh throughput against provider rate limits"
ACCOUNTS_PER_PROVIDER_PER_USER = 2
USERS = 125  # x 4 providers x 2 = 1,000 accounts, eight per person
PROVIDER_LIMITS = {"sparkgrid": 4, "northgas": 4, "clearwater": 4, "fibrelink": 4}
# Every provider answers in 40 to 80 ms, as a real API across the internet might.
LATENCY = {"latency_ms": 40, "jitter_ms": 40}
# What the fetcher's EMF lines count, summed per provider.
FETCH_METRICS = ("FetchSucceeded", "FetchFailed", "FetchDeferred", "FetchRetries")
TARGET_SHARE = 0.9
FETCH_QUEUE = "billhub-local-FetchQueue"
REPORT_DURATION = re.compile(r"^REPORT RequestId: \S+\tDuration: ([\d.]+) ms", re.MULTILINE)
# The local runtime's own field on the same line: the invocation's CPU, without its waits.
REPORT_CPU = re.compile(r"^REPORT RequestId: .*\tCPU Time: ([\d.]+) ms", re.MULTILINE)
LINKERS = 4
PASSWORD = "bench-password-1"  # noqa: S105 - a throwaway local user


def run(workdir: Path) -> dict[str, Any]:
    overrides = {"ManualRefreshMinIntervalSeconds": "0", "ProviderRateLimits": json.dumps(PROVIDER_LIMITS)}
    with launched(
        workdir,
        LOCALCLOUD_SCHEDULE_SECONDS="3600",  # only the benchmark's own refreshes
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

        # The sandbox keeps its published limits while people link (their browsers' visits to the OAuth
        # page count too, and the service paces only its own requests); from here on, the agreed ones.
        for provider, limit in PROVIDER_LIMITS.items():
            httpx.post(f"{sandbox}/_admin/faults/{provider}", json={"rate_limit_per_second": limit}).raise_for_status()
        httpx.post(f"{sandbox}/_admin/stats/reset").raise_for_status()
        fetcher_log = Path(cloud.state["logs"]) / "FetchProviderFunction.log"
        log_offset = fetcher_log.stat().st_size
        aws_before = _aws_requests(cloud.state["aws_endpoint"])
        started = time.monotonic()
        jobs = [(headers, _start_refresh(api, headers)) for headers in users]
        # Watched through the queue, not the API, so the watching adds no DynamoDB requests to the count.
        wait_for(lambda: _queue_drained(cloud), 900, "the fetch queue to drain", 0.5)
        refresh_seconds = time.monotonic() - started
        aws_after = _aws_requests(cloud.state["aws_endpoint"])
        stats = httpx.get(f"{sandbox}/_admin/stats").json()
        finished = wait_for(lambda: _all_finished(api, jobs), 60, "every refresh job", 1)
        with fetcher_log.open("rb") as log:
            log.seek(log_offset)
            written = log.read().decode(errors="replace")
        log_bytes = len(written.encode())
        durations = [float(m) for m in REPORT_DURATION.findall(written)]
        cpu_times = [float(m) for m in REPORT_CPU.findall(written)]

    outcome = {
        "succeeded": sum(job["succeeded"] for job in finished),
        "failed": sum(job["failed"] for job in finished),
        "pending": sum(job["pending"] for job in finished),
    }
    providers = {provider: _throughput(stats[provider], limit) for provider, limit in PROVIDER_LIMITS.items()}
    ideal_seconds = max(figures["requests"] / PROVIDER_LIMITS[name] for name, figures in providers.items())
    accounts = USERS * 4 * ACCOUNTS_PER_PROVIDER_PER_USER
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
    return {
        "accounts": accounts,
        "aws_requests_per_account": per_account,
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
            "log_bytes_per_account": round(log_bytes / accounts),
        },
        "users": USERS,
        "latency": LATENCY,
        "mean_provider_latency_s": (LATENCY["latency_ms"] + LATENCY["jitter_ms"] / 2) / 1000,
        "provider_requests_per_account": round(sum(p["requests"] for p in providers.values()) / accounts, 2),
        "linking_seconds": round(linking_seconds, 1),
        "refresh_seconds": round(refresh_seconds, 1),
        "ideal_seconds": round(ideal_seconds, 1),
        "time_over_ideal": round(refresh_seconds / ideal_seconds, 2),
        "jobs": outcome,
        "providers": providers,
        "target_share": TARGET_SHARE,
    }


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
    rows = [
        "| provider | limit/s | requests | busy s | achieved/s | share of limit | steady share | max in 1 s "
        "| statuses |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    met: list[str] = []
    missed: list[str] = []
    for name, p in result["providers"].items():
        statuses = ", ".join(f"{code}: {n}" for code, n in p["by_status"].items())
        rows.append(
            f"| {name} | {p['limit']} | {p['requests']} | {p['busy_seconds']} | {p['per_second']} | "
            f"{p['share_of_limit']:.2f} | {p['steady_share_of_limit']:.2f} | {p['max_in_one_second']} | {statuses} |"
        )
        within = p["max_in_one_second"] <= p["limit"]
        (met if p["share_of_limit"] >= result["target_share"] and within else missed).append(name)
    jobs = result["jobs"]
    fetcher = result["fetcher"]
    return "\n".join(
        [
            f"{result['accounts']:,} accounts ({result['users']} users, each with "
            f"{result['accounts'] // result['users'] // 4} at each of the four providers); every provider "
            f"answering in {result['latency']['latency_ms']} to "
            f"{result['latency']['latency_ms'] + result['latency']['jitter_ms']} ms.",
            "",
            *rows,
            "",
            f"- Refresh of every account: {result['refresh_seconds']} s; the ideal the limits allow (the busiest "
            f"provider's requests / its limit) is {result['ideal_seconds']} s: **{result['time_over_ideal']}x** the "
            "ideal.",
            f"- Jobs: {jobs['succeeded']} accounts refreshed, {jobs['failed']} failed, {jobs['pending']} pending; "
            "the fetcher's own counts: "
            + ", ".join(f"{name} {count}" for name, count in result["fetch_outcomes"].items())
            + " (a deferred fetch waited too long for a slot and came back later as a new message).",
            f"- DynamoDB requests during the refresh: {result['dynamodb_requests_per_second']} a second (the local "
            "moto server serves one at a time; ~80 a second is its ceiling on this machine).",
            f"- Fetcher: {fetcher['invocations']} invocations (batches of up to 10), "
            f"mean {fetcher['mean_duration_ms']} ms, "
            f"p95 {fetcher['p95_duration_ms']} ms; {fetcher['duration_seconds_per_account']} s of Lambda time (wall) "
            "per account refreshed; its own CPU (every thread of its environment, on this machine) "
            f"{fetcher['cpu_seconds_per_account']} s per account, mean {fetcher['mean_cpu_ms']} ms per invocation: "
            "the rest of the wall time is waiting on moto, the providers and the budget; "
            f"{fetcher['log_bytes_per_account']} bytes of log per account.",
            "- AWS requests per account refreshed (the cost model in `docs/cost.md` rests on these): "
            + ", ".join(f"{name} {count}" for name, count in result["aws_requests_per_account"].items())
            + ".",
            f"- Linking them first (through the API, {LINKERS} clients at once, first fetches included): "
            f"{result['linking_seconds']} s.",
            f"- Target (at least {result['target_share']:.0%} of the limit, never above it in any one second): "
            f"met by {', '.join(met) or 'none'}; missed by {', '.join(missed) or 'none'}.",
            "",
            "Where a provider misses while the busiest reach the target, it is because all four share one queue: "
            "its fetches arrive spread over the whole refresh, whose length the providers with the most requests per "
            "limit set (here NorthGas and FibreLink: 3 requests per account, SparkGrid and ClearWater 2). The refresh "
            "as a whole is what the ideal measures; a queue per provider would let each run at its own limit.",
            "",
            "Method: the whole local cloud runs on this machine; accounts are linked through the API and their "
            "first fetches land; then the sandbox's counters are reset, its rate limits set to the ones the service "
            "was deployed with (`ProviderRateLimits`: 4 a second each; the published 20/10/25/15 would need ~230 "
            "DynamoDB requests a second, three times what the local moto server serves), and every "
            "user starts a refresh (`POST /bills/refresh`) at once. The sandbox counts requests per provider per "
            "wall-clock second, the window its rate limit uses. Achieved rate = requests / seconds from the "
            "provider's first to its last request; the steady share leaves out the first and last (partial) "
            "seconds. Requests include token calls and retries: everything a provider counts.",
        ]
    )
