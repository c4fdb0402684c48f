"""Planner scale (issue 7, benchmark 4; issue 17, target 1): the planner fanned out per refresh shard.
What one shard worker plans per second and what it costs per account planned (client CPU, DynamoDB and
SQS requests), several shard workers at once, and a model from those to 10 M accounts on AWS.

The local moto server (``python -m localcloud.moto_server``) on a free loopback port, the template's
resources created in it by the local cloud's own provisioning, and 10,000 due accounts (2,500 users x 4
providers, half daily and half weekly, due between a minute and six days ago) plus 2,000 not yet due,
each item built by ``Accounts._account_item`` (what ``create_account`` writes, filed under its shard by
``keys.refresh_shard``) and sent 25 at a time with ``BatchWriteItem``. Then the scheduled run's real
``billhub.planning.dispatch_shard_work`` puts one unit of work per shard on the PlanQueue, and the
benchmark takes those messages as Lambda's event source mapping would and runs the real
``billhub.planning.plan_shard`` for each in this process, with the clients ``billhub.runtime.aws_client``
builds for a Lambda (each worker its own), over HTTP to the moto server: one worker alone (with a short
time limit, so it queues a continuation of its shard, which is then taken and run), then two workers at
once, then the other five at once; meanwhile another process takes the fetch messages off the FetchQueue
as the fetchers would. Requests are counted by the server (``GET /_localcloud/requests``, per
``X-Amz-Target``) around each phase. Afterwards every due account must have had exactly one message and
be scheduled one interval on, every other account must be untouched and both queues empty; one more
scheduled run and its workers (nothing due) give the cost of an idle run.
"""

from __future__ import annotations

import contextlib
import json
import math
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
from concurrent.futures import ThreadPoolExecutor
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

from billhub import keys, planning
from billhub.models import REFRESH_PERIODS, Account, AccountStatus, FetchRequest, RefreshInterval
from billhub.queue import SQS_BATCH_LIMIT, FetchQueue, PlanQueue, ShardWork
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
# Typical single-call latencies from a Lambda in the same region (assumed for the estimates, not measured).
ASSUMED_UPDATE_ITEM_MS = 5.0
ASSUMED_SEND_MESSAGE_BATCH_MS = 15.0
# Lambda's memory size that comes with one whole vCPU; CPU is given in proportion below it.
FULL_VCPU_MB = 1769
# How long the planner runs one batch at a time, then as deployed, before it plans the rest as deployed.
WINDOW_SECONDS = 20
# What the drainer (standing in for the fetchers) and the event source mapping (taking the PlanQueue's
# messages) ask of SQS, not the planner.
NOT_THE_PLANNERS = frozenset({"ReceiveMessage", "DeleteMessageBatch", "DeleteMessage"})
# The lone worker's time limit: it stops with most of its shard still due, and queues a continuation.
SINGLE_TIME_LIMIT_SECONDS = 5
# DynamoDB's write units a second per partition, and those a claim costs in GSI1 (its keys change: a
# delete and a put of the index entry).
GSI_PARTITION_WRITES_PER_SECOND = 1000
GSI_WRITES_PER_CLAIM = 2
TEN_MILLION = 10_000_000
# Issue 17: three times the due rate of 10 M accounts refreshed daily.
TARGET_ACCOUNTS_PER_SECOND = 350
# Enough for the queue to stay short while the planner sends (moto's SQS calls slow down with its depth).
DRAINERS = 2
QUEUE_DEPTH = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")


def run(workdir: Path) -> dict[str, Any]:
    port = free_port()
    with _moto_server(workdir, port):
        cloud = LocalCloud(CloudConfig(moto_port=port, log_dir=workdir / "logs", seed_demo=False))
        stack = cloud.provision()
        spec = next(spec for spec in cloud.specs if spec.logical_id == PLANNER)
        (binding,) = spec.queues
        environment = function_environment(stack, spec, cloud.aws_environment())
        with support.environment(cloud.aws_environment()):
            # The clients a Lambda execution environment builds (AWS_ENDPOINT_URL points them at moto).
            store = BillsTable(aws_client("dynamodb"), environment["TABLE_NAME"])
            lanes = json.loads(environment.get("FETCH_QUEUE_URLS", "{}"))
            queues = Queues(environment["FETCH_QUEUE_URL"], environment["PLAN_QUEUE_URL"], lanes)
            result = _measure(store, queues, f"http://{HOST}:{port}", spec.timeout)
    result["lambda_memory_mb"] = spec.memory_mb
    result["max_concurrent_workers"] = binding.maximum_concurrency
    result["estimates"] = _estimates(result)
    result["capacity_accounts_per_second"] = result["estimates"]["capacity_accounts_per_second"]
    return result


@dataclass(frozen=True)
class Queues:
    fetch_url: str
    plan_url: str
    # Each provider's fetch lane, beside the default FetchQueue (fetch_url).
    fetch_lanes: dict[str, str] = field(default_factory=dict)

    def fetch(self) -> FetchQueue:
        return FetchQueue(aws_client("sqs"), self.fetch_url, self.fetch_lanes)

    @property
    def fetch_urls(self) -> list[str]:
        """Every queue the planner's fetches may go to: FetchQueue and each lane."""
        return [self.fetch_url, *self.fetch_lanes.values()]

    def plan(self) -> PlanQueue:
        return PlanQueue(aws_client("sqs"), self.plan_url)


def _measure(store: BillsTable, queues: Queues, endpoint: str, timeout_seconds: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    due, not_due = _accounts(now, random.Random(4))
    seed = _seed(store, due + not_due, endpoint)
    sqs = aws_client("sqs")
    latency = _latencies(store, sqs, queues.fetch_url)
    due_by_shard = Counter(keys.refresh_shard(account.account_id) for account in due)

    # Fetchers take the messages off the queue while the planner sends, as in production; moto's queue
    # must stay short anyway, as its SendMessage takes time in proportion to the messages already queued.
    with _drained(queues.fetch_urls) as drained:
        dispatch = _dispatch(queues, endpoint)
        work = _take_plan_work(sqs, queues.plan_url)
        if work != list(keys.refresh_shards()):
            raise RuntimeError(f"the scheduled run queued the work of shards {work}, not one per shard")
        first, second, rest = work[:1], work[1:3], work[3:]
        # One worker alone, stopped early so that it leaves a continuation, which is then run.
        single = _phase(store, queues, now, endpoint, first, timedelta(seconds=SINGLE_TIME_LIMIT_SECONDS))
        continuation = _take_plan_work(sqs, queues.plan_url)
        single_rest = _phase(store, queues, now, endpoint, continuation, None)
        pair = _phase(store, queues, now, endpoint, second, None)
        many = _phase(store, queues, now, endpoint, rest, None)
        left_plan_work = _take_plan_work(sqs, queues.plan_url)
    phases = {"one_worker": single, "its_continuation": single_rest, "two_workers": pair, "five_workers": many}
    left = [sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"] for url in queues.fetch_urls]
    check = _check(store, now, due, not_due, list(drained.received.values()))
    check["left_in_queue"] = sum(int(counts[name]) for counts in left for name in QUEUE_DEPTH)
    check["continuation_queued"] = continuation == first and not single["finished"]
    check["plan_work_left"] = len(left_plan_work)
    check["passed"] = (
        check["passed"]
        and check["left_in_queue"] == 0
        and check["continuation_queued"]
        and not left_plan_work
        and all(phase["finished"] for phase in (single_rest, pair, many))
        and sum(phase["planned"] for phase in phases.values()) == len(due)
    )
    idle_dispatch = _dispatch(queues, endpoint)
    idle = _phase(store, queues, now, endpoint, _take_plan_work(sqs, queues.plan_url), None)

    planned = sum(phase["planned"] for phase in phases.values())
    requests = sum((Counter(phase["requests"]) for phase in phases.values()), Counter[str]())
    requests.update(dispatch["requests"])
    # One worker's rate and cost, from its two runs (the continuation included), nothing else running.
    worker_planned = single["planned"] + single_rest["planned"]
    worker_seconds = single["seconds"] + single_rest["seconds"]
    worker_cpu_ms = (single["cpu_seconds"] + single_rest["cpu_seconds"]) * 1000 / worker_planned
    return {
        "due_accounts": len(due),
        "not_due_accounts": len(not_due),
        "users": DUE_USERS + NOT_DUE_USERS,
        "shards": keys.REFRESH_SHARDS,
        "due_by_shard": dict(sorted(due_by_shard.items())),
        "seed": seed,
        "dispatch": dispatch,
        "phases": phases,
        "planned": planned,
        "requests": dict(requests),
        "requests_per_account": {name: round(count / planned, 4) for name, count in sorted(requests.items())},
        "worker_accounts_per_second": round(worker_planned / worker_seconds, 1),
        "client_cpu_ms_per_account": round(worker_cpu_ms, 2),
        "accounts_per_second": round(planned / sum(phase["seconds"] for phase in phases.values()), 1),
        "check": check,
        "received_messages": len(drained.received),
        "drainer_requests": drained.requests,
        "idle_run": {"dispatch": idle_dispatch, "workers": idle},
        "latency": latency,
        "lambda_timeout_seconds": timeout_seconds,
        "planning_share": planning.PLANNING_SHARE,
        "worker_concurrency": planning.PLANNER_CONCURRENCY,
    }


def _dispatch(queues: Queues, endpoint: str) -> dict[str, Any]:
    """The scheduled run's planning: one unit of work per shard on the PlanQueue."""
    before = _request_counts(endpoint)
    began = time.perf_counter()
    shards = planning.dispatch_shard_work(queues.plan())
    return {
        "shards": shards,
        "seconds": round(time.perf_counter() - began, 2),
        "requests": _difference(_request_counts(endpoint), before),
    }


def _take_plan_work(sqs: Any, plan_url: str) -> list[int]:
    """The shards whose work is on the PlanQueue, taken off it as Lambda's event source mapping would."""
    shards = []
    while messages := sqs.receive_message(QueueUrl=plan_url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            shards.append(ShardWork.model_validate_json(message["Body"]).shard)
            sqs.delete_message(QueueUrl=plan_url, ReceiptHandle=message["ReceiptHandle"])
    return sorted(shards)


def _phase(
    store: BillsTable,
    queues: Queues,
    now: datetime,
    endpoint: str,
    shards: list[int],
    time_limit: timedelta | None,
) -> dict[str, Any]:
    """Shard workers for ``shards``, all at once (each with its own clients, as separate Lambdas):
    what they planned, how fast, at what client CPU, and the requests they made."""

    def worker(shard: int) -> planning.ShardRun:
        own = BillsTable(aws_client("dynamodb"), store.table_name)
        work = ShardWork(shard=shard)
        return planning.plan_shard(own, queues.fetch(), queues.plan(), work, now, time_limit)

    before = _request_counts(endpoint)
    cpu_began, began = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, len(shards)), thread_name_prefix="shard-worker") as pool:
        runs = list(pool.map(worker, shards))
    seconds = time.perf_counter() - began
    cpu_seconds = time.process_time() - cpu_began
    counted = _difference(_request_counts(endpoint), before)
    planned = sum(run.planned for run in runs)
    return {
        "workers": len(shards),
        "shards": shards,
        "time_limit_seconds": time_limit and time_limit.total_seconds(),
        "planned": planned,
        "finished": all(run.finished for run in runs),
        "seconds": round(seconds, 2),
        "accounts_per_second": round(planned / seconds, 1),
        "per_worker_accounts_per_second": round(planned / seconds / max(1, len(shards)), 1),
        "cpu_seconds": round(cpu_seconds, 2),
        "client_cpu_ms_per_account": round(cpu_seconds * 1000 / planned, 2) if planned else None,
        "requests": {name: count for name, count in counted.items() if name not in NOT_THE_PLANNERS},
    }


def _estimates(result: dict[str, Any]) -> dict[str, Any]:
    """A shard worker's accounts per second on AWS, from the client CPU per account measured here and
    typical AWS latencies (assumed, not measured), at the planner's memory size and at a whole vCPU; then
    the capacity of the shards' workers at once, against the due rate of 10 M accounts a day."""
    cpu_ms = result["client_cpu_ms_per_account"]
    waiting_ms = ASSUMED_UPDATE_ITEM_MS + ASSUMED_SEND_MESSAGE_BATCH_MS / SQS_BATCH_LIMIT
    usable = result["lambda_timeout_seconds"] * result["planning_share"]
    estimates: dict[str, Any] = {
        "assumed_update_item_ms": ASSUMED_UPDATE_ITEM_MS,
        "assumed_send_message_batch_ms": ASSUMED_SEND_MESSAGE_BATCH_MS,
        "full_vcpu_memory_mb": FULL_VCPU_MB,
        "by_memory_mb": {},
    }
    for memory_mb in sorted({result["lambda_memory_mb"], FULL_VCPU_MB}):
        # Lambda gives CPU in proportion to memory, a whole vCPU at FULL_VCPU_MB; the GIL uses one. A
        # worker's batches wait on the network at once, so it is bound by its CPU or by its waits shared.
        cpu = cpu_ms * max(1.0, FULL_VCPU_MB / memory_mb)
        per_worker = 1000 / max(cpu, (cpu + waiting_ms) / result["worker_concurrency"])
        estimates["by_memory_mb"][str(memory_mb)] = {
            "cpu_ms_per_account": round(cpu, 2),
            "worker_per_second": round(per_worker),
            "worker_per_invocation": round(per_worker * usable),
        }
    deployed = estimates["by_memory_mb"][str(result["lambda_memory_mb"])]["worker_per_second"]
    # Each claim rewrites the account's GSI1 keys: a delete and a put in the index (keys only, under
    # 1 KB each), both in its shard's partition, which takes 1,000 write units a second.
    gsi_ceiling = GSI_PARTITION_WRITES_PER_SECOND / GSI_WRITES_PER_CLAIM
    per_shard = min(deployed, gsi_ceiling)
    workers = min(result["shards"], result["max_concurrent_workers"])
    capacity = workers * per_shard
    due_rate = TEN_MILLION / 86_400
    estimates.update(
        {
            "gsi_partition_ceiling_per_shard": round(gsi_ceiling),
            "per_shard_per_second": round(per_shard),
            "concurrent_workers": workers,
            "capacity_accounts_per_second": round(capacity),
            "target_accounts_per_second": TARGET_ACCOUNTS_PER_SECOND,
            "meets_target": capacity >= TARGET_ACCOUNTS_PER_SECOND,
            "ten_million_daily_due_per_second": round(due_rate, 1),
            "capacity_over_due_rate": round(capacity / due_rate, 1),
            # Hourly runs: a day's 10 M accounts fall due over 24 runs; how long one run's share takes.
            "ten_million_run_minutes": round(TEN_MILLION / 24 / capacity / 60, 1),
            # The count at which the target needs no more than the shards' workers.
            "shards_for_target": math.ceil(TARGET_ACCOUNTS_PER_SECOND / per_shard),
        }
    )
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
def _drained(queue_urls: list[str]) -> Iterator[Drained]:
    """Receives and deletes the queues' messages in another process, as the fetchers would, until the
    block has ended and the queues are empty; then ``received`` holds every message."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    ours, theirs = context.Pipe()
    drainer = context.Process(target=_drain, args=(queue_urls, dict(os.environ), stop, theirs), daemon=True)
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


def _drain(queue_urls: list[str], environment: dict[str, str], stop: Any, results: Any) -> None:
    """``DRAINERS`` threads per queue, each long-polling it and deleting what it received."""
    os.environ.update(environment)
    # Long polls, and no retries: a receive retried after a timeout would hide the messages it received.
    sqs = boto3.client("sqs", config=Config(read_timeout=60, retries={"total_max_attempts": 1}))
    bodies: dict[str, str] = {}
    calls = Counter[str]()

    def drain(queue_url: str) -> None:
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

    threads = [threading.Thread(target=drain, args=(url,)) for url in queue_urls for _ in range(DRAINERS)]
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
    for shard in keys.refresh_shards():
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
    phases, check, latency, estimates = result["phases"], result["check"], result["latency"], result["estimates"]
    per = result["requests_per_account"]
    idle = result["idle_run"]
    deployed = estimates["by_memory_mb"][str(result["lambda_memory_mb"])]
    dispatch = result["dispatch"]
    lines = [
        f"{result['due_accounts']:,} due accounts ({result['users'] - NOT_DUE_USERS:,} users x "
        f"{len(PROVIDERS)} providers, daily and weekly) and {result['not_due_accounts']:,} not due, over "
        f"{result['shards']} refresh shards ({min(result['due_by_shard'].values()):,} to "
        f"{max(result['due_by_shard'].values()):,} due each). The scheduled run queued one unit of work per "
        f"shard ({dispatch['shards']} messages: {_breakdown(dispatch['requests'], SQS_OPERATIONS)}); then:",
        "",
        "| phase | workers at once | shards | time limit | planned | seconds | accounts/s | per worker /s "
        "| client CPU ms/account | requests |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    names = {
        "one_worker": "one worker",
        "its_continuation": "its continuation",
        "two_workers": "two workers",
        "five_workers": "five workers",
    }
    for key, name in names.items():
        phase = phases[key]
        limit = f"{phase['time_limit_seconds']:g} s" if phase["time_limit_seconds"] else "none"
        lines.append(
            f"| {name} | {phase['workers']} | {', '.join(map(str, phase['shards']))} | {limit} "
            f"| {phase['planned']:,} | {phase['seconds']:.1f} | {phase['accounts_per_second']:.1f} "
            f"| {phase['per_worker_accounts_per_second']:.1f} "
            f"| {phase['client_cpu_ms_per_account']} "
            f"| {_breakdown(phase['requests'], DYNAMODB_OPERATIONS | SQS_OPERATIONS)} |"
        )
    lines += [
        "",
        "| cost per account planned (measured) | value |",
        "| --- | ---: |",
        f"| client CPU ms, one worker alone (botocore's signing, serialising, parsing; this machine) "
        f"| **{result['client_cpu_ms_per_account']:g}** |",
        f"| DynamoDB requests, over every phase | **{_per(per, DYNAMODB_OPERATIONS)}**: "
        f"{_per_breakdown(per, DYNAMODB_OPERATIONS)} |",
        f"| SQS requests, the dispatch's included | **{_per(per, SQS_OPERATIONS)}**: "
        f"{_per_breakdown(per, SQS_OPERATIONS)} |",
        f"| accounts per second, one worker alone, against local moto | {result['worker_accounts_per_second']:.1f} |",
        "",
        f"**Model on AWS** (the client CPU per account above, scaled to Lambda's share of a vCPU at "
        f"{result['lambda_memory_mb']} MB, plus an assumed {estimates['assumed_update_item_ms']:g} ms per "
        f"`UpdateItem` and {estimates['assumed_send_message_batch_ms']:g} ms per `SendMessageBatch`; a worker "
        f"runs {result['worker_concurrency']} batches at once, one thread runs Python at a time):",
        "",
        "| memory | CPU ms/account | one worker: accounts/s | per invocation (plans for "
        f"{result['lambda_timeout_seconds'] * result['planning_share']:g} s) |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for memory, estimate in estimates["by_memory_mb"].items():
        deployed_memory = " (deployed)" if int(memory) == result["lambda_memory_mb"] else ""
        lines.append(
            f"| {memory} MB{deployed_memory} | {estimate['cpu_ms_per_account']:g} "
            f"| {estimate['worker_per_second']:,} | {estimate['worker_per_invocation']:,} |"
        )
    met = "met" if estimates["meets_target"] else "**missed**"
    lines += [
        "",
        "| figure | value |",
        "| --- | ---: |",
        f"| one worker at {result['lambda_memory_mb']} MB, accounts/s | {deployed['worker_per_second']:,} |",
        f"| a shard's GSI1 partition, claims/s at most (1,000 write units/s, {GSI_WRITES_PER_CLAIM} per claim) "
        f"| {estimates['gsi_partition_ceiling_per_shard']:,} |",
        f"| workers at once: {result['shards']} shards, MaximumConcurrency {result['max_concurrent_workers']} "
        f"| {estimates['concurrent_workers']} |",
        f"| **capacity, accounts planned/s** (workers x min(worker, partition)) "
        f"| **{estimates['capacity_accounts_per_second']:,}** |",
        f"| target (3x the due rate of 10 M accounts daily) | {estimates['target_accounts_per_second']} /s: {met} |",
        f"| due rate of 10 M accounts daily | {estimates['ten_million_daily_due_per_second']:g} /s "
        f"({estimates['capacity_over_due_rate']:g}x under capacity) |",
        f"| an hourly run's share of 10 M accounts (416,667) planned in | "
        f"{estimates['ten_million_run_minutes']:g} min |",
        f"| shards the target needs at this per-shard rate | {estimates['shards_for_target']} |",
        "",
        "| also measured | value |",
        "| --- | ---: |",
        f"| a scheduled run with nothing due, and its workers | "
        f"{_breakdown(idle['dispatch']['requests'], SQS_OPERATIONS)}; "
        f"{_breakdown(idle['workers']['requests'], DYNAMODB_OPERATIONS | SQS_OPERATIONS) or 'none'} "
        f"({idle['workers']['seconds']:.1f} s) |",
        f"| moto, bare `GetItem` / `UpdateItem` / SQS call, median (p95) ms "
        f"| {_latency_text(latency['dynamodb_get_item_ms'])} / {_latency_text(latency['dynamodb_update_item_ms'])} "
        f"/ {_latency_text(latency['sqs_get_queue_attributes_ms'])} |",
        f"| check: one message per due account, due ones moved on, others untouched, a continuation queued "
        f"by the worker out of time, both queues empty after "
        f"| {'passed' if check['passed'] else '**failed**'} ({result['received_messages']:,} messages; "
        f"{check['due_rescheduled']:,} moved, {check['not_due_untouched']:,} untouched, "
        f"{check['left_in_queue']} fetches and {check['plan_work_left']} shards' work left) |",
    ]
    seed = result["seed"]
    lines += [
        "",
        "**Method.** The local moto server (`python -m localcloud.moto_server`) on a free loopback port, the "
        "template's resources created in it by the local cloud's provisioning (`LocalCloud.provision`). "
        f"Seeding: {seed['items']:,} account items, each built by `Accounts._account_item` (what "
        "`create_account` writes: keys, GSI1 keys under the account's shard, a random 330-byte ciphertext), "
        f"written 25 per `BatchWriteItem` ({seed['seconds']:g} s, {seed['items_per_second']:,} items/s); their "
        "link guards, profiles and bills are left out, as the planner reads none of them. Due accounts became "
        "due between a minute and six days ago, the others are due within their interval. The scheduled run's "
        "`billhub.planning.dispatch_shard_work` queues the shards' work on the PlanQueue; the benchmark takes "
        "the messages off it as Lambda's event source mapping would, and runs the real "
        "`billhub.planning.plan_shard` for each, each worker with its own clients as `billhub.runtime.aws_client` "
        "builds them in a Lambda, over HTTP to moto, in threads of this process: one worker alone with a "
        f"{SINGLE_TIME_LIMIT_SECONDS} s limit (it stops and queues its shard again), the continuation taken "
        "off the queue and run, then two workers at once, then the other five at once. Requests per "
        "operation are diffed from the server's counter (`/_localcloud/requests`) around each phase, without "
        "the receives and deletes that stand in for the event source mapping and the fetchers; client CPU is "
        "this process's (moto runs in its own). The cost per account is the lone worker's (its two runs, "
        "nothing else running). While the workers send, another process receives and deletes the fetch "
        "messages as the fetchers would, keeping moto's queue short. Afterwards every message must name a "
        "distinct due account (all of them), every due account's GSI1 key must be one interval after the "
        "planner's `now`, every other account's must be unchanged, and both queues must be empty.",
        "",
        "**What the figures mean.** A worker's requests are fixed by its design and are the same on AWS: one "
        "conditional `UpdateItem` per due account (the claim, which also files the account under its shard of "
        "today's count), one `SendMessageBatch` per 10 accounts, and a `Query` per page of its shard (keys "
        "only; moto sizes its pages by whole items, so more pages here than on DynamoDB). Local parallel "
        "speed-up is bounded by moto, not by the planner: moto serves one DynamoDB request at a time (about "
        f"{1000 / latency['dynamodb_update_item_ms']['median']:.0f} bare `UpdateItem`s a second here), so "
        "two or five workers at once plan about as many accounts a second together as one alone, and each "
        "gets its share; on AWS every worker is a Lambda of its own with its own CPU and DynamoDB serves "
        "them in parallel, so the capacity is the workers' count times one worker's rate, below each shard "
        "partition's write ceiling. Shards grow without a migration: `keys.REFRESH_SHARDS` may only grow, "
        "every shard below it is dispatched, and accounts move to their shard of the new count when next "
        "claimed. A worker out of time queues its own shard again, so one run's backlog is not capped by "
        "one invocation.",
    ]
    return "\n".join(lines)


SQS_OPERATIONS = frozenset({"SendMessageBatch", "SendMessage"})
DYNAMODB_OPERATIONS = frozenset({"Query", "UpdateItem", "GetItem", "PutItem", "TransactWriteItems", "BatchWriteItem"})


def _per(requests: dict[str, float], operations: frozenset[str]) -> str:
    return f"{sum(count for name, count in requests.items() if name in operations):.3g}"


def _per_breakdown(requests: dict[str, float], operations: frozenset[str]) -> str:
    return ", ".join(f"{count:.3g} `{name}`" for name, count in sorted(requests.items()) if name in operations)


def _breakdown(requests: dict[str, float], operations: frozenset[str]) -> str:
    return ", ".join(f"{count:,.0f} `{name}`" for name, count in sorted(requests.items()) if name in operations)


def _latency_text(latency: dict[str, float]) -> str:
    return f"{latency['median']:.1f} ({latency['p95']:.1f})"
