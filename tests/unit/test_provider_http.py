"""Retries with backoff for what is retryable only, honouring Retry-After."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from billhub.providers.http import ProviderHttp, RetryPolicy, retry_after_seconds

FAST = RetryPolicy(attempts=3, initial_wait=0.001, max_wait=0.002, max_retry_after=0.01)


def run(
    responses: list[Callable[[httpx.Request], httpx.Response]], policy: RetryPolicy = FAST
) -> tuple[httpx.Response, int, ProviderHttp]:
    calls = iter(responses)
    seen = 0

    def transport(request: httpx.Request) -> httpx.Response:
        nonlocal seen
        seen += 1
        return next(calls)(request)

    async def go() -> tuple[httpx.Response, ProviderHttp]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(transport)) as client:
            http = ProviderHttp(client, "http://provider.test", policy)
            return await http.request("GET", "/bills"), http

    response, http = asyncio.run(go())
    return response, seen, http


def status(code: int, headers: dict[str, str] | None = None) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(code, headers=headers, json={})


def test_server_errors_are_retried_until_success() -> None:
    response, calls, http = run([status(503), status(502), status(200)])
    assert response.status_code == 200
    assert calls == 3
    assert http.retries == 2


def test_client_errors_are_not_retried() -> None:
    response, calls, _ = run([status(401), status(200)])
    assert response.status_code == 401
    assert calls == 1


def test_retries_are_bounded_and_the_last_answer_returned() -> None:
    response, calls, _ = run([status(500), status(500), status(500), status(200)])
    assert response.status_code == 500
    assert calls == 3


def test_timeouts_are_retried_then_raised() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(httpx.ReadTimeout):
        run([timeout, timeout, timeout])
    response, calls, _ = run([timeout, status(200)])
    assert (response.status_code, calls) == (200, 2)


def test_retry_after_is_read_as_seconds_or_http_date() -> None:
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "3"})) == 3.0
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    assert retry_after_seconds(httpx.Response(429)) is None


def test_rate_limited_call_waits_as_told_then_succeeds() -> None:
    response, calls, _ = run([status(429, {"Retry-After": "0"}), status(200)])
    assert (response.status_code, calls) == (200, 2)
