"""Fault injection, rate limiting and request counting, per simulated provider.

One ``Control`` belongs to one sandbox app; tests build their own (with a fake clock, start-up faults)
and pass it to ``create_app`` so they can steer and inspect the server they talk to.
"""

from __future__ import annotations

import enum
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

# The simulated providers and each one's default allowance of requests per wall-clock second.
PROVIDER_RATE_LIMITS: Mapping[str, int] = MappingProxyType(
    {"sparkgrid": 20, "northgas": 10, "clearwater": 25, "fibrelink": 15}
)


@dataclass(frozen=True)
class Faults:
    """One provider's misbehaviour. ``float`` fields are shares of requests (0..1); ``int`` fields are >= 0."""

    latency_ms: int = 0
    jitter_ms: int = 0  # plus random(0..jitter_ms) on top of latency_ms
    error_rate: float = 0.0  # answered 500/502/503
    outage: bool = False  # every request answered 503
    rate_limit_per_second: int = 50  # above it: 429 with Retry-After; per provider see PROVIDER_RATE_LIMITS
    retry_after_seconds: int = 1  # the Retry-After sent with every 429
    storm_429: bool = False  # every request answered 429
    timeout_rate: float = 0.0  # hang hang_ms, then 504
    hang_ms: int = 10_000
    malformed_rate: float = 0.0  # 200s from data endpoints get a broken or wrong-shaped body
    auth_failure: bool = False  # data endpoints refuse every credential, as if revoked
    token_ttl_seconds: int = 3600  # lifetime of access tokens issued from now on
    rotate_refresh_tokens: bool = True  # a refresh returns a new refresh token and retires the old one
    # Length of the access and refresh tokens issued from now on: real providers' tokens (JWTs) run to
    # kilobytes, and the service must store the longest it accepts (4,096 characters each).
    token_chars: int = 43

    def updated(self, changes: Mapping[str, Any]) -> Faults:
        """A copy with ``changes`` applied; ValueError names the first unknown fault or bad value."""
        current = {spec.name: getattr(self, spec.name) for spec in fields(self)}
        checked: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in current:
                raise ValueError(f"unknown fault {name!r}")
            checked[name] = _checked_value(name, value, type(current[name]))
        return replace(self, **checked)


def _checked_value(name: str, value: object, kind: type) -> object:
    # JSON booleans are ints to Python, so bool is told apart explicitly both ways.
    if kind is bool:
        if isinstance(value, bool):
            return value
        expected = "true or false"
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        expected = "an integer >= 0"
    else:
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
            return float(value)
        expected = "a number from 0 to 1"
    raise ValueError(f"fault {name!r} must be {expected}, not {value!r}")


def default_faults(provider: str) -> Faults:
    if provider not in PROVIDER_RATE_LIMITS:
        raise ValueError(f"unknown provider {provider!r}")
    return Faults(rate_limit_per_second=PROVIDER_RATE_LIMITS[provider])


@dataclass(frozen=True)
class Admission:
    """What the fault layer does with one request before (or instead of) serving it."""

    failure: int | None = None  # answer with this status instead of serving
    delay_seconds: float = 0.0  # wait before answering (never before a 429)
    hang_seconds: float = 0.0  # wait this long before a 504
    retry_after_seconds: int = 1  # sent with a 429


class Malformation(enum.Enum):
    """How a 200 body is broken; alternates so a client meets both kinds."""

    TRUNCATED = "truncated"  # not JSON at all
    WRONG_SHAPE = "wrong_shape"  # valid JSON, wrong document


# How many of the latest wall-clock seconds keep their own request count (for throughput benchmarks).
SECONDS_KEPT = 900


@dataclass
class _Traffic:
    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    second: int = -1
    in_second: int = 0
    max_in_one_second: int = 0
    malformed: int = 0
    by_second: dict[int, int] = field(default_factory=dict)

    def count(self, second: int) -> None:
        self.requests += 1
        if second != self.second:
            self.second, self.in_second = second, 0
            self.by_second.pop(second - SECONDS_KEPT, None)
        self.in_second += 1
        self.by_second[second] = self.in_second
        self.max_in_one_second = max(self.max_in_one_second, self.in_second)


class Control:
    """Thread-safe state behind the admin fault endpoints and the per-request fault decisions.

    ``clock`` also drives token expiry, so tests can move time without sleeping; ``startup_faults``
    (``{provider: {fault: value}}``) are applied at once and again by every reset.
    """

    def __init__(
        self,
        seed: int = 7,
        clock: Callable[[], float] = time.time,
        *,
        startup_faults: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self._seed = seed
        self._clock = clock
        self._lock = threading.Lock()
        startup = {provider: default_faults(provider) for provider in PROVIDER_RATE_LIMITS}
        for provider, changes in (startup_faults or {}).items():
            startup[provider] = default_faults(provider).updated(changes)
        self._startup: Mapping[str, Faults] = MappingProxyType(startup)
        self._faults = dict(self._startup)
        self._traffic = {provider: _Traffic() for provider in PROVIDER_RATE_LIMITS}
        self._random = random.Random(seed)

    def now(self) -> float:
        return self._clock()

    def faults(self, provider: str) -> Faults:
        with self._lock:
            return self._faults[provider]

    def set_faults(self, provider: str, /, **changes: Any) -> Faults:
        """Merges ``changes`` into the provider's faults (all or nothing) and returns the result."""
        with self._lock:
            if provider not in self._faults:
                raise ValueError(f"unknown provider {provider!r}")
            self._faults[provider] = self._faults[provider].updated(changes)
            return self._faults[provider]

    def reset(self) -> None:
        """Back to the start-up faults with empty counters and the original random sequence."""
        with self._lock:
            self._faults = dict(self._startup)
            self._traffic = {provider: _Traffic() for provider in PROVIDER_RATE_LIMITS}
            self._random = random.Random(self._seed)

    def reset_counters(self) -> None:
        """Empty counters; faults, tokens and everything else stay as they are."""
        with self._lock:
            self._traffic = {provider: _Traffic() for provider in PROVIDER_RATE_LIMITS}

    def admit(self, provider: str) -> Admission:
        """Counts a request and decides its fate, in the documented order: rate limit, storm, delay,
        outage, timeout, error."""
        second = int(self._clock())
        with self._lock:
            faults = self._faults[provider]
            traffic = self._traffic[provider]
            traffic.count(second)
            if traffic.in_second > faults.rate_limit_per_second or faults.storm_429:
                return Admission(failure=429, retry_after_seconds=faults.retry_after_seconds)
            delay = (faults.latency_ms + self._random.randint(0, faults.jitter_ms)) / 1000
            if faults.outage:
                return Admission(failure=503, delay_seconds=delay)
            if self._happens(faults.timeout_rate):
                return Admission(failure=504, delay_seconds=delay, hang_seconds=faults.hang_ms / 1000)
            if self._happens(faults.error_rate):
                return Admission(failure=self._random.choice((500, 502, 503)), delay_seconds=delay)
            return Admission(delay_seconds=delay)

    def malformation(self, provider: str) -> Malformation | None:
        """Whether to break this 200 data answer, and how (truncated first, then wrong shape, ...)."""
        with self._lock:
            if not self._happens(self._faults[provider].malformed_rate):
                return None
            traffic = self._traffic[provider]
            traffic.malformed += 1
            return Malformation.TRUNCATED if traffic.malformed % 2 else Malformation.WRONG_SHAPE

    def record_status(self, provider: str, status: int) -> None:
        with self._lock:
            self._traffic[provider].by_status[status] += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                provider: {
                    "requests": traffic.requests,
                    "by_status": {str(code): count for code, count in sorted(traffic.by_status.items())},
                    "max_requests_in_one_second": traffic.max_in_one_second,
                    "requests_by_second": {str(second): n for second, n in sorted(traffic.by_second.items())},
                    "faults": asdict(self._faults[provider]),
                }
                for provider, traffic in self._traffic.items()
            }

    def _happens(self, share: float) -> bool:
        return share > 0 and self._random.random() < share
