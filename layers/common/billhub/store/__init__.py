"""All access to the single DynamoDB table: its items, conditions and transactions live in this package
only, one repository per aggregate (``users``, ``bills``, ``schedule``, ``jobs``, ``oauth_states``,
``sign_in``) over the helpers of ``base``; the formats of their keys (and every prefix) in
``billhub/keys.py``, whose table lists every item; what each holds, and which module holds it, is in
docs/data-model.md.

``BillsTable`` composes the repositories and delegates to them, so the domain keeps one object while it
moves to the ``Protocol``s of ``protocols``; it still holds the accounts and the deletions itself.

An account being deleted moves to GSI1PK=DELETING, GSI1SK=<deleting_since>#<uid>#<aid>, where the
planner's sweep finds deletions nobody finished; a user deleting themselves has their profile at
GSI1PK=DELETING_USERS, GSI1SK=<deleting_since>#<uid> for the same. (Where an account sits in GSI1
while it is not being deleted: ``schedule``.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from billhub import keys
from billhub.errors import Conflict, NotFound, TooManyAccounts
from billhub.models import (
    MAX_ACCOUNTS_PER_USER,
    Account,
    AccountStatus,
    Bill,
    JobAccountResult,
    LoginSubject,
    Preferences,
    RefreshInterval,
    RefreshJob,
    User,
)
from billhub.store.base import (
    BATCH_WRITE_LIMIT,
    CONFLICT_ATTEMPTS,
    AccountGone,
    BillsLeftBehind,
    ConcurrentUpdate,
    Table,
    _back_off,
    _chunks,
    _condition_failed_at,
    _from_item,
    _is_conditional_failure,
    _is_transaction_conflict,
    _iso,
    _retrying_conflicts,
    _to_item,
)
from billhub.store.bills import BillQuery, Bills, StoredBill
from billhub.store.jobs import RefreshJobs
from billhub.store.oauth_states import LinksInProgress
from billhub.store.schedule import DueRefresh, RefreshSchedule, _schedule_unchanged
from billhub.store.sign_in import SignInChecks, login_attempts_key
from billhub.store.users import Users

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = [
    "BATCH_WRITE_LIMIT",
    "CONFLICT_ATTEMPTS",
    "AccountGone",
    "BillQuery",
    "BillsLeftBehind",
    "BillsTable",
    "ConcurrentUpdate",
    "DueRefresh",
    "StoredAccount",
    "StoredBill",
]

BATCH_ATTEMPTS = 8
DELETE_ATTEMPTS = 3
DELETED_MARKER_TTL_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class StoredAccount:
    account: Account
    credentials_ciphertext: bytes
    credentials_version: int
    link_key: str
    # True until the provider has said whose account the credentials open (linked while it was down).
    identity_pending: bool

    def is_link_of(self, provider: str, external_id: str) -> bool:
        """Whether the account is linked as that provider account (its link guard is that one's)."""
        return self.link_key == keys.link_sk(provider, external_id)


class BillsTable(Table):
    """The table as the domain has used it so far: the repositories split out of it (``jobs``, ...) and
    the sections not yet split, each method of a repository delegated to it until its callers use it."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        super().__init__(client, table_name)
        self.jobs = RefreshJobs(client, table_name)
        self.oauth_states = LinksInProgress(client, table_name)
        self.sign_in = SignInChecks(client, table_name)
        self.users = Users(client, table_name)
        self.bills = Bills(client, table_name)
        self.schedule = RefreshSchedule(client, table_name)

    # ------------------------------------------------------------------ users: store/users.py
    def create_user(self, user: User, password_hash: str) -> None:
        self.users.create_user(user, password_hash)

    def user_id_for_email(self, email: str) -> str | None:
        return self.users.user_id_for_email(email)

    def get_user(self, user_id: str) -> tuple[User, str] | None:
        return self.users.get_user(user_id)

    def update_preferences(self, user_id: str, preferences: Preferences) -> None:
        self.users.update_preferences(user_id, preferences)

    def preferences(self, user_id: str) -> Preferences:
        return self.users.preferences(user_id)

    def preferred_refresh_interval(self, user_id: str) -> RefreshInterval:
        return self.users.preferred_refresh_interval(user_id)

    def start_manual_refresh(self, user_id: str, now: datetime, min_interval: timedelta) -> datetime | None:
        return self.users.start_manual_refresh(user_id, now, min_interval)

    def forget_manual_refresh(self, user_id: str, started_at: datetime) -> None:
        self.users.forget_manual_refresh(user_id, started_at)

    # ------------------------------------------------------------------ accounts
    def create_account(
        self, account: Account, external_id: str, credentials_ciphertext: bytes, identity_pending: bool = False
    ) -> None:
        """Stores a new linked account; ``Conflict`` if this user already linked that provider account,
        ``TooManyAccounts`` if they have ``MAX_ACCOUNTS_PER_USER`` (counted on the profile in the same
        transaction; the deletion of an account counts it down).

        The account's ``refresh_interval`` must still be the owner's preference: a change of preference
        made meanwhile (which updates only the accounts it finds) raises ``ConcurrentUpdate``.
        """
        link_key = keys.link_sk(account.provider, external_id)
        link = self._link_item(account, link_key)
        writes: list[Any] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": link,
                    "ConditionExpression": "attribute_not_exists(PK)",
                }
            },
            {
                "Put": {
                    "TableName": self._table,
                    "Item": self._account_item(account, credentials_ciphertext, link_key, identity_pending),
                    "ConditionExpression": "attribute_not_exists(PK)",
                }
            },
            {
                "Update": {
                    "TableName": self._table,
                    "Key": _to_item({"PK": keys.user_pk(account.user_id), "SK": keys.PROFILE_SK}),
                    # Counted in the same transaction, so two links at once can never pass the cap together.
                    "UpdateExpression": "SET account_count = account_count + :one",
                    # Nothing is linked to a user being deleted: their deletion lists accounts
                    # after marking the profile, so an account either is in that list or is refused.
                    "ConditionExpression": "preferences.refresh_interval = :interval "
                    "AND attribute_not_exists(deleting_since) AND account_count < :most",
                    "ExpressionAttributeValues": _to_item(
                        {":interval": account.refresh_interval, ":one": 1, ":most": MAX_ACCOUNTS_PER_USER}
                    ),
                }
            },
        ]
        for counted in (True, False):
            try:
                _retrying_conflicts(
                    lambda: self._client.transact_write_items(TransactItems=writes),
                    f"account {account.account_id} kept meeting other transactions while it was linked",
                )
                return
            except ClientError as error:
                if not _is_conditional_failure(error):
                    raise
                if _condition_failed_at(error, 2) and not _condition_failed_at(error, 0):
                    count = self._account_count(account.user_id)
                    if count is not None and count >= MAX_ACCOUNTS_PER_USER:
                        raise TooManyAccounts(MAX_ACCOUNTS_PER_USER) from error
                    if count is None and counted and self._start_account_count(account.user_id):
                        continue  # a profile from before the count: counted now, linked again
                    raise ConcurrentUpdate(f"user {account.user_id} changed their refresh interval") from error
                raise Conflict(
                    f"This {account.provider} account is already linked.", details={"provider": account.provider}
                ) from error

    def _account_count(self, user_id: str) -> int | None:
        """The profile's count of linked accounts; None without one (or without a profile)."""
        item = self._get(keys.user_pk(user_id), keys.PROFILE_SK, consistent=True)
        return int(item["account_count"]) if item is not None and "account_count" in item else None

    def _start_account_count(self, user_id: str) -> bool:
        """Counts the accounts of a profile written before profiles counted them; False if it has no
        profile, is being deleted, or was counted meanwhile."""
        count = sum(1 for _ in self._query_prefix(user_id, keys.ACCOUNT, ProjectionExpression="SK"))
        try:
            self._client.update_item(
                TableName=self._table,
                Key=_to_item({"PK": keys.user_pk(user_id), "SK": keys.PROFILE_SK}),
                UpdateExpression="SET account_count = :count",
                ConditionExpression="attribute_exists(PK) AND attribute_not_exists(account_count) "
                "AND attribute_not_exists(deleting_since)",
                ExpressionAttributeValues=_to_item({":count": count}),
            )
        except ClientError as error:
            if _is_conditional_failure(error):
                return False
            raise
        return True

    @staticmethod
    def _link_item(account: Account, link_key: str) -> dict[str, Any]:
        return _to_item(
            {"PK": keys.user_pk(account.user_id), "SK": link_key, "type": "link", "account_id": account.account_id}
        )

    def _account_item(
        self, account: Account, credentials_ciphertext: bytes, link_key: str, identity_pending: bool
    ) -> dict[str, Any]:
        values = account.model_dump(mode="json")
        values.update(
            {
                "PK": keys.user_pk(account.user_id),
                "SK": keys.account_sk(account.account_id),
                "type": "account",
                "credentials": credentials_ciphertext,
                "credentials_version": 1,
                "link_key": link_key,
                "identity_pending": identity_pending or None,
                "GSI1PK": keys.refresh_shard(account.account_id),
                "GSI1SK": keys.refresh_sk(account.account_id, account.next_refresh_at, account.refresh_interval),
            }
        )
        return _to_item(values)

    def get_account(self, user_id: str, account_id: str) -> StoredAccount | None:
        """The account and its credentials; None if it is not there or is being deleted."""
        item = self._get(keys.user_pk(user_id), keys.account_sk(account_id), consistent=True)
        if item is None or item["status"] == AccountStatus.DELETING.value:
            return None
        return StoredAccount(
            account=Account.model_validate(item),
            credentials_ciphertext=bytes(item["credentials"].value),
            credentials_version=int(item["credentials_version"]),
            link_key=str(item["link_key"]),
            identity_pending=bool(item.get("identity_pending")),
        )

    def save_renewed_credentials(self, stored: StoredAccount, credentials_ciphertext: bytes) -> bool:
        """Stores credentials a token renewal produced, unless they changed since ``stored`` was read.

        False when another writer got there first: what it stored is at least as fresh.
        """
        account = stored.account
        return self._update_account(
            account.user_id,
            account.account_id,
            UpdateExpression="SET credentials = :credentials, credentials_version = :next",
            ConditionExpression="credentials_version = :seen AND #status <> :deleting",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=_to_item(
                {
                    ":credentials": credentials_ciphertext,
                    ":next": stored.credentials_version + 1,
                    ":seen": stored.credentials_version,
                    ":deleting": AccountStatus.DELETING.value,
                }
            ),
        )

    def relink(
        self,
        stored: StoredAccount,
        external_id: str,
        external_ref: str,
        now: datetime,
        credentials_ciphertext: bytes | None = None,
    ) -> None:
        """Confirms whose provider account this is and makes it active again, keeping its id and bills.

        New credentials (a repair) replace the old ones and the account is due for refresh at once.
        When the identity differs from the one linked (a pending account verified for the first
        time), the one-link-per-provider-account item moves with it in the same transaction.
        Everything is conditional on the account's link being the one ``stored`` saw:
        ``Conflict`` if the user already linked that provider account as another account,
        ``ConcurrentUpdate`` if the account's link (or, for a repair, its schedule) changed meanwhile,
        ``NotFound`` if it is gone.
        """
        account = stored.account
        link_key = keys.link_sk(account.provider, external_id)
        key = {"PK": keys.user_pk(account.user_id), "SK": keys.account_sk(account.account_id)}
        values: dict[str, Any] = {
            ":ref": external_ref,
            ":link": link_key,
            ":seen_link": stored.link_key,
            ":active": AccountStatus.ACTIVE.value,
            ":deleting": AccountStatus.DELETING.value,
        }
        assignments = ["external_ref = :ref", "link_key = :link", "#status = :active"]
        condition = "attribute_exists(PK) AND #status <> :deleting AND link_key = :seen_link"
        if credentials_ciphertext is not None:
            assignments += [
                "credentials = :credentials",
                "credentials_version = credentials_version + :one",
                "next_refresh_at = :now",
                "GSI1SK = :due",
            ]
            # The key carries the interval read with ``stored``: it must still be the account's.
            schedule, seen = _schedule_unchanged(account)
            condition += f" AND {schedule}"
            values.update(
                {
                    ":credentials": credentials_ciphertext,
                    ":one": 1,
                    ":now": _iso(now),
                    ":due": keys.refresh_sk(account.account_id, now, account.refresh_interval),
                    **seen,
                }
            )
        update: Any = {
            "Update": {
                "TableName": self._table,
                "Key": _to_item(key),
                "UpdateExpression": f"SET {', '.join(assignments)} REMOVE identity_pending, last_error",
                "ConditionExpression": condition,
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": _to_item(values),
            }
        }
        moves: list[Any] = []
        if link_key != stored.link_key:
            owner = _to_item({":account": account.account_id})
            moves = [
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": self._link_item(account, link_key),
                        "ConditionExpression": "attribute_not_exists(PK) OR account_id = :account",
                        "ExpressionAttributeValues": owner,
                    }
                },
                {
                    "Delete": {
                        "TableName": self._table,
                        "Key": _to_item({"PK": key["PK"], "SK": stored.link_key}),
                        "ConditionExpression": "attribute_not_exists(PK) OR account_id = :account",
                        "ExpressionAttributeValues": owner,
                    }
                },
            ]
        try:
            _retrying_conflicts(
                lambda: self._client.transact_write_items(TransactItems=[*moves, update]),
                f"account {account.account_id} kept meeting other transactions while it was relinked",
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise
            if moves and _condition_failed_at(error, 0):
                raise Conflict(
                    f"This {account.provider} account is already linked.", details={"provider": account.provider}
                ) from error
            current = self.get_account(account.user_id, account.account_id)
            if current is None or current.account.status is AccountStatus.DELETING:
                raise NotFound("No such account.") from error
            raise ConcurrentUpdate(f"account {account.account_id} was relinked meanwhile") from error

    # ------------------------------------------------------------------ OAuth2 links: store/oauth_states.py
    def put_oauth_state(self, user_id: str, nonce: str, link: dict[str, Any], expires_at: datetime) -> None:
        self.oauth_states.put_oauth_state(user_id, nonce, link, expires_at)

    def consume_oauth_state(self, nonce: str, now: datetime) -> dict[str, Any] | None:
        return self.oauth_states.consume_oauth_state(nonce, now)

    # ------------------------------------------------------------------ accounts (continued)

    def list_accounts(self, user_id: str) -> list[Account]:
        items = self._query_prefix(user_id, keys.ACCOUNT)
        return [Account.model_validate(item) for item in items]

    def record_fetch_failure(self, account: Account, error: str, attempted_at: datetime) -> bool:
        """Notes a failed attempt, unless a fetch that started later already succeeded (then False):
        the bills held are newer than this failure, so it says nothing about them."""
        return self._update_account(
            account.user_id,
            account.account_id,
            UpdateExpression="SET last_attempt_at = :at, last_error = :error",
            # Never resurrect an account that is being deleted.
            ConditionExpression="attribute_exists(PK) AND #status <> :deleting "
            "AND (attribute_not_exists(last_success_at) OR last_success_at < :at)",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=_to_item(
                {":at": _iso(attempted_at), ":error": error, ":deleting": AccountStatus.DELETING.value}
            ),
        )

    def mark_needs_reauth(self, stored: StoredAccount, error: str, attempted_at: datetime) -> bool:
        """Asks the user to act, unless the credentials changed since ``stored`` was read (a repair or
        a renewal happened meanwhile, and the refusal was of credentials no longer held): then False."""
        account = stored.account
        return self._update_account(
            account.user_id,
            account.account_id,
            UpdateExpression="SET last_attempt_at = :at, last_error = :error, #status = :needs_reauth",
            ConditionExpression="credentials_version = :seen AND #status <> :deleting",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=_to_item(
                {
                    ":at": _iso(attempted_at),
                    ":error": error,
                    ":needs_reauth": AccountStatus.NEEDS_REAUTH.value,
                    ":seen": stored.credentials_version,
                    ":deleting": AccountStatus.DELETING.value,
                }
            ),
        )

    # ------------------------------------------------------------------ the refresh schedule: store/schedule.py
    def claim_due_refresh(self, due: DueRefresh, next_refresh_at: datetime) -> bool:
        return self.schedule.claim_due_refresh(due, next_refresh_at)

    def release_refresh_claim(self, due: DueRefresh, claimed_until: datetime) -> bool:
        return self.schedule.release_refresh_claim(due, claimed_until)

    def reschedule(self, account: Account, next_refresh_at: datetime, refresh_interval: RefreshInterval) -> bool:
        return self.schedule.reschedule(account, next_refresh_at, refresh_interval)

    def due_refreshes(self, now: datetime) -> Iterator[DueRefresh]:
        return self.schedule.due_refreshes(now)

    def due_for_refresh(self, shard: int, now: datetime) -> Iterator[DueRefresh]:
        return self.schedule.due_for_refresh(shard, now)

    # ------------------------------------------------------------------ bills: store/bills.py
    def bills_of_account(self, account: Account) -> list[Bill]:
        return self.bills.bills_of_account(account)

    def save_fetched_bills(self, account: Account, fetched: Sequence[Bill], as_of: datetime) -> int:
        return self.bills.save_fetched_bills(account, fetched, as_of)

    def bills_page(self, user_id: str, query: BillQuery) -> tuple[list[Bill], str | None]:
        return self.bills.bills_page(user_id, query)

    @staticmethod
    def cursor_after(bill: Bill) -> str:
        return Bills.cursor_after(bill)

    def bills_issued_since(self, user_id: str, since: date) -> list[Bill]:
        return self.bills.bills_issued_since(user_id, since)

    # ------------------------------------------------------------------ deleting an account
    def begin_account_deletion(self, user_id: str, account_id: str, now: datetime) -> Account | None:
        """Hides the account from every read, destroys its credentials, frees its provider account to
        be linked again and stops its refreshes, in one transaction; every later write to it or to its
        bills (a fetch in flight included) is refused from then on. Returns the account, or None if it
        is not the user's (or is already gone). Safe to repeat: an account already being deleted is
        returned as it is."""
        for attempt in range(DELETE_ATTEMPTS):
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
                _back_off(attempt)
                continue
            return account.model_copy(update={"status": AccountStatus.DELETING})
        raise ConcurrentUpdate(f"account {account_id} kept changing while its deletion began")

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

    def _delete_batch(self, item_keys: list[dict[str, Any]]) -> None:
        requests: Any = [{"DeleteRequest": {"Key": _to_item(key)}} for key in item_keys]
        for attempt in range(BATCH_ATTEMPTS):
            response = self._client.batch_write_item(RequestItems={self._table: requests})
            requests = response.get("UnprocessedItems", {}).get(self._table, [])
            if not requests:
                return
            time.sleep(min(0.05 * 2**attempt, 1.0))  # throttled: back off before the rest
        raise BillsLeftBehind(f"{len(requests)} bills could not be deleted yet; the next attempt finishes")

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
        for attempt in range(DELETE_ATTEMPTS):
            try:
                self._client.transact_write_items(TransactItems=writes)
                return
            except ClientError as error:
                if _condition_failed_at(error, 0):
                    return  # another attempt finished it first
                if _condition_failed_at(error, 2):
                    writes = writes[:2]  # a profile from before the count (or gone): nothing to count down
                    continue
                if not _is_transaction_conflict(error):
                    raise
                _back_off(attempt)
        raise ConcurrentUpdate(f"account {account.account_id} could not be removed; the next attempt finishes it")

    def was_deleted(self, user_id: str, account_id: str) -> bool:
        return self._get(keys.user_pk(user_id), keys.deleted_sk(account_id), consistent=True) is not None

    def unfinished_deletions(self, started_before: datetime) -> Iterator[tuple[str, str]]:
        """(user id, account id) of deletions started before ``started_before`` and never finished."""
        for item in self._sweep_entries(keys.DELETING_ACCOUNTS, started_before):
            yield keys.user_id_of(str(item["PK"])), keys.account_id_of(str(item["SK"]))

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

    def account_being_deleted(self, user_id: str, account_id: str) -> Account | None:
        item = self._get(keys.user_pk(user_id), keys.account_sk(account_id), consistent=True)
        if item is None or item["status"] != AccountStatus.DELETING.value:
            return None
        return Account.model_validate(item)

    # ------------------------------------------------------------------ deleting a user
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
        for attempt in range(DELETE_ATTEMPTS):
            try:
                self._client.transact_write_items(TransactItems=[profile, guard])
                return
            except ClientError as error:
                if _condition_failed_at(error, 0):
                    return  # another attempt finished it first
                if _condition_failed_at(error, 1):
                    # The email is someone else's: the profile goes alone.
                    self._delete_profile_being_deleted(user_id)
                    return
                if not _is_transaction_conflict(error):
                    raise
                _back_off(attempt)
        raise ConcurrentUpdate(f"user {user_id} could not be removed; the next attempt finishes it")

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
        found = self.get_user(user_id)
        if found is None or found[0].deleting_since is None:
            return None
        return found[0]

    # ------------------------------------------------------------------ refresh jobs: store/jobs.py
    def create_job(self, job: RefreshJob) -> None:
        self.jobs.create_job(job)

    def get_job(self, user_id: str, job_id: str) -> RefreshJob | None:
        return self.jobs.get_job(user_id, job_id)

    def record_job_result(self, user_id: str, job_id: str, account_id: str, result: JobAccountResult) -> None:
        self.jobs.record_job_result(user_id, job_id, account_id, result)

    # ------------------------------------------------------------------ sign-in checks: store/sign_in.py
    def take_login_attempt(self, subject: LoginSubject, limit: int, window: timedelta, now: datetime) -> int | None:
        return self.sign_in.take_login_attempt(subject, limit, window, now)

    def refund_login_attempt(self, subject: LoginSubject, now: datetime) -> None:
        self.sign_in.refund_login_attempt(subject, now)

    def clear_login_attempts(self, subject: LoginSubject) -> None:
        self.sign_in.clear_login_attempts(subject)
