"""DynamoDB's request rules that moto does not check: checked before moto sees a request, in the local
cloud's moto server (``DynamoDBRules``) and on every DynamoDB call a test makes (``check``).

moto 5.2 accepts requests that DynamoDB refuses with a ``ValidationException``; code that only ever
met moto would first fail in AWS. Refused here, with DynamoDB's wording:

- an ``ExpressionAttributeValues`` or ``ExpressionAttributeNames`` entry that no expression of the
  request (or of the transaction item) uses;
- a ``BatchWriteItem`` of more than 25 requests;
- a ``TransactWriteItems`` whose items add up to more than 4 MB;
- a number of more than 38 significant digits.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

EXPRESSION_FIELDS = (
    "KeyConditionExpression",
    "FilterExpression",
    "ProjectionExpression",
    "UpdateExpression",
    "ConditionExpression",
)
BATCH_WRITE_MAX_REQUESTS = 25
TRANSACTION_MAX_BYTES = 4 * 1024 * 1024
NUMBER_MAX_DIGITS = 38
_PLACEHOLDER = re.compile(r"[:#][A-Za-z0-9_]+")


class RequestRefused(Exception):
    """What DynamoDB would answer: a ``ValidationException`` with this message."""


class DynamoDBRules:
    """WSGI middleware: a DynamoDB request that breaks one of the rules gets DynamoDB's 400."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target.startswith("DynamoDB_"):
            return self._app(environ, start_response)
        try:
            check(target.partition(".")[2], request_body(environ))
        except RequestRefused as refused:
            answer = json.dumps(
                {"__type": "com.amazon.coral.validate#ValidationException", "message": str(refused)}
            ).encode()
            start_response(
                "400 Bad Request",
                [("Content-Type", "application/x-amz-json-1.0"), ("Content-Length", str(len(answer)))],
            )
            return [answer]
        return self._app(environ, start_response)


def request_body(environ: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB request's JSON body (read here, and put back for whoever reads it next); ``{}`` for one
    that is not a JSON object, which moto then refuses itself."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(raw)
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def check(operation: str, request: dict[str, Any]) -> None:
    """Raises ``RequestRefused`` where DynamoDB would refuse ``request`` to ``operation``."""
    if operation == "TransactWriteItems":
        items = request.get("TransactItems", [])
        for item in items:
            for action in item.values():
                _every_placeholder_used(action)
        size = sum(_item_size(action.get("Item", {})) for item in items for action in item.values())
        if size > TRANSACTION_MAX_BYTES:
            raise RequestRefused("Transaction size has exceeded the maximum allowed size of 4 MB")
    elif operation == "TransactGetItems":
        for item in request.get("TransactItems", []):
            for action in item.values():
                _every_placeholder_used(action)
    elif operation == "BatchWriteItem":
        count = sum(len(requests) for requests in request.get("RequestItems", {}).values())
        if count > BATCH_WRITE_MAX_REQUESTS:
            raise RequestRefused(
                "1 validation error detected: Value at 'requestItems' failed to satisfy constraint: "
                f"Map value must satisfy constraint: [Member must have length less than or equal to "
                f"{BATCH_WRITE_MAX_REQUESTS}, Member must have length greater than or equal to 1]"
            )
    elif operation == "BatchGetItem":
        for keys_and_attributes in request.get("RequestItems", {}).values():
            _every_placeholder_used(keys_and_attributes)
    else:
        _every_placeholder_used(request)
    for number in _numbers(request):
        _within_precision(number)


def _every_placeholder_used(request: dict[str, Any]) -> None:
    used = {token for field in EXPRESSION_FIELDS for token in _PLACEHOLDER.findall(request.get(field) or "")}
    unused_values = sorted(set(request.get("ExpressionAttributeValues") or {}) - used)
    if unused_values:
        raise RequestRefused(
            f"Value provided in ExpressionAttributeValues unused in expressions: keys: {{{', '.join(unused_values)}}}"
        )
    unused_names = sorted(set(request.get("ExpressionAttributeNames") or {}) - used)
    if unused_names:
        raise RequestRefused(
            f"Value provided in ExpressionAttributeNames unused in expressions: keys: {{{', '.join(unused_names)}}}"
        )


def _numbers(value: Any) -> Iterator[str]:
    """Every ``N`` and ``NS`` member anywhere in a request."""
    if isinstance(value, dict):
        for key, member in value.items():
            if key == "N" and isinstance(member, str):
                yield member
            elif key == "NS" and isinstance(member, list):
                yield from (number for number in member if isinstance(number, str))
            else:
                yield from _numbers(member)
    elif isinstance(value, list):
        for member in value:
            yield from _numbers(member)


def _within_precision(number: str) -> None:
    try:
        digits = "".join(map(str, Decimal(number).as_tuple().digits)).strip("0")
    except InvalidOperation:
        return  # moto refuses what is not a number at all
    if len(digits) > NUMBER_MAX_DIGITS:
        raise RequestRefused("Attempting to store more than 38 significant digits in a Number")


def _item_size(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it: names and values in bytes (numbers roughly, as documented)."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: dict[str, Any]) -> int:
    (kind, member), *_ = value.items()
    if kind == "S":
        return len(member.encode())
    if kind == "N":
        return len(member.lstrip("-").replace(".", "")) // 2 + 1
    if kind == "B":
        return _blob_size(member)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(text.encode()) for text in member)
    if kind == "NS":
        return sum(len(number) // 2 + 1 for number in member)
    if kind == "BS":
        return sum(_blob_size(blob) for blob in member)
    if kind == "M":
        return 3 + sum(len(name.encode()) + _value_size(inner) + 1 for name, inner in member.items())
    if kind == "L":
        return 3 + sum(_value_size(inner) + 1 for inner in member)
    return 0


def _blob_size(blob: str | bytes) -> int:
    # bytes as a botocore client holds them, base64 as they travel
    return len(blob) if isinstance(blob, bytes) else len(base64.b64decode(blob))
