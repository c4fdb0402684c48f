"""The whole system as `make run` starts it, driven over HTTP: local gateway -> real handlers ->
moto's server -> SQS poller -> fetcher -> mock provider. Nothing in-process, nothing mocked."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from localcloud.cloud import DEMO_API_KEY, DEMO_EMAIL, DEMO_PASSWORD
from localcloud.template import ROOT
from mock_provider.clearwater import account_number_for
from mock_provider.sandbox import monthly_bills

STARTUP_TIMEOUT = 90
SCHEDULE_SECONDS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Polls ``condition`` until it returns something truthy; fails the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


class Cloud:
    def __init__(self, state: dict[str, Any], today: date) -> None:
        self.api = httpx.Client(base_url=state["api"], timeout=30)
        self.aws_endpoint = state["aws_endpoint"]
        self.logs = Path(state["logs"])
        self.today = today

    def login(self, email: str, password: str) -> dict[str, str]:
        response = self.api.post("/auth/login", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    def new_user(self, email: str) -> dict[str, str]:
        assert self.api.post("/auth/register", json={"email": email, "password": "e2e-password-1"}).status_code == 201
        return self.login(email, "e2e-password-1")

    def aws(self, service: str) -> Any:
        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.aws_endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def queue_url(self, logical_id: str) -> str:
        return str(self.aws("sqs").get_queue_url(QueueName=f"billhub-local-{logical_id}")["QueueUrl"])


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    workdir = tmp_path_factory.mktemp("localcloud")
    state_file = workdir / "state.json"
    today = date.today()
    env = {
        **os.environ,
        "LOCALCLOUD_GATEWAY_PORT": str(free_port()),
        "LOCALCLOUD_MOTO_PORT": str(free_port()),
        "MOCK_PROVIDER_PORT": str(free_port()),
        "LOCALCLOUD_STATE_FILE": str(state_file),
        "LOCALCLOUD_LOG_DIR": str(workdir / "logs"),
        "LOCALCLOUD_SCHEDULE_SECONDS": str(SCHEDULE_SECONDS),
        "LOCALCLOUD_RETRY_DELAY_SECONDS": "1",
        # The provider and the service must agree on the date bills become overdue.
        "MOCK_PROVIDER_TODAY": today.isoformat(),
    }
    env.pop("AWS_ENDPOINT_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "localcloud"],
        cwd=ROOT,
        env=env,
        stdout=(workdir / "stdout.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: state_file.exists() or process.poll() is not None, STARTUP_TIMEOUT, "the local cloud")
        if process.poll() is not None:
            pytest.fail(f"local cloud exited: {(workdir / 'stdout.log').read_text()[-3000:]}")
        yield Cloud(json.loads(state_file.read_text()), today)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode == 0, "the local cloud did not stop cleanly on SIGTERM"
    assert "Traceback" not in (workdir / "logs" / "GetBillsFunction.log").read_text()


def expected_bills(api_key: str, today: date) -> list[tuple[str, str, str]]:
    return [
        (b.bill_id, str(b.amount), b.due_date.isoformat()) for b in monthly_bills(account_number_for(api_key), today)
    ]


def expected_due(api_key: str, today: date) -> str:
    bills = monthly_bills(account_number_for(api_key), today)
    return str(sum((bill.amount for bill in bills if bill.status != "paid"), Decimal(0)))


def test_register_link_refresh_and_see_the_providers_bills(cloud: Cloud) -> None:
    # Given a new user with a linked ClearWater account
    headers = cloud.new_user("e2e-slice@example.com")
    api_key = "cw_sandbox_e2e_slice"
    linked = cloud.api.post(
        "/accounts/link", headers=headers, json={"provider": "clearwater", "credentials": {"api_key": api_key}}
    )
    assert linked.status_code == 201, linked.text
    # When they ask for a refresh
    started = cloud.api.post("/bills/refresh", headers=headers)
    assert started.status_code == 202
    job_id = started.json()["job_id"]
    job = wait_until(
        lambda: (
            (body := cloud.api.get(f"/bills/refresh/{job_id}", headers=headers).json())["status"] != "running" and body
        ),
        60,
        "the refresh job",
    )
    assert (job["status"], job["succeeded"], job["failed"]) == ("succeeded", 1, 0)
    # Then GET /bills holds exactly the provider's bills and the total due
    page = cloud.api.get("/bills", headers=headers).json()
    assert [(b["provider_bill_id"], b["amount"], b["due_on"]) for b in page["bills"]] == expected_bills(
        api_key, cloud.today
    )
    assert page["totals"]["due"] == {"USD": expected_due(api_key, cloud.today)}
    assert page["accounts"][0]["stale"] is False


def test_requests_without_a_valid_token_are_refused_by_the_gateway(cloud: Cloud) -> None:
    assert cloud.api.get("/bills").status_code == 401
    assert cloud.api.get("/bills", headers={"Authorization": "Bearer forged.token.value"}).status_code == 403
    missing = cloud.api.get("/no/such/route")
    assert missing.status_code == 404


def test_the_schedule_refreshes_a_linked_account_on_its_own(cloud: Cloud) -> None:
    headers = cloud.new_user("e2e-schedule@example.com")
    api_key = "cw_sandbox_e2e_schedule"
    assert (
        cloud.api.post(
            "/accounts/link", headers=headers, json={"provider": "clearwater", "credentials": {"api_key": api_key}}
        ).status_code
        == 201
    )
    page = wait_until(
        lambda: (body := cloud.api.get("/bills", headers=headers).json())["bills"] and body,
        SCHEDULE_SECONDS * 10,
        "the scheduled planner to refresh the account",
    )
    assert len(page["bills"]) == len(expected_bills(api_key, cloud.today))


def test_the_demo_user_from_make_run_sees_bills(cloud: Cloud) -> None:
    headers = cloud.login(DEMO_EMAIL, DEMO_PASSWORD)
    page = wait_until(
        lambda: (body := cloud.api.get("/bills", headers=headers).json())["bills"] and body, 60, "the demo bills"
    )
    assert page["totals"]["due"] == {"USD": expected_due(DEMO_API_KEY, cloud.today)}


def test_a_message_that_always_fails_reaches_the_dead_letter_queue(cloud: Cloud) -> None:
    sqs = cloud.aws("sqs")
    sqs.send_message(QueueUrl=cloud.queue_url("FetchQueue"), MessageBody='{"poison": true}')
    dlq = cloud.queue_url("FetchDLQ")
    parked = wait_until(
        lambda: sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages"),
        60,
        "the poison message in the DLQ",
    )
    assert [message["Body"] for message in parked] == ['{"poison": true}']


def test_logs_never_hold_the_provider_key_or_password(cloud: Cloud) -> None:
    text = "".join(path.read_text(errors="replace") for path in cloud.logs.glob("*Function.log"))
    assert "fetched bills" in text  # the logs are there and are being written
    assert "cw_sandbox_e2e_slice" not in text
    assert "e2e-password-1" not in text
