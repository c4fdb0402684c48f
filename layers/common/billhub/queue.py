"""Sending fetch requests to the FetchQueue, and shard workers' units of planning to the PlanQueue."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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

    ``unsent``: the requests that may not be queued (those SQS refused or that the failed call
    carried, and every later one), in order; the ones before them were queued.
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


class FetchQueue:
    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self._sqs = sqs
        self._url = queue_url

    def send(self, requests: Sequence[FetchRequest]) -> None:
        """Sends in batches of 10; raises ``EnqueueFailed`` unless SQS took every request, so the caller
        can answer honestly (batches before the failing one were sent)."""
        try:
            _send_in_batches(self._sqs, self._url, requests, FetchRequest.model_dump_json)
        except _NotAllSent as failure:
            raise EnqueueFailed(f"fetch requests: {failure.reason}", failure.unsent) from failure


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
