"""Planner scale (issue 7, benchmark 4): accounts planned per second, and the SQS and DynamoDB requests
the scheduled planner makes per 10,000 due accounts.

The local moto server (``python -m localcloud.moto_server``) on a free loopback port, the template's
resources created in it by the local cloud's own provisioning, and 10,000 due accounts (2,500 users x 4
providers, half daily and half weekly, due between a minute and six days ago) plus 2,000 not yet due,
each item built by ``Accounts._account_item`` (what ``create_account`` writes) and sent 25 at a time
with ``BatchWriteItem``. Then the real ``billhub.refresh.plan_due_refreshes`` runs in this process with
the clients ``billhub.runtime.aws_client`` builds for a Lambda (same timeouts, retries and connection
pool), over HTTP to the moto server: one batch at a time for a while, then as deployed for as long, then
as deployed for the rest, while another process takes the messages off the queue as the fetchers would.
Requests are counted by the server (``GET /_localcloud/requests``, per ``X-Amz-Target``) around each run.
Afterwards every due account must have had exactly one message and be scheduled one interval on, every
other account must be untouched and the queue empty; one more run (nothing due) gives the cost of an
idle run.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from bench import support
from localcloud.cloud import HOST, CloudConfig, LocalCloud, function_environment
from localcloud.launch import free_port, wait_for
from localcloud.moto_server import REQUEST_COUNTS_PATH
from localcloud.runtime import LAYER_DIR
from localcloud.template import ROOT

if str(LAYER_DIR) not in sys.path:
    sys.path.insert(0, str(LAYER_DIR))

from billhub import keys, refresh
from billhub.models import REFRESH_PERIODS, Account, AccountStatus, FetchRequest, RefreshInterval
from billhub.queue import SQS_BATCH_LIMIT, FetchQueue
from billhub.runtime import aws_client
from billhub.store import BATCH_WRITE_LIMIT, BillsTable

TITLE = "Planner scale"

PROVIDERS = ("sparkgrid", "northgas", "clearwater", "fibrelink")
DUE_USERS = 2_500
NOT_DUE_USERS = 500
PLANNER = "PlannerFunction"
LATENCY_SAMPLES = 200
# The size of a KMS ciphertext of a small credentials document with its encryption context.
CIPHERTEXT_BYTES = 330
PER = 10_000
# Typical single-call latencies from a Lambda in the same region (assumed for the estimates, not measured).
ASSUMED_UPDATE_ITEM_MS = 5.0
ASSUMED_SEND_MESSAGE_BATCH_MS = 15.0
# Lambda's memory size that comes with one whole vCPU; CPU is given in proportion below it.
FULL_VCPU_MB = 1769
# How long the planner runs one batch at a time, then as deployed, before it plans the rest as deployed.
WINDOW_SECONDS = 20
# What the drainer (standing in for the fetchers) asks of SQS, not the planner.
DRAINER_OPERATIONS = frozenset({"ReceiveMessage", "DeleteMessageBatch"})
# Enough for the queue to stay short while the planner sends (moto's SQS calls slow down with its depth).
DRAINERS = 2
QUEUE_DEPTH = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")


def run(workdir: Path) -> dict[str, Any]:
    port = free_port()
    with _moto_server(workdir, port):
        cloud = LocalCloud(CloudConfig(moto_port=port, log_dir=workdir / "logs", seed_demo=False))
        stack = cloud.provision()
        spec = next(spec for spec in cloud.specs if spec.logical_id == PLANNER)
        environment = function_environment(stack, spec, cloud.aws_environment())
        with support.environment(cloud.aws_environment()):
            # The clients a Lambda execution environment builds (AWS_ENDPOINT_URL points them at moto).
            store = BillsTable(aws_client("dynamodb"), environment["TABLE_NAME"])
            queue = FetchQueue(aws_client("sqs"), environment["FETCH_QUEUE_URL"])
            sqs = aws_client("sqs")
            result = _measure(store, queue, sqs, environment["FETCH_QUEUE_URL"], f"http://{HOST}:{port}", spec.timeout)
    result["lambda_memory_mb"] = spec.memory_mb
    result["estimates"] = _estimates(result)
    return result


def _measure(
    store: BillsTable, queue: FetchQueue, sqs: Any, queue_url: str, endpoint: str, timeout_seconds: int
) -> dict[str, Any]:
    now = datetime.now(UTC)
    due, not_due = _accounts(now, random.Random(4))
    seed = _seed(store, due + not_due, endpoint)
    latency = _latencies(store, sqs, queue_url)

    # Fetchers take the messages off the queue while the planner sends, as in production; moto's queue
    # must stay short anyway, as its SendMessage takes time in proportion to the messages already queued.
    with _drained(queue_url) as drained:
        # The same stretch of time one batch at a time (as the planner worked before it took several at
        # once), then as deployed; both runs stop at their time limit. Then the rest, as deployed.
        window = timedelta(seconds=WINDOW_SECONDS)
        sequential = _planner_run(store, queue, now, endpoint, 1, window)
        concurrent = _planner_run(store, queue, now, endpoint, refresh.PLANNER_CONCURRENCY, window)
        rest = _planner_run(store, queue, now, endpoint, refresh.PLANNER_CONCURRENCY, None)
    runs = (sequential, concurrent, rest)
    left = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    check = _check(store, now, due, not_due, list(drained.received.values()))
    check["left_in_queue"] = sum(int(left[name]) for name in QUEUE_DEPTH)
    check["passed"] = (
        check["passed"]
        and check["left_in_queue"] == 0
        and [run["finished"] for run in runs] == [False, False, True]
        and sum(run["planned"] for run in runs) == len(due)
    )
    idle = _planner_run(store, queue, now, endpoint, refresh.PLANNER_CONCURRENCY, None)

    planned = sum(run["planned"] for run in runs)
    requests = sum((Counter(run["requests"]) for run in runs), Counter[str]())
    deployed_planned = concurrent["planned"] + rest["planned"]
    deployed_rate = deployed_planned / (concurrent["seconds"] + rest["seconds"])
    deployed_cpu_ms = (concurrent["cpu_seconds"] + rest["cpu_seconds"]) * 1000 / deployed_planned
    per_invocation = deployed_rate * timeout_seconds * refresh.PLANNING_SHARE
    return {
        "due_accounts": len(due),
        "not_due_accounts": len(not_due),
        "users": DUE_USERS + NOT_DUE_USERS,
        "seed": seed,
        "planned": planned,
        "requests": dict(requests),
        "requests_per_10000": {name: round(count * PER / planned, 1) for name, count in sorted(requests.items())},
        "runs": {"sequential": sequential, "concurrent": concurrent, "rest": rest},
        "speedup": round(concurrent["accounts_per_second"] / sequential["accounts_per_second"], 2),
        "accounts_per_second": round(deployed_rate, 1),
        "client_cpu_ms_per_account": round(deployed_cpu_ms, 2),
        "check": check,
        "received_messages": len(drained.received),
        "drainer_requests": drained.requests,
        "idle_run": idle,
        "latency": latency,
        "lambda_timeout_seconds": timeout_seconds,
        "planning_share": refresh.PLANNING_SHARE,
        "accounts_per_invocation": int(per_invocation),
    }


def _planner_run(
    store: BillsTable,
    queue: FetchQueue,
    now: datetime,
    endpoint: str,
    concurrency: int,
    time_limit: timedelta | None,
) -> dict[str, Any]:
    """One run of the real planner: what it planned, how fast, and the requests it made."""
    before = _request_counts(endpoint)
    cpu_began, began = time.process_time(), time.perf_counter()
    run = refresh.plan_due_refreshes(store, queue, now, time_limit, concurrency)
    seconds = time.perf_counter() - began
    cpu_seconds = time.process_time() - cpu_began
    counted = _difference(_request_counts(endpoint), before)
    return {
        "concurrency": concurrency,
        "time_limit_seconds": time_limit and time_limit.total_seconds(),
        "planned": run.planned,
        "finished": run.finished,
        "seconds": round(seconds, 2),
        "accounts_per_second": round(run.planned / seconds, 1),
        "cpu_seconds": round(cpu_seconds, 2),
        "client_cpu_ms_per_account": round(cpu_seconds * 1000 / run.planned, 2) if run.planned else None,
        "requests": {name: count for name, count in counted.items() if name not in DRAINER_OPERATIONS},
    }


def _estimates(result: dict[str, Any]) -> dict[str, Any]:
    """Accounts per second and per invocation on AWS, from the client CPU measured here and typical AWS
    latencies (assumed, not measured): one planner at a time and as deployed, at the planner's memory
    size and at the size that gives a whole vCPU."""
    cpu_ms = result["client_cpu_ms_per_account"]
    waiting_ms = ASSUMED_UPDATE_ITEM_MS + ASSUMED_SEND_MESSAGE_BATCH_MS / SQS_BATCH_LIMIT
    estimates: dict[str, Any] = {
        "assumed_update_item_ms": ASSUMED_UPDATE_ITEM_MS,
        "assumed_send_message_batch_ms": ASSUMED_SEND_MESSAGE_BATCH_MS,
        "full_vcpu_memory_mb": FULL_VCPU_MB,
        "by_memory_mb": {},
    }
    for memory_mb in sorted({result["lambda_memory_mb"], FULL_VCPU_MB}):
        # Lambda gives CPU in proportion to memory, a whole vCPU at FULL_VCPU_MB; the GIL uses one.
        cpu = cpu_ms * max(1.0, FULL_VCPU_MB / memory_mb)
        one_at_a_time = 1000 / (cpu + waiting_ms)
        deployed = 1000 / max(cpu, (cpu + waiting_ms) / result["runs"]["rest"]["concurrency"])
        usable = result["lambda_timeout_seconds"] * result["planning_share"]
        estimates["by_memory_mb"][str(memory_mb)] = {
            "cpu_ms_per_account": round(cpu, 2),
            "one_at_a_time_per_second": round(one_at_a_time),
            "one_at_a_time_per_invocation": round(one_at_a_time * result["lambda_timeout_seconds"]),
            "deployed_per_second": round(deployed),
            "deployed_per_invocation": round(deployed * usable),
        }
    return estimates


def _latencies(store: BillsTable, sqs: Any, queue_url: str) -> dict[str, dict[str, float]]:
    """Bare single calls, one after another, with the planner's own clients."""
    client = store.client
    scratch = {"PK": {"S": "BENCH#latency"}, "SK": {"S": "LATENCY"}}
    client.put_item(TableName=store.table_name, Item=scratch)
    return {
        "dynamodb_get_item_ms": _latency(lambda: client.get_item(TableName=store.table_name, Key=scratch)),
        "dynamodb_update_item_ms": _latency(
            lambda: client.update_item(
                TableName=store.table_name,
                Key=scratch,
                UpdateExpression="SET touched = :one",
                ExpressionAttributeValues={":one": {"N": "1"}},
            )
        ),
        "sqs_get_queue_attributes_ms": _latency(
            lambda: sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        ),
    }


# ------------------------------------------------------------------ the data
def _accounts(now: datetime, rng: random.Random) -> tuple[list[Account], list[Account]]:
    """Due accounts (``DUE_USERS`` users, one account at each provider) and accounts not due yet."""

    def users(count: int, due: bool) -> Iterator[Account]:
        for index in range(count):
            user_id = uuid.UUID(int=rng.getrandbits(128)).hex
            interval: RefreshInterval = "daily" if index % 2 == 0 else "weekly"
            period = REFRESH_PERIODS[interval]
            for provider in PROVIDERS:
                # Due: between a minute and (up to) six days ago. Not due: within the coming interval.
                offset = timedelta(seconds=rng.uniform(60, period.total_seconds() * 6 / 7))
                next_refresh_at = now - offset if due else now + offset
                yield Account(
                    account_id=uuid.UUID(int=rng.getrandbits(128)).hex,
                    user_id=user_id,
                    provider=provider,
                    external_ref=f"****{rng.randrange(10_000):04d}",
                    status=AccountStatus.ACTIVE,
                    created_at=next_refresh_at - period,
                    last_success_at=next_refresh_at - period,
                    last_attempt_at=next_refresh_at - period,
                    next_refresh_at=next_refresh_at,
                    refresh_interval=interval,
                )

    return list(users(DUE_USERS, due=True)), list(users(NOT_DUE_USERS, due=False))


def _seed(store: BillsTable, accounts: list[Account], endpoint: str) -> dict[str, Any]:
    """Writes each account's item as ``create_account`` builds it, 25 items a request. (Not their link
    guards, profiles or bills: the planner reads none of them.)"""
    items = [
        store.accounts._account_item(
            account,
            os.urandom(CIPHERTEXT_BYTES),
            keys.link_sk(account.provider, f"{account.provider}-{account.account_id}"),
            identity_pending=False,
        )
        for account in accounts
    ]
    before = _request_counts(endpoint)
    began = time.perf_counter()
    for start in range(0, len(items), BATCH_WRITE_LIMIT):
        pending: dict[str, Any] = {
            store.table_name: [{"PutRequest": {"Item": item}} for item in items[start : start + BATCH_WRITE_LIMIT]]
        }
        while pending:
            pending = store.client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
    seconds = time.perf_counter() - began
    return {
        "items": len(items),
        "seconds": round(seconds, 1),
        "items_per_second": round(len(items) / seconds),
        "requests": _difference(_request_counts(endpoint), before),
    }


@dataclass
class Drained:
    # Each message received, by message id (a standard queue may deliver one twice; the planner's
    # duplicates would be two messages for one account).
    received: dict[str, FetchRequest] = field(default_factory=dict)
    requests: int = 0


@contextlib.contextmanager
def _drained(queue_url: str) -> Iterator[Drained]:
    """Receives and deletes the queue's messages in another process, as the fetchers would, until the
    block has ended and the queue is empty; then ``received`` holds every message."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    ours, theirs = context.Pipe()
    drainer = context.Process(target=_drain, args=(queue_url, dict(os.environ), stop, theirs), daemon=True)
    drainer.start()
    drained = Drained()
    try:
        ours.recv()  # ready
        yield drained
    finally:
        stop.set()
        bodies, drained.requests = ours.recv() if ours.poll(300) else ({}, 0)
        drainer.join(30)
    drained.received = {message_id: FetchRequest.model_validate_json(body) for message_id, body in bodies.items()}


def _drain(queue_url: str, environment: dict[str, str], stop: Any, results: Any) -> None:
    """``DRAINERS`` threads, each long-polling the queue and deleting what it received."""
    os.environ.update(environment)
    # Long polls, and no retries: a receive retried after a timeout would hide the messages it received.
    sqs = boto3.client("sqs", config=Config(read_timeout=60, retries={"total_max_attempts": 1}))
    bodies: dict[str, str] = {}
    calls = Counter[str]()

    def drain() -> None:
        while True:
            stopping = stop.is_set()
            response = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=600, WaitTimeSeconds=1
            )
            calls["receive"] += 1
            messages = response.get("Messages", [])
            if not messages:
                if stopping:
                    return
                continue
            bodies.update((message["MessageId"], message["Body"]) for message in messages)
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                    for index, message in enumerate(messages)
                ],
            )
            calls["delete"] += 1

    threads = [threading.Thread(target=drain) for _ in range(DRAINERS)]
    for thread in threads:
        thread.start()
    results.send("ready")
    for thread in threads:
        thread.join()
    results.send((bodies, calls.total()))


def _check(
    store: BillsTable, now: datetime, due: list[Account], not_due: list[Account], messages: list[FetchRequest]
) -> dict[str, Any]:
    """Whether the planner did exactly its job: one message per due account and nothing else, each due
    account scheduled one interval after ``now``, every other account untouched."""
    sent = Counter((message.user_id, message.account_id) for message in messages)
    expected = {(account.user_id, account.account_id) for account in due}
    schedules = _schedules(store)
    rescheduled = sum(
        schedules.get(account.account_id)
        == keys.refresh_sk(
            account.account_id, now + REFRESH_PERIODS[account.refresh_interval], account.refresh_interval
        )
        for account in due
    )
    untouched = sum(
        schedules.get(account.account_id)
        == keys.refresh_sk(account.account_id, account.next_refresh_at, account.refresh_interval)
        for account in not_due
    )
    result: dict[str, Any] = {
        "one_message_per_due_account": set(sent) == expected and max(sent.values(), default=0) == 1,
        "all_reason_schedule": all(message.reason == "schedule" for message in messages),
        "due_rescheduled": rescheduled,
        "not_due_untouched": untouched,
    }
    result["passed"] = (
        result["one_message_per_due_account"]
        and result["all_reason_schedule"]
        and rescheduled == len(due)
        and untouched == len(not_due)
    )
    return result


def _schedules(store: BillsTable) -> dict[str, str]:
    """Every account's GSI1SK, read from the refresh index."""
    paginator = store.client.get_paginator("query")
    found: dict[str, str] = {}
    for shard in range(keys.REFRESH_SHARDS):
        for page in paginator.paginate(
            TableName=store.table_name,
            IndexName="GSI1",
            KeyConditionExpression="GSI1PK = :shard",
            ExpressionAttributeValues={":shard": {"S": keys.refresh_pk(shard)}},
        ):
            for item in page["Items"]:
                found[keys.account_id_of(item["SK"]["S"])] = item["GSI1SK"]["S"]
    return found


# ------------------------------------------------------------------ plumbing
def _latency(call: Callable[[], Any]) -> dict[str, float]:
    timings = []
    for _ in range(LATENCY_SAMPLES):
        began = time.perf_counter()
        call()
        timings.append((time.perf_counter() - began) * 1000)
    timings.sort()
    return {
        "median": round(statistics.median(timings), 2),
        "p95": round(timings[int(len(timings) * 0.95)], 2),
        "samples": len(timings),
    }


def _request_counts(endpoint: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{endpoint}{REQUEST_COUNTS_PATH}", timeout=10) as response:  # noqa: S310
        counts: dict[str, int] = json.load(response)
    return counts


def _difference(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """Requests per operation between two counts, named without the service's API version."""
    return {
        name.split(".", 1)[-1]: count - before.get(name, 0)
        for name, count in sorted(after.items())
        if count > before.get(name, 0)
    }


@contextlib.contextmanager
def _moto_server(workdir: Path, port: int) -> Iterator[None]:
    log = (workdir / "moto.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "localcloud.moto_server", HOST, str(port)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: _answers(port) or process.poll() is not None, 30, "the moto server")
        if process.poll() is not None:
            raise RuntimeError(f"the moto server exited: {(workdir / 'moto.log').read_text()[-2000:]}")
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _answers(port: int) -> bool:
    try:
        _request_counts(f"http://{HOST}:{port}")
    except OSError:
        return False
    return True


# ------------------------------------------------------------------ the report
def report(result: dict[str, Any]) -> str:
    runs, check, latency = result["runs"], result["check"], result["latency"]
    sequential, concurrent, rest = runs["sequential"], runs["concurrent"], runs["rest"]
    per = result["requests_per_10000"]
    idle = result["idle_run"]
    timeout = result["lambda_timeout_seconds"]
    usable = timeout * result["planning_share"]
    lines = [
        f"{result['due_accounts']:,} due accounts ({result['users'] - NOT_DUE_USERS:,} users x "
        f"{len(PROVIDERS)} providers, daily and weekly) and {result['not_due_accounts']:,} not due.",
        "",
        "| run | batches at once | time limit | planned | seconds | accounts/s | client CPU ms/account | requests |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, run in (
        ("one batch at a time", sequential),
        ("as deployed", concurrent),
        ("as deployed, the rest", rest),
    ):
        limit = f"{run['time_limit_seconds']:g} s" if run["time_limit_seconds"] else "none"
        lines.append(
            f"| {name} | {run['concurrency']} | {limit} | {run['planned']:,} | {run['seconds']:.1f} "
            f"| {run['accounts_per_second']:.1f} | {run['client_cpu_ms_per_account']} "
            f"| {_breakdown(run['requests'], DYNAMODB_OPERATIONS | SQS_OPERATIONS)} |"
        )
    lines += [
        "",
        "| figure | value |",
        "| --- | ---: |",
        f"| accounts planned per second, as deployed ({concurrent['planned'] + rest['planned']:,} accounts) "
        f"| **{result['accounts_per_second']:.1f}** |",
        f"| speed-up of {concurrent['concurrency']} batches at once over one at a time "
        f"(same {sequential['time_limit_seconds']:g} s) "
        f"| {result['speedup']:g}x |",
        f"| SQS requests per 10,000 due accounts | **{_count(per, SQS_OPERATIONS)}**: "
        f"{_breakdown(per, SQS_OPERATIONS)} |",
        f"| DynamoDB requests per 10,000 due accounts | **{_count(per, CLAIMS)}** `UpdateItem`, and a `Query` "
        f"per shard and run ({_count(per, frozenset({'Query'}))} over the three runs here) |",
        f"| a run with nothing due | {_breakdown(idle['requests'], DYNAMODB_OPERATIONS | SQS_OPERATIONS) or 'none'}, "
        f"{idle['seconds']:.1f} s |",
        f"| moto, bare `GetItem` / `UpdateItem` / SQS call, median (p95) ms "
        f"| {_latency_text(latency['dynamodb_get_item_ms'])} / {_latency_text(latency['dynamodb_update_item_ms'])} "
        f"/ {_latency_text(latency['sqs_get_queue_attributes_ms'])} |",
        f"| due accounts one invocation plans (timeout {timeout} s, plans for {usable:g} s), at this rate "
        f"| {result['accounts_per_invocation']:,} |",
        f"| check: one message per due account, due ones moved on, others untouched, queue empty after "
        f"| {'passed' if check['passed'] else '**failed**'} ({result['received_messages']:,} messages; "
        f"{check['due_rescheduled']:,} moved, {check['not_due_untouched']:,} untouched, "
        f"{check['left_in_queue']} left) |",
        "",
        "On AWS (estimated: the client CPU per account measured here, scaled to Lambda's share of a vCPU, "
        f"plus an assumed {result['estimates']['assumed_update_item_ms']:g} ms per `UpdateItem` and "
        f"{result['estimates']['assumed_send_message_batch_ms']:g} ms per `SendMessageBatch`; one planner thread "
        "runs Python at a time):",
        "",
        "| memory | CPU ms/account | one batch at a time: /s, per invocation | as deployed: /s, per invocation |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for memory, estimate in result["estimates"]["by_memory_mb"].items():
        deployed_memory = " (deployed)" if int(memory) == result["lambda_memory_mb"] else ""
        lines.append(
            f"| {memory} MB{deployed_memory} | {estimate['cpu_ms_per_account']:g} "
            f"| {estimate['one_at_a_time_per_second']:,}, {estimate['one_at_a_time_per_invocation']:,} "
            f"| {estimate['deployed_per_second']:,}, {estimate['deployed_per_invocation']:,} |"
        )
    seed = result["seed"]
    lines += [
        "",
        "**Method.** The local moto server (`python -m localcloud.moto_server`) on a free loopback port, the "
        "template's resources created in it by the local cloud's provisioning (`LocalCloud.provision`). "
        f"Seeding: {seed['items']:,} account items, each built by `Accounts._account_item` (what "
        "`create_account` writes: keys, GSI1 keys, a random 330-byte ciphertext), written 25 per "
        f"`BatchWriteItem` ({seed['seconds']:g} s, {seed['items_per_second']:,} items/s); their link guards, "
        "profiles and bills are left out, as the planner reads none of them. Due accounts became due between "
        "a minute and six days ago, the others are due within their interval. The real "
        "`billhub.refresh.plan_due_refreshes` then runs in the benchmark's process with the clients "
        "`billhub.runtime.aws_client` builds in a Lambda, over HTTP to moto: first one batch at a time (as the "
        f"planner worked before) for {sequential['time_limit_seconds']:g} s, then as deployed for as long, "
        "then as deployed for the rest; both limited runs stop at their limit and leave the rest due. Requests "
        "per operation are diffed from the server's counter (`/_localcloud/requests`) around each run; client "
        "CPU is the benchmark process's (moto runs in its own). While the planner sends, another process "
        "receives and deletes the messages (long polls) as the fetchers would; it also keeps moto's queue "
        "short, whose `SendMessage` otherwise slows in proportion to the messages already queued (10,000 "
        "queued messages take minutes to send). Afterwards every message must name a distinct due account "
        "(all of them), every due account's GSI1 key must be one interval after the planner's `now`, every "
        "other account's must be unchanged, and the queue must be empty. Latencies: "
        f"{latency['dynamodb_get_item_ms']['samples']} sequential bare calls each with the planner's clients, "
        "just before.",
        "",
        "**What the figures mean.** The planner's requests are fixed by its design and are the same on AWS: "
        "one conditional `UpdateItem` per due account (the claim; `BatchWriteItem` takes no conditions), one "
        "`SendMessageBatch` per 10 accounts, and a `Query` per shard of GSI1 and run (keys only, so nothing "
        "else is read); a run with nothing due costs one `Query` per shard. moto sizes its 1 MB pages by whole "
        "items, not the keys-only projection, so a shard of more than about 1,000 due accounts takes a second "
        "page here; DynamoDB fits several thousand keys in one. The time is moto's: it "
        "handles one DynamoDB request at a time and shares this 2-core machine with the planner, so several "
        "batches at once gain little here. On AWS each call waits on the network, so the planner as deployed "
        "is bound by its client CPU (botocore's signing, serialising and parsing: about "
        f"{result['client_cpu_ms_per_account']:g} ms per account here), which a 512 MB Lambda gets under a "
        "third of a vCPU for. A run that stops at its time limit leaves the rest due, and the next scheduled run "
        "plans them first (the longest due first).",
    ]
    return "\n".join(lines)


SQS_OPERATIONS = frozenset({"SendMessageBatch", "SendMessage"})
CLAIMS = frozenset({"UpdateItem"})
DYNAMODB_OPERATIONS = frozenset({"Query", "UpdateItem", "GetItem", "PutItem", "TransactWriteItems", "BatchWriteItem"})


def _count(requests: dict[str, float], operations: frozenset[str]) -> str:
    return f"{sum(count for name, count in requests.items() if name in operations):,.0f}"


def _breakdown(requests: dict[str, float], operations: frozenset[str]) -> str:
    return ", ".join(f"{count:,.0f} `{name}`" for name, count in sorted(requests.items()) if name in operations)


def _latency_text(latency: dict[str, float]) -> str:
    return f"{latency['median']:.1f} ({latency['p95']:.1f})"
