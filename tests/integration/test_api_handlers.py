"""The handlers through API Gateway-shaped events, against moto and the mock provider over HTTP."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import httpx
import pytest

from localcloud.provision import Stack
from mock_provider.clearwater import account_number_for
from mock_provider.control import Control
from mock_provider.sandbox import monthly_bills
from tests.conftest import Clock
from tests.events import authorizer_event, sqs_event
from tests.integration.harness import API_KEY, Api, LambdaContext, raw_items, receive_all, user_items


# ------------------------------------------------------------------ auth
def test_register_login_and_me(api: Api) -> None:
    user_id = api.user()
    status, token, _ = api.call(
        api.auth, "POST", "/auth/login", body={"email": "ADA@example.com", "password": "pw-" * 4}
    )
    assert status == 200 and token["token_type"] == "Bearer" and token["expires_in"] == 3600
    verdict = api.authorizer.handler(authorizer_event(f"Bearer {token['access_token']}"), LambdaContext())
    assert verdict == {"isAuthorized": True, "context": {"user_id": user_id}}
    status, profile, _ = api.call(api.auth, "GET", "/me", user_id=user_id)
    assert status == 200 and profile["email"] == "ada@example.com"
    assert profile["preferences"] == {
        "refresh_interval": "daily",
        "due_soon_days": 7,
        "currency": "USD",
        "reminders": True,
    }


def test_email_is_unique(api: Api) -> None:
    api.user()
    status, body, _ = api.call(
        api.auth, "POST", "/auth/register", body={"email": "ada@example.com", "password": "x" * 12}
    )
    assert (status, body["code"]) == (409, "conflict")


def test_unknown_email_and_wrong_password_get_the_same_answer(api: Api) -> None:
    api.user()
    wrong = api.call(api.auth, "POST", "/auth/login", body={"email": "ada@example.com", "password": "nope" * 3})
    unknown = api.call(api.auth, "POST", "/auth/login", body={"email": "bob@example.com", "password": "nope" * 3})
    assert wrong[0] == unknown[0] == 401
    assert wrong[1] == unknown[1]


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"raw_body": "{not json"}, 400, "invalid_json"),
        ({"body": {"email": "not-an-email", "password": "long-enough-pw"}}, 422, "validation_error"),
        ({"body": {"email": "a@b.co", "password": "short"}}, 422, "validation_error"),
        ({"body": {"email": "a@b.co", "password": "long-enough-pw", "admin": True}}, 422, "validation_error"),
        ({"raw_body": json.dumps({"email": "a@b.co", "password": "p" * 20000})}, 413, "body_too_large"),
    ],
)
def test_bad_input_is_a_clear_4xx_with_a_json_error(api: Api, kwargs: dict[str, Any], status: int, code: str) -> None:
    got_status, body, _ = api.call(api.auth, "POST", "/auth/register", **kwargs)
    assert (got_status, body["code"]) == (status, code)
    assert body["message"]


@pytest.mark.parametrize("authorization", [None, "Bearer not.a.jwt", "Basic dXNlcjpwYXNz"])
def test_authorizer_refuses_missing_or_bad_tokens(api: Api, authorization: str | None) -> None:
    assert api.authorizer.handler(authorizer_event(authorization), LambdaContext()) == {"isAuthorized": False}


@pytest.mark.parametrize(
    ("function", "method", "path"),
    [
        ("auth", "GET", "/me"),
        ("link", "GET", "/accounts"),
        ("bills", "GET", "/bills"),
        ("insights", "GET", "/insights"),
        ("refresh", "POST", "/bills/refresh"),
        ("delete", "DELETE", "/accounts/" + "0" * 32),
        ("webhooks", "GET", "/webhooks"),
        ("webhooks", "POST", "/webhooks/wh_" + "0" * 24 + "/test"),
    ],
)
def test_a_guarded_route_without_the_authorizers_verdict_is_401(
    api: Api, function: str, method: str, path: str
) -> None:
    # A route reached with no user id from the authorizer (a gateway misconfigured) serves nobody's data.
    status, body, _ = api.call(getattr(api, function), method, path)
    assert (status, body) == (401, {"code": "unauthorized", "message": "Missing caller identity.", "details": None})


# ------------------------------------------------------------------ linking
def test_link_verifies_with_the_provider_and_encrypts_credentials(api: Api, stack: Stack) -> None:
    user_id = api.user()
    status, account = api.link_clearwater(user_id)
    assert status == 201
    assert account["status"] == "active"
    assert account["external_ref"].endswith(account_number_for(API_KEY)[-4:])
    assert API_KEY not in json.dumps(account)
    # At rest: the key is KMS ciphertext, never plaintext.
    assert API_KEY not in json.dumps(raw_items(stack), default=str)
    status, listing, _ = api.call(api.link, "GET", "/accounts", user_id=user_id)
    assert [item["account_id"] for item in listing["accounts"]] == [account["account_id"]]


def test_refused_credentials_store_nothing(api: Api, stack: Stack) -> None:
    user_id = api.user()
    before = user_items(stack)
    status, body, _ = api.call(
        api.link,
        "POST",
        "/accounts/link",
        user_id=user_id,
        body={"provider": "clearwater", "credentials": {"api_key": "wrong_key_123"}},
    )
    assert (status, body["code"]) == (422, "credentials_rejected")
    assert user_items(stack) == before


def test_same_provider_account_cannot_be_linked_twice(api: Api) -> None:
    user_id = api.user()
    request = {"provider": "clearwater", "credentials": {"api_key": API_KEY}}
    assert api.call(api.link, "POST", "/accounts/link", user_id=user_id, body=request)[0] == 201
    status, body, _ = api.call(api.link, "POST", "/accounts/link", user_id=user_id, body=request)
    assert (status, body["code"]) == (409, "conflict")


def test_provider_down_at_link_time_stores_a_pending_account(api: Api, mock_provider: tuple[str, Control]) -> None:
    mock_provider[1].set_faults("clearwater", outage=True)
    user_id = api.user()
    status, account = api.link_clearwater(user_id)
    assert (status, account["status"]) == (201, "pending")


@pytest.mark.stack_parameters(PublicBaseUrl="https://api.example.com/v1/")
def test_the_oauth_redirect_uri_is_the_configured_public_base_not_the_request_host(api: Api) -> None:
    # Given an API reached through a custom domain with a base path: the events' requestContext.domainName
    # is the execute-api host, which payload 2.0 gives without the mapping's path
    expected = "https://api.example.com/v1/accounts/oauth/sparkgrid/callback"
    user_id = api.user()
    status, start = api.oauth_start(user_id, "sparkgrid")
    assert status == 200, start
    # The authorize URL sends the browser back under the configured base (trailing slash dropped)
    assert parse_qs(urlsplit(start["authorize_url"]).query)["redirect_uri"] == [expected]
    consent = httpx.get(f"{start['authorize_url']}&{urlencode({'login_hint': 'ada'})}", follow_redirects=False)
    location = urlsplit(consent.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == expected
    # and the token exchange sends the same redirect_uri: the sandbox redeems a code only with the one
    # it was issued for (mock_provider/tokens.py), so the link succeeds
    status, account = api.oauth_callback("sparkgrid", dict(parse_qsl(location.query)))
    assert (status, account["provider"], account["status"]) == (201, "sparkgrid", "active")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"provider": "nosuchco", "credentials": {"api_key": API_KEY}}, 400, "unknown_provider"),
        ({"provider": "clearwater", "credentials": {"password": "x" * 10}}, 422, "invalid_credentials_format"),
        ({"provider": "Clear Water!", "credentials": {}}, 422, "validation_error"),
    ],
)
def test_link_rejects_bad_requests(api: Api, body: dict[str, Any], status: int, code: str) -> None:
    got = api.call(api.link, "POST", "/accounts/link", user_id=api.user(), body=body)
    assert (got[0], got[1]["code"]) == (status, code)


def test_providers_list_their_credential_fields(api: Api) -> None:
    status, body, _ = api.call(api.link, "GET", "/providers", user_id="anyone")
    assert status == 200
    clearwater = next(p for p in body["providers"] if p["name"] == "clearwater")
    assert clearwater["auth_type"] == "api_key"
    assert clearwater["credential_fields"] == [
        {"name": "api_key", "label": "API key from the ClearWater customer portal", "secret": True}
    ]


# ------------------------------------------------------------------ refresh and bills
def linked_user(api: Api) -> tuple[str, str]:
    user_id = api.user()
    _, account = api.link_clearwater(user_id)
    return user_id, str(account["account_id"])


def test_refresh_fetches_and_bills_match_the_provider(api: Api, stack: Stack, clock: Clock) -> None:
    user_id, account_id = linked_user(api)
    status, started, _ = api.call(api.refresh, "POST", "/bills/refresh", user_id=user_id)
    assert status == 202 and started["accounts"] == [account_id]
    messages = receive_all(stack)
    assert [json.loads(m["Body"])["account_id"] for m in messages] == [account_id]

    result = api.fetch.handler(sqs_event(messages, stack.attributes["FetchQueue"]["Arn"]), LambdaContext())
    assert result == {"batchItemFailures": []}

    status, job, _ = api.call(
        api.refresh,
        "GET",
        f"/bills/refresh/{started['job_id']}",
        route="/bills/refresh/{job_id}",
        path_parameters={"job_id": started["job_id"]},
        user_id=user_id,
    )
    assert (job["status"], job["succeeded"], job["pending"]) == ("succeeded", 1, 0)

    status, page, _ = api.call(api.bills, "GET", "/bills", user_id=user_id)
    expected = monthly_bills(account_number_for(API_KEY), clock.today())
    assert [(b["provider_bill_id"], b["amount"], b["due_on"]) for b in page["bills"]] == [
        (b.bill_id, str(b.amount), b.due_date.isoformat()) for b in expected
    ]
    # Nothing is due from the 22nd of a month (the month's bill is paid) unless last month's is overdue
    unpaid = [b.amount for b in expected if b.status != "paid"]
    assert page["totals"]["due"] == ({"USD": str(sum(unpaid, Decimal(0)))} if unpaid else {})
    assert page["accounts"][0]["stale"] is False

    # A second fetch of unchanged bills writes no bill.
    api.call(api.refresh, "POST", "/bills/refresh", user_id=user_id)
    before = {item["SK"]["S"]: item for item in raw_items(stack) if item["SK"]["S"].startswith("BILL#")}
    api.fetch.handler(sqs_event(receive_all(stack), stack.attributes["FetchQueue"]["Arn"]), LambdaContext())
    after = {item["SK"]["S"]: item for item in raw_items(stack) if item["SK"]["S"].startswith("BILL#")}
    assert after == before and len(after) == len(expected)


def test_provider_outage_keeps_last_good_bills_and_reports_the_failure(
    api: Api, stack: Stack, clock: Clock, mock_provider: tuple[str, Control]
) -> None:
    user_id, _ = linked_user(api)
    api.call(api.refresh, "POST", "/bills/refresh", user_id=user_id)
    api.fetch.handler(sqs_event(receive_all(stack), stack.attributes["FetchQueue"]["Arn"]), LambdaContext())
    _, good, _ = api.call(api.bills, "GET", "/bills", user_id=user_id)

    # An hour later the provider is down
    clock.advance(hours=1)
    mock_provider[1].set_faults("clearwater", outage=True)
    api.call(api.refresh, "POST", "/bills/refresh", user_id=user_id)
    messages = receive_all(stack)
    result = api.fetch.handler(sqs_event(messages, stack.attributes["FetchQueue"]["Arn"]), LambdaContext())
    assert result == {"batchItemFailures": [{"itemIdentifier": messages[0]["MessageId"]}]}

    _, page, _ = api.call(api.bills, "GET", "/bills", user_id=user_id)
    assert page["bills"] == good["bills"]
    assert page["accounts"][0]["stale"] is True
    assert "HTTP 503" in page["accounts"][0]["stale_reason"]


def test_a_poison_message_fails_only_its_own_record(api: Api, stack: Stack) -> None:
    user_id, _ = linked_user(api)
    api.call(api.refresh, "POST", "/bills/refresh", user_id=user_id)
    good = receive_all(stack)
    poison = {"MessageId": "poison-1", "ReceiptHandle": "rh", "Body": '{"not": "a fetch request"}'}
    result = api.fetch.handler(sqs_event([*good, poison], stack.attributes["FetchQueue"]["Arn"]), LambdaContext())
    assert result == {"batchItemFailures": [{"itemIdentifier": "poison-1"}]}


@pytest.mark.parametrize(
    ("provider", "status", "code"), [("clearwater", 404, "not_found"), ("acme", 400, "unknown_provider")]
)
def test_bills_of_an_unlinked_or_unknown_provider(api: Api, provider: str, status: int, code: str) -> None:
    got_status, body, _ = api.call(
        api.bills,
        "GET",
        f"/bills/{provider}",
        route="/bills/{provider}",
        path_parameters={"provider": provider},
        user_id=api.user(),
    )
    assert (got_status, body["code"]) == (status, code)


def test_refresh_with_no_accounts_is_409(api: Api) -> None:
    status, body, _ = api.call(api.refresh, "POST", "/bills/refresh", user_id=api.user())
    assert (status, body["code"]) == (409, "nothing_to_refresh")
