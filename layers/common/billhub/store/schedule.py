"""The refresh schedule: when each account is next due, and its interval, both in its GSI1 keys.

Accounts carry GSI1PK=REFRESH#<provider>#<shard>, GSI1SK=<next_refresh_at>#<aid>#<refresh_interval> so
the planner finds due accounts without a scan, and learns each one's provider and interval from the
(keys-only) index without reading the account or its owner's profile. An account's ``refresh_interval``
attribute and the one in its GSI1SK are always written together (here, by ``store.accounts``' link and
repair, and by ``store.deletions``).

A claim or a reschedule also files the account under its shard of today's ``keys.REFRESH_SHARDS`` (in
the same write), so after the count has grown the accounts spread over the new shards as they come
due, while those not yet moved are still found below the old count.

Accounts filed before the provider was in the key (GSI1PK=REFRESH#<shard>) are still found, under those
keys, and move to their provider's the first time they are claimed (``claim_due_refresh``) or
rescheduled: no migration.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NamedTuple

from billhub import keys
from billhub.models import Account, AccountStatus, RefreshInterval
from billhub.store.base import Table, _from_item, _iso, _to_item


def _schedule_unchanged(account: Account) -> tuple[str, dict[str, Any]]:
    """A condition that holds while the account's schedule (its next refresh and interval, both in its
    GSI1SK) is still the one ``account`` was read with."""
    values = {":seen_key": keys.refresh_sk(account.account_id, account.next_refresh_at, account.refresh_interval)}
    if account.refresh_interval != "daily":
        return "GSI1SK = :seen_key", values
    # Keys written before intervals were kept end at the account id: those accounts are daily.
    values[":seen_old_key"] = keys.daily_refresh_sk_before_intervals(account.account_id, account.next_refresh_at)
    return "(GSI1SK = :seen_key OR GSI1SK = :seen_old_key)", values


# A new next refresh and interval, and the account filed under its shard of today's shard count.
_NEW_SCHEDULE = "SET next_refresh_at = :next, GSI1PK = :shard, GSI1SK = :next_key, refresh_interval = :interval"


class RefreshShard(NamedTuple):
    """One GSI1 partition of the schedule: a shard of a provider's, or (``provider`` None) of the keys
    written before the provider was in them."""

    provider: str | None
    shard: int


@dataclass(frozen=True)
class DueRefresh:
    """An account the planner found due, as the refresh index showed it."""

    user_id: str
    account_id: str
    refresh_interval: RefreshInterval
    # Its GSI1SK as read: a claim holds only while it is unchanged.
    refresh_key: str
    # The provider its key names; None when found under a key from before providers were in it (its
    # claim learns it: ``RefreshSchedule.claim_due_refresh``).
    provider: str | None = None

    @property
    def next_refresh_at(self) -> datetime:
        """When it became due (the time its GSI1SK starts with)."""
        return keys.next_refresh_of(self.refresh_key)


class RefreshSchedule(Table):
    """The accounts' next refreshes: the planner's claims, reschedules, and what is due."""

    def claim_due_refresh(self, due: DueRefresh, next_refresh_at: datetime) -> DueRefresh | None:
        """Moves the account's next refresh forward unless another planner (or a manual refresh, or a
        change of interval) already changed it since it was found due (then None); the account claimed,
        with its provider.

        The claim files the account under its provider's shard in the same write. An account found
        under a key from before providers were in it (``due.provider`` None) cannot be: the keys-only
        index does not say its provider, and an update cannot compute a key from an attribute. Its claim
        keeps it under the old kind of key (of today's count), learns the provider from the item as it
        was (``ALL_OLD``), then refiles it with a second write of its GSI1PK alone. That write is made
        once in each such account's life (it is never under an old key again), costs one write unit,
        and fails harmlessly if the schedule changed meanwhile (whatever changed it filed it anew); in
        exchange no migration is needed, and the old keys' shrinking set empties at the pace accounts
        come due (within a week, the longest interval), not at the pace their owners reschedule them.
        """
        update = self._update_account_returning(
            due.user_id,
            due.account_id,
            # The interval is set too: accounts linked before intervals were kept get theirs here.
            UpdateExpression=_NEW_SCHEDULE,
            ConditionExpression="GSI1SK = :due_key AND #status <> :deleting",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=_to_item(
                {
                    ":next": _iso(next_refresh_at),
                    ":shard": keys.refresh_shard(due.account_id, due.provider),
                    ":next_key": keys.refresh_sk(due.account_id, next_refresh_at, due.refresh_interval),
                    ":interval": due.refresh_interval,
                    ":due_key": due.refresh_key,
                    ":deleting": AccountStatus.DELETING.value,
                }
            ),
            ReturnValues="NONE" if due.provider is not None else "ALL_OLD",
        )
        if update is None:
            return None
        if due.provider is not None:
            return due
        provider = str(update["provider"])
        self._refile_with_provider(due, provider, next_refresh_at)
        return replace(due, provider=provider)

    def _refile_with_provider(self, claimed: DueRefresh, provider: str, claimed_until: datetime) -> bool:
        """Files an account claimed under a key from before providers were in it under its provider's
        shard, unless its schedule changed since the claim (then False: that change filed it)."""
        return self._update_account(
            claimed.user_id,
            claimed.account_id,
            UpdateExpression="SET GSI1PK = :filed",
            ConditionExpression="GSI1PK = :unfiled AND GSI1SK = :claimed_key",
            ExpressionAttributeValues=_to_item(
                {
                    ":filed": keys.refresh_shard(claimed.account_id, provider),
                    ":unfiled": keys.refresh_shard(claimed.account_id),
                    ":claimed_key": keys.refresh_sk(claimed.account_id, claimed_until, claimed.refresh_interval),
                }
            ),
        )

    def release_refresh_claim(self, due: DueRefresh, claimed_until: datetime) -> bool:
        """Undoes ``claim_due_refresh(due, claimed_until)`` (its fetch could not be queued): the account is
        due again as it was found, unless its schedule changed since the claim (then False)."""
        return self._update_account(
            due.user_id,
            due.account_id,
            UpdateExpression="SET next_refresh_at = :due, GSI1SK = :due_key",
            ConditionExpression="GSI1SK = :claimed_key",
            ExpressionAttributeValues=_to_item(
                {
                    ":due": _iso(due.next_refresh_at),
                    ":due_key": due.refresh_key,
                    ":claimed_key": keys.refresh_sk(due.account_id, claimed_until, due.refresh_interval),
                }
            ),
        )

    def reschedule(self, account: Account, next_refresh_at: datetime, refresh_interval: RefreshInterval) -> bool:
        """Sets the account's next refresh and interval, unless its schedule changed since ``account`` was
        read (a planner claimed it, or another request rescheduled it): then False."""
        schedule, seen = _schedule_unchanged(account)
        return self._update_account(
            account.user_id,
            account.account_id,
            UpdateExpression=_NEW_SCHEDULE,
            ConditionExpression=f"attribute_exists(PK) AND #status <> :deleting AND {schedule}",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=_to_item(
                {
                    ":next": _iso(next_refresh_at),
                    ":shard": keys.refresh_shard(account.account_id, account.provider),
                    ":next_key": keys.refresh_sk(account.account_id, next_refresh_at, refresh_interval),
                    ":interval": refresh_interval,
                    ":deleting": AccountStatus.DELETING.value,
                    **seen,
                }
            ),
        )

    def due_refreshes(self, now: datetime, shards: Iterable[RefreshShard]) -> Iterator[DueRefresh]:
        """Accounts whose next refresh is at or before ``now``, of the ``shards`` given, the longest due first.

        Each shard's index is already in that order (its GSI1SK starts with the next refresh time), so
        merging them reads one page of each shard ahead and the rest as the caller gets to it.
        """
        due = [self.due_for_refresh(shard, now) for shard in shards]
        return heapq.merge(*due, key=lambda found: found.refresh_key)

    def due_for_refresh(self, shard: RefreshShard, now: datetime) -> Iterator[DueRefresh]:
        """Accounts in ``shard`` whose next refresh is at or before ``now``, the longest due first."""
        paginator = self._client.get_paginator("query")
        for page in paginator.paginate(
            TableName=self._table,
            IndexName="GSI1",
            KeyConditionExpression="GSI1PK = :shard AND GSI1SK <= :now",
            ExpressionAttributeValues=_to_item(
                {":shard": keys.refresh_pk(shard.shard, shard.provider), ":now": keys.due_by(now)}
            ),
        ):
            for raw in page["Items"]:
                item = _from_item(raw)
                refresh_key = str(item["GSI1SK"])
                yield DueRefresh(
                    user_id=keys.user_id_of(str(item["PK"])),
                    account_id=keys.account_id_of(str(item["SK"])),
                    refresh_interval=keys.interval_of(refresh_key),
                    refresh_key=refresh_key,
                    provider=shard.provider,
                )
