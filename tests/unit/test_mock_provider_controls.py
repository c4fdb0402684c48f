"""The sandbox's fault controls and counters, which the fault tests rely on to prove anything."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import date
from urllib.parse import parse_qs, urlsplit

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from mock_provider.app import create_app
from mock_provider.control import PROVIDER_RATE_LIMITS, Control
from mock_provider.registry import PROVIDERS

TODAY = date(2026, 11, 15)
KEY = {"X-Api-Key": "cw_sandbox_controls"}


@pytest.fixture
def client() -> FlaskClient:
    return create_app(today=TODAY).test_client()


def set_faults(client: FlaskClient, provider: str, **faults: object) -> TestResponse:
    answer = client.post(f"/_admin/faults/{provider}", json=faults)
    assert answer.status_code == 200, answer.get_json()
    return answer


def account(client: FlaskClient) -> TestResponse:
    return client.get("/clearwater/v1/account", headers=KEY)


def timed(call: Callable[[], TestResponse]) -> tuple[TestResponse, float]:
    started = time.monotonic()
    answer = call()
    return answer, time.monotonic() - started


def sparkgrid_token(client: FlaskClient) -> str:
    redirect_uri = "http://localhost/callback"
    location = client.get(
        "/sparkgrid/oauth/authorize",
        query_string={
            "response_type": "code",
            "client_id": "billhub-sandbox",
            "redirect_uri": redirect_uri,
            "state": "s",
            "login_hint": "faulty",
        },
    ).headers["Location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    answer = client.post(
        "/sparkgrid/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri},
        auth=("billhub-sandbox", "sparkgrid-sandbox-secret"),
    )
    access_token: str = answer.get_json()["access_token"]
    return access_token


def northgas_token(client: FlaskClient) -> str:
    answer = client.post(
        "/northgas/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("billhub-sandbox", "northgas-sandbox-secret"),
    )
    access_token: str = answer.get_json()["access_token"]
    return access_token


def data_call(client: FlaskClient, provider: str) -> TestResponse:
    """One authenticated call to a data endpoint of the provider, with good credentials."""
    if provider == "sparkgrid":
        return client.get("/sparkgrid/api/v2/customer", headers={"Authorization": f"Bearer {sparkgrid_token(client)}"})
    if provider == "northgas":
        return client.get(
            "/northgas/api/accounts/NG123456",
            headers={"Authorization": f"Bearer {northgas_token(client)}", "X-Customer-Postcode": "NG1 1AA"},
        )
    if provider == "clearwater":
        return account(client)
    return client.get("/fibrelink/api/me", auth=("faulty", "pass_good"))


def test_every_provider_has_default_faults_with_its_own_rate_limit(client: FlaskClient) -> None:
    assert set(PROVIDERS) == set(PROVIDER_RATE_LIMITS)
    stats = client.get("/_admin/stats").get_json()
    assert {name: stats[name]["faults"]["rate_limit_per_second"] for name in stats} == {
        "sparkgrid": 20,
        "northgas": 10,
        "clearwater": 25,
        "fibrelink": 15,
    }
    assert stats["fibrelink"] == {
        "requests": 0,
        "by_status": {},
        "max_requests_in_one_second": 0,
        "requests_by_second": {},
        "faults": stats["fibrelink"]["faults"],
    }
    assert (
        stats["sparkgrid"]["faults"]["hang_ms"] == 10_000 and stats["sparkgrid"]["faults"]["token_ttl_seconds"] == 3600
    )


def test_setting_faults_merges_and_answers_the_result(client: FlaskClient) -> None:
    set_faults(client, "fibrelink", latency_ms=5)
    merged = set_faults(client, "fibrelink", error_rate=0.25).get_json()
    assert (merged["latency_ms"], merged["error_rate"], merged["outage"]) == (5, 0.25, False)


def test_outage_answers_503_and_is_counted(client: FlaskClient) -> None:
    set_faults(client, "clearwater", outage=True)
    assert account(client).status_code == 503
    stats = client.get("/_admin/stats").get_json()["clearwater"]
    assert stats["requests"] == 1
    assert stats["by_status"] == {"503": 1}


def test_above_the_rate_limit_answers_429_with_retry_after() -> None:
    now = [1000.0]
    client = create_app(today=TODAY, control=Control(clock=lambda: now[0])).test_client()
    set_faults(client, "clearwater", rate_limit_per_second=2, retry_after_seconds=3)
    answers = [account(client) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert answers[2].headers["Retry-After"] == "3"
    now[0] += 1  # the next second has a fresh allowance
    assert account(client).status_code == 200
    assert client.get("/_admin/stats").get_json()["clearwater"]["max_requests_in_one_second"] == 3


def test_requests_are_counted_per_second_and_counters_reset_alone() -> None:
    # Given requests in two seconds, and a fault that is set
    now = [1000.2]
    client = create_app(today=TODAY, control=Control(clock=lambda: now[0])).test_client()
    set_faults(client, "clearwater", latency_ms=1)
    for at in (1000.2, 1000.9, 1002.0):
        now[0] = at
        account(client)
    # Then each second has its own count (for throughput benchmarks)
    stats = client.get("/_admin/stats").get_json()["clearwater"]
    assert stats["requests_by_second"] == {"1000": 2, "1002": 1}
    # When only the counters are reset
    assert client.post("/_admin/stats/reset").status_code == 200
    # Then the counts are empty and the fault is still set
    stats = client.get("/_admin/stats").get_json()["clearwater"]
    assert (stats["requests"], stats["requests_by_second"], stats["faults"]["latency_ms"]) == (0, {}, 1)


def test_the_default_rate_limit_applies_per_provider() -> None:
    client = create_app(today=TODAY, control=Control(clock=lambda: 1000.0)).test_client()
    statuses = [client.get("/fibrelink/api/me", auth=("x", "pass_good")).status_code for _ in range(16)]
    assert statuses == [200] * 15 + [429]
    assert account(client).status_code == 200  # another provider's allowance is untouched


def test_a_429_storm_answers_at_once_with_retry_after(client: FlaskClient) -> None:
    set_faults(client, "clearwater", storm_429=True, retry_after_seconds=7, latency_ms=2000)
    answer, elapsed = timed(lambda: account(client))
    assert (answer.status_code, answer.headers["Retry-After"]) == (429, "7")
    assert answer.get_json()["error"] == "rate_limited"
    assert elapsed < 1  # a 429 is never delayed


def test_latency_and_jitter_delay_answers(client: FlaskClient) -> None:
    set_faults(client, "clearwater", latency_ms=30, jitter_ms=20)
    answer, elapsed = timed(lambda: account(client))
    assert answer.status_code == 200
    assert 0.03 <= elapsed < 1


def test_timeouts_hang_then_answer_504(client: FlaskClient) -> None:
    set_faults(client, "clearwater", timeout_rate=1, hang_ms=40)
    answer, elapsed = timed(lambda: account(client))
    assert answer.status_code == 504
    assert elapsed >= 0.04


def test_error_rate_answers_a_mix_of_server_errors(client: FlaskClient) -> None:
    set_faults(client, "clearwater", error_rate=1)
    statuses = {account(client).status_code for _ in range(20)}
    assert len(statuses) > 1 and statuses <= {500, 502, 503}
    set_faults(client, "clearwater", error_rate=0.5)
    some = [account(client).status_code for _ in range(40)]
    assert 200 in some and set(some) - {200}


def test_malformed_answers_alternate_truncated_and_wrong_shape(client: FlaskClient) -> None:
    set_faults(client, "clearwater", malformed_rate=1)
    truncated, wrong_shape = account(client), account(client)
    assert (truncated.status_code, truncated.mimetype) == (200, "application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(truncated.get_data(as_text=True))
    assert (wrong_shape.status_code, wrong_shape.get_json()) == (200, {"unexpected": True})


def test_oauth_endpoints_are_never_malformed(client: FlaskClient) -> None:
    set_faults(client, "northgas", malformed_rate=1)
    assert northgas_token(client)  # the token answer parsed fine
    assert data_call(client, "northgas").get_json(silent=True) is None


@pytest.mark.parametrize(
    ("provider", "error"),
    [
        ("sparkgrid", "invalid_token"),
        ("northgas", "invalid_token"),
        ("clearwater", "invalid_api_key"),
        ("fibrelink", "invalid_credentials"),
    ],
)
def test_auth_failure_refuses_good_credentials_as_revoked(client: FlaskClient, provider: str, error: str) -> None:
    assert data_call(client, provider).status_code == 200
    set_faults(client, provider, auth_failure=True)
    refused = data_call(client, provider)
    assert (refused.status_code, refused.get_json()["error"]) == (401, error)


@pytest.mark.parametrize(
    "body",
    [
        {"meteor_strike": True},
        {"outage": "yes"},
        {"error_rate": 1.5},
        {"latency_ms": -1},
        {"latency_ms": 2.5},
        {"rate_limit_per_second": True},
        {"storm_429": True, "hang_ms": "soon"},
    ],
)
def test_unknown_faults_or_bad_values_are_400_and_change_nothing(client: FlaskClient, body: dict[str, object]) -> None:
    answer = client.post("/_admin/faults/clearwater", json=body)
    assert answer.status_code == 400 and answer.get_json()["error"]
    assert client.get("/_admin/stats").get_json()["clearwater"]["faults"]["storm_429"] is False


def test_faults_for_an_unknown_provider_are_404(client: FlaskClient) -> None:
    assert client.post("/_admin/faults/gasworks", json={"outage": True}).status_code == 404
