"""The sandbox's admin side: start-up faults, reset, bill revisions and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from datetime import date
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from mock_provider.__main__ import startup_faults
from mock_provider.app import create_app
from mock_provider.clearwater import account_number_for
from mock_provider.control import Control

TODAY = date(2026, 11, 15)
KEY = "cw_sandbox_admin"
ACCOUNT = account_number_for(KEY)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def client() -> FlaskClient:
    return create_app(today=TODAY).test_client()


def faults_of(client: FlaskClient, provider: str) -> dict[str, object]:
    faults: dict[str, object] = client.get("/_admin/stats").get_json()[provider]["faults"]
    return faults


def revise(client: FlaskClient, provider: str = "clearwater", **body: object) -> tuple[int, dict[str, object]]:
    answer = client.post(
        f"/_admin/revise/{provider}", json={"account": ACCOUNT, "bill_id": f"{ACCOUNT}-202610", **body}
    )
    return answer.status_code, answer.get_json()


def test_start_up_faults_apply_at_once_and_survive_reset() -> None:
    control = Control(startup_faults={"northgas": {"latency_ms": 5, "outage": True}})
    client = create_app(today=TODAY, control=control).test_client()
    assert faults_of(client, "northgas")["outage"] is True
    client.post("/_admin/faults/northgas", json={"outage": False, "error_rate": 0.5})
    client.post("/_admin/faults/clearwater", json={"storm_429": True})
    client.get("/clearwater/v1/account", headers={"X-Api-Key": KEY})
    assert client.post("/_admin/reset").get_json() == {"status": "reset"}
    stats = client.get("/_admin/stats").get_json()
    assert (stats["northgas"]["faults"]["outage"], stats["northgas"]["faults"]["latency_ms"]) == (True, 5)
    assert stats["northgas"]["faults"]["error_rate"] == 0 and stats["clearwater"]["faults"]["storm_429"] is False
    assert (stats["clearwater"]["requests"], stats["clearwater"]["by_status"]) == (0, {})


@pytest.mark.parametrize(
    "faults", [{"gasworks": {"outage": True}}, {"clearwater": {"outage": 1}}, {"clearwater": {"flood": True}}]
)
def test_bad_start_up_faults_are_refused(faults: dict[str, dict[str, object]]) -> None:
    with pytest.raises(ValueError, match=r"unknown|must be"):
        Control(startup_faults=faults)


def test_reset_clears_tokens_and_revisions(client: FlaskClient) -> None:
    token = client.post(
        "/northgas/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("billhub-sandbox", "northgas-sandbox-secret"),
    ).get_json()["access_token"]
    assert revise(client, amount="1.00")[1]["revision"] == 2
    client.post("/_admin/reset")
    answer = client.get(
        "/northgas/api/accounts/NG123456", headers={"Authorization": f"Bearer {token}", "X-Customer-Postcode": "NG11AA"}
    )
    assert answer.status_code == 401
    assert revise(client, amount="1.00")[1]["revision"] == 2  # counting starts again from the original


@pytest.mark.parametrize(("provider", "action"), [("clearwater", "expire"), ("fibrelink", "revoke"), ("x", "expire")])
def test_token_admin_is_404_for_providers_without_oauth(client: FlaskClient, provider: str, action: str) -> None:
    assert client.post(f"/_admin/tokens/{provider}/{action}").status_code == 404


def test_revise_refuses_unknown_providers_accounts_and_bills(client: FlaskClient) -> None:
    assert revise(client, "gasworks", amount="1.00")[0] == 404
    assert revise(client, "northgas", amount="1.00")[0] == 404  # a ClearWater account number
    assert revise(client, amount="1.00", bill_id=f"{ACCOUNT}-203001")[0] == 404
    assert revise(client, amount="1.00", bill_id="CW-00000000-202610")[0] == 404  # another account's bill


@pytest.mark.parametrize("amount", ["12.345", "-5.00", "ten", 12.5, None])
def test_revise_refuses_bad_amounts(client: FlaskClient, amount: object) -> None:
    status, body = revise(client, amount=amount)
    assert status == 400 and body["error"]


def test_revise_refuses_a_body_that_is_not_a_json_object(client: FlaskClient) -> None:
    assert client.post("/_admin/revise/clearwater", data="[1, 2]").status_code == 400
    assert client.post("/_admin/revise/clearwater", data="not json").status_code == 400


def test_start_up_faults_come_from_the_environment_with_the_flag_on_top() -> None:
    environ = {
        "MOCK_PROVIDER_FAULTS": '{"clearwater": {"latency_ms": 50, "outage": true}, "fibrelink": {"outage": true}}'
    }
    assert startup_faults('{"clearwater": {"outage": false}}', environ) == {
        "clearwater": {"latency_ms": 50, "outage": False},
        "fibrelink": {"outage": True},
    }
    assert startup_faults(None, {}) == {}
    for bad in ("{not json", '["clearwater"]', '{"clearwater": 5}'):
        with pytest.raises(ValueError, match=r"."):
            startup_faults(bad, {})


def test_the_command_line_serves_on_loopback_with_start_up_faults() -> None:
    environ = {**os.environ, "MOCK_PROVIDER_FAULTS": '{"fibrelink": {"storm_429": true}}'}
    server = subprocess.Popen(
        [sys.executable, "-m", "mock_provider", "--port", "0", "--faults", '{"clearwater": {"latency_ms": 7}}'],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[-1]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{url}/_admin/stats", timeout=5) as answer:  # noqa: S310 - loopback test server
            stats = json.load(answer)
        assert stats["fibrelink"]["faults"]["storm_429"] is True
        assert stats["clearwater"]["faults"]["latency_ms"] == 7
    finally:
        server.terminate()
        server.wait(timeout=5)
