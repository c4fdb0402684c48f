"""Every key of the single table: the formats of PK, SK, GSI1PK/GSI1SK and LSI1SK, and their prefixes.

No other module spells a key (``tests/unit/test_keys.py`` scans for prefixes outside this one), and
changing a format here changes the stored layout: items written before would no longer be found.
The layout is ``docs/data-model.md``'s item table:

    USER#<uid>                     PROFILE                               user profile
    EMAIL#<email>                  EMAIL                                 unique email -> uid
    USER#<uid>                     ACCOUNT#<aid>                         linked account
    USER#<uid>                     LINK#<provider>#<ref digest>          one link per provider account per user
    USER#<uid>                     BILL#<provider>#<aid>#<bill>          one bill
    USER#<uid>                     DELETED#<aid>                         an account deleted lately
    USER#<uid>                     JOB#<job_id>                          refresh job
    USER#<uid>                     WEBHOOK#<wid>                         a webhook
    USER#<uid>                     DELIVERY#<wid>#<occurred_at>#<event>  an event's delivery to a webhook
    USER#<uid>                     OAUTHSTATE#<nonce>                    names the OAuth2 state below
    OAUTHSTATE#<nonce>             STATE                                 an OAuth2 link in progress
    LOGINATTEMPTS#<kind>#<digest>  WINDOW                                failed sign-ins per email / source IP
    IDEMPOTENCY#<uid>              <route>#<sha256>                      an Idempotency-Key's first answer
    RATE#<provider>                SECOND#<epoch second>                 a provider's request budget
    ADMIT#<provider>               HOUR#<epoch second of the hour>       a provider's scheduled refreshes admitted
    CIRCUIT                        <provider>                            a provider's circuit breaker
    ALERT#<incident>               ALERT                                 one alert per incident
    BURST#<burst>                  WINDOW#<window>                       events of a burst in a window

    GSI1 of an account   REFRESH#<provider>#<shard>   <next_refresh_at>#<aid>#<interval>
      (filed before providers)  REFRESH#<shard>
         being deleted   DELETING          <deleting_since>#<uid>#<aid>
    GSI1 of a profile    REMIND#<shard>    <next_reminder_at>#<uid>    (the daily reminders' schedule)
         being deleted   DELETING_USERS    <deleting_since>#<uid>      (while its user deletes themselves)
    LSI1 of a bill       (PK)              <issued_on>#<provider>#<aid>#<bill>
"""

from __future__ import annotations

import hashlib
import re
from datetime import date, datetime
from typing import TYPE_CHECKING, cast, get_args

from billhub.models import RefreshInterval

if TYPE_CHECKING:
    from billhub.models import Bill, LoginSubject

SEPARATOR = "#"

# Partition key prefixes.
USER = "USER#"
EMAIL = "EMAIL#"
OAUTH_STATE = "OAUTHSTATE#"
LOGIN_ATTEMPTS = "LOGINATTEMPTS#"
IDEMPOTENCY = "IDEMPOTENCY#"
RATE = "RATE#"
ADMIT = "ADMIT#"
ALERT = "ALERT#"
BURST = "BURST#"
# Sort key prefixes (a user's OAuth2 state pointers start with ``OAUTH_STATE`` too).
ACCOUNT = "ACCOUNT#"
LINK = "LINK#"
BILL = "BILL#"
DELETED = "DELETED#"
JOB = "JOB#"
WEBHOOK = "WEBHOOK#"
DELIVERY = "DELIVERY#"
SECOND = "SECOND#"
HOUR = "HOUR#"
BURST_WINDOW = "WINDOW#"
# GSI1 partition prefix of the accounts' refresh schedule.
REFRESH = "REFRESH#"
# GSI1 partition prefix of the profiles' reminder schedule.
REMIND = "REMIND#"

# Every prefix above: no other module may spell one.
PREFIXES = (
    USER,
    EMAIL,
    OAUTH_STATE,
    LOGIN_ATTEMPTS,
    IDEMPOTENCY,
    RATE,
    ADMIT,
    ALERT,
    BURST,
    ACCOUNT,
    LINK,
    BILL,
    DELETED,
    JOB,
    WEBHOOK,
    DELIVERY,
    SECOND,
    HOUR,
    BURST_WINDOW,
    REFRESH,
    REMIND,
)

# Fixed keys.
PROFILE_SK = "PROFILE"
EMAIL_SK = "EMAIL"
OAUTH_STATE_SK = "STATE"
LOGIN_ATTEMPTS_SK = "WINDOW"
ALERT_SK = "ALERT"
CIRCUIT_PK = "CIRCUIT"
# GSI1 partitions where the planner's sweep finds deletions nobody finished.
DELETING_ACCOUNTS = "DELETING"
DELETING_USERS = "DELETING_USERS"

FIXED_KEYS = (
    PROFILE_SK,
    EMAIL_SK,
    OAUTH_STATE_SK,
    LOGIN_ATTEMPTS_SK,
    ALERT_SK,
    CIRCUIT_PK,
    DELETING_ACCOUNTS,
    DELETING_USERS,
)

# The refresh schedule's shards (GSI1PK REFRESH#<provider>#<n>; REFRESH#<n> for accounts filed before
# the provider was in the key), each planned by a worker of its own. The count may only ever grow, never
# shrink: an account keeps the shard it was filed under until it is next claimed or rescheduled (then it
# moves to its shard under the count of the day), and planners plan every index below the count, of each
# provider and of the keys without one, so accounts filed under a smaller count are still found, without
# a migration.
REFRESH_SHARDS = 8
# A shard is one byte of the account id's digest, modulo the count.
MAX_REFRESH_SHARDS = 256


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _digest(value: str) -> str:
    """A short digest, so a key discloses (or holds) no provider account number, email or IP as typed."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


# ---------------------------------------------------------------------- users
def user_pk(user_id: str) -> str:
    return f"{USER}{user_id}"


def user_id_of(pk: str) -> str:
    """The user id of a ``user_pk``."""
    return pk.removeprefix(USER)


def email_pk(email: str) -> str:
    return f"{EMAIL}{email}"


def deleting_user_sk(deleting_since: datetime, user_id: str) -> str:
    """GSI1SK of a profile under ``DELETING_USERS``."""
    return f"{_iso(deleting_since)}#{user_id}"


def deleting_before(started_before: datetime) -> str:
    """The GSI1SK below which every sweep entry (account or user) began its deletion before ``started_before``."""
    return _iso(started_before)


# ---------------------------------------------------------------------- accounts
def account_sk(account_id: str) -> str:
    return f"{ACCOUNT}{account_id}"


def account_id_of(sk: str) -> str:
    """The account id of an ``account_sk``."""
    return sk.removeprefix(ACCOUNT)


def link_sk(provider: str, external_id: str) -> str:
    # A digest, not the provider's account number, so the key itself discloses nothing.
    return f"{LINK}{provider}#{_digest(external_id)}"


def deleted_sk(account_id: str) -> str:
    """The marker of an account deleted lately (a repeated DELETE is 204)."""
    return f"{DELETED}{account_id}"


def deleting_account_sk(deleting_since: datetime, user_id: str, account_id: str) -> str:
    """GSI1SK of an account under ``DELETING_ACCOUNTS``."""
    return f"{_iso(deleting_since)}#{user_id}#{account_id}"


# ---------------------------------------------------------------------- the refresh schedule (GSI1)
def refresh_pk(shard: int, provider: str | None = None) -> str:
    """A shard of the provider's refresh schedule; without a provider, the shard as keys were written
    before the provider was in them (still planned: those accounts move as they are next claimed)."""
    if provider is None:
        return f"{REFRESH}{shard}"
    if SEPARATOR in provider:
        raise ValueError("provider names never contain '#'")
    return f"{REFRESH}{provider}#{shard}"


def refresh_shard(account_id: str, provider: str | None = None) -> str:
    """The GSI1PK of the account's refresh schedule: one of ``REFRESH_SHARDS`` of its provider (the count
    read at each call, so a grown count files accounts anew), by a digest of its id. Accounts are
    filed with their provider; without one, this is the key they were filed under before."""
    digest = hashlib.sha256(account_id.encode()).digest()
    return refresh_pk(digest[0] % REFRESH_SHARDS, provider)


def refresh_shards() -> range:
    """Every shard a planner plans: all below the count, which covers every smaller count before it."""
    return range(REFRESH_SHARDS)


def refresh_sk(account_id: str, next_refresh_at: datetime, refresh_interval: RefreshInterval) -> str:
    return f"{_iso(next_refresh_at)}#{account_id}#{refresh_interval}"


def daily_refresh_sk_before_intervals(account_id: str, next_refresh_at: datetime) -> str:
    """The GSI1SK accounts were written with before intervals were kept (every account was daily then)."""
    return f"{_iso(next_refresh_at)}#{account_id}"


def due_by(now: datetime) -> str:
    """The highest GSI1SK of an account due at or before ``now``."""
    return f"{_iso(now)}#~"


def interval_of(refresh_key: str) -> RefreshInterval:
    """The interval a ``refresh_sk`` ends with; daily for a key from before intervals were kept."""
    parts = refresh_key.split(SEPARATOR)
    if len(parts) == 3 and parts[2] in get_args(RefreshInterval):
        return cast("RefreshInterval", parts[2])
    return "daily"


def next_refresh_of(refresh_key: str) -> datetime:
    """When the account is due: the time a ``refresh_sk`` starts with."""
    return datetime.fromisoformat(refresh_key.split(SEPARATOR, 1)[0])


# ---------------------------------------------------------------------- the reminder schedule (GSI1)
# The profiles' reminder schedule's shards (GSI1PK REMIND#<n>), each queried on its own by the reminders
# function. As with the refresh shards, the count may only grow: a profile keeps the shard it was filed
# under until its next claim files it under today's count, and every index below the count is queried.
REMINDER_SHARDS = 8


def remind_pk(shard: int) -> str:
    return f"{REMIND}{shard}"


def reminder_shard(user_id: str) -> str:
    """The GSI1PK of the user's reminder schedule: one of ``REMINDER_SHARDS`` (the count read at each
    call), by a digest of their id."""
    digest = hashlib.sha256(user_id.encode()).digest()
    return remind_pk(digest[0] % REMINDER_SHARDS)


def reminder_shards() -> range:
    """Every shard the reminders function queries: all below the count."""
    return range(REMINDER_SHARDS)


def reminder_sk(user_id: str, next_reminder_at: datetime) -> str:
    return f"{_iso(next_reminder_at)}#{user_id}"


def reminder_due_by(now: datetime) -> str:
    """The highest GSI1SK of a profile whose reminder is due at or before ``now``."""
    return f"{_iso(now)}#~"


# ---------------------------------------------------------------------- bills
def account_bills_prefix(provider: str, account_id: str) -> str:
    """The start of the sort key of every bill of one account."""
    return f"{BILL}{provider}#{account_id}#"


def bill_sk(bill: Bill) -> str:
    return f"{account_bills_prefix(bill.provider, bill.account_id)}{bill.provider_bill_id}"


def bill_issue_sk(bill: Bill) -> str:
    """LSI1's sort key: bills by issue date, then in the order of their ids."""
    return f"{bill.issued_on.isoformat()}#{bill.provider}#{bill.account_id}#{bill.provider_bill_id}"


_BILL_ISSUE_SK = re.compile(r"^\d{4}-\d{2}-\d{2}#[^#]+#[^#]+#.+$")


def is_bill_sk(value: str) -> bool:
    return value.startswith(BILL)


def is_bill_issue_sk(value: str) -> bool:
    return _BILL_ISSUE_SK.match(value) is not None


def issued_between(issued_from: date | None, issued_to: date | None) -> tuple[str, str]:
    """The LSI1SK bounds (inclusive) of the bills issued from ``issued_from`` to ``issued_to`` (each open if None)."""
    first = issued_from.isoformat() if issued_from else "0"
    last = f"{issued_to.isoformat()}~" if issued_to else "~"
    return first, last


def issued_since(since: date) -> str:
    """The lowest LSI1SK of a bill issued on or after ``since``."""
    return since.isoformat()


# ---------------------------------------------------------------------- refresh jobs
def job_sk(job_id: str) -> str:
    return f"{JOB}{job_id}"


# ---------------------------------------------------------------------- webhooks
def webhook_sk(webhook_id: str) -> str:
    return f"{WEBHOOK}{webhook_id}"


def webhooks_prefix() -> str:
    return WEBHOOK


def deliveries_prefix(webhook_id: str) -> str:
    """Every delivery to one webhook; in the order of their events' times."""
    return f"{DELIVERY}{webhook_id}{SEPARATOR}"


def delivery_sk(webhook_id: str, occurred_at: datetime, event_id: str) -> str:
    return f"{deliveries_prefix(webhook_id)}{_iso(occurred_at)}{SEPARATOR}{event_id}"


def is_delivery_sk(sort_key: str, webhook_id: str) -> bool:
    """Whether ``sort_key`` is a delivery key of ``webhook_id`` (a cursor names one)."""
    rest = sort_key.removeprefix(deliveries_prefix(webhook_id))
    return rest != sort_key and rest.count(SEPARATOR) == 1 and all(rest.split(SEPARATOR))


# ---------------------------------------------------------------------- OAuth2 links in progress
def oauth_state_pk(nonce: str) -> str:
    return f"{OAUTH_STATE}{nonce}"


def oauth_state_pointer_sk(nonce: str) -> str:
    """The sort key, in the user's partition, of the pointer to their state ``nonce``."""
    return oauth_state_pk(nonce)


def oauth_state_pk_named_by(sk: str) -> str | None:
    """The PK of the OAuth2 state that the item of the user's sort key ``sk`` points to; None if it is no pointer."""
    return sk if sk.startswith(OAUTH_STATE) else None


# ---------------------------------------------------------------------- sign-in checks
def login_attempts_pk(subject: LoginSubject) -> str:
    # A digest keeps keys short and the emails typed at the login form out of key listings (an email
    # or IP can still be guessed back from it: this is tidiness, not secrecy).
    return f"{LOGIN_ATTEMPTS}{subject.kind}#{_digest(subject.value)}"


# ---------------------------------------------------------------------- Idempotency-Key records
def idempotency_pk(user_id: str) -> str:
    """The partition of the user's ``Idempotency-Key`` records (written by Powertools: billhub/idempotency.py)."""
    return f"{IDEMPOTENCY}{user_id}"


def idempotency_key_prefix(user_id: str, route: str) -> str:
    """The key prefix Powertools is given; it names a record ``<prefix>#<digest>``, which
    ``idempotency_record_key`` files as PK ``IDEMPOTENCY#<user_id>``, SK ``<route>#<digest>``."""
    if SEPARATOR in user_id:
        raise ValueError("user ids never contain '#'")
    return f"{user_id}#{route}"


def idempotency_record_key(idempotency_key: str) -> tuple[str, str]:
    """(PK, SK) of the record Powertools names ``idempotency_key`` (made from ``idempotency_key_prefix``)."""
    user_id, _, record = idempotency_key.partition(SEPARATOR)
    return idempotency_pk(user_id), record


# ---------------------------------------------------------------------- provider request budgets
def rate_pk(provider: str) -> str:
    return f"{RATE}{provider}"


def rate_sk(second: int) -> str:
    return f"{SECOND}{second}"


# ---------------------------------------------------------------------- scheduled refreshes admitted
def admission_pk(provider: str) -> str:
    return f"{ADMIT}{provider}"


def admission_sk(hour: int) -> str:
    """The counter of the hour that starts at epoch second ``hour``."""
    return f"{HOUR}{hour}"


# ---------------------------------------------------------------------- operator alerts
def alert_pk(incident: str) -> str:
    return f"{ALERT}{incident}"


def burst_pk(burst: str) -> str:
    return f"{BURST}{burst}"


def burst_sk(window: int) -> str:
    return f"{BURST_WINDOW}{window}"
