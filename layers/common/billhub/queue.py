"""Sending fetch requests to their provider's fetch lane (or the default FetchQueue), and shard
workers' units of planning to the PlanQueue."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from billhub import keys
from billhub.models import FetchRequest

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

SQS_BATCH_LIMIT = 10


class EnqueueFailed(RuntimeError):
    """SQS did not take every fetch request: it refused some, or could not be reached.

    ``unsent``: the requests that may not be queued, in the order they were given; every other one was
    queued. Within one lane these are the ones SQS refused or the failed call carried, and every later
    one of that lane; another lane's requests are sent whatever became of this one's.
    """

    def __init__(self, message: str, unsent: Sequence[FetchRequest] = ()) -> None:
        super().__init__(message)
        self.unsent = list(unsent)


class _NotAllSent(Exception):
    def __init__(self, reason: str, unsent: list[Any]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unsent = unsent


def _send_in_batches[Item](sqs: SQSClient, queue_url: str, items: Sequence[Item], body: Callable[[Item], str]) -> None:
    """One message per item, 10 a request, in order; ``_NotAllSent`` with the items that may not be
    queued (those SQS refused or that the failed call carried, and every later one) unless SQS took all."""
    for start in range(0, len(items), SQS_BATCH_LIMIT):
        batch = items[start : start + SQS_BATCH_LIMIT]
        later = list(items[start + SQS_BATCH_LIMIT :])
        try:
            response = sqs.send_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(index), "MessageBody": body(item)} for index, item in enumerate(batch)],
            )
        except (BotoCoreError, ClientError) as error:
            raise _NotAllSent(f"SQS could not take {len(batch)} messages: {error}", [*batch, *later]) from error
        if response.get("Failed"):
            codes = sorted({failure["Code"] for failure in response["Failed"]})
            refused = sorted(int(failure["Id"]) for failure in response["Failed"])
            unsent = [batch[index] for index in refused] + later
            raise _NotAllSent(f"SQS refused {len(refused)} messages: {codes}", unsent)


class FetchLanes:
    """Which queue a fetch goes to: its provider's lane, or the default FetchQueue.

    One lane per provider, because a batch of fetches takes as long as its slowest provider's: mixed in
    one queue, a provider with spare budget waits on the busiest one's rate limit. The default lane
    takes what names no provider, or one without a lane (messages sent before the lanes existed, a
    provider added to the registry before the template).
    """

    def __init__(self, default_url: str, lanes: Mapping[str, str] | None = None) -> None:
        self.default_url = default_url
        self.lanes = dict(lanes or {})

    def url_for(self, provider: str | None) -> str:
        return self.lanes.get(provider, self.default_url) if provider is not None else self.default_url


class FetchQueue:
    """The fetch lanes, as one sender: each request to its provider's lane (``FetchLanes``)."""

    def __init__(self, sqs: SQSClient, queue_url: str, lanes: Mapping[str, str] | None = None) -> None:
        self._sqs = sqs
        self._lanes = FetchLanes(queue_url, lanes)

    def send(self, requests: Sequence[FetchRequest]) -> None:
        """Sends each lane's requests in batches of 10; raises ``EnqueueFailed`` unless SQS took every
        request, naming exactly the ones it may not have queued, so the caller can answer honestly.

        A lane that fails does not stop the others: their requests are queued still, and so are not
        among ``unsent``.
        """
        by_lane: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            by_lane.setdefault(self._lanes.url_for(request.provider), []).append(index)
        failures: list[_NotAllSent] = []
        for url, indexes in by_lane.items():
            try:
                _send_in_batches(self._sqs, url, indexes, lambda index: requests[index].model_dump_json())
            except _NotAllSent as failure:
                failures.append(failure)
        if failures:
            unsent = sorted(index for failure in failures for index in failure.unsent)
            reasons = "; ".join(failure.reason for failure in failures)
            raise EnqueueFailed(f"fetch requests: {reasons}", [requests[index] for index in unsent]) from failures[0]


def _registered_provider(name: str | None) -> str | None:
    # Imported here: the registry's adapters are needed only once a message names a provider.
    from billhub.providers import REGISTRY

    if name is not None and name not in REGISTRY:
        raise ValueError(f"'{name}' is not a registered provider")
    return name


class ShardWork(BaseModel):
    """One shard worker's unit of work, a PlanQueue message: plan the due accounts of this shard of this
    provider's schedule; without a provider (as every message was before providers were in the keys),
    of the keys written before."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shard: int = Field(ge=0, lt=keys.MAX_REFRESH_SHARDS)
    provider: Annotated[str | None, AfterValidator(_registered_provider)] = None


class DispatchFailed(RuntimeError):
    """SQS did not take every shard's unit of work (the units named were not queued)."""

    def __init__(self, message: str, unsent: Sequence[ShardWork]) -> None:
        super().__init__(message)
        self.unsent = list(unsent)


class PlanQueue:
    """The PlanQueue: units of planning work, one message per shard, that shard workers take."""

    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self._sqs = sqs
        self._url = queue_url

    def send(self, work: Sequence[ShardWork]) -> None:
        """One message per unit of work, 10 a request; ``DispatchFailed`` unless SQS took them all."""
        try:
            # A legacy shard's message stays {"shard": n}, as every message was before providers.
            _send_in_batches(self._sqs, self._url, work, lambda unit: unit.model_dump_json(exclude_none=True))
        except _NotAllSent as failure:
            raise DispatchFailed(f"shards' work: {failure.reason}", failure.unsent) from failure
