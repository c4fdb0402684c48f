"""The refresh schedule filed per provider, and each provider's hourly admissions, against moto: accounts
filed before the provider was in the key are still planned and move to their provider's key; a provider
whose due accounts outgrow its hour's cap has the longest due of them admitted, hour after hour, and the
rest left due (never a continuation, never a backlog on the fetch queue), while other providers are
planned in full. ``now`` is passed to every planner explicitly, from the test's clock."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import boto3

from billhub import keys
from billhub.admission import Admissions, hour_of
from billhub.models import Account, AccountStatus
from billhub.planning import ShardRun, dispatch_shard_work, plan_shard
from billhub.queue import FetchQueue, ShardWork
from billhub.store.service_records import AdmissionCounters
from tests.conftest import Clock
from tests.integration.harness import Api
from tests.integration.test_planner_and_throttle import (
    account_in_shard,
    filed_shards,
    plan_queue,
    receive_plan_work,
    run_planner,
    table,
)

# Caps large enough that no test account waits for them, but for the providers a test names.
UNBOUNDED = {"sparkgrid": 10_000, "northgas": 10_000, "clearwater": 10_000, "fibrelink": 10_000}


def store_account(api: Api, user_id: str, provider: str, now: datetime, due_at: datetime, account_id: str) -> None:
    """An account of ``provider``, stored as a link stores it (filed under its provider's shard)."""
    account = Account(
        account_id=account_id,
        user_id=user_id,
        provider=provider,
        external_ref="****0000",
        status=AccountStatus.ACTIVE,
        created_at=now - timedelta(days=1),
        next_refresh_at=due_at,
    )
    api.refresh.bills_table().accounts.create_account(account, f"{provider}-{account_id}", b"ciphertext")


def due_accounts(api: Api, provider: str, count: int, now: datetime, shard: int | None = None) -> list[str]:
    """``count`` accounts of ``provider`` (of one user; all in ``shard`` if given), due one minute apart,
    the first due longest, the last one minute before ``now``."""
    user_id = api.user(f"{provider}-{uuid.uuid4().hex[:8]}@example.com")
    accounts = []
    for index in range(count):
        account_id = uuid.uuid4().hex if shard is None else account_in_shard(shard)
        store_account(api, user_id, provider, now, now - timedelta(minutes=count - index), account_id)
        accounts.append(account_id)
    return accounts


def file_as_before_providers(api: Api, account_ids: list[str]) -> None:
    """Files each account under the key it would have had before providers were in the keys."""
    client = boto3.client("dynamodb")
    for page in client.get_paginator("scan").paginate(TableName=api.stack.refs["BillsTable"]):
        for item in page["Items"]:
            if item.get("type", {}).get("S") == "account" and keys.account_id_of(item["SK"]["S"]) in account_ids:
                client.update_item(
                    TableName=api.stack.refs["BillsTable"],
                    Key={"PK": item["PK"], "SK": item["SK"]},
                    UpdateExpression="SET GSI1PK = :legacy",
                    ExpressionAttributeValues={
                        ":legacy": {"S": keys.refresh_shard(keys.account_id_of(item["SK"]["S"]))}
                    },
                )


def admissions(api: Api, caps: Mapping[str, int]) -> Admissions:
    return Admissions(AdmissionCounters(boto3.client("dynamodb"), api.stack.refs["BillsTable"]), caps)


def scheduled_run(api: Api, now: datetime, caps: Mapping[str, int]) -> tuple[list[str], list[ShardRun]]:
    """One scheduled run with these hourly ``caps``: every shard's work dispatched, then done by workers
    one after another, none of which (with no time limit) may leave a continuation; the accounts
    enqueued, and the runs."""
    dispatch_shard_work(plan_queue(api), now)
    store, fetch_queue = api.planner.store(), api.planner.queue()
    runs: list[ShardRun] = []
    for message in receive_plan_work(api):
        work = ShardWork.model_validate_json(message["Body"])
        runs.append(plan_shard(store, fetch_queue, plan_queue(api), work, now, admissions=admissions(api, caps)))
    assert receive_plan_work(api) == [], "a worker queued a continuation"
    requests = api.take_fetch_requests()
    return [request.account_id for request in requests], runs


def test_accounts_filed_before_providers_were_in_the_key_are_planned_and_filed_under_their_provider(
    api: Api, clock: Clock
) -> None:
    # Given a ClearWater and a FibreLink account, due, filed under the keys of before (no provider)
    clearwater = due_accounts(api, "clearwater", 1, clock())
    fibrelink = due_accounts(api, "fibrelink", 1, clock())
    legacy = clearwater + fibrelink
    file_as_before_providers(api, legacy)
    assert filed_shards(api, legacy) == {account_id: keys.refresh_shard(account_id) for account_id in legacy}
    # When the planner runs (the handlers' scheduled run and its workers)
    planned = run_planner(api)
    # Then both are planned, once, and each claim filed its account under its own provider's shard
    assert planned == sorted(legacy)
    assert filed_shards(api, legacy) == {
        clearwater[0]: keys.refresh_shard(clearwater[0], "clearwater"),
        fibrelink[0]: keys.refresh_shard(fibrelink[0], "fibrelink"),
    }
    # And a day later they are planned from there, by their providers' workers
    clock.advance(days=1, minutes=1)
    next_day, runs = scheduled_run(api, clock(), UNBOUNDED)
    assert sorted(next_day) == sorted(legacy)
    assert {(run.provider, run.planned) for run in runs if run.planned} == {("clearwater", 1), ("fibrelink", 1)}


def test_a_provider_over_its_cap_is_admitted_its_longest_due_hour_after_hour_and_others_in_full(
    api: Api, clock: Clock
) -> None:
    # Given a cap of 4 NorthGas refreshes an hour, 12 NorthGas accounts due (in one shard, one minute
    # apart, the first due longest) and 5 ClearWater accounts due
    cap = 4
    caps = {**UNBOUNDED, "northgas": cap}
    now = datetime.fromtimestamp(hour_of(clock()), UTC) + timedelta(minutes=20)  # this hour, 20 past
    northgas = due_accounts(api, "northgas", 3 * cap, now, shard=6)
    clearwater = due_accounts(api, "clearwater", 5, now)
    # When the planner runs
    first, runs = scheduled_run(api, now, caps)
    # Then it enqueued the 4 NorthGas accounts due longest, and every ClearWater account
    assert sorted(account for account in first if account in northgas) == sorted(northgas[:cap])
    assert sorted(account for account in first if account in clearwater) == sorted(clearwater)
    assert len(first) == cap + len(clearwater)
    # And NorthGas's shard-6 worker said it stopped for want of admissions, and queued no continuation
    (stopped,) = [run for run in runs if run.provider == "northgas" and run.shard == 6]
    assert (stopped.planned, stopped.finished, stopped.stopped) == (cap, True, "admissions_spent")
    assert all(run.stopped == "all_due_planned" for run in runs if run is not stopped)
    assert len(runs) == 5 * keys.REFRESH_SHARDS
    # When the planner runs again in the same hour, then nothing more of NorthGas is admitted
    again, _ = scheduled_run(api, now + timedelta(minutes=30), caps)
    assert again == []
    # When it runs in each of the next two hours
    second, _ = scheduled_run(api, now + timedelta(hours=1), caps)
    third, _ = scheduled_run(api, now + timedelta(hours=2), caps)
    # Then each takes the next 4 due longest: the interval stretched, in order, and nobody starved
    assert sorted(second) == sorted(northgas[cap : 2 * cap])
    assert sorted(third) == sorted(northgas[2 * cap :])


def test_two_workers_leasing_from_one_counter_admit_no_more_than_the_cap_between_them(api: Api, clock: Clock) -> None:
    # Given a cap of 15 NorthGas refreshes an hour, and 30 NorthGas accounts due in each of two shards
    cap = 15
    in_one = due_accounts(api, "northgas", 30, clock(), shard=1)
    in_two = due_accounts(api, "northgas", 30, clock(), shard=2)

    # When the two shards' workers plan at the same time, each with its own clients
    def worker(shard: int) -> ShardRun:
        store = table(api, boto3.client("dynamodb"))
        fetch_queue = FetchQueue(boto3.client("sqs"), api.stack.refs["FetchQueue"])
        work = ShardWork(shard=shard, provider="northgas")
        return plan_shard(
            store, fetch_queue, plan_queue(api), work, clock(), admissions=admissions(api, {"northgas": cap})
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(worker, [1, 2]))
    # Then between them they enqueued exactly the cap, each account once, both stopped by admission
    enqueued = [request.account_id for request in api.take_fetch_requests()]
    assert len(enqueued) == len(set(enqueued)) == sum(run.planned for run in runs) == cap
    assert set(enqueued) <= set(in_one) | set(in_two)
    assert [run.stopped for run in runs] == ["admissions_spent", "admissions_spent"]
    assert receive_plan_work(api) == []


def test_the_counter_never_admits_more_than_the_cap_to_many_leasers_at_once(api: Api) -> None:
    # Given one hour's NorthGas counter with a cap of 95
    def lease(_: int) -> int:
        counters = AdmissionCounters(boto3.client("dynamodb"), api.stack.refs["BillsTable"])
        return sum(counters.lease("northgas", 7200, 95, 10) for _ in range(3))

    # When 8 leasers each ask for 10 three times (240 asked in all)
    with ThreadPoolExecutor(max_workers=8) as pool:
        granted = list(pool.map(lease, range(8)))
    # Then exactly the cap was granted between them, and the counter says so
    assert sum(granted) == 95
    item = boto3.client("dynamodb").get_item(
        TableName=api.stack.refs["BillsTable"],
        Key={"PK": {"S": keys.admission_pk("northgas")}, "SK": {"S": keys.admission_sk(7200)}},
    )["Item"]
    assert (item["admitted"]["N"], item["expires_at"]["N"]) == ("95", str(7200 + 2 * 3600))


def test_a_worker_of_the_keys_before_providers_admits_nothing_and_takes_its_accounts_all(
    api: Api, clock: Clock
) -> None:
    # Given 12 NorthGas accounts due under a shard of the keys from before providers, and no admissions left
    accounts = due_accounts(api, "northgas", 12, clock(), shard=3)
    file_as_before_providers(api, accounts)
    spent = admissions(api, {"northgas": 0})
    # When that shard's worker plans it
    run = plan_shard(
        api.planner.store(), api.planner.queue(), plan_queue(api), ShardWork(shard=3), clock(), admissions=spent
    )
    # Then it planned them all (their provider is learnt only as each is claimed), and filed them under NorthGas
    assert (run.provider, run.planned, run.stopped) == (None, 12, "all_due_planned")
    assert sorted(request.account_id for request in api.take_fetch_requests()) == sorted(accounts)
    assert set(filed_shards(api, accounts).values()) == {keys.refresh_pk(3, "northgas")}


def test_a_repair_files_an_account_from_before_providers_under_its_provider(api: Api, clock: Clock) -> None:
    # Given a NorthGas account filed under a key from before providers, not due for a day
    user_id = api.user()
    account_id = account_in_shard(5)
    store_account(api, user_id, "northgas", clock(), clock() + timedelta(days=1), account_id)
    file_as_before_providers(api, [account_id])
    assert filed_shards(api, [account_id]) == {account_id: keys.refresh_pk(5)}
    # When its owner repairs it with new credentials (it is due at once)
    accounts = api.refresh.bills_table().accounts
    stored = accounts.get_account(user_id, account_id)
    assert stored is not None
    accounts.relink(stored, f"northgas-{account_id}", "****0000", clock(), credentials_ciphertext=b"renewed")
    # Then the repair's write filed it under NorthGas's shard, where its provider's worker plans it
    assert filed_shards(api, [account_id]) == {account_id: keys.refresh_pk(5, "northgas")}
    run = plan_shard(
        api.planner.store(),
        api.planner.queue(),
        plan_queue(api),
        ShardWork(shard=5, provider="northgas"),
        clock() + timedelta(seconds=1),
        admissions=admissions(api, UNBOUNDED),
    )
    assert run.planned == 1
    assert [request.account_id for request in api.take_fetch_requests()] == [account_id]
