"""The reminder schedule: when each user's daily reminder is next due, in their profile's GSI1 keys.

A profile carries GSI1PK=REMIND#<shard>, GSI1SK=<next_reminder_at>#<uid> (and ``next_reminder_at``), set
in the write that creates it (``Users.create_user``), or, for a profile from before the reminders, at
its next login (``Users.file_for_reminders``). The reminders function finds the due ones per shard on
the (keys-only) index, and claims each by moving its next reminder forward with a conditional update,
so two runs never remind a user twice. A user deleting themselves has their GSI1 moved to
``DELETING_USERS``: that takes them off this schedule, and every write here is conditional on the
profile's GSI1SK (or on no ``deleting_since``), so nothing files them again.

The claim also keeps, on the profile, which bills have had their ``bill.due_soon`` and ``bill.overdue``
announced (``reminded_due_soon``, ``reminded_overdue``: a short digest of each bill id, so 50 accounts'
open bills stay a few KB of the profile), so each event is published once per bill, not every day.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from billhub import keys
from billhub.models import Preferences
from billhub.store.base import Table, _from_item, _is_conditional_failure, _iso, _retrying_conflicts, _to_item


def reminder_filing(user_id: str, next_reminder_at: datetime | None) -> dict[str, Any]:
    """The attributes that file a profile on the reminder schedule at ``next_reminder_at`` (none if None)."""
    if next_reminder_at is None:
        return {}
    return {
        "next_reminder_at": _iso(next_reminder_at),
        "GSI1PK": keys.reminder_shard(user_id),
        "GSI1SK": keys.reminder_sk(user_id, next_reminder_at),
    }


@dataclass(frozen=True)
class DueReminder:
    """A profile found due on the reminder index."""

    user_id: str
    # Its GSI1SK as read: a claim holds only while it is unchanged.
    reminder_key: str


@dataclass(frozen=True)
class ReminderProfile:
    """What a reminder needs of a profile: where to send it, the user's preferences, and the marks of
    the bills already announced, per kind."""

    user_id: str
    email: str
    preferences: Preferences
    reminded_due_soon: frozenset[str]
    reminded_overdue: frozenset[str]


class ReminderSchedule(Table):
    """The profiles' reminder schedule: what is due, the profile a reminder reads, and its claim."""

    def due_reminders(self, now: datetime, shards: Iterable[int]) -> Iterator[DueReminder]:
        """Profiles whose reminder is due at or before ``now``, shard after shard, each the longest due first."""
        paginator = self._client.get_paginator("query")
        for shard in shards:
            for page in paginator.paginate(
                TableName=self._table,
                IndexName="GSI1",
                KeyConditionExpression="GSI1PK = :shard AND GSI1SK <= :now",
                ExpressionAttributeValues=_to_item(
                    {":shard": keys.remind_pk(shard), ":now": keys.reminder_due_by(now)}
                ),
            ):
                for raw in page["Items"]:
                    item = _from_item(raw)
                    yield DueReminder(user_id=keys.user_id_of(str(item["PK"])), reminder_key=str(item["GSI1SK"]))

    def reminder_profile(self, user_id: str) -> ReminderProfile | None:
        """The profile as a reminder reads it; None once the user is gone or being deleted."""
        response = self._client.get_item(
            TableName=self._table,
            Key=_to_item({"PK": keys.user_pk(user_id), "SK": keys.PROFILE_SK}),
            ProjectionExpression="email, preferences, deleting_since, reminded_due_soon, reminded_overdue",
            ConsistentRead=True,
        )
        if "Item" not in response:
            return None
        item = _from_item(response["Item"])
        if "deleting_since" in item:
            return None
        return ReminderProfile(
            user_id=user_id,
            email=str(item["email"]),
            preferences=Preferences.model_validate(item["preferences"]),
            reminded_due_soon=frozenset(str(mark) for mark in item.get("reminded_due_soon", [])),
            reminded_overdue=frozenset(str(mark) for mark in item.get("reminded_overdue", [])),
        )

    def reschedule_reminder(self, user_id: str, next_reminder_at: datetime) -> bool:
        """Sets the user's next reminder to ``next_reminder_at`` (filing a profile from before the
        reminders too); False if the user is gone or being deleted (nothing written)."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key=_to_item({"PK": keys.user_pk(user_id), "SK": keys.PROFILE_SK}),
                UpdateExpression="SET next_reminder_at = :next, GSI1PK = :shard, GSI1SK = :next_key",
                ConditionExpression="attribute_exists(PK) AND attribute_not_exists(deleting_since)",
                ExpressionAttributeValues=_to_item(
                    {
                        ":next": _iso(next_reminder_at),
                        ":shard": keys.reminder_shard(user_id),
                        ":next_key": keys.reminder_sk(user_id, next_reminder_at),
                    }
                ),
            )
        except ClientError as error:
            if _is_conditional_failure(error):
                return False
            raise
        return True

    def claim_reminder(
        self,
        due: DueReminder,
        next_reminder_at: datetime,
        reminded_due_soon: Iterable[str],
        reminded_overdue: Iterable[str],
    ) -> bool:
        """Moves the user's next reminder to ``next_reminder_at`` (filed under their shard of today's
        count) and records the bills announced, unless another run claimed it since it was found due,
        or the user began deleting themselves (then False, nothing written)."""
        try:
            _retrying_conflicts(
                lambda: self._client.update_item(
                    TableName=self._table,
                    Key=_to_item({"PK": keys.user_pk(due.user_id), "SK": keys.PROFILE_SK}),
                    UpdateExpression="SET next_reminder_at = :next, GSI1PK = :shard, GSI1SK = :next_key, "
                    "reminded_due_soon = :due_soon, reminded_overdue = :overdue",
                    ConditionExpression="GSI1SK = :due_key AND attribute_not_exists(deleting_since)",
                    ExpressionAttributeValues=_to_item(
                        {
                            ":next": _iso(next_reminder_at),
                            ":shard": keys.reminder_shard(due.user_id),
                            ":next_key": keys.reminder_sk(due.user_id, next_reminder_at),
                            ":due_soon": sorted(reminded_due_soon),
                            ":overdue": sorted(reminded_overdue),
                            ":due_key": due.reminder_key,
                        }
                    ),
                ),
                f"user {due.user_id} kept changing while their reminder was claimed",
            )
        except ClientError as error:
            if _is_conditional_failure(error):
                return False
            raise
        return True
