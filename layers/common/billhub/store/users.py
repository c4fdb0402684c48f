"""Users: each one's profile (password hash, preferences, when they last refreshed by hand) and the guard
that keeps an email to one user. Their deletion is ``billhub.store``'s (it spans their every item)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from botocore.exceptions import ClientError

from billhub import keys
from billhub.models import Preferences, RefreshInterval, User
from billhub.store.base import Table, _from_item, _is_conditional_failure, _iso, _retrying_conflicts, _to_item
from billhub.store.errors import AlreadyExists, ItemMissing
from billhub.store.reminders import reminder_filing


class Users(Table):
    """Profiles and email guards: who may sign in, and what they prefer."""

    def create_user(self, user: User, password_hash: str) -> None:
        """``AlreadyExists`` if the email is another user's (or the user id is taken). A user with a
        ``next_reminder_at`` is filed on the reminder schedule in the same write (``store.reminders``)."""
        profile = _to_item(
            {
                **reminder_filing(user.user_id, user.next_reminder_at),
                "PK": keys.user_pk(user.user_id),
                "SK": keys.PROFILE_SK,
                "type": "user",
                "user_id": user.user_id,
                "email": user.email,
                "password_hash": password_hash,
                "created_at": _iso(user.created_at),
                "preferences": user.preferences.model_dump(),
                # Linked accounts, kept by the link and the deletion transactions: the cap's count.
                "account_count": 0,
            }
        )
        email = _to_item(
            {"PK": keys.email_pk(user.email), "SK": keys.EMAIL_SK, "type": "email", "user_id": user.user_id}
        )
        try:
            self._retried.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": email,
                            "ConditionExpression": "attribute_not_exists(PK)",
                        }
                    },
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": profile,
                            "ConditionExpression": "attribute_not_exists(PK)",
                        }
                    },
                ]
            )
        except ClientError as error:
            if _is_conditional_failure(error):
                raise AlreadyExists(f"email of user {user.user_id} is registered already") from error
            raise

    def file_for_reminders(self, user_id: str, next_reminder_at: datetime) -> bool:
        """Files a profile from before the reminders on their schedule, at ``next_reminder_at``; False
        (nothing written) if it is filed already, gone, or being deleted: a profile being deleted is
        never filed again (its GSI1 is the deletion sweep's)."""
        try:
            self._retried.update_item(
                TableName=self._table,
                Key=_to_item({"PK": keys.user_pk(user_id), "SK": keys.PROFILE_SK}),
                UpdateExpression="SET next_reminder_at = :next, GSI1PK = :shard, GSI1SK = :key",
                ConditionExpression="attribute_exists(PK) AND attribute_not_exists(deleting_since) "
                "AND attribute_not_exists(next_reminder_at)",
                ExpressionAttributeValues=_to_item(
                    {
                        ":next": _iso(next_reminder_at),
                        ":shard": keys.reminder_shard(user_id),
                        ":key": keys.reminder_sk(user_id, next_reminder_at),
                    }
                ),
            )
        except ClientError as error:
            if _is_conditional_failure(error):
                return False
            raise
        return True

    def user_id_for_email(self, email: str) -> str | None:
        item = self._get(keys.email_pk(email), keys.EMAIL_SK)
        return str(item["user_id"]) if item else None

    def get_user(self, user_id: str) -> tuple[User, str] | None:
        """The user and their password hash, also while they are being deleted (``User.deleting_since``):
        a repeated ``DELETE /me`` checks the password against it."""
        item = self._get(keys.user_pk(user_id), keys.PROFILE_SK, consistent=True)
        if item is None:
            return None
        return User.model_validate(item), str(item["password_hash"])

    def update_preferences(self, user_id: str, preferences: Preferences) -> None:
        """``ItemMissing`` once the user is gone or being deleted."""
        try:
            self._retried.update_item(
                TableName=self._table,
                Key=_to_item({"PK": keys.user_pk(user_id), "SK": keys.PROFILE_SK}),
                UpdateExpression="SET preferences = :preferences",
                ConditionExpression="attribute_exists(PK) AND attribute_not_exists(deleting_since)",
                ExpressionAttributeValues=_to_item({":preferences": preferences.model_dump()}),
            )
        except ClientError as error:
            if _is_conditional_failure(error):
                raise ItemMissing(f"user {user_id}") from error
            raise

    def preferences(self, user_id: str) -> Preferences:
        """The user's preferences (and nothing else of the profile); ``ItemMissing`` once the user is
        gone or being deleted."""
        response = self._client.get_item(
            TableName=self._table,
            Key=_to_item({"PK": keys.user_pk(user_id), "SK": keys.PROFILE_SK}),
            ProjectionExpression="preferences, deleting_since",
            ConsistentRead=True,
        )
        item = _from_item(response["Item"]) if "Item" in response else None
        if item is None or "deleting_since" in item:
            raise ItemMissing(f"user {user_id}")
        return Preferences.model_validate(item["preferences"])

    def preferred_refresh_interval(self, user_id: str) -> RefreshInterval:
        return self.preferences(user_id).refresh_interval

    def start_manual_refresh(self, user_id: str, now: datetime, min_interval: timedelta) -> datetime | None:
        """Records that the user starts a manual refresh at ``now``, unless their previous one was less
        than ``min_interval`` ago: then nothing is recorded and the time of that previous one returned.
        ``ItemMissing`` once the user is gone or being deleted.

        One conditional write, so of two requests at the same moment only one can start.
        """
        try:
            _retrying_conflicts(
                lambda: self._client.update_item(
                    TableName=self._table,
                    Key=_to_item({"PK": keys.user_pk(user_id), "SK": keys.PROFILE_SK}),
                    UpdateExpression="SET last_manual_refresh_at = :now",
                    ConditionExpression="attribute_exists(PK) AND attribute_not_exists(deleting_since) "
                    "AND (attribute_not_exists(last_manual_refresh_at) OR last_manual_refresh_at <= :earliest)",
                    ExpressionAttributeValues=_to_item({":now": _iso(now), ":earliest": _iso(now - min_interval)}),
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                ),
                f"user {user_id} kept changing while their manual refresh started",
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise
            # The profile as it was, which ReturnValuesOnConditionCheckFailure puts beside the error.
            profile = cast("dict[str, Any]", error.response).get("Item")
            if profile is None or "deleting_since" in profile:
                raise ItemMissing(f"user {user_id}") from error
            return datetime.fromisoformat(str(_from_item(profile)["last_manual_refresh_at"]))
        return None

    def forget_manual_refresh(self, user_id: str, started_at: datetime) -> None:
        """Undoes ``start_manual_refresh`` at ``started_at`` (its fetches could not be queued), unless a
        later one was recorded meanwhile."""
        try:
            self._retried.update_item(
                TableName=self._table,
                Key=_to_item({"PK": keys.user_pk(user_id), "SK": keys.PROFILE_SK}),
                UpdateExpression="REMOVE last_manual_refresh_at",
                ConditionExpression="last_manual_refresh_at = :started",
                ExpressionAttributeValues=_to_item({":started": _iso(started_at)}),
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise
