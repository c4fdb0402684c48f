"""What the domain needs of each repository, as ``Protocol``s: a domain function that uses one part of
the table names that part, so it can be given the repository itself (or a fake) rather than all of it.
``BillsTable`` still provides every one of them while the domain moves over."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from billhub.models import Account, JobAccountResult, LoginSubject, Preferences, RefreshInterval, RefreshJob, User

if TYPE_CHECKING:
    from billhub.store.schedule import DueRefresh


class RefreshJobStore(Protocol):
    """Refresh jobs (``billhub.store.jobs.RefreshJobs``)."""

    def create_job(self, job: RefreshJob) -> None: ...

    def get_job(self, user_id: str, job_id: str) -> RefreshJob | None: ...

    def record_job_result(self, user_id: str, job_id: str, account_id: str, result: JobAccountResult) -> None: ...


class OAuthStateStore(Protocol):
    """OAuth2 links in progress (``billhub.store.oauth_states.LinksInProgress``)."""

    def put_oauth_state(self, user_id: str, nonce: str, link: dict[str, Any], expires_at: datetime) -> None: ...

    def consume_oauth_state(self, nonce: str, now: datetime) -> dict[str, Any] | None: ...


class LoginThrottle(Protocol):
    """The failed sign-in counters (``billhub.store.sign_in.SignInChecks``)."""

    def take_login_attempt(self, subject: LoginSubject, limit: int, window: timedelta, now: datetime) -> int | None: ...

    def refund_login_attempt(self, subject: LoginSubject, now: datetime) -> None: ...

    def clear_login_attempts(self, subject: LoginSubject) -> None: ...


class UserStore(Protocol):
    """Profiles and email guards (``billhub.store.users.Users``)."""

    def create_user(self, user: User, password_hash: str) -> None: ...

    def user_id_for_email(self, email: str) -> str | None: ...

    def get_user(self, user_id: str) -> tuple[User, str] | None: ...

    def update_preferences(self, user_id: str, preferences: Preferences) -> None: ...

    def preferences(self, user_id: str) -> Preferences: ...

    def preferred_refresh_interval(self, user_id: str) -> RefreshInterval: ...

    def start_manual_refresh(self, user_id: str, now: datetime, min_interval: timedelta) -> datetime | None: ...

    def forget_manual_refresh(self, user_id: str, started_at: datetime) -> None: ...


class RefreshScheduleStore(Protocol):
    """The accounts' next refreshes (``billhub.store.schedule.RefreshSchedule``)."""

    def claim_due_refresh(self, due: DueRefresh, next_refresh_at: datetime) -> bool: ...

    def release_refresh_claim(self, due: DueRefresh, claimed_until: datetime) -> bool: ...

    def reschedule(self, account: Account, next_refresh_at: datetime, refresh_interval: RefreshInterval) -> bool: ...

    def due_refreshes(self, now: datetime) -> Iterator[DueRefresh]: ...
