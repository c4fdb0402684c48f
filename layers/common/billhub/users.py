"""Registration, login, the caller's profile, and deleting oneself."""

from __future__ import annotations

import math
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from billhub import deletion
from billhub.auth import DUMMY_PASSWORD_HASH, TokenService, hash_password, verify_password
from billhub.errors import Conflict, NotFound, ServiceError, Unauthorized
from billhub.models import CurrencyCode, LoginSubject, Preferences, RefreshInterval, User
from billhub.refresh import apply_refresh_interval
from billhub.reminder_times import next_reminder_at
from billhub.store.errors import AlreadyExists, ItemMissing
from billhub.store.protocols import LoginThrottle, Repositories, UserStore


def load_email_validator() -> None:
    """Imports email-validator, which ``canonical_email`` imports only when first called: compiling its
    grammar's regular expressions is ~30 ms that the profile routes' cold starts never need. The first
    register or login pays it, or SnapStart's snapshot, which calls this."""
    import email_validator  # noqa: F401


def canonical_email(value: str) -> str:
    """The one spelling of an address that identifies its user: registered, looked up at login, throttled.

    email-validator checks the address (refusing control and format characters among the rest), applies
    NFC, and IDNA's mapping to the domain (fullwidth letters, case); the local part is NFKC-casefolded on
    top, so a fullwidth letter, ``ADA@example.com`` and an NFD spelling are all ``ada@example.com``. The
    result is checked again: a compatibility character can fold into one an address cannot hold.
    """
    from email_validator import EmailNotValidError, validate_email  # see load_email_validator

    try:
        address = validate_email(value, check_deliverability=False)
        local = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", address.local_part).casefold())
        canonical = f"{local}@{address.domain}"
        if canonical != value:
            validate_email(canonical, check_deliverability=False)
    except EmailNotValidError as error:
        raise ValueError(str(error)) from error
    return canonical


Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=254),
    AfterValidator(canonical_email),
    Field(json_schema_extra={"format": "email"}),
]
Password = Annotated[str, StringConstraints(min_length=10, max_length=128)]


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    password: Password


class Registered(BaseModel):
    user_id: str


class AccessToken(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - a token type, not a secret
    expires_in: int


class Profile(BaseModel):
    user_id: str
    email: str
    created_at: datetime
    preferences: Preferences


class PreferencesChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_interval: RefreshInterval | None = None
    due_soon_days: int | None = Field(default=None, ge=1, le=60)
    currency: CurrencyCode | None = None
    reminders: bool | None = Field(default=None, description="false: no daily email of bills due soon and overdue")


class ProfileChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preferences: PreferencesChange


class DeletionRequest(BaseModel):
    """``DELETE /me``: the password, typed again. Any length a password could have: a wrong one is a 401
    counted as a failed login, never a 422 that would escape the count."""

    model_config = ConfigDict(extra="forbid")

    password: Annotated[str, StringConstraints(min_length=1, max_length=128)]


def register(users: UserStore, request: Credentials, now: datetime) -> Registered:
    # Filed on the daily reminders' schedule in the same write that creates the profile.
    user = User(user_id=uuid.uuid4().hex, email=request.email, created_at=now, next_reminder_at=next_reminder_at(now))
    try:
        users.create_user(user, hash_password(request.password))
    except AlreadyExists as error:
        raise Conflict("An account with this email already exists.") from error
    return Registered(user_id=user.user_id)


class TooManyAttempts(ServiceError):
    status = 429
    code = "too_many_attempts"

    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many wrong passwords. Try again later.", retry_after=retry_after)


@dataclass(frozen=True)
class LoginLimits:
    """Failed logins allowed per ``window``, per email and per source IP."""

    per_account: int = 5
    per_source: int = 20
    window: timedelta = timedelta(minutes=15)


def login(
    store: Repositories,
    tokens: TokenService,
    request: Credentials,
    source_ip: str,
    now: datetime,
    limits: LoginLimits = LoginLimits(),
) -> AccessToken:
    """The same answer, after the same work, for an unknown email and a wrong password.

    Each attempt is counted against the email and the caller's IP before the password is checked, so
    a burst of parallel guesses cannot slip past the limits; a success clears the email's count and
    gives back its IP's attempt. Throttling is keyed by the canonical email, whether or not it has an
    account, so a ``429`` tells nothing about which emails exist; a throttled attempt is not verified.
    """
    attempt = _take_attempt(store.sign_in, request.email, source_ip, now, limits)
    user_id = store.users.user_id_for_email(request.email)
    found = store.users.get_user(user_id) if user_id else None
    password_hash = found[1] if found else DUMMY_PASSWORD_HASH
    # A user being deleted is gone: the same answer as an unknown email.
    if not verify_password(request.password, password_hash) or found is None or found[0].deleting_since is not None:
        raise Unauthorized("Email or password is wrong.")
    _passed(store.sign_in, attempt, now)
    if found[0].next_reminder_at is None:
        # A profile from before the reminders: filed on their schedule once, at its first login since
        # (a conditional write that never files a profile being deleted).
        store.users.file_for_reminders(found[0].user_id, next_reminder_at(now))
    issued = tokens.issue(found[0].user_id, now)
    return AccessToken(access_token=issued.access_token, expires_in=issued.expires_in)


def delete_me(
    store: Repositories,
    user_id: str,
    request: DeletionRequest,
    source_ip: str,
    now: datetime,
    limits: LoginLimits = LoginLimits(),
) -> None:
    """Deletes the caller and everything of theirs, once they typed their password again.

    The password is checked as a login is, counted against the same limits (the email's and the source
    IP's), so ``DELETE /me`` is no way around them to guess passwords with a stolen token. It is checked
    against the profile, which stays until the deletion's very last step, so sending the request again
    finishes a deletion that stopped half-way. A caller already gone (their token still in the
    authorizer's cache) has nothing left to delete.
    """
    found = store.users.get_user(user_id)
    if found is None:
        return
    user, password_hash = found
    attempt = _take_attempt(store.sign_in, user.email, source_ip, now, limits)
    if not verify_password(request.password, password_hash):
        raise Unauthorized("The password is wrong.")
    _passed(store.sign_in, attempt, now)
    deletion.delete_user(store, user, now)


@dataclass(frozen=True)
class _Attempt:
    """A password attempt, counted against the email typed (``account``) and the caller's IP (``source``)."""

    account: LoginSubject
    source: LoginSubject


def _take_attempt(throttle: LoginThrottle, email: str, source_ip: str, now: datetime, limits: LoginLimits) -> _Attempt:
    attempt = _Attempt(LoginSubject.email(email), LoginSubject.source(source_ip))
    window_ends = throttle.take_login_attempt(attempt.account, limits.per_account, limits.window, now)
    if window_ends is not None:
        raise TooManyAttempts(_seconds_until(window_ends, now))
    window_ends = throttle.take_login_attempt(attempt.source, limits.per_source, limits.window, now)
    if window_ends is not None:
        throttle.refund_login_attempt(attempt.account, now)  # no password was tried
        raise TooManyAttempts(_seconds_until(window_ends, now))
    return attempt


def _seconds_until(window_ends: datetime, now: datetime) -> int:
    """Whole seconds, rounded up and never 0: a client that waits them finds the window over."""
    return max(1, math.ceil((window_ends - now).total_seconds()))


def _passed(throttle: LoginThrottle, attempt: _Attempt, now: datetime) -> None:
    """The password was right: the email's count is cleared, the IP's attempt given back."""
    throttle.clear_login_attempts(attempt.account)
    # Given back, not cleared: clearing would let one good account reset its IP's count of failures.
    throttle.refund_login_attempt(attempt.source, now)


def get_profile(users: UserStore, user_id: str) -> Profile:
    found = users.get_user(user_id)
    if found is None or found[0].deleting_since is not None:
        raise NotFound("No such user.")
    return Profile.model_validate(found[0].model_dump())


def change_profile(store: Repositories, user_id: str, change: ProfileChange, now: datetime) -> Profile:
    profile = get_profile(store.users, user_id)
    updates = change.preferences.model_dump(exclude_none=True)
    preferences = profile.preferences.model_copy(update=updates)
    try:
        store.users.update_preferences(user_id, preferences)
    except ItemMissing as error:  # deleted since it was read
        raise NotFound("No such user.") from error
    if change.preferences.refresh_interval is not None:
        # Each account keeps its own copy for the planner. Applied even when the preference did not
        # change, so repeating the request completes one that failed half-way.
        apply_refresh_interval(store, user_id, preferences.refresh_interval, now)
    return profile.model_copy(update={"preferences": preferences})
