"""Every input of every route is bounded: oversize, wrong-character, unknown-field and wrong-type values get
a JSON 4xx ``{"code", "message", "details"}`` and change nothing stored."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from billhub.bills import MAX_CURSOR_LENGTH
from localcloud.provision import Stack
from localcloud.template import function_specs
from tests.integration.harness import API_KEY, Api, user_items

ACCOUNT = "{account}"  # stands for the linked account's id in a path
HEX_ID = "0123456789abcdef0123456789abcdef"
# Routes that take no path, query, header or body input of their own.
NO_INPUT = {("GET", "/providers"), ("GET", "/accounts"), ("GET", "/me"), ("GET", "/webhooks")}


@dataclass(frozen=True)
class Case:
    function: str  # the Api attribute holding the route's handler module
    method: str
    route: str
    status: int
    code: str
    path: dict[str, str] = field(default_factory=dict)
    body: Any = None
    raw_body: str | None = None
    query: dict[str, str] | None = None
    headers: dict[str, str] | None = None
    authorized: bool = True


def case(name: str, *args: Any, **kwargs: Any) -> Any:
    return pytest.param(Case(*args, **kwargs), id=name)


VALID_LINK = {"provider": "clearwater", "credentials": {"api_key": "cw_sandbox_limits"}}
REGISTER = ("auth", "POST", "/auth/register")
LOGIN = ("auth", "POST", "/auth/login")
ME = ("auth", "PATCH", "/me")
DELETE_ME = ("auth", "DELETE", "/me")
LINK = ("link", "POST", "/accounts/link")
CREDENTIALS = ("link", "PUT", "/accounts/{account_id}/credentials")
START = ("link", "GET", "/accounts/oauth/{provider}/start")
CALLBACK = ("link", "GET", "/accounts/oauth/{provider}/callback")
DELETE = ("delete", "DELETE", "/accounts/{account_id}")
BILLS = ("bills", "GET", "/bills")
PROVIDER_BILLS = ("bills", "GET", "/bills/{provider}")
INSIGHTS = ("insights", "GET", "/insights")
REFRESH = ("refresh", "POST", "/bills/refresh")
JOB = ("refresh", "GET", "/bills/refresh/{job_id}")
CREATE_WEBHOOK = ("webhooks", "POST", "/webhooks")
WEBHOOK = ("webhooks", "GET", "/webhooks/{webhook_id}")
DELETE_WEBHOOK = ("webhooks", "DELETE", "/webhooks/{webhook_id}")
ROTATE = ("webhooks", "POST", "/webhooks/{webhook_id}/rotate-secret")
ENABLE = ("webhooks", "POST", "/webhooks/{webhook_id}/enable")
TEST_WEBHOOK = ("webhooks", "POST", "/webhooks/{webhook_id}/test")
DELIVERIES = ("webhooks", "GET", "/webhooks/{webhook_id}/deliveries")
WEBHOOK_URL = "https://93.184.215.14/hooks"
NO_WEBHOOK = {"webhook_id": "wh_" + "0" * 24}
V, INVALID_JSON = ("validation_error", 422), ("invalid_json", 400)
GOOD_PASSWORD = "long-enough-pw"
OWN = {"account_id": ACCOUNT}
SPARKGRID = {"provider": "sparkgrid"}
CLEARWATER = {"provider": "clearwater"}

CASES = [
    # ---- POST /auth/register and /auth/login
    case(
        "register: oversize email",
        *REGISTER,
        422,
        "validation_error",
        body={"email": "a" * 250 + "@b.co", "password": GOOD_PASSWORD},
        authorized=False,
    ),
    case(
        "register: oversize password",
        *REGISTER,
        422,
        "validation_error",
        body={"email": "a@b.co", "password": "p" * 129},
        authorized=False,
    ),
    case(
        "register: space in email",
        *REGISTER,
        422,
        "validation_error",
        body={"email": "a b@c.co", "password": GOOD_PASSWORD},
        authorized=False,
    ),
    case(
        "register: unknown field",
        *REGISTER,
        422,
        "validation_error",
        body={"email": "a@b.co", "password": GOOD_PASSWORD, "role": "admin"},
        authorized=False,
    ),
    case(
        "register: wrong type",
        *REGISTER,
        422,
        "validation_error",
        body={"email": ["a@b.co"], "password": GOOD_PASSWORD},
        authorized=False,
    ),
    case("register: not an object", *REGISTER, 422, "validation_error", body=["a@b.co"], authorized=False),
    case("register: invalid JSON", *REGISTER, 400, "invalid_json", raw_body="{nope", authorized=False),
    case(
        "register: body too large",
        *REGISTER,
        413,
        "body_too_large",
        raw_body=json.dumps({"email": "a@b.co", "password": "p" * 17000}),
        authorized=False,
    ),
    case(
        "login: oversize password",
        *LOGIN,
        422,
        "validation_error",
        body={"email": "a@b.co", "password": "p" * 129},
        authorized=False,
    ),
    case(
        "login: unknown field",
        *LOGIN,
        422,
        "validation_error",
        body={"email": "a@b.co", "password": GOOD_PASSWORD, "remember": True},
        authorized=False,
    ),
    case(
        "login: wrong type",
        *LOGIN,
        422,
        "validation_error",
        body={"email": "a@b.co", "password": 12345678901},
        authorized=False,
    ),
    # ---- PATCH /me
    case("me: unknown field", *ME, 422, "validation_error", body={"preferences": {}, "email": "x@y.co"}),
    case("me: unknown preference", *ME, 422, "validation_error", body={"preferences": {"theme": "dark"}}),
    case("me: due_soon_days too big", *ME, 422, "validation_error", body={"preferences": {"due_soon_days": 61}}),
    case("me: due_soon_days wrong type", *ME, 422, "validation_error", body={"preferences": {"due_soon_days": "soon"}}),
    case("me: lowercase currency", *ME, 422, "validation_error", body={"preferences": {"currency": "usd"}}),
    case("me: unknown interval", *ME, 422, "validation_error", body={"preferences": {"refresh_interval": "hourly"}}),
    case("me: reminders not a boolean", *ME, 422, "validation_error", body={"preferences": {"reminders": "sometimes"}}),
    # ---- DELETE /me
    case("delete me: no body", *DELETE_ME, 422, "validation_error"),
    case("delete me: empty password", *DELETE_ME, 422, "validation_error", body={"password": ""}),
    case("delete me: oversize password", *DELETE_ME, 422, "validation_error", body={"password": "p" * 129}),
    case("delete me: password wrong type", *DELETE_ME, 422, "validation_error", body={"password": ["pw-" * 4]}),
    case("delete me: unknown field", *DELETE_ME, 422, "validation_error", body={"password": "pw-" * 4, "all": True}),
    case("delete me: invalid JSON", *DELETE_ME, 400, "invalid_json", raw_body='{"password": '),
    # ---- POST /accounts/link
    case("link: provider not in the registry", *LINK, 400, "unknown_provider", body={**VALID_LINK, "provider": "acme"}),
    case(
        "link: provider with wrong characters",
        *LINK,
        422,
        "validation_error",
        body={**VALID_LINK, "provider": "Clear Water"},
    ),
    case("link: oversize provider", *LINK, 422, "validation_error", body={**VALID_LINK, "provider": "c" * 33}),
    case(
        "link: too many credential fields",
        *LINK,
        422,
        "validation_error",
        body={**VALID_LINK, "credentials": {f"f{chr(97 + i)}": "x" for i in range(9)}},
    ),
    case(
        "link: credential field name with wrong characters",
        *LINK,
        422,
        "validation_error",
        body={**VALID_LINK, "credentials": {"Api-Key": API_KEY}},
    ),
    case(
        "link: oversize credential",
        *LINK,
        422,
        "validation_error",
        body={**VALID_LINK, "credentials": {"api_key": "k" * 513}},
    ),
    case(
        "link: control character in a credential",
        *LINK,
        422,
        "validation_error",
        body={**VALID_LINK, "credentials": {"api_key": "cw_sandbox_\nx"}},
    ),
    case(
        "link: credential of the wrong type",
        *LINK,
        422,
        "validation_error",
        body={**VALID_LINK, "credentials": {"api_key": 42}},
    ),
    case(
        "link: credentials not an object", *LINK, 422, "validation_error", body={**VALID_LINK, "credentials": [API_KEY]}
    ),
    case("link: oversize nickname", *LINK, 422, "validation_error", body={**VALID_LINK, "nickname": "n" * 65}),
    case(
        "link: control character in the nickname",
        *LINK,
        422,
        "validation_error",
        body={**VALID_LINK, "nickname": "home\x00"},
    ),
    case("link: unknown field", *LINK, 422, "validation_error", body={**VALID_LINK, "user_id": HEX_ID}),
    case(
        "link: bad idempotency key",
        *LINK,
        400,
        "invalid_idempotency_key",
        body=VALID_LINK,
        headers={"Idempotency-Key": "has space"},
    ),
    case(
        "link: oversize idempotency key",
        *LINK,
        400,
        "invalid_idempotency_key",
        body=VALID_LINK,
        headers={"Idempotency-Key": "k" * 256},
    ),
    case(
        "link: body too large",
        *LINK,
        413,
        "body_too_large",
        raw_body=json.dumps({**VALID_LINK, "nickname": "n" * 17000}),
    ),
    # ---- PUT /accounts/{account_id}/credentials
    case(
        "credentials: account id with wrong characters",
        *CREDENTIALS,
        422,
        "validation_error",
        path={"account_id": "ABC-not-hex"},
        body={"credentials": {"api_key": API_KEY}},
    ),
    case(
        "credentials: oversize account id",
        *CREDENTIALS,
        422,
        "validation_error",
        path={"account_id": "a" * 33},
        body={"credentials": {"api_key": API_KEY}},
    ),
    case(
        "credentials: unknown field",
        *CREDENTIALS,
        422,
        "validation_error",
        path=OWN,
        body={"credentials": {"api_key": API_KEY}, "provider": "fibrelink"},
    ),
    case(
        "credentials: oversize credential",
        *CREDENTIALS,
        422,
        "validation_error",
        path=OWN,
        body={"credentials": {"api_key": "k" * 513}},
    ),
    case(
        "credentials: wrong type", *CREDENTIALS, 422, "validation_error", path=OWN, body={"credentials": "cw_sandbox_x"}
    ),
    # ---- GET /accounts/oauth/{provider}/start
    case("oauth start: provider not in the registry", *START, 400, "unknown_provider", path={"provider": "acme"}),
    case(
        "oauth start: provider with wrong characters", *START, 422, "validation_error", path={"provider": "Spark.Grid"}
    ),
    case(
        "oauth start: account id with wrong characters",
        *START,
        422,
        "validation_error",
        path=SPARKGRID,
        query={"account_id": "not-an-id"},
    ),
    case(
        "oauth start: oversize nickname", *START, 422, "validation_error", path=SPARKGRID, query={"nickname": "n" * 65}
    ),
    case(
        "oauth start: control character in the nickname",
        *START,
        422,
        "validation_error",
        path=SPARKGRID,
        query={"nickname": "a\tb"},
    ),
    # ---- GET /accounts/oauth/{provider}/callback (no access token: the browser coming back)
    case(
        "oauth callback: no state",
        *CALLBACK,
        422,
        "validation_error",
        path=SPARKGRID,
        query={"code": "abc"},
        authorized=False,
    ),
    case(
        "oauth callback: oversize state",
        *CALLBACK,
        422,
        "validation_error",
        path=SPARKGRID,
        query={"state": "s" * 2049, "code": "abc"},
        authorized=False,
    ),
    case(
        "oauth callback: space in the state",
        *CALLBACK,
        422,
        "validation_error",
        path=SPARKGRID,
        query={"state": "a b", "code": "abc"},
        authorized=False,
    ),
    case(
        "oauth callback: control character in the code",
        *CALLBACK,
        422,
        "validation_error",
        path=SPARKGRID,
        query={"state": "abc", "code": "a\nb"},
        authorized=False,
    ),
    case(
        "oauth callback: oversize error",
        *CALLBACK,
        422,
        "validation_error",
        path=SPARKGRID,
        query={"state": "abc", "error": "e" * 129},
        authorized=False,
    ),
    case(
        "oauth callback: forged state",
        *CALLBACK,
        400,
        "invalid_oauth_state",
        path=SPARKGRID,
        query={"state": "abc", "code": "abc"},
        authorized=False,
    ),
    # ---- DELETE /accounts/{account_id}
    case(
        "delete: account id with wrong characters", *DELETE, 422, "validation_error", path={"account_id": "..%2F..%2Fx"}
    ),
    case("delete: uppercase account id", *DELETE, 422, "validation_error", path={"account_id": HEX_ID.upper()}),
    # ---- GET /bills and /bills/{provider}
    case("bills: limit too big", *BILLS, 422, "validation_error", query={"limit": "201"}),
    case("bills: limit zero", *BILLS, 422, "validation_error", query={"limit": "0"}),
    case("bills: limit wrong type", *BILLS, 422, "validation_error", query={"limit": "ten"}),
    case("bills: unknown status", *BILLS, 422, "validation_error", query={"status": "lost"}),
    case("bills: from not a date", *BILLS, 422, "validation_error", query={"from": "yesterday"}),
    case("bills: from after to", *BILLS, 422, "validation_error", query={"from": "2026-02-01", "to": "2026-01-01"}),
    case("bills: cursor with wrong characters", *BILLS, 422, "validation_error", query={"cursor": "a b"}),
    case("bills: oversize cursor", *BILLS, 422, "validation_error", query={"cursor": "c" * (MAX_CURSOR_LENGTH + 1)}),
    case("bills: cursor not handed out", *BILLS, 400, "invalid_cursor", query={"cursor": "bm90LWEtY3Vyc29y"}),
    case(
        "provider bills: provider not in the registry",
        *PROVIDER_BILLS,
        400,
        "unknown_provider",
        path={"provider": "acme"},
    ),
    case(
        "provider bills: provider with wrong characters",
        *PROVIDER_BILLS,
        422,
        "validation_error",
        path={"provider": "ACME!"},
    ),
    case("provider bills: oversize provider", *PROVIDER_BILLS, 422, "validation_error", path={"provider": "a" * 33}),
    case(
        "provider bills: limit too big",
        *PROVIDER_BILLS,
        422,
        "validation_error",
        path=CLEARWATER,
        query={"limit": "1000"},
    ),
    case("insights: months too many", *INSIGHTS, 422, "validation_error", query={"months": "37"}),
    case("insights: months zero", *INSIGHTS, 422, "validation_error", query={"months": "0"}),
    case("insights: months wrong type", *INSIGHTS, 422, "validation_error", query={"months": "a year"}),
    # ---- POST /bills/refresh and GET /bills/refresh/{job_id}
    case("refresh: no account ids", *REFRESH, 422, "validation_error", body={"account_ids": []}),
    case("refresh: too many account ids", *REFRESH, 422, "validation_error", body={"account_ids": [HEX_ID] * 51}),
    case(
        "refresh: account id with wrong characters", *REFRESH, 422, "validation_error", body={"account_ids": ["../etc"]}
    ),
    case("refresh: account ids wrong type", *REFRESH, 422, "validation_error", body={"account_ids": HEX_ID}),
    case("refresh: unknown field", *REFRESH, 422, "validation_error", body={"user_id": HEX_ID}),
    case("refresh: invalid JSON", *REFRESH, 400, "invalid_json", raw_body="[1,"),
    case(
        "refresh: bad idempotency key", *REFRESH, 400, "invalid_idempotency_key", headers={"Idempotency-Key": "k" * 256}
    ),
    case(
        "refresh: body too large",
        *REFRESH,
        413,
        "body_too_large",
        raw_body=json.dumps({"account_ids": ["a" * 32] * 600}),
    ),
    case("job: id with wrong characters", *JOB, 422, "validation_error", path={"job_id": "not-a-job"}),
    case("job: oversize id", *JOB, 422, "validation_error", path={"job_id": "a" * 300}),
    # ---- the webhooks
    case("webhook: oversize url", *CREATE_WEBHOOK, 422, "validation_error", body={"url": WEBHOOK_URL + "a" * 2048}),
    case("webhook: url wrong type", *CREATE_WEBHOOK, 422, "validation_error", body={"url": ["x"]}),
    case("webhook: private url", *CREATE_WEBHOOK, 422, "webhook_url_refused", body={"url": "https://10.0.0.1/"}),
    case(
        "webhook: unknown event", *CREATE_WEBHOOK, 422, "validation_error", body={"url": WEBHOOK_URL, "events": ["x"]}
    ),
    case(
        "webhook: oversize description",
        *CREATE_WEBHOOK,
        422,
        "validation_error",
        body={"url": WEBHOOK_URL, "description": "d" * 201},
    ),
    case("webhook: unknown field", *CREATE_WEBHOOK, 422, "validation_error", body={"url": WEBHOOK_URL, "secret": "x"}),
    case("webhook: invalid JSON", *CREATE_WEBHOOK, 400, "invalid_json", raw_body='{"url": '),
    case("webhook: id with wrong characters", *WEBHOOK, 422, "validation_error", path={"webhook_id": "wh_..%2F..%2Fx"}),
    case("webhook: oversize id", *DELETE_WEBHOOK, 422, "validation_error", path={"webhook_id": "wh_" + "a" * 300}),
    case("webhook: no such id to rotate", *ROTATE, 404, "not_found", path=NO_WEBHOOK),
    case("webhook: no such id to enable", *ENABLE, 404, "not_found", path=NO_WEBHOOK),
    case("webhook: id to enable with wrong characters", *ENABLE, 422, "validation_error", path={"webhook_id": "wh_x"}),
    case("webhook: no such id to test", *TEST_WEBHOOK, 404, "not_found", path=NO_WEBHOOK),
    case("deliveries: limit too big", *DELIVERIES, 422, "validation_error", path=NO_WEBHOOK, query={"limit": "101"}),
    case(
        "deliveries: cursor with wrong characters",
        *DELIVERIES,
        422,
        "validation_error",
        path=NO_WEBHOOK,
        query={"cursor": "a b"},
    ),
]


def test_every_route_with_inputs_has_cases(template: dict[str, Any]) -> None:
    routes = {(route.method, route.path) for spec in function_specs(template) for route in spec.routes}
    covered = {(param.values[0].method, param.values[0].route) for param in CASES}
    assert routes - NO_INPUT == covered, {"without a case": routes - NO_INPUT - covered}


@pytest.fixture
def linked(api: Api) -> Callable[[], tuple[str, str]]:
    def make() -> tuple[str, str]:
        user_id = api.user()
        status, account = api.link_clearwater(user_id)
        assert status == 201, account
        return user_id, str(account["account_id"])

    return make


@pytest.mark.parametrize("bad", CASES)
def test_bad_input_is_a_json_4xx_and_stores_nothing(
    api: Api, stack: Stack, linked: Callable[[], tuple[str, str]], bad: Case
) -> None:
    user_id, account_id = linked()
    before = user_items(stack)
    path = {name: value.replace(ACCOUNT, account_id) for name, value in bad.path.items()}
    status, body, _ = api.call(
        getattr(api, bad.function),
        bad.method,
        bad.route.format(**path) if path else bad.route,
        route=bad.route,
        path_parameters=path or None,
        body=bad.body,
        raw_body=bad.raw_body,
        query=bad.query,
        headers=bad.headers,
        user_id=user_id if bad.authorized else None,
    )
    assert (status, body["code"]) == (bad.status, bad.code), body
    assert set(body) == {"code", "message", "details"} and body["message"], body
    assert user_items(stack) == before
    assert api.take_fetch_requests() == []
