"""What the domain needs of each repository, as ``Protocol``s: a domain function that uses one part of
the table names that part, so it can be given the repository itself (or a fake) rather than all of it;
one that spans several takes ``Repositories``, which ``BillsTable`` is."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from billhub.models import (
    Account,
    Bill,
    JobAccountResult,
    LoginSubject,
    Preferences,
    RefreshInterval,
    RefreshJob,
    User,
)

if TYPE_CHECKING:
    from billhub.store.accounts import StoredAccount
    from billhub.store.bill_queries import BillQuery
    from billhub.store.bills import Announcer
    from billhub.store.reminders import DueReminder, ReminderProfile
    from billhub.store.schedule import DueRefresh, RefreshShard
    from billhub.store.service_records import SecondLease
    from billhub.webhook_models import Delivery, DeliveryRef, Webhook, WebhookSecret


class RefreshJobStore(Protocol):
    """Refresh jobs (``billhub.store.jobs.RefreshJobs``)."""

    def create_job(self, job: RefreshJob) -> None: ...

    def get_job(self, user_id: str, job_id: str) -> RefreshJob | None: ...

    def record_job_result(
        self, user_id: str, job_id: str, account_id: str, result: JobAccountResult
    ) -> RefreshJob | None: ...


class OAuthStateStore(Protocol):
    """OAuth2 links in progress (``billhub.store.oauth_states.LinksInProgress``)."""

    def put_oauth_state(self, user_id: str, nonce: str, link: dict[str, Any], expires_at: datetime) -> None: ...

    def consume_oauth_state(self, nonce: str, now: datetime) -> dict[str, Any] | None: ...


class LoginThrottle(Protocol):
    """The failed sign-in counters (``billhub.store.sign_in.SignInChecks``)."""

    def take_login_attempt(
        self, subject: LoginSubject, limit: int, window: timedelta, now: datetime
    ) -> datetime | None: ...

    def refund_login_attempt(self, subject: LoginSubject, now: datetime) -> None: ...

    def clear_login_attempts(self, subject: LoginSubject) -> None: ...


class UserStore(Protocol):
    """Profiles and email guards (``billhub.store.users.Users``)."""

    def create_user(self, user: User, password_hash: str) -> None: ...

    def file_for_reminders(self, user_id: str, next_reminder_at: datetime) -> bool: ...

    def user_id_for_email(self, email: str) -> str | None: ...

    def get_user(self, user_id: str) -> tuple[User, str] | None: ...

    def update_preferences(self, user_id: str, preferences: Preferences) -> None: ...

    def preferences(self, user_id: str) -> Preferences: ...

    def preferred_refresh_interval(self, user_id: str) -> RefreshInterval: ...

    def start_manual_refresh(self, user_id: str, now: datetime, min_interval: timedelta) -> datetime | None: ...

    def forget_manual_refresh(self, user_id: str, started_at: datetime) -> None: ...


class RefreshScheduleStore(Protocol):
    """The accounts' next refreshes (``billhub.store.schedule.RefreshSchedule``)."""

    def claim_due_refresh(self, due: DueRefresh, next_refresh_at: datetime) -> DueRefresh | None: ...

    def release_refresh_claim(self, due: DueRefresh, claimed_until: datetime) -> bool: ...

    def reschedule(self, account: Account, next_refresh_at: datetime, refresh_interval: RefreshInterval) -> bool: ...

    def due_refreshes(self, now: datetime, shards: Iterable[RefreshShard]) -> Iterator[DueRefresh]: ...


class AccountStore(Protocol):
    """Linked accounts and their link guards (``billhub.store.accounts.Accounts``)."""

    def create_account(
        self, account: Account, external_id: str, credentials_ciphertext: bytes, identity_pending: bool = False
    ) -> None: ...

    def get_account(self, user_id: str, account_id: str) -> StoredAccount | None: ...

    def list_accounts(self, user_id: str) -> list[Account]: ...

    def save_renewed_credentials(self, stored: StoredAccount, credentials_ciphertext: bytes) -> bool: ...

    def relink(
        self,
        stored: StoredAccount,
        external_id: str,
        external_ref: str,
        now: datetime,
        credentials_ciphertext: bytes | None = None,
        announce: Sequence[str] = (),
    ) -> None: ...

    def record_fetch_failure(self, account: Account, error: str, attempted_at: datetime) -> bool: ...

    def mark_needs_reauth(
        self, stored: StoredAccount, error: str, attempted_at: datetime, announce: Sequence[str] = ()
    ) -> bool: ...

    def clear_outbox(self, user_id: str, account_id: str, published: Sequence[str]) -> bool: ...


class BillStore(Protocol):
    """Bills and their revisions (``billhub.store.bills.Bills``)."""

    def bills_of_account(self, account: Account) -> list[Bill]: ...

    def save_fetched_bills(
        self,
        account: Account,
        fetched: Sequence[Bill],
        as_of: datetime,
        *,
        seen: StoredAccount | None = None,
        announce: Announcer | None = None,
    ) -> int: ...

    def bills_page(self, user_id: str, query: BillQuery) -> tuple[list[Bill], str | None]: ...

    def cursor_after(self, bill: Bill) -> str: ...

    def bills_issued_since(self, user_id: str, since: date) -> list[Bill]: ...


class AccountDeletionStore(Protocol):
    """Deleting an account (``billhub.store.deletions.AccountDeletions``)."""

    def begin_account_deletion(self, user_id: str, account_id: str, now: datetime) -> Account | None: ...

    def remove_account_bills(self, account: Account) -> int: ...

    def finish_account_deletion(self, account: Account, now: datetime) -> None: ...

    def was_deleted(self, user_id: str, account_id: str) -> bool: ...

    def unfinished_deletions(self, started_before: datetime) -> Iterator[tuple[str, str]]: ...

    def account_being_deleted(self, user_id: str, account_id: str) -> Account | None: ...


class UserDeletionStore(Protocol):
    """Deleting a user (``billhub.store.deletions.UserDeletions``)."""

    def begin_user_deletion(self, user_id: str, now: datetime) -> None: ...

    def remove_user_items(self, user_id: str, email: str) -> int: ...

    def finish_user_deletion(self, user_id: str, email: str) -> None: ...

    def unfinished_user_deletions(self, started_before: datetime) -> Iterator[str]: ...

    def user_being_deleted(self, user_id: str) -> User | None: ...


class WebhookStore(Protocol):
    """A user's webhooks (``billhub.store.webhooks.Webhooks``)."""

    def create_webhook(self, webhook: Webhook, limit: int) -> bool: ...

    def list_webhooks(self, user_id: str) -> list[Webhook]: ...

    def get_webhook(self, user_id: str, webhook_id: str) -> Webhook | None: ...

    def delete_webhook(self, user_id: str, webhook_id: str) -> bool: ...

    def replace_secrets(self, webhook: Webhook, secrets: tuple[WebhookSecret, ...]) -> bool: ...

    def record_webhook_health(
        self, webhook: Webhook, failing_since: datetime | None, disabled_at: datetime | None, reason: str | None
    ) -> None: ...


class DeliveryStore(Protocol):
    """Each event's delivery to each webhook, and the delivery log (``billhub.store.deliveries.Deliveries``)."""

    def start_delivery(self, delivery: Delivery, expires_at: datetime) -> bool: ...

    def get_delivery(self, ref: DeliveryRef) -> Delivery | None: ...

    def record_attempt(self, before: Delivery, after: Delivery, expires_at: datetime) -> bool: ...

    def deliveries_page(
        self, user_id: str, webhook_id: str, limit: int, cursor: str | None
    ) -> tuple[list[Delivery], str | None]: ...


class Repositories(Protocol):
    """Every repository, for the domain functions that span several (``billhub.store.BillsTable``)."""

    @property
    def users(self) -> UserStore: ...

    @property
    def sign_in(self) -> LoginThrottle: ...

    @property
    def accounts(self) -> AccountStore: ...

    @property
    def schedule(self) -> RefreshScheduleStore: ...

    @property
    def bills(self) -> BillStore: ...

    @property
    def jobs(self) -> RefreshJobStore: ...

    @property
    def oauth_states(self) -> OAuthStateStore: ...

    @property
    def account_deletions(self) -> AccountDeletionStore: ...

    @property
    def user_deletions(self) -> UserDeletionStore: ...

    @property
    def webhooks(self) -> WebhookStore: ...

    @property
    def deliveries(self) -> DeliveryStore: ...


class ReminderScheduleStore(Protocol):
    """The profiles' reminder schedule (``billhub.store.reminders.ReminderSchedule``)."""

    def due_reminders(self, now: datetime, shards: Iterable[int]) -> Iterator[DueReminder]: ...

    def reminder_profile(self, user_id: str) -> ReminderProfile | None: ...

    def claim_reminder(
        self,
        due: DueReminder,
        next_reminder_at: datetime,
        reminded_due_soon: Iterable[str],
        reminded_overdue: Iterable[str],
    ) -> bool: ...


class ReminderRepositories(Protocol):
    """What the daily reminders read and write (``billhub.store.BillsTable`` is one)."""

    @property
    def reminders(self) -> ReminderScheduleStore: ...

    @property
    def accounts(self) -> AccountStore: ...


class RequestBudgetStore(Protocol):
    """The providers' per-second request counters (``billhub.store.service_records.RequestBudgets``)."""

    def lease(self, provider: str, second: int, budget: int, wanted: int) -> SecondLease: ...


class AdmissionStore(Protocol):
    """The providers' per-hour counters of scheduled refreshes admitted
    (``billhub.store.service_records.AdmissionCounters``)."""

    def lease(self, provider: str, hour: int, cap: int, wanted: int) -> int: ...


class AlertMarkerStore(Protocol):
    """Incidents raised and burst counts (``billhub.store.service_records.AlertMarkers``)."""

    def claim_incident(self, incident: str, now: int, quiet_seconds: int) -> bool: ...

    def count_event(self, burst: str, window: int, expires_at: int) -> int: ...
