"""The aggregated view of a user's bills: what is due, what is overdue, and how fresh the data is."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from pydantic import BaseModel

from billhub.models import Account, AccountStatus, Bill, BillStatus, Category
from billhub.money import format_amount, totals_by_currency
from billhub.store import UserSnapshot

# Accounts refresh at least daily; data older than this is called stale.
STALE_AFTER = timedelta(hours=48)


class BillView(BaseModel):
    bill_id: str
    account_id: str
    provider: str
    provider_bill_id: str
    category: Category
    amount: str
    currency: str
    issued_on: date
    due_on: date
    period_start: date | None
    period_end: date | None
    status: BillStatus
    revision: int


class Totals(BaseModel):
    due: dict[str, str]
    overdue: dict[str, str]
    overdue_count: int
    next_due_on: date | None


class AccountFreshness(BaseModel):
    account_id: str
    provider: str
    status: AccountStatus
    last_success_at: datetime | None
    last_attempt_at: datetime | None
    stale: bool
    stale_reason: str | None


class BillsPage(BaseModel):
    bills: list[BillView]
    totals: Totals
    accounts: list[AccountFreshness]
    as_of: datetime
    next_cursor: str | None = None


def effective_status(bill: Bill, today: date) -> BillStatus:
    """A bill still unpaid after its due date is overdue, whatever the provider calls it."""
    if bill.status is BillStatus.UNPAID and bill.due_on < today:
        return BillStatus.OVERDUE
    return bill.status


def freshness(account: Account, now: datetime) -> AccountFreshness:
    reason: str | None = None
    if account.last_success_at is None:
        reason = "Not refreshed yet." if account.last_error is None else f"Never refreshed: {account.last_error}"
    elif account.status is AccountStatus.NEEDS_REAUTH:
        reason = "The provider no longer accepts the stored credentials; link the account again."
    elif account.last_error is not None:
        reason = f"The last refresh failed: {account.last_error}"
    elif now - account.last_success_at > STALE_AFTER:
        reason = "The last successful refresh is older than 48 hours."
    return AccountFreshness(
        account_id=account.account_id,
        provider=account.provider,
        status=account.status,
        last_success_at=account.last_success_at,
        last_attempt_at=account.last_attempt_at,
        stale=reason is not None,
        stale_reason=reason,
    )


def bills_page(snapshot: UserSnapshot, now: datetime, provider: str | None = None) -> BillsPage:
    """Bills newest first, totals per currency, and per-account freshness; deleting accounts are hidden."""
    today = now.date()
    accounts = [
        account
        for account in snapshot.accounts
        if account.status is not AccountStatus.DELETING and provider in (None, account.provider)
    ]
    visible = {account.account_id for account in accounts}
    bills = sorted(
        (bill for bill in snapshot.bills if bill.account_id in visible),
        key=lambda bill: (bill.due_on, bill.bill_id),
        reverse=True,
    )
    statuses = {bill.bill_id: effective_status(bill, today) for bill in bills}
    open_bills = [bill for bill in bills if statuses[bill.bill_id] is not BillStatus.PAID]
    overdue = [bill for bill in open_bills if statuses[bill.bill_id] is BillStatus.OVERDUE]
    upcoming = [bill.due_on for bill in open_bills if bill.due_on >= today]
    return BillsPage(
        bills=[
            BillView(
                bill_id=bill.bill_id,
                account_id=bill.account_id,
                provider=bill.provider,
                provider_bill_id=bill.provider_bill_id,
                category=bill.category,
                amount=format_amount(bill.amount, bill.currency),
                currency=bill.currency,
                issued_on=bill.issued_on,
                due_on=bill.due_on,
                period_start=bill.period_start,
                period_end=bill.period_end,
                status=statuses[bill.bill_id],
                revision=bill.revision,
            )
            for bill in bills
        ],
        totals=Totals(
            due=totals_by_currency((bill.amount, bill.currency) for bill in open_bills),
            overdue=totals_by_currency((bill.amount, bill.currency) for bill in overdue),
            overdue_count=len(overdue),
            next_due_on=min(upcoming, default=None),
        ),
        accounts=[freshness(account, now) for account in accounts],
        as_of=now,
    )
