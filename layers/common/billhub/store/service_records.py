"""The service's own records, beside the users' data: the providers' request budgets (one counter per
provider per second, leased several slots at a time), the scheduled refreshes admitted (one counter per
provider per hour, leased a batch at a time) and the alert markers (one per incident while
it is quiet, one counter per burst window). Each expires by TTL; reads never trust an expired one to be gone."""

from __future__ import annotations

from typing import Any, NamedTuple, cast

from botocore.exceptions import ClientError

from billhub import keys
from billhub.store.base import Table, _from_item, _is_conditional_failure, _to_item

# A second's counter outlives its second by this much, then TTL removes it.
BUDGET_WINDOW_TTL_SECONDS = 120
# An hour's admission counter is removed by TTL this long after its hour began (an hour after it ended).
ADMISSION_WINDOW_TTL_SECONDS = 2 * 3600


class SecondLease(NamedTuple):
    """What a lease got: ``granted`` slots of its second, and ``taken``, the second's count after it
    (every environment's slots), so a caller knows the second is full without another write."""

    granted: int
    taken: int


class _CountedLeases(Table):
    """A counter per key that concurrent leasers raise together, never past a budget."""

    def _lease_counted(
        self, key: dict[str, str], counter: str, budget: int, wanted: int, expires_at: int
    ) -> tuple[int, int]:
        """Counts up to ``wanted`` in the ``counter`` attribute of the item at ``key``, never past ``budget``:
        (what was granted, the count after it). A conditional ``ADD`` of all of them, so concurrent leasers
        never pass the budget together. When they would not all fit, the refusal carries the count as it
        was (``ALL_OLD``) and exactly the rest is leased, if any is left; each refusal shrinks the next
        lease, so this ends."""
        if wanted < 1:
            raise ValueError(f"a lease takes at least one slot, not {wanted}")
        wanted = min(wanted, budget)
        while True:
            try:
                response = self._client.update_item(
                    TableName=self._table,
                    Key=_to_item(key),
                    UpdateExpression="ADD #counter :wanted SET expires_at = :expires",
                    ConditionExpression="attribute_not_exists(#counter) OR #counter <= :most_before",
                    ExpressionAttributeNames={"#counter": counter},
                    ExpressionAttributeValues=_to_item(
                        {":wanted": wanted, ":most_before": budget - wanted, ":expires": expires_at}
                    ),
                    ReturnValues="UPDATED_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except ClientError as error:
                if not _is_conditional_failure(error):
                    raise
                item = cast("dict[str, Any]", error.response).get("Item")
                if item is None:  # the count unknown: taken as full, so at worst under the budget
                    return 0, budget
                taken = int(_from_item(item).get(counter, 0))
                wanted = budget - taken
                if wanted <= 0:
                    return 0, taken
                continue
            return wanted, int(response["Attributes"][counter]["N"])


class RequestBudgets(_CountedLeases):
    """Requests sent to each provider, counted per wall-clock second."""

    def lease(self, provider: str, second: int, budget: int, wanted: int) -> SecondLease:
        """Counts up to ``wanted`` requests in ``second``, never past ``budget`` (``_lease_counted``)."""
        granted, taken = self._lease_counted(
            {"PK": keys.rate_pk(provider), "SK": keys.rate_sk(second)},
            "requests",
            budget,
            wanted,
            second + BUDGET_WINDOW_TTL_SECONDS,
        )
        return SecondLease(granted, taken)


class AdmissionCounters(_CountedLeases):
    """Scheduled refreshes the planner admitted for each provider, counted per wall-clock hour."""

    def lease(self, provider: str, hour: int, cap: int, wanted: int) -> int:
        """Admits up to ``wanted`` refreshes in the hour starting at epoch second ``hour``, never past
        ``cap`` however many workers lease at once (``_lease_counted``); how many it admitted."""
        granted, _ = self._lease_counted(
            {"PK": keys.admission_pk(provider), "SK": keys.admission_sk(hour)},
            "admitted",
            cap,
            wanted,
            hour + ADMISSION_WINDOW_TTL_SECONDS,
        )
        return granted


class AlertMarkers(Table):
    """Which incidents were raised lately, and how many events each burst window counted."""

    def claim_incident(self, incident: str, now: int, quiet_seconds: int) -> bool:
        """True for the first raiser of ``incident`` since its last quiet period ended; False while
        another's marker holds."""
        try:
            self._client.put_item(
                TableName=self._table,
                Item=_to_item(
                    {
                        "PK": keys.alert_pk(incident),
                        "SK": keys.ALERT_SK,
                        "raised_at": now,
                        "expires_at": now + quiet_seconds,
                    }
                ),
                # TTL deletion lags by hours, so an expired marker is checked, not trusted to be gone.
                ConditionExpression="attribute_not_exists(PK) OR expires_at <= :now",
                ExpressionAttributeValues=_to_item({":now": now}),
            )
        except ClientError as error:
            if _is_conditional_failure(error):
                return False
            raise
        return True

    def count_event(self, burst: str, window: int, expires_at: int) -> int:
        """Counts one event of ``burst`` in its ``window``; returns the window's count, this one included."""
        response = self._client.update_item(
            TableName=self._table,
            Key=_to_item({"PK": keys.burst_pk(burst), "SK": keys.burst_sk(window)}),
            UpdateExpression="ADD events :one SET expires_at = :expires",
            ExpressionAttributeValues=_to_item({":one": 1, ":expires": expires_at}),
            ReturnValues="UPDATED_NEW",
        )
        return int(response["Attributes"]["events"]["N"])
