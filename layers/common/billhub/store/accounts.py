"""Linked accounts: each one's item (its credentials, status and place in the refresh schedule) and the
link guard that keeps a provider account linked once per user (``LINK#<provider>#<external id>``).

Their deletion is ``store.deletions``'s; where an account sits in GSI1 while it waits for its refresh is
``store.schedule``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from billhub import keys
from billhub.models import MAX_ACCOUNTS_PER_USER, Account, AccountStatus
from billhub.store.base import (
    OUTBOX_APPEND,
    Table,
    _condition_failed_at,
    _is_conditional_failure,
    _iso,
    _retrying_conflicts,
    _to_item,
    outbox_values,
)
from billhub.store.errors import AlreadyExists, CapReached, ConcurrentUpdate, ItemMissing
from billhub.store.schedule import _schedule_unchanged


@dataclass(frozen=True)
class StoredAccount:
    account: Account
    credentials_ciphertext: bytes
    credentials_version: int
    link_key: str
    # True until the provider has said whose account the credentials open (linked while it was down).
    identity_pending: bool
    # Counts the saves that changed its bills: a save conditional on it knows the bills it read are current.
    bills_version: int = 0
    # The last fetch saved in full (``store.last_fetch``), as stored.
    last_fetch: str | None = None
    # Events written with a change of the account or its bills and not yet known to be published
    # (``billhub.outbox``): each an ``Event`` as JSON.
    outbox: tuple[str, ...] = ()

    def is_link_of(self, provider: str, external_id: str) -> bool:
        """Whether the account is linked as that provider account (its link guard is that one's)."""
        return self.link_key == keys.link_sk(provider, external_id)


class Accounts(Table):
    """Linked accounts and their link guards: linking, reading, repairing, and what a fetch records."""

    def create_account(
        self, account: Account, external_id: str, credentials_ciphertext: bytes, identity_pending: bool = False
    ) -> None:
        """Stores a new linked account; ``AlreadyExists`` if this user already linked that provider account,
        ``CapReached`` if they have ``MAX_ACCOUNTS_PER_USER`` (counted on the profile in the same
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
        # A second pass only after counting an uncounted profile: a re-read, not a retry with backoff.
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
                        raise CapReached(MAX_ACCOUNTS_PER_USER) from error
                    if count is None and counted and self._start_account_count(account.user_id):
                        continue  # a profile from before the count: counted now, linked again
                    raise ConcurrentUpdate(f"user {account.user_id} changed their refresh interval") from error
                raise AlreadyExists(f"link {link_key} of user {account.user_id}") from error

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
                "GSI1PK": keys.refresh_shard(account.account_id, account.provider),
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
            bills_version=int(item.get("bills_version", 0)),
            last_fetch=str(item["last_fetch"]) if item.get("last_fetch") is not None else None,
            outbox=tuple(str(event) for event in item.get("outbox", ())),
        )

    def save_renewed_credentials(self, stored: StoredAccount, credentials_ciphertext: bytes) -> bool:
        """Stores credentials a token renewal produced, unless they changed since ``stored`` was read.

        False when another writer got there first: what it stored is at least as fresh.
        """
        return self._update_while_credentials_held(
            stored,
            "SET credentials = :credentials, credentials_version = :next",
            {":credentials": credentials_ciphertext, ":next": stored.credentials_version + 1},
        )

    def relink(
        self,
        stored: StoredAccount,
        external_id: str,
        external_ref: str,
        now: datetime,
        credentials_ciphertext: bytes | None = None,
        announce: Sequence[str] = (),
    ) -> None:
        """Confirms whose provider account this is and makes it active again, keeping its id and bills;
        ``announce``: events to add to its outbox in the same write.

        New credentials (a repair) replace the old ones and the account is due for refresh at once.
        When the identity differs from the one linked (a pending account verified for the first
        time), the one-link-per-provider-account item moves with it in the same transaction.
        Everything is conditional on the account's link being the one ``stored`` saw:
        ``AlreadyExists`` if the user already linked that provider account as another account,
        ``ConcurrentUpdate`` if the account's link (or, for a repair, its schedule) changed meanwhile
        (or the write kept meeting other transactions in flight), ``ItemMissing`` if it is gone.
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
                # Filed under its provider's shard of today's count, as a reschedule files it.
                "GSI1PK = :shard",
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
                    ":shard": keys.refresh_shard(account.account_id, account.provider),
                    ":due": keys.refresh_sk(account.account_id, now, account.refresh_interval),
                    **seen,
                }
            )
        if announce:
            assignments.append(OUTBOX_APPEND)
            values.update(outbox_values(announce))
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
                raise AlreadyExists(f"link {link_key} of user {account.user_id}") from error
            current = self.get_account(account.user_id, account.account_id)
            if current is None or current.account.status is AccountStatus.DELETING:
                raise ItemMissing(f"account {account.account_id}") from error
            raise ConcurrentUpdate(f"account {account.account_id} was relinked meanwhile") from error

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

    def mark_needs_reauth(
        self, stored: StoredAccount, error: str, attempted_at: datetime, announce: Sequence[str] = ()
    ) -> bool:
        """Asks the user to act, unless the credentials changed since ``stored`` was read (a repair or
        a renewal happened meanwhile, and the refusal was of credentials no longer held): then False.
        ``announce``: events to add to the account's outbox in the same write."""
        update = "SET last_attempt_at = :at, last_error = :error, #status = :needs_reauth"
        values: dict[str, Any] = {
            ":at": _iso(attempted_at),
            ":error": error,
            ":needs_reauth": AccountStatus.NEEDS_REAUTH.value,
        }
        if announce:
            update += f", {OUTBOX_APPEND}"
            values.update(outbox_values(announce))
        return self._update_while_credentials_held(stored, update, values)

    def clear_outbox(self, user_id: str, account_id: str, published: Sequence[str]) -> bool:
        """Empties the account's outbox if it still holds exactly ``published`` (False: an event was
        added meanwhile, or the account is gone; what is left is published again later)."""
        return self._update_account(
            user_id,
            account_id,
            UpdateExpression="REMOVE outbox",
            ConditionExpression="outbox = :published",
            ExpressionAttributeValues=_to_item({":published": list(published)}),
        )

    def _update_while_credentials_held(self, stored: StoredAccount, update: str, values: dict[str, Any]) -> bool:
        """``update`` of the account, unless its credentials changed since ``stored`` was read (or it is
        being deleted): False then. ``#status`` names the status attribute in ``update`` too."""
        account = stored.account
        return self._update_account(
            account.user_id,
            account.account_id,
            UpdateExpression=update,
            ConditionExpression="credentials_version = :seen AND #status <> :deleting",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=_to_item(
                {**values, ":seen": stored.credentials_version, ":deleting": AccountStatus.DELETING.value}
            ),
        )
