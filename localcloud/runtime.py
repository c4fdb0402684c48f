"""Runs a template function's real handler in worker processes, as Lambda runs execution environments."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from localcloud.template import ROOT, FunctionSpec

LAYER_DIR = ROOT / "layers" / "common"


class InvocationError(Exception):
    """The function raised, timed out or crashed; API Gateway would answer 500, SQS would retry."""


class _Worker:
    def __init__(self, spec: FunctionSpec, environment: dict[str, str], log: IO[bytes]) -> None:
        self.spec = spec
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "localcloud.worker",
                str(spec.code_dir),
                str(LAYER_DIR),
                spec.module,
                spec.handler,
                spec.logical_id,
                str(spec.timeout),
                str(spec.memory_mb),
                "1" if spec.snapstart else "0",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=environment,
            cwd=ROOT,
            # Its own session: a Ctrl-C in the terminal does not kill it mid-invocation; the local cloud
            # stops it in order, and it exits by itself when its stdin closes (its parent gone).
            start_new_session=True,
        )
        if self.process.stdin is None or self.process.stdout is None:
            raise RuntimeError("worker pipes missing")
        self._stdin: IO[bytes] = self.process.stdin
        self._stdout: IO[bytes] = self.process.stdout
        self._read(timeout=60)  # the cold start: module-level set-up

    def _read(self, timeout: float) -> dict[str, Any]:
        ready, _, _ = select.select([self._stdout], [], [], timeout)
        if not ready:
            self.process.kill()
            raise InvocationError(f"{self.spec.logical_id} timed out after {timeout:.0f} s")
        line = self._stdout.readline()
        if not line:
            raise InvocationError(f"{self.spec.logical_id} exited (code {self.process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def invoke(self, event: dict[str, Any]) -> Any:
        try:
            self._stdin.write(json.dumps(event).encode() + b"\n")
            self._stdin.flush()
        except (OSError, ValueError) as error:  # closed by a stop, or the worker is gone
            raise InvocationError(f"{self.spec.logical_id} is not taking invocations: {error}") from error
        answer = self._read(timeout=self.spec.timeout + 1)
        if "error" in answer:
            raise InvocationError(f"{answer['error']['errorType']}: {answer['error']['errorMessage']}")
        return answer["result"]

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        """Asks the worker to exit once it has answered what it is working on."""
        if self.alive:
            with contextlib.suppress(OSError):
                self._stdin.close()

    def wait(self, timeout: float) -> None:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# Workers of a function invoked over HTTP or by its schedule. One behind queues gets one per poller if
# that is more, so that every queue's batches (each fetch lane's) run at once as their mappings allow.
DEFAULT_MAX_WORKERS = 4


class FunctionRuntime:
    """A pool of warm workers for one function, grown on demand up to ``max_workers``."""

    def __init__(
        self, spec: FunctionSpec, environment: dict[str, str], log_dir: Path, max_workers: int = DEFAULT_MAX_WORKERS
    ) -> None:
        self.spec = spec
        self._environment = {**os.environ, **environment}
        self._log = (log_dir / f"{spec.logical_id}.log").open("ab")
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []
        self._slots = threading.BoundedSemaphore(max_workers)
        self._lock = threading.Lock()
        self._stopped = False
        self.invocations = 0

    def warm(self) -> None:
        with self._lock:
            worker = _Worker(self.spec, self._environment, self._log)
            self._all.append(worker)
            self._idle.append(worker)

    def invoke(self, event: dict[str, Any]) -> Any:
        with self._slots:
            with self._lock:
                if self._stopped:
                    raise InvocationError(f"{self.spec.logical_id} is stopping")
                worker = self._idle.pop() if self._idle else None
                self.invocations += 1
            if worker is None:
                worker = _Worker(self.spec, self._environment, self._log)
                with self._lock:
                    if self._stopped:  # stop() ran while this one was starting
                        worker.close()
                        raise InvocationError(f"{self.spec.logical_id} is stopping")
                    self._all.append(worker)
            try:
                return worker.invoke(event)
            finally:
                with self._lock:
                    if worker.alive:
                        self._idle.append(worker)
                    elif worker in self._all:  # not already dropped by stop() at shutdown
                        self._all.remove(worker)

    def stop(self, timeout: float = 3) -> None:
        """Stops every worker: all are asked at once, then given ``timeout`` seconds to finish."""
        with self._lock:
            self._stopped = True
            workers = list(self._all)
            self._all.clear()
            self._idle.clear()
        for worker in workers:
            worker.close()
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.wait(max(0.1, deadline - time.monotonic()))
        self._log.close()
