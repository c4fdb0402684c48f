"""Webhook delivery: how fast events reach the users' webhooks, what each delivery asks of AWS, and how
many events a fetch makes.

The whole local cloud runs (gateway, the real fetcher and delivery functions in worker processes, the
SQS poller, moto with its EventBridge rule to the delivery queue, the sandbox). A receiver in this
process (a ``ThreadingHTTPServer`` on loopback) answers 204 at once, notes each request's arrival, and
checks a sample of signatures with ``standardwebhooks``. Users register through the API, each with one
webhook pointing at it. Then:

1. Delivery throughput: ``EVENTS`` bill.created-shaped events for those users are put on the bus
   straight (``billhub.event_bus.EventBus``, 10 a request), timed from the first put until the receiver
   has every one; the AWS requests moto received meanwhile, less the benchmark's own ``PutEvents``, are
   divided by the deliveries.
2. Events per fetch: some users link accounts at every provider (their first fetches make
   ``account.synced``); then every one of them asks for a refresh twice: after the sandbox revised a few
   bills (``bill.updated``, ``refresh.completed``), and again with nothing changed (``refresh.completed``
   only). The difference between the two refreshes' AWS requests, per fetch that changed something, is
   what a change costs beyond the refresh itself (the outbox's update, the event's ``PutEvents``).

Every event must arrive exactly once, and every delivery checked must be ``delivered`` at its first
attempt: the benchmark fails otherwise.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import standardwebhooks

from bench.refresh_throughput import (
    PASSWORD,
    REPORT_CPU,
    REPORT_DURATION,
    _all_finished,
    _as_a_client_would,
    _aws_requests,
    _item_bytes,
    _item_requests,
    _oauth_link,
    _operation,
    _percentile,
    _queue_drained,
    _start_refresh,
)
from localcloud.cloud import STACK_NAME
from localcloud.launch import Launched, free_port, launched, wait_for
from localcloud.runtime import LAYER_DIR

if str(LAYER_DIR) not in sys.path:
    sys.path.insert(0, str(LAYER_DIR))

from billhub.event_bus import PUT_EVENTS_LIMIT, EventBus
from billhub.events import Event, event_id
from mock_provider.sandbox import monthly_bills

TITLE = "Webhook delivery"
USERS = 50  # each with one webhook
EVENTS = 1_000  # put on the bus in the throughput phase, EVENTS / USERS per user
LINKING_USERS = 5  # of them, each with 2 accounts at each of the 4 providers: 40 accounts
ACCOUNTS_PER_PROVIDER = 2
REVISED = 5  # bills the sandbox revises before the first refresh (one NorthGas account's per linking user)
SIGNATURE_SAMPLE = 10  # every n-th request's signature is verified
CHECKED_USERS = 5  # whose delivery logs are read back through the API
BUS = f"{STACK_NAME}-events"
DELIVERY_LOG = "DeliverWebhooksFunction.log"
LINKERS = 4
# Requests that are not the delivery's: the local poller's long polls (Lambda's event source mapping
# polls for the function, counted in the cost model by its batches), the benchmark's look at the queues.
NOT_THE_DELIVERYS = ("AmazonSQS.ReceiveMessage", "AmazonSQS.GetQueueUrl", "AmazonSQS.GetQueueAttributes")


@dataclass
class Arrival:
    path: str
    event_id: str
    type: str
    at: float


@dataclass
class Receiver:
    """The users' webhook endpoint: keeps what arrived, checks a sample's signatures, answers 204."""

    secrets: dict[str, str] = field(default_factory=dict)  # path -> signing secret
    arrivals: list[Arrival] = field(default_factory=list)
    verified: int = 0
    bad_signatures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self) -> ThreadingHTTPServer:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                at = time.monotonic()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.arrived(self.path, dict(self.headers.items()), body, at)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
        return server

    def arrived(self, path: str, headers: dict[str, str], body: bytes, at: float) -> None:
        headers = {name.lower(): value for name, value in headers.items()}
        message_id = headers.get("webhook-id", "")
        kind = json.loads(body).get("type", "?") if body else "?"
        with self.lock:
            self.arrivals.append(Arrival(path, message_id, kind, at))
            sample = (len(self.arrivals) - 1) % SIGNATURE_SAMPLE == 0
            secret = self.secrets.get(path)
        if sample and secret is not None:
            try:
                standardwebhooks.Webhook(secret).verify(body, headers)
            except Exception as error:  # any refusal is a bad signature, kept for the check
                with self.lock:
                    self.bad_signatures.append(f"{message_id}: {error}")
            else:
                with self.lock:
                    self.verified += 1

    def since(self, start: int) -> list[Arrival]:
        with self.lock:
            return self.arrivals[start:]

    def count(self) -> int:
        with self.lock:
            return len(self.arrivals)


@dataclass
class User:
    number: int
    headers: dict[str, str]
    user_id: str
    webhook_id: str
    path: str


def run(workdir: Path) -> dict[str, Any]:
    receiver = Receiver()
    server = receiver.serve()
    try:
        with launched(
            workdir,
            LOCALCLOUD_SEED="0",
            LOCALCLOUD_SCHEDULE_SECONDS="3600",  # only the benchmark's own work
            LOCALCLOUD_PARAMETER_OVERRIDES=json.dumps({"ManualRefreshMinIntervalSeconds": "0"}),
        ) as cloud:
            base = f"http://127.0.0.1:{server.server_address[1]}"
            with ThreadPoolExecutor(LINKERS) as pool:
                users = list(pool.map(lambda n: _register(cloud.state["api"], base, n, receiver), range(USERS)))
            unloaded = _unloaded_latency(cloud, receiver, users)
            throughput = _throughput_phase(cloud, receiver, users)
            throughput["unloaded"] = unloaded
            throughput["checks"] = _check_deliveries(cloud, users[:CHECKED_USERS], EVENTS // USERS)
            throughput["delivery_item_kb"] = _delivery_item_kb(cloud)
            per_fetch = _events_per_fetch(cloud, receiver, users[:LINKING_USERS], throughput)
    finally:
        server.shutdown()
        server.server_close()
    duplicates = _duplicates(receiver.arrivals)
    if duplicates:
        raise RuntimeError(f"events delivered more than once: {duplicates[:5]}")
    if receiver.bad_signatures:
        raise RuntimeError(f"signatures that did not verify: {receiver.bad_signatures[:5]}")
    return {
        "users": USERS,
        "events": EVENTS,
        "throughput": throughput,
        "events_per_fetch": per_fetch,
        "signatures_verified": receiver.verified,
        "duplicates": len(duplicates),
    }


def _register(api_url: str, base: str, number: int, receiver: Receiver) -> User:
    with httpx.Client(base_url=api_url, timeout=60) as api:
        email = f"hooks-{number}@example.com"
        api.post("/auth/register", json={"email": email, "password": PASSWORD}).raise_for_status()
        login = api.post("/auth/login", json={"email": email, "password": PASSWORD})
        login.raise_for_status()
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        user_id = api.get("/me", headers=headers).json()["user_id"]
        path = f"/hooks/{number}"
        created = api.post("/webhooks", headers=headers, json={"url": f"{base}{path}"})
        if created.status_code != 201:
            raise RuntimeError(f"POST /webhooks answered {created.status_code}: {created.text[:300]}")
        with receiver.lock:
            receiver.secrets[path] = created.json()["secret"]
        return User(number, headers, str(user_id), created.json()["webhook_id"], path)


def _bill_event(user: User, sequence: int, at: datetime) -> Event:
    """A bill.created event as the fetcher makes one (its data the bill as ``GET /bills`` shows it)."""
    provider_bill_id = f"BENCH-{user.number:03d}-{sequence:05d}"
    bill = {
        "bill_id": event_id("bill.created", user.user_id, provider_bill_id)[4:],
        "account_id": f"{user.number:032x}",
        "provider": "northgas",
        "provider_bill_id": provider_bill_id,
        "category": "gas",
        "amount": "48.21",
        "currency": "GBP",
        "issued_on": "2026-11-01",
        "due_on": "2026-11-22",
        "period_start": "2026-10-01",
        "period_end": "2026-10-31",
        "status": "due",
        "revision": 1,
        "line_items": [
            {"description": "Gas used: 412 kWh", "amount": "40.11"},
            {"description": "Standing charge", "amount": "8.10"},
        ],
    }
    return Event(
        event_id=event_id("bill.created", user.user_id, provider_bill_id),
        type="bill.created",
        user_id=user.user_id,
        occurred_at=at,
        data={"bill": bill},
    )


def _unloaded_latency(cloud: Launched, receiver: Receiver, users: list[User]) -> dict[str, Any]:
    """One PutEvents of 10 events (for the last users, whose delivery logs are not checked), nothing else
    in flight: the latency without a backlog (this also warms the delivery function up)."""
    events = [_bill_event(user, EVENTS, datetime.now(UTC)) for user in users[-PUT_EVENTS_LIMIT:]]
    start = receiver.count()
    expected = {event.event_id for event in events}
    began = time.monotonic()
    EventBus(cloud.aws("events"), BUS).publish(events)
    wait_for(lambda: {a.event_id for a in receiver.since(start)} >= expected, 120, "the first events' delivery", 0.05)
    latencies = sorted(a.at - began for a in receiver.since(start) if a.event_id in expected)
    wait_for(lambda: _delivery_queue_drained(cloud), 120, "the delivery queue to drain", 0.5)
    return {
        "events": len(events),
        "latency_p50_s": round(_percentile(latencies, 50), 3),
        "latency_max_s": round(latencies[-1], 3),
    }


def _throughput_phase(cloud: Launched, receiver: Receiver, users: list[User]) -> dict[str, Any]:
    now = datetime.now(UTC)
    events = [_bill_event(users[n % USERS], n // USERS, now) for n in range(EVENTS)]
    bus = EventBus(cloud.aws("events"), BUS)
    log = _Log(cloud, DELIVERY_LOG)
    start = receiver.count()
    aws_before = _aws_requests(cloud.state["aws_endpoint"])
    items_before = _item_requests(cloud.state["aws_endpoint"])
    put_at: dict[str, float] = {}
    began = time.monotonic()
    for first in range(0, EVENTS, PUT_EVENTS_LIMIT):
        batch = events[first : first + PUT_EVENTS_LIMIT]
        at = time.monotonic()
        put_at.update((event.event_id, at) for event in batch)
        bus.publish(batch)
    put_seconds = time.monotonic() - began
    expected = {event.event_id for event in events}
    wait_for(lambda: {a.event_id for a in receiver.since(start)} >= expected, 600, "every event's delivery", 0.2)
    arrivals = [a for a in receiver.since(start) if a.event_id in expected]
    seconds = max(a.at for a in arrivals) - began
    # Until the last attempt is recorded too (its UpdateItem comes after the receiver's answer).
    wait_for(lambda: _delivery_queue_drained(cloud), 120, "the delivery queue to drain", 0.5)
    time.sleep(1)
    aws_after = _aws_requests(cloud.state["aws_endpoint"])
    items_after = _item_requests(cloud.state["aws_endpoint"])
    requests = _diff(aws_after, aws_before)
    puts = -(-EVENTS // PUT_EVENTS_LIMIT)
    requests["AWSEvents.PutEvents"] = requests.get("AWSEvents.PutEvents", 0) - puts
    latencies = sorted(a.at - put_at[a.event_id] for a in arrivals)
    by_second = Counter(int(a.at - began) for a in arrivals)
    span = [by_second.get(second, 0) for second in range(min(by_second), max(by_second) + 1)]
    inner = span[1:-1] or span
    written = log.since()
    durations = [float(m) for m in REPORT_DURATION.findall(written)]
    cpu = [float(m) for m in REPORT_CPU.findall(written)]
    return {
        "put_seconds": round(put_seconds, 2),
        "put_requests": puts,
        "seconds": round(seconds, 2),
        "deliveries": len(arrivals),
        "deliveries_per_second": round(len(arrivals) / seconds, 1),
        "median_per_second": statistics.median(inner),
        "max_in_one_second": max(span),
        "deliveries_by_second": span,
        "latency_p50_s": round(_percentile(latencies, 50), 3),
        "latency_p95_s": round(_percentile(latencies, 95), 3),
        "latency_max_s": round(latencies[-1], 3),
        "aws_requests": dict(sorted(requests.items())),
        # Everything moto served meanwhile (the puts and the poller's receives included), a second.
        "aws_requests_per_second": round((sum(requests.values()) + puts) / seconds, 1),
        "dynamodb_requests_per_second": round(
            sum(n for name, n in requests.items() if name.startswith("DynamoDB")) / seconds, 1
        ),
        # The machine's load (other work on it included) at the end of the phase: 1, 5, 15 minutes.
        "load_average": [round(load, 1) for load in os.getloadavg()],
        "aws_requests_per_delivery": {
            _operation(name): round(count / EVENTS, 3)
            for name, count in sorted(requests.items())
            if count and name not in NOT_THE_DELIVERYS
        },
        "dynamodb_items_per_delivery": {
            operation: {kind: round(n / EVENTS, 3) for kind, n in kinds.items()}
            for operation, kinds in _diff_items(items_after, items_before).items()
        },
        "function": {
            "invocations": len(durations),
            "deliveries_per_invocation": round(EVENTS / len(durations), 2) if durations else None,
            "mean_duration_ms": round(statistics.fmean(durations), 1) if durations else None,
            "p95_duration_ms": round(_percentile(durations, 95), 1) if durations else None,
            "duration_seconds_per_delivery": round(sum(durations) / 1000 / EVENTS, 4),
            "mean_cpu_ms": round(statistics.fmean(cpu), 1) if cpu else None,
            "cpu_seconds_per_delivery": round(sum(cpu) / 1000 / EVENTS, 4),
            "log_bytes_per_delivery": round(len(written.encode()) / EVENTS),
        },
    }


def _check_deliveries(cloud: Launched, users: list[User], expected: int) -> dict[str, Any]:
    """Every delivery of the checked users' webhooks delivered at its first attempt, as the API shows them."""
    states: Counter[str] = Counter()
    with httpx.Client(base_url=cloud.state["api"], timeout=60) as api:
        for user in users:
            deliveries: list[dict[str, Any]] = []
            cursor: str | None = None
            while True:
                params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
                page = api.get(f"/webhooks/{user.webhook_id}/deliveries", headers=user.headers, params=params)
                page.raise_for_status()
                deliveries += page.json()["deliveries"]
                cursor = page.json()["next_cursor"]
                if not cursor:
                    break
            if len(deliveries) != expected:
                raise RuntimeError(f"{user.webhook_id} has {len(deliveries)} deliveries, not {expected}")
            states.update(f"{d['state']}/{d['attempts']}" for d in deliveries)
    if set(states) != {"delivered/1"}:
        raise RuntimeError(f"deliveries not delivered at their first attempt: {dict(states)}")
    return {"users": len(users), "deliveries": sum(states.values()), "states": dict(states)}


def _delivery_item_kb(cloud: Launched) -> dict[str, float]:
    """The delivery items' sizes, as DynamoDB bills their writes (by the 1 KB)."""
    dynamodb = cloud.aws("dynamodb")
    table = next(name for name in dynamodb.list_tables()["TableNames"] if "BillsTable" in name)
    items = [
        item
        for page in dynamodb.get_paginator("scan").paginate(
            TableName=table,
            FilterExpression="begins_with(SK, :delivery)",
            ExpressionAttributeValues={":delivery": {"S": "DELIVERY#"}},
        )
        for item in page["Items"]
    ]
    sizes = [_item_bytes(item) / 1024 for item in items]
    return {"items": len(items), "median_kb": round(statistics.median(sizes), 2), "max_kb": round(max(sizes), 2)}


def _events_per_fetch(
    cloud: Launched, receiver: Receiver, users: list[User], throughput: dict[str, Any]
) -> dict[str, Any]:
    accounts = len(users) * 4 * ACCOUNTS_PER_PROVIDER
    api = httpx.Client(base_url=cloud.state["api"], timeout=60)

    # Linking: each account's first fetch, from its link.
    start = receiver.count()
    before = _aws_requests(cloud.state["aws_endpoint"])
    with ThreadPoolExecutor(LINKERS) as pool:
        list(pool.map(lambda user: _link_accounts(cloud.state["api"], user), users))
    wait_for(
        lambda: sum(a.type == "account.synced" for a in receiver.since(start)) >= accounts,
        300,
        "every account's account.synced",
        0.5,
    )
    wait_for(lambda: _queue_drained(cloud) and _delivery_queue_drained(cloud), 120, "the queues to drain", 0.5)
    time.sleep(1)
    link = _phase(receiver.since(start), _diff(_aws_requests(cloud.state["aws_endpoint"]), before), accounts)

    # A refresh after the sandbox revised a few bills, then one with nothing changed.
    for user in users[:REVISED]:
        account_number = _northgas_number(user.number, 0)
        newest = monthly_bills(account_number, cloud.today)[0]
        revised = httpx.post(
            f"{cloud.state['mock_provider']}/_admin/revise/northgas",
            json={"account": account_number, "bill_id": newest.bill_id, "amount": "12.34"},
        )
        revised.raise_for_status()
    refreshes = {}
    for name, changed in (("refresh_after_revisions", REVISED), ("refresh_unchanged", 0)):
        refreshes[name] = _refresh_phase(cloud, receiver, api, users, changed, accounts)
    api.close()

    revised_phase, unchanged = refreshes["refresh_after_revisions"], refreshes["refresh_unchanged"]
    if revised_phase["events_by_type"] != {"bill.updated": REVISED, "refresh.completed": len(users)}:
        raise RuntimeError(f"the refresh after revisions made {revised_phase['events_by_type']}")
    if unchanged["events_by_type"] != {"refresh.completed": len(users)}:
        raise RuntimeError(f"the unchanged refresh made {unchanged['events_by_type']}")
    if link["events_by_type"].get("account.synced") != accounts:
        raise RuntimeError(f"linking made {link['events_by_type']}")
    # What the changed fetches asked beyond an unchanged refresh's, per changed fetch: the bill's save,
    # the outbox's update, the events' PutEvents, and the delivery of the bill.updated each one made.
    extra = {
        _operation(name): round(
            (revised_phase["fetch_requests"].get(name, 0) - unchanged["fetch_requests"].get(name, 0)) / REVISED, 2
        )
        for name in sorted({*revised_phase["fetch_requests"], *unchanged["fetch_requests"]})
        if revised_phase["fetch_requests"].get(name, 0) != unchanged["fetch_requests"].get(name, 0)
    }
    extra_items = {
        operation: {
            kind: round((n - unchanged["dynamodb_items"].get(operation, {}).get(kind, 0)) / REVISED, 2)
            for kind, n in kinds.items()
            if n != unchanged["dynamodb_items"].get(operation, {}).get(kind, 0)
        }
        for operation, kinds in revised_phase["dynamodb_items"].items()
    }
    # Less the delivery of the one bill.updated each changed fetch made (counted per delivery above): the
    # fetch's own extra (its bill's save, its outbox's update, its PutEvents).
    delivery = throughput["aws_requests_per_delivery"]
    fetch_extra = {
        name: round(n - delivery.get(name, 0), 2)
        for name, n in sorted({**dict.fromkeys(delivery, 0.0), **extra}.items())
        if round(n - delivery.get(name, 0), 2)
    }
    return {
        "users": len(users),
        "accounts": accounts,
        "link": link,
        "refresh_after_revisions": revised_phase,
        "refresh_unchanged": unchanged,
        "extra_requests_per_changed_fetch": extra,
        "extra_items_per_changed_fetch": {op: kinds for op, kinds in extra_items.items() if kinds},
        "extra_fetch_requests_per_changed_fetch": fetch_extra,
    }


def _refresh_phase(
    cloud: Launched, receiver: Receiver, api: httpx.Client, users: list[User], changed: int, accounts: int
) -> dict[str, Any]:
    """Every user asks for a refresh; the events that arrived and the AWS requests until all is quiet."""
    start = receiver.count()
    before = _aws_requests(cloud.state["aws_endpoint"])
    items_before = _item_requests(cloud.state["aws_endpoint"])
    jobs = [(user.headers, _start_refresh(api, user.headers)) for user in users]
    expected = len(users) + changed  # refresh.completed per job, bill.updated per revision
    # Watched through the receiver, not the API, so the watching adds no DynamoDB requests to the count.
    wait_for(lambda: receiver.count() - start >= expected, 300, "the refresh's events", 0.5)
    finished = wait_for(lambda: _all_finished(api, jobs), 60, "every refresh job", 1)
    wait_for(lambda: _queue_drained(cloud) and _delivery_queue_drained(cloud), 120, "the queues to drain", 0.5)
    time.sleep(1)
    phase = _phase(receiver.since(start), _diff(_aws_requests(cloud.state["aws_endpoint"]), before), accounts)
    phase["dynamodb_items"] = _diff_items(_item_requests(cloud.state["aws_endpoint"]), items_before)
    phase["jobs"] = {
        "succeeded": sum(job["succeeded"] for job in finished),
        "failed": sum(job["failed"] for job in finished),
    }
    phase["changed_fetches"] = changed
    return phase


def _phase(arrivals: list[Arrival], requests: dict[str, int], fetches: int) -> dict[str, Any]:
    by_type = Counter(a.type for a in arrivals)
    # The fetch's own requests: the delivery's (one Query, PutItem, UpdateItem per event; its KMS and
    # SQS) are the throughput phase's to count, so only the bus and the fetch lanes are kept apart here.
    return {
        "fetches": fetches,
        "events_by_type": dict(sorted(by_type.items())),
        "events_per_fetch": {kind: round(n / fetches, 3) for kind, n in sorted(by_type.items())},
        "put_events_per_fetch": round(requests.get("AWSEvents.PutEvents", 0) / fetches, 3),
        "aws_requests": dict(sorted(requests.items())),
        "fetch_requests": {
            name: count for name, count in sorted(requests.items()) if count and name not in NOT_THE_DELIVERYS
        },
    }


def _link_accounts(api_url: str, user: User) -> None:
    """Links the user's 2 accounts at each provider, as ``bench.refresh_throughput`` links them."""
    with httpx.Client(base_url=api_url, timeout=60) as api:
        for copy in range(ACCOUNTS_PER_PROVIDER):
            tag = f"h{user.number}x{copy}"
            credentials = {
                "northgas": {"account_number": _northgas_number(user.number, copy), "postcode": "NG1 1AA"},
                "clearwater": {"api_key": f"cw_sandbox_{tag}"},
                "fibrelink": {"username": tag, "password": "pass_good"},
            }
            for provider, secret in credentials.items():
                key = {**user.headers, "Idempotency-Key": f"hooks-{tag}-{provider}"}
                body = {"provider": provider, "credentials": secret}
                _as_a_client_would(functools.partial(api.post, "/accounts/link", headers=key, json=body))
            _as_a_client_would(functools.partial(_oauth_link, api, user.headers, tag))


def _northgas_number(number: int, copy: int) -> str:
    return f"NG7{number:04d}{copy:03d}"


def _delivery_queue_drained(cloud: Launched) -> bool:
    sqs = cloud.aws("sqs")
    url = sqs.get_queue_url(QueueName=f"{STACK_NAME}-DeliveryQueue")["QueueUrl"]
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    waiting = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")
    return all(counts[name] == "0" for name in waiting)


class _Log:
    """A function's log from now on."""

    def __init__(self, cloud: Launched, name: str) -> None:
        self._path = Path(cloud.state["logs"]) / name
        self._offset = self._path.stat().st_size if self._path.exists() else 0

    def since(self) -> str:
        if not self._path.exists():
            return ""
        with self._path.open("rb") as log:
            log.seek(self._offset)
            return log.read().decode(errors="replace")


def _diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}


def _diff_items(after: dict[str, dict[str, int]], before: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    changed = {
        operation: {
            kind: n - before.get(operation, {}).get(kind, 0)
            for kind, n in sorted(kinds.items())
            if n != before.get(operation, {}).get(kind, 0)
        }
        for operation, kinds in sorted(after.items())
    }
    return {operation: kinds for operation, kinds in changed.items() if kinds}


def _duplicates(arrivals: list[Arrival]) -> list[tuple[str, str]]:
    seen = Counter((a.path, a.event_id) for a in arrivals)
    return [key for key, n in seen.items() if n > 1]


def report(result: dict[str, Any]) -> str:
    t = result["throughput"]
    f = t["function"]
    per_fetch = result["events_per_fetch"]
    link, revised, unchanged = (
        per_fetch["link"],
        per_fetch["refresh_after_revisions"],
        per_fetch["refresh_unchanged"],
    )

    def items(by_item: dict[str, dict[str, float]]) -> str:
        return "; ".join(f"{op} " + ", ".join(f"{k} {n}" for k, n in kinds.items()) for op, kinds in by_item.items())

    def events(phase: dict[str, Any]) -> str:
        return ", ".join(f"{kind} {n}" for kind, n in phase["events_per_fetch"].items())

    lines = [
        f"{result['users']} users, each with one webhook (a receiver in the benchmark answering 204 at once, "
        f"{result['signatures_verified']} signatures verified with `standardwebhooks`).",
        "",
        "### Delivery throughput",
        "",
        f"- {t['deliveries']:,} bill.created events put on the bus ({t['put_requests']} `PutEvents` of 10, "
        f"{t['put_seconds']} s), every one received in **{t['seconds']} s**: **{t['deliveries_per_second']} "
        f"deliveries/s** overall, median {t['median_per_second']} a second (full seconds), at most "
        f"{t['max_in_one_second']} in one second.",
        f"- Latency, put to received: p50 **{t['latency_p50_s']} s**, p95 **{t['latency_p95_s']} s**, "
        f"max {t['latency_max_s']} s under load (the puts queue with the deliveries on moto, one request "
        "at a time). "
        f"Alone (one `PutEvents` of {t['unloaded']['events']} with nothing else in flight, before the run): "
        f"p50 {t['unloaded']['latency_p50_s']} s, max {t['unloaded']['latency_max_s']} s.",
        f"- moto served {t['aws_requests_per_second']} AWS requests a second meanwhile (all services, the "
        f"poller's receives included), {t['dynamodb_requests_per_second']} of them DynamoDB's, which it serves "
        "one at a time (the refresh benchmark's phases are a comparison); the machine's load average was "
        f"{', '.join(str(x) for x in t['load_average'])} (1, 5, 15 min) at the end, other work included. "
        "The rate is this machine's and moto's, not the delivery function's (each batch's attempts run at once).",
        "- AWS requests per delivery (the benchmark's own `PutEvents` and the local poller's receives left out): "
        + ", ".join(f"{name} {n}" for name, n in t["aws_requests_per_delivery"].items())
        + f"; DynamoDB's one-item requests by item: {items(t['dynamodb_items_per_delivery'])}.",
        f"- A delivery item is {t['delivery_item_kb']['median_kb']} KB (median of {t['delivery_item_kb']['items']}; "
        f"at most {t['delivery_item_kb']['max_kb']} KB).",
        f"- The delivery function: {f['invocations']} invocations ({f['deliveries_per_invocation']} deliveries "
        f"each), mean {f['mean_duration_ms']} ms, p95 {f['p95_duration_ms']} ms wall; its own CPU "
        f"{f['cpu_seconds_per_delivery']} s per delivery (mean {f['mean_cpu_ms']} ms an invocation); "
        f"{f['log_bytes_per_delivery']} bytes of log per delivery.",
        f"- Checked: every event arrived once ({result['duplicates']} duplicates); the delivery logs of "
        f"{t['checks']['users']} webhooks ({t['checks']['deliveries']} deliveries) through the API: "
        + ", ".join(f"{state} {n}" for state, n in t["checks"]["states"].items())
        + " (state/attempts).",
        "",
        "### Events per fetch",
        "",
        f"{per_fetch['accounts']} accounts ({per_fetch['users']} users, two at each provider), every user with "
        "a webhook.",
        "",
        "| phase | fetches | events received | per fetch | PutEvents per fetch |",
        "| --- | ---: | --- | --- | ---: |",
        *(
            f"| {title} | {phase['fetches']} | "
            + ", ".join(f"{k} {n}" for k, n in phase["events_by_type"].items())
            + f" | {events(phase)} | {phase['put_events_per_fetch']} |"
            for title, phase in (
                ("link (first fetches)", link),
                (f"refresh after {revised['changed_fetches']} bills were revised", revised),
                ("refresh, nothing changed", unchanged),
            )
        ),
        "",
        "- Per fetch that changed something, beyond an unchanged refresh (its events' deliveries included): "
        + ", ".join(f"{name} {n}" for name, n in per_fetch["extra_requests_per_changed_fetch"].items())
        + f"; by item: {items(per_fetch['extra_items_per_changed_fetch'])}. Less its bill.updated's delivery "
        "(the throughput phase's requests per delivery): "
        + ", ".join(f"{name} {n}" for name, n in per_fetch.get("extra_fetch_requests_per_changed_fetch", {}).items())
        + ". A changed fetch saves its bills and the account's outbox in one `TransactWriteItems` (where an "
        "unchanged one updates the account), then puts the events and empties the outbox (an account "
        "`UpdateItem`): the outbox's own cost is that update and the `PutEvents`. Reads of the budget's "
        "circuits (`GetItem CIRCUIT`) vary with how fetches fall into batches, not with the change.",
        "",
        "Method: the whole local cloud runs on this machine (moto's EventBridge rule sends each event to the "
        "delivery queue, whose poller invokes the real delivery function). Throughput: the events are put with "
        "`billhub.event_bus.EventBus` from the first put until the receiver has every one; AWS requests are "
        "moto's counts over the phase, divided by the deliveries. Events per fetch: accounts are linked through "
        "the API; then every user asks for a refresh (`POST /bills/refresh`) after the sandbox revised one "
        "NorthGas bill of each, and once more with nothing changed; the receiver's events by type per phase.",
    ]
    return "\n".join(lines)
