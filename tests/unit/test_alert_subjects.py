"""SNS refuses a Subject that is 100 characters or longer, not ASCII, or holds a line break: an alert's
subject is made safe before it is published, whatever a provider is called."""

from __future__ import annotations

import json
from typing import Any

import pytest

from billhub.alerts import SUBJECT_MAX_CHARS, AdminAlerts, sns_subject


class _RecordingSns:
    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    def publish(self, **request: Any) -> dict[str, str]:
        self.published.append(request)
        return {"MessageId": "m1"}


class _FirstRaiserWins:
    """Alert markers where every incident is new and every burst at its first event."""

    def claim_incident(self, incident: str, now: int, quiet_seconds: int) -> bool:
        return True

    def count_event(self, burst: str, window: int, expires_at: int) -> int:
        return 1


def _acceptable_to_sns(subject: str) -> bool:
    return 0 < len(subject) < 100 and subject.isascii() and subject.isprintable() and not subject[0].isspace()


def test_a_subject_naming_a_200_character_non_ascii_provider_is_published_under_100_ascii_characters() -> None:
    sns = _RecordingSns()
    alerts = AdminAlerts(sns, "arn:aws:sns:us-east-1:123456789012:alerts", _FirstRaiserWins(), clock=lambda: 0)  # type: ignore[arg-type]
    provider = "Énergie Électrique du Québec " * 7  # 203 characters, some of them not ASCII
    subject = f"Credential failures at {provider[:200]}"
    assert alerts.raise_once("credentials#eeq", subject, {"provider": "eeq"})
    (published,) = sns.published
    assert len(published["Subject"]) == SUBJECT_MAX_CHARS
    assert _acceptable_to_sns(published["Subject"])
    assert published["Subject"].startswith("Credential failures at ?nergie ?lectrique du Qu?bec")
    assert published["Subject"].endswith("...")
    # The whole subject still reaches the operators, in the message.
    assert json.loads(published["Message"])["subject"] == subject


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("x" * 99, "x" * 99),  # at the bound: kept whole
        ("x" * 100, "x" * 96 + "..."),  # SNS refuses 100
        ("  sparkgrid circuit opened", "sparkgrid circuit opened"),  # must not start with whitespace
        ("sparkgrid\ncircuit\r\nopened\t", "sparkgrid circuit  opened"),  # no line breaks
        ("sparkgrid\x00\x1b\x7f", "sparkgrid???"),  # nor control characters
        ("\u2603 \u00e9", "? ?"),
        ("", "billhub alert"),
        ("\n", "billhub alert"),
    ],
)
def test_subjects_are_cut_and_cleaned_for_sns(subject: str, expected: str) -> None:
    assert sns_subject(subject) == expected
    assert _acceptable_to_sns(sns_subject(subject))
