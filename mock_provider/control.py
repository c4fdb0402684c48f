"""Fault injection, rate limiting and request counting, per simulated provider."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Faults:
    latency_ms: int = 0
    jitter_ms: int = 0
    error_rate: float = 0.0  # share of requests answered 500/502/503
    outage: bool = False  # every request answered 503
    rate_limit_per_second: int = 50  # above it: 429 with Retry-After


@dataclass
class _ProviderState:
    faults: Faults = field(default_factory=Faults)
    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    per_second: Counter[int] = field(default_factory=Counter)


class Control:
    """Thread-safe state behind the admin endpoints and the per-request fault decisions."""

    def __init__(self, seed: int = 7, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._state: dict[str, _ProviderState] = defaultdict(_ProviderState)
        self._random = random.Random(seed)

    def set_faults(self, provider: str, **changes: Any) -> Faults:
        with self._lock:
            faults = self._state[provider].faults
            for key, value in changes.items():
                if not hasattr(faults, key):
                    raise ValueError(f"unknown fault {key!r}")
                setattr(faults, key, type(getattr(faults, key))(value))
            return Faults(**asdict(faults))

    def reset(self) -> None:
        with self._lock:
            self._state.clear()

    def admit(self, provider: str) -> tuple[int | None, float]:
        """Counts a request and decides its fate: (status to fail with or None, seconds to delay)."""
        now = self._clock()
        with self._lock:
            state = self._state[provider]
            state.requests += 1
            second = int(now)
            state.per_second[second] += 1
            faults = state.faults
            delay = (faults.latency_ms + self._random.randint(0, faults.jitter_ms)) / 1000
            if state.per_second[second] > faults.rate_limit_per_second:
                return 429, 0.0
            if faults.outage:
                return 503, delay
            if faults.error_rate and self._random.random() < faults.error_rate:
                return self._random.choice((500, 502, 503)), delay
            return None, delay

    def record_status(self, provider: str, status: int) -> None:
        with self._lock:
            self._state[provider].by_status[status] += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                provider: {
                    "requests": state.requests,
                    "by_status": {str(code): count for code, count in sorted(state.by_status.items())},
                    "max_requests_in_one_second": max(state.per_second.values(), default=0),
                    "faults": asdict(state.faults),
                }
                for provider, state in self._state.items()
            }
