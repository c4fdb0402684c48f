"""A user's bills: each fetch's save (its bills, and its account's summary with them), pages of them in
issue-date order, and the bills of a period for insights.

An account's ``summary`` (bill count, open bills, last issue date) and ``bills_version`` change in the
same transaction as its bills, conditional on the version read: the summary always describes exactly
the bills stored, and two fetches can never interleave their writes. A fetch's save also deletes the
account's paid bills issued before ``models.retention_cutoff`` (48 months), in the same transactions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from botocore.exceptions import ClientError
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from billhub import keys
from billhub.models import Account, AccountStatus, AccountSummary, Bill, kept_on, retention_cutoff
from billhub.store.accounts import StoredAccount
from billhub.store.base import (
    _JITTERED_BACK_OFF,
    OUTBOX_APPEND,
    Table,
    _from_item,
    _is_conditional_failure,
    _is_transaction_conflict,
    _iso,
    _to_item,
    outbox_values,
)
from billhub.store.bill_queries import BillQuery, cursor_of, start_key_of, status_filter
from billhub.store.errors import AccountGone, ConcurrentUpdate, MalformedCursor
from billhub.store.last_fetch import AccountAsRead, last_fetch_of

TRANSACTION_LIMIT = 100
# DynamoDB refuses a transaction whose items add up to more than 4 MB, and a bill at the models' largest
# is ~85 KB (100 line items of 200 four-byte characters): 99 of them are ~8 MB. A save's transactions
# hold bills up to this many bytes as ``_bill_bytes`` measures them (more than DynamoDB counts), leaving
# the rest of the 4 MB for the account item each transaction also updates (at most 400 KB, as any item).
TRANSACTION_BILL_BYTES = 3 * 1024 * 1024
# A fetch that finds its account's bills changed under it starts over from a fresh read, this often.
SAVE_ATTEMPTS = 3
FILTER_IN_LIMIT = 100


def _bill_bytes(item: dict[str, Any]) -> int:
    """A bill item's size, at least as DynamoDB counts it: the UTF-8 JSON of its typed attributes holds
    every name and value DynamoDB counts (a number's digits at one byte each, not two to a byte), plus
    quotes, type tags and separators it does not."""
    return len(json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode())


def _within(items: Sequence[tuple[Any, int]], count: int, budget: int) -> Iterator[list[Any]]:
    """``items`` (each with its size) in consecutive runs of at most ``count`` whose sizes add up to at
    most ``budget`` (or of one item, should it alone be larger)."""
    run: list[Any] = []
    size = 0
    for item, item_size in items:
        if run and (len(run) == count or size + item_size > budget):
            yield run
            run, size = [], 0
        run.append(item)
        size += item_size
    if run:
        yield run


def _unchanged_bills(version: int) -> str:
    return "bills_version = :version" if version else "attribute_not_exists(bills_version)"


def _update_expression(sets: list[str], removes: list[str]) -> str:
    return f"SET {', '.join(sets)}" + (f" REMOVE {', '.join(removes)}" if removes else "")


@dataclass(frozen=True)
class StoredBill:
    bill: Bill
    # When the fetch that stored it read it from the provider (ISO 8601).
    fetched_at: str

    def replaced_by(self, bill: Bill, as_of: datetime) -> bool:
        """Whether ``bill``, read at ``as_of``, takes this one's place (``Bill.supersedes``)."""
        return bill.supersedes(self.bill, datetime.fromisoformat(self.fetched_at), as_of)


@dataclass(frozen=True)
class _BillWrite:
    """One bill's part of a save: a ``Put`` of ``bill``, or a ``Delete`` (``bill`` None), and its size."""

    provider_bill_id: str
    bill: Bill | None
    operation: dict[str, Any]
    size: int
    replaces: bool = False  # a put of a bill held before (a revision), not a new one


@dataclass(frozen=True)
class BillChanges:
    """What one transaction of a save changes, for the events it announces: whether the save is the
    account's first successful fetch (then every transaction of it says so), the bills it adds, and the
    bills it replaces with a newer version."""

    first_success: bool
    created: tuple[Bill, ...] = ()
    updated: tuple[Bill, ...] = ()


# What a save asks of its caller for each transaction: the events (JSON) to add to the account's outbox.
type Announcer = Callable[[BillChanges], Sequence[str]]


def _announce(events: Sequence[str], sets: list[str], values: dict[str, Any]) -> None:
    """Adds ``events`` to the account's outbox in the update that ``sets`` and ``values`` make."""
    if events:
        sets.append(OUTBOX_APPEND)
        values.update(outbox_values(events))


def _exactly(stored: StoredBill) -> dict[str, Any]:
    """A write's condition that the bill is still exactly the version read, so two saves can never both
    replace (or remove) it."""
    return {
        "ConditionExpression": "revision = :seen_revision AND fetched_at = :seen_fetched_at",
        "ExpressionAttributeValues": _to_item(
            {":seen_revision": stored.bill.revision, ":seen_fetched_at": stored.fetched_at}
        ),
    }


class Bills(Table):
    """The bills of every account of the table, each in its user's partition (and LSI1)."""

    def bills_of_account(self, account: Account) -> list[Bill]:
        return [stored.bill for stored in self._stored_bills(account)]

    def _stored_bills(self, account: Account) -> list[StoredBill]:
        items = self._query_prefix(account.user_id, keys.account_bills_prefix(account.provider, account.account_id))
        return [StoredBill(Bill.model_validate(item), str(item["fetched_at"])) for item in items]

    def save_fetched_bills(
        self,
        account: Account,
        fetched: Sequence[Bill],
        as_of: datetime,
        *,
        seen: StoredAccount | None = None,
        announce: Announcer | None = None,
    ) -> int:
        """Stores what one fetch read from the provider at ``as_of``; returns how many bills changed.

        New bills are added, changed ones replaced (a higher revision, or the same revision read later),
        unchanged ones left alone; paid bills issued before ``retention_cutoff(as_of)`` are pruned (and
        never written, when fetched); the account's summary changes in the same transaction as its bills.
        Every transaction is conditional on the account's bills being exactly as read, so a concurrent
        fetch makes this one start over from a fresh read, and a fetch older than the account's last
        success stores nothing (its data is older than what is held). ``AccountGone`` if the account
        is deleted or being deleted.

        ``seen``, the account as the fetch read it (consistently), spares the first attempt a read: the
        conditions pin all it is read for, so had it changed since, nothing is written and the save
        starts over from a fresh read. When the fetch read what the last saved one did, the bills are
        not read either (``store.last_fetch``).

        ``announce`` is asked, for each transaction, which events its changes make; they are added to
        the account's outbox in that transaction (``billhub.outbox``), so a change is never stored
        without its events.
        """
        if seen is not None:
            read = AccountAsRead.of_account(seen.account, seen.bills_version, seen.last_fetch)
            try:
                return self._save_fetched_bills_once(account, fetched, as_of, read, announce)
            except ConcurrentUpdate:
                pass  # changed since the fetch read it: the attempts below read it afresh
        try:
            return Retrying(
                stop=stop_after_attempt(SAVE_ATTEMPTS),
                wait=_JITTERED_BACK_OFF,
                retry=retry_if_exception_type(ConcurrentUpdate),
                reraise=True,
            )(self._save_after_reading_account, account, fetched, as_of, announce)
        except ConcurrentUpdate as error:
            raise ConcurrentUpdate(f"account {account.account_id} kept changing while its bills were saved") from error

    def _save_after_reading_account(
        self, account: Account, fetched: Sequence[Bill], as_of: datetime, announce: Announcer | None
    ) -> int:
        current = self._get(keys.user_pk(account.user_id), keys.account_sk(account.account_id), consistent=True)
        if current is None or current["status"] == AccountStatus.DELETING.value:
            raise AccountGone(account.account_id)
        return self._save_fetched_bills_once(account, fetched, as_of, AccountAsRead.of_item(current), announce)

    def _save_fetched_bills_once(
        self,
        account: Account,
        fetched: Sequence[Bill],
        as_of: datetime,
        current: AccountAsRead,
        announce: Announcer | None = None,
    ) -> int:
        key = {"PK": keys.user_pk(account.user_id), "SK": keys.account_sk(account.account_id)}
        if current.last_success_at is not None and current.last_success_at > as_of:
            return 0  # a fetch that started later has already stored newer data
        version = current.bills_version
        latest = Bill.latest_revisions(fetched)
        values: dict[str, Any] = {":at": _iso(as_of), ":deleting": AccountStatus.DELETING.value}
        if version:
            values[":version"] = version
        conditions = [
            "attribute_exists(PK)",
            "#status <> :deleting",
            _unchanged_bills(version),
            "(attribute_not_exists(last_success_at) OR last_success_at <= :at)",
        ]
        sets, removes = ["last_success_at = :at"], []
        last_attempt = current.last_attempt_at
        if last_attempt is not None and datetime.fromisoformat(last_attempt) > as_of:
            # An attempt that began after this fetch failed, or found the credentials refused: its
            # verdict on the account stands; this fetch only adds its bills and when they were read.
            conditions.append("last_attempt_at = :seen_attempt")
            values[":seen_attempt"] = last_attempt
        else:
            sets += ["last_attempt_at = :at", "#status = :active"]
            removes.append("last_error")
            conditions.append("(attribute_not_exists(last_attempt_at) OR last_attempt_at <= :at)")
            values[":active"] = AccountStatus.ACTIVE.value
        if current.saved_in_full(latest, retention_cutoff(as_of.date())):
            # What the last saved fetch read, its bills untouched since: nothing to compare them with.
            conditions.append("last_fetch = :seen_fetch")
            values[":seen_fetch"] = current.last_fetch
            return self._record_success(account, sets, removes, conditions, values)
        held = {stored.bill.provider_bill_id: stored for stored in self._stored_bills(account)}
        writes = self._changes(account, held, latest, as_of)
        first_success = current.last_success_at is None
        if not writes:
            sets.append("last_fetch = :last_fetch")
            values[":last_fetch"] = last_fetch_of(version, [stored.bill for stored in held.values()], latest)
            if first_success and announce is not None:
                _announce(announce(BillChanges(first_success=True)), sets, values)
            return self._record_success(account, sets, removes, conditions, values)
        bills = {provider_bill_id: stored.bill for provider_bill_id, stored in held.items()}
        # Each transaction carries the account's summary as of its own bills, so at no moment do the
        # stored bills and the summary disagree, however many transactions a large change needs.
        chunks = list(_within([(write, write.size) for write in writes], TRANSACTION_LIMIT - 1, TRANSACTION_BILL_BYTES))
        for index, chunk in enumerate(chunks):
            for write in chunk:
                if write.bill is None:
                    bills.pop(write.provider_bill_id)
                else:
                    bills[write.provider_bill_id] = write.bill
            values[":summary"] = AccountSummary.of(bills.values()).model_dump(mode="json")
            values[":next"] = version + 1
            # Only the last transaction has saved the whole fetch: until then no fetch counts as saved.
            if index == len(chunks) - 1:
                chunk_sets, chunk_removes = [*sets, "last_fetch = :last_fetch"], removes
                values[":last_fetch"] = last_fetch_of(version + 1, list(bills.values()), latest)
            else:
                chunk_sets, chunk_removes = sets, [*removes, "last_fetch"]
            chunk_values = dict(values)
            if announce is not None:
                changes = BillChanges(
                    first_success=first_success,
                    created=tuple(write.bill for write in chunk if write.bill is not None and not write.replaces),
                    updated=tuple(write.bill for write in chunk if write.bill is not None and write.replaces),
                )
                chunk_sets = list(chunk_sets)
                _announce(announce(changes), chunk_sets, chunk_values)
            account_update: Any = {
                "Update": {
                    "TableName": self._table,
                    "Key": _to_item(key),
                    "UpdateExpression": _update_expression(
                        [*chunk_sets, "summary = :summary", "bills_version = :next"], chunk_removes
                    ),
                    "ConditionExpression": " AND ".join(conditions),
                    "ExpressionAttributeNames": {"#status": "status"},
                    "ExpressionAttributeValues": _to_item(chunk_values),
                }
            }
            try:
                self._client.transact_write_items(TransactItems=[*(write.operation for write in chunk), account_update])
            except ClientError as error:
                if _is_conditional_failure(error) or _is_transaction_conflict(error):
                    raise ConcurrentUpdate(
                        f"account {account.account_id} changed while its bills were saved"
                    ) from error
                raise
            conditions[2] = _unchanged_bills(version + 1)
            version += 1
            values[":version"] = version
        return len(writes)

    def _record_success(
        self, account: Account, sets: list[str], removes: list[str], conditions: list[str], values: dict[str, Any]
    ) -> int:
        """A save that changes no bill: one conditional update of the account, not a transaction."""
        if not self._update_account(
            account.user_id,
            account.account_id,
            UpdateExpression=_update_expression(sets, removes),
            ConditionExpression=" AND ".join(conditions),
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=_to_item(values),
        ):
            raise ConcurrentUpdate(f"account {account.account_id} changed while its bills were saved")
        return 0

    def _changes(
        self, account: Account, held: dict[str, StoredBill], fetched: Sequence[Bill], as_of: datetime
    ) -> list[_BillWrite]:
        """What a fetch read at ``as_of`` changes among the ``held`` bills: a put of each bill new or
        superseding the one held (``Bill.supersedes``) and a delete of each bill then paid and past the
        retention. A fetched bill paid and past it is not written at all, so it is not added back and pruned
        again at every fetch. A delete is conditional on exactly the bill read, as a put is: a concurrent
        save makes this one start over."""
        cutoff = retention_cutoff(as_of.date())
        writes: list[_BillWrite] = []
        replaced: set[str] = set()
        for bill in Bill.latest_revisions(fetched):
            previous = held.get(bill.provider_bill_id)
            if previous is not None and not previous.replaced_by(bill, as_of):
                continue
            if kept_on(bill, cutoff):
                writes.append(self._bill_put(account, bill, previous, as_of))
            elif previous is not None:
                writes.append(self._bill_delete(account, previous))
            replaced.add(bill.provider_bill_id)
        writes.extend(
            self._bill_delete(account, stored)
            for provider_bill_id, stored in held.items()
            if provider_bill_id not in replaced and not kept_on(stored.bill, cutoff)
        )
        return writes

    def _bill_item(self, account: Account, bill: Bill, fetched_at: str) -> dict[str, Any]:
        item = bill.model_dump(mode="json")
        item.update(
            {
                "PK": keys.user_pk(account.user_id),
                "SK": keys.bill_sk(bill),
                "LSI1SK": keys.bill_issue_sk(bill),
                "type": "bill",
                "fetched_at": fetched_at,
            }
        )
        return _to_item(item)

    def _bill_put(self, account: Account, bill: Bill, previous: StoredBill | None, as_of: datetime) -> _BillWrite:
        item = self._bill_item(account, bill, str(_iso(as_of)))
        put: dict[str, Any] = {"TableName": self._table, "Item": item}
        if previous is None:
            put["ConditionExpression"] = "attribute_not_exists(PK)"
        else:
            put.update(_exactly(previous))
        return _BillWrite(bill.provider_bill_id, bill, {"Put": put}, _bill_bytes(item), replaces=previous is not None)

    def _bill_delete(self, account: Account, stored: StoredBill) -> _BillWrite:
        key = {"PK": keys.user_pk(account.user_id), "SK": keys.bill_sk(stored.bill)}
        delete = {"TableName": self._table, "Key": _to_item(key), **_exactly(stored)}
        # Counted at the size of the bill it removes: what DynamoDB counts of a delete is not documented.
        size = _bill_bytes(self._bill_item(account, stored.bill, stored.fetched_at))
        return _BillWrite(stored.bill.provider_bill_id, None, {"Delete": delete}, size)

    def bills_page(self, user_id: str, query: BillQuery) -> tuple[list[Bill], str | None]:
        """One page of the user's bills, newest issue date first, and the cursor of the next page.

        One Query on LSI1 (bills only, ordered by issue date); filters the key cannot express are
        applied by DynamoDB, and the Query continues until the page is full or the bills run out.
        ``MalformedCursor`` for a cursor this listing never handed out.
        """
        names: dict[str, str] = {}
        values: dict[str, Any] = {":pk": keys.user_pk(user_id)}
        key_condition = "PK = :pk"
        if query.issued_from or query.issued_to:
            values[":first"], values[":last"] = keys.issued_between(query.issued_from, query.issued_to)
            key_condition += " AND LSI1SK BETWEEN :first AND :last"
        filters = []
        if query.provider:
            filters.append("provider = :provider")
            values[":provider"] = query.provider
        hidden = sorted(query.hidden_accounts)
        for group in range(0, len(hidden), FILTER_IN_LIMIT):
            # IN takes at most 100 operands.
            names_in = {
                f":hidden{index}": hidden[index] for index in range(group, min(group + FILTER_IN_LIMIT, len(hidden)))
            }
            filters.append(f"NOT account_id IN ({', '.join(names_in)})")
            values.update(names_in)
        if query.status is not None:
            names["#status"] = "status"
            filters.append(status_filter(query.status, query.today, values))
        arguments: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": "LSI1",
            "KeyConditionExpression": key_condition,
            "ScanIndexForward": False,
            "ConsistentRead": True,
            # A filter drops bills after they are read: read more per request than the page needs.
            "Limit": min(max(query.limit * 4, 100), 1000) if filters else query.limit,
        }
        if filters:
            arguments["FilterExpression"] = " AND ".join(filters)
        if names:
            arguments["ExpressionAttributeNames"] = names
        arguments["ExpressionAttributeValues"] = _to_item(values)
        start = start_key_of(user_id, query.cursor) if query.cursor else None
        taken: list[dict[str, Any]] = []
        more = True
        while more and len(taken) < query.limit:
            if start:
                arguments["ExclusiveStartKey"] = start
            try:
                response = self._client.query(**arguments)
            except ClientError as error:
                message = error.response["Error"].get("Message", "").lower()
                if query.cursor and error.response["Error"]["Code"] == "ValidationException" and "start" in message:
                    raise MalformedCursor() from error
                raise
            taken.extend(_from_item(item) for item in response["Items"])
            start = response.get("LastEvaluatedKey")
            more = start is not None
        page = taken[: query.limit]
        next_cursor = cursor_of(page[-1]) if page and (more or len(taken) > query.limit) else None
        return [Bill.model_validate(item) for item in page], next_cursor

    @staticmethod
    def cursor_after(bill: Bill) -> str:
        """The cursor of a page that ends with ``bill`` (one cut short of what ``bills_page`` read)."""
        return cursor_of({"LSI1SK": keys.bill_issue_sk(bill), "SK": keys.bill_sk(bill)})

    def bills_issued_since(self, user_id: str, since: date) -> list[Bill]:
        """The user's bills issued on or after ``since``: one paginated Query on LSI1. Eventually
        consistent (half the read units): spending over months does not hinge on the last second."""
        items = self._query(
            consistent=False,
            IndexName="LSI1",
            KeyConditionExpression="PK = :pk AND LSI1SK >= :since",
            ExpressionAttributeValues=_to_item({":pk": keys.user_pk(user_id), ":since": keys.issued_since(since)}),
        )
        return [Bill.model_validate(item) for item in items]
