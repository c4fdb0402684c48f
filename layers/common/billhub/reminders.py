"""The daily reminders: each user's bills due soon and overdue, announced once per bill on the event bus
(``bill.due_soon``, ``bill.overdue``) and listed every day in an email, unless they turned it off.

The reminders function (``functions/reminders``) runs on its own schedule, hourly by default. Each user's
profile is on the reminder schedule (``billhub.store.reminders``) at their next reminder, the next
08:00 UTC. A run finds the users due, and for each one reads the profile and the accounts (one Query:
each account's summary lists its unpaid bills, so no bill is read), then:

1. publishes a ``bill.due_soon`` for each unpaid bill due within the user's ``due_soon_days`` and a
   ``bill.overdue`` for each unpaid bill past its due date, of the bills not announced before;
2. claims the reminder: one conditional update moves the next reminder to the next 08:00 UTC and
   records the bills announced (trimmed to those still open), unless another run claimed it first;
3. having claimed it, sends the day's email, if the user has reminders on and anything is due soon or
   overdue.

Publishing comes before the claim because an event is idempotent (its id and time are the bill's: a
second publish is delivered once) and an email is not: a crash after the publish publishes again at the
next run, two runs at once both publish the same events, and only the run whose claim holds emails.
A crash between the claim and the email loses that day's email (the next day's comes as usual); a
``PutEvents`` refused leaves those bills unannounced, so the next day's run publishes them.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

from billhub.bills import OpenBillView, open_bill_view
from billhub.catalog import CATALOG
from billhub.event_bus import EventPublisher, EventsNotPublished
from billhub.events import Event, bill_event_data, event_id
from billhub.models import Account, AccountStatus, BillStatus, OpenBill
from billhub.money import totals_by_currency
from billhub.reminder_times import REMINDER_HOUR as REMINDER_HOUR
from billhub.reminder_times import next_reminder_at as next_reminder_at
from billhub.store.errors import ConcurrentUpdate

if TYPE_CHECKING:
    from billhub.store.protocols import ReminderRepositories
    from billhub.store.reminders import DueReminder, ReminderProfile

ReminderKind = Literal["due_soon", "overdue"]


def announced_mark(bill_id: str) -> str:
    """How the profile records a bill announced: a short digest of its id (ids run to ~200 characters,
    and a user's open bills to 50 x 24)."""
    return hashlib.sha256(bill_id.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RemindedBill:
    """A bill a reminder lists: the account it is of, the bill as its summary keeps it and as ``GET /bills``
    shows it, and whether (and by how many days) it is due soon or overdue."""

    account: Account
    bill: OpenBill
    view: OpenBillView
    kind: ReminderKind
    # Days until it is due (due soon), or since it was (overdue).
    days: int

    @property
    def mark(self) -> str:
        return announced_mark(self.view.bill_id)


def bills_to_remind(accounts: Sequence[Account], due_soon_days: int, today: date) -> list[RemindedBill]:
    """The unpaid bills overdue (due before ``today``) and due soon (due today or within ``due_soon_days``),
    of every account not being deleted, overdue first, each the earliest due first."""
    found: list[RemindedBill] = []
    for account in accounts:
        if account.status is AccountStatus.DELETING:
            continue
        for bill in account.summary.open_bills:
            if bill.status is BillStatus.PAID:
                continue
            view = open_bill_view(account, bill, today)
            if bill.due_on < today:
                found.append(RemindedBill(account, bill, view, "overdue", (today - bill.due_on).days))
            elif (bill.due_on - today).days <= due_soon_days:
                found.append(RemindedBill(account, bill, view, "due_soon", (bill.due_on - today).days))
    return sorted(found, key=lambda item: (item.kind != "overdue", item.bill.due_on, item.view.bill_id))


def reminder_event(user_id: str, item: RemindedBill, due_soon_days: int) -> Event:
    """The bill's ``bill.due_soon`` or ``bill.overdue``: one per bill ever (its id is the bill's).

    ``data`` is ``{"bill": <the bill as GET /bills lists it among the due soon and overdue: bill_id,
    account_id, provider, category, amount (a decimal string), currency, issued_on, due_on, status>,
    "days_until_due": N}`` for ``bill.due_soon`` (0: due today), ``"days_overdue": N`` for
    ``bill.overdue``. ``occurred_at`` is the day the fact became true, 00:00 UTC: the day the bill
    came within ``due_soon_days``, or the day after its due date; so the same event published again
    has the same time as well as the same id (the delivery log's key holds both).
    """
    due_on = item.bill.due_on
    if item.kind == "due_soon":
        became = due_on - timedelta(days=due_soon_days)
        return Event(
            event_id=event_id("bill.due_soon", item.view.bill_id),
            type="bill.due_soon",
            user_id=user_id,
            occurred_at=datetime.combine(became, time(0), UTC),
            data={**bill_event_data(item.view), "days_until_due": item.days},
        )
    return Event(
        event_id=event_id("bill.overdue", item.view.bill_id),
        type="bill.overdue",
        user_id=user_id,
        occurred_at=datetime.combine(due_on + timedelta(days=1), time(0), UTC),
        data={**bill_event_data(item.view), "days_overdue": item.days},
    )


# ---------------------------------------------------------------------- the email
@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    text: str
    html: str


class EmailNotSent(Exception):
    """The mail service refused or failed to take the email."""


class EmailSender(Protocol):
    def send(self, email: Email) -> None:
        """Sends ``email``, or raises ``EmailNotSent``."""
        ...


def _count(number: int, what: str) -> str:
    return f"{number} {what}{'' if number == 1 else 's'}"


def reminder_subject(due_soon: int, overdue: int) -> str:
    """ "3 bills due soon, 1 overdue", "1 bill due soon", "2 bills overdue"."""
    parts = []
    if due_soon:
        parts.append(f"{_count(due_soon, 'bill')} due soon")
    if overdue:
        parts.append(f"{overdue} overdue" if parts else f"{_count(overdue, 'bill')} overdue")
    return ", ".join(parts)


def _when(item: RemindedBill) -> str:
    if item.kind == "overdue":
        return f"overdue by {_count(item.days, 'day')}"
    return "due today" if item.days == 0 else f"due in {_count(item.days, 'day')}"


def _line_fields(item: RemindedBill) -> tuple[str, str, str, str]:
    """(what, amount, due date, when) of one bill, as plain text."""
    entry = CATALOG.get(item.account.provider)
    provider = entry.display_name if entry else item.account.provider
    what = f"{provider} ({item.account.nickname})" if item.account.nickname else provider
    what = f"{what}, bill {item.bill.provider_bill_id}"
    return what, f"{item.view.amount} {item.view.currency}", item.bill.due_on.isoformat(), _when(item)


def _totals(items: Sequence[RemindedBill]) -> str:
    totals = totals_by_currency((item.bill.amount, item.bill.currency) for item in items)
    return ", ".join(f"{amount} {currency}" for currency, amount in totals.items())


def reminder_email(to: str, items: Sequence[RemindedBill]) -> Email:
    """The day's email: each bill (provider, nickname, bill reference, amount, due date, overdue by or due
    in N days), overdue first, and the totals per currency; plain text and HTML, every value escaped in
    the HTML."""
    overdue = [item for item in items if item.kind == "overdue"]
    due_soon = [item for item in items if item.kind == "due_soon"]
    subject = reminder_subject(len(due_soon), len(overdue))
    text = ["Hello,", "", f"{subject}:", ""]
    page = [f"<p>Hello,</p><p>{html.escape(subject)}:</p>"]
    for title, group in (("Overdue", overdue), ("Due soon", due_soon)):
        if not group:
            continue
        text.append(f"{title}:")
        rows = []
        for item in group:
            what, amount, due_on, when = _line_fields(item)
            text.append(f"- {what}: {amount}, due {due_on}, {when}")
            cells = "".join(f"<td>{html.escape(value)}</td>" for value in (what, amount, due_on, when))
            rows.append(f"<tr>{cells}</tr>")
        text.append(f"Total {title.lower()}: {_totals(group)}")
        text.append("")
        page.append(
            f"<h2>{html.escape(title)}</h2><table>"
            "<tr><th>Bill</th><th>Amount</th><th>Due</th><th></th></tr>"
            f"{''.join(rows)}</table><p>Total {html.escape(title.lower())}: {html.escape(_totals(group))}</p>"
        )
    text.append(f"Total: {_totals(items)}")
    footer = "You get this email each day while bills are due soon or overdue; turn reminders off in your preferences."
    text += ["", footer]
    page.append(f"<p><strong>Total: {html.escape(_totals(items))}</strong></p><p>{html.escape(footer)}</p>")
    body = "".join(page)
    return Email(
        to=to,
        subject=subject,
        text="\n".join(text) + "\n",
        html=f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(subject)}</title></head>'
        f"<body>{body}</body></html>",
    )


class SesClient(Protocol):
    """What ``SesEmailSender`` needs of boto3's SES client."""

    def send_raw_email(self, **request: Any) -> Any: ...


def mime_message(sender: str, email: Email) -> bytes:
    """The email as MIME: ``multipart/alternative``, the plain text first, then the HTML."""
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"] = sender
    message["To"] = email.to
    message["Subject"] = email.subject
    message.set_content(email.text)
    message.add_alternative(email.html, subtype="html")
    return message.as_bytes()


class SesEmailSender:
    """``EmailSender`` over SES, from the service's verified sender address. ``SendRawEmail`` with the
    plain text and HTML as MIME alternatives: the same one email (and price) as ``SendEmail``, and moto,
    which keeps only one body of a ``SendEmail``, keeps both, for the local cloud to show."""

    def __init__(self, client: SesClient, sender: str) -> None:
        self._client = client
        self._sender = sender

    def send(self, email: Email) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            # The recipient is the To header's (naming it in Destinations too would send it twice in moto).
            self._client.send_raw_email(Source=self._sender, RawMessage={"Data": mime_message(self._sender, email)})
        except (BotoCoreError, ClientError) as error:
            raise EmailNotSent(str(error)) from error


# ---------------------------------------------------------------------- a run
@dataclass
class RemindersRun:
    """What a run did: users reminded (claimed), emails sent, events published, and what it skipped."""

    reminded: int = 0
    emails: int = 0
    events: int = 0
    # Found due but claimed by another run meanwhile, or being deleted.
    skipped: int = 0
    # Users whose events (published again next day) or email (lost for the day) failed.
    events_failed: list[str] = field(default_factory=list)
    emails_failed: list[str] = field(default_factory=list)
    # False: the run stopped for time with users still due (the next run reminds them).
    finished: bool = True


def send_reminders(
    store: ReminderRepositories,
    publisher: EventPublisher,
    mail: EmailSender,
    now: datetime,
    shards: Sequence[int],
    out_of_time: Callable[[], bool] = lambda: False,
) -> RemindersRun:
    """Reminds every user of ``shards`` due at ``now`` (``remind_user``), until ``out_of_time()``."""
    run = RemindersRun()
    for due in store.reminders.due_reminders(now, shards):
        if out_of_time():
            run.finished = False
            break
        try:
            remind_user(store, publisher, mail, due, now, run)
        except ConcurrentUpdate:
            # Its profile kept meeting transactions (a link's, a deletion's): still due, for the next run.
            run.skipped += 1
    return run


def remind_user(
    store: ReminderRepositories,
    publisher: EventPublisher,
    mail: EmailSender,
    due: DueReminder,
    now: datetime,
    run: RemindersRun | None = None,
) -> bool:
    """Announces the user's bills newly due soon or overdue, claims their reminder, and (having claimed
    it) emails them the day's list; False when another run claimed it first or the user is being deleted
    (nothing emailed, nothing recorded)."""
    run = run if run is not None else RemindersRun()
    profile = store.reminders.reminder_profile(due.user_id)
    if profile is None:
        run.skipped += 1
        return False
    today = now.date()
    accounts = store.accounts.list_accounts(due.user_id)
    items = bills_to_remind(accounts, profile.preferences.due_soon_days, today)
    announced = _announce(publisher, profile, items, run)
    still_open = {
        announced_mark(open_bill_view(account, bill, today).bill_id)
        for account in accounts
        for bill in account.summary.open_bills
    }
    due_soon_marks = (profile.reminded_due_soon & still_open) | announced["due_soon"]
    overdue_marks = (profile.reminded_overdue & still_open) | announced["overdue"]
    if not store.reminders.claim_reminder(due, next_reminder_at(now), due_soon_marks, overdue_marks):
        run.skipped += 1
        return False
    run.reminded += 1
    if profile.preferences.reminders and items:
        try:
            mail.send(reminder_email(profile.email, items))
        except EmailNotSent:
            run.emails_failed.append(due.user_id)
        else:
            run.emails += 1
    return True


def _announce(
    publisher: EventPublisher, profile: ReminderProfile, items: Sequence[RemindedBill], run: RemindersRun
) -> dict[ReminderKind, set[str]]:
    """Publishes the events of the bills not announced before; the marks of those published, per kind."""
    before: dict[ReminderKind, frozenset[str]] = {
        "due_soon": profile.reminded_due_soon,
        "overdue": profile.reminded_overdue,
    }
    new = [item for item in items if item.mark not in before[item.kind]]
    published: dict[ReminderKind, set[str]] = {"due_soon": set(), "overdue": set()}
    if not new:
        return published
    try:
        publisher.publish([reminder_event(profile.user_id, item, profile.preferences.due_soon_days) for item in new])
    except EventsNotPublished:
        run.events_failed.append(profile.user_id)
        return published
    run.events += len(new)
    for item in new:
        published[item.kind].add(item.mark)
    return published
