"""Hostile input through the handlers (issue 12): bodies that are not JSON objects, JSON the parser chokes on
or that is not I-JSON, control and format characters in identifiers, other Unicode spellings of a registered
email, and the security headers every response carries. Each refusal is a JSON 4xx that stores nothing."""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from typing import Any

import jwt
import pytest

from localcloud.provision import Stack
from localcloud.template import ROOT
from tests.events import http_event, response_json
from tests.integration.harness import API_KEY, Api, LambdaContext, user_items

PASSWORD = "pw-" * 4  # what Api.user registers with
SENTINEL = "__SENTINEL__"


@dataclass(frozen=True)
class BodyRoute:
    function: str  # the Api attribute holding the route's handler module
    authorized: bool
    # A body the route accepts once ``SENTINEL`` (a value somewhere in it) is replaced by ``valid``.
    template: dict[str, Any]
    valid: str

    def raw(self, literal: str, account_id: str) -> str:
        text = json.dumps(self.template).replace(json.dumps(SENTINEL), literal)
        return text.replace("{account}", account_id)

    def body(self, account_id: str) -> Any:
        return json.loads(self.raw(self.valid, account_id))


BODY_ROUTES = {
    ("POST", "/auth/register"): BodyRoute(
        "auth", False, {"email": "new@example.com", "password": SENTINEL}, json.dumps(PASSWORD)
    ),
    ("POST", "/auth/login"): BodyRoute(
        "auth", False, {"email": "ada@example.com", "password": SENTINEL}, json.dumps(PASSWORD)
    ),
    ("PATCH", "/me"): BodyRoute("auth", True, {"preferences": {"due_soon_days": SENTINEL}}, "30"),
    ("DELETE", "/me"): BodyRoute("auth", True, {"password": SENTINEL}, json.dumps(PASSWORD)),
    ("POST", "/accounts/link"): BodyRoute(
        "link",
        True,
        {"provider": "clearwater", "credentials": {"api_key": "cw_sandbox_hostile"}, "nickname": SENTINEL},
        '"home"',
    ),
    ("PUT", "/accounts/{account_id}/credentials"): BodyRoute(
        "link", True, {"credentials": {"api_key": SENTINEL}}, json.dumps(API_KEY)
    ),
    ("POST", "/bills/refresh"): BodyRoute("refresh", True, {"account_ids": [SENTINEL]}, '"{account}"'),
    ("POST", "/webhooks"): BodyRoute(
        "webhooks", True, {"url": "https://93.184.215.14/hooks", "description": SENTINEL}, '"ledger"'
    ),
}


@pytest.fixture
def linked(api: Api) -> tuple[str, str]:
    """ada, registered with ``PASSWORD``, with one Clearwater account linked."""
    user_id = api.user()
    status, account = api.link_clearwater(user_id)
    assert status == 201, account
    return user_id, str(account["account_id"])


def call_route(
    api: Api, route: tuple[str, str], user_id: str, account_id: str, **kwargs: Any
) -> tuple[int, Any, dict[str, str]]:
    method, path = route
    spec = BODY_ROUTES[route]
    parameters = {"account_id": account_id} if "{account_id}" in path else None
    return api.call(
        getattr(api, spec.function),
        method,
        path.format(account_id=account_id),
        route=path,
        path_parameters=parameters,
        user_id=user_id if spec.authorized else None,
        **kwargs,
    )


def assert_refused_and_nothing_stored(
    api: Api,
    stack: Stack,
    before: list[dict[str, Any]],
    answer: tuple[int, Any, dict[str, str]],
    expected: tuple[int, str],
    what: str,
) -> None:
    status, body, _ = answer
    assert (status, body.get("code") if isinstance(body, dict) else body) == expected, (what, body)
    assert set(body) == {"code", "message", "details"} and body["message"], (what, body)
    assert user_items(stack) == before, what
    assert api.take_fetch_requests() == [], what


def test_every_route_with_a_body_is_covered() -> None:
    document = json.loads((ROOT / "docs" / "openapi.json").read_text())
    with_body = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if "requestBody" in op
    }
    assert with_body == set(BODY_ROUTES)


@pytest.mark.parametrize("route", list(BODY_ROUTES), ids=" ".join)
def test_each_body_here_is_accepted(api: Api, linked: tuple[str, str], route: tuple[str, str]) -> None:
    """The bodies the other tests spoil are good ones: what is refused there is the spoiling alone."""
    user_id, account_id = linked
    status, body, _ = call_route(api, route, user_id, account_id, body=BODY_ROUTES[route].body(account_id))
    assert 200 <= status < 300, body


# ------------------------------------------------------------------ 1. a body that is not a JSON object
@pytest.mark.parametrize("route", list(BODY_ROUTES), ids=" ".join)
def test_a_body_that_is_not_a_json_object_is_refused(
    api: Api, stack: Stack, linked: tuple[str, str], route: tuple[str, str]
) -> None:
    user_id, account_id = linked
    good = BODY_ROUTES[route].body(account_id)
    before = user_items(stack)
    for body in ([good], [good, {"evil": 1}], [], json.dumps(good), "text", 1, 1.5, None, True, False):
        answer = call_route(api, route, user_id, account_id, raw_body=json.dumps(body))
        assert_refused_and_nothing_stored(api, stack, before, answer, (422, "validation_error"), repr(body))
        problem = {"loc": ["body"], "type": "model_type", "message": "The body must be a JSON object."}
        assert answer[1]["details"] == [problem], body
        assert "access_token" not in answer[1]


# ------------------------------------------------------------------ 2. JSON the parser fails on, or not I-JSON
HOSTILE_LITERALS = {
    "an integer of 4,301 digits": "1" * 4301,
    "a negative integer of 5,000 digits": "-" + "9" * 5000,
    "a huge exponent": "1e999999",
    "a huge negative exponent": "-1e999999",
    "NaN": "NaN",
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
    "a lone high surrogate": '"pw-\\ud800-pw-pw"',
    "a lone low surrogate": '"pw-\\udfff-pw-pw"',
    "deep nesting": "[" * 5000 + "]" * 5000,
    "nesting deeper than any body has": "[" * 40 + "]" * 40,
}


@pytest.mark.parametrize("route", list(BODY_ROUTES), ids=" ".join)
def test_json_the_parser_fails_on_is_invalid_json(
    api: Api, stack: Stack, linked: tuple[str, str], route: tuple[str, str]
) -> None:
    user_id, account_id = linked
    spec = BODY_ROUTES[route]
    before = user_items(stack)
    for what, literal in HOSTILE_LITERALS.items():
        answer = call_route(api, route, user_id, account_id, raw_body=spec.raw(literal, account_id))
        assert_refused_and_nothing_stored(api, stack, before, answer, (400, "invalid_json"), what)
        assert answer[1]["details"]["reason"], what
    good = json.dumps(spec.body(account_id))
    first = next(iter(spec.template))
    duplicated = "{" + json.dumps(first) + ': "shadowed", ' + good[1:]
    answer = call_route(api, route, user_id, account_id, raw_body=duplicated)
    assert_refused_and_nothing_stored(api, stack, before, answer, (400, "invalid_json"), "a duplicated member name")
    assert answer[1]["details"] == {"reason": "An object has the same member name twice."}


# ------------------------------------------------------------------ 3. control and format characters
UNSEEN = {
    "NUL": "\x00",
    "ESC": "\x1b[31m",
    "NEL (C1 control)": "\x85",
    "zero-width space": "\u200b",
    "right-to-left override": "\u202e",
    "byte order mark": "\ufeff",
    "soft hyphen": "\u00ad",
    "line separator": "\u2028",
    "tag character": "\U000e0041",
}


def test_control_and_format_characters_are_refused_in_emails(api: Api, stack: Stack) -> None:
    before = user_items(stack)
    for what, char in UNSEEN.items():
        for email in (
            f"a{char}b@example.com",
            f"ad{char}a@example.com",
            f"ada{char}@example.com",
            f"ada@exa{char}mple.com",
        ):
            status, body, _ = api.call(api.auth, "POST", "/auth/register", body={"email": email, "password": PASSWORD})
            assert (status, body.get("code")) == (422, "validation_error"), (what, ascii(email), body)
    assert user_items(stack) == before


def test_control_and_format_characters_are_refused_in_nicknames_and_credentials(
    api: Api, stack: Stack, linked: tuple[str, str]
) -> None:
    user_id, account_id = linked
    before = user_items(stack)
    for what, char in UNSEEN.items():
        bodies = {
            "nickname": {
                "provider": "clearwater",
                "credentials": {"api_key": "cw_sandbox_other"},
                "nickname": f"ho{char}me",
            },
            "credential": {"provider": "fibrelink", "credentials": {"username": "ada", "password": f"pass_good{char}"}},
        }
        for field, body in bodies.items():
            answer = api.call(api.link, "POST", "/accounts/link", user_id=user_id, body=body)
            assert_refused_and_nothing_stored(api, stack, before, answer, (422, "validation_error"), f"{field}: {what}")
        answer = api.route(
            api.link,
            "PUT",
            "/accounts/{account_id}/credentials",
            {"account_id": account_id},
            user_id=user_id,
            body={"credentials": {"api_key": f"{API_KEY}{char}"}},
        )
        assert_refused_and_nothing_stored(api, stack, before, answer, (422, "validation_error"), f"repair: {what}")
        answer = api.route(
            api.link,
            "GET",
            "/accounts/oauth/{provider}/start",
            {"provider": "sparkgrid"},
            user_id=user_id,
            query={"nickname": f"ho{char}me"},
        )
        assert_refused_and_nothing_stored(api, stack, before, answer, (422, "validation_error"), f"oauth: {what}")


# ------------------------------------------------------------------ 4. one address, one user
def register(api: Api, email: str) -> tuple[int, Any]:
    status, body, _ = api.call(api.auth, "POST", "/auth/register", body={"email": email, "password": PASSWORD})
    return status, body


def login(api: Api, email: str, password: str = PASSWORD) -> tuple[int, Any, dict[str, str]]:
    return api.call(api.auth, "POST", "/auth/login", body={"email": email, "password": password})


def user_of(token: dict[str, Any]) -> str:
    return str(jwt.decode(token["access_token"], options={"verify_signature": False})["sub"])


NFC_JOSE = unicodedata.normalize("NFC", "josé@example.com")
NFD_JOSE = unicodedata.normalize("NFD", "josé@example.com")
SPELLINGS = {
    "ada@example.com": [
        "ada@example.com",
        "ADA@Example.COM",
        "\uff41da@example.com",
        "ada@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com",
        " ada@example.com ",
    ],
    NFC_JOSE: [NFD_JOSE, "JOSÉ@example.com"],
    NFD_JOSE: [NFC_JOSE],
    "straße@example.com": ["STRASSE@example.com", "strasse@example.com"],
}


@pytest.mark.parametrize("registered", list(SPELLINGS), ids=ascii)
def test_another_spelling_of_a_registered_email_is_the_same_user(api: Api, stack: Stack, registered: str) -> None:
    status, body = register(api, registered)
    assert status == 201, body
    user_id = body["user_id"]
    before = user_items(stack)
    for spelling in SPELLINGS[registered]:
        status, body = register(api, spelling)
        assert (status, body.get("code")) == (409, "conflict"), (ascii(spelling), body)
        status, token, _ = login(api, spelling)
        assert status == 200 and user_of(token) == user_id, (ascii(spelling), token)
    assert user_items(stack) == before


def test_the_profile_shows_the_canonical_email(api: Api) -> None:
    status, body = register(api, "\uff21da@Example.COM")
    assert status == 201, body
    status, profile, _ = api.call(api.auth, "GET", "/me", user_id=body["user_id"])
    assert (status, profile["email"]) == (200, "ada@example.com")


def test_failed_logins_count_against_the_address_whatever_its_spelling(api: Api) -> None:
    api.user()
    for spelling in (
        "ada@example.com",
        "ADA@example.com",
        "\uff41da@example.com",
        "ada@\uff45xample.com",
        "Ada@EXAMPLE.com",
    ):
        status, body, _ = login(api, spelling, "wrong-password")
        assert (status, body["code"]) == (401, "unauthorized"), ascii(spelling)
    status, body, headers = login(api, "ada@example.com")  # even the right password now waits
    assert (status, body.get("code")) == (429, "too_many_attempts") and "Retry-After" in headers


# ------------------------------------------------------------------ 5. security headers on every response
SECURITY_HEADERS = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "strict-transport-security": "max-age=63072000; includeSubDomains",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def raw_call(api: Api, function: str, event: dict[str, Any]) -> tuple[int, dict[str, str]]:
    response = getattr(api, function).handler(event, LambdaContext())
    response_json(response)  # every answer with a body is JSON
    headers = {name.lower(): value for name, value in (response.get("headers") or {}).items()}
    return int(response["statusCode"]), headers


def calls(user_id: str, account_id: str) -> dict[str, tuple[str, dict[str, Any], int]]:
    """What each call stands for: (function, API Gateway event, the status it gets)."""
    login_body = {"email": "ada@example.com", "password": PASSWORD}
    base64_body = http_event("POST", "/auth/login", raw_body="//79")
    base64_body["isBase64Encoded"] = True
    account = {"account_id": account_id}
    return {
        "register": (
            "auth",
            http_event("POST", "/auth/register", body={"email": "bob@example.com", "password": PASSWORD}),
            201,
        ),
        "register taken": ("auth", http_event("POST", "/auth/register", body=login_body), 409),
        "login": ("auth", http_event("POST", "/auth/login", body=login_body), 200),
        "login refused": (
            "auth",
            http_event("POST", "/auth/login", body={**login_body, "password": "wrong-password"}),
            401,
        ),
        "profile": ("auth", http_event("GET", "/me", user_id=user_id), 200),
        "profile change refused": ("auth", http_event("PATCH", "/me", user_id=user_id, body={"preferences": 1}), 422),
        "no such route": ("auth", http_event("GET", "/nowhere", user_id=user_id), 404),
        "invalid JSON": ("auth", http_event("POST", "/auth/login", raw_body="{nope"), 400),
        "body too large (answered before routing)": (
            "auth",
            http_event("POST", "/auth/login", raw_body="x" * 17000),
            413,
        ),
        "not JSON (answered before routing)": (
            "auth",
            http_event(
                "POST", "/auth/login", raw_body="a=b", headers={"content-type": "application/x-www-form-urlencoded"}
            ),
            415,
        ),
        "not UTF-8 (answered before routing)": ("auth", base64_body, 400),
        "providers": ("link", http_event("GET", "/providers", user_id=user_id), 200),
        "accounts": ("link", http_event("GET", "/accounts", user_id=user_id), 200),
        "oauth callback refused": (
            "link",
            http_event(
                "GET",
                "/accounts/oauth/sparkgrid/callback",
                route="/accounts/oauth/{provider}/callback",
                path_parameters={"provider": "sparkgrid"},
                query={"state": "forged", "code": "abc"},
            ),
            400,
        ),
        "bills": ("bills", http_event("GET", "/bills", user_id=user_id), 200),
        "insights": ("insights", http_event("GET", "/insights", user_id=user_id), 200),
        "refresh": ("refresh", http_event("POST", "/bills/refresh", user_id=user_id), 202),
        "delete": (
            "delete",
            http_event(
                "DELETE",
                f"/accounts/{account_id}",
                route="/accounts/{account_id}",
                path_parameters=account,
                user_id=user_id,
            ),
            204,
        ),
    }


def test_every_response_carries_the_security_headers(api: Api, linked: tuple[str, str]) -> None:
    user_id, account_id = linked
    for what, (function, event, expected) in calls(user_id, account_id).items():
        status, headers = raw_call(api, function, event)
        assert status == expected, what
        missing = {name: value for name, value in SECURITY_HEADERS.items() if headers.get(name) != value}
        assert not missing, (what, headers)
        if status != 204:
            assert headers["content-type"] == "application/json", (what, headers)


def test_an_unexpected_error_carries_them_too(
    api: Api, linked: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id, _ = linked

    def broken(*_: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(api.auth.users, "get_profile", broken)
    status, headers = raw_call(api, "auth", http_event("GET", "/me", user_id=user_id))
    assert status == 500
    assert {name: headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS


def test_a_throttled_login_keeps_its_retry_after(api: Api, linked: tuple[str, str]) -> None:
    for _ in range(5):
        assert login(api, "ada@example.com", "wrong-password")[0] == 401
    status, body, headers = login(api, "ada@example.com")
    lowered = {name.lower(): value for name, value in headers.items()}
    assert status == 429 and lowered["retry-after"].isdigit()
    assert body["details"] == {"retry_after": int(lowered["retry-after"])}
    assert {name: lowered.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS
