"""Putting a fetch off without it counting as a failure.

A record that fails goes back to the queue and its receive count moves towards the dead-letter queue;
a fetch that merely has to wait (the provider's budget is spent, its circuit is open) must not. So a
deferred fetch is sent again as a new, delayed message and the original is reported done. If the
function dies between the two, the fetch runs twice, which the conditional writes make harmless.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import TYPE_CHECKING

from billhub.models import FetchRequest
from billhub.queue import FetchLanes

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

MIN_DELAY_SECONDS = 5
MAX_DELAY_SECONDS = 900  # SQS's limit
# After this many deferrals the fetch gives up until the next scheduled refresh.
MAX_DEFERRALS = 30


class FetchDeferrals:
    """Sends a deferred fetch back to its provider's lane (``FetchLanes``), or the default FetchQueue
    when the request names no provider."""

    def __init__(
        self,
        sqs: SQSClient,
        queue_url: str,
        rng: random.Random | None = None,
        lanes: Mapping[str, str] | None = None,
    ) -> None:
        self._sqs = sqs
        self._lanes = FetchLanes(queue_url, lanes)
        self._random = rng or random.Random()  # jitter, not secrecy

    def defer(self, request: FetchRequest, wait_seconds: float) -> bool:
        """Sends the fetch again after about ``wait_seconds`` (jittered, so deferred fetches do not
        return together); False when it was deferred too often already."""
        if request.deferrals >= MAX_DEFERRALS:
            return False
        jitter = self._random.uniform(0, max(wait_seconds, MIN_DELAY_SECONDS))
        delay = int(min(max(wait_seconds, MIN_DELAY_SECONDS) + jitter, MAX_DELAY_SECONDS))
        later = request.model_copy(update={"deferrals": request.deferrals + 1})
        self._sqs.send_message(
            QueueUrl=self._lanes.url_for(later.provider), MessageBody=later.model_dump_json(), DelaySeconds=delay
        )
        return True
