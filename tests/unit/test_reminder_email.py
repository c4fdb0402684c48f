"""The daily reminder's email and the bills it lists (``billhub.reminders``): which bills are due soon and
overdue, the subject, the totals per currency, and the HTML escaping every value a provider or a user
typed (a provider's bill id, an account's nickname)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from billhub.models import Account, AccountStatus, AccountSummary, BillStatus, OpenBill
from billhub.reminders import bills_to_remind, next_reminder_at, reminder_email, reminder_subject

TODAY = date(2026, 11, 16)
SCRIPT = "<script>alert('x')</script>"


def an_account(bills: list[OpenBill], nickname: str | None = None, provider: str = "clearwater") -> Account:
    return Account(
        account_id="0123456789abcdef0123456789abcdef",
        user_id="u1",
        provider=provider,
        external_ref="CW-****0001",
        nickname=nickname,
        status=AccountStatus.ACTIVE,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        next_refresh_at=datetime(2026, 11, 17, tzinfo=UTC),
        summary=AccountSummary(open_bills=tuple(bills)),
    )


def open_bill(bill_id: str, due_on: date, amount: str, currency: str = "USD") -> OpenBill:
    return OpenBill(
        provider_bill_id=bill_id,
        amount=Decimal(amount),
        currency=currency,
        issued_on=date(2026, 10, 20),
        due_on=due_on,
        status=BillStatus.UNPAID,
    )


def test_the_html_escapes_a_provider_bill_id_and_a_nickname() -> None:
    # Given an account nicknamed with a script tag, holding an overdue bill whose provider id is one too
    account = an_account([open_bill(f'INV"{SCRIPT}', date(2026, 11, 10), "12.00")], nickname=f"Home {SCRIPT}")
    # When its reminder email is written
    email = reminder_email("ada@example.com", bills_to_remind([account], 7, TODAY))
    # Then the HTML holds no tag or quote of theirs, only their escaped text
    assert "<script>" not in email.html and "alert('x')" not in email.html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in email.html
    assert "INV&quot;&lt;script&gt;" in email.html
    # while the plain text shows them as typed
    assert f'ClearWater Utilities (Home {SCRIPT}), bill INV"{SCRIPT}: 12.00 USD' in email.text


def test_bills_due_within_the_users_days_and_overdue_are_listed_with_totals_per_currency() -> None:
    # Given bills due today, in 7 days, in 8 days, and overdue, in two currencies
    account = an_account(
        [
            open_bill("TODAY", TODAY, "1.5"),
            open_bill("IN-7", date(2026, 11, 23), "2.25", "EUR"),
            open_bill("IN-8", date(2026, 11, 24), "100.00"),
            open_bill("LATE", date(2026, 11, 15), "3.00"),
        ]
    )
    # When the reminder is put together for a user whose due-soon days are 7
    items = bills_to_remind([account], 7, TODAY)
    email = reminder_email("ada@example.com", items)
    # Then the overdue one comes first, then those due within 7 days; the one in 8 days is not listed
    assert [(item.bill.provider_bill_id, item.kind, item.days) for item in items] == [
        ("LATE", "overdue", 1),
        ("TODAY", "due_soon", 0),
        ("IN-7", "due_soon", 7),
    ]
    assert email.subject == "2 bills due soon, 1 overdue"
    assert "due today" in email.text and "due in 7 days" in email.text and "overdue by 1 day" in email.text
    # and the totals are per currency, never added across them
    assert "Total: 2.25 EUR, 4.50 USD" in email.text
    assert "IN-8" not in email.text


def test_the_subject_counts_what_there_is() -> None:
    assert reminder_subject(3, 1) == "3 bills due soon, 1 overdue"
    assert reminder_subject(1, 0) == "1 bill due soon"
    assert reminder_subject(0, 2) == "2 bills overdue"


def test_the_next_reminder_is_the_next_0800_utc() -> None:
    assert next_reminder_at(datetime(2026, 11, 16, 7, 59, tzinfo=UTC)) == datetime(2026, 11, 16, 8, tzinfo=UTC)
    assert next_reminder_at(datetime(2026, 11, 16, 8, 0, tzinfo=UTC)) == datetime(2026, 11, 17, 8, tzinfo=UTC)
    assert next_reminder_at(datetime(2026, 12, 31, 23, 0, tzinfo=UTC)) == datetime(2027, 1, 1, 8, tzinfo=UTC)
