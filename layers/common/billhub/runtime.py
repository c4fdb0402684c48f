"""Cold-start plumbing shared by the handlers: AWS clients with sane timeouts, and the clock.

boto3 honours ``AWS_ENDPOINT_URL``, so the same code talks to AWS, to moto locally, or to LocalStack.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config

_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})


def aws_client(service: str) -> Any:
    return boto3.session.Session().client(service, config=_CONFIG)  # type: ignore[call-overload]


def utc_now() -> datetime:
    return datetime.now(UTC)
