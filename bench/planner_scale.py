"""Planner scale (issue 7, benchmark 4; issue 17, target 1): the planner fanned out per provider and
refresh shard, within each provider's hourly admissions. What one shard worker plans per second and what
it costs per account planned (client CPU, DynamoDB and SQS requests, the admission leases included),
several shard workers at once, and a model from those to 10 M accounts on AWS.

The local moto server (``python -m localcloud.moto_server``) on a free loopback port, the template's
resources created in it by the local cloud's own provisioning, and 10,000 due accounts (2,500 users x 4
providers, half daily and half weekly, due between a minute and six days ago) plus 2,000 not yet due,
each item built by ``Accounts._account_item`` (what a link writes: filed under its provider's shard,
GSI1PK ``keys.refresh_shard(account_id, provider)``) and sent 25 at a time with ``BatchWriteItem``. No
account is under a key from before providers (``REFRESH#<shard>``). Then the scheduled run's real
``billhub.planning.dispatch_shard_work`` puts one unit of work per (provider, shard) and one per legacy
shard on the PlanQueue, and the benchmark takes those messages as Lambda's event source mapping would and
runs the real ``billhub.planning.plan_shard`` for each in this process, with the clients
``billhub.runtime.aws_client`` builds for a Lambda (each worker its own) and the admissions the
PlannerFunction builds (``Admissions.for_registered_providers`` over ``AdmissionCounters``, at the
deployment's PROVIDER_RATE_LIMITS), over HTTP to the moto server: one provider shard's worker alone (with
a short time limit, so it queues a continuation of its unit, which is then taken and run), then two
workers at once, then five at once, then the other units (the legacy ones included, which find nothing
here) as many at once as the mapping's MaximumConcurrency; meanwhile another process takes the fetch
messages off the fetch queues as the fetchers would. Requests are counted by the server (``GET
/_localcloud/requests``, per ``X-Amz-Target``) around each phase, and the admission leases by the
admissions' own clients. Each provider's seeded due accounts are below its hourly cap, so no worker is
refused admissions: the benchmark measures planning. Afterwards every due account must have had exactly
one message and be scheduled one interval on under its provider's shard, every other account must be
untouched, each provider's hour must have admitted exactly its due accounts, and the queues must be
empty; one more scheduled run and its workers (nothing due) give the cost of an idle run.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import queue
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
from billhub.admission import Admissions, hour_of, hourly_caps
from billhub.models import REFRESH_PERIODS, Account, AccountStatus, FetchRequest, RefreshInterval
from billhub.providers import REGISTRY
from billhub.queue import SQS_BATCH_LIMIT, FetchQueue, PlanQueue, ShardWork
from billhub.runtime import aws_client
from billhub.settings import PlannerSettings
from billhub.store import BATCH_WRITE_LIMIT, BillsTable
from billhub.store.service_records import AdmissionCounters

TITLE = "Planner scale"

PROVIDERS = tuple(REGISTRY)
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
# What the drainer (standing in for the fetchers) and the event source mapping (taking the PlanQueue's
# messages) ask of SQS, not the planner.
NOT_THE_PLANNERS = frozenset({"ReceiveMessage", "DeleteMessageBatch", "DeleteMessage"})
# The lone worker's time limit: it stops with most of its unit (some 300 due accounts, a quarter of what
# a shard held before providers were in the keys) still due, and queues a continuation.
SINGLE_TIME_LIMIT_SECONDS = 1.5
# DynamoDB's write units a second per partition (and per item), and those a claim costs in GSI1 (its keys
# change: a delete and a put of the index entry, both in its (provider, shard) partition).
GSI_PARTITION_WRITES_PER_SECOND = 1000
GSI_WRITES_PER_CLAIM = 2
TEN_MILLION = 10_000_000
# Issue 17: three times the due rate of 10 M accounts refreshed daily.
TARGET_ACCOUNTS_PER_SECOND = 350
# Enough for the queue to stay short while the planner sends (moto's SQS calls slow down with its depth).
DRAINERS = 2
QUEUE_DEPTH = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")
STOP_REASONS: tuple[planning.StopReason, ...] = ("all_due_planned", "out_of_time", "admissions_spent")


def run(workdir: Path) -> dict[str, Any]:
    port = free_port()
    with _moto_server(workdir, port):
        cloud = LocalCloud(CloudConfig(moto_port=port, log_dir=workdir / "logs", seed_demo=False))
        stack = cloud.provision()
        spec = next(spec for spec in cloud.specs if spec.logical_id == PLANNER)
        (binding,) = spec.queues
        environment = function_environment(stack, spec, cloud.aws_environment())
        settings = PlannerSettings.from_environ(environment)
        with support.environment(cloud.aws_environment()):
            # The clients a Lambda execution environment builds (AWS_ENDPOINT_URL points them at moto).
            store = BillsTable(aws_client("dynamodb"), settings.TABLE_NAME)
            queues = Queues(settings.FETCH_QUEUE_URL, settings.PLAN_QUEUE_URL, dict(settings.FETCH_QUEUE_URLS))
            deployment = Deployment(
                timeout_seconds=spec.timeout,
                max_concurrent_workers=binding.maximum_concurrency,
                rate_limits=dict(settings.PROVIDER_RATE_LIMITS),
            )
            result = _measure(store, queues, f"http://{HOST}:{port}", deployment)
    result["lambda_memory_mb"] = spec.memory_mb
    result["max_concurrent_workers"] = binding.maximum_concurrency
    result["estimates"] = _estimates(result)
    result["capacity_accounts_per_second"] = result["estimates"]["capacity_accounts_per_second"]
    return result


@dataclass(frozen=True)
class Deployment:
    """What the template gives the PlannerFunction: its timeout, its PlanQueue mapping's MaximumConcurrency,
    and the providers' agreed rate limits (PROVIDER_RATE_LIMITS) its admissions are built from."""

    timeout_seconds: int
    max_concurrent_workers: int
    rate_limits: dict[str, int]


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


def _unit_order(work: ShardWork) -> tuple[int, int]:
    """Providers in the registry's order, each's shards in order; the legacy shards last."""
    return (PROVIDERS.index(work.provider) if work.provider is not None else len(PROVIDERS), work.shard)


def _unit_name(work: ShardWork) -> str:
    return f"{work.provider or 'legacy'}#{work.shard}"


def _measure(store: BillsTable, queues: Queues, endpoint: str, deployment: Deployment) -> dict[str, Any]:
    now = datetime.now(UTC)
    caps = hourly_caps(deployment.rate_limits)
    due, not_due = _accounts(now, random.Random(4))
    due_by_provider = Counter(account.provider for account in due)
    if over := {name: count for name, count in due_by_provider.items() if count >= caps[name]}:
        # The benchmark measures planning: a provider's worker refused admissions would plan less.
        raise RuntimeError(f"seeded due accounts reach their provider's hourly cap {caps}: {over}")
    seed = _seed(store, due + not_due, endpoint)
    sqs = aws_client("sqs")
    latency = _latencies(store, sqs, queues.fetch_url)
    due_by_unit = Counter(keys.refresh_shard(account.account_id, account.provider) for account in due)
    expected_work = sorted(
        (ShardWork(shard=shard.shard, provider=shard.provider) for shard in planning.all_refresh_shards()),
        key=_unit_order,
    )
    at_once = deployment.max_concurrent_workers

    # Fetchers take the messages off the queue while the planner sends, as in production; moto's queue
    # must stay short anyway, as its SendMessage takes time in proportion to the messages already queued.
    with _drained(queues.fetch_urls) as drained:
        dispatch = _dispatch(queues, endpoint, now)
        work = _take_plan_work(sqs, queues.plan_url)
        if work != expected_work:
            raise RuntimeError(
                f"the scheduled run queued {[_unit_name(unit) for unit in work]}, not one unit per "
                "(provider, shard) and one per legacy shard"
            )
        provider_units = [unit for unit in work if unit.provider is not None]
        legacy_units = [unit for unit in work if unit.provider is None]
        first, second, five = provider_units[:1], provider_units[1:3], provider_units[3:8]
        rest = provider_units[8:] + legacy_units

        def run_phase(units: list[ShardWork], time_limit: timedelta | None = None, most: int | None = None) -> Any:
            return _phase(store, queues, now, endpoint, units, time_limit, deployment.rate_limits, most)

        # One worker alone, stopped early so that it leaves a continuation, which is then run.
        single = run_phase(first, timedelta(seconds=SINGLE_TIME_LIMIT_SECONDS))
        continuation = _take_plan_work(sqs, queues.plan_url)
        single_rest = run_phase(continuation)
        pair = run_phase(second)
        many = run_phase(five)
        # The rest as the event source mapping runs them: at most MaximumConcurrency workers at once.
        others = run_phase(rest, most=at_once)
        left_plan_work = _take_plan_work(sqs, queues.plan_url)
    phases = {
        "one_worker": single,
        "its_continuation": single_rest,
        "two_workers": pair,
        "five_workers": many,
        "the_rest": others,
    }
    left = [sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"] for url in queues.fetch_urls]
    check = _check(store, now, due, not_due, list(drained.received.values()))
    check["left_in_queue"] = sum(int(counts[name]) for counts in left for name in QUEUE_DEPTH)
    check["continuation_queued"] = continuation == first and not single["finished"] and single_rest["planned"] > 0
    check["plan_work_left"] = len(left_plan_work)
    check["admission_refusals"] = sum(phase["stopped"]["admissions_spent"] for phase in phases.values())
    check["legacy_units_planned"] = sum(others["planned_by_unit"].get(_unit_name(unit), 0) for unit in legacy_units)
    admitted = _admitted(store, now)
    check["admitted_by_provider"] = admitted
    check["admitted_the_due"] = admitted == dict(sorted(due_by_provider.items()))
    planned = sum(phase["planned"] for phase in phases.values())
    requests = sum((Counter(phase["requests"]) for phase in phases.values()), Counter[str]())
    requests.update(dispatch["requests"])
    leases = sum(phase["admission_leases"] for phase in phases.values())
    claims = requests["UpdateItem"] - leases
    # A claim of an account under a provider's key is one UpdateItem; a legacy key's claim would add its
    # refiling write: none here.
    check["one_claim_write_per_account"] = claims == planned
    check["passed"] = (
        check["passed"]
        and check["left_in_queue"] == 0
        and check["continuation_queued"]
        and not left_plan_work
        and all(phase["finished"] for key, phase in phases.items() if key != "one_worker")
        and planned == len(due)
        and check["admission_refusals"] == 0
        and check["legacy_units_planned"] == 0
        and check["admitted_the_due"]
        and check["one_claim_write_per_account"]
    )
    idle_dispatch = _dispatch(queues, endpoint, now)
    idle = run_phase(_take_plan_work(sqs, queues.plan_url), most=at_once)

    # One worker's rate and cost, from its two runs (the continuation included), nothing else running.
    worker_planned = single["planned"] + single_rest["planned"]
    worker_seconds = single["seconds"] + single_rest["seconds"]
    worker_cpu_ms = (single["cpu_seconds"] + single_rest["cpu_seconds"]) * 1000 / worker_planned
    return {
        "due_accounts": len(due),
        "not_due_accounts": len(not_due),
        "users": DUE_USERS + NOT_DUE_USERS,
        "shards": keys.REFRESH_SHARDS,
        "providers": len(PROVIDERS),
        "provider_units": len(provider_units),
        "legacy_units": len(legacy_units),
        "hourly_caps": caps,
        "due_by_provider": dict(sorted(due_by_provider.items())),
        "due_by_shard": dict(sorted(due_by_unit.items())),
        "seed": seed,
        "dispatch": dispatch,
        "phases": phases,
        "planned": planned,
        "requests": dict(requests),
        "requests_per_account": {name: round(count / planned, 4) for name, count in sorted(requests.items())},
        "claim_writes_per_account": round(claims / planned, 4),
        "admission_leases": leases,
        "admission_writes_per_account": round(leases / planned, 4),
        "worker_accounts_per_second": round(worker_planned / worker_seconds, 1),
        "client_cpu_ms_per_account": round(worker_cpu_ms, 2),
        "accounts_per_second": round(planned / sum(phase["seconds"] for phase in phases.values()), 1),
        "check": check,
        "received_messages": len(drained.received),
        "drainer_requests": drained.requests,
        "idle_run": {"dispatch": idle_dispatch, "workers": idle},
        "latency": latency,
        "lambda_timeout_seconds": deployment.timeout_seconds,
        "planning_share": planning.PLANNING_SHARE,
        "worker_concurrency": planning.PLANNER_CONCURRENCY,
    }


def _dispatch(queues: Queues, endpoint: str, now: datetime) -> dict[str, Any]:
    """The scheduled run's planning, as the PlannerFunction's: one unit of work per (provider, shard) and
    per legacy shard on the PlanQueue, each provider's from the hour's first shard."""
    before = _request_counts(endpoint)
    began = time.perf_counter()
    shards = planning.dispatch_shard_work(queues.plan(), now)
    return {
        "shards": shards,
        "seconds": round(time.perf_counter() - began, 2),
        "requests": _difference(_request_counts(endpoint), before),
    }


def _take_plan_work(sqs: Any, plan_url: str) -> list[ShardWork]:
    """The units of work on the PlanQueue, taken off it as Lambda's event source mapping would."""
    work = []
    while messages := sqs.receive_message(QueueUrl=plan_url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            work.append(ShardWork.model_validate_json(message["Body"]))
            sqs.delete_message(QueueUrl=plan_url, ReceiptHandle=message["ReceiptHandle"])
    return sorted(work, key=_unit_order)


class _Calls:
    """Counts the requests a client sends (each attempt, as the server counts them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def __call__(self, **_: Any) -> None:
        # A before-send handler that returned something would stand in for the response.
        with self._lock:
            self.count += 1


@dataclass(frozen=True)
class _Environment:
    """What a PlannerFunction execution environment keeps between invocations (``functions/planner/app.py``'s
    cached clients): the table, both queues, and the admissions over a client of their own."""

    store: BillsTable
    fetch_queue: FetchQueue
    plan_queue: PlanQueue
    admissions: Admissions

    @classmethod
    def build(cls, table_name: str, queues: Queues, rate_limits: dict[str, int], leases: _Calls) -> _Environment:
        counters_client = aws_client("dynamodb")
        counters_client.meta.events.register("before-send.dynamodb.UpdateItem", leases)
        return cls(
            store=BillsTable(aws_client("dynamodb"), table_name),
            fetch_queue=queues.fetch(),
            plan_queue=queues.plan(),
            admissions=Admissions.for_registered_providers(AdmissionCounters(counters_client, table_name), rate_limits),
        )


def _phase(
    store: BillsTable,
    queues: Queues,
    now: datetime,
    endpoint: str,
    units: list[ShardWork],
    time_limit: timedelta | None,
    rate_limits: dict[str, int],
    most_at_once: int | None = None,
) -> dict[str, Any]:
    """Shard workers for ``units``, all at once or ``most_at_once`` at a time, each in an execution
    environment of its own (its clients, and its admissions as the PlannerFunction builds them, made
    before the phase is timed, as a Lambda makes them once at its first invocation and keeps them): what
    they planned, how fast, at what client CPU, and the requests they made, the admission leases among them."""
    leases = _Calls()
    at_once = max(1, min(len(units), most_at_once or len(units)))
    environments: queue.SimpleQueue[_Environment] = queue.SimpleQueue()
    for _ in range(at_once):
        environments.put(_Environment.build(store.table_name, queues, rate_limits, leases))

    def worker(work: ShardWork) -> planning.ShardRun:
        # The event source mapping hands each message to an environment that is free.
        environment = environments.get()
        try:
            return planning.plan_shard(
                environment.store,
                environment.fetch_queue,
                environment.plan_queue,
                work,
                now,
                time_limit,
                admissions=environment.admissions,
            )
        finally:
            environments.put(environment)

    before = _request_counts(endpoint)
    cpu_began, began = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="shard-worker") as pool:
        runs = list(pool.map(worker, units))
    seconds = time.perf_counter() - began
    cpu_seconds = time.process_time() - cpu_began
    counted = _difference(_request_counts(endpoint), before)
    planned = sum(run.planned for run in runs)
    stopped = Counter(run.stopped for run in runs)
    return {
        "workers": len(units),
        "at_once": at_once,
        "shards": [_unit_name(unit) for unit in units],
        "time_limit_seconds": time_limit and time_limit.total_seconds(),
        "planned": planned,
        "planned_by_unit": {_unit_name(unit): run.planned for unit, run in zip(units, runs, strict=True)},
        "finished": all(run.finished for run in runs),
        "stopped": {reason: stopped[reason] for reason in STOP_REASONS},
        "seconds": round(seconds, 2),
        "accounts_per_second": round(planned / seconds, 1),
        "per_worker_accounts_per_second": round(planned / seconds / at_once, 1),
        "cpu_seconds": round(cpu_seconds, 2),
        "client_cpu_ms_per_account": round(cpu_seconds * 1000 / planned, 2) if planned else None,
        "requests": {name: count for name, count in counted.items() if name not in NOT_THE_PLANNERS},
        "admission_leases": leases.count,
    }


def _admitted(store: BillsTable, now: datetime) -> dict[str, int]:
    """What each provider's counter of the hour of ``now`` admitted, over every worker."""
    admitted = {}
    for provider in PROVIDERS:
        item = store.client.get_item(
            TableName=store.table_name,
            Key={"PK": {"S": keys.admission_pk(provider)}, "SK": {"S": keys.admission_sk(hour_of(now))}},
            ConsistentRead=True,
        ).get("Item")
        admitted[provider] = int(item["admitted"]["N"]) if item else 0
    return admitted


def _estimates(result: dict[str, Any]) -> dict[str, Any]:
    """A shard worker's accounts per second on AWS, from the client CPU per account measured here and
    typical AWS latencies (assumed, not measured), at the planner's memory size and at a whole vCPU; then
    the capacity of the provider shards' workers at once, against the due rate of 10 M accounts a day."""
    cpu_ms = result["client_cpu_ms_per_account"]
    leases = result["admission_writes_per_account"]
    # The batches' claims and sends, waited on ``worker_concurrency`` at a time.
    waiting_ms = ASSUMED_UPDATE_ITEM_MS * result["claim_writes_per_account"] + (
        ASSUMED_SEND_MESSAGE_BATCH_MS / SQS_BATCH_LIMIT
    )
    # The admission leases, one before each batch, are made by the worker's loop one after another.
    leasing_ms = ASSUMED_UPDATE_ITEM_MS * leases
    usable = result["lambda_timeout_seconds"] * result["planning_share"]
    estimates: dict[str, Any] = {
        "assumed_update_item_ms": ASSUMED_UPDATE_ITEM_MS,
        "assumed_send_message_batch_ms": ASSUMED_SEND_MESSAGE_BATCH_MS,
        "full_vcpu_memory_mb": FULL_VCPU_MB,
        "lease_ms_per_account": round(leasing_ms, 2),
        "by_memory_mb": {},
    }
    for memory_mb in sorted({result["lambda_memory_mb"], FULL_VCPU_MB}):
        # Lambda gives CPU in proportion to memory, a whole vCPU at FULL_VCPU_MB; the GIL uses one. A
        # worker's batches wait on the network at once, so it is bound by its CPU, by its waits shared,
        # or by its leases one after another.
        cpu = cpu_ms * max(1.0, FULL_VCPU_MB / memory_mb)
        per_worker = 1000 / max(cpu, (cpu + waiting_ms) / result["worker_concurrency"], leasing_ms)
        estimates["by_memory_mb"][str(memory_mb)] = {
            "cpu_ms_per_account": round(cpu, 2),
            "worker_per_second": round(per_worker),
            "worker_per_invocation": round(per_worker * usable),
        }
    deployed = estimates["by_memory_mb"][str(result["lambda_memory_mb"])]["worker_per_second"]
    # Each claim rewrites the account's GSI1 keys: a delete and a put in the index (keys only, under
    # 1 KB each), both in its (provider, shard) partition, which takes 1,000 write units a second.
    gsi_ceiling = GSI_PARTITION_WRITES_PER_SECOND / GSI_WRITES_PER_CLAIM
    per_shard = min(deployed, gsi_ceiling)
    # The legacy units find nothing once their accounts have moved (none here): only the provider
    # units' workers plan, at most MaximumConcurrency of them at once.
    workers = min(result["provider_units"], result["max_concurrent_workers"])
    capacity = workers * per_shard
    # Every worker of a provider leases from one counter item a hour, which takes 1,000 writes a second.
    counter_ceiling = round(GSI_PARTITION_WRITES_PER_SECOND / leases) if leases else None
    # What the providers admit (their hourly caps, at the deployment's limits), a second on average.
    admitted_per_second = sum(result["hourly_caps"].values()) / 3600
    due_rate = TEN_MILLION / 86_400
    estimates.update(
        {
            "gsi_partition_ceiling_per_shard": round(gsi_ceiling),
            "per_shard_per_second": round(per_shard),
            "concurrent_workers": workers,
            "capacity_accounts_per_second": round(capacity),
            "admission_counter_ceiling_per_provider": counter_ceiling,
            "admitted_per_second_all_providers": round(admitted_per_second, 1),
            "target_accounts_per_second": TARGET_ACCOUNTS_PER_SECOND,
            "meets_target": capacity >= TARGET_ACCOUNTS_PER_SECOND,
            "ten_million_daily_due_per_second": round(due_rate, 1),
            "capacity_over_due_rate": round(capacity / due_rate, 1),
            # Hourly runs: a day's 10 M accounts fall due over 24 runs; how long one run's share takes.
            "ten_million_run_minutes": round(TEN_MILLION / 24 / capacity / 60, 1),
            # The (provider, shard) units whose workers at once the target needs at this rate each.
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
    account scheduled one interval after ``now`` under its provider's shard, every other account untouched,
    nothing under a key from before providers."""
    sent = Counter((message.user_id, message.account_id) for message in messages)
    expected = {(account.user_id, account.account_id) for account in due}
    schedules = _schedules(store)

    def filed(account: Account, next_refresh_at: datetime) -> tuple[str, str]:
        return (
            keys.refresh_shard(account.account_id, account.provider),
            keys.refresh_sk(account.account_id, next_refresh_at, account.refresh_interval),
        )

    rescheduled = sum(
        schedules.get(account.account_id) == filed(account, now + REFRESH_PERIODS[account.refresh_interval])
        for account in due
    )
    untouched = sum(schedules.get(account.account_id) == filed(account, account.next_refresh_at) for account in not_due)
    legacy_keys = {keys.refresh_pk(shard) for shard in keys.refresh_shards()}
    providers = {account.account_id: account.provider for account in due}
    result: dict[str, Any] = {
        "one_message_per_due_account": set(sent) == expected and max(sent.values(), default=0) == 1,
        "all_reason_schedule": all(message.reason == "schedule" for message in messages),
        "each_to_its_provider": all(message.provider == providers.get(message.account_id) for message in messages),
        "due_rescheduled": rescheduled,
        "not_due_untouched": untouched,
        "under_legacy_keys": sum(pk in legacy_keys for pk, _ in schedules.values()),
    }
    result["passed"] = (
        result["one_message_per_due_account"]
        and result["all_reason_schedule"]
        and result["each_to_its_provider"]
        and rescheduled == len(due)
        and untouched == len(not_due)
        and result["under_legacy_keys"] == 0
    )
    return result


def _schedules(store: BillsTable) -> dict[str, tuple[str, str]]:
    """Every account's GSI1PK and GSI1SK, read from the refresh index: each provider's shards and the
    legacy ones."""
    paginator = store.client.get_paginator("query")
    found: dict[str, tuple[str, str]] = {}
    for shard in planning.all_refresh_shards():
        for page in paginator.paginate(
            TableName=store.table_name,
            IndexName="GSI1",
            KeyConditionExpression="GSI1PK = :shard",
            ExpressionAttributeValues={":shard": {"S": keys.refresh_pk(shard.shard, shard.provider)}},
        ):
            for item in page["Items"]:
                found[keys.account_id_of(item["SK"]["S"])] = (item["GSI1PK"]["S"], item["GSI1SK"]["S"])
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
    caps = result["hourly_caps"]
    lines = [
        "**What changed.** Accounts are now filed under their provider's refresh shard (GSI1PK "
        "`REFRESH#<provider>#<shard>`), and each provider shard's worker leases its provider's hourly "
        "admissions before each batch. The benchmark seeds the accounts as a link now files them, runs "
        "the workers with the admissions the PlannerFunction builds, counts the leases beside the claims, "
        "and counts due accounts per (provider, shard): a shard below is such a unit, a quarter of what a "
        "shard held before. The legacy shards (`REFRESH#<shard>`, accounts filed before providers) are "
        "still dispatched and run, and find nothing in this seed. Each worker's clients are built before its "
        "phase is timed, as a Lambda keeps them between invocations, so the client CPU per account is the "
        "planning's alone (with a quarter of the accounts per unit, building them would weigh four times "
        "as much as before).",
        "",
        f"{result['due_accounts']:,} due accounts ({result['users'] - NOT_DUE_USERS:,} users x "
        f"{result['providers']} providers, daily and weekly) and {result['not_due_accounts']:,} not due, over "
        f"{result['provider_units']} (provider, shard) units ({result['providers']} providers x "
        f"{result['shards']} shards; {min(result['due_by_shard'].values()):,} to "
        f"{max(result['due_by_shard'].values()):,} due each), each provider's due accounts below its hourly "
        f"cap ({_caps_text(result['due_by_provider'], caps)}), so none is refused admission. The scheduled "
        f"run queued one unit of work per (provider, shard) and one per legacy shard ({dispatch['shards']} "
        f"messages: {_breakdown(dispatch['requests'], SQS_OPERATIONS)}); then:",
        "",
        "| phase | workers (at once) | units | time limit | planned | seconds | accounts/s | per worker /s "
        "| client CPU ms/account | requests (admission leases among the `UpdateItem`s) |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    names = {
        "one_worker": "one worker",
        "its_continuation": "its continuation",
        "two_workers": "two workers",
        "five_workers": "five workers",
        "the_rest": "the rest, legacy units included",
    }
    for key, name in names.items():
        phase = phases[key]
        limit = f"{phase['time_limit_seconds']:g} s" if phase["time_limit_seconds"] else "none"
        lines.append(
            f"| {name} | {phase['workers']} ({phase['at_once']}) | {_units_text(phase['shards'])} | {limit} "
            f"| {phase['planned']:,} | {phase['seconds']:.1f} | {phase['accounts_per_second']:.1f} "
            f"| {phase['per_worker_accounts_per_second']:.1f} "
            f"| {phase['client_cpu_ms_per_account']} "
            f"| {_breakdown(phase['requests'], DYNAMODB_OPERATIONS | SQS_OPERATIONS)} "
            f"({phase['admission_leases']:,} leases) |"
        )
    lines += [
        "",
        "| cost per account planned (measured) | value |",
        "| --- | ---: |",
        f"| client CPU ms, one worker alone (botocore's signing, serialising, parsing; this machine) "
        f"| **{result['client_cpu_ms_per_account']:g}** |",
        f"| DynamoDB requests, over every phase | **{_per(per, DYNAMODB_OPERATIONS)}**: "
        f"{_per_breakdown(per, DYNAMODB_OPERATIONS)} |",
        f"| of the `UpdateItem`s: claims / admission leases | **{result['claim_writes_per_account']:.3g}** / "
        f"**{result['admission_writes_per_account']:.3g}** |",
        f"| SQS requests, the dispatch's included | **{_per(per, SQS_OPERATIONS)}**: "
        f"{_per_breakdown(per, SQS_OPERATIONS)} |",
        f"| accounts per second, one worker alone, against local moto | {result['worker_accounts_per_second']:.1f} |",
        "",
        f"**Model on AWS** (the client CPU per account above, scaled to Lambda's share of a vCPU at "
        f"{result['lambda_memory_mb']} MB, plus an assumed {estimates['assumed_update_item_ms']:g} ms per "
        f"`UpdateItem` and {estimates['assumed_send_message_batch_ms']:g} ms per `SendMessageBatch`; a worker "
        f"runs {result['worker_concurrency']} batches at once, one thread runs Python at a time, and leases "
        f"each batch's admissions one after another, {estimates['lease_ms_per_account']:g} ms per account):",
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
    counter_ceiling = estimates["admission_counter_ceiling_per_provider"]
    lines += [
        "",
        "| figure | value |",
        "| --- | ---: |",
        f"| one worker at {result['lambda_memory_mb']} MB, accounts/s | {deployed['worker_per_second']:,} |",
        f"| a (provider, shard) GSI1 partition, claims/s at most (1,000 write units/s, {GSI_WRITES_PER_CLAIM} "
        f"per claim) | {estimates['gsi_partition_ceiling_per_shard']:,} |",
        f"| a provider's admission counter (one item an hour, 1,000 writes/s), accounts/s at most "
        f"| {f'{counter_ceiling:,}' if counter_ceiling is not None else 'n/a'} |",
        f"| workers at once: {result['provider_units']} (provider, shard) units, MaximumConcurrency "
        f"{result['max_concurrent_workers']} | {estimates['concurrent_workers']} |",
        f"| **capacity, accounts planned/s** (workers x min(worker, partition)) "
        f"| **{estimates['capacity_accounts_per_second']:,}** |",
        f"| target (3x the due rate of 10 M accounts daily) | {estimates['target_accounts_per_second']} /s: {met} |",
        f"| due rate of 10 M accounts daily | {estimates['ten_million_daily_due_per_second']:g} /s "
        f"({estimates['capacity_over_due_rate']:g}x under capacity) |",
        f"| an hourly run's share of 10 M accounts (416,667) planned in | "
        f"{estimates['ten_million_run_minutes']:g} min |",
        f"| (provider, shard) units whose workers at once the target needs at this rate each "
        f"| {estimates['shards_for_target']} |",
        f"| scheduled refreshes the providers admit, all four, per second on average (hourly caps / 3,600, "
        f"at the deployment's limits) | {estimates['admitted_per_second_all_providers']:g} |",
        "",
        "| also measured | value |",
        "| --- | ---: |",
        f"| a scheduled run with nothing due, and its {idle['workers']['workers']} workers "
        f"({idle['workers']['at_once']} at once) | "
        f"{_breakdown(idle['dispatch']['requests'], SQS_OPERATIONS)}; "
        f"{_breakdown(idle['workers']['requests'], DYNAMODB_OPERATIONS | SQS_OPERATIONS) or 'none'} "
        f"({idle['workers']['seconds']:.1f} s) |",
        f"| moto, bare `GetItem` / `UpdateItem` / SQS call, median (p95) ms "
        f"| {_latency_text(latency['dynamodb_get_item_ms'])} / {_latency_text(latency['dynamodb_update_item_ms'])} "
        f"/ {_latency_text(latency['sqs_get_queue_attributes_ms'])} |",
        f"| check: one message per due account (to its provider), due ones moved on under their provider's "
        f"shard, others untouched, none under a legacy key, a continuation queued by the worker out of time, "
        f"no admission refused, each provider's hour admitted exactly its due accounts, one claim write per "
        f"account, the queues empty after "
        f"| {'passed' if check['passed'] else '**failed**'} ({result['received_messages']:,} messages; "
        f"{check['due_rescheduled']:,} moved, {check['not_due_untouched']:,} untouched, "
        f"{check['under_legacy_keys']} under legacy keys, {check['admission_refusals']} refusals, "
        f"{check['legacy_units_planned']} planned by legacy units, "
        f"{check['left_in_queue']} fetches and {check['plan_work_left']} units' work left) |",
    ]
    seed = result["seed"]
    lines += [
        "",
        "**Method.** The local moto server (`python -m localcloud.moto_server`) on a free loopback port, the "
        "template's resources created in it by the local cloud's provisioning (`LocalCloud.provision`). "
        f"Seeding: {seed['items']:,} account items, each built by `Accounts._account_item` (what a link "
        "writes: keys, GSI1 keys under the account's provider's shard, a random 330-byte ciphertext), "
        f"written 25 per `BatchWriteItem` ({seed['seconds']:g} s, {seed['items_per_second']:,} items/s); their "
        "link guards, profiles and bills are left out, as the planner reads none of them. Due accounts became "
        "due between a minute and six days ago, the others are due within their interval. The scheduled run's "
        "`billhub.planning.dispatch_shard_work` (given the run's time, as the PlannerFunction gives it) queues "
        "the units' work on the PlanQueue; the benchmark takes the messages off it as Lambda's event source "
        "mapping would, and runs the real `billhub.planning.plan_shard` for each, each worker in an execution "
        "environment of its own: the clients `billhub.runtime.aws_client` builds in a Lambda and the "
        "admissions `functions/planner/app.py` builds (`Admissions.for_registered_providers` over "
        "`AdmissionCounters`, at the deployment's PROVIDER_RATE_LIMITS), made before each phase is timed "
        "(a Lambda makes them once and keeps them; about 0.1 s of client CPU each here, which a shard's "
        "few hundred accounts would otherwise carry), over HTTP to moto, in threads of this process: one "
        f"provider shard's worker alone with a {SINGLE_TIME_LIMIT_SECONDS} s limit (it stops and queues its "
        "unit again), the continuation taken off the queue and run, then two workers at once, then five at "
        "once (these three phases are the first provider's eight units, all leasing from its one counter), "
        "then the other providers' units and the legacy ones, "
        f"{result['max_concurrent_workers']} at a time in as many environments (the mapping's "
        "MaximumConcurrency). "
        "Requests per operation are diffed from the server's counter (`/_localcloud/requests`) around each "
        "phase, without the receives and deletes that stand in for the event source mapping and the "
        "fetchers; the admission leases are the `UpdateItem`s the admissions' own clients sent, and the "
        "claims the other `UpdateItem`s; client CPU is this process's (moto runs in its own). The cost per "
        "account is the lone worker's (its two runs, nothing else running). While the workers send, another "
        "process receives and deletes the fetch messages as the fetchers would, keeping moto's queues short. "
        "Afterwards every message must name a distinct due account (all of them) and its provider, every due "
        "account's GSI1 keys must be its provider's shard and one interval after the planner's `now`, every "
        "other account's must be unchanged, each provider's counter of the hour must hold its due accounts, "
        "and the queues must be empty.",
        "",
        "**What the figures mean.** A worker's requests are fixed by its design and are the same on AWS: one "
        "conditional `UpdateItem` per due account (the claim, which also files the account under its "
        "provider's shard of today's count; an account still under a legacy key would take a second, its "
        "refiling, once in its life: none here), one admission lease `UpdateItem` per batch of 10 (more if "
        "workers of one provider meet at its counter), one `SendMessageBatch` per 10 accounts, and a `Query` "
        "per page of its unit (keys only; moto sizes its pages by whole items, so more pages here than on "
        "DynamoDB). An idle run costs one `Query` per unit, legacy ones included, until the legacy keys are "
        "retired. Local parallel speed-up is bounded by moto, not by the planner: moto serves one DynamoDB "
        f"request at a time (about {1000 / latency['dynamodb_update_item_ms']['median']:.0f} bare "
        "`UpdateItem`s a second here), so several workers at once plan about as many accounts a second "
        "together as one alone, and each gets its share; on AWS every worker is a Lambda of its own with its "
        "own CPU and DynamoDB serves them in parallel, so the capacity is the workers' count (the mapping's "
        "MaximumConcurrency, below the units' count) times one worker's rate, below each (provider, shard) "
        "partition's write ceiling. That is the planner's capacity: what is planned an hour is further held "
        "to each provider's hourly admissions (the last figure of the model), which the seed here stays "
        f"below ({_caps_text(result['due_by_provider'], caps)}). Shards grow without a migration: "
        "`keys.REFRESH_SHARDS` may only grow, every shard below it is dispatched for each provider, and "
        "accounts move to their shard of the new count when next claimed. A worker out of time queues its "
        "own unit again, so one run's backlog is not capped by one invocation; one out of admissions queues "
        "nothing, and its accounts wait, due, for the next hour.",
    ]
    return "\n".join(lines)


def _caps_text(due_by_provider: dict[str, int], caps: dict[str, int]) -> str:
    return ", ".join(f"{name} {due_by_provider.get(name, 0):,} of {cap:,}" for name, cap in caps.items())


def _units_text(units: list[str]) -> str:
    """Units named ``provider#shard``, each provider's shards as ranges: ``sparkgrid#1-2, legacy#0-7``."""
    by_provider: dict[str, list[int]] = {}
    for unit in units:
        provider, number = unit.rsplit("#", 1)
        by_provider.setdefault(provider, []).append(int(number))
    parts = []
    for provider, shards in by_provider.items():
        ordered = sorted(shards)
        runs: list[list[int]] = []
        for shard in ordered:
            if runs and shard == runs[-1][-1] + 1:
                runs[-1].append(shard)
            else:
                runs.append([shard])
        parts.append(f"{provider}#" + ",".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs))
    return ", ".join(parts)


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
