"""Sending fetch requests to the FetchQueue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from billhub.models import FetchRequest

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

SQS_BATCH_LIMIT = 10


class FetchQueue:
    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self._sqs = sqs
        self._url = queue_url

    def send(self, requests: Sequence[FetchRequest]) -> None:
        """Sends in batches of 10; raises if SQS refused any entry, so the caller can answer honestly."""
        for start in range(0, len(requests), SQS_BATCH_LIMIT):
            batch = requests[start : start + SQS_BATCH_LIMIT]
            response = self._sqs.send_message_batch(
                QueueUrl=self._url,
                Entries=[
                    {"Id": str(index), "MessageBody": request.model_dump_json()} for index, request in enumerate(batch)
                ],
            )
            if response.get("Failed"):
                codes = sorted({failure["Code"] for failure in response["Failed"]})
                raise RuntimeError(f"SQS refused {len(response['Failed'])} fetch requests: {codes}")
