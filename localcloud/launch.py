"""Starts the whole local cloud (``python -m localcloud``) as a subprocess on free loopback ports, for
end-to-end tests and benchmarks, and stops it (checking it stops cleanly) afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import boto3

from localcloud.template import ROOT

STARTUP_TIMEOUT = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for[T](condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Polls ``condition`` until it returns something truthy; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass(frozen=True)
class Launched:
    """Where the running local cloud answers (the state ``python -m localcloud`` writes)."""

    state: dict[str, Any]
    today: date
    workdir: Path

    def aws(self, service: str) -> Any:
        """A boto3 client for the local cloud's AWS endpoint (moto takes any credentials)."""
        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.state["aws_endpoint"],
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto's placeholder, not a secret
        )


@contextlib.contextmanager
def launched(workdir: Path, **environment: str) -> Iterator[Launched]:
    """The local cloud with its sandbox's date pinned to today; ``environment`` overrides its settings."""
    state_file = workdir / "state.json"
    today = datetime.now(UTC).date()  # the service's date, in UTC
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
        wait_for(lambda: state_file.exists() or process.poll() is not None, STARTUP_TIMEOUT, "the local cloud")
        if process.poll() is not None:
            raise RuntimeError(f"local cloud exited: {(workdir / 'stdout.log').read_text()[-3000:]}")
        yield Launched(json.loads(state_file.read_text()), today, workdir)
    finally:
        process.terminate()
        process.wait(timeout=30)
    if process.returncode != 0:
        raise RuntimeError("the local cloud did not stop cleanly on SIGTERM")
