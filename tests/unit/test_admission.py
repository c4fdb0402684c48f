"""The planner's hourly admissions per provider: the cap's arithmetic, from the limits the deployment holds
each provider to, and the shard work that names a provider."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from billhub.admission import ADMISSION_SHARE, Admissions, hour_of, hourly_cap, hourly_caps
from billhub.queue import ShardWork
from billhub.settings import PlannerSettings


class CountingLeases:
    """An admission store that grants what is asked up to the cap, and records each lease."""

    def __init__(self) -> None:
        self.leases: list[tuple[str, int, int, int]] = []
        self.taken = 0

    def lease(self, provider: str, hour: int, cap: int, wanted: int) -> int:
        self.leases.append((provider, hour, cap, wanted))
        granted = min(wanted, cap - self.taken)
        self.taken += granted
        return granted


def test_a_providers_hourly_cap_is_its_share_of_what_it_can_serve_in_an_hour() -> None:
    # Given NorthGas at 10 requests a second and 3 requests a refresh, 12,000 refreshes an hour at most
    # Then the schedule is admitted the share of it, 9,600, and a fraction of a refresh is never admitted
    assert ADMISSION_SHARE == 0.8
    assert hourly_cap(10, 3) == 9600
    assert hourly_cap(1, 7) == 411  # 2880 / 7 = 411.4


def test_the_caps_follow_the_published_limits_unless_the_deployment_agreed_others() -> None:
    # Given the published limits (sparkgrid 20, northgas 10, clearwater 25, fibrelink 15 a second)
    # Then each provider's cap is counted in its own requests per refresh
    assert hourly_caps() == {"sparkgrid": 19200, "northgas": 9600, "clearwater": 36000, "fibrelink": 14400}
    # And a limit agreed with a provider (PROVIDER_RATE_LIMITS) is the one its cap follows
    assert hourly_caps({"northgas": 5})["northgas"] == 4800
    assert hourly_caps({"northgas": 5})["sparkgrid"] == 19200


def test_admissions_are_leased_from_the_counter_of_the_wall_clock_hour() -> None:
    counters = CountingLeases()
    admissions = Admissions(counters, {"northgas": 12, "fibrelink": 0})
    now = datetime(2024, 3, 1, 6, 59, 59, tzinfo=UTC)
    # When a worker asks for ten, then ten more
    assert admissions.admit("northgas", now, 10) == 10
    assert admissions.admit("northgas", now, 10) == 2
    # Then both came from the counter of the hour starting at 06:00, under the provider's cap
    six = int(datetime(2024, 3, 1, 6, tzinfo=UTC).timestamp())
    assert hour_of(now) == six
    assert counters.leases == [("northgas", six, 12, 10), ("northgas", six, 12, 10)]
    # And a provider whose cap is nothing is admitted nothing, without a write
    assert admissions.admit("fibrelink", now, 10) == 0
    assert len(counters.leases) == 2


def test_shard_work_names_a_registered_provider_or_none() -> None:
    assert ShardWork.model_validate_json('{"shard": 3, "provider": "northgas"}').provider == "northgas"
    # A message from before providers were in the keys plans the keys without one
    assert ShardWork.model_validate_json('{"shard": 3}') == ShardWork(shard=3, provider=None)
    with pytest.raises(ValidationError, match="not a registered provider"):
        ShardWork(shard=3, provider="gasgiant")


def test_the_planner_reads_the_limits_agreed_with_providers() -> None:
    environ = {"TABLE_NAME": "bills", "FETCH_QUEUE_URL": "f", "PLAN_QUEUE_URL": "p"}
    assert PlannerSettings.from_environ(environ).PROVIDER_RATE_LIMITS == {}
    agreed = PlannerSettings.from_environ({**environ, "PROVIDER_RATE_LIMITS": '{"northgas": 5}'})
    assert agreed.PROVIDER_RATE_LIMITS == {"northgas": 5}
