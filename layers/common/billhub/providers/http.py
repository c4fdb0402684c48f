"""HTTP to providers: httpx with timeouts on every call, tenacity retries for what is retryable."""

from __future__ import annotations

import email.utils
import functools
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_exponential_jitter,
)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS settings httpx gives a client by default (certifi's CA bundle, or ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR``), built once per execution environment and shared by its clients (``verify=``).

    Loading the CA bundle costs about 20 ms of CPU, which every ``httpx.AsyncClient()`` paid again: a
    fetcher that builds a client per record spent a third of its CPU there. An ``SSLContext`` is safe to
    share between clients, threads and event loops; it holds no connection.
    """
    return httpx.create_ssl_context()


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    initial_wait: float = 0.2
    max_wait: float = 2.0
    # A Retry-After longer than this is not waited out inside the call: the caller defers instead.
    max_retry_after: float = 5.0
    connect_timeout: float = 2.0
    read_timeout: float = 5.0


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header as seconds (delta or HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        if parsed is None:
            return None
        return max((parsed - datetime.now(UTC)).total_seconds(), 0.0)


class _WaitHonouringRetryAfter:
    def __init__(self, policy: RetryPolicy) -> None:
        self._backoff = wait_exponential_jitter(
            multiplier=policy.initial_wait, max=policy.max_wait, jitter=policy.initial_wait
        )
        self._cap = policy.max_retry_after

    def __call__(self, state: RetryCallState) -> float:
        backoff: float = self._backoff(state)
        outcome = state.outcome
        if outcome is not None and not outcome.failed:
            asked = retry_after_seconds(outcome.result())
            if asked is not None:
                return min(max(asked, backoff), self._cap)
        return backoff


class ProviderHttp:
    """One provider API's base URL and retry policy around a shared ``httpx.AsyncClient``."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        policy: RetryPolicy | None = None,
        gate: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._client = client
        self.base_url = base_url.rstrip("/")
        self.policy = policy or RetryPolicy()
        # Awaited before every attempt, retries included: the shared request budget (ratelimit.py).
        self._gate = gate
        self.retries = 0

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Sends to ``path`` under the API's base URL with retries on timeouts, connection errors and
        429/5xx; returns the last response.

        Raises the last ``httpx.TransportError`` when every attempt failed at the transport level.
        """
        return await self.request_url(method, self.url(path), **kwargs)

    async def request_url(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """As ``request``, to an absolute URL of the same provider (its token endpoint, say), under the
        same retries and request budget."""
        policy = self.policy
        timeout = httpx.Timeout(policy.read_timeout, connect=policy.connect_timeout)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.attempts),
            wait=_WaitHonouringRetryAfter(policy),
            retry=retry_if_exception_type(httpx.TransportError)
            | retry_if_result(lambda response: response.status_code in RETRYABLE_STATUS),
            retry_error_callback=_last_response,
            before_sleep=self._count_retry,
            reraise=True,
        )
        response: httpx.Response = await retrying(self._send, method, url, timeout=timeout, **kwargs)
        return response

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if self._gate is not None:
            await self._gate()
        return await self._client.request(method, url, **kwargs)

    def _count_retry(self, state: RetryCallState) -> None:
        self.retries += 1


def _last_response(state: RetryCallState) -> httpx.Response:
    if state.outcome is None:
        raise RuntimeError("retry finished without an outcome")
    result: httpx.Response = state.outcome.result()  # re-raises the last exception, if that is what it was
    return result
