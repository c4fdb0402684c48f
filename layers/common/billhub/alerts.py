"""Alerts to the operators on SNS ``AdminAlerts``: one per incident, not one per message.

An incident has a key (``circuit-open#sparkgrid``); the first raiser wins a conditional write of its
marker (``store.service_records.AlertMarkers``) that lasts the incident's quiet period, and only the
winner publishes. Bursts (many
credential failures at one provider) are counted per time window, and the event that reaches the
threshold raises the incident, once.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from billhub.store.protocols import AlertMarkerStore

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

# SNS refuses a Subject of 100 characters or more, or one that is not printable ASCII, starts with
# whitespace or holds a line break (Publish, "Subject"); the full subject is in the message anyway.
SUBJECT_MAX_CHARS = 99
_ELLIPSIS = "..."


def sns_subject(subject: str) -> str:
    """``subject`` as SNS takes it: printable ASCII (line breaks and tabs become spaces, anything else
    ``?``), no leading or trailing whitespace, under 100 characters (cut with an ellipsis)."""
    ascii_only = "".join(char if " " <= char <= "~" else " " if char.isspace() else "?" for char in subject).strip()
    if len(ascii_only) > SUBJECT_MAX_CHARS:
        ascii_only = ascii_only[: SUBJECT_MAX_CHARS - len(_ELLIPSIS)].rstrip() + _ELLIPSIS
    return ascii_only or "billhub alert"


class AdminAlerts:
    def __init__(
        self,
        sns: SNSClient,
        topic_arn: str,
        markers: AlertMarkerStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sns = sns
        self._topic = topic_arn
        self._markers = markers
        self._clock = clock

    def raise_once(self, incident: str, subject: str, details: dict[str, object], quiet_seconds: int = 3600) -> bool:
        """Publishes unless the same incident was raised within ``quiet_seconds``; True if published."""
        if not self._markers.claim_incident(incident, int(self._clock()), quiet_seconds):
            return False
        self._sns.publish(
            TopicArn=self._topic,
            Subject=sns_subject(subject),
            Message=json.dumps({"incident": incident, "subject": subject, **details}, default=str),
            MessageAttributes={"incident": {"DataType": "String", "StringValue": incident}},
        )
        return True

    def count_towards(self, burst: str, threshold: int, window_seconds: int) -> bool:
        """Counts one event of a burst in the current window; True for exactly the event that
        reaches ``threshold`` (the caller then raises the incident)."""
        window = math.floor(self._clock() / window_seconds)
        return self._markers.count_event(burst, window, expires_at=(window + 2) * window_seconds) == threshold
