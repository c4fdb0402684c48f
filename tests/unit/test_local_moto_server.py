"""The local cloud's moto server behaves as DynamoDB does where moto does not: a retried transaction, a
query's cost, the request rules moto does not check."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from billhub.reminders import Email, SesEmailSender
from localcloud.launch import free_port
from localcloud.moto_server import IdempotentParameterMismatch, _TransactionTokens
from tests.e2e.harness import wait_until


def transaction(token: str | None, items: list[dict[str, Any]]) -> Any:
    body: dict[str, Any] = {"TransactItems": items}
    if token:
        body["ClientRequestToken"] = token
    return SimpleNamespace(body=body)


def test_a_transaction_retried_with_its_token_is_applied_once() -> None:
    # Given a transaction that applies (and would fail its own conditions if applied again)
    applied: list[Any] = []

    def apply(handler: Any) -> str:
        applied.append(handler.body["TransactItems"])
        return f"result {len(applied)}"

    once = _TransactionTokens().wrap(apply)
    items = [{"Put": {"TableName": "t", "Item": {"PK": {"S": "a"}}}}]
    # When the client retries it with the same token (botocore reuses the token on retries)
    first, retried = once(transaction("token-1", items)), once(transaction("token-1", items))
    # Then it was applied once, and the retry gets the first answer
    assert (first, retried, len(applied)) == ("result 1", "result 1", 1)
    # while another token, or no token at all, apply again
    once(transaction("token-2", items))
    once(transaction(None, items))
    assert len(applied) == 3
    # and another request under the same token is refused, as DynamoDB refuses it, and not applied
    with pytest.raises(IdempotentParameterMismatch):
        once(transaction("token-1", [{"Put": {"TableName": "t", "Item": {"PK": {"S": "b"}}}}]))
    assert len(applied) == 3


def test_a_failed_transaction_is_not_remembered() -> None:
    attempts = 0

    def fail_once(handler: Any) -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("TransactionCanceledException")
        return "applied"

    once = _TransactionTokens().wrap(fail_once)
    items = [{"Put": {"TableName": "t", "Item": {"PK": {"S": "a"}}}}]
    with pytest.raises(RuntimeError):
        once(transaction("token", items))
    assert once(transaction("token", items)) == "applied"


@pytest.fixture(scope="module")
def local_moto() -> Iterator[tuple[Any, int]]:
    """The local moto server (patched as the local cloud runs it) and a DynamoDB client for it."""
    port = free_port()
    server = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "localcloud.moto_server", "127.0.0.1", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client: Any = boto3.client(
            "dynamodb",
            region_name="us-east-1",
            endpoint_url=f"http://127.0.0.1:{port}",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        wait_until(lambda: _answers(client), 20, "the moto server")
        yield client, port
    finally:
        server.terminate()
        server.wait(10)


def test_a_cancelled_transaction_leaves_every_item_as_it_was(local_moto: tuple[Any, int]) -> None:
    # Given the local moto server (its rollback copies only the partitions a transaction writes)
    client, port = local_moto
    _table(client, "t")
    for partition in ("U1", "U2"):
        client.put_item(TableName="t", Item={"PK": {"S": partition}, "SK": {"S": "A"}, "n": {"N": "1"}})
    update: Any = {
        "Update": {
            "TableName": "t",
            "Key": {"PK": {"S": "U1"}, "SK": {"S": "A"}},
            "UpdateExpression": "SET n = :two",
            "ExpressionAttributeValues": {":two": {"N": "2"}},
        }
    }
    # Binary attributes too, as the service's encrypted credentials are.
    added: Any = {"Put": {"TableName": "t", "Item": {"PK": {"S": "U1"}, "SK": {"S": "B"}, "c": {"B": b"\x00"}}}}
    refused: Any = {
        "Put": {
            "TableName": "t",
            "Item": {"PK": {"S": "U2"}, "SK": {"S": "A"}},
            "ConditionExpression": "attribute_not_exists(PK)",
        }
    }
    # When a transaction updating, adding and then failing a condition is cancelled
    with pytest.raises(ClientError, match="TransactionCanceledException"):
        client.transact_write_items(TransactItems=[update, added, refused])
    # Then nothing of it stays; and the same writes without the failing one all apply
    assert _items(client) == [("U1", "A", "1"), ("U2", "A", "1")]
    client.transact_write_items(TransactItems=[update, added])
    assert _items(client) == [("U1", "A", "2"), ("U1", "B", None), ("U2", "A", "1")]
    # and the server counted each operation it received, for benchmarks to read
    counts = httpx.get(f"http://127.0.0.1:{port}/_localcloud/requests").json()
    assert {name: counts[f"DynamoDB_20120810.{name}"] for name in ("PutItem", "TransactWriteItems", "Scan")} == {
        "PutItem": 2,
        "TransactWriteItems": 2,
        "Scan": 2,
    }


def test_a_query_reads_its_partition_as_moto_would_have(local_moto: tuple[Any, int]) -> None:
    # Given a table shaped like the service's (a local and a global index), items in three partitions
    client, _ = local_moto
    client.create_table(
        TableName="q",
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": name, "AttributeType": "S"} for name in ("PK", "SK", "LSI1SK", "GSI1PK", "GSI1SK")
        ],
        LocalSecondaryIndexes=[
            {
                "IndexName": "LSI1",
                "KeySchema": [
                    {"AttributeName": "PK", "KeyType": "HASH"},
                    {"AttributeName": "LSI1SK", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "GSI1",
                "KeySchema": [
                    {"AttributeName": "GSI1PK", "KeyType": "HASH"},
                    {"AttributeName": "GSI1SK", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for user in ("U1", "U2", "U3"):
        for n in range(5):
            item = {"PK": {"S": user}, "SK": {"S": f"BILL#{n}"}, "LSI1SK": {"S": f"2026-0{9 - n}"}}
            client.put_item(TableName="q", Item=item)
        due = {"GSI1PK": {"S": "DUE"}, "GSI1SK": {"S": user}}
        client.put_item(TableName="q", Item={"PK": {"S": user}, "SK": {"S": "ACCOUNT#1"}, **due})

    def keys(**query: Any) -> list[str]:
        found: list[str] = []
        start: dict[str, Any] = {}
        while True:
            page = client.query(TableName="q", Limit=2, **start, **query)
            found += [f"{item['PK']['S']}:{item['SK']['S']}" for item in page["Items"]]
            if "LastEvaluatedKey" not in page:
                return found
            start = {"ExclusiveStartKey": page["LastEvaluatedKey"]}

    # When each kind of query is paged two items at a time, Then each reads its own partition, in order
    assert keys(
        KeyConditionExpression="PK = :pk AND begins_with(SK, :bill)",
        ExpressionAttributeValues={":pk": {"S": "U2"}, ":bill": {"S": "BILL#"}},
        ScanIndexForward=False,
    ) == [f"U2:BILL#{n}" for n in (4, 3, 2, 1, 0)]
    assert keys(
        IndexName="LSI1",
        KeyConditionExpression="PK = :pk AND LSI1SK >= :since",
        ExpressionAttributeValues={":pk": {"S": "U3"}, ":since": {"S": "2026-07"}},
        ScanIndexForward=False,
    ) == ["U3:BILL#0", "U3:BILL#1", "U3:BILL#2"]
    assert keys(
        IndexName="GSI1", KeyConditionExpression="GSI1PK = :due", ExpressionAttributeValues={":due": {"S": "DUE"}}
    ) == ["U1:ACCOUNT#1", "U2:ACCOUNT#1", "U3:ACCOUNT#1"]
    # and a partition that does not exist is empty, and stays absent
    assert keys(KeyConditionExpression="PK = :pk", ExpressionAttributeValues={":pk": {"S": "U9"}}) == []
    assert client.scan(TableName="q", Select="COUNT")["Count"] == 18


def _answers(client: Any) -> bool:
    try:
        client.list_tables()
    except (EndpointConnectionError, ConnectionError):
        return False
    return True


def _items(client: Any) -> list[tuple[str, str, str | None]]:
    items = client.scan(TableName="t")["Items"]
    return sorted((item["PK"]["S"], item["SK"]["S"], item.get("n", {}).get("N")) for item in items)


def _dynamodb(port: int, operation: str, request: dict[str, Any]) -> httpx.Response:
    """A raw DynamoDB call, past the tests' own client-side check of the same rules."""
    return httpx.post(
        f"http://127.0.0.1:{port}/",
        content=json.dumps(request),
        headers={
            "X-Amz-Target": f"DynamoDB_20120810.{operation}",
            "Content-Type": "application/x-amz-json-1.0",
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20261201/us-east-1/dynamodb/aws4_request, "
            "SignedHeaders=host, Signature=0",
        },
    )


def _put(partition: str, sort: str, **attributes: Any) -> dict[str, Any]:
    return {"Put": {"TableName": "rules", "Item": {"PK": {"S": partition}, "SK": {"S": sort}, **attributes}}}


@pytest.mark.parametrize(
    ("operation", "request_body", "message"),
    [
        pytest.param(
            "PutItem",
            {
                "TableName": "rules",
                "Item": {"PK": {"S": "u"}, "SK": {"S": "1"}},
                "ConditionExpression": "attribute_not_exists(PK)",
                "ExpressionAttributeValues": {":unused": {"S": "x"}},
            },
            "ExpressionAttributeValues unused in expressions: keys: {:unused}",
            id="unused value",
        ),
        pytest.param(
            "TransactWriteItems",
            {
                "TransactItems": [
                    _put("u", "1"),
                    {
                        "Update": {
                            "TableName": "rules",
                            "Key": {"PK": {"S": "u"}, "SK": {"S": "2"}},
                            "UpdateExpression": "SET n = :n",
                            "ExpressionAttributeValues": {":n": {"N": "1"}},
                            "ExpressionAttributeNames": {"#status": "status"},
                        }
                    },
                ]
            },
            "ExpressionAttributeNames unused in expressions: keys: {#status}",
            id="unused name in a transaction item",
        ),
        pytest.param(
            "BatchWriteItem",
            {"RequestItems": {"rules": [{"PutRequest": _put("u", str(i))["Put"]} for i in range(26)]}},
            "Member must have length less than or equal to 25",
            id="26 writes in a batch",
        ),
        pytest.param(
            "TransactWriteItems",
            {"TransactItems": [_put("u", str(i), blob={"S": "x" * 390_000}) for i in range(11)]},
            "Transaction size has exceeded the maximum allowed size of 4 MB",
            id="4.3 MB transaction",
        ),
        pytest.param(
            "PutItem",
            {"TableName": "rules", "Item": {"PK": {"S": "u"}, "SK": {"S": "1"}, "n": {"N": "1" * 39 + "000"}}},
            "more than 38 significant digits",
            id="39-digit number",
        ),
    ],
)
def test_what_dynamodb_refuses_the_local_server_refuses_too(
    local_moto: tuple[Any, int], operation: str, request_body: dict[str, Any], message: str
) -> None:
    # Given a table on the local moto server
    client, port = local_moto
    _table(client, "rules")
    # When a request breaks a rule moto itself does not check
    answer = _dynamodb(port, operation, request_body)
    # Then it gets DynamoDB's ValidationException, and nothing was written
    assert answer.status_code == 400, answer.text
    assert answer.json()["__type"].endswith("#ValidationException")
    assert message in answer.json()["message"]
    assert client.scan(TableName="rules")["Items"] == []


def test_requests_at_the_limits_still_pass(local_moto: tuple[Any, int]) -> None:
    client, port = local_moto
    _table(client, "rules")
    at_limits: list[tuple[str, dict[str, Any]]] = [
        ("BatchWriteItem", {"RequestItems": {"rules": [{"PutRequest": _put("u", str(i))["Put"]} for i in range(25)]}}),
        ("TransactWriteItems", {"TransactItems": [_put("v", str(i), blob={"S": "x" * 390_000}) for i in range(10)]}),
        (
            "PutItem",
            {"TableName": "rules", "Item": {"PK": {"S": "w"}, "SK": {"S": "1"}, "n": {"N": "-0.00" + "9" * 38 + "00"}}},
        ),
        (
            "UpdateItem",
            {
                "TableName": "rules",
                "Key": {"PK": {"S": "w"}, "SK": {"S": "1"}},
                "UpdateExpression": "SET #status = :paid",
                "ConditionExpression": "attribute_exists(PK)",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": {":paid": {"S": "paid"}},
            },
        ),
    ]
    for operation, request_body in at_limits:
        answer = _dynamodb(port, operation, request_body)
        assert answer.status_code == 200, (operation, answer.text)
    pages = client.get_paginator("scan").paginate(TableName="rules", Select="COUNT")
    assert sum(page["Count"] for page in pages) == 36


def _table(client: Any, name: str) -> None:
    if name in client.list_tables()["TableNames"]:
        client.delete_table(TableName=name)
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "PK", "AttributeType": "S"},
            {"AttributeName": "SK", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )


def test_one_item_requests_are_counted_by_the_kind_of_item(local_moto: tuple[Any, int]) -> None:
    # Given the local moto server and a table holding a user's account and a rate counter
    client, port = local_moto
    _table(client, "kinds")
    account = {"PK": {"S": "USER#u1"}, "SK": {"S": "ACCOUNT#a1"}}
    rate = {"PK": {"S": "RATE#northgas"}, "SK": {"S": "SECOND#1"}}
    before = httpx.get(f"http://127.0.0.1:{port}/_localcloud/requests/by-item").json().get("UpdateItem", {})
    # When the account is written once and the counter twice (and each is read back)
    client.put_item(TableName="kinds", Item={**account, "n": {"N": "1"}})
    for _ in range(2):
        client.update_item(
            TableName="kinds", Key=rate, UpdateExpression="ADD n :one", ExpressionAttributeValues={":one": {"N": "1"}}
        )
    assert client.get_item(TableName="kinds", Key=account)["Item"]["n"] == {"N": "1"}
    assert client.get_item(TableName="kinds", Key=rate)["Item"]["n"] == {"N": "2"}
    # Then the server names each request by its item's kind, the body still reaching moto whole
    by_item = httpx.get(f"http://127.0.0.1:{port}/_localcloud/requests/by-item").json()
    assert by_item["UpdateItem"]["RATE"] - before.get("RATE", 0) == 2
    assert by_item["PutItem"]["ACCOUNT"] >= 1
    assert by_item["GetItem"]["ACCOUNT"] >= 1 and by_item["GetItem"]["RATE"] >= 1


def test_the_mail_its_ses_took_is_shown_newest_first(local_moto: tuple[Any, int]) -> None:
    # Given the local moto server and a verified sender, as the local cloud provisions the reminders' one
    _, port = local_moto
    ses: Any = boto3.client(
        "ses",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    ses.verify_email_identity(EmailAddress="reminders@billhub.example")
    sender = SesEmailSender(ses, "reminders@billhub.example")
    # When two emails are sent, the way the reminders send them (text and HTML)
    sender.send(Email(to="ada@example.com", subject="1 bill due soon", text="first\n", html="<p>first</p>"))
    sender.send(Email(to="bob@example.com", subject="2 bills overdue", text="second\n", html="<p>second</p>"))
    # Then GET /_localcloud/emails lists both, newest first, each with its text, HTML and time
    shown = httpx.get(f"http://127.0.0.1:{port}/_localcloud/emails").json()
    assert [(mail["to"], mail["subject"], mail["text"], mail["html"]) for mail in shown[:2]] == [
        ("bob@example.com", "2 bills overdue", "second\n", "<p>second</p>\n"),
        ("ada@example.com", "1 bill due soon", "first\n", "<p>first</p>\n"),
    ]
    assert all(mail["sent_at"] for mail in shown[:2])
