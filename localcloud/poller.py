"""A local stand-in for Lambda's SQS event source mapping.

Receives up to ``BatchSize`` messages (waiting up to ``MaximumBatchingWindowInSeconds`` to fill a
batch), invokes the function with an SQS event, deletes what succeeded and leaves failed records
for the queue to redeliver, so they reach the DLQ through the queue's own redrive policy. With
``retry_delay`` set, failed records become visible again after that many seconds instead of the
queue's full visibility timeout, so retries happen within a local session.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from localcloud.runtime import FunctionRuntime, InvocationError
from localcloud.stopping import sleep_unless_stopped
from localcloud.template import QueueBinding

logger = logging.getLogger("localcloud.poller")


class QueuePoller:
    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        binding: QueueBinding,
        runtime: FunctionRuntime,
        region: str,
        retry_delay: int | None,
    ) -> None:
        self._sqs = sqs
        self._url = queue_url
        self._arn = queue_arn
        self._binding = binding
        self._runtime = runtime
        self._region = region
        self._retry_delay = retry_delay
        self._stopping = threading.Event()
        self.batches = 0

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                messages = self._receive_batch()
                if messages:
                    self._deliver(messages)
            except Exception:
                if self._stopping.is_set():
                    # The local cloud is stopping: what was received and not deleted comes back later.
                    logger.debug("poller on %s stopped mid-batch", self._url, exc_info=True)
                    return
                logger.exception("poller error on %s", self._url)
                sleep_unless_stopped(self._stopping, 1)

    def stop(self) -> None:
        self._stopping.set()

    def _receive_batch(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + self._binding.batching_window_seconds
        while len(messages) < self._binding.batch_size and not self._stopping.is_set():
            received = self._sqs.receive_message(
                QueueUrl=self._url,
                MaxNumberOfMessages=min(self._binding.batch_size - len(messages), 10),
                WaitTimeSeconds=1 if not messages else 0,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            messages.extend(received)
            if not messages or time.monotonic() >= deadline or not received:
                break
        return messages

    def _deliver(self, messages: list[dict[str, Any]]) -> None:
        event = {"Records": [self._record(message) for message in messages]}
        self.batches += 1
        try:
            result = self._runtime.invoke(event)
        except InvocationError:
            if not self._stopping.is_set():
                logger.exception("batch of %d failed as a whole", len(messages))
            failed_ids = {message["MessageId"] for message in messages}
        else:
            failures = (result or {}).get("batchItemFailures", []) if self._binding.report_batch_item_failures else []
            failed_ids = {failure["itemIdentifier"] for failure in failures}
        succeeded = [message for message in messages if message["MessageId"] not in failed_ids]
        for start in range(0, len(succeeded), 10):
            self._sqs.delete_message_batch(
                QueueUrl=self._url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                    for index, message in enumerate(succeeded[start : start + 10])
                ],
            )
        if self._retry_delay is not None:
            for message in messages:
                if message["MessageId"] in failed_ids:
                    self._sqs.change_message_visibility(
                        QueueUrl=self._url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=self._retry_delay
                    )

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": message.get("MessageAttributes", {}),
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self._arn,
            "awsRegion": self._region,
        }


class Schedule:
    """Fires an EventBridge ``Scheduled Event`` at a function every ``period`` seconds."""

    def __init__(self, runtime: FunctionRuntime, rule_name: str, period: float, region: str) -> None:
        self._runtime = runtime
        self._rule = rule_name
        self._period = period
        self._region = region
        self._stopping = threading.Event()
        self.fired = 0

    def run(self) -> None:
        while not sleep_unless_stopped(self._stopping, self._period):
            self.fire()

    def fire(self) -> Any:
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "123456789012",
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self._region,
            "resources": [f"arn:aws:events:{self._region}:123456789012:rule/{self._rule}"],
            "detail": {},
        }
        self.fired += 1
        try:
            return self._runtime.invoke(event)
        except InvocationError:
            if not self._stopping.is_set():
                logger.exception("scheduled run of %s failed", self._rule)
            return None

    def stop(self) -> None:
        self._stopping.set()
