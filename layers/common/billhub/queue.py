"""Sending fetch requests to the FetchQueue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

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
