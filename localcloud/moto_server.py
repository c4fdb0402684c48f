"""``python -m localcloud.moto_server HOST PORT [--state FILE] [--until-stdin-closes]``: moto's server,
one DynamoDB request at a time, with one rollback copy per transaction.

With ``--state`` it restores its state from FILE at start and keeps saving it there
(``localcloud.moto_state``); ``GET /_localcloud/state`` says what it restored and whether any change
is still unsaved. With ``--until-stdin-closes`` it stops (saving) when its stdin closes: when the
process that started it stops or dies, so it never outlives the local cloud holding its port.

moto's DynamoDB backend is not thread-safe: two concurrent ``TransactWriteItems`` can fail inside
moto with "dictionary changed size during iteration", which real DynamoDB never does. Connections
are still accepted concurrently, but DynamoDB requests are processed one after another, as a single
partition would apply them atomically.

moto 5.2 also deep-copies the whole table once per item of a transaction, to roll back on failure;
a 25-item transaction on a table of 5,000 bills copies 125,000 items, and holds every other request
up meanwhile. Here a transaction takes one rollback copy per table, deep only for the partitions it
writes to.

DynamoDB applies a ``TransactWriteItems`` once per ``ClientRequestToken`` for ten minutes; botocore
fills one in and reuses it when it retries, so a call that timed out on the client but succeeded on the
server succeeds again on retry instead of applying twice. moto ignores the token, so a slow local
transaction retried by the client failed its own conditions; the token's first success is remembered
here, as DynamoDB does, and the token reused for another request is refused with
``IdempotentParameterMismatchException``, as DynamoDB does, rather than applied.

With ``--dynamodb-fault-rate`` above 0, a share of DynamoDB requests is answered with a throttle, a
conflict or an internal error, as AWS answers under load (``localcloud.moto_faults``; ``GET
/_localcloud/faults`` counts them).

moto 5.2 answers every Query by listing and sorting every item of the table, then keeping the
partition's: O(table) per request, so each fetch's Query grew with every bill stored and a 1,000-account
refresh ran at a few requests per second. Here a Query on the table or a local index (both within one
partition) looks at its partition only.

An SQS long poll in moto waits on a condition for a second at a time, woken only by a new message;
under libfaketime (the suite runs under it) that timed wait never ends, so a message whose visibility
timeout ran out, or that is due for its dead-letter queue, was never seen again. Here the wait polls.

DynamoDB's request rules that moto does not check (unused expression values, batch and transaction
sizes, number precision) are checked before moto sees a request (``localcloud.dynamodb_rules``).

``GET /_localcloud/emails`` answers the mail its SES took, newest first, as ``[{"to", "subject", "text",
"html", "sent_at"}]`` (``localcloud.emails``): what a user would get, the daily reminders above all.

``GET /_localcloud/requests`` answers how many requests each AWS operation has received (by its
``X-Amz-Target``, e.g. ``DynamoDB_20120810.GetItem``), so benchmarks can count what a call costs.
"""

from __future__ import annotations

import argparse
import copy
import functools
import io
import json
import logging
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.exceptions import ERROR_TYPE_PREFIX, DynamodbException
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.sqs.models import Queue
from werkzeug.serving import run_simple

from localcloud.dynamodb_rules import DynamoDBRules
from localcloud.emails import EmailsView, record_send_times
from localcloud.moto_faults import KINDS, DynamoDBFaults, FaultSettings
from localcloud.moto_state import PersistedState

REQUEST_COUNTS_PATH = "/_localcloud/requests"
# DynamoDB's one-item requests by the kind of item (its key's prefix: ACCOUNT, RATE...), as DynamoDB bills
# a write by its item's size.
ITEM_COUNTS_PATH = "/_localcloud/requests/by-item"
_ONE_ITEM_OPERATIONS = ("DynamoDB_20120810.GetItem", "DynamoDB_20120810.PutItem", "DynamoDB_20120810.UpdateItem")
# How often a long poll looks for visible messages.
LONG_POLL_STEP_SECONDS = 0.05
logger = logging.getLogger("localcloud.moto_server")


class RequestCounts:
    """Counts requests per operation; answers the counts at ``REQUEST_COUNTS_PATH``."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._counts: defaultdict[str, int] = defaultdict(int)
        self._by_item: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in (REQUEST_COUNTS_PATH, ITEM_COUNTS_PATH):
            with self._lock:
                counts: Any = self._counts if environ["PATH_INFO"] == REQUEST_COUNTS_PATH else self._by_item
                body = json.dumps(counts, sort_keys=True).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        operation = environ.get("HTTP_X_AMZ_TARGET") or "other"
        kind = _item_kind(environ) if operation in _ONE_ITEM_OPERATIONS else None
        with self._lock:
            self._counts[operation] += 1
            if kind is not None:
                self._by_item[operation.partition(".")[2]][kind] += 1
        return self._app(environ, start_response)


def _item_kind(environ: dict[str, Any]) -> str:
    """The kind of item a one-item request names: its sort key's prefix under a user (ACCOUNT, BILL...),
    else its partition key's (RATE, CIRCUIT...). The body is read here and put back for moto."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    try:
        request = json.loads(body)
        item = request.get("Key") or request.get("Item") or {}
        pk, sk = item["PK"]["S"], item["SK"]["S"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return "other"
    return str(sk if pk.startswith("USER#") else pk).split("#", 1)[0]


class OneDynamoDBRequestAtATime:
    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # Only DynamoDB: other services' calls (an SQS long poll above all) must not hold the others up.
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return self._app(environ, start_response)
        with self._lock:
            # Drain the body inside the lock: moto may build it lazily from shared state.
            return list(self._app(environ, start_response))


class _RollbackCopies:
    """Stands in for the ``copy`` module inside moto's DynamoDB backend."""

    def __init__(self) -> None:
        self._local = threading.local()

    def deepcopy(self, value: Any, memo: dict[int, Any] | None = None) -> Any:
        copies: dict[int, Any] | None = getattr(self._local, "copies", None)
        if copies is None or not isinstance(value, Table):
            return copy.deepcopy(value, memo)
        if id(value) not in copies:
            copies[id(value)] = _rollback_copy(value, self._local.partitions)
        return copies[id(value)]

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)

    def wrap(self, transact: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(transact)
        def one_copy_per_table(backend: Any, transact_items: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
            self._local.copies = {}
            self._local.partitions = _partitions_written(transact_items)
            try:
                return transact(backend, transact_items, *args, **kwargs)
            finally:
                self._local.copies = None

        return one_copy_per_table


def _partitions_written(transact_items: list[dict[str, Any]]) -> set[str]:
    """The partition key values (as strings) a transaction's items write to."""
    partitions = set()
    for item in transact_items:
        for operation in item.values():
            key = operation.get("Item") or operation.get("Key") or {}
            for value in key.values():
                partitions.add(json.dumps(value, sort_keys=True, default=str))
    return partitions


def _rollback_copy(table: Table, partitions: set[str]) -> Table:
    """What moto restores if the transaction fails: the table with its partitions as they are now.

    A rollback needs the items the transaction may change, not the whole table: the item maps are
    copied (cheap: references), and only the items of the partitions the transaction writes to are
    deep-copied (moto updates items in place). Partitions are matched by any key attribute the
    transaction names, which over-approximates and so never misses one.
    """
    snapshot = copy.copy(table)
    snapshot.items = defaultdict(dict)
    for hash_key, stored in table.items.items():
        touched = json.dumps(hash_key.to_json(), sort_keys=True, default=str) in partitions
        if isinstance(stored, dict):
            snapshot.items[hash_key] = copy.deepcopy(stored) if touched else dict(stored)
        else:
            snapshot.items[hash_key] = copy.deepcopy(stored) if touched else stored
    return snapshot


class IdempotentParameterMismatch(DynamodbException):
    """What DynamoDB answers a ``ClientRequestToken`` reused, within its window, for another request."""

    error_type = ERROR_TYPE_PREFIX + "IdempotentParameterMismatchException"

    def __init__(self) -> None:
        super().__init__(
            self.error_type,
            "The request uses the same client token as a previous, but non-identical request.",
        )


class _TransactionTokens:
    """``TransactWriteItems`` idempotent per ``ClientRequestToken``, as on AWS: the same request again
    answers its first success without applying twice; another request under the token is refused."""

    WINDOW_SECONDS = 600

    def __init__(self) -> None:
        self._succeeded: dict[str, tuple[float, str, Any]] = {}
        self._lock = threading.Lock()

    def wrap(self, transact: Callable[[DynamoHandler], Any]) -> Callable[[DynamoHandler], Any]:
        @functools.wraps(transact)
        def once_per_token(handler: DynamoHandler) -> Any:
            token = handler.body.get("ClientRequestToken")
            if not token:
                return transact(handler)
            # Every parameter but the token itself (ReturnConsumedCapacity too), as DynamoDB compares them.
            parameters = {name: value for name, value in handler.body.items() if name != "ClientRequestToken"}
            request = json.dumps(parameters, sort_keys=True, default=str)
            now = time.monotonic()
            with self._lock:
                self._succeeded = {
                    seen: entry for seen, entry in self._succeeded.items() if now - entry[0] < self.WINDOW_SECONDS
                }
                earlier = self._succeeded.get(token)
            if earlier is not None:
                if earlier[1] != request:
                    raise IdempotentParameterMismatch()
                return earlier[2]
            result = transact(handler)
            with self._lock:
                self._succeeded[token] = (now, request, result)
            return result

        return once_per_token


def _one_partition_per_query(query: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(query)
    def query_partition(table: Table, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        # moto's own signature: hash_key, range_comparison, range_objs, limit, exclusive_start_key,
        # scan_index_forward, projection_expressions, index_name, ...
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
        within_partition = index_name is None or index_name in {index.name for index in table.indexes}
        if hash_key is None or not table.range_key_attr or not within_partition:
            return query(table, hash_key, *args, **kwargs)
        partition = table.items.get(hash_key, {})
        # moto reads candidates through all_items(), then filters and sorts them itself.
        vars(table)["all_items"] = lambda: list(partition.values())
        try:
            return query(table, hash_key, *args, **kwargs)
        finally:
            del vars(table)["all_items"]

    return query_partition


def _queries_read_one_partition() -> None:
    Table.query = _one_partition_per_query(Table.query)  # type: ignore[method-assign]


def _transactions_idempotent_per_token() -> None:
    DynamoHandler.transact_write_items = _TransactionTokens().wrap(DynamoHandler.transact_write_items)  # type: ignore[method-assign,assignment]


def _long_polls_see_messages_come_back() -> None:
    def wait_for_messages(queue: Queue, timeout: int) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with queue._messages_lock:
                if queue.messages:
                    return
            time.sleep(LONG_POLL_STEP_SECONDS)

    Queue.wait_for_messages = wait_for_messages  # type: ignore[method-assign,assignment]


def _copy_each_table_once_per_transaction() -> None:
    copies = _RollbackCopies()
    vars(dynamodb_models)["copy"] = copies
    DynamoDBBackend.transact_write_items = copies.wrap(DynamoDBBackend.transact_write_items)  # type: ignore[method-assign]


class _Stopper:
    """Stops the server once, whoever asks first (a signal, the stdin watcher): the last save, then exit."""

    def __init__(self, state: PersistedState | None) -> None:
        self._state = state
        self._once = threading.Lock()

    def __call__(self, *_: Any) -> None:
        if not self._once.acquire(blocking=False):
            return  # already stopping; the first caller exits the process
        code = 0
        if self._state is not None:
            try:
                self._state.stop()
            except Exception:
                logger.exception("the last save failed")
                code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # request threads may be held at the closed gate: do not wait for them

    def when_stdin_closes(self) -> None:
        def watch() -> None:
            while sys.stdin.buffer.read(65536):
                pass
            self()

        threading.Thread(target=watch, name="stdin-watcher", daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description="moto's server as the local cloud runs it")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--state", type=Path, default=None, help="keep the state in this file across restarts")
    parser.add_argument("--until-stdin-closes", action="store_true", help="stop (saving) when stdin closes")
    parser.add_argument(
        "--dynamodb-fault-rate", type=float, default=0.0, help="the share of DynamoDB requests answered with a fault"
    )
    parser.add_argument("--dynamodb-fault-seed", type=int, default=0, help="the seed of the faults' random draws")
    parser.add_argument(
        "--dynamodb-faults", default=",".join(KINDS), help=f"which faults, some of {','.join(KINDS)} (all)"
    )
    args = parser.parse_args()
    faults = FaultSettings(
        args.dynamodb_fault_rate, args.dynamodb_fault_seed, FaultSettings.parse_kinds(args.dynamodb_faults)
    )
    # No access log line per request: a tenth of the server's time under load; errors are still logged,
    # and GET /_localcloud/requests says what was asked of it.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("localcloud").setLevel(logging.INFO)
    _copy_each_table_once_per_transaction()
    _transactions_idempotent_per_token()
    _queries_read_one_partition()
    _long_polls_see_messages_come_back()
    record_send_times()
    # Faults answer before the gate: a throttled request, as on AWS, waits for nothing and changes nothing.
    app: Callable[..., Iterable[bytes]] = EmailsView(
        RequestCounts(
            # A request DynamoDB refuses as invalid is refused before it could be throttled.
            DynamoDBRules(
                DynamoDBFaults(OneDynamoDBRequestAtATime(DomainDispatcherApplication(create_backend_app)), faults)
            )
        )
    )
    if faults.rate > 0:
        logger.info("DynamoDB faults at a rate of %g (seed %d): %s", faults.rate, faults.seed, ", ".join(faults.kinds))
    state = None
    if args.state is not None:
        state = PersistedState(app, args.state)
        report = state.report
        if report.restored:
            logger.info("restored %s from %s in %.2f s", ", ".join(report.restored), report.file, report.seconds)
        for service, problem in report.not_restored.items():
            logger.warning("could not restore %s from %s: %s", service, report.file, problem)
        state.start()
        app = state
    stop = _Stopper(state)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.until_stdin_closes:
        stop.when_stdin_closes()
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
