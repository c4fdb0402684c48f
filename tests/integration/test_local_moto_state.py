"""The local moto server keeps its state in a file across restarts (``--state``), over HTTP as the
local cloud uses it: killed once saved, stopped, or left by its parent, it comes back with what it
held; an unreadable file never stops it starting."""

from __future__ import annotations

import json
import pickle
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from localcloud import moto_state
from localcloud.launch import free_port
from localcloud.moto_state import STATE_PATH, PersistedState, _Writer
from localcloud.provision import Stack, provision
from localcloud.template import load_template
from mock_provider.registry import service_parameters
from tests.e2e.harness import start_server, wait_until

REGION = "us-east-1"
CONTEXT = {"purpose": "test"}


class MotoServer:
    def __init__(self, state_file: Path, *, until_stdin_closes: bool = False) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        arguments = ["--state", str(state_file), *(["--until-stdin-closes"] if until_stdin_closes else [])]
        self.process = start_server(
            ["localcloud.moto_server", "127.0.0.1", str(self.port), *arguments], self._answers, "the moto server"
        )

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.endpoint}{STATE_PATH}", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def state(self) -> dict[str, Any]:
        status: dict[str, Any] = httpx.get(f"{self.endpoint}{STATE_PATH}", timeout=10).json()
        return status

    def client(self, service: str) -> Any:
        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def saved(self) -> dict[str, Any]:
        """Waits until nothing is left unsaved; the state then."""
        return dict(
            wait_until(
                lambda: (state := self.state())["saves"] and not state["unsaved_changes"] and state, 30, "a save"
            )
        )

    def end(self, how: Callable[[subprocess.Popen[bytes]], None]) -> int:
        how(self.process)
        return self.process.wait(30)


@pytest.fixture
def servers() -> Iterator[list[MotoServer]]:
    started: list[MotoServer] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(10)


def start(servers: list[MotoServer], state_file: Path, **options: bool) -> MotoServer:
    server = MotoServer(state_file, **options)
    servers.append(server)
    return server


def provisioned(server: MotoServer) -> Stack:
    return provision(
        load_template(),
        server.client,
        REGION,
        "billhub-local",
        service_parameters("http://127.0.0.1:1", public_base_url="http://127.0.0.1:2"),
    )


def what_the_service_keeps(server: MotoServer, stack: Stack) -> dict[str, Any]:
    """A user item, an encrypted credential, a queued message: written the way the service writes them."""
    table, key_id = stack.refs["BillsTable"], stack.refs["CredentialsKey"]
    item = {"PK": {"S": "USER#u1"}, "SK": {"S": "PROFILE"}, "email": {"S": "a@example.com"}}
    server.client("dynamodb").put_item(TableName=table, Item=item)
    ciphertext = server.client("kms").encrypt(KeyId=key_id, Plaintext=b"credentials", EncryptionContext=CONTEXT)
    server.client("sqs").send_message(QueueUrl=stack.refs["FetchQueue"], MessageBody='{"account": "a1"}')
    secret = server.client("secretsmanager").get_secret_value(SecretId=stack.refs["JwtSigningSecret"])
    return {"item": item, "ciphertext": ciphertext["CiphertextBlob"], "secret": secret["SecretString"]}


def assert_kept(server: MotoServer, stack: Stack, kept: dict[str, Any]) -> None:
    table = stack.refs["BillsTable"]
    item = server.client("dynamodb").get_item(TableName=table, Key={"PK": {"S": "USER#u1"}, "SK": {"S": "PROFILE"}})
    assert item.get("Item") == kept["item"]
    plaintext = server.client("kms").decrypt(CiphertextBlob=kept["ciphertext"], EncryptionContext=CONTEXT)
    assert plaintext["Plaintext"] == b"credentials"
    secret = server.client("secretsmanager").get_secret_value(SecretId=stack.refs["JwtSigningSecret"])
    assert secret["SecretString"] == kept["secret"]
    sqs = server.client("sqs")
    received = sqs.receive_message(QueueUrl=stack.refs["FetchQueue"], MaxNumberOfMessages=10)["Messages"]
    assert [message["Body"] for message in received] == ['{"account": "a1"}']
    attributes = sqs.get_queue_attributes(QueueUrl=stack.refs["FetchQueue"], AttributeNames=["RedrivePolicy"])
    assert stack.attributes["FetchDLQ"]["Arn"] in attributes["Attributes"]["RedrivePolicy"]


def test_what_was_saved_survives_a_kill(tmp_path: Path, servers: list[MotoServer], template: dict[str, Any]) -> None:
    # Given the template's resources and what the service keeps in them, saved
    state_file = tmp_path / "moto.pickle"
    first = start(servers, state_file)
    stack = provisioned(first)
    kept = what_the_service_keeps(first, stack)
    first.saved()
    # When the server is killed outright (no chance to save anything more) and started again
    assert first.end(lambda process: process.send_signal(signal.SIGKILL)) == -signal.SIGKILL
    second = start(servers, state_file)
    # Then it says what it restored, and holds all of it: the item, the key that decrypts, the
    # signing secret, the message (and the queue's redrive policy)
    assert {"dynamodb", "kms", "secretsmanager", "sqs", "sns"} <= set(second.state()["restored"])
    assert_kept(second, stack, kept)
    # and provisioning from the template again finds every resource instead of making a second one
    keys = second.client("kms").list_keys()["Keys"]
    again = provisioned(second)
    # (queue URLs name the endpoint, on another port now)
    assert json.loads(json.dumps(again.refs).replace(second.endpoint, first.endpoint)) == stack.refs
    assert {logical_id: attributes.get("Arn") for logical_id, attributes in again.attributes.items()} == {
        logical_id: attributes.get("Arn") for logical_id, attributes in stack.attributes.items()
    }
    assert second.client("kms").list_keys()["Keys"] == keys
    queues = [name for name, resource in template["Resources"].items() if resource["Type"] == "AWS::SQS::Queue"]
    assert len(second.client("sqs").list_queues()["QueueUrls"]) == len(queues)
    assert len(second.client("secretsmanager").list_secrets()["SecretList"]) == 2


@pytest.mark.parametrize(
    ("how", "ending"),
    [
        ("SIGTERM", lambda process: process.send_signal(signal.SIGTERM)),
        ("SIGINT", lambda process: process.send_signal(signal.SIGINT)),
        ("its parent gone (stdin closed)", lambda process: process.stdin.close()),
    ],
)
def test_a_stop_saves_what_is_not_saved_yet(
    tmp_path: Path, servers: list[MotoServer], how: str, ending: Callable[[Any], None]
) -> None:
    state_file = tmp_path / "moto.pickle"
    first = start(servers, state_file, until_stdin_closes=True)
    stack = provisioned(first)
    first.saved()
    kept = what_the_service_keeps(first, stack)
    assert first.state()["unsaved_changes"] is True
    # When it is stopped right after the writes, before its next periodic save
    assert first.end(ending) == 0, how
    # Then they are there after a restart
    assert_kept(start(servers, state_file), stack, kept)


def test_reads_and_empty_polls_are_not_changes(tmp_path: Path, servers: list[MotoServer]) -> None:
    server = start(servers, tmp_path / "moto.pickle")
    stack = provisioned(server)
    what_the_service_keeps(server, stack)
    saves = server.saved()["saves"]
    table = stack.refs["BillsTable"]
    server.client("dynamodb").get_item(TableName=table, Key={"PK": {"S": "USER#u1"}, "SK": {"S": "PROFILE"}})
    server.client("dynamodb").query(
        TableName=table, KeyConditionExpression="PK = :p", ExpressionAttributeValues={":p": {"S": "USER#u1"}}
    )
    server.client("secretsmanager").get_secret_value(SecretId=stack.refs["JwtSigningSecret"])
    server.client("sqs").receive_message(QueueUrl=stack.refs["FetchDLQ"], WaitTimeSeconds=0)
    state = server.state()
    assert (state["unsaved_changes"], state["saves"]) == (False, saves)
    # while a receive that took a message is one (its receive count and visibility changed)
    server.client("sqs").receive_message(QueueUrl=stack.refs["FetchQueue"])
    assert server.state()["unsaved_changes"] is True


def test_saves_are_written_by_a_forked_child_which_reports_back(tmp_path: Path) -> None:
    # A child that writes answers what it wrote; one that fails (or hangs) answers nothing
    assert _Writer.fork(lambda: {"bytes": 3, "problems": {}}).wait(30) == {"bytes": 3, "problems": {}}
    assert _Writer.fork(lambda: {"bytes": 1 // 0}).wait(30) is None
    writing = tmp_path / "writing"

    def hang() -> dict[str, Any]:
        writing.touch()
        time.sleep(60)
        return {}

    # and the child holds none of the server's sockets: once the server closes its listening socket,
    # nothing answers on the port, however long the child still runs
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    writer = _Writer.fork(hang)
    wait_until(writing.exists, 10, "the child to start writing")
    listener.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    began = time.monotonic()
    assert writer.wait(0.5) is None
    assert time.monotonic() - began < 30  # killed, not waited for


def test_a_stop_waits_for_the_save_in_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a save whose forked writer is still writing (held here until the test lets it finish)
    forked, finish = threading.Event(), threading.Event()

    class SlowWriter:
        @classmethod
        def fork(cls, write: Callable[[], dict[str, Any]]) -> SlowWriter:
            forked.set()
            return cls()

        def wait(self, timeout: float) -> dict[str, Any]:
            finish.wait(timeout)
            return {"at": "now", "bytes": 0, "problems": {}}

    class WatchedLock:
        """The save lock, telling when someone blocks on it (no timed wait: see localcloud.stopping)."""

        def __init__(self) -> None:
            self.lock, self.blocked = threading.Lock(), threading.Event()

        def __enter__(self) -> None:
            if not self.lock.acquire(blocking=False):
                self.blocked.set()
                self.lock.acquire()

        def __exit__(self, *_: object) -> None:
            self.lock.release()

        def locked(self) -> bool:
            return self.lock.locked()

    monkeypatch.setattr(moto_state, "_Writer", SlowWriter)
    state = PersistedState(lambda environ, start_response: [b"{}"], tmp_path / "moto.pickle")
    save_lock = WatchedLock()
    monkeypatch.setattr(state, "_save_lock", save_lock)
    state({"PATH_INFO": "/", "HTTP_X_AMZ_TARGET": "DynamoDB_20120810.PutItem"}, lambda *_: None)
    saving = threading.Thread(target=state.save)
    saving.start()
    assert forked.wait(10)
    # Then the change does not count as saved yet
    assert state.status()["unsaved_changes"] is True
    # and a stop waits for the writer (which would otherwise outlive the server, holding its port)
    stopping = threading.Thread(target=state.stop)
    stopping.start()
    assert save_lock.blocked.wait(10), "the stop did not wait for the save in progress"
    assert stopping.is_alive()
    finish.set()
    stopping.join(10)
    saving.join(10)
    assert not stopping.is_alive()
    assert state.status()["unsaved_changes"] is False


def test_a_save_does_not_wait_for_a_long_poll(tmp_path: Path, servers: list[MotoServer]) -> None:
    # Given a consumer long-polling an empty queue (the local poller does, all the time)
    server = start(servers, tmp_path / "moto.pickle")
    stack = provisioned(server)
    saves = server.saved()["saves"]
    sqs = server.client("sqs")
    poll = ThreadPoolExecutor(1).submit(sqs.receive_message, QueueUrl=stack.refs["FetchDLQ"], WaitTimeSeconds=20)
    # When something changes meanwhile
    what_the_service_keeps(server, stack)
    # Then it is saved while the poll still waits (a save held up by it would wait its 20 s), by a
    # forked child while the server goes on serving
    saved = server.saved()
    assert saved["saves"] > saves and saved["last_save"]["forked"] is True
    assert not poll.done()
    # and the poll still gets what arrives afterwards
    sqs.send_message(QueueUrl=stack.refs["FetchDLQ"], MessageBody="late")
    assert [message["Body"] for message in poll.result(timeout=20)["Messages"]] == ["late"]


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", b"\x80\x05\x95 truncated"])
def test_an_unreadable_file_is_set_aside_and_the_server_starts_empty(
    tmp_path: Path, servers: list[MotoServer], content: bytes
) -> None:
    state_file = tmp_path / "moto.pickle"
    state_file.write_bytes(content)
    server = start(servers, state_file)
    state = server.state()
    assert (state["restored"], list(state["not_restored"])) == ([], ["file"])
    assert Path(state["kept_as"]).read_bytes() == content
    # and it serves, and saves its new state where the old one was
    stack = provisioned(server)
    assert server.client("dynamodb").list_tables()["TableNames"] == [stack.refs["BillsTable"]]
    server.saved()
    assert state_file.read_bytes() != content


def test_a_service_that_cannot_be_restored_starts_empty_and_the_others_are_restored(
    tmp_path: Path, servers: list[MotoServer]
) -> None:
    state_file = tmp_path / "moto.pickle"
    first = start(servers, state_file)
    stack = provisioned(first)
    kept = what_the_service_keeps(first, stack)
    first.saved()
    first.end(lambda process: process.kill())
    # Given a saved state whose SQS part cannot be loaded (say, written by another moto version)
    document = pickle.loads(state_file.read_bytes())  # noqa: S301 - the file this test's server wrote
    document["services"]["sqs"] = b"\x80\x05 not loadable"
    state_file.write_bytes(pickle.dumps(document))
    # When the server starts from it
    second = start(servers, state_file)
    # Then it names what it could not restore and why, keeps a copy of the file, and restores the rest
    state = second.state()
    assert list(state["not_restored"]) == ["sqs"]
    assert "dynamodb" in state["restored"]
    assert Path(state["kept_as"]).exists()
    assert second.client("kms").decrypt(CiphertextBlob=kept["ciphertext"], EncryptionContext=CONTEXT)
    assert second.client("sqs").list_queues().get("QueueUrls", []) == []
