"""Fetch metrics per provider, as CloudWatch embedded metric format (Powertools Metrics).

Each provider gets its own document with a ``provider`` dimension, flushed once per batch, so a
batch of ten fetches writes at most four metric lines rather than forty.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit


@dataclass
class _ProviderCounts:
    fetches: int = 0
    succeeded: int = 0
    failed: int = 0
    deferred: int = 0
    needs_reauth: int = 0
    retries: int = 0
    latencies_ms: list[float] = field(default_factory=list)


_COUNT_METRICS = {
    "Fetches": "fetches",
    "FetchSucceeded": "succeeded",
    "FetchFailed": "failed",
    "FetchDeferred": "deferred",
    "FetchNeedsReauth": "needs_reauth",
    "FetchRetries": "retries",
}


class FetchMetrics:
    def __init__(self, namespace: str | None = None, service: str | None = None) -> None:
        # None: Powertools reads POWERTOOLS_METRICS_NAMESPACE and POWERTOOLS_SERVICE_NAME.
        self._namespace = namespace
        self._service = service
        self._counts: defaultdict[str, _ProviderCounts] = defaultdict(_ProviderCounts)

    def record(self, provider: str, outcome: str, latency_ms: float, retries: int) -> None:
        counts = self._counts[provider]
        counts.fetches += 1
        counts.retries += retries
        counts.latencies_ms.append(latency_ms)
        if outcome in ("succeeded", "failed", "deferred", "needs_reauth"):
            setattr(counts, outcome, getattr(counts, outcome) + 1)

    def flush(self) -> None:
        for provider, counts in self._counts.items():
            metrics = EphemeralMetrics(namespace=self._namespace, service=self._service)
            metrics.add_dimension(name="provider", value=provider)
            for name, value in _COUNT_METRICS.items():
                metrics.add_metric(name=name, unit=MetricUnit.Count, value=getattr(counts, value))
            for latency in counts.latencies_ms:
                metrics.add_metric(name="FetchLatency", unit=MetricUnit.Milliseconds, value=latency)
            metrics.flush_metrics()
        self._counts.clear()
