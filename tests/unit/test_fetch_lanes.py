"""One fetch lane per provider: template.yaml gives every registered provider a queue whose concurrency
its published rate limit needs, and FetchQueue sends each request to its provider's lane, saying
exactly which requests it may not have queued when SQS refuses some."""

from __future__ import annotations

import json
import math
import random
import re
from typing import Any, cast

import pytest
from botocore.exceptions import ClientError

from billhub.deferral import FetchDeferrals
from billhub.models import FetchRequest
from billhub.providers import REGISTRY
from billhub.queue import EnqueueFailed, FetchQueue

FETCHER = "FetchProviderFunction"
# The derivation in template.yaml: an invocation lasts as long as its slowest fetch (at most 3 requests
# one after another, ~0.3 s each at a provider across the internet), and at worst each fetch is one
# request, so a provider's limit in requests per second is as many fetches per second.
SLOWEST_FETCH_REQUESTS = 3
PROVIDER_LATENCY_SECONDS = 0.3
LAMBDA_MINIMUM_CONCURRENCY = 2


def needed_concurrency(limit: int, batch_size: int) -> int:
    needed = math.ceil(limit * SLOWEST_FETCH_REQUESTS * PROVIDER_LATENCY_SECONDS / batch_size)
    return max(LAMBDA_MINIMUM_CONCURRENCY, needed)


def lanes_named(variables: dict[str, Any]) -> dict[str, str]:
    """A function's FETCH_QUEUE_URLS, provider -> the logical id of the queue its ``!Sub`` names."""
    substituted = variables["FETCH_QUEUE_URLS"]["Fn::Sub"]
    return {provider: re.fullmatch(r"\$\{(\w+)\}", url)[1] for provider, url in json.loads(substituted).items()}  # type: ignore[index]


def sqs_events(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The fetcher's SQS events' properties, by the logical id of their queue."""
    events = template["Resources"][FETCHER]["Properties"]["Events"].values()
    return {
        event["Properties"]["Queue"]["Fn::GetAtt"][0]: event["Properties"] for event in events if event["Type"] == "SQS"
    }


def senders(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every function that sends fetches (it has FETCH_QUEUE_URL), by logical id: its properties."""
    return {
        logical_id: resource["Properties"]
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
        and "FETCH_QUEUE_URL" in resource["Properties"].get("Environment", {}).get("Variables", {})
    }


# ------------------------------------------------------------------ template.yaml
def test_every_registered_provider_has_a_lane_with_the_concurrency_its_published_limit_needs(
    template: dict[str, Any],
) -> None:
    lanes = lanes_named(template["Resources"][FETCHER]["Properties"]["Environment"]["Variables"])
    events = sqs_events(template)
    default = events["FetchQueue"]
    assert lanes.keys() == REGISTRY.keys()
    for provider, queue in lanes.items():
        event = events[queue]
        assert event["BatchSize"] == default["BatchSize"] == 10, provider
        assert event["MaximumBatchingWindowInSeconds"] == default["MaximumBatchingWindowInSeconds"], provider
        assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"], provider
        limit = REGISTRY[provider].requests_per_second
        needed = needed_concurrency(limit, event["BatchSize"])
        assert event["ScalingConfig"]["MaximumConcurrency"] >= needed, f"{provider} ({limit} req/s) needs {needed}"


def test_a_limit_raised_without_its_lanes_concurrency_would_fail_the_check(template: dict[str, Any]) -> None:
    # The check above is not vacuous: ClearWater at three times its limit needs more than its lane has.
    events = sqs_events(template)
    lane = lanes_named(template["Resources"][FETCHER]["Properties"]["Environment"]["Variables"])["clearwater"]
    has = events[lane]["ScalingConfig"]["MaximumConcurrency"]
    assert needed_concurrency(REGISTRY["clearwater"].requests_per_second * 3, 10) > has


def test_every_lane_is_a_queue_like_fetch_queue_redriving_to_the_fetch_dlq(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    default = resources["FetchQueue"]
    for queue in lanes_named(resources[FETCHER]["Properties"]["Environment"]["Variables"]).values():
        lane = resources[queue]
        assert lane["Type"] == "AWS::SQS::Queue"
        assert lane["Properties"] == default["Properties"], queue
        assert lane["Properties"]["RedrivePolicy"] == {
            "deadLetterTargetArn": {"Fn::GetAtt": ["FetchDLQ", "Arn"]},
            "maxReceiveCount": {"Ref": "FetchMaxReceiveCount"},
        }
        assert lane["Metadata"] == default["Metadata"], queue
    # FetchQueue stays, with its event: the lane of requests that name no provider.
    assert "FetchQueue" in sqs_events(template)


def test_every_function_that_sends_fetches_knows_every_lane_and_may_send_to_it(template: dict[str, Any]) -> None:
    functions = senders(template)
    assert functions.keys() >= {"RefreshFunction", "LinkAccountFunction", "PlannerFunction", FETCHER}
    expected = lanes_named(template["Resources"][FETCHER]["Properties"]["Environment"]["Variables"])
    for logical_id, properties in functions.items():
        assert lanes_named(properties["Environment"]["Variables"]) == expected, logical_id
        may_send_to = {
            policy["SQSSendMessagePolicy"]["QueueName"]["Fn::GetAtt"][0]
            for policy in properties["Policies"]
            if isinstance(policy, dict) and "SQSSendMessagePolicy" in policy
        }
        assert may_send_to >= {"FetchQueue", *expected.values()}, logical_id


# ------------------------------------------------------------------ FetchQueue's routing
LANES = {"sparkgrid": "https://sqs/sparkgrid", "northgas": "https://sqs/northgas"}
DEFAULT = "https://sqs/fetch"


class RecordingSqs:
    """Takes every batch, except those it is told to refuse: entry ``"1"`` of a queue in
    ``refuse_second_of``, or the whole call to a queue in ``unreachable``."""

    def __init__(self, refuse_second_of: frozenset[str] = frozenset(), unreachable: frozenset[str] = frozenset()):
        self.batches: list[tuple[str, list[str]]] = []
        self.sent: list[tuple[str, str, int]] = []
        self._refuse = refuse_second_of
        self._unreachable = unreachable

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        if QueueUrl in self._unreachable:
            raise ClientError({"Error": {"Code": "AWS.SimpleQueueService.NonExistentQueue"}}, "SendMessageBatch")
        taken = [entry for entry in Entries if not (QueueUrl in self._refuse and entry["Id"] == "1")]
        self.batches.append((QueueUrl, [json.loads(entry["MessageBody"])["account_id"] for entry in taken]))
        failed = [{"Id": "1", "SenderFault": False, "Code": "InternalError"}] if len(taken) < len(Entries) else []
        return {"Successful": [{"Id": entry["Id"]} for entry in taken], "Failed": failed}

    def send_message(self, QueueUrl: str, MessageBody: str, DelaySeconds: int) -> dict[str, Any]:
        self.sent.append((QueueUrl, json.loads(MessageBody)["account_id"], DelaySeconds))
        return {}


def request(account: str, provider: str | None) -> FetchRequest:
    return FetchRequest(user_id="u1", account_id=account, reason="schedule", provider=provider)


def queued(sqs: RecordingSqs) -> dict[str, list[str]]:
    by_queue: dict[str, list[str]] = {}
    for url, accounts in sqs.batches:
        by_queue.setdefault(url, []).extend(accounts)
    return by_queue


def test_each_request_goes_to_its_providers_lane_and_one_naming_none_or_an_unknown_one_to_the_default() -> None:
    sqs = RecordingSqs()
    requests = [
        request("s1", "sparkgrid"),
        request("n1", "northgas"),
        request("d1", None),
        request("s2", "sparkgrid"),
        request("x1", "nosuchprovider"),
    ]
    FetchQueue(cast(Any, sqs), DEFAULT, LANES).send(requests)
    assert queued(sqs) == {LANES["sparkgrid"]: ["s1", "s2"], LANES["northgas"]: ["n1"], DEFAULT: ["d1", "x1"]}


def test_without_lanes_every_request_goes_to_the_default_queue_as_before() -> None:
    sqs = RecordingSqs()
    FetchQueue(cast(Any, sqs), DEFAULT).send([request("s1", "sparkgrid"), request("d1", None)])
    assert sqs.batches == [(DEFAULT, ["s1", "d1"])]


def test_each_lanes_requests_are_sent_ten_a_batch() -> None:
    sqs = RecordingSqs()
    requests = [request(f"s{i}", "sparkgrid") for i in range(23)] + [request(f"n{i}", "northgas") for i in range(4)]
    FetchQueue(cast(Any, sqs), DEFAULT, LANES).send(requests)
    assert [(url, len(accounts)) for url, accounts in sqs.batches] == [
        (LANES["sparkgrid"], 10),
        (LANES["sparkgrid"], 10),
        (LANES["sparkgrid"], 3),
        (LANES["northgas"], 4),
    ]


def test_unsent_names_exactly_what_one_lane_refused_in_order_and_the_other_lanes_are_queued() -> None:
    # Given SQS refusing the second entry of each batch to SparkGrid's lane
    sqs = RecordingSqs(refuse_second_of=frozenset({LANES["sparkgrid"]}))
    sparkgrid = [request(f"s{i}", "sparkgrid") for i in range(12)]
    northgas = [request(f"n{i}", "northgas") for i in range(3)]
    requests = [northgas[0], *sparkgrid[:6], northgas[1], *sparkgrid[6:], northgas[2]]
    # When FetchQueue sends them
    with pytest.raises(EnqueueFailed) as failure:
        FetchQueue(cast(Any, sqs), DEFAULT, LANES).send(requests)
    # Then the refused one and every later one of that lane are unsent, in the order given ...
    assert [r.account_id for r in failure.value.unsent] == ["s1", *[f"s{i}" for i in range(10, 12)]]
    # ... and everything else was queued: the lane's first batch but the refused entry, every other lane
    assert queued(sqs) == {
        LANES["northgas"]: ["n0", "n1", "n2"],
        LANES["sparkgrid"]: ["s0", *[f"s{i}" for i in range(2, 10)]],
    }
    sent = {account for accounts in queued(sqs).values() for account in accounts}
    unsent = {r.account_id for r in failure.value.unsent}
    assert sent | unsent == {r.account_id for r in requests} and not sent & unsent


def test_an_unreachable_lane_leaves_only_its_own_requests_unsent() -> None:
    sqs = RecordingSqs(unreachable=frozenset({LANES["northgas"]}))
    requests = [request("n0", "northgas"), request("s0", "sparkgrid"), request("d0", None), request("n1", "northgas")]
    with pytest.raises(EnqueueFailed) as failure:
        FetchQueue(cast(Any, sqs), DEFAULT, LANES).send(requests)
    assert [r.account_id for r in failure.value.unsent] == ["n0", "n1"]
    assert queued(sqs) == {LANES["sparkgrid"]: ["s0"], DEFAULT: ["d0"]}


def test_a_deferred_fetch_goes_back_to_its_providers_lane() -> None:
    sqs = RecordingSqs()
    deferrals = FetchDeferrals(cast(Any, sqs), DEFAULT, random.Random(1), lanes=LANES)
    assert deferrals.defer(request("n0", "northgas"), 10)
    assert deferrals.defer(request("d0", None), 10)
    assert [(url, account) for url, account, _ in sqs.sent] == [(LANES["northgas"], "n0"), (DEFAULT, "d0")]
