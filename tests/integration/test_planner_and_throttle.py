"""The refresh pipeline's schedule through the handlers, against moto and the mock provider over HTTP:
the scheduled run fans the planning out to one worker per shard, which continues its own shard when its
time runs out, and the shard count grows without stranding accounts filed under a smaller one; the
planner honours each owner's daily or weekly interval and never enqueues an account twice, a manual
refresh and a link move the schedule on, users cannot refresh faster than the configured interval, and
linking enqueues the account's first fetch. Time is driven through the handlers' clock."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import partial
from typing import Any, cast

import boto3
import pytest

from billhub import keys
from billhub.models import Account, AccountStatus, FetchRequest
from billhub.planning import PlannerRun, ShardRun, all_refresh_shards, plan_due_refreshes, plan_shard
from billhub.queue import EnqueueFailed, FetchQueue, PlanQueue, ShardWork
from billhub.store import BillsTable
from billhub.users import ProfileChange, change_profile
from tests.conftest import Clock
from tests.events import scheduled_event, sqs_event
from tests.integration.harness import API_KEY, Api, LambdaContext, ReadsBeforeWrites

FIBRELINK = {"username": "grace", "password": "pass_good"}
CALLBACK = "/accounts/oauth/{provider}/callback"
THROTTLED = pytest.mark.stack_parameters(ManualRefreshMinIntervalSeconds="300")


def link(api: Api, user_id: str, api_key: str = API_KEY) -> str:
    """A ClearWater account, linked now; its first fetch is taken off the queue by the harness."""
    status, account = api.link_clearwater(user_id, api_key)
    assert status == 201, account
    return str(account["account_id"])


def prefer(api: Api, user_id: str, interval: str) -> dict[str, Any]:
    status, profile, _ = api.call(
        api.auth, "PATCH", "/me", user_id=user_id, body={"preferences": {"refresh_interval": interval}}
    )
    assert status == 200, profile
    return dict(profile)


def refresh(api: Api, user_id: str) -> tuple[int, Any, dict[str, str]]:
    return api.call(api.refresh, "POST", "/bills/refresh", user_id=user_id)


def run_planner(api: Api) -> list[str]:
    """One scheduled run of the planner, its shards' work done by the planner's workers: the accounts
    they enqueued, each checked to be enqueued once."""
    result = api.planner.handler(scheduled_event(), LambdaContext())
    assert result["shards_dispatched"] == len(all_refresh_shards())
    work_through_plan_queue(api)
    requests = api.take_fetch_requests()
    assert all(request.reason == "schedule" for request in requests)
    account_ids = [request.account_id for request in requests]
    assert len(set(account_ids)) == len(account_ids), "an account was enqueued twice"
    return sorted(account_ids)


def receive_plan_work(api: Api) -> list[dict[str, Any]]:
    """Every message on the PlanQueue, taken off it (received and deleted)."""
    sqs, url = boto3.client("sqs"), api.stack.refs["PlanQueue"]
    messages: list[dict[str, Any]] = []
    while received := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in received:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        messages.extend(dict(message) for message in received)
    return messages


def deliver_plan_work(api: Api, message: dict[str, Any]) -> dict[str, Any]:
    """One PlanQueue message delivered to the planner as its event source mapping would (BatchSize 1)."""
    result: dict[str, Any] = api.planner.handler(
        sqs_event([message], api.stack.attributes["PlanQueue"]["Arn"]), LambdaContext()
    )
    return result


def work_through_plan_queue(api: Api) -> int:
    """Delivers the PlanQueue's messages, continuations included, until it is empty: how many."""
    delivered = 0
    while messages := receive_plan_work(api):
        for message in messages:
            assert deliver_plan_work(api, message) == {"batchItemFailures": []}
            delivered += 1
    return delivered


def shards_of_plan_work(messages: list[dict[str, Any]]) -> list[int]:
    return sorted(ShardWork.model_validate_json(message["Body"]).shard for message in messages)


def work_of(messages: list[dict[str, Any]]) -> set[tuple[str | None, int]]:
    """The (provider, shard) each PlanQueue message names."""
    units = [ShardWork.model_validate_json(message["Body"]) for message in messages]
    assert len(units) == len(messages)
    return {(unit.provider, unit.shard) for unit in units}


def plan_queue(api: Api) -> PlanQueue:
    return PlanQueue(boto3.client("sqs"), api.stack.refs["PlanQueue"])


def account_in_shard(shard: int) -> str:
    """A new account id that ``keys.refresh_shard`` files under ``shard`` (of today's count)."""
    assert shard < keys.REFRESH_SHARDS, "no account is filed under a shard beyond the count"
    while keys.refresh_shard(account_id := uuid.uuid4().hex) != keys.refresh_pk(shard):
        pass
    return account_id


def filed_shards(api: Api, account_ids: list[str]) -> dict[str, str]:
    """Each account's GSI1PK as stored: the shard it is filed under."""
    client = boto3.client("dynamodb")
    found: dict[str, str] = {}
    for page in client.get_paginator("scan").paginate(TableName=api.stack.refs["BillsTable"]):
        for item in page["Items"]:
            account_id = keys.account_id_of(item["SK"]["S"])
            if account_id in account_ids:
                found[account_id] = item["GSI1PK"]["S"]
    return found


def table(api: Api, client: Any) -> BillsTable:
    return BillsTable(client, api.stack.refs["BillsTable"])


def due_accounts(api: Api, user_id: str, count: int, now: datetime, shard: int | None = None) -> list[str]:
    """``count`` ClearWater accounts of the user (all in ``shard`` if given), stored as a link stores
    them, due one minute apart (the first due longest), the last one minute before ``now``."""
    accounts = []
    for index in range(count):
        account_id = uuid.uuid4().hex if shard is None else account_in_shard(shard)
        store_account(api, user_id, account_id, now, now - timedelta(minutes=count - index))
        accounts.append(account_id)
    return accounts


def store_account(api: Api, user_id: str, account_id: str, now: datetime, next_refresh_at: datetime) -> None:
    """A ClearWater account of the user, stored as a link stores it (filed under its shard of today's count)."""
    account = Account(
        account_id=account_id,
        user_id=user_id,
        provider="clearwater",
        external_ref="****0000",
        status=AccountStatus.ACTIVE,
        created_at=now - timedelta(days=1),
        next_refresh_at=next_refresh_at,
    )
    api.refresh.bills_table().accounts.create_account(account, f"cw-{account.account_id}", b"ciphertext")


def next_refresh_of(api: Api, user_id: str, account_id: str) -> tuple[str, datetime]:
    account = next(account for account in api.accounts(user_id) if account["account_id"] == account_id)
    return account["refresh_interval"], datetime.fromisoformat(account["next_refresh_at"])


# ------------------------------------------------------------------ the planner
def test_two_planners_that_both_found_the_accounts_due_enqueue_each_once(api: Api, clock: Clock) -> None:
    # Given three accounts of two users, due a day after they were linked
    ada, bob = api.user("ada@example.com"), api.user("bob@example.com")
    accounts = [link(api, ada, "cw_sandbox_one"), link(api, ada, "cw_sandbox_two"), link(api, bob)]
    clock.advance(days=1, minutes=1)
    # When one planner has read the due accounts, and another runs from start to end before the first
    # claims any of them
    first_client = boto3.client("dynamodb")
    second: list[list[str]] = []
    second_runs_first = threading.Lock()

    def run_the_second_planner_first(**_: Any) -> None:
        with second_runs_first:
            if not second:
                second.append(run_planner(api))

    first_client.meta.events.register("before-call.dynamodb.UpdateItem", run_the_second_planner_first)
    first = plan_due_refreshes(table(api, first_client), api.planner.queue(), clock())
    # Then each account is enqueued exactly once, by the planner that claimed it first (the second's
    # were taken off the queue as it ran)
    assert api.take_fetch_requests() == []
    assert (first.planned, second[0]) == (0, sorted(accounts))


def test_two_planners_running_at_once_enqueue_each_due_account_once(api: Api, clock: Clock) -> None:
    # Given 45 due accounts
    accounts = due_accounts(api, api.user(), 45, clock())

    # When two planners run at the same time, each with its own clients and several batches at once
    def planner() -> PlannerRun:
        queue = FetchQueue(boto3.client("sqs"), api.stack.refs["FetchQueue"])
        return plan_due_refreshes(table(api, boto3.client("dynamodb")), queue, clock())

    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [pool.submit(planner) for _ in range(2)]
    # Then between them they enqueued every account exactly once
    requests = api.take_fetch_requests()
    assert sorted(request.account_id for request in requests) == sorted(accounts)
    assert sum(run.result().planned for run in runs) == 45


def test_a_planner_out_of_time_leaves_the_accounts_due_last_to_the_next_run(api: Api, clock: Clock) -> None:
    # Given 25 due accounts, each due a minute after the one before
    accounts = due_accounts(api, api.user(), 25, clock())
    # When the planner's time runs out once it has started two batches of ten
    seconds = itertools.chain([0.0, 0.0, 0.0], itertools.repeat(2.0))  # its start, then before each batch
    run = plan_due_refreshes(
        api.planner.store(), api.planner.queue(), clock(), timedelta(seconds=1), clock=lambda: next(seconds)
    )
    # Then it has enqueued the twenty accounts due longest, and says that it did not finish
    assert run == PlannerRun(planned=20, finished=False, stopped="out_of_time")
    assert sorted(request.account_id for request in api.take_fetch_requests()) == sorted(accounts[:20])
    # And the next run enqueues the other five
    assert run_planner(api) == sorted(accounts[20:])


def test_accounts_whose_fetches_sqs_did_not_take_stay_due_for_the_next_run(api: Api, clock: Clock) -> None:
    # Given three due accounts
    user_id = api.user()
    accounts = due_accounts(api, user_id, 3, clock())
    schedules = [next_refresh_of(api, user_id, account_id) for account_id in accounts]
    # When the planner claims them but cannot reach the queue
    unreachable = FetchQueue(boto3.client("sqs"), missing_queue(api))
    with pytest.raises(EnqueueFailed):
        plan_due_refreshes(api.planner.store(), unreachable, clock())
    # Then each is due as it was, and the next run enqueues each once
    assert [next_refresh_of(api, user_id, account_id) for account_id in accounts] == schedules
    assert run_planner(api) == sorted(accounts)


class RefusingTheSecondEntry:
    """SQS refusing one entry of each batch (as it may) and taking the others."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        taken = self._sqs.send_message_batch(QueueUrl=QueueUrl, Entries=[e for e in Entries if e["Id"] != "1"])
        return {**taken, "Failed": [{"Id": "1", "SenderFault": False, "Code": "InternalError"}]}


def test_an_account_sqs_refused_stays_due_and_the_rest_of_its_batch_is_enqueued(api: Api, clock: Clock) -> None:
    # Given three due accounts, the first due longest
    accounts = due_accounts(api, api.user(), 3, clock())
    # When SQS takes the planner's batch but its second entry
    refusing = FetchQueue(cast(Any, RefusingTheSecondEntry(boto3.client("sqs"))), api.stack.refs["FetchQueue"])
    with pytest.raises(EnqueueFailed):
        plan_due_refreshes(api.planner.store(), refusing, clock())
    # Then the other two are enqueued, and the next run enqueues the refused one
    assert sorted(request.account_id for request in api.take_fetch_requests()) == sorted([accounts[0], accounts[2]])
    assert run_planner(api) == [accounts[1]]


# ------------------------------------------------------------------ the planner fanned out per shard
def test_the_scheduled_run_dispatches_one_unit_of_work_per_shard_and_plans_nothing_itself(
    api: Api, clock: Clock
) -> None:
    # Given due accounts
    due_accounts(api, api.user(), 12, clock())
    # When the schedule runs the planner
    outcome = api.planner.handler(scheduled_event(), LambdaContext())
    # Then the PlanQueue holds one unit of work per shard of each provider and per shard of the keys
    # from before providers were in them, each once, and no fetch is enqueued yet
    providers = ["clearwater", "fibrelink", "northgas", "sparkgrid", None]
    expected = {(provider, shard) for provider in providers for shard in range(keys.REFRESH_SHARDS)}
    messages = receive_plan_work(api)
    assert outcome["shards_dispatched"] == len(messages) == len(expected) == 5 * keys.REFRESH_SHARDS
    assert work_of(messages) == expected
    assert api.take_fetch_requests() == []


def test_a_shard_worker_plans_the_due_accounts_of_its_shard_only(api: Api, clock: Clock) -> None:
    # Given due accounts in shard 3 and in shard 5
    user_id = api.user()
    in_three = due_accounts(api, user_id, 4, clock(), shard=3)
    in_five = due_accounts(api, user_id, 3, clock(), shard=5)
    # When a worker takes shard 3's work
    plan_queue(api).send([ShardWork(shard=3, provider="clearwater")])
    (message,) = receive_plan_work(api)
    assert deliver_plan_work(api, message) == {"batchItemFailures": []}
    # Then it enqueued shard 3's accounts, finished (no continuation), and left shard 5's due
    assert sorted(request.account_id for request in api.take_fetch_requests()) == sorted(in_three)
    assert receive_plan_work(api) == []
    assert run_planner(api) == sorted(in_five)


def test_a_shard_worker_out_of_time_continues_its_shard_through_the_queue(api: Api, clock: Clock) -> None:
    # Given 25 due accounts in shard 2, each due a minute after the one before
    accounts = due_accounts(api, api.user(), 25, clock(), shard=2)
    # When its worker's time runs out once it has started two batches of ten
    seconds = itertools.chain([0.0, 0.0, 0.0], itertools.repeat(2.0))  # its start, then before each batch
    run = plan_shard(
        api.planner.store(),
        api.planner.queue(),
        plan_queue(api),
        ShardWork(shard=2, provider="clearwater"),
        clock(),
        timedelta(seconds=1),
        clock=lambda: next(seconds),
    )
    # Then it enqueued the twenty due longest and queued shard 2's work again
    assert run == ShardRun(shard=2, planned=20, finished=False, provider="clearwater", stopped="out_of_time")
    assert sorted(request.account_id for request in api.take_fetch_requests()) == sorted(accounts[:20])
    continuation = receive_plan_work(api)
    assert shards_of_plan_work(continuation) == [2]
    # And the continuation's worker enqueues the other five, and leaves no work behind
    (message,) = continuation
    assert deliver_plan_work(api, message) == {"batchItemFailures": []}
    assert sorted(request.account_id for request in api.take_fetch_requests()) == sorted(accounts[20:])
    assert receive_plan_work(api) == []


def test_two_workers_on_the_same_shard_enqueue_each_due_account_once(api: Api, clock: Clock) -> None:
    # Given 45 due accounts in shard 4
    accounts = due_accounts(api, api.user(), 45, clock(), shard=4)

    # When two workers plan shard 4 at the same time (a continuation beside the next run's work), each
    # with its own clients and several batches at once
    def worker() -> ShardRun:
        fetch_queue = FetchQueue(boto3.client("sqs"), api.stack.refs["FetchQueue"])
        store = table(api, boto3.client("dynamodb"))
        return plan_shard(store, fetch_queue, plan_queue(api), ShardWork(shard=4, provider="clearwater"), clock())

    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [pool.submit(worker) for _ in range(2)]
    # Then between them they enqueued every account exactly once
    requests = api.take_fetch_requests()
    assert sorted(request.account_id for request in requests) == sorted(accounts)
    assert sum(run.result().planned for run in runs) == 45


def test_a_shard_worker_given_a_message_it_cannot_read_reports_it_failed(api: Api) -> None:
    # When the planner is given a PlanQueue message that names no shard
    message = {"MessageId": "m-1", "ReceiptHandle": "r-1", "Body": '{"shard": -1}'}
    # Then it reports that record failed, so it comes back and, after its last delivery, is parked
    assert deliver_plan_work(api, message) == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}


def test_accounts_filed_under_fewer_shards_are_planned_after_the_count_grows(
    api: Api, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 24 due accounts, linked while there were only 2 shards
    monkeypatch.setattr(keys, "REFRESH_SHARDS", 2)
    accounts = due_accounts(api, api.user(), 24, clock())
    assert set(filed_shards(api, accounts).values()) == {
        keys.refresh_pk(0, "clearwater"),
        keys.refresh_pk(1, "clearwater"),
    }
    # When the count has grown to 8 and the planner runs
    monkeypatch.setattr(keys, "REFRESH_SHARDS", 8)
    planned = run_planner(api)
    # Then every one of them is planned, once, and each claim filed its account under its shard of 8
    assert planned == sorted(accounts)
    filed = filed_shards(api, accounts)
    assert filed == {account_id: keys.refresh_shard(account_id, "clearwater") for account_id in accounts}
    assert len(set(filed.values())) > 2
    # And an account linked now is filed among the 8 at once
    (new,) = due_accounts(api, api.user("new@example.com"), 1, clock())
    assert filed_shards(api, [new]) == {new: keys.refresh_shard(new, "clearwater")}
    assert run_planner(api) == [new]


def test_an_account_rescheduled_after_the_count_grows_moves_to_its_shard_of_the_new_count(
    api: Api, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an account whose shard of 8 is shard 5, filed while there was only one shard, not due yet
    account_id = account_in_shard(5)
    monkeypatch.setattr(keys, "REFRESH_SHARDS", 1)
    user_id = api.user()
    store_account(api, user_id, account_id, clock(), clock.at(hours=1))
    assert filed_shards(api, [account_id]) == {account_id: keys.refresh_pk(0, "clearwater")}
    # When the count has grown to 8 and the account is rescheduled (a manual refresh, a new interval)
    monkeypatch.setattr(keys, "REFRESH_SHARDS", 8)
    stored = api.refresh.bills_table().accounts.get_account(user_id, account_id)
    assert stored is not None
    assert api.refresh.bills_table().schedule.reschedule(stored.account, clock.at(days=1), "daily")
    # Then it is filed under shard 5, and planned there once due
    assert filed_shards(api, [account_id]) == {account_id: keys.refresh_pk(5, "clearwater")}
    clock.advance(days=1, minutes=1)
    assert run_planner(api) == [account_id]


def test_a_planner_run_after_another_finds_nothing_left_to_enqueue(api: Api, clock: Clock) -> None:
    user_id = api.user()
    account_id = link(api, user_id)
    clock.advance(days=1, minutes=1)
    assert run_planner(api) == [account_id]
    assert run_planner(api) == []


def test_weekly_accounts_are_not_refreshed_a_day_later_but_are_a_week_later(api: Api, clock: Clock) -> None:
    # Given a user who prefers weekly refreshes and one who keeps the daily default, each linking an account now
    weekly_user = api.user("weekly@example.com")
    prefer(api, weekly_user, "weekly")
    weekly = link(api, weekly_user, "cw_sandbox_weekly")
    daily = link(api, api.user("daily@example.com"), "cw_sandbox_daily")
    assert next_refresh_of(api, weekly_user, weekly) == ("weekly", clock.at(days=7))
    # When the planner runs a day later, then each day until a week has passed
    clock.advance(days=1, minutes=1)
    assert run_planner(api) == [daily]
    for _ in range(5):
        clock.advance(days=1)
        assert run_planner(api) == [daily]
    # Then the weekly account is refreshed a week after it was linked, and not the day after that
    clock.advance(days=1)
    assert run_planner(api) == sorted([daily, weekly])
    clock.advance(days=1)
    assert run_planner(api) == [daily]
    assert next_refresh_of(api, weekly_user, weekly) == ("weekly", clock.at(days=14, minutes=1))


def test_changing_the_preference_reschedules_the_existing_accounts(api: Api, clock: Clock) -> None:
    # Given a daily account, linked (and so fetched) now
    user_id = api.user()
    account_id = link(api, user_id)
    # When its owner switches to weekly an hour later
    clock.advance(hours=1)
    assert prefer(api, user_id, "weekly")["preferences"]["refresh_interval"] == "weekly"
    # Then the account is next refreshed a week after its last fetch, not a day after
    assert next_refresh_of(api, user_id, account_id) == ("weekly", clock.at(days=7))
    clock.advance(days=1)
    assert run_planner(api) == []
    clock.now = clock.at(days=7, minutes=1)
    assert run_planner(api) == [account_id]
    # And switching back to daily three days after that refresh makes the account due at once
    clock.advance(days=3)
    prefer(api, user_id, "daily")
    assert next_refresh_of(api, user_id, account_id) == ("daily", clock.at(days=8, minutes=1))
    assert run_planner(api) == [account_id]


def test_a_link_racing_a_change_of_preference_takes_the_new_interval(api: Api, clock: Clock) -> None:
    # Given a link that read the owner's daily preference just before they switched to weekly
    user_id = api.user()
    gated = boto3.client("dynamodb")
    profiles = BillsTable(gated, api.stack.refs["BillsTable"])
    weekly = ProfileChange.model_validate({"preferences": {"refresh_interval": "weekly"}})
    switch = partial(change_profile, profiles, user_id, weekly, clock())
    linking = partial(api.link_clearwater, user_id)
    # When the switch (which reschedules the accounts it finds) is written before the new account
    _, (status, account) = ReadsBeforeWrites([gated, api.link.bills_table().client], [switch, linking]).run()
    # Then the account is linked weekly all the same
    assert status == 201, account
    assert next_refresh_of(api, user_id, account["account_id"]) == ("weekly", clock.at(days=7))


# ------------------------------------------------------------------ manual refreshes
def test_a_manual_refresh_moves_the_schedule_so_the_planner_skips_the_account(api: Api, clock: Clock) -> None:
    # Given a daily account linked at the start, refreshed by its owner 20 hours later
    user_id = api.user()
    account_id = link(api, user_id)
    clock.advance(hours=20)
    assert refresh(api, user_id)[0] == 202
    assert [request.reason for request in api.take_fetch_requests()] == ["manual"]
    # When the planner runs once the link's day has passed
    clock.advance(hours=5)
    # Then it leaves the account alone until a day after the manual refresh
    assert run_planner(api) == []
    assert next_refresh_of(api, user_id, account_id) == ("daily", clock.at(hours=44))
    clock.now = clock.at(hours=44, minutes=1)
    assert run_planner(api) == [account_id]


@THROTTLED
def test_a_second_refresh_within_the_interval_is_429_and_says_when(api: Api, clock: Clock) -> None:
    # Given a user who has just refreshed (the interval is 300 s)
    user_id = api.user()
    link(api, user_id)
    assert refresh(api, user_id)[0] == 202
    api.take_fetch_requests()
    # When they ask again 100 s later
    clock.advance(seconds=100)
    status, body, headers = refresh(api, user_id)
    # Then they are told to wait the 200 s left, and when that is, and nothing is fetched
    assert (status, body["code"], headers["Retry-After"]) == (429, "refresh_too_soon", "200")
    assert body["details"] == {"retry_after": 200}
    assert f"you can refresh again at {clock.at(seconds=300).isoformat(timespec='seconds')}" in body["message"]
    assert api.take_fetch_requests() == []
    # And once the interval has passed they can refresh again
    clock.advance(seconds=199)
    assert refresh(api, user_id)[0] == 429
    clock.advance(seconds=1)
    assert refresh(api, user_id)[0] == 202


@THROTTLED
def test_two_refreshes_at_the_same_moment_start_exactly_one(api: Api, clock: Clock) -> None:
    # Given a user with an account
    user_id = api.user()
    account_id = link(api, user_id)
    # When two of their refresh requests have both read everything before either writes
    request = partial(refresh, api, user_id)
    results = ReadsBeforeWrites([api.refresh.bills_table().client], [request, request]).run()
    # Then one starts and the other is told to wait
    assert sorted(status for status, _, _ in results) == [202, 429]
    started = next(body for status, body, _ in results if status == 202)
    assert api.take_fetch_requests() == [
        FetchRequest(
            user_id=user_id, account_id=account_id, job_id=started["job_id"], reason="manual", provider="clearwater"
        )
    ]


@THROTTLED
def test_a_refresh_that_could_not_be_queued_does_not_hold_the_user_back(
    api: Api, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id = api.user()
    link(api, user_id)
    working_queue = api.refresh.queue
    monkeypatch.setattr(api.refresh, "queue", lambda: FetchQueue(boto3.client("sqs"), missing_queue(api)))
    assert refresh(api, user_id)[0] == 500
    monkeypatch.setattr(api.refresh, "queue", working_queue)
    assert refresh(api, user_id)[0] == 202


@pytest.mark.stack_parameters(ManualRefreshMinIntervalSeconds="0")
def test_a_zero_interval_turns_the_throttle_off(api: Api, clock: Clock) -> None:
    user_id = api.user()
    link(api, user_id)
    assert [refresh(api, user_id)[0] for _ in range(3)] == [202, 202, 202]


# ------------------------------------------------------------------ the first fetch of a link
def missing_queue(api: Api) -> str:
    return f"{api.stack.refs['FetchQueue']}-that-does-not-exist"


def link_with_credentials(api: Api, user_id: str) -> tuple[int, Any]:
    body = {"provider": "clearwater", "credentials": {"api_key": API_KEY}}
    status, account, _ = api.call(api.link, "POST", "/accounts/link", user_id=user_id, body=body)
    return status, account


def link_with_oauth(api: Api, user_id: str, account_id: str | None = None) -> tuple[int, Any]:
    consent = api.oauth_consent(user_id, "sparkgrid", "ada", account_id)
    status, account, _ = api.route(api.link, "GET", CALLBACK, {"provider": "sparkgrid"}, query=consent)
    return status, account


def repair_with_credentials(api: Api, user_id: str) -> tuple[int, Any]:
    account_id = api.link_provider(user_id, "fibrelink", FIBRELINK)[1]["account_id"]
    status, account, _ = api.route(
        api.link,
        "PUT",
        "/accounts/{account_id}/credentials",
        {"account_id": account_id},
        user_id=user_id,
        body={"credentials": FIBRELINK},
    )
    return status, account


def repair_with_oauth(api: Api, user_id: str) -> tuple[int, Any]:
    return link_with_oauth(api, user_id, api.oauth_link(user_id, "sparkgrid", "ada")[1]["account_id"])


@pytest.mark.parametrize(
    ("how", "expected_status"),
    [(link_with_credentials, 201), (link_with_oauth, 201), (repair_with_credentials, 200), (repair_with_oauth, 200)],
    ids=["credentials", "oauth", "credentials-repair", "oauth-repair"],
)
def test_linking_or_repairing_enqueues_exactly_one_first_fetch(
    api: Api, clock: Clock, how: Callable[[Api, str], tuple[int, Any]], expected_status: int
) -> None:
    # Given a user
    user_id = api.user()
    # When they link an account (or repair one)
    status, account = how(api, user_id)
    # Then exactly one fetch of it is enqueued, for the link, naming its provider
    assert status == expected_status, account
    assert api.take_fetch_requests() == [
        FetchRequest(user_id=user_id, account_id=account["account_id"], reason="link", provider=account["provider"])
    ]
    # And the schedule does not fetch it again until its interval has passed
    assert run_planner(api) == []
    clock.advance(days=1, minutes=1)
    assert run_planner(api) == [account["account_id"]]


@pytest.mark.parametrize(
    ("how", "lane"),
    [(link_with_credentials, "ClearWaterFetchQueue"), (link_with_oauth, "SparkGridFetchQueue")],
    ids=["clearwater", "sparkgrid"],
)
def test_a_links_first_fetch_lands_in_its_providers_lane(
    api: Api, clock: Clock, how: Callable[[Api, str], tuple[int, Any]], lane: str
) -> None:
    # Given a user
    user_id = api.user()
    # When they link an account
    status, account = how(api, user_id)
    assert status == 201, account
    # Then its first fetch is in its provider's lane, and in no other
    sqs = boto3.client("sqs")
    [message] = sqs.receive_message(QueueUrl=api.stack.refs[lane], MaxNumberOfMessages=10)["Messages"]
    assert FetchRequest.model_validate_json(message["Body"]).account_id == account["account_id"]
    sqs.delete_message(QueueUrl=api.stack.refs[lane], ReceiptHandle=message["ReceiptHandle"])
    assert api.take_fetch_requests() == []


def test_a_link_whose_first_fetch_cannot_be_enqueued_still_succeeds_and_the_schedule_fetches_it(
    api: Api, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a FetchQueue that cannot be reached from the link function
    monkeypatch.setattr(api.link, "queue", lambda: FetchQueue(boto3.client("sqs"), missing_queue(api)))
    user_id = api.user()
    # When the user links an account
    status, account = link_with_credentials(api, user_id)
    # Then the link stands, nothing was enqueued, and the account stays due for the next planner run
    assert (status, account["status"]) == (201, "active")
    assert api.take_fetch_requests() == []
    assert run_planner(api) == [account["account_id"]]
