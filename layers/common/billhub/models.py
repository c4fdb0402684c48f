"""The canonical domain model: users, linked accounts, bills and refresh jobs.

Money is always a ``Decimal`` beside an ISO 4217 currency code; it is never a float and amounts in
different currencies are never added together.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
# An account's or a refresh job's id as this service makes them (``uuid4().hex``).
ResourceId = Annotated[str, StringConstraints(pattern=r"^[a-f0-9]{32}$")]
# Free text a user types (a nickname, a password for a provider): any characters but control characters.
# The pattern is what a schema can say; ``Visible`` refuses the rest of the characters nobody sees.
PrintableText = r"^[^\x00-\x1f\x7f]*$"
# Controls (Cc: C0, DEL, C1), format characters (Cf: zero-width space and joiners, bidi overrides, BOM, soft
# hyphen, tags), lone surrogates (Cs) and the line and paragraph separators (Zl, Zp): invisible or
# line-breaking, they make two different values look the same, or forge lines in logs and terminals.
UNSEEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def refuse_unseen_characters(value: str) -> str:
    for char in value:
        if unicodedata.category(char) in UNSEEN_CATEGORIES:
            name = unicodedata.name(char, "a control or format character")
            raise ValueError(f"must not contain U+{ord(char):04X} ({name}): no control or format characters")
    return value


Visible = AfterValidator(refuse_unseen_characters)
# Linked accounts per user: far past a household's utilities (a few each of electricity, gas, water and
# internet, a second home or a parent's too), and a bound on the user's partition (DynamoDB caps an item
# collection at 10 GB on a table with a local secondary index) and on the accounts a page reads.
MAX_ACCOUNTS_PER_USER = 50
RefreshInterval = Literal["daily", "weekly"]
REFRESH_PERIODS: dict[RefreshInterval, timedelta] = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}


class Category(StrEnum):
    ELECTRICITY = "electricity"
    GAS = "gas"
    WATER = "water"
    INTERNET = "internet"


class BillStatus(StrEnum):
    PAID = "paid"
    UNPAID = "unpaid"
    OVERDUE = "overdue"

    def shown(self, past_due: bool) -> BillStatus:
        """The status shown for a bill stored with this one: still unpaid after its due date, it is overdue,
        whatever the provider calls it. Nothing else counts, so the store derives its status filter from
        this (``store.bill_queries.status_filter``) and the two cannot disagree."""
        return BillStatus.OVERDUE if self is BillStatus.UNPAID and past_due else self


class AccountStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    NEEDS_REAUTH = "needs_reauth"
    DELETING = "deleting"


class Preferences(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_interval: RefreshInterval = "daily"
    due_soon_days: int = Field(default=7, ge=1, le=60)
    currency: CurrencyCode = "USD"
    # A daily email listing the bills due soon and the overdue ones (``billhub.reminders``).
    reminders: bool = True


class User(BaseModel):
    user_id: str
    email: str
    created_at: datetime
    preferences: Preferences = Field(default_factory=Preferences)
    # Set when the user deleted themselves and the deletion has not finished yet.
    deleting_since: datetime | None = None
    # When their next daily reminder is due (their GSI1 keys say it too); None for a profile from before
    # the reminders, which is filed at its next login (``billhub.users.login``).
    next_reminder_at: datetime | None = None


@dataclass(frozen=True)
class LoginSubject:
    """What failed sign-ins are counted against: the email typed (``account``), or the caller's source IP."""

    kind: Literal["account", "source"]
    value: str

    @classmethod
    def email(cls, email: str) -> LoginSubject:
        return cls("account", email)

    @classmethod
    def source(cls, source_ip: str) -> LoginSubject:
        return cls("source", source_ip)


def bill_id_of(provider: str, account_id: str, provider_bill_id: str) -> str:
    """A bill's id in the API: stable across re-fetches and revisions."""
    return f"{provider}.{account_id}.{provider_bill_id}"


class OpenBill(BaseModel):
    """An unpaid bill as its account's summary keeps it: enough for the totals without reading bills."""

    provider_bill_id: str
    amount: Decimal
    currency: CurrencyCode
    issued_on: date
    due_on: date
    status: BillStatus


# An account's summary lists its unpaid bills one by one up to this many, the latest due; earlier ones are
# kept as a count and sums (``EarlierOpenBills``), so the total due still counts every one of them. It
# bounds the account item (24 entries of at most ~0.7 KB, a 128-character bill id at 4 bytes a character:
# under 17 KB of DynamoDB's 400 KB, where the open bills of one account were unbounded) and the overdue and
# due-soon lists of ``GET /bills`` (``bills.MAX_RESPONSE_BYTES``). Two years of monthly bills left unpaid.
OPEN_BILLS_LISTED = 24


class EarlierOpenBills(BaseModel):
    """An account's unpaid bills beyond the ``OPEN_BILLS_LISTED`` latest due: each is due on or before
    ``last_due_on`` (no later than any listed one), and counts in the totals through these sums."""

    count: int = Field(ge=1)
    amounts: dict[CurrencyCode, Decimal]
    last_due_on: date


class AccountSummary(BaseModel):
    """The account's aggregates, written in the same transaction as every change to its bills, so they
    always describe exactly the bills stored."""

    bill_count: int = 0
    open_bills: tuple[OpenBill, ...] = ()
    earlier_open: EarlierOpenBills | None = None
    last_issued_on: date | None = None

    @classmethod
    def of(cls, bills: Iterable[Bill]) -> AccountSummary:
        bills = list(bills)
        unpaid = sorted(
            (bill for bill in bills if bill.status is not BillStatus.PAID),
            key=lambda bill: (bill.due_on, bill.provider_bill_id),
        )
        split = max(len(unpaid) - OPEN_BILLS_LISTED, 0)
        earlier, listed = unpaid[:split], unpaid[split:]
        amounts: dict[str, Decimal] = {}
        for bill in earlier:
            amounts[bill.currency] = amounts.get(bill.currency, Decimal(0)) + bill.amount
        return cls(
            bill_count=len(bills),
            open_bills=tuple(
                OpenBill(
                    provider_bill_id=bill.provider_bill_id,
                    amount=bill.amount,
                    currency=bill.currency,
                    issued_on=bill.issued_on,
                    due_on=bill.due_on,
                    status=bill.status,
                )
                for bill in listed
            ),
            earlier_open=EarlierOpenBills(count=len(earlier), amounts=amounts, last_due_on=earlier[-1].due_on)
            if earlier
            else None,
            last_issued_on=max((bill.issued_on for bill in bills), default=None),
        )


# Bills are kept at least this many calendar months by issue date; a paid bill issued before that is
# pruned by its account's next fetch (``retention_cutoff``), an unpaid or overdue one is never. The
# longest read, ``GET /insights?months=36``, reaches back 41 months before the current one (its window
# and 6 months of history: ``insights.history_start``), so no figure ever misses a pruned bill.
BILL_RETENTION_MONTHS = 48


def retention_cutoff(today: date) -> date:
    """The earliest issue date a paid bill is kept with on ``today``: the first day of the calendar month
    ``BILL_RETENTION_MONTHS`` before the current one. Whole months, so no day (a 31st, a 29 February) is
    ever clamped: every day of a month has the same cutoff."""
    index = today.year * 12 + today.month - 1 - BILL_RETENTION_MONTHS
    return date(index // 12, index % 12 + 1, 1)


def kept_on(bill: Bill, cutoff: date) -> bool:
    """Whether ``bill`` is kept while ``cutoff`` is the retention's: unpaid and overdue bills always are."""
    return bill.status is not BillStatus.PAID or bill.issued_on >= cutoff


class Account(BaseModel):
    """A provider account linked by a user. Credentials are held apart, encrypted, never in here."""

    account_id: str
    user_id: str
    provider: str
    external_ref: str = Field(description="The provider's account reference, masked for display")
    nickname: str | None = None
    status: AccountStatus
    created_at: datetime
    last_success_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_error: str | None = None
    next_refresh_at: datetime
    # The owner's preference, copied onto each account so the planner never reads profiles.
    refresh_interval: RefreshInterval = "daily"
    summary: AccountSummary = Field(default_factory=AccountSummary)


class LineItem(BaseModel):
    """One charge on a bill as the provider itemised it (usage, standing charge, tax, a credit...)."""

    model_config = ConfigDict(frozen=True)

    description: str = Field(min_length=1, max_length=200)
    amount: Decimal


class Bill(BaseModel):
    """One statement from a provider, normalised. ``(provider, account_id, provider_bill_id)`` is its identity."""

    model_config = ConfigDict(frozen=True)

    provider: str
    account_id: str
    provider_bill_id: str = Field(min_length=1, max_length=128)
    category: Category
    amount: Decimal
    currency: CurrencyCode
    issued_on: date
    due_on: date
    period_start: date | None = None
    period_end: date | None = None
    status: BillStatus
    revision: int = Field(default=1, ge=1)
    # As the provider itemised the bill; empty when it does not. Kept as sent, even when it does not
    # add up to ``amount`` (insights flag that rather than hide it).
    line_items: tuple[LineItem, ...] = ()

    @property
    def bill_id(self) -> str:
        """Stable id of this bill in the API, the same across re-fetches and revisions."""
        return bill_id_of(self.provider, self.account_id, self.provider_bill_id)

    def same_statement(self, other: Bill) -> bool:
        """True when ``other`` carries exactly what this bill does (a re-fetch that changed nothing)."""
        return self.model_dump() == other.model_dump()

    @staticmethod
    def latest_revisions(bills: Iterable[Bill]) -> list[Bill]:
        """One bill per provider bill id (the highest revision; of two alike, the later), should paging
        at the provider have shown one twice."""
        latest: dict[str, Bill] = {}
        for bill in bills:
            seen = latest.get(bill.provider_bill_id)
            if seen is None or bill.revision >= seen.revision:
                latest[bill.provider_bill_id] = bill
        return list(latest.values())

    def supersedes(self, held: Bill, held_read_at: datetime, read_at: datetime) -> bool:
        """Whether this bill, read from the provider at ``read_at``, replaces ``held`` (read at
        ``held_read_at``): a higher revision, or the same revision changed (paid since) and read later.
        Never an older revision, never an older read, never an identical statement."""
        if held.revision > self.revision or held.same_statement(self):
            return False
        return held.revision < self.revision or held_read_at < read_at


class JobAccountResult(BaseModel):
    status: Literal["succeeded", "retrying", "failed"]
    error: str | None = None


class RefreshJob(BaseModel):
    job_id: str
    user_id: str
    account_ids: list[str]
    created_at: datetime
    results: dict[str, JobAccountResult] = Field(default_factory=dict)

    @property
    def succeeded(self) -> int:
        return sum(1 for result in self.results.values() if result.status == "succeeded")

    @property
    def failed(self) -> int:
        return sum(1 for result in self.results.values() if result.status == "failed")

    @property
    def pending(self) -> int:
        return len(self.account_ids) - self.succeeded - self.failed

    @property
    def status(self) -> Literal["running", "succeeded", "failed", "partial"]:
        if self.pending:
            return "running"
        if not self.failed:
            return "succeeded"
        return "failed" if not self.succeeded else "partial"


class FetchRequest(BaseModel):
    """The body of one ``FetchQueue`` message: fetch this account's bills."""

    model_config = ConfigDict(extra="forbid")

    user_id: str
    account_id: str
    job_id: str | None = None
    reason: Literal["link", "manual", "schedule"]
    # The account's provider, when the sender knows it: the request then goes to that provider's fetch
    # lane (billhub.queue.FetchQueue), so each provider's fetches are batched only with their own.
    provider: str | None = None
    # Times this fetch was put off (provider budget spent, circuit open); deferrals never count as failures.
    deferrals: int = Field(default=0, ge=0)
