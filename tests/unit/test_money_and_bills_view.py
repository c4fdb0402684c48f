"""The aggregated view: totals per currency, overdue rules, freshness."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from billhub.bills import bills_page, effective_status
from billhub.models import Account, AccountStatus, AccountSummary, Bill, BillStatus, Category
from billhub.money import format_amount, totals_by_currency

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def make_account(account_id: str = "a1", **changes: object) -> Account:
    values: dict[str, object] = {
        "account_id": account_id,
        "user_id": "u1",
        "provider": "clearwater",
        "external_ref": "••••1234",
        "status": AccountStatus.ACTIVE,
        "created_at": NOW - timedelta(days=30),
        "last_success_at": NOW - timedelta(hours=1),
        "next_refresh_at": NOW + timedelta(hours=23),
    }
    values.update(changes)
    return Account.model_validate(values)


def make_bill(
    bill_id: str, amount: str, due_on: date, status: BillStatus, currency: str = "USD", account_id: str = "a1"
) -> Bill:
    return Bill(
        provider="clearwater",
        account_id=account_id,
        provider_bill_id=bill_id,
        category=Category.WATER,
        amount=Decimal(amount),
        currency=currency,
        issued_on=due_on - timedelta(days=21),
        due_on=due_on,
        status=status,
    )


def test_amounts_keep_their_currency_minor_units() -> None:
    assert format_amount(Decimal("42.1"), "USD") == "42.10"
    assert format_amount(Decimal("1500"), "JPY") == "1500"
    assert format_amount(Decimal("1.2345"), "KWD") == "1.234"


def test_totals_are_never_summed_across_currencies() -> None:
    totals = totals_by_currency([(Decimal("10.10"), "USD"), (Decimal("5"), "EUR"), (Decimal("0.90"), "USD")])
    assert totals == {"EUR": "5.00", "USD": "11.00"}


def test_unpaid_bill_past_its_due_date_counts_as_overdue() -> None:
    bill = make_bill("b1", "10", date(2026, 11, 21), BillStatus.UNPAID)
    assert effective_status(bill, date(2026, 11, 22)) is BillStatus.OVERDUE
    assert effective_status(bill, date(2026, 11, 21)) is BillStatus.UNPAID


def summarised(account: Account, bills: list[Bill]) -> Account:
    return account.model_copy(update={"summary": AccountSummary.of(bills)})


def test_page_totals_due_overdue_due_soon_and_next_due_date() -> None:
    # Given a paid bill, an unpaid one due in a week, one due in three weeks, one the provider calls
    # unpaid but is late, and an open bill in another currency
    bills = [
        make_bill("paid", "30.00", date(2026, 10, 22), BillStatus.PAID),
        make_bill("next", "41.25", date(2026, 11, 29), BillStatus.UNPAID),
        make_bill("later", "8.00", date(2026, 12, 13), BillStatus.UNPAID),
        make_bill("late", "12.50", date(2026, 11, 20), BillStatus.UNPAID),
        make_bill("eur", "9.99", date(2026, 12, 5), BillStatus.UNPAID, currency="EUR"),
    ]
    account = summarised(make_account(), bills)
    # When a page is built with a due-soon window of 14 days, showing only one bill of the page
    page = bills_page([account], bills[:1], due_soon_days=14, now=NOW)
    # Then totals cover every open bill of the account (not only the page), per currency
    assert page.totals.due == {"EUR": "9.99", "USD": "61.75"}
    assert page.totals.overdue == {"USD": "12.50"}
    assert page.totals.overdue_count == 1
    assert page.totals.next_due_on == date(2026, 11, 29)
    # and "due soon" is the unpaid bills due within 14 days that are not overdue yet
    assert [bill.bill_id for bill in page.due_soon] == ["clearwater.a1.next", "clearwater.a1.eur"]
    assert page.totals.due_soon == {"EUR": "9.99", "USD": "41.25"}
    assert (page.totals.due_soon_count, page.totals.due_soon_days) == (2, 14)
    assert [(bill.bill_id, bill.status) for bill in page.overdue] == [("clearwater.a1.late", BillStatus.OVERDUE)]
    assert [bill.provider_bill_id for bill in page.bills] == ["paid"]


def test_freshness_says_why_data_is_stale() -> None:
    accounts = [
        make_account("fresh"),
        make_account("never", last_success_at=None),
        make_account("failing", last_error="ClearWater Utilities is unavailable (HTTP 503)."),
        make_account("old", last_success_at=NOW - timedelta(days=3)),
        make_account("weekly", last_success_at=NOW - timedelta(days=6), refresh_interval="weekly"),
        make_account("weekly_old", last_success_at=NOW - timedelta(days=15), refresh_interval="weekly"),
    ]
    freshness = {account.account_id: account for account in bills_page(accounts, [], 7, NOW).accounts}
    assert not freshness["fresh"].stale
    assert freshness["never"].stale and freshness["never"].stale_reason == "Not refreshed yet."
    assert freshness["failing"].stale and "HTTP 503" in (freshness["failing"].stale_reason or "")
    assert freshness["old"].stale and "older than 2 days" in (freshness["old"].stale_reason or "")
    # Weekly accounts are judged by their own interval
    assert not freshness["weekly"].stale
    assert freshness["weekly_old"].stale and "older than 14 days" in (freshness["weekly_old"].stale_reason or "")


def test_summary_keeps_open_bills_count_and_last_issue_date() -> None:
    bills = [
        make_bill("paid", "30.00", date(2026, 10, 22), BillStatus.PAID),
        make_bill("late", "12.50", date(2026, 11, 20), BillStatus.OVERDUE),
        make_bill("next", "41.25", date(2026, 11, 29), BillStatus.UNPAID),
    ]
    summary = AccountSummary.of(bills)
    assert summary.bill_count == 3
    assert [bill.provider_bill_id for bill in summary.open_bills] == ["late", "next"]
    assert summary.last_issued_on == date(2026, 11, 8)


def test_a_bill_supersedes_the_one_held_only_when_newer_and_different() -> None:
    held = make_bill("b1", "10", date(2026, 11, 21), BillStatus.UNPAID)
    paid = held.model_copy(update={"status": BillStatus.PAID})
    corrected = held.model_copy(update={"amount": Decimal("12"), "revision": 2})
    earlier, later = NOW - timedelta(hours=1), NOW
    # A higher revision wins, even when read earlier; an older revision never does.
    assert corrected.supersedes(held, held_read_at=later, read_at=earlier)
    assert not held.supersedes(corrected, held_read_at=earlier, read_at=later)
    # The same revision changed (paid since) wins only when read later than the one held.
    assert paid.supersedes(held, held_read_at=earlier, read_at=later)
    assert not paid.supersedes(held, held_read_at=later, read_at=earlier)
    assert not paid.supersedes(held, held_read_at=later, read_at=later)
    # An identical statement never replaces the one held, however much later it was read.
    assert not held.supersedes(held, held_read_at=earlier, read_at=later)
