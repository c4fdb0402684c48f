"""The local moto server's fault mode, over HTTP: each fault in the shape botocore parses from AWS, answered
before moto executes anything, counted; none at rate 0. And a transaction token reused for another
request is refused, as DynamoDB refuses it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from billhub.runtime import _CONFIG as SERVICE_CONFIG
from localcloud.launch import free_port
from localcloud.moto_faults import FAULTS_PATH, FaultSettings
from localcloud.moto_server import REQUEST_COUNTS_PATH
from tests.e2e.harness import start_server

TABLE = "faults"
KEY = {"PK": {"S": "U1"}, "SK": {"S": "A"}}
# botocore's ``max_attempts`` counts retries; ``total_max_attempts`` the first attempt too.
ONE_ATTEMPT = Config(retries={"mode": "standard", "total_max_attempts": 1})


class FaultyMoto:
    """The local moto server started with its fault mode on, at rate 0 until a test turns a kind on."""

    def __init__(self) -> None:
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        arguments = ["--dynamodb-fault-rate=0", "--dynamodb-fault-seed=7"]
        self.process = start_server(
            ["localcloud.moto_server", "127.0.0.1", str(port), *arguments], self._answers, "the moto server"
        )

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.endpoint}{FAULTS_PATH}", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def client(self, config: Config = ONE_ATTEMPT) -> Any:
        """A DynamoDB client; by default one that never retries, to see each answer as it came."""
        return boto3.client(
            "dynamodb",
            region_name="us-east-1",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=config,
        )

    def faults(self, **settings: Any) -> dict[str, Any]:
        answer = httpx.post(f"{self.endpoint}{FAULTS_PATH}", json=settings, timeout=10)
        assert answer.status_code == 200, answer.text
        report: dict[str, Any] = answer.json()
        return report

    def report(self) -> dict[str, Any]:
        report: dict[str, Any] = httpx.get(f"{self.endpoint}{FAULTS_PATH}", timeout=10).json()
        return report

    def requests(self, operation: str) -> int:
        counts = httpx.get(f"{self.endpoint}{REQUEST_COUNTS_PATH}", timeout=10).json()
        return int(counts.get(f"DynamoDB_20120810.{operation}", 0))


@pytest.fixture(scope="module")
def moto() -> Iterator[FaultyMoto]:
    server = FaultyMoto()
    try:
        server.client().create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "PK", "AttributeType": "S"},
                {"AttributeName": "SK", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        yield server
    finally:
        server.process.terminate()
        server.process.wait(10)


@pytest.fixture
def clean(moto: FaultyMoto) -> Iterator[FaultyMoto]:
    """No fault and no item at the start and end of a test."""
    moto.faults(rate=0, kinds=["throughput", "throttling", "conflict", "internal"])
    client = moto.client()
    for item in client.scan(TableName=TABLE)["Items"]:
        client.delete_item(TableName=TABLE, Key={"PK": item["PK"], "SK": item["SK"]})
    yield moto
    moto.faults(rate=0)


def put(n: int = 1, sk: str = "A") -> dict[str, Any]:
    return {"Put": {"TableName": TABLE, "Item": {"PK": {"S": "U1"}, "SK": {"S": sk}, "n": {"N": str(n)}}}}


def stored(moto: FaultyMoto) -> list[tuple[str, str | None]]:
    items = moto.client().scan(TableName=TABLE, ConsistentRead=True)["Items"]
    return sorted((item["SK"]["S"], item.get("n", {}).get("N")) for item in items)


def writes(client: Any) -> dict[str, Any]:
    """Each single-item write and a two-item transaction, as the service sends them."""
    return {
        "PutItem": lambda: client.put_item(TableName=TABLE, Item={**KEY, "n": {"N": "1"}}),
        "UpdateItem": lambda: client.update_item(
            TableName=TABLE, Key=KEY, UpdateExpression="SET n = :n", ExpressionAttributeValues={":n": {"N": "1"}}
        ),
        "DeleteItem": lambda: client.delete_item(TableName=TABLE, Key=KEY),
        "TransactWriteItems": lambda: client.transact_write_items(TransactItems=[put(1, "A"), put(1, "B")]),
    }


@pytest.mark.parametrize(
    ("kind", "code", "status", "message"),
    [
        ("throughput", "ProvisionedThroughputExceededException", 400, "Throughput exceeds the current capacity"),
        ("throttling", "ThrottlingException", 400, "Rate of requests exceeds the allowed throughput."),
        ("internal", "InternalServerError", 500, "Internal server error"),
    ],
)
def test_a_throttle_or_an_internal_error_answers_every_operation_and_writes_nothing(
    clean: FaultyMoto, kind: str, code: str, status: int, message: str
) -> None:
    # Given the fault mode on for one kind, at rate 1
    moto, client = clean, clean.client()
    client.put_item(TableName=TABLE, Item={"PK": {"S": "U1"}, "SK": {"S": "held"}})
    counted = moto.report()["injected"].get(kind, {})
    moto.faults(rate=1, kinds=[kind])
    reads = {
        "GetItem": lambda: client.get_item(TableName=TABLE, Key=KEY),
        "Query": lambda: client.query(
            TableName=TABLE, KeyConditionExpression="PK = :pk", ExpressionAttributeValues={":pk": {"S": "U1"}}
        ),
        "Scan": lambda: client.scan(TableName=TABLE),
        "BatchGetItem": lambda: client.batch_get_item(RequestItems={TABLE: {"Keys": [KEY]}}),
        "BatchWriteItem": lambda: client.batch_write_item(
            RequestItems={TABLE: [{"PutRequest": {"Item": {**KEY, "n": {"N": "2"}}}}]}
        ),
    }
    # When each operation is asked once (a client that does not retry)
    for operation, call in {**reads, **writes(client)}.items():
        with pytest.raises(ClientError) as raised:
            call()
        # Then each gets AWS's answer, as botocore parses it
        error = raised.value.response
        assert (operation, error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == (
            operation,
            code,
            status,
        )
        assert error["Error"]["Message"].startswith(message)
    # and nothing was written, every fault counted by operation; the control plane is never faulted
    assert client.describe_table(TableName=TABLE)["Table"]["TableName"] == TABLE
    moto.faults(rate=0)
    assert stored(moto) == [("held", None)]
    injected = moto.report()["injected"][kind]
    assert {operation: injected[operation] - counted.get(operation, 0) for operation in injected} == dict.fromkeys(
        sorted([*reads, *writes(client)]), 1
    )


def test_botocore_retries_throttles_and_internal_errors_and_gives_up_after_its_attempts(clean: FaultyMoto) -> None:
    # Given every request throttled or failing inside DynamoDB
    moto = clean
    moto.faults(rate=1, kinds=["throughput", "throttling", "internal"])
    before = moto.requests("PutItem")
    # When a client configured as the service's writes (standard mode, ``max_attempts: 3`` retries)
    with pytest.raises(ClientError) as raised:
        moto.client(SERVICE_CONFIG).put_item(TableName=TABLE, Item={**KEY, "n": {"N": "1"}})
    # Then botocore sent it four times, saw each answer as retryable, and nothing was written
    assert moto.requests("PutItem") - before == 4
    assert raised.value.response["ResponseMetadata"]["RetryAttempts"] == 3
    moto.faults(rate=0)
    assert stored(moto) == []


def test_a_conflict_answers_transactions_and_writes_to_their_items_and_a_cancellation_names_one_item(
    clean: FaultyMoto,
) -> None:
    # Given an item a transaction wrote, and conflicts at rate 1
    moto, client = clean, clean.client(SERVICE_CONFIG)
    client.transact_write_items(TransactItems=[put(1, "A")])
    counted = moto.report()["injected"].get("conflict", {})
    moto.faults(rate=1, kinds=["conflict"])
    before = moto.requests("PutItem")
    # When each kind of write is sent by a client that retries what botocore retries
    answers = {}
    for operation, call in writes(client).items():
        with pytest.raises(ClientError) as raised:
            call()
        answers[operation] = raised.value.response
    # Then a single-item write meets a transaction in flight, which botocore does not retry
    for operation in ("PutItem", "UpdateItem", "DeleteItem"):
        assert answers[operation]["Error"] == {
            "Code": "TransactionConflictException",
            "Message": "Transaction is ongoing for the item",
        }
        assert answers[operation]["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert moto.requests("PutItem") - before == 1
    # and a transaction is cancelled for a conflict at one of its items, None at the others
    cancelled = answers["TransactWriteItems"]
    reasons = cancelled["CancellationReasons"]
    assert cancelled["Error"]["Code"] == "TransactionCanceledException"
    assert sorted(reason["Code"] for reason in reasons) == ["None", "TransactionConflict"]
    assert {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"} in reasons
    assert cancelled["Error"]["Message"] == (
        "Transaction cancelled, please refer cancellation reasons for specific reasons "
        f"[{', '.join(reason['Code'] for reason in reasons)}]"
    )
    # while reads pass, answered by moto, and so does a write to an item no transaction ever wrote
    assert client.get_item(TableName=TABLE, Key=KEY)["Item"]["n"] == {"N": "1"}
    client.put_item(TableName=TABLE, Item={"PK": {"S": "U1"}, "SK": {"S": "counter"}})
    moto.faults(rate=0)
    assert stored(moto) == [("A", "1"), ("counter", None)]
    injected = moto.report()["injected"]["conflict"]
    assert {operation: count - counted.get(operation, 0) for operation, count in injected.items()} == dict.fromkeys(
        sorted(writes(client)), 1
    )


def test_at_rate_zero_nothing_is_injected_and_at_a_rate_a_seeded_share_is(clean: FaultyMoto) -> None:
    moto, client = clean, clean.client()
    total = moto.report()["total"]

    def failures() -> list[int]:
        failed = []
        for n in range(200):
            try:
                client.get_item(TableName=TABLE, Key=KEY)
            except ClientError:
                failed.append(n)
        return failed

    # At rate 0 no request fails and none is counted
    assert failures() == []
    assert moto.report()["total"] == total
    # At rate 0.2 about a fifth do, counted; the same seed fails the same requests again
    moto.faults(rate=0.2, seed=3)
    first = failures()
    moto.faults(rate=0.2, seed=3)
    assert failures() == first
    assert 20 <= len(first) <= 60
    assert moto.report()["total"] == total + 2 * len(first)


def test_fault_settings_refuse_what_they_cannot_mean() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        FaultSettings(rate=1.5)
    with pytest.raises(ValueError, match="kinds"):
        FaultSettings(rate=0.1, kinds=("slowness",))
    assert FaultSettings.parse_kinds("") == ("throughput", "throttling", "conflict", "internal")
    assert FaultSettings.parse_kinds(" conflict, internal ") == ("conflict", "internal")


def test_a_transaction_token_replays_its_request_and_refuses_another(clean: FaultyMoto) -> None:
    # Given a transaction applied under a token (it adds 1 to a counter)
    moto, client = clean, clean.client()
    add: Any = {
        "Update": {
            "TableName": TABLE,
            "Key": KEY,
            "UpdateExpression": "ADD n :one",
            "ExpressionAttributeValues": {":one": {"N": "1"}},
        }
    }
    client.transact_write_items(TransactItems=[add], ClientRequestToken="token-1")
    # When the same request comes again under the token, Then it succeeds without applying again
    client.transact_write_items(TransactItems=[add], ClientRequestToken="token-1")
    assert stored(moto) == [("A", "1")]
    # When another request comes under the same token, Then DynamoDB's refusal, and nothing of it written
    with pytest.raises(ClientError) as raised:
        client.transact_write_items(TransactItems=[add, put(5, "B")], ClientRequestToken="token-1")
    assert raised.value.response["Error"]["Code"] == "IdempotentParameterMismatchException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert stored(moto) == [("A", "1")]
    # while another token applies it
    client.transact_write_items(TransactItems=[add, put(5, "B")], ClientRequestToken="token-2")
    assert stored(moto) == [("A", "2"), ("B", "5")]
