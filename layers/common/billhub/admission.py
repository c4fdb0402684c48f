"""Admission of scheduled refreshes, per provider and hour: how a provider whose accounts outgrow what
it can serve in a day degrades to a longer interval in order, never to a backlog.

A provider serves at most ``limit x 86,400 / requests_per_refresh`` refreshes a day. Without a cap the
planner would claim and enqueue every due account all the same: the fetch queue would grow without
bound and which accounts waited would be chance. So each hour admits at most a share of what the
provider can serve in it; a shard worker leases admissions for each batch before it claims it, from a
counter every worker of that provider shares (``store.service_records.AdmissionCounters``), and stops
when they are spent. The accounts it leaves stay due, where they were; the next hour takes them first,
as the index keeps them longest due first. The interval stretches for everyone alike, in order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from billhub.store.protocols import AdmissionStore

# The share of a provider's capacity in an hour that the schedule may take; the rest is headroom for what
# is never admitted: first fetches of new links, manual refreshes, repairs, and retries.
ADMISSION_SHARE = 0.8
SECONDS_PER_HOUR = 3600


def hourly_cap(requests_per_second: int, requests_per_refresh: int) -> int:
    """Scheduled refreshes a provider at ``requests_per_second`` admits in an hour, at
    ``requests_per_refresh`` requests each: ``floor(limit x 3600 x ADMISSION_SHARE / requests_per_refresh)``."""
    return math.floor(requests_per_second * SECONDS_PER_HOUR * ADMISSION_SHARE / requests_per_refresh)


def hourly_caps(agreed_limits: Mapping[str, int] | None = None) -> dict[str, int]:
    """Each registered provider's hourly cap, at the rate limit the deployment holds it to (the same
    limits ``ratelimit.ProviderRateLimiter`` enforces: published, or agreed in PROVIDER_RATE_LIMITS)."""
    from billhub.providers import REGISTRY
    from billhub.ratelimit import provider_limits

    limits = provider_limits(agreed_limits)
    return {name: hourly_cap(limits[name], adapter.requests_per_refresh) for name, adapter in REGISTRY.items()}


def hour_of(now: datetime) -> int:
    """The epoch second the wall-clock hour of ``now`` starts at: the counter it is admitted against."""
    return math.floor(now.timestamp()) // SECONDS_PER_HOUR * SECONDS_PER_HOUR


@dataclass(frozen=True)
class Admissions:
    """The providers' hourly caps over the counters every planner shares."""

    counters: AdmissionStore
    caps: Mapping[str, int]

    @classmethod
    def for_registered_providers(
        cls, counters: AdmissionStore, agreed_limits: Mapping[str, int] | None = None
    ) -> Admissions:
        return cls(counters, hourly_caps(agreed_limits))

    def admit(self, provider: str, now: datetime, wanted: int) -> int:
        """Admits up to ``wanted`` scheduled refreshes of ``provider`` in the hour of ``now``: how many
        (0 once the hour's cap is spent, by this worker or any other)."""
        cap = self.caps[provider]
        if cap < 1:
            return 0
        return self.counters.lease(provider, hour_of(now), cap, wanted)
