"""Deletions: an account's (hidden at once, its bills removed in batches, then the account itself with a
marker) and a user's (every item of theirs, the profile and email guard last), each safe to repeat and
found by the planner's sweep when nobody finished it.

An account being deleted moves to GSI1PK=DELETING, GSI1SK=<deleting_since>#<uid>#<aid>; a user deleting
themselves has their profile at GSI1PK=DELETING_USERS, GSI1SK=<deleting_since>#<uid>.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
)

from billhub import keys
from billhub.models import Account, AccountStatus, LoginSubject, User
from billhub.store.base import (
    _JITTERED_BACK_OFF,
    BATCH_WRITE_LIMIT,
    Table,
    _chunks,
    _condition_failed_at,
    _from_item,
    _is_conditional_failure,
    _is_transaction_conflict,
    _iso,
    _to_item,
)
from billhub.store.errors import BillsLeftBehind, ConcurrentUpdate
from billhub.store.sign_in import login_attempts_key

BATCH_ATTEMPTS = 8
DELETE_ATTEMPTS = 3
DELETED_MARKER_TTL_SECONDS = 7 * 24 * 3600


class _LostRace(Exception):
    """An attempt lost to a concurrent change (its cause says which) and may be sent again; ``at_once``
    when it already adjusted to that change, so nothing is to be waited for."""

    def __init__(self, at_once: bool = False) -> None:
        super().__init__()
        self.at_once = at_once


def _retrying_deletion[T](attempt: Callable[[], T], gave_up: str) -> T:
    """``attempt()``, sent again while it raises ``_LostRace`` (after a jittered pause, unless at once);
    ``ConcurrentUpdate(gave_up)`` from the last race's cause once ``DELETE_ATTEMPTS`` ran out. Any
    other error is raised as it is."""

    def pause(state: RetryCallState) -> float:
        lost = state.outcome.exception() if state.outcome else None
        return 0 if isinstance(lost, _LostRace) and lost.at_once else _JITTERED_BACK_OFF(state)

    try:
        return Retrying(
            stop=stop_after_attempt(DELETE_ATTEMPTS),
            wait=pause,
            retry=retry_if_exception_type(_LostRace),
            reraise=True,
        )(attempt)
    except _LostRace as lost:
        raise ConcurrentUpdate(gave_up) from lost.__cause__


class Deletions(Table):
    """What both deletions share: batch deletes that outlast throttling, and the sweep's entries."""

    def _delete_batch(self, item_keys: list[dict[str, Any]]) -> None:
        """Deletes up to 25 items, sending again what DynamoDB left unprocessed (throttled) after a
        growing pause; ``BillsLeftBehind`` if some are still left after ``BATCH_ATTEMPTS``."""
        requests: Any = [{"DeleteRequest": {"Key": _to_item(key)}} for key in item_keys]

        def send_unprocessed() -> Any:
            nonlocal requests
            response = self._client.batch_write_item(RequestItems={self._table: requests})
            requests = response.get("UnprocessedItems", {}).get(self._table, [])
            return requests

        Retrying(
            stop=stop_after_attempt(BATCH_ATTEMPTS),
            wait=wait_exponential(multiplier=0.05, max=1.0),
            retry=retry_if_result(bool),
            retry_error_callback=lambda _: None,  # what is left is raised below
        )(send_unprocessed)
        if requests:
            raise BillsLeftBehind(f"{len(requests)} bills could not be deleted yet; the next attempt finishes")

    def _sweep_entries(self, sweep_key: str, started_before: datetime) -> Iterator[dict[str, Any]]:
        """The items filed under a deletion sweep's GSI1 partition whose deletion began before ``started_before``."""
        paginator = self._client.get_paginator("query")
        for page in paginator.paginate(
            TableName=self._table,
            IndexName="GSI1",
            KeyConditionExpression="GSI1PK = :sweep AND GSI1SK < :before",
            ExpressionAttributeValues=_to_item({":sweep": sweep_key, ":before": keys.deleting_before(started_before)}),
        ):
            for raw in page["Items"]:
                yield _from_item(raw)


class AccountDeletions(Deletions):
    """Deleting an account: hidden and unlinked at once, its bills in batches, then the account."""

    def begin_account_deletion(self, user_id: str, account_id: str, now: datetime) -> Account | None:
        """Hides the account from every read, destroys its credentials, frees its provider account to
        be linked again and stops its refreshes, in one transaction; every later write to it or to its
        bills (a fetch in flight included) is refused from then on. Returns the account, or None if it
        is not the user's (or is already gone). Safe to repeat: an account already being deleted is
        returned as it is."""

        def begin() -> Account | None:
            key = {"PK": keys.user_pk(user_id), "SK": keys.account_sk(account_id)}
            item = self._get(key["PK"], key["SK"], consistent=True)
            if item is None:
                return None
            account = Account.model_validate(item)
            if item["status"] == AccountStatus.DELETING.value:
                return account
            link_key = item.get("link_key")
            values = {
                ":deleting": AccountStatus.DELETING.value,
                ":now": _iso(now),
                ":sweep": keys.DELETING_ACCOUNTS,
                ":since": keys.deleting_account_sk(now, user_id, account_id),
            }
            marked: Any = {
                "Update": {
                    "TableName": self._table,
                    "Key": _to_item(key),
                    # The sweep finds deletions nobody finished under GSI1PK=DELETING.
                    "UpdateExpression": "SET #status = :deleting, deleting_since = :now, GSI1PK = :sweep, "
                    "GSI1SK = :since REMOVE credentials",
                    # The link read must still be the account's: a first fetch confirming the account's
                    # identity meanwhile moves it, and its new guard would outlive the account.
                    "ConditionExpression": "attribute_exists(PK) AND "
                    + ("link_key = :seen_link" if link_key else "attribute_not_exists(link_key)"),
                    "ExpressionAttributeNames": {"#status": "status"},
                    "ExpressionAttributeValues": _to_item({**values, **({":seen_link": link_key} if link_key else {})}),
                }
            }
            writes = [marked]
            if link_key:
                writes.append(
                    {
                        "Delete": {
                            "TableName": self._table,
                            "Key": _to_item({"PK": key["PK"], "SK": str(link_key)}),
                            "ConditionExpression": "attribute_not_exists(PK) OR account_id = :account",
                            "ExpressionAttributeValues": _to_item({":account": account_id}),
                        }
                    }
                )
            try:
                self._client.transact_write_items(TransactItems=writes)
            except ClientError as error:
                if not (_is_conditional_failure(error) or _is_transaction_conflict(error)):
                    raise
                # Changed (or deleted) by a concurrent request between the read and the write.
                raise _LostRace from error
            return account.model_copy(update={"status": AccountStatus.DELETING})

        return _retrying_deletion(begin, f"account {account_id} kept changing while its deletion began")

    def remove_account_bills(self, account: Account) -> int:
        """Deletes every bill of an account being deleted, 25 per batch (DynamoDB's limit); returns how
        many. Each delete is idempotent, so a repeat after a crash simply finds fewer."""
        removed = 0
        bill_keys = self._query_prefix(
            account.user_id,
            keys.account_bills_prefix(account.provider, account.account_id),
            ProjectionExpression="PK, SK",
        )
        for batch in _chunks(list(bill_keys), BATCH_WRITE_LIMIT):
            self._delete_batch(batch)
            removed += len(batch)
        return removed

    def finish_account_deletion(self, account: Account, now: datetime) -> None:
        """Removes the (bill-less) account and leaves a short-lived marker, so a repeated DELETE can
        tell an account it deleted from one that never was the caller's."""
        key = {"PK": keys.user_pk(account.user_id), "SK": keys.account_sk(account.account_id)}
        marker = {
            "PK": key["PK"],
            "SK": keys.deleted_sk(account.account_id),
            "type": "deleted_account",
            "deleted_at": _iso(now),
            "expires_at": int(now.timestamp()) + DELETED_MARKER_TTL_SECONDS,
        }
        writes: Any = [
            {
                "Delete": {
                    "TableName": self._table,
                    "Key": _to_item(key),
                    "ConditionExpression": "#status = :deleting",
                    "ExpressionAttributeNames": {"#status": "status"},
                    "ExpressionAttributeValues": _to_item({":deleting": AccountStatus.DELETING.value}),
                }
            },
            {"Put": {"TableName": self._table, "Item": _to_item(marker)}},
            {
                # The owner's count of linked accounts, once: only the attempt that deletes the account
                # gets past the condition above.
                "Update": {
                    "TableName": self._table,
                    "Key": _to_item({"PK": key["PK"], "SK": keys.PROFILE_SK}),
                    "UpdateExpression": "SET account_count = account_count - :one",
                    "ConditionExpression": "account_count > :zero",
                    "ExpressionAttributeValues": _to_item({":one": 1, ":zero": 0}),
                }
            },
        ]

        def remove() -> None:
            nonlocal writes
            try:
                self._client.transact_write_items(TransactItems=writes)
            except ClientError as error:
                if _condition_failed_at(error, 0):
                    return  # another attempt finished it first
                if _condition_failed_at(error, 2):
                    writes = writes[:2]  # a profile from before the count (or gone): nothing to count down
                    raise _LostRace(at_once=True) from error
                if not _is_transaction_conflict(error):
                    raise
                raise _LostRace from error

        _retrying_deletion(remove, f"account {account.account_id} could not be removed; the next attempt finishes it")

    def was_deleted(self, user_id: str, account_id: str) -> bool:
        return self._get(keys.user_pk(user_id), keys.deleted_sk(account_id), consistent=True) is not None

    def unfinished_deletions(self, started_before: datetime) -> Iterator[tuple[str, str]]:
        """(user id, account id) of deletions started before ``started_before`` and never finished."""
        for item in self._sweep_entries(keys.DELETING_ACCOUNTS, started_before):
            yield keys.user_id_of(str(item["PK"])), keys.account_id_of(str(item["SK"]))

    def account_being_deleted(self, user_id: str, account_id: str) -> Account | None:
        item = self._get(keys.user_pk(user_id), keys.account_sk(account_id), consistent=True)
        if item is None or item["status"] != AccountStatus.DELETING.value:
            return None
        return Account.model_validate(item)


class UserDeletions(Deletions):
    """Deleting a user (after their accounts): every item of theirs, the profile and email guard last."""

    def begin_user_deletion(self, user_id: str, now: datetime) -> None:
        """Marks the user as being deleted and files them where the planner's sweep finds unfinished
        deletions. From then on nothing new can be linked to them (or start an OAuth2 link, or refresh),
        and their profile reads as gone; the profile itself, password hash included, stays until the
        very end, so a repeated ``DELETE /me`` can check the password and finish. Repeating it keeps the
        time of the first attempt."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key=_to_item({"PK": keys.user_pk(user_id), "SK": keys.PROFILE_SK}),
                UpdateExpression="SET deleting_since = :now, GSI1PK = :sweep, GSI1SK = :since",
                ConditionExpression="attribute_exists(PK) AND attribute_not_exists(deleting_since)",
                ExpressionAttributeValues=_to_item(
                    {
                        ":now": _iso(now),
                        ":sweep": keys.DELETING_USERS,
                        ":since": keys.deleting_user_sk(now, user_id),
                    }
                ),
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise
            # Already being deleted (a retry, or the sweep), or already gone.

    def remove_user_items(self, user_id: str, email: str) -> int:
        """Deletes everything of the user's but their profile and email guard, 25 per batch; returns how
        many items. Run after their accounts are deleted: what is left in their partition (deleted-account
        markers, refresh jobs, OAuth2 state pointers, whatever else is filed there), the OAuth2 states
        those pointers name, their ``Idempotency-Key`` records and the failed sign-in counter of their
        email. The items outside the partition go in batches before any of the partition's, so a crash
        never leaves a state that no pointer names. Each delete is idempotent."""
        outside: list[dict[str, Any]] = []
        inside: list[dict[str, Any]] = []
        for item in self._query(
            KeyConditionExpression="PK = :pk",
            ExpressionAttributeValues=_to_item({":pk": keys.user_pk(user_id)}),
            ProjectionExpression="PK, SK",
        ):
            sort_key = str(item["SK"])
            if sort_key == keys.PROFILE_SK:
                continue
            inside.append({"PK": item["PK"], "SK": sort_key})
            state = keys.oauth_state_pk_named_by(sort_key)
            if state is not None:
                outside.append({"PK": state, "SK": keys.OAUTH_STATE_SK})
        outside.extend(
            {"PK": item["PK"], "SK": item["SK"]}
            for item in self._query(
                KeyConditionExpression="PK = :pk",
                ExpressionAttributeValues=_to_item({":pk": keys.idempotency_pk(user_id)}),
                ProjectionExpression="PK, SK",
            )
        )
        outside.append(_from_item(login_attempts_key(LoginSubject.email(email))))
        for batch in [*_chunks(outside, BATCH_WRITE_LIMIT), *_chunks(inside, BATCH_WRITE_LIMIT)]:
            self._delete_batch(batch)
        return len(outside) + len(inside)

    def finish_user_deletion(self, user_id: str, email: str) -> None:
        """Removes the profile and the email's uniqueness guard together, the last of the user's items:
        from then on their tokens are refused and the email can register again, as a new user."""
        profile: Any = {
            "Delete": {
                "TableName": self._table,
                "Key": _to_item({"PK": keys.user_pk(user_id), "SK": keys.PROFILE_SK}),
                "ConditionExpression": "attribute_exists(deleting_since)",
            }
        }
        guard: Any = {
            "Delete": {
                "TableName": self._table,
                "Key": _to_item({"PK": keys.email_pk(email), "SK": keys.EMAIL_SK}),
                # Only their own: the guard is never another user's while this profile exists, but a
                # deletion must not be the way to free someone else's email.
                "ConditionExpression": "attribute_not_exists(PK) OR user_id = :user",
                "ExpressionAttributeValues": _to_item({":user": user_id}),
            }
        }

        def remove() -> None:
            try:
                self._client.transact_write_items(TransactItems=[profile, guard])
            except ClientError as error:
                if _condition_failed_at(error, 0):
                    return  # another attempt finished it first
                if _condition_failed_at(error, 1):
                    # The email is someone else's: the profile goes alone.
                    self._delete_profile_being_deleted(user_id)
                    return
                if not _is_transaction_conflict(error):
                    raise
                raise _LostRace from error

        _retrying_deletion(remove, f"user {user_id} could not be removed; the next attempt finishes it")

    def _delete_profile_being_deleted(self, user_id: str) -> None:
        try:
            self._client.delete_item(
                TableName=self._table,
                Key=_to_item({"PK": keys.user_pk(user_id), "SK": keys.PROFILE_SK}),
                ConditionExpression="attribute_exists(deleting_since)",
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise

    def unfinished_user_deletions(self, started_before: datetime) -> Iterator[str]:
        """Ids of users whose deletion started before ``started_before`` and never finished."""
        for item in self._sweep_entries(keys.DELETING_USERS, started_before):
            yield keys.user_id_of(str(item["PK"]))

    def user_being_deleted(self, user_id: str) -> User | None:
        item = self._get(keys.user_pk(user_id), keys.PROFILE_SK, consistent=True)
        if item is None or "deleting_since" not in item:
            return None
        return User.model_validate(item)
