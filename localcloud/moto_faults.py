"""DynamoDB's answers under load and contention, made to happen locally: the moto server's fault mode.

AWS answers a share of requests with a throttle, a conflict with a transaction in flight or an internal
error; moto never does, so the code that has to absorb them (botocore's retries, the store's conflict
retries, the queue's redelivery) never ran locally. With a rate above 0 (``LOCALCLOUD_DYNAMODB_FAULT_RATE``,
0 by default) each DynamoDB data-plane request is answered, at that rate, with one of the kinds below
(``LOCALCLOUD_DYNAMODB_FAULTS``, all by default), in AWS's wire shape, *before* moto executes it: as
with AWS's throttles and conflicts, nothing of it is written. The draws come from a random generator
seeded by ``LOCALCLOUD_DYNAMODB_FAULT_SEED`` (0): one server's sequence of decisions is reproducible
(which request meets which depends on the order concurrent requests arrive in).

Kinds (and the operations they apply to):

- ``throughput``: ``ProvisionedThroughputExceededException`` (400), every data-plane operation;
- ``throttling``: ``ThrottlingException`` (400), every data-plane operation;
- ``conflict``: for TransactWriteItems and TransactGetItems a ``TransactionCanceledException`` (400)
  whose ``CancellationReasons`` say ``TransactionConflict`` at one item and ``None`` at the others; for
  PutItem, UpdateItem and DeleteItem ``TransactionConflictException`` (400), but only on an item some
  TransactWriteItems has written: on AWS a write conflicts only with a transaction in flight on its
  item, so an item no transaction ever writes (a rate limiter's counter) never meets one;
- ``internal``: ``InternalServerError`` (500), every data-plane operation.

Other services (SQS, KMS, SNS, ...) and DynamoDB's control plane (CreateTable, DescribeTable, ...) are
never faulted. ``GET /_localcloud/faults`` answers the settings and how many faults of each kind were
injected per operation; ``POST /_localcloud/faults`` with ``{"rate", "seed", "kinds"}`` changes the
settings while the server runs (tests turn one kind on at a time).
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from moto.dynamodb.models import dynamodb_backends

from localcloud.dynamodb_rules import request_body

FAULTS_PATH = "/_localcloud/faults"
TARGET_PREFIX = "DynamoDB_20120810."
DYNAMODB_ERROR = "com.amazonaws.dynamodb.v20120810#"
SINGLE_ITEM_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem"})
TRANSACTIONS = frozenset({"TransactWriteItems", "TransactGetItems"})
READS = frozenset({"GetItem", "Query", "Scan", "BatchGetItem"})
DATA_PLANE = READS | SINGLE_ITEM_WRITES | TRANSACTIONS | {"BatchWriteItem"}
KINDS = ("throughput", "throttling", "conflict", "internal")
# What AWS says, word for word where it is known (an on-demand table's throughput message).
THROUGHPUT_MESSAGE = (
    "Throughput exceeds the current capacity of your table or index. DynamoDB is automatically scaling your "
    "table or index so please try again shortly. If exceptions persist, check if you have a hot key."
)
THROTTLING_MESSAGE = "Rate of requests exceeds the allowed throughput."
CONFLICT_MESSAGE = "Transaction is ongoing for the item"
CANCELLED_MESSAGE = "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]"
INTERNAL_MESSAGE = "Internal server error"
BAD_REQUEST = "400 Bad Request"
# The kinds whose answer is the same for every operation: (status, __type, message).
PLAIN_ANSWERS = {
    "throughput": (BAD_REQUEST, f"{DYNAMODB_ERROR}ProvisionedThroughputExceededException", THROUGHPUT_MESSAGE),
    "throttling": (BAD_REQUEST, "com.amazon.coral.availability#ThrottlingException", THROTTLING_MESSAGE),
    "internal": ("500 Internal Server Error", f"{DYNAMODB_ERROR}InternalServerError", INTERNAL_MESSAGE),
}


@dataclass(frozen=True)
class FaultSettings:
    rate: float = 0.0
    seed: int = 0
    kinds: tuple[str, ...] = KINDS

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1:
            raise ValueError(f"the DynamoDB fault rate must be between 0 and 1, not {self.rate}")
        unknown = set(self.kinds) - set(KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"DynamoDB fault kinds are some of {', '.join(KINDS)}, not {', '.join(self.kinds)}")

    @staticmethod
    def parse_kinds(text: str) -> tuple[str, ...]:
        """``"throughput,conflict"`` (empty: every kind)."""
        return tuple(kind.strip() for kind in text.split(",") if kind.strip()) or KINDS


@dataclass(frozen=True)
class _Answer:
    status: str
    error_type: str
    body: dict[str, Any]


def _key_names(table_name: str) -> tuple[str, ...]:
    """The key attributes of a table of moto's (in this process), whichever account and region holds it."""
    for regions in dynamodb_backends.values():
        for backend in regions.values():
            table = backend.tables.get(table_name)
            if table is not None:
                return tuple(name for name in (table.hash_key_attr, table.range_key_attr) if name)
    return ()


class DynamoDBFaults:
    """WSGI middleware in front of moto: answers a share of DynamoDB requests as AWS does under load."""

    def __init__(self, app: Callable[..., Iterable[bytes]], settings: FaultSettings) -> None:
        self._app = app
        self.settings = settings
        self._random = random.Random(settings.seed)
        self._lock = threading.Lock()
        self._injected: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        # Whether the fault mode was ever on (a rate, or a change asked): only then are requests looked at.
        self._armed = settings.rate > 0
        # The items transactions write (table, key), and each table's key attributes.
        self._transactional: set[tuple[str, str]] = set()
        self._key_names: dict[str, tuple[str, ...]] = {}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == FAULTS_PATH:
            if environ.get("REQUEST_METHOD") == "POST":
                return self._change(request_body(environ), start_response)
            return _json_answer(start_response, "200 OK", "application/json", self.report())
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        operation = target.removeprefix(TARGET_PREFIX)
        if not self._armed or not target.startswith(TARGET_PREFIX) or operation not in DATA_PLANE:
            return self._app(environ, start_response)
        if operation == "TransactWriteItems":
            self._remember_transactional(request_body(environ))
        if self.settings.rate <= 0:
            return self._app(environ, start_response)
        with self._lock:
            faulted = self._random.random() < self.settings.rate
            choice, position = self._random.random(), self._random.random()
        if not faulted:
            return self._app(environ, start_response)
        # Read whole, as moto would have: a keep-alive connection must not find the body as its next request.
        request = request_body(environ)
        kinds = [kind for kind in self.settings.kinds if self._applies(kind, operation, request)]
        if not kinds:
            return self._app(environ, start_response)
        kind = kinds[min(int(choice * len(kinds)), len(kinds) - 1)]
        answer = self._answer(kind, operation, position, request)
        with self._lock:
            self._injected[kind][operation] += 1
        body = {"__type": answer.error_type, **answer.body}
        return _json_answer(start_response, answer.status, "application/x-amz-json-1.0", body)

    def _change(self, request: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """``POST /_localcloud/faults`` ``{"rate", "seed", "kinds"}`` (each optional): other settings from now
        on, the draws seeded anew; the counts go on."""
        try:
            settings = FaultSettings(
                rate=float(request.get("rate", self.settings.rate)),
                seed=int(request.get("seed", self.settings.seed)),
                kinds=tuple(request.get("kinds", self.settings.kinds)),
            )
        except (TypeError, ValueError) as error:
            return _json_answer(start_response, BAD_REQUEST, "application/json", {"error": str(error)})
        with self._lock:
            self.settings, self._random, self._armed = settings, random.Random(settings.seed), True
        return _json_answer(start_response, "200 OK", "application/json", self.report())

    def _applies(self, kind: str, operation: str, request: dict[str, Any]) -> bool:
        """Throttles and internal errors can answer anything; a conflict only a transaction, or a write to an
        item some transaction wrote: on AWS a conflict needs a transaction in flight on the item."""
        if kind != "conflict" or operation in TRANSACTIONS:
            return True
        if operation not in SINGLE_ITEM_WRITES:
            return False
        item = self._item_of(request)
        with self._lock:
            return item is not None and item in self._transactional

    def _remember_transactional(self, request: dict[str, Any]) -> None:
        items = [
            self._item_of(operation) for entry in request.get("TransactItems") or [] for operation in entry.values()
        ]
        with self._lock:
            self._transactional.update(item for item in items if item is not None)

    def _item_of(self, request: dict[str, Any]) -> tuple[str, str] | None:
        """The table and key a write (or one operation of a transaction) names, if its table is known."""
        table = request.get("TableName")
        if not isinstance(table, str):
            return None
        if table not in self._key_names:
            self._key_names[table] = _key_names(table)
        attributes = request.get("Key") or request.get("Item") or {}
        key = {name: attributes.get(name) for name in self._key_names[table]}
        if not key or None in key.values():
            return None
        return table, json.dumps(key, sort_keys=True)

    def _answer(self, kind: str, operation: str, position: float, request: dict[str, Any]) -> _Answer:
        if kind in PLAIN_ANSWERS:
            status, error_type, message = PLAIN_ANSWERS[kind]
            return _Answer(status, error_type, {"message": message})
        if operation in SINGLE_ITEM_WRITES:
            return _Answer(BAD_REQUEST, f"{DYNAMODB_ERROR}TransactionConflictException", {"message": CONFLICT_MESSAGE})
        items = max(len(request.get("TransactItems") or []), 1)
        conflicting = min(int(position * items), items - 1)
        reasons: list[dict[str, str]] = [{"Code": "None"} for _ in range(items)]
        reasons[conflicting] = {"Code": "TransactionConflict", "Message": CONFLICT_MESSAGE}
        codes = ", ".join(reason["Code"] for reason in reasons)
        return _Answer(
            BAD_REQUEST,
            f"{DYNAMODB_ERROR}TransactionCanceledException",
            {"CancellationReasons": reasons, "Message": CANCELLED_MESSAGE.format(codes)},
        )

    def report(self) -> dict[str, Any]:
        """The settings, and the faults injected so far per kind and operation."""
        with self._lock:
            injected = {kind: dict(sorted(per.items())) for kind, per in sorted(self._injected.items())}
        return {
            "rate": self.settings.rate,
            "seed": self.settings.seed,
            "kinds": list(self.settings.kinds),
            "injected": injected,
            "total": sum(sum(per.values()) for per in injected.values()),
        }


def _json_answer(
    start_response: Callable[..., Any], status: str, content_type: str, document: dict[str, Any]
) -> Iterable[bytes]:
    body = json.dumps(document).encode()
    start_response(
        status,
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("x-amzn-RequestId", uuid.uuid4().hex.upper()),
        ],
    )
    return [body]
