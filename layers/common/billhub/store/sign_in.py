"""Sign-in checks: the login throttle's counters, and whether a token's user still exists (the authorizer).

Items: ``keys.login_attempts_pk(subject)``  WINDOW  {attempts, expires_at}: one fixed window per subject,
expiring by TTL; reads ignore an expired one, since DynamoDB deletes expired items only eventually.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from botocore.exceptions import ClientError

from billhub import keys
from billhub.models import LoginSubject
from billhub.store.base import Table, _from_item, _is_conditional_failure, _to_item
from billhub.store.errors import ConcurrentUpdate

_LOGIN_WRITE_ATTEMPTS = 3


def login_attempts_key(subject: LoginSubject) -> dict[str, Any]:
    """The typed key of ``subject``'s counter (a user's deletion removes their email's)."""
    return _to_item({"PK": keys.login_attempts_pk(subject), "SK": keys.LOGIN_ATTEMPTS_SK})


class SignInChecks(Table):
    """The failed sign-in counters of emails and source IPs, and the authorizer's check of a profile."""

    def take_login_attempt(
        self, subject: LoginSubject, limit: int, window: timedelta, now: datetime
    ) -> datetime | None:
        """Counts one login attempt against ``subject`` (the email typed, or the caller's source IP),
        unless ``limit`` attempts were counted in its current window: then nothing is counted and the
        moment that window ends is returned. An attempt after a window ended (or the first) opens one
        of ``window``.

        Conditional writes only, so concurrent attempts can never exceed the limit together.
        """
        key = login_attempts_key(subject)
        moment = int(now.timestamp())
        # Not a retry with backoff (nothing transient to wait out, so no tenacity policy): a pass ends
        # only when a conditional write lost a race to another attempt, and the next acts on what it left.
        for _ in range(_LOGIN_WRITE_ATTEMPTS):
            try:
                self._client.update_item(
                    TableName=self._table,
                    Key=key,
                    UpdateExpression="SET attempts = attempts + :one",
                    ConditionExpression="expires_at > :now AND attempts < :limit",
                    ExpressionAttributeValues=_to_item({":one": 1, ":now": moment, ":limit": limit}),
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
                return None
            except ClientError as error:
                if not _is_conditional_failure(error):
                    raise
                held = cast("dict[str, Any]", error.response).get("Item")
                if held is not None:
                    window_ends = int(_from_item(held)["expires_at"])
                    if window_ends > moment:
                        return datetime.fromtimestamp(window_ends, UTC)
            try:  # no window yet, or it is over: this attempt opens a new one
                self._client.put_item(
                    TableName=self._table,
                    Item={**key, **_to_item({"attempts": 1, "expires_at": moment + int(window.total_seconds())})},
                    ConditionExpression="attribute_not_exists(PK) OR expires_at <= :now",
                    ExpressionAttributeValues=_to_item({":now": moment}),
                )
                return None
            except ClientError as error:
                if not _is_conditional_failure(error):
                    raise
                # Another attempt opened the window first: count against it.
        raise ConcurrentUpdate(f"login attempts of {subject.kind} kept changing")

    def refund_login_attempt(self, subject: LoginSubject, now: datetime) -> None:
        """Uncounts one attempt ``take_login_attempt`` counted in the current window (it was not a failure)."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key=login_attempts_key(subject),
                UpdateExpression="SET attempts = attempts - :one",
                ConditionExpression="expires_at > :now AND attempts >= :one",
                ExpressionAttributeValues=_to_item({":one": 1, ":now": int(now.timestamp())}),
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise

    def clear_login_attempts(self, subject: LoginSubject) -> None:
        self._client.delete_item(TableName=self._table, Key=login_attempts_key(subject))

    def user_exists(self, user_id: str) -> bool:
        """Whether the user's profile exists: a keys-only, eventually consistent read (half a read unit).
        A profile being deleted still exists until the deletion's last step."""
        response = self._client.get_item(
            TableName=self._table,
            Key=_to_item({"PK": keys.user_pk(user_id), "SK": keys.PROFILE_SK}),
            ProjectionExpression="PK",
        )
        return "Item" in response
