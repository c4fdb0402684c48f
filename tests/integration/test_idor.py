"""Cross-user access (IDOR) over every route: user B, holding user A's account and job ids, gets ``404``
on what is A's (as for an id that does not exist), sees only their own data in listings, and leaves A's
stored items exactly as they were. A user id sent in a body or query is refused or ignored, never used.

``ROUTE_CASES`` holds one case per route; ``test_every_route_has_a_cross_user_case`` fails when the
template (or a resolver) gains a route that has none.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import boto3
import pytest

from localcloud.provision import Stack
from localcloud.template import function_specs
from tests.integration.harness import Api

# Sandbox credentials (mock_provider/README.md): any ``cw_sandbox_*`` key, any FibreLink user with ``pass_good``.
A_CREDENTIALS = {
    "clearwater": {"api_key": "cw_sandbox_idor_alice"},
    "fibrelink": {"username": "alice", "password": "pass_good"},
}
B_CREDENTIALS = {
    "clearwater": {"api_key": "cw_sandbox_idor_bob"},
    "fibrelink": {"username": "bob", "password": "pass_good"},
}
NOT_FOUND = "not_found"
WEBHOOK_URL = "https://93.184.215.14/hooks"  # a public address literal: no DNS lookup


@dataclass
class World:
    a: str
    b: str
    a_accounts: dict[str, str]  # provider -> account id
    b_accounts: dict[str, str]
    a_job: str
    b_job: str
    a_webhook: str
    b_webhook: str

    @property
    def a_ids(self) -> list[str]:
        return list(self.a_accounts.values())


def scan(stack: Stack) -> list[dict[str, Any]]:
    client = boto3.client("dynamodb")
    items: list[dict[str, Any]] = []
    for page in client.get_paginator("scan").paginate(TableName=stack.refs["BillsTable"]):
        items += page["Items"]
    return items


def items_of(stack: Stack, user_id: str) -> list[str]:
    """Every raw item that names the user (their partition, email, idempotency records, OAuth states...),
    as canonical JSON, in a stable order."""
    dumped = (json.dumps(item, sort_keys=True, default=str) for item in scan(stack))
    return sorted(item for item in dumped if user_id in item)


def start_job(api: Api, user_id: str) -> str:
    status, body, _ = api.call(api.refresh, "POST", "/bills/refresh", user_id=user_id)
    assert status == 202, body
    api.deliver()
    return str(body["job_id"])


@pytest.fixture
def world(api: Api) -> World:
    a, b = api.user("alice@example.com"), api.user("bob@example.com")
    accounts: dict[str, dict[str, str]] = {a: {}, b: {}}
    for user_id, credentials in ((a, A_CREDENTIALS), (b, B_CREDENTIALS)):
        for provider, values in credentials.items():
            status, body = api.link_provider(user_id, provider, values)
            assert status == 201, body
            accounts[user_id][provider] = body["account_id"]
    status, body = api.oauth_link(a, "sparkgrid", "alice_sg")
    assert status == 201, body
    accounts[a]["sparkgrid"] = body["account_id"]
    webhooks = {user_id: create_webhook(api, user_id) for user_id in (a, b)}
    return World(a, b, accounts[a], accounts[b], start_job(api, a), start_job(api, b), webhooks[a], webhooks[b])


def create_webhook(api: Api, user_id: str) -> str:
    status, body, _ = api.call(api.webhooks, "POST", "/webhooks", user_id=user_id, body={"url": WEBHOOK_URL})
    assert status == 201, body
    return str(body["webhook_id"])


def assert_not_found(answer: tuple[int, Any, dict[str, str]]) -> None:
    status, body, _ = answer
    assert status == 404, body
    assert set(body) == {"code", "message", "details"} and body["code"] == NOT_FOUND, body


def assert_refused(answer: tuple[int, Any, dict[str, str]]) -> None:
    """A request naming a user id the API does not take: a JSON 4xx, never served."""
    status, body, _ = answer
    assert 400 <= status < 500, body
    assert set(body) == {"code", "message", "details"}, body


def no_a_ids(world: World, body: Any) -> None:
    text = json.dumps(body)
    assert world.a not in text
    for account_id in world.a_ids:
        assert account_id not in text
    assert world.a_job not in text
    assert world.a_webhook not in text


Case = Callable[[Api, World], None]
ROUTE_CASES: dict[tuple[str, str], Case] = {}


def covers(method: str, path: str) -> Callable[[Case], Case]:
    def register(case: Case) -> Case:
        ROUTE_CASES[(method, path)] = case
        return case

    return register


# ------------------------------------------------------------------ auth function
@covers("POST", "/auth/register")
def _register(api: Api, world: World) -> None:
    # A user id in the body is an unknown field; A's email cannot be taken over.
    body = {"email": "mallory@example.com", "password": "pw-" * 4, "user_id": world.a}
    assert_refused(api.call(api.auth, "POST", "/auth/register", body=body))
    status, answer, _ = api.call(
        api.auth, "POST", "/auth/register", body={"email": "alice@example.com", "password": "x" * 12}
    )
    assert status == 409, answer


@covers("POST", "/auth/login")
def _login(api: Api, world: World) -> None:
    body = {"email": "bob@example.com", "password": "pw-" * 4, "user_id": world.a}
    assert_refused(api.call(api.auth, "POST", "/auth/login", body=body))
    status, answer, _ = api.call(
        api.auth, "POST", "/auth/login", body={"email": "alice@example.com", "password": "pw-" * 3 + "x"}
    )
    assert status == 401, answer


@covers("GET", "/me")
def _get_me(api: Api, world: World) -> None:
    status, body, _ = api.call(api.auth, "GET", "/me", user_id=world.b, query={"user_id": world.a})
    assert status == 200 and body["user_id"] == world.b and body["email"] == "bob@example.com", body


@covers("PATCH", "/me")
def _patch_me(api: Api, world: World) -> None:
    for body in (
        {"user_id": world.a, "preferences": {"due_soon_days": 30}},
        {"preferences": {"user_id": world.a, "due_soon_days": 30}},
    ):
        assert_refused(api.call(api.auth, "PATCH", "/me", user_id=world.b, body=body))
    change = {"preferences": {"refresh_interval": "weekly"}}
    status, body, _ = api.call(api.auth, "PATCH", "/me", user_id=world.b, query={"user_id": world.a}, body=change)
    assert status == 200 and body["user_id"] == world.b, body


@covers("DELETE", "/me")
def _delete_me(api: Api, world: World) -> None:
    # A user id in the body is an unknown field; in the query it is ignored: B deletes B, never A (both
    # registered with the same password, so A's password deletes nobody but the caller either).
    password = "pw-" * 4
    body = {"password": password, "user_id": world.a}
    assert_refused(api.call(api.auth, "DELETE", "/me", user_id=world.b, body=body))
    status, answer, _ = api.call(
        api.auth, "DELETE", "/me", user_id=world.b, query={"user_id": world.a}, body={"password": password}
    )
    assert (status, answer) == (204, None)
    assert items_of(api.stack, world.b) == []
    assert_not_found(api.call(api.auth, "GET", "/me", user_id=world.b))


# ------------------------------------------------------------------ link function
@covers("GET", "/providers")
def _providers(api: Api, world: World) -> None:
    status, body, _ = api.call(api.link, "GET", "/providers", user_id=world.b, query={"user_id": world.a})
    assert status == 200, body
    no_a_ids(world, body)


@covers("POST", "/accounts/link")
def _link(api: Api, world: World) -> None:
    credentials = {"username": "bob_second", "password": "pass_good"}
    body = {"provider": "fibrelink", "credentials": credentials, "user_id": world.a}
    assert_refused(api.call(api.link, "POST", "/accounts/link", user_id=world.b, body=body))
    # A user id in the query is not a parameter of the route: the account is the caller's.
    status, linked, _ = api.call(
        api.link,
        "POST",
        "/accounts/link",
        user_id=world.b,
        query={"user_id": world.a},
        body={"provider": "fibrelink", "credentials": credentials},
    )
    assert status == 201, linked
    api.take_fetch_requests(lambda request: request.account_id == linked["account_id"])
    assert linked["account_id"] in [account["account_id"] for account in api.accounts(world.b)]


@covers("GET", "/accounts")
def _accounts(api: Api, world: World) -> None:
    status, body, _ = api.call(api.link, "GET", "/accounts", user_id=world.b, query={"user_id": world.a})
    assert status == 200, body
    assert sorted(account["account_id"] for account in body["accounts"]) == sorted(world.b_accounts.values())


@covers("PUT", "/accounts/{account_id}/credentials")
def _put_credentials(api: Api, world: World) -> None:
    for provider, account_id in world.a_accounts.items():
        # Even with credentials that are valid (B's own, or A's very own ones).
        attempts = [values for values in (B_CREDENTIALS.get(provider), A_CREDENTIALS.get(provider)) if values]
        for values in attempts or [{"code": "anything"}]:
            assert_not_found(
                api.route(
                    api.link,
                    "PUT",
                    "/accounts/{account_id}/credentials",
                    {"account_id": account_id},
                    user_id=world.b,
                    body={"credentials": values},
                )
            )
    assert_not_found(
        api.route(
            api.link,
            "PUT",
            "/accounts/{account_id}/credentials",
            {"account_id": uuid.uuid4().hex},
            user_id=world.b,
            body={"credentials": B_CREDENTIALS["clearwater"]},
        )
    )


@covers("GET", "/accounts/oauth/{provider}/start")
def _oauth_start(api: Api, world: World) -> None:
    for account_id in [*world.a_ids, uuid.uuid4().hex]:
        assert_not_found(
            api.route(
                api.link,
                "GET",
                "/accounts/oauth/{provider}/start",
                {"provider": "sparkgrid"},
                query={"account_id": account_id},
                user_id=world.b,
            )
        )


@covers("GET", "/accounts/oauth/{provider}/callback")
def _oauth_callback(api: Api, world: World) -> None:
    # The callback comes without an access token: only the state says whose link it is. B's own flow,
    # with A's ids added to the query, links into B and never touches A.
    query = api.oauth_consent(world.b, "sparkgrid", "bob_sg")
    status, linked = api.oauth_callback(
        "sparkgrid", {**query, "user_id": world.a, "account_id": world.a_accounts["sparkgrid"]}
    )
    assert status == 201, linked
    assert linked["account_id"] != world.a_accounts["sparkgrid"]
    assert linked["account_id"] in [account["account_id"] for account in api.accounts(world.b)]
    # A state that is not one the service signed is refused.
    forged = {"state": "eyJhbGciOiJIUzI1NiJ9.eyJqdGkiOiJ4In0.c2lnbmF0dXJl", "code": "stolen-code"}
    status, body = api.oauth_callback("sparkgrid", forged)
    assert (status, body["code"]) == (400, "invalid_oauth_state"), body


# ------------------------------------------------------------------ delete function
@covers("DELETE", "/accounts/{account_id}")
def _delete(api: Api, world: World) -> None:
    for account_id in [*world.a_ids, uuid.uuid4().hex]:
        assert_not_found(
            api.route(
                api.delete,
                "DELETE",
                "/accounts/{account_id}",
                {"account_id": account_id},
                user_id=world.b,
                query={"user_id": world.a},
            )
        )


# ------------------------------------------------------------------ bills function
def _own_bills_only(world: World, page: dict[str, Any]) -> None:
    own = set(world.b_accounts.values())
    assert page["bills"], page
    assert {bill["account_id"] for bill in page["bills"]} <= own
    assert {account["account_id"] for account in page["accounts"]} <= own
    no_a_ids(world, page)


@covers("GET", "/bills")
def _bills(api: Api, world: World) -> None:
    status, page, _ = api.call(api.bills, "GET", "/bills", user_id=world.b, query={"limit": "200"})
    assert status == 200, page
    _own_bills_only(world, page)
    # An unknown query parameter is ignored (Powertools reads only the model's fields): still B's bills.
    status, page, _ = api.call(api.bills, "GET", "/bills", user_id=world.b, query={"user_id": world.a})
    assert status == 200, page
    _own_bills_only(world, page)


@covers("GET", "/bills/{provider}")
def _provider_bills(api: Api, world: World) -> None:
    for provider in ("clearwater", "fibrelink"):
        status, page, _ = api.route(api.bills, "GET", "/bills/{provider}", {"provider": provider}, user_id=world.b)
        assert status == 200, page
        _own_bills_only(world, page)
    # B has no SparkGrid account; A's is not B's to see.
    assert_not_found(api.route(api.bills, "GET", "/bills/{provider}", {"provider": "sparkgrid"}, user_id=world.b))
    status, page, _ = api.route(
        api.bills, "GET", "/bills/{provider}", {"provider": "clearwater"}, user_id=world.b, query={"user_id": world.a}
    )
    assert status == 200, page
    _own_bills_only(world, page)


@covers("GET", "/insights")
def _insights(api: Api, world: World) -> None:
    status, body, _ = api.call(api.insights, "GET", "/insights", user_id=world.b, query={"user_id": world.a})
    assert status == 200, body
    no_a_ids(world, body)
    assert "GBP" not in json.dumps(body)  # nothing of anyone's NorthGas; a sanity check the body is B's


# ------------------------------------------------------------------ refresh function
@covers("POST", "/bills/refresh")
def _refresh(api: Api, world: World) -> None:
    for account_ids in ([world.a_accounts["clearwater"]], world.a_ids, [world.b_accounts["clearwater"], *world.a_ids]):
        status, body, _ = api.call(
            api.refresh, "POST", "/bills/refresh", user_id=world.b, body={"account_ids": account_ids}
        )
        assert (status, body["code"]) == (404, NOT_FOUND), body
    assert_refused(api.call(api.refresh, "POST", "/bills/refresh", user_id=world.b, body={"user_id": world.a}))
    status, body, _ = api.call(api.refresh, "POST", "/bills/refresh", user_id=world.b, query={"user_id": world.a})
    assert status == 202 and sorted(body["accounts"]) == sorted(world.b_accounts.values()), body
    queued = api.take_fetch_requests()
    assert {request.user_id for request in queued} == {world.b}
    assert not {request.account_id for request in queued} & set(world.a_ids)


@covers("GET", "/bills/refresh/{job_id}")
def _job(api: Api, world: World) -> None:
    for job_id in (world.a_job, uuid.uuid4().hex):
        assert_not_found(api.route(api.refresh, "GET", "/bills/refresh/{job_id}", {"job_id": job_id}, user_id=world.b))
    status, body, _ = api.route(
        api.refresh,
        "GET",
        "/bills/refresh/{job_id}",
        {"job_id": world.b_job},
        user_id=world.b,
        query={"user_id": world.a},
    )
    assert status == 200 and body["job_id"] == world.b_job, body


# ------------------------------------------------------------------ webhooks function
@covers("POST", "/webhooks")
def _create_webhook(api: Api, world: World) -> None:
    assert_refused(
        api.call(api.webhooks, "POST", "/webhooks", user_id=world.b, body={"url": WEBHOOK_URL, "user_id": world.a})
    )
    status, created, _ = api.call(
        api.webhooks, "POST", "/webhooks", user_id=world.b, query={"user_id": world.a}, body={"url": WEBHOOK_URL}
    )
    assert status == 201, created
    status, listing, _ = api.call(api.webhooks, "GET", "/webhooks", user_id=world.b)
    assert created["webhook_id"] in [hook["webhook_id"] for hook in listing["webhooks"]]


@covers("GET", "/webhooks")
def _list_webhooks(api: Api, world: World) -> None:
    status, body, _ = api.call(api.webhooks, "GET", "/webhooks", user_id=world.b, query={"user_id": world.a})
    assert status == 200 and [hook["webhook_id"] for hook in body["webhooks"]] == [world.b_webhook], body
    no_a_ids(world, body)


def _webhook_route_not_found(method: str, route: str) -> Case:
    def case(api: Api, world: World) -> None:
        for webhook_id in (world.a_webhook, "wh_" + uuid.uuid4().hex[:24]):
            assert_not_found(api.route(api.webhooks, method, route, {"webhook_id": webhook_id}, user_id=world.b))
        # No test event was published for A's webhook (the accounts' own events, such as their first
        # fetches' account.synced, are on the queue too).
        queued = boto3.client("sqs").receive_message(QueueUrl=api.stack.refs["DeliveryQueue"], MaxNumberOfMessages=10)
        tests = [m for m in queued.get("Messages", []) if json.loads(m["Body"])["detail-type"] == "webhook.test"]
        assert tests == [], tests
        # B's own webhook answers (the route works; A's id is what it refuses).
        status, body, _ = api.route(
            api.webhooks, method, route, {"webhook_id": world.b_webhook}, user_id=world.b, query={"user_id": world.a}
        )
        assert status in (200, 202, 204), body
        no_a_ids(world, body)

    return case


for _method, _route in (
    ("GET", "/webhooks/{webhook_id}"),
    ("DELETE", "/webhooks/{webhook_id}"),
    ("POST", "/webhooks/{webhook_id}/rotate-secret"),
    ("POST", "/webhooks/{webhook_id}/enable"),
    ("POST", "/webhooks/{webhook_id}/test"),
    ("GET", "/webhooks/{webhook_id}/deliveries"),
):
    covers(_method, _route)(_webhook_route_not_found(_method, _route))


# ------------------------------------------------------------------ the matrix
def template_routes(template: dict[str, Any]) -> set[tuple[str, str]]:
    return {(route.method, route.path) for spec in function_specs(template) for route in spec.routes}


def test_every_route_has_a_cross_user_case(template: dict[str, Any], load_handler: Callable[[str], ModuleType]) -> None:
    routes = template_routes(template)
    assert routes == set(ROUTE_CASES), {"without a case": routes - set(ROUTE_CASES), "stale": set(ROUTE_CASES) - routes}
    # And every route a resolver serves is one the template routes to it (none hides from the matrix).
    for spec in function_specs(template):
        app = getattr(load_handler(spec.logical_id), "app", None)
        if app is None:
            continue
        served = {(route.method, route.openapi_path) for route in [*app._static_routes, *app._dynamic_routes]}
        assert served == {(route.method, route.path) for route in spec.routes}, spec.logical_id


@pytest.fixture
def a_unchanged(api: Api, stack: Stack, world: World) -> Iterator[None]:
    before, listing = items_of(stack, world.a), api.accounts(world.a)
    yield
    assert items_of(stack, world.a) == before, "B's requests changed A's stored items"
    assert api.accounts(world.a) == listing


@pytest.mark.parametrize("route", sorted(ROUTE_CASES), ids=lambda route: " ".join(route))
@pytest.mark.usefixtures("a_unchanged")
def test_user_b_cannot_reach_user_a(api: Api, world: World, route: tuple[str, str]) -> None:
    ROUTE_CASES[route](api, world)
