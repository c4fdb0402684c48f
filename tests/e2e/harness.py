"""Starts the whole local cloud (`python -m localcloud`) in a subprocess for end-to-end tests, and
talks to it over HTTP as a client would."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from localcloud.launch import Launched, launched, wait_for
from localcloud.template import ROOT


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Polls ``condition`` until it returns something truthy; fails the test after ``timeout``."""
    try:
        return wait_for(condition, timeout, what, interval)
    except TimeoutError as error:
        pytest.fail(str(error))


def start_server(module_and_arguments: list[str], answers: Callable[[], bool], what: str) -> subprocess.Popen[bytes]:
    """``python -m <module> <arguments>`` of this project's, once ``answers()`` says it serves; a server
    that never answers is killed, never left running behind the failed start."""
    process = subprocess.Popen(  # noqa: S603 - this interpreter, our own modules
        [sys.executable, "-m", *module_and_arguments],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(answers, 30, what)
    except BaseException:  # pytest.fail is one
        process.kill()
        process.wait(10)
        raise
    return process


class Cloud:
    def __init__(self, launched: Launched) -> None:
        state, self.launched = launched.state, launched
        self.api = httpx.Client(base_url=state["api"], timeout=30)
        self.aws_endpoint = state["aws_endpoint"]
        self.sandbox = state["mock_provider"]
        self.logs = Path(state["logs"])
        self.today = launched.today
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
        return self.launched.aws(service)

    def queue_url(self, logical_id: str) -> str:
        return str(self.aws("sqs").get_queue_url(QueueName=f"billhub-local-{logical_id}")["QueueUrl"])

    def topic_arn(self, logical_id: str) -> str:
        topics = self.aws("sns").list_topics()["Topics"]
        return next(str(t["TopicArn"]) for t in topics if t["TopicArn"].endswith(f"billhub-local-{logical_id}"))


@contextlib.contextmanager
def local_cloud(workdir: Path, **environment: str) -> Iterator[Cloud]:
    """The local cloud on free loopback ports, its sandbox's date pinned to today; stopped (and
    checked to stop cleanly) on exit."""
    with launched(workdir, **environment) as cloud:
        yield Cloud(cloud)
