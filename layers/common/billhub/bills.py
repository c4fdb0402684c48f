"""The aggregated view of a user's bills: what is due, what is overdue, and how fresh the data is.

Totals come from each account's summary (kept in the same transaction as its bills), so a page of
bills never has to be the whole list for the totals to be right.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from itertools import chain
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from billhub.catalog import CATALOG, provider_entry
from billhub.errors import InvalidCursor, NotFound
from billhub.models import (
    OPEN_BILLS_LISTED,
    REFRESH_PERIODS,
    Account,
    AccountStatus,
    Bill,
    BillStatus,
    Category,
    EarlierOpenBills,
    OpenBill,
    bill_id_of,
)
from billhub.money import format_amount, totals_by_currency
from billhub.store import BillQuery
from billhub.store.errors import ItemMissing, MalformedCursor
from billhub.store.protocols import Repositories

# Data is stale once two of its account's refresh intervals have passed without a success.
STALE_AFTER_INTERVALS = 2
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
# Lambda answers a synchronous invocation with at most 6 MB (6,291,456 bytes) of JSON, and API Gateway
# turns a larger one into a 502. That JSON holds the body as a string: Powertools' serializer (json.dumps,
# ASCII only) writes each non-ASCII character as \uXXXX (6 bytes, 12 outside the BMP), and the runtime's
# JSON of the answer escapes each " and \ of the body once more. So a page stops before the bill that
# would take the body, measured as it travels (``_encoded_size``), past 5 MB; the rest is headroom for
# the status and headers. Worst cases, every text at its maximum and outside the BMP: a bill of 100 line
# items of 200 characters with 128-character ids is under 300 KB; the rest of a page (the overdue and
# due-soon lists of 50 accounts x 24 open bills, each under 2 KB, and 50 accounts' freshness) under 2.5 MB.
# A page therefore always has room for several bills; it always takes its first one, so paging moves on.
MAX_RESPONSE_BYTES = 5 * 1024 * 1024
# Room left for ``next_cursor``, not known until the page is cut (at most ``MAX_CURSOR_LENGTH``).
_CURSOR_ROOM = 4 * 1024

# Long enough for the cursor of a bill whose ids are at their longest: two keys of under 600 bytes each
# (a 32-character provider, a 32-character account id, 128 characters of bill id at 4 bytes), as JSON
# in base64, are under 1,600 characters.
MAX_CURSOR_LENGTH = 2048
Cursor = Annotated[str, StringConstraints(pattern=rf"^[A-Za-z0-9_-]{{1,{MAX_CURSOR_LENGTH}}}$")]


class BillFilters(BaseModel):
    """``GET /bills`` query: which bills (by shown status and issue date) and which page."""

    model_config = ConfigDict(extra="forbid")

    status: BillStatus | None = Field(default=None, description="Only bills shown with this status")
    issued_from: date | None = Field(
        default=None, alias="from", description="Bills issued on or after this day (not after `to`)"
    )
    issued_to: date | None = Field(
        default=None, alias="to", description="Bills issued on or before this day (not before `from`)"
    )
    limit: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="Bills per page")
    cursor: Cursor | None = Field(default=None, description="The `next_cursor` of the previous page")

    @model_validator(mode="after")
    def _range_in_order(self) -> BillFilters:
        if self.issued_from and self.issued_to and self.issued_from > self.issued_to:
            raise ValueError("'from' must not be after 'to'")
        return self


class LineItemView(BaseModel):
    description: str
    amount: str


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
    line_items: list[LineItemView]


class OpenBillView(BaseModel):
    """An unpaid bill in the totals: overdue, or due within the user's ``due_soon_days``."""

    bill_id: str
    account_id: str
    provider: str
    category: Category
    amount: str
    currency: str
    issued_on: date
    due_on: date
    status: BillStatus


class Totals(BaseModel):
    due: dict[str, str] = Field(description="Everything unpaid, overdue included, per currency")
    overdue: dict[str, str]
    overdue_count: int
    next_due_on: date | None = Field(description="The earliest due date of an unpaid bill not yet overdue")
    due_soon: dict[str, str]
    due_soon_count: int
    due_soon_days: int


class AccountFreshness(BaseModel):
    account_id: str
    provider: str
    status: AccountStatus
    last_success_at: datetime | None
    last_attempt_at: datetime | None
    bill_count: int
    stale: bool
    stale_reason: str | None


class BillsPage(BaseModel):
    bills: list[BillView]
    totals: Totals
    overdue: list[OpenBillView] = Field(
        description=f"Overdue bills, earliest due first: of each account at most its {OPEN_BILLS_LISTED} latest due "
        "unpaid bills (`totals` count every one)"
    )
    due_soon: list[OpenBillView] = Field(description="Unpaid bills due within `totals.due_soon_days`, earliest first")
    accounts: list[AccountFreshness]
    as_of: datetime = Field(description="When the service read the bills (UTC, whole seconds)")
    next_cursor: str | None = None


def effective_status(bill: Bill | OpenBill, today: date) -> BillStatus:
    """A bill still unpaid after its due date is overdue, whatever the provider calls it (``BillStatus.shown``)."""
    return bill.status.shown(past_due=bill.due_on < today)


def freshness(account: Account, now: datetime) -> AccountFreshness:
    reason: str | None = None
    if account.last_success_at is None:
        reason = "Not refreshed yet." if account.last_error is None else f"Never refreshed: {account.last_error}"
    elif account.status is AccountStatus.NEEDS_REAUTH:
        reason = "The provider no longer accepts the stored credentials; link the account again."
    elif account.last_error is not None:
        reason = f"The last refresh failed: {account.last_error}"
    elif now - account.last_success_at > STALE_AFTER_INTERVALS * REFRESH_PERIODS[account.refresh_interval]:
        days = (STALE_AFTER_INTERVALS * REFRESH_PERIODS[account.refresh_interval]).days
        reason = f"The last successful refresh is older than {days} days ({account.refresh_interval} refreshes)."
    return AccountFreshness(
        account_id=account.account_id,
        provider=account.provider,
        status=account.status,
        last_success_at=account.last_success_at,
        last_attempt_at=account.last_attempt_at,
        bill_count=account.summary.bill_count,
        stale=reason is not None,
        stale_reason=reason,
    )


def bill_view(bill: Bill, today: date) -> BillView:
    return BillView(
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
        status=effective_status(bill, today),
        revision=bill.revision,
        line_items=[
            LineItemView(description=item.description, amount=format_amount(item.amount, bill.currency))
            for item in bill.line_items
        ],
    )


def open_bill_view(account: Account, bill: OpenBill, today: date) -> OpenBillView:
    """An account summary's unpaid bill as ``GET /bills`` lists it among the overdue and due soon."""
    return OpenBillView(
        bill_id=bill_id_of(account.provider, account.account_id, bill.provider_bill_id),
        account_id=account.account_id,
        provider=account.provider,
        category=CATALOG[account.provider].category,
        amount=format_amount(bill.amount, bill.currency),
        currency=bill.currency,
        issued_on=bill.issued_on,
        due_on=bill.due_on,
        status=effective_status(bill, today),
    )


def bills_page(
    accounts: list[Account],
    bills: list[Bill],
    due_soon_days: int,
    now: datetime,
    next_cursor: str | None = None,
) -> BillsPage:
    """One page of bills, with totals and freshness over every account given (not only the page)."""
    today = now.date()
    unpaid = sorted(
        ((account, bill) for account in accounts for bill in account.summary.open_bills),
        key=lambda entry: (entry[1].due_on, entry[0].account_id, entry[1].provider_bill_id),
    )
    overdue = [entry for entry in unpaid if effective_status(entry[1], today) is BillStatus.OVERDUE]
    upcoming = [entry for entry in unpaid if effective_status(entry[1], today) is not BillStatus.OVERDUE]
    due_soon = [entry for entry in upcoming if entry[1].due_on <= today + timedelta(days=due_soon_days)]
    # Unpaid bills beyond those an account's summary lists: counted in the total due always, and as
    # overdue once the latest of them is past due (all of them are then).
    earlier = [account.summary.earlier_open for account in accounts if account.summary.earlier_open]
    earlier_overdue = [bills for bills in earlier if bills.last_due_on < today]
    return BillsPage(
        bills=[bill_view(bill, today) for bill in bills],
        totals=Totals(
            due=_totals(unpaid, earlier),
            overdue=_totals(overdue, earlier_overdue),
            overdue_count=len(overdue) + sum(bills.count for bills in earlier_overdue),
            next_due_on=min((bill.due_on for _, bill in upcoming), default=None),
            due_soon=_totals(due_soon, []),
            due_soon_count=len(due_soon),
            due_soon_days=due_soon_days,
        ),
        overdue=[open_bill_view(account, bill, today) for account, bill in overdue],
        due_soon=[open_bill_view(account, bill, today) for account, bill in due_soon],
        accounts=[freshness(account, now) for account in accounts],
        as_of=now.replace(microsecond=0),
        next_cursor=next_cursor,
    )


def _totals(entries: list[tuple[Account, OpenBill]], earlier: list[EarlierOpenBills]) -> dict[str, str]:
    listed = ((bill.amount, bill.currency) for _, bill in entries)
    summed = ((amount, currency) for bills in earlier for currency, amount in bills.amounts.items())
    return totals_by_currency(chain(listed, summed))


def read_bills(
    store: Repositories, user_id: str, filters: BillFilters, now: datetime, provider: str | None = None
) -> BillsPage:
    """``GET /bills`` (or ``/bills/{provider}``): three requests whatever the number of accounts — the
    profile, the accounts (one Query) and one page of bills (one Query on the issue-date index).

    ``provider`` must be a registered name (``UnknownProvider`` otherwise); a provider the user has not
    linked is ``NotFound``; a cursor the listing never handed out is ``InvalidCursor``. Accounts being
    deleted are hidden, and so are their remaining bills.
    """
    adapter = provider_entry(provider) if provider is not None else None
    try:
        preferences = store.users.preferences(user_id)
    except ItemMissing as error:
        raise NotFound("No such user.") from error
    accounts = store.accounts.list_accounts(user_id)
    hidden = frozenset(account.account_id for account in accounts if account.status is AccountStatus.DELETING)
    shown = [
        account
        for account in accounts
        if account.account_id not in hidden and (adapter is None or account.provider == adapter.name)
    ]
    if adapter is not None and not shown:
        raise NotFound(f"You have no linked {adapter.display_name} account.")
    query = BillQuery(
        today=now.date(),
        limit=filters.limit,
        provider=adapter.name if adapter else None,
        status=filters.status,
        issued_from=filters.issued_from,
        issued_to=filters.issued_to,
        cursor=filters.cursor,
        hidden_accounts=hidden,
    )
    try:
        bills, next_cursor = store.bills.bills_page(user_id, query)
    except MalformedCursor as error:
        raise InvalidCursor() from error
    page = bills_page(shown, bills, preferences.due_soon_days, now, next_cursor)
    taken = _bills_within_budget(page)
    if taken == len(bills):
        return page
    # The rest waits for the next page, which starts right after the last bill shown.
    next_cursor = store.bills.cursor_after(bills[taken - 1])
    return page.model_copy(update={"bills": page.bills[:taken], "next_cursor": next_cursor})


def _bills_within_budget(page: BillsPage) -> int:
    """How many of the page's bills (at least one) fit in ``MAX_RESPONSE_BYTES`` with the rest of the page."""
    size = _encoded_size(page.model_copy(update={"bills": [], "next_cursor": None}).model_dump(mode="json"))
    size += _CURSOR_ROOM
    for taken, view in enumerate(page.bills):
        size += _encoded_size(view.model_dump(mode="json")) + (1 if taken else 0)  # and a comma before it
        if size > MAX_RESPONSE_BYTES and taken:
            return taken
    return len(page.bills)


def _encoded_size(value: Any) -> int:
    """The bytes ``value`` takes as Powertools writes it into a body and the runtime writes that body."""
    return len(json.dumps(json.dumps(value, separators=(",", ":")))) - 2
