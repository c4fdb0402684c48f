"""The refresh pipeline's schedule through the handlers, against moto and the mock provider over HTTP:
the planner honours each owner's daily or weekly interval and never enqueues an account twice, a manual
refresh and a link move the schedule on, users cannot refresh faster than the configured interval, and
linking enqueues the account's first fetch. Time is driven through the handlers' clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import boto3
import pytest

from billhub.models import FetchRequest
from billhub.queue import FetchQueue
from billhub.store import BillsTable
from billhub.users import ProfileChange, change_profile
from tests.events import scheduled_event
from tests.integration.harness import API_KEY, Api, LambdaContext, ReadsBeforeWrites

FIBRELINK = {"username": "grace", "password": "pass_good"}
CALLBACK = "/accounts/oauth/{provider}/callback"
THROTTLED = pytest.mark.stack_parameters(ManualRefreshMinIntervalSeconds="300")


class Clock:
    """The handlers' ``utc_now``, moved by the test."""

    def __init__(self) -> None:
        self.start = self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    def at(self, **delta: float) -> datetime:
        return self.start + timedelta(**delta)


@pytest.fixture
def clock(api: Api, monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    for module in (api.auth, api.link, api.refresh):
        monkeypatch.setattr(module, "utc_now", clock)
    return clock


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
    """One scheduled run of the planner: the accounts it enqueued, each checked to be enqueued once."""
    result = api.refresh.handler(scheduled_event(), LambdaContext())
    requests = api.take_fetch_requests()
    assert [request.reason for request in requests] == ["schedule"] * result["planned"]
    return sorted(request.account_id for request in requests)


def next_refresh_of(api: Api, user_id: str, account_id: str) -> tuple[str, datetime]:
    account = next(account for account in api.accounts(user_id) if account["account_id"] == account_id)
    return account["refresh_interval"], datetime.fromisoformat(account["next_refresh_at"])


# ------------------------------------------------------------------ the planner
def test_two_planners_that_both_found_the_accounts_due_enqueue_each_once(api: Api, clock: Clock) -> None:
    # Given three accounts of two users, due a day after they were linked
    ada, bob = api.user("ada@example.com"), api.user("bob@example.com")
    accounts = [link(api, ada, "cw_sandbox_one"), link(api, ada, "cw_sandbox_two"), link(api, bob)]
    clock.advance(days=1, minutes=1)
    # When two planner runs have both read the due accounts before either claims one
    planner = partial(api.refresh.handler, scheduled_event(), LambdaContext())
    first, second = ReadsBeforeWrites([api.refresh.store()._client], [planner, planner]).run()
    # Then each account is enqueued exactly once, by the planner that claimed it first
    requests = api.take_fetch_requests()
    assert sorted(request.account_id for request in requests) == sorted(accounts)
    assert (first["planned"], second["planned"]) == (3, 0)


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
    _, (status, account) = ReadsBeforeWrites([gated, api.link.store()._client], [switch, linking]).run()
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
    assert body["details"] == {"retry_after_seconds": 200}
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
    results = ReadsBeforeWrites([api.refresh.store()._client], [request, request]).run()
    # Then one starts and the other is told to wait
    assert sorted(status for status, _, _ in results) == [202, 429]
    started = next(body for status, body, _ in results if status == 202)
    assert api.take_fetch_requests() == [
        FetchRequest(user_id=user_id, account_id=account_id, job_id=started["job_id"], reason="manual")
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
    # Then exactly one fetch of it is enqueued, for the link
    assert status == expected_status, account
    assert api.take_fetch_requests() == [FetchRequest(user_id=user_id, account_id=account["account_id"], reason="link")]
    # And the schedule does not fetch it again until its interval has passed
    assert run_planner(api) == []
    clock.advance(days=1, minutes=1)
    assert run_planner(api) == [account["account_id"]]


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
