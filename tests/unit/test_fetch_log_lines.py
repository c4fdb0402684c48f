"""The fetcher's log lines keep what identifies the invocation and the fetch, not what its log group says."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from typing import Any

from aws_lambda_powertools import Logger

from billhub.fetch_recorder import LOG_KEYS_DROPPED, FetchLogFormatter


class Context:
    function_name = "billhub-FetchProviderFunction-AbCdEf123456"
    memory_limit_in_mb = 512
    invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
    aws_request_id = "3f2a0c1e-5b7d-4c1a-9e8f-0a1b2c3d4e5f"


def logged_line(formatter: FetchLogFormatter | None) -> dict[str, Any]:
    stream = io.StringIO()
    service = f"fetch-log-{uuid.uuid4().hex}"  # a logger of its own: Powertools keeps one per service
    logger = Logger(service=service, level="INFO", stream=stream, logger_formatter=formatter)
    child = Logger(service=service, level="INFO", child=True)

    @logger.inject_lambda_context
    def handler(event: dict[str, Any], context: Any) -> None:
        async def fetch() -> None:  # a batch's fetches are asyncio tasks
            child.info("fetched bills", extra={"account_id": "a1", "provider": "clearwater", "bills": 24})

        asyncio.run(fetch())

    handler({}, Context())
    line: dict[str, Any] = json.loads(stream.getvalue())
    return line


def test_a_fetch_line_leaves_out_what_the_log_group_and_report_already_say() -> None:
    # Given Powertools' own line, with the invocation's context injected
    default = logged_line(None)
    assert set(default) >= LOG_KEYS_DROPPED
    # When the fetcher's formatter writes the same line
    line = logged_line(FetchLogFormatter())
    # Then those keys are gone, and everything else is as Powertools wrote it
    assert not LOG_KEYS_DROPPED & set(line)
    kept = {key: value for key, value in default.items() if key not in LOG_KEYS_DROPPED}
    assert line.keys() == kept.keys()
    assert line["function_request_id"] == Context.aws_request_id
    assert (line["account_id"], line["provider"], line["bills"]) == ("a1", "clearwater", 24)
    assert len(json.dumps(line)) < len(json.dumps(default)) - 150
