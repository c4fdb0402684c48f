"""Keeps the local moto server's state across restarts: each service's backends, pickled to one file.

moto holds everything in Python objects, one backend per service, account and region. Pickling them
restores exactly what was there (DynamoDB items, SQS queues and their messages with receive counts
and visibility, KMS keys with their key material, so stored ciphertexts still decrypt, Secrets
Manager secrets, SNS topics, EventBridge rules, alarms), in time proportional to the state. moto's
recorder (``/moto-api/recorder``) replays every request ever made instead: its restore grows with
the history, not the state, and a replay is not the original (a replayed ``CreateKey`` makes new key
material; replayed receives move messages again).

When it is written: after a request that changes something (reads do not count), at most every
``MIN_INTERVAL_SECONDS`` and never sooner than ``GAP_FACTOR`` times the last save's duration, so saving
takes a bounded share of the machine; and once more when the server stops (SIGTERM, SIGINT, or its
stdin closing because the process that started it is gone). A save closes a gate to new requests and
waits for those in flight (an SQS long poll leaves the gate while it waits for a message), so a
snapshot never holds half a request; then the process forks, and the gate opens again at once: the
child pickles its copy-on-write image of the backends and writes it while the server goes on serving
(requests wait milliseconds, not the seconds pickling a large table takes). The last save, at exit,
pickles in process. The file is written to a temporary file and moved over the old one
(``os.replace``), so a crash mid-write leaves the previous file whole.

Each service is pickled on its own: a service that fails to load (a file written by another moto
version, say) is reported and starts empty while the others are restored; a file that cannot be read
at all is kept beside it as ``<name>.unreadable`` and the server starts empty. Either way it starts.
"""

from __future__ import annotations

import contextlib
import copyreg
import functools
import gc
import io
import json
import logging
import os
import pickle
import shutil
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import moto
from moto.backends import get_backend
from moto.core.base_backend import BackendDict
from moto.dynamodb.models.dynamo_type import LimitedSizeDict

from localcloud.stopping import sleep_unless_stopped

logger = logging.getLogger("localcloud.moto_state")

STATE_PATH = "/_localcloud/state"
FORMAT = 1
MIN_INTERVAL_SECONDS = 2.0
GAP_FACTOR = 10
# How long a save waits for requests already in flight before trying again later.
DRAIN_TIMEOUT_SECONDS = 5.0
# How long a forked writer may take before it is given up (and saves happen in process from then on).
WRITER_TIMEOUT_SECONDS = 120.0
# How often the saver looks for changes.
CHANGE_POLL_SECONDS = 0.1
# Operations that never change a backend (by the name after the X-Amz-Target's dot).
_READ_PREFIXES = ("Get", "Describe", "List", "Query", "Scan", "BatchGet", "TransactGet")
_READ_OPERATIONS = frozenset(
    {"Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "GenerateRandom", "ReEncrypt"}
)


def _limited_size_dict(items: dict[str, Any]) -> LimitedSizeDict:
    # moto checks an item's size on every attribute set; restoring without it keeps a load linear.
    restored = LimitedSizeDict.__new__(LimitedSizeDict)
    dict.update(restored, items)
    return restored


def _private_key_types() -> list[type]:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    # The concrete (Rust) classes behind cryptography's key interfaces; KMS keys hold one each.
    return [type(rsa.generate_private_key(65537, 2048)), type(ec.generate_private_key(ec.SECP256R1()))]


def _private_key(key: Any) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    from cryptography.hazmat.primitives import serialization

    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return _load_private_key, (der,)


def _load_private_key(der: bytes) -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.load_der_private_key(der, None)


@functools.cache
def _dispatch_table() -> dict[Any, Callable[[Any], Any]]:
    table: dict[Any, Callable[[Any], Any]] = dict(copyreg.dispatch_table)
    # Locks and conditions (an SQS queue's) are made anew: nobody can be waiting on them after a restart.
    table[threading.Condition] = lambda _: (threading.Condition, ())
    table[type(threading.Lock())] = lambda _: (threading.Lock, ())
    table[type(threading.RLock())] = lambda _: (threading.RLock, ())
    table[LimitedSizeDict] = lambda value: (_limited_size_dict, (dict(value),))
    for key_type in _private_key_types():
        table[key_type] = _private_key
    return table


def _dumps(value: Any) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _dispatch_table()
    pickler.dump(value)
    return buffer.getvalue()


def _backends_now() -> dict[str, dict[str, dict[str, Any]]]:
    """Every backend moto has created: {service: {account: {region: backend}}}."""
    services: dict[str, dict[str, dict[str, Any]]] = {}
    for backends in list(vars(BackendDict)["_instances"]):
        accounts = {account: dict(regions) for account, regions in list(backends.items()) if regions}
        if accounts:
            services.setdefault(backends.service_name, {}).update(accounts)
    return services


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Without the cyclic garbage collector: pickling or loading a million objects otherwise spends a
    third of its time in collections that find nothing to free."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _saved_services(path: Path, services: Iterable[str]) -> dict[str, bytes]:
    """The pickles of ``services`` in the file as it is (for those that could not be pickled now)."""
    try:
        document = pickle.loads(path.read_bytes())  # noqa: S301 - our own file
        return {service: document["services"][service] for service in services if service in document["services"]}
    except Exception:
        return {}


class _Writer:
    """A forked child running one save; the parent waits for its answer (JSON through a pipe)."""

    def __init__(self, pid: int, answers: int) -> None:
        self._pid = pid
        self._answers = answers

    @classmethod
    def fork(cls, write: Callable[[], dict[str, Any]]) -> _Writer:
        readable, writable = os.pipe()
        with warnings.catch_warnings():
            # Safe here: no other thread is inside moto (the gate is closed and drained), and the child
            # only pickles, writes a file and exits, touching no lock another thread could hold.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                # Nothing of the server's but the pipe: not its listening socket nor its clients'
                # connections, which would stay open as long as the child lives.
                os.closerange(3, writable)
                os.closerange(writable + 1, os.sysconf("SC_OPEN_MAX"))
                os.write(writable, json.dumps(write()).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(writable)
        return cls(pid, readable)

    def wait(self, timeout: float) -> dict[str, Any] | None:
        """The child's answer; None if it failed or took longer than ``timeout`` (then it is killed)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                pid, status = os.waitpid(self._pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    os.kill(self._pid, signal.SIGKILL)
                    os.waitpid(self._pid, 0)
                    return None
                time.sleep(0.02)
            answer = b""
            while chunk := os.read(self._answers, 65536):
                answer += chunk
        finally:
            os.close(self._answers)
        if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
            return None
        written: dict[str, Any] = json.loads(answer)
        return written


def _install(service: str, accounts: dict[str, dict[str, Any]]) -> None:
    backends = get_backend(service)  # type: ignore[call-overload]
    for account, regions in accounts.items():
        for region, backend in regions.items():
            backends[account][region] = backend


def _error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:300]


def write_atomically(path: Path, data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path``, then moves it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


@dataclass
class RestoreReport:
    file: str
    found: bool = False
    restored: list[str] = field(default_factory=list)
    not_restored: dict[str, str] = field(default_factory=dict)  # service ("file" for all of it) -> why
    kept_as: str | None = None  # where the file that could not be (wholly) restored was copied
    saved_at: str | None = None
    seconds: float = 0.0


def restore(path: Path) -> RestoreReport:
    """Loads the file's services into moto; what it restored, and what not and why."""
    report = RestoreReport(file=str(path))
    started = time.monotonic()
    if not path.exists():
        return report
    report.found = True
    with _collector_paused():
        try:
            document = pickle.loads(path.read_bytes())  # noqa: S301 - our own file, written by save()
            if not (isinstance(document, dict) and isinstance(document.get("services"), dict)):
                raise ValueError("not a saved moto state")
            services: dict[str, bytes] = document["services"]
            report.saved_at = document.get("saved_at")
        except Exception as error:  # anything at all: the server starts regardless
            report.not_restored["file"] = _error(error)
            report.kept_as = str(_set_aside(path, move=True))
            return report
        for service, blob in services.items():
            try:
                _install(service, pickle.loads(blob))  # noqa: S301 - as above
            except Exception as error:
                report.not_restored[service] = _error(error)
            else:
                report.restored.append(service)
    if report.not_restored:
        report.kept_as = str(_set_aside(path, move=False))
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _set_aside(path: Path, *, move: bool) -> Path:
    aside = path.with_name(f"{path.name}.unreadable")
    if move:
        os.replace(path, aside)
    else:
        shutil.copyfile(path, aside)
    return aside


def changes_state(target: str, body: bytes) -> bool:
    """Whether a request may have changed a backend, from its ``X-Amz-Target`` and its answer.

    Requests without a target (query protocol: SNS; moto's own API) always count as changes. A
    ``ReceiveMessage`` counts only when it received something (an empty long poll changes nothing)."""
    _, _, operation = target.partition(".")
    if not operation:
        return True
    if operation == "ReceiveMessage":
        return b'"Messages"' in body and b'"Messages": []' not in body and b'"Messages":[]' not in body
    return not (operation.startswith(_READ_PREFIXES) or operation in _READ_OPERATIONS)


class PersistedState:
    """WSGI middleware around moto: restores the file at start, saves it as described above, and
    answers ``GET /_localcloud/state`` with what it restored and whether changes are still unsaved."""

    def __init__(self, app: Callable[..., Iterable[bytes]], path: Path) -> None:
        self._app = app
        self.path = path
        self._gate = threading.Condition()
        self._in_flight = 0
        self._closed = False
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._save_lock = threading.Lock()
        self._saver: threading.Thread | None = None
        self.report = restore(path)
        self._fork = hasattr(os, "fork")
        self.saves = 0
        self.last_save: dict[str, Any] | None = None
        self.save_problems: dict[str, str] = {}

    def start(self) -> None:
        _dispatch_table()  # built now, not in a forked child
        self._let_long_polls_wait_outside()
        self._saver = threading.Thread(target=self._save_when_changed, name="moto-state-saver", daemon=True)
        self._saver.start()

    def _let_long_polls_wait_outside(self) -> None:
        """An SQS long poll waiting for a message touches nothing, so it leaves the gate while it waits:
        a save never waits for it, nor holds every other request up behind it for the poll's seconds."""
        from moto.sqs.models import Queue

        wait = Queue.wait_for_messages

        @functools.wraps(wait)
        def outside_the_gate(queue: Any, timeout: int) -> None:
            self._leave()
            try:
                wait(queue, timeout)
            finally:
                self._enter()

        Queue.wait_for_messages = outside_the_gate  # type: ignore[method-assign,assignment]

    def _enter(self) -> None:
        with self._gate:
            self._gate.wait_for(lambda: not self._closed)
            self._in_flight += 1

    def _leave(self) -> None:
        with self._gate:
            self._in_flight -= 1
            self._gate.notify_all()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == STATE_PATH:
            body = json.dumps(self.status()).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        self._enter()
        changed = True
        try:
            # Drained inside the gate: moto may build an answer lazily from its state.
            answer = b"".join(self._app(environ, start_response))
            changed = changes_state(environ.get("HTTP_X_AMZ_TARGET", ""), answer)
            return [answer]
        finally:
            with self._gate:
                if changed:
                    self._dirty.set()
                self._in_flight -= 1
                self._gate.notify_all()

    def status(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "restored": self.report.restored,
            "not_restored": self.report.not_restored,
            "kept_as": self.report.kept_as,
            "found": self.report.found,
            "restore_seconds": self.report.seconds,
            # A save in progress is not on disk yet.
            "unsaved_changes": self._dirty.is_set() or self._save_lock.locked(),
            "saves": self.saves,
            "last_save": self.last_save,
            "save_problems": self.save_problems,
        }

    @contextlib.contextmanager
    def _requests_held(self, timeout: float, *, reopen: bool = True) -> Iterator[bool]:
        """Closes the gate and waits for requests in flight; yields whether they all finished."""
        with self._gate:
            self._gate.wait_for(lambda: not self._closed)
            self._closed = True
            drained = self._gate.wait_for(lambda: self._in_flight == 0, timeout)
        try:
            yield drained
        finally:
            if reopen:
                with self._gate:
                    self._closed = False
                    self._gate.notify_all()

    def save(self, *, final: bool = False) -> float | None:
        """Writes every backend to the file; how long the save took, or None if it did not happen.

        Requests wait at the gate only while the process forks: the child pickles its copy-on-write
        image of the backends and writes the file while the parent goes on serving. Where forking is
        not possible (or a forked writer failed once), and for the last save at exit, the pickling
        happens here, with requests held for all of it."""
        with self._save_lock:
            began = time.monotonic()
            writer: _Writer | None = None
            with self._requests_held(DRAIN_TIMEOUT_SECONDS, reopen=not final) as drained:
                if not drained and not final:
                    return None  # a request is taking long; try again at the next turn
                self._dirty.clear()
                if final or not self._fork:
                    written = self._write()
                else:
                    writer = _Writer.fork(self._write)
            pause = time.monotonic() - began
            if writer is not None:
                answer = writer.wait(WRITER_TIMEOUT_SECONDS)
                if answer is None:  # the forked writer failed: from now on, write here
                    logger.warning("a forked save of %s failed; saving in process from now on", self.path)
                    self._fork = False
                    self._dirty.set()
                    return None
                written = answer
            for service, problem in written["problems"].items():
                if self.save_problems.get(service) != problem:
                    logger.warning("could not save %s (its last saved state is kept): %s", service, problem)
            self.save_problems = written["problems"]
            self.saves += 1
            self.last_save = {
                "at": written["at"],
                "pause_seconds": round(pause, 3),
                "seconds": round(time.monotonic() - began, 3),
                "bytes": written["bytes"],
                "forked": writer is not None,
            }
            return time.monotonic() - began

    def _write(self) -> dict[str, Any]:
        """Pickles every backend moto has and writes the file; what it wrote."""
        problems: dict[str, str] = {}
        blobs: dict[str, bytes] = {}
        with _collector_paused():
            for service, accounts in _backends_now().items():
                try:
                    blobs[service] = _dumps(accounts)
                except Exception as error:
                    problems[service] = _error(error)
            if problems:  # keep those services' last saved state, from the file as it is
                blobs = {**_saved_services(self.path, problems), **blobs}
            saved_at = datetime.now(UTC).isoformat(timespec="seconds")
            document = {"format": FORMAT, "moto": moto.__version__, "saved_at": saved_at, "services": blobs}
            data = pickle.dumps(document, pickle.HIGHEST_PROTOCOL)
        write_atomically(self.path, data)
        return {"at": saved_at, "bytes": len(data), "problems": problems}

    def _save_when_changed(self) -> None:
        gap = MIN_INTERVAL_SECONDS
        last = time.monotonic()
        while not self._stopping.is_set():
            if not self._dirty.is_set():
                sleep_unless_stopped(self._stopping, CHANGE_POLL_SECONDS)
                continue
            if sleep_unless_stopped(self._stopping, max(0.0, last + gap - time.monotonic())):
                return
            try:
                seconds = self.save()
            except Exception:
                logger.exception("saving the state to %s failed; trying again later", self.path)
                seconds = None
            if seconds is not None:
                gap = max(MIN_INTERVAL_SECONDS, GAP_FACTOR * seconds)
            last = time.monotonic()

    def stop(self) -> None:
        """Waits for a save in progress (a forked writer must not outlive the server, holding its port
        and replacing the file after it), then the last save, with the gate left closed."""
        self._stopping.set()
        with self._save_lock:
            pass
        if self._dirty.is_set():
            self.save(final=True)
