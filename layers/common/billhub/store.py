"""All access to the single DynamoDB table: item layout, conditions and transactions live here only.

Item layout (PK / SK):
    USER#<uid>   PROFILE                                user profile, password hash, preferences,
                                                        time of the last manual refresh (the throttle)
    EMAIL#<e>    EMAIL                                  unique email -> uid
    USER#<uid>   ACCOUNT#<aid>                          linked account (+ KMS ciphertext of credentials)
    USER#<uid>   LINK#<provider>#<ref-digest>           one link per provider account per user
    USER#<uid>   BILL#<provider>#<aid>#<provider bill>  one bill
    USER#<uid>   JOB#<job_id>                           refresh job, expires by TTL
    OAUTHSTATE#<nonce>  STATE                           an OAuth2 link in progress, single use, TTL
Accounts carry GSI1PK=REFRESH#<shard>, GSI1SK=<next_refresh_at>#<aid>#<refresh_interval> so the
planner finds due accounts without a scan, and learns each one's interval from the (keys-only) index
without reading the account or its owner's profile. An account's ``refresh_interval`` attribute and the
one in its GSI1SK are always written together.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast, get_args

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from billhub.errors import Conflict, NotFound
from billhub.models import (
    Account,
    AccountStatus,
    Bill,
    JobAccountResult,
    Preferences,
    RefreshInterval,
    RefreshJob,
    User,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

REFRESH_SHARDS = 8
TRANSACTION_LIMIT = 100
JOB_TTL_SECONDS = 7 * 24 * 3600

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {key: _serializer.serialize(value) for key, value in values.items() if value is not None}


def _from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {key: _deserializer.deserialize(value) for key, value in item.items()}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def user_key(user_id: str) -> str:
    return f"USER#{user_id}"


def refresh_shard(account_id: str) -> str:
    digest = hashlib.sha256(account_id.encode()).digest()
    return f"REFRESH#{digest[0] % REFRESH_SHARDS}"


def refresh_sort_key(account_id: str, next_refresh_at: datetime, refresh_interval: RefreshInterval) -> str:
    return f"{_iso(next_refresh_at)}#{account_id}#{refresh_interval}"


def _interval_in(refresh_key: str) -> RefreshInterval:
    parts = refresh_key.split("#")
    if len(parts) == 3 and parts[2] in get_args(RefreshInterval):
        return cast("RefreshInterval", parts[2])
    # Keys written before intervals were kept end at the account id: every account was daily then.
    return "daily"


def _schedule_unchanged(account: Account) -> tuple[str, dict[str, Any]]:
    """A condition that holds while the account's schedule (its next refresh and interval, both in its
    GSI1SK) is still the one ``account`` was read with."""
    values = {":seen_key": refresh_sort_key(account.account_id, account.next_refresh_at, account.refresh_interval)}
    if account.refresh_interval != "daily":
        return "GSI1SK = :seen_key", values
    # Keys written before intervals were kept end at the account id: those accounts are daily.
    values[":seen_old_key"] = f"{_iso(account.next_refresh_at)}#{account.account_id}"
    return "(GSI1SK = :seen_key OR GSI1SK = :seen_old_key)", values


def bill_sort_key(bill: Bill) -> str:
    return f"BILL#{bill.provider}#{bill.account_id}#{bill.provider_bill_id}"


def link_sort_key(provider: str, external_id: str) -> str:
    # A digest, not the provider's account number, so the key itself discloses nothing.
    return f"LINK#{provider}#{hashlib.sha256(external_id.encode()).hexdigest()[:32]}"


def _condition_failed_at(error: ClientError, index: int) -> bool:
    reasons = error.response.get("CancellationReasons", [])
    return len(reasons) > index and reasons[index].get("Code") == "ConditionalCheckFailed"


def _is_conditional_failure(error: ClientError) -> bool:
    code = error.response["Error"]["Code"]
    if code == "ConditionalCheckFailedException":
        return True
    if code == "TransactionCanceledException":
        reasons = error.response.get("CancellationReasons", [])
        return any(reason.get("Code") == "ConditionalCheckFailed" for reason in reasons)
    return False


class ConcurrentUpdate(Exception):
    """Someone else changed the same items first; the caller retries from a fresh read."""


@dataclass(frozen=True)
class StoredAccount:
    account: Account
    credentials_ciphertext: bytes
    credentials_version: int
    link_key: str
    # True until the provider has said whose account the credentials open (linked while it was down).
    identity_pending: bool


@dataclass(frozen=True)
class DueRefresh:
    """An account the planner found due, as the refresh index showed it."""

    user_id: str
    account_id: str
    refresh_interval: RefreshInterval
    # Its GSI1SK as read: a claim holds only while it is unchanged.
    refresh_key: str


@dataclass(frozen=True)
class UserSnapshot:
    """Everything the read endpoints show, from one paginated Query on the user's partition."""

    accounts: list[Account]
    bills: list[Bill]


class BillsTable:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    # ------------------------------------------------------------------ users
    def create_user(self, user: User, password_hash: str) -> None:
        profile = _to_item(
            {
                "PK": user_key(user.user_id),
                "SK": "PROFILE",
                "type": "user",
                "user_id": user.user_id,
                "email": user.email,
                "password_hash": password_hash,
                "created_at": _iso(user.created_at),
                "preferences": user.preferences.model_dump(),
            }
        )
        email = _to_item({"PK": f"EMAIL#{user.email}", "SK": "EMAIL", "type": "email", "user_id": user.user_id})
        try:
            self._client.transact_write_items(
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
                raise Conflict("An account with this email already exists.") from error
            raise

    def user_id_for_email(self, email: str) -> str | None:
        item = self._get(f"EMAIL#{email}", "EMAIL")
        return str(item["user_id"]) if item else None

    def get_user(self, user_id: str) -> tuple[User, str] | None:
        """The user and their password hash."""
        item = self._get(user_key(user_id), "PROFILE", consistent=True)
        if item is None:
            return None
        return User.model_validate(item), str(item["password_hash"])

    def update_preferences(self, user_id: str, preferences: Preferences) -> None:
        self._client.update_item(
            TableName=self._table,
            Key=_to_item({"PK": user_key(user_id), "SK": "PROFILE"}),
            UpdateExpression="SET preferences = :preferences",
            ConditionExpression="attribute_exists(PK)",
            ExpressionAttributeValues=_to_item({":preferences": preferences.model_dump()}),
        )

    def preferred_refresh_interval(self, user_id: str) -> RefreshInterval:
        """The refresh interval in the user's preferences (and nothing else of the profile)."""
        response = self._client.get_item(
            TableName=self._table,
            Key=_to_item({"PK": user_key(user_id), "SK": "PROFILE"}),
            ProjectionExpression="preferences.refresh_interval",
            ConsistentRead=True,
        )
        if "Item" not in response:
            raise NotFound("No such user.")
        return Preferences.model_validate(_from_item(response["Item"])["preferences"]).refresh_interval

    def start_manual_refresh(self, user_id: str, now: datetime, min_interval: timedelta) -> datetime | None:
        """Records that the user starts a manual refresh at ``now``, unless their previous one was less
        than ``min_interval`` ago: then nothing is recorded and the time of that previous one returned.

        One conditional write, so of two requests at the same moment only one can start.
        """
        try:
            self._client.update_item(
                TableName=self._table,
                Key=_to_item({"PK": user_key(user_id), "SK": "PROFILE"}),
                UpdateExpression="SET last_manual_refresh_at = :now",
                ConditionExpression="attribute_exists(PK) "
                "AND (attribute_not_exists(last_manual_refresh_at) OR last_manual_refresh_at <= :earliest)",
                ExpressionAttributeValues=_to_item({":now": _iso(now), ":earliest": _iso(now - min_interval)}),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise
            # The profile as it was, which ReturnValuesOnConditionCheckFailure puts beside the error.
            profile = cast("dict[str, Any]", error.response).get("Item")
            if profile is None:
                raise NotFound("No such user.") from error
            return datetime.fromisoformat(str(_from_item(profile)["last_manual_refresh_at"]))
        return None

    def forget_manual_refresh(self, user_id: str, started_at: datetime) -> None:
        """Undoes ``start_manual_refresh`` at ``started_at`` (its fetches could not be queued), unless a
        later one was recorded meanwhile."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key=_to_item({"PK": user_key(user_id), "SK": "PROFILE"}),
                UpdateExpression="REMOVE last_manual_refresh_at",
                ConditionExpression="last_manual_refresh_at = :started",
                ExpressionAttributeValues=_to_item({":started": _iso(started_at)}),
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise

    # ------------------------------------------------------------------ accounts
    def create_account(
        self, account: Account, external_id: str, credentials_ciphertext: bytes, identity_pending: bool = False
    ) -> None:
        """Stores a new linked account; ``Conflict`` if this user already linked that provider account.

        The account's ``refresh_interval`` must still be the owner's preference: a change of preference
        made meanwhile (which updates only the accounts it finds) raises ``ConcurrentUpdate``.
        """
        link_key = link_sort_key(account.provider, external_id)
        link = self._link_item(account, link_key)
        try:
            self._client.transact_write_items(
                TransactItems=[
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
                        "ConditionCheck": {
                            "TableName": self._table,
                            "Key": _to_item({"PK": user_key(account.user_id), "SK": "PROFILE"}),
                            "ConditionExpression": "preferences.refresh_interval = :interval",
                            "ExpressionAttributeValues": _to_item({":interval": account.refresh_interval}),
                        }
                    },
                ]
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise
            if _condition_failed_at(error, 2) and not _condition_failed_at(error, 0):
                raise ConcurrentUpdate(f"user {account.user_id} changed their refresh interval") from error
            raise Conflict(
                f"This {account.provider} account is already linked.", details={"provider": account.provider}
            ) from error

    @staticmethod
    def _link_item(account: Account, link_key: str) -> dict[str, Any]:
        return _to_item(
            {"PK": user_key(account.user_id), "SK": link_key, "type": "link", "account_id": account.account_id}
        )

    def _account_item(
        self, account: Account, credentials_ciphertext: bytes, link_key: str, identity_pending: bool
    ) -> dict[str, Any]:
        values = account.model_dump(mode="json")
        values.update(
            {
                "PK": user_key(account.user_id),
                "SK": f"ACCOUNT#{account.account_id}",
                "type": "account",
                "credentials": credentials_ciphertext,
                "credentials_version": 1,
                "link_key": link_key,
                "identity_pending": identity_pending or None,
                "GSI1PK": refresh_shard(account.account_id),
                "GSI1SK": refresh_sort_key(account.account_id, account.next_refresh_at, account.refresh_interval),
            }
        )
        return _to_item(values)

    def get_account(self, user_id: str, account_id: str) -> StoredAccount | None:
        item = self._get(user_key(user_id), f"ACCOUNT#{account_id}", consistent=True)
        if item is None:
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
        link_key = link_sort_key(account.provider, external_id)
        key = {"PK": user_key(account.user_id), "SK": f"ACCOUNT#{account.account_id}"}
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
                    ":due": refresh_sort_key(account.account_id, now, account.refresh_interval),
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
            self._client.transact_write_items(TransactItems=[*moves, update])
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

    # ------------------------------------------------------------------ OAuth2 links in progress
    def put_oauth_state(self, nonce: str, link: dict[str, Any], expires_at: datetime) -> None:
        self._client.put_item(
            TableName=self._table,
            Item=_to_item(
                {
                    "PK": f"OAUTHSTATE#{nonce}",
                    "SK": "STATE",
                    "type": "oauth_state",
                    "link": link,
                    "expires_at": int(expires_at.timestamp()),
                }
            ),
            ConditionExpression="attribute_not_exists(PK)",
        )

    def consume_oauth_state(self, nonce: str, now: datetime) -> dict[str, Any] | None:
        """The link stored with the state, exactly once and only before it expires (TTL deletion lags)."""
        try:
            response = self._client.delete_item(
                TableName=self._table,
                Key=_to_item({"PK": f"OAUTHSTATE#{nonce}", "SK": "STATE"}),
                ConditionExpression="attribute_exists(PK) AND expires_at > :now",
                ExpressionAttributeValues=_to_item({":now": int(now.timestamp())}),
                ReturnValues="ALL_OLD",
            )
        except ClientError as error:
            if _is_conditional_failure(error):
                return None
            raise
        link: dict[str, Any] = _from_item(response["Attributes"])["link"]
        return link

    def list_accounts(self, user_id: str) -> list[Account]:
        items = self._query_prefix(user_id, "ACCOUNT#")
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

    def claim_due_refresh(self, due: DueRefresh, next_refresh_at: datetime) -> bool:
        """Moves the account's next refresh forward unless another planner (or a manual refresh, or a
        change of interval) already changed it since it was found due (then False)."""
        return self._update_account(
            due.user_id,
            due.account_id,
            # The interval is set too: accounts linked before intervals were kept get theirs here.
            UpdateExpression="SET next_refresh_at = :next, GSI1SK = :next_key, refresh_interval = :interval",
            ConditionExpression="GSI1SK = :due_key AND #status <> :deleting",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=_to_item(
                {
                    ":next": _iso(next_refresh_at),
                    ":next_key": refresh_sort_key(due.account_id, next_refresh_at, due.refresh_interval),
                    ":interval": due.refresh_interval,
                    ":due_key": due.refresh_key,
                    ":deleting": AccountStatus.DELETING.value,
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
            UpdateExpression="SET next_refresh_at = :next, GSI1SK = :next_key, refresh_interval = :interval",
            ConditionExpression=f"attribute_exists(PK) AND #status <> :deleting AND {schedule}",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=_to_item(
                {
                    ":next": _iso(next_refresh_at),
                    ":next_key": refresh_sort_key(account.account_id, next_refresh_at, refresh_interval),
                    ":interval": refresh_interval,
                    ":deleting": AccountStatus.DELETING.value,
                    **seen,
                }
            ),
        )

    def due_for_refresh(self, shard: int, now: datetime) -> Iterator[DueRefresh]:
        """Accounts in ``shard`` whose next refresh is at or before ``now``."""
        paginator = self._client.get_paginator("query")
        for page in paginator.paginate(
            TableName=self._table,
            IndexName="GSI1",
            KeyConditionExpression="GSI1PK = :shard AND GSI1SK <= :now",
            ExpressionAttributeValues=_to_item({":shard": f"REFRESH#{shard}", ":now": f"{_iso(now)}#~"}),
        ):
            for raw in page["Items"]:
                item = _from_item(raw)
                refresh_key = str(item["GSI1SK"])
                yield DueRefresh(
                    user_id=str(item["PK"]).removeprefix("USER#"),
                    account_id=str(item["SK"]).removeprefix("ACCOUNT#"),
                    refresh_interval=_interval_in(refresh_key),
                    refresh_key=refresh_key,
                )

    # ------------------------------------------------------------------ bills
    def user_snapshot(self, user_id: str) -> UserSnapshot:
        """The user's accounts and bills in one paginated Query (``ACCOUNT#`` sorts before ``BILL#``)."""
        accounts: list[Account] = []
        bills: list[Bill] = []
        for item in self._query(
            KeyConditionExpression="PK = :pk AND SK BETWEEN :first AND :last",
            ExpressionAttributeValues=_to_item({":pk": user_key(user_id), ":first": "ACCOUNT#", ":last": "BILL$"}),
        ):
            if item["type"] == "account":
                accounts.append(Account.model_validate(item))
            else:
                bills.append(Bill.model_validate(item))
        return UserSnapshot(accounts=accounts, bills=bills)

    def bills_of_account(self, account: Account) -> list[Bill]:
        items = self._query_prefix(account.user_id, f"BILL#{account.provider}#{account.account_id}#")
        return [Bill.model_validate(item) for item in items]

    def save_fetched_bills(self, account: Account, fetched: Sequence[Bill], fetched_at: datetime) -> int:
        """Writes new and changed bills and marks the account refreshed; returns how many bills changed.

        Each write is conditional on what was read (absent, or the revision seen), so a concurrent or
        older fetch can never overwrite newer data: it gets ``ConcurrentUpdate`` and retries. A provider
        revision lower than the stored one is ignored. The account update rides in the last transaction
        and requires the account to still exist and not be deleting.
        """
        stored = {bill.provider_bill_id: bill for bill in self.bills_of_account(account)}
        writes: list[Any] = []
        for bill in fetched:
            previous = stored.get(bill.provider_bill_id)
            if previous is not None and (previous.same_statement(bill) or previous.revision > bill.revision):
                continue
            item = bill.model_dump(mode="json")
            item.update({"PK": user_key(account.user_id), "SK": bill_sort_key(bill), "type": "bill"})
            item["fetched_at"] = _iso(fetched_at)
            put: dict[str, Any] = {"TableName": self._table, "Item": _to_item(item)}
            if previous is None:
                put["ConditionExpression"] = "attribute_not_exists(PK)"
            else:
                put["ConditionExpression"] = "revision = :seen AND amount = :amount AND #status = :status"
                put["ExpressionAttributeNames"] = {"#status": "status"}
                put["ExpressionAttributeValues"] = _to_item(
                    # As stored: amounts are kept as exact decimal strings.
                    {":seen": previous.revision, ":amount": str(previous.amount), ":status": previous.status.value}
                )
            writes.append({"Put": put})

        account_update = {
            "Update": {
                "TableName": self._table,
                "Key": _to_item({"PK": user_key(account.user_id), "SK": f"ACCOUNT#{account.account_id}"}),
                "UpdateExpression": "SET last_success_at = :at, last_attempt_at = :at, #status = :active "
                "REMOVE last_error",
                "ConditionExpression": "attribute_exists(PK) AND #status <> :deleting",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": _to_item(
                    {":at": _iso(fetched_at), ":active": AccountStatus.ACTIVE.value, ":deleting": "deleting"}
                ),
            }
        }
        if not writes:
            # Nothing changed at the provider: one conditional update, not a transaction (half the cost).
            if not self._update_account(account.user_id, account.account_id, **_without_keys(account_update["Update"])):
                raise ConcurrentUpdate(f"account {account.account_id} is gone or being deleted")
            return 0
        chunks = list(_chunks(writes, TRANSACTION_LIMIT - 1))
        chunks[-1].append(account_update)
        for chunk in chunks:
            try:
                self._client.transact_write_items(TransactItems=chunk)
            except ClientError as error:
                if _is_conditional_failure(error):
                    raise ConcurrentUpdate(f"account {account.account_id} changed during the fetch") from error
                raise
        return len(writes)

    # ------------------------------------------------------------------ refresh jobs
    def create_job(self, job: RefreshJob) -> None:
        values = job.model_dump(mode="json")
        values.update(
            {
                "PK": user_key(job.user_id),
                "SK": f"JOB#{job.job_id}",
                "type": "job",
                "expires_at": int(job.created_at.timestamp()) + JOB_TTL_SECONDS,
            }
        )
        self._client.put_item(
            TableName=self._table, Item=_to_item(values), ConditionExpression="attribute_not_exists(PK)"
        )

    def get_job(self, user_id: str, job_id: str) -> RefreshJob | None:
        item = self._get(user_key(user_id), f"JOB#{job_id}", consistent=True)
        return RefreshJob.model_validate(item) if item else None

    def record_job_result(self, user_id: str, job_id: str, account_id: str, result: JobAccountResult) -> None:
        """Sets one account's outcome in the job; a redelivered message overwrites the same entry."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key=_to_item({"PK": user_key(user_id), "SK": f"JOB#{job_id}"}),
                UpdateExpression="SET results.#account = :result",
                ConditionExpression="attribute_exists(PK)",
                ExpressionAttributeNames={"#account": account_id},
                ExpressionAttributeValues=_to_item({":result": result.model_dump(exclude_none=True)}),
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise
            # The job expired; the account's own status still tells the outcome.

    # ------------------------------------------------------------------ helpers
    def _update_account(self, user_id: str, account_id: str, **update: Any) -> bool:
        """A conditional ``UpdateItem`` of one account; False when its condition did not hold."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key=_to_item({"PK": user_key(user_id), "SK": f"ACCOUNT#{account_id}"}),
                **update,
            )
        except ClientError as error:
            if _is_conditional_failure(error):
                return False
            raise
        return True

    def _get(self, pk: str, sk: str, consistent: bool = False) -> dict[str, Any] | None:
        response = self._client.get_item(
            TableName=self._table, Key=_to_item({"PK": pk, "SK": sk}), ConsistentRead=consistent
        )
        return _from_item(response["Item"]) if "Item" in response else None

    def _query_prefix(self, user_id: str, prefix: str) -> Iterator[dict[str, Any]]:
        return self._query(
            KeyConditionExpression="PK = :pk AND begins_with(SK, :prefix)",
            ExpressionAttributeValues=_to_item({":pk": user_key(user_id), ":prefix": prefix}),
        )

    def _query(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        paginator = self._client.get_paginator("query")
        for page in paginator.paginate(TableName=self._table, ConsistentRead=True, **kwargs):
            for item in page["Items"]:
                yield _from_item(item)


def _without_keys(operation: dict[str, Any]) -> dict[str, Any]:
    """A transaction item's ``Update`` as ``UpdateItem`` arguments for ``_update_account``."""
    return {name: value for name, value in operation.items() if name not in ("TableName", "Key")}


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
