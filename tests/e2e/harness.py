"""Starts the whole local cloud (`python -m localcloud`) in a subprocess for end-to-end tests, and
talks to it over HTTP as a client would."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from localcloud.template import ROOT

STARTUP_TIMEOUT = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Polls ``condition`` until it returns something truthy; fails the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


class Cloud:
    def __init__(self, state: dict[str, Any], today: date) -> None:
        self.api = httpx.Client(base_url=state["api"], timeout=30)
        self.aws_endpoint = state["aws_endpoint"]
        self.sandbox = state["mock_provider"]
        self.logs = Path(state["logs"])
        self.today = today
        self.issued_tokens: list[str] = []

    def login(self, email: str, password: str) -> dict[str, str]:
        response = self.api.post("/auth/login", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        self.issued_tokens.append(response.json()["access_token"])
        return {"Authorization": f"Bearer {self.issued_tokens[-1]}"}

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

    def topic_arn(self, logical_id: str) -> str:
        topics = self.aws("sns").list_topics()["Topics"]
        return next(str(t["TopicArn"]) for t in topics if t["TopicArn"].endswith(f"billhub-local-{logical_id}"))


@contextlib.contextmanager
def local_cloud(workdir: Path, **environment: str) -> Iterator[Cloud]:
    """The local cloud on free loopback ports, its sandbox's date pinned to today; stopped (and
    checked to stop cleanly) on exit."""
    state_file = workdir / "state.json"
    today = date.today()
    env = {
        **os.environ,
        "LOCALCLOUD_GATEWAY_PORT": str(free_port()),
        "LOCALCLOUD_MOTO_PORT": str(free_port()),
        "MOCK_PROVIDER_PORT": str(free_port()),
        "LOCALCLOUD_STATE_FILE": str(state_file),
        "LOCALCLOUD_LOG_DIR": str(workdir / "logs"),
        "LOCALCLOUD_RETRY_DELAY_SECONDS": "1",
        # The provider and the service must agree on the date bills become overdue.
        "MOCK_PROVIDER_TODAY": today.isoformat(),
        **environment,
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
