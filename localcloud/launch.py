"""Starts the whole local cloud (``python -m localcloud``) as a subprocess on free loopback ports, for
end-to-end tests and benchmarks, and stops it (checking it stops cleanly) afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import boto3

from localcloud.template import ROOT

STARTUP_TIMEOUT = 90


# Ports are picked below the kernel's ephemeral range: a port the kernel handed out (bind to 0) can be
# taken as the source port of any outgoing connection once its server stops, and a restart on it then
# fails with "address in use" (seen in CI when the local cloud restarted on its ports).
LISTEN_PORTS = range(20000, 32768)
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port() -> int:
    """A loopback port nothing listens on, outside the ephemeral range where the kernel allows it."""
    candidates = _listen_ports()
    for _ in range(200):
        port = random.choice(candidates)
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", port))
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listen_ports() -> Sequence[int]:
    try:
        low = int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return LISTEN_PORTS
    return range(LISTEN_PORTS.start, low) if low > LISTEN_PORTS.start + 1000 else LISTEN_PORTS


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


@dataclass(frozen=True)
class Stopped:
    """How a local cloud process ended: its exit code, everything it printed, how long the stop took."""

    returncode: int
    output: str
    seconds: float


class CloudProcess:
    """``python -m localcloud`` as a subprocess on free loopback ports (unless ``environment`` names
    them), its state kept in ``workdir/data`` unless LOCALCLOUD_DATA_DIR says otherwise, its output in
    ``workdir/stdout.log``."""

    def __init__(self, workdir: Path, environment: Mapping[str, str] | None = None, *, fresh: bool = False) -> None:
        self.workdir = workdir
        self.state_file = workdir / "state.json"
        self.output_file = workdir / "stdout.log"
        self.today = datetime.now(UTC).date()  # the service's date, in UTC
        self.environment = {
            **os.environ,
            "LOCALCLOUD_GATEWAY_PORT": str(free_port()),
            "LOCALCLOUD_MOTO_PORT": str(free_port()),
            "MOCK_PROVIDER_PORT": str(free_port()),
            "LOCALCLOUD_STATE_FILE": str(self.state_file),
            "LOCALCLOUD_LOG_DIR": str(workdir / "logs"),
            "LOCALCLOUD_DATA_DIR": str(workdir / "data"),
            "LOCALCLOUD_RETRY_DELAY_SECONDS": "1",
            # The provider and the service must agree on the date bills become overdue.
            "MOCK_PROVIDER_TODAY": self.today.isoformat(),
            **(environment or {}),
        }
        self.environment.pop("AWS_ENDPOINT_URL", None)
        self._arguments = ["--fresh"] if fresh else []
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def ports(self) -> dict[str, str]:
        """The port settings, to start another cloud where this one was."""
        names = ("LOCALCLOUD_GATEWAY_PORT", "LOCALCLOUD_MOTO_PORT", "MOCK_PROVIDER_PORT")
        return {name: self.environment[name] for name in names}

    def ports_free(self) -> bool:
        """Whether nothing listens on any of its ports any more (its servers gone, however it stopped)."""
        for port in self.ports.values():
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", int(port))) == 0:
                    return False
        return True

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("not started")
        return self._process.pid

    def start(self) -> Launched:
        self.state_file.unlink(missing_ok=True)
        process = self._process = subprocess.Popen(
            [sys.executable, "-m", "localcloud", *self._arguments],
            cwd=ROOT,
            env=self.environment,
            stdout=self.output_file.open("wb"),
            stderr=subprocess.STDOUT,
            # Its own process group, as a shell gives a command: interrupt() signals the group, as Ctrl-C does.
            start_new_session=True,
        )
        wait_for(lambda: self.state_file.exists() or process.poll() is not None, STARTUP_TIMEOUT, "the local cloud")
        if process.poll() is not None:
            raise RuntimeError(f"local cloud exited: {self.output()[-3000:]}")
        return Launched(json.loads(self.state_file.read_text()), self.today, self.workdir)

    def output(self) -> str:
        return self.output_file.read_text(errors="replace") if self.output_file.exists() else ""

    def interrupt(self, timeout: float = 60) -> Stopped:
        """Ctrl-C in the terminal: SIGINT to the whole process group; waits for the process to exit."""
        return self.stop(signal.SIGINT, timeout, group=True)

    def stop(
        self, stop_signal: signal.Signals = signal.SIGTERM, timeout: float = 60, *, group: bool = False
    ) -> Stopped:
        """Sends ``stop_signal`` to the process (to its process group with ``group``) and waits for it
        to exit."""
        if self._process is None:
            raise RuntimeError("not started")
        began = time.monotonic()
        if self._process.poll() is None:
            if group:
                os.killpg(self._process.pid, stop_signal)
            else:
                self._process.send_signal(stop_signal)
        try:
            returncode = self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            returncode = self._process.wait()
        return Stopped(returncode, self.output(), time.monotonic() - began)


@contextlib.contextmanager
def launched(workdir: Path, **environment: str) -> Iterator[Launched]:
    """The local cloud with its sandbox's date pinned to today; ``environment`` overrides its settings."""
    cloud = CloudProcess(workdir, environment)
    try:
        yield cloud.start()
    finally:
        stopped = cloud.stop(timeout=30)
    if stopped.returncode != 0:
        raise RuntimeError("the local cloud did not stop cleanly on SIGTERM")
