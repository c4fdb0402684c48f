"""The OAuth2 callback answers a browser with a page and an API client with JSON, same status either way:
linked, reconnected, access denied, link request expired, another error."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest

from tests.events import http_event
from tests.integration.harness import Api, LambdaContext

# What Firefox sends for a page it navigates to (the provider's redirect back to us).
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"


def callback(api: Api, query: dict[str, str], accept: str | None, provider: str = "sparkgrid") -> dict[str, Any]:
    """The browser (or a client) arriving back from the provider: no access token, only the query."""
    event = http_event(
        "GET",
        f"/accounts/oauth/{provider}/callback",
        route="/accounts/oauth/{provider}/callback",
        path_parameters={"provider": provider},
        query=query,
        headers={"accept": accept} if accept else None,
    )
    answer: dict[str, Any] = api.link.handler(event, LambdaContext())
    if answer["statusCode"] in (200, 201):  # the first fetch the link enqueued, taken as the harness does
        api.take_fetch_requests()
    return answer


def assert_page(answer: dict[str, Any], status: int, *phrases: str) -> str:
    headers = answer["headers"]
    assert (answer["statusCode"], headers["Content-Type"]) == (status, "text/html; charset=utf-8"), answer
    assert headers["Content-Security-Policy"] == PAGE_POLICY
    # The other security headers still come with it, the page's own policy instead of the shared one.
    assert (headers["X-Content-Type-Options"], headers["X-Frame-Options"]) == ("nosniff", "DENY")
    page: str = answer["body"]
    assert page.startswith("<!doctype html>")
    for phrase in phrases:
        assert phrase in page, page
    return page


def test_a_browser_sees_a_page_for_a_new_account_and_an_api_client_the_account(api: Api) -> None:
    user_id = api.user()
    linked = callback(api, api.oauth_consent(user_id, "sparkgrid", "ada"), BROWSER)
    assert_page(linked, 201, "SparkGrid Energy account linked", "close this window")
    assert [account["provider"] for account in api.accounts(user_id)] == ["sparkgrid"]
    other = api.user("grace@example.com")
    answer = callback(api, api.oauth_consent(other, "sparkgrid", "grace"), "application/json")
    assert (answer["statusCode"], answer["headers"]["Content-Type"]) == (201, "application/json")
    assert json.loads(answer["body"])["account_id"] == api.accounts(other)[0]["account_id"]


def test_a_repaired_account_is_a_page_saying_it_is_connected_again(api: Api) -> None:
    user_id = api.user()
    account_id = api.oauth_link(user_id, "sparkgrid", "ada")[1]["account_id"]
    repaired = callback(api, api.oauth_consent(user_id, "sparkgrid", "ada", account_id), BROWSER)
    assert_page(repaired, 200, "SparkGrid Energy account reconnected", "its bills were kept")


def test_denied_consent_is_a_page_saying_nothing_was_linked_and_how_to_start_again(api: Api) -> None:
    user_id = api.user()
    denied = callback(api, api.oauth_consent(user_id, "sparkgrid", "user_denied"), BROWSER)
    assert_page(denied, 400, "SparkGrid Energy did not grant access", "start again from billhub", "oauth_denied")
    assert api.accounts(user_id) == []


def test_a_used_or_expired_link_request_is_a_page_asking_to_start_again(api: Api) -> None:
    user_id = api.user()
    query = api.oauth_consent(user_id, "sparkgrid", "ada")
    assert callback(api, query, BROWSER)["statusCode"] == 201
    again = callback(api, query, BROWSER)
    assert_page(again, 400, "This link request has expired", "already used or has expired", "invalid_oauth_state")
    # An API client keeps the JSON error, same status and code.
    replayed = callback(api, query, None)
    assert (replayed["statusCode"], json.loads(replayed["body"])["code"]) == (400, "invalid_oauth_state")


def test_another_error_is_a_page_with_the_reason_and_the_status(api: Api) -> None:
    user_id = api.user()
    assert api.oauth_link(user_id, "sparkgrid", "ada")[0] == 201
    twice = callback(api, api.oauth_consent(user_id, "sparkgrid", "ada"), BROWSER)
    assert_page(twice, 409, "could not be linked", "already linked", "Nothing was changed", "conflict")


def test_the_page_escapes_what_it_echoes(api: Api) -> None:
    # Given a nickname with markup, chosen when the link was started
    user_id = api.user()
    nickname = '<script>alert("x")</script>&'
    status, start, _ = api.route(
        api.link,
        "GET",
        "/accounts/oauth/{provider}/start",
        {"provider": "sparkgrid"},
        query={"nickname": nickname},
        user_id=user_id,
    )
    assert status == 200, start
    consent = httpx.get(f"{start['authorize_url']}&{urlencode({'login_hint': 'ada'})}", follow_redirects=False)
    query = dict(parse_qsl(urlsplit(consent.headers["Location"]).query))
    # When the browser arrives back, the page names the account by its nickname, as text
    page = assert_page(callback(api, query, BROWSER), 201)
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page
    assert "<script" not in page


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (BROWSER, True),
        # Chrome's navigation Accept
        ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8", True),
        ("application/json, text/html;q=0.9", False),
        ("text/html;q=0.5, application/json", False),
        ("application/json;q=0.5, text/html", True),
        ("*/*", False),  # a tie goes to JSON
        ("text/*", True),
        ("", False),
        (None, False),
    ],
)
def test_only_a_caller_preferring_html_gets_the_page(api: Api, accept: str | None, html: bool) -> None:
    answer = callback(api, api.oauth_consent(api.user(), "sparkgrid", "ada"), accept)
    assert answer["statusCode"] == 201
    assert answer["headers"]["Content-Type"] == ("text/html; charset=utf-8" if html else "application/json")
