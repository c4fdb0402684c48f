"""The sandbox's fault controls and counters, which the fault tests rely on to prove anything."""

from __future__ import annotations

from datetime import date

import pytest
from flask.testing import FlaskClient

from mock_provider.app import create_app
from mock_provider.control import Control

KEY = {"X-Api-Key": "cw_sandbox_controls"}


@pytest.fixture
def client() -> FlaskClient:
    return create_app(today=date(2026, 11, 15)).test_client()


def test_bills_page_through_two_years(client: FlaskClient) -> None:
    first = client.get("/clearwater/v1/bills?page=1&per_page=12", headers=KEY).get_json()
    second = client.get("/clearwater/v1/bills?page=2&per_page=12", headers=KEY).get_json()
    assert (first["total_pages"], len(first["bills"]), len(second["bills"])) == (2, 12, 12)
    assert {bill["status"] for bill in first["bills"] + second["bills"]} <= {"PAID", "UNPAID", "PAST_DUE"}


def test_wrong_key_is_refused(client: FlaskClient) -> None:
    assert client.get("/clearwater/v1/account", headers={"X-Api-Key": "live_key_1234"}).status_code == 401


def test_outage_answers_503_and_is_counted(client: FlaskClient) -> None:
    client.post("/_admin/faults/clearwater", json={"outage": True})
    assert client.get("/clearwater/v1/account", headers=KEY).status_code == 503
    stats = client.get("/_admin/stats").get_json()["clearwater"]
    assert stats["requests"] == 1
    assert stats["by_status"] == {"503": 1}


def test_above_the_rate_limit_answers_429_with_retry_after() -> None:
    now = [1000.0]
    client = create_app(today=date(2026, 11, 15), control=Control(clock=lambda: now[0])).test_client()
    client.post("/_admin/faults/clearwater", json={"rate_limit_per_second": 2})
    answers = [client.get("/clearwater/v1/account", headers=KEY) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert answers[2].headers["Retry-After"] == "1"
    now[0] += 1  # the next second has a fresh allowance
    assert client.get("/clearwater/v1/account", headers=KEY).status_code == 200
    assert client.get("/_admin/stats").get_json()["clearwater"]["max_requests_in_one_second"] == 3


def test_unknown_fault_is_a_400(client: FlaskClient) -> None:
    assert client.post("/_admin/faults/clearwater", json={"meteor_strike": True}).status_code == 400
