"""Sending fetch requests to the FetchQueue, and shard workers' units of planning to the PlanQueue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field

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


class FetchQueue:
    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self._sqs = sqs
        self._url = queue_url

    def send(self, requests: Sequence[FetchRequest]) -> None:
        """Sends in batches of 10; raises ``EnqueueFailed`` unless SQS took every request, so the caller
        can answer honestly (batches before the failing one were sent)."""
        for start in range(0, len(requests), SQS_BATCH_LIMIT):
            batch = requests[start : start + SQS_BATCH_LIMIT]
            try:
                response = self._sqs.send_message_batch(
                    QueueUrl=self._url,
                    Entries=[
                        {"Id": str(index), "MessageBody": request.model_dump_json()}
                        for index, request in enumerate(batch)
                    ],
                )
            except (BotoCoreError, ClientError) as error:
                raise EnqueueFailed(
                    f"SQS could not take {len(batch)} fetch requests: {error}", requests[start:]
                ) from error
            if response.get("Failed"):
                codes = sorted({failure["Code"] for failure in response["Failed"]})
                refused = sorted(int(failure["Id"]) for failure in response["Failed"])
                unsent = [batch[index] for index in refused] + list(requests[start + SQS_BATCH_LIMIT :])
                raise EnqueueFailed(f"SQS refused {len(refused)} fetch requests: {codes}", unsent)


class ShardWork(BaseModel):
    """One shard worker's unit of work, a PlanQueue message: plan the due accounts of this shard."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shard: int = Field(ge=0, lt=keys.MAX_REFRESH_SHARDS)


class DispatchFailed(RuntimeError):
    """SQS did not take every shard's unit of work (the shards named were not queued)."""

    def __init__(self, message: str, unsent: Sequence[int]) -> None:
        super().__init__(message)
        self.unsent = list(unsent)


class PlanQueue:
    """The PlanQueue: units of planning work, one message per shard, that shard workers take."""

    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self._sqs = sqs
        self._url = queue_url

    def send(self, shards: Sequence[int]) -> None:
        """One message per shard, 10 a request; ``DispatchFailed`` unless SQS took them all."""
        for start in range(0, len(shards), SQS_BATCH_LIMIT):
            batch = shards[start : start + SQS_BATCH_LIMIT]
            try:
                response = self._sqs.send_message_batch(
                    QueueUrl=self._url,
                    Entries=[
                        {"Id": str(index), "MessageBody": ShardWork(shard=shard).model_dump_json()}
                        for index, shard in enumerate(batch)
                    ],
                )
            except (BotoCoreError, ClientError) as error:
                raise DispatchFailed(
                    f"SQS could not take {len(batch)} shards' work: {error}", shards[start:]
                ) from error
            if response.get("Failed"):
                refused = [batch[int(failure["Id"])] for failure in response["Failed"]]
                raise DispatchFailed(
                    f"SQS refused the work of shards {refused}", refused + list(shards[start + SQS_BATCH_LIMIT :])
                )
