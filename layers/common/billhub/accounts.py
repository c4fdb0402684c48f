"""Linking provider accounts and listing them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from billhub import outbox
from billhub.catalog import ProviderName
from billhub.credentials import CredentialVault
from billhub.errors import Conflict, CredentialsRejected, NotFound, ProviderDown, ServiceError, TooManyAccounts
from billhub.models import Account, AccountStatus, Category, PrintableText, RefreshInterval, Visible
from billhub.oauth import STATE_TTL, OAuthStates, PendingLink
from billhub.providers import REGISTRY, get_adapter
from billhub.providers.auth import AuthorizationCodeGrant
from billhub.providers.base import CredentialField, LinkedIdentity, ProviderAdapter
from billhub.providers.errors import ProviderAuthRejected, ProviderError
from billhub.queue import EnqueueFailed, FetchQueue
from billhub.refresh import fetch_now
from billhub.store import ConcurrentUpdate, StoredAccount
from billhub.store.errors import AlreadyExists, CapReached, ItemMissing
from billhub.store.protocols import Repositories

if TYPE_CHECKING:
    # The caller builds these (with httpx) only on the routes that call a provider.
    from billhub.providers.session import ProviderConnector, ProviderDirectory, ProviderSession

logger = Logger(child=True)


class ProviderInfo(BaseModel):
    name: str
    display_name: str
    category: Category
    auth_type: str
    credential_fields: list[CredentialField]


class ProviderList(BaseModel):
    providers: list[ProviderInfo]


CredentialValues = dict[
    Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,32}$")],
    Annotated[str, StringConstraints(max_length=512, pattern=PrintableText), Visible],
]
Nickname = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=PrintableText), Visible
]
# What an authorization server sends back (RFC 6749 A.5, A.11, A.7): printable ASCII, no spaces in values.
OAuthValue = Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=r"^[\x21-\x7e]+$")]


class LinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: ProviderName
    credentials: CredentialValues = Field(max_length=8)
    nickname: Nickname | None = None


class CredentialsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    credentials: CredentialValues = Field(max_length=8)


class OAuthStart(BaseModel):
    authorize_url: str
    state_expires_in: int


class OAuthCallback(BaseModel):
    """The query the provider sends the user's browser back with (RFC 6749 4.1.2)."""

    state: OAuthValue
    code: OAuthValue | None = None
    error: Annotated[str, StringConstraints(max_length=128, pattern=r"^[\x20-\x7e]*$")] | None = None


class OAuthNotSupported(ServiceError):
    status = 400
    code = "oauth_not_supported"


class OAuthDenied(ServiceError):
    status = 400
    code = "oauth_denied"


class DifferentProviderAccount(ServiceError):
    status = 409
    code = "different_provider_account"


class AccountView(BaseModel):
    account_id: str
    provider: str
    category: Category
    external_ref: str
    nickname: str | None
    status: AccountStatus
    created_at: datetime
    last_success_at: datetime | None
    last_attempt_at: datetime | None
    last_error: str | None
    next_refresh_at: datetime
    refresh_interval: RefreshInterval

    @classmethod
    def of(cls, account: Account) -> AccountView:
        return cls(category=REGISTRY[account.provider].category, **account.model_dump())


class AccountList(BaseModel):
    accounts: list[AccountView]


def list_providers() -> ProviderList:
    return ProviderList(
        providers=[
            ProviderInfo(
                name=adapter.name,
                display_name=adapter.display_name,
                category=adapter.category,
                auth_type=adapter.auth_type(),
                credential_fields=adapter.credential_fields(),
            )
            for adapter in REGISTRY.values()
        ]
    )


async def link_account(
    store: Repositories,
    queue: FetchQueue,
    vault: CredentialVault,
    connector: ProviderConnector,
    user_id: str,
    request: LinkRequest,
    now: datetime,
) -> AccountView:
    """Links an account with credentials the user typed (API key, username and password, ...)."""
    adapter = get_adapter(request.provider)
    credentials = adapter.user_credentials(request.credentials)
    return await _link_new(store, queue, vault, connector, adapter, user_id, credentials, request.nickname, now)


async def replace_credentials(
    store: Repositories,
    queue: FetchQueue,
    vault: CredentialVault,
    connector: ProviderConnector,
    user_id: str,
    account_id: str,
    request: CredentialsRequest,
    now: datetime,
) -> AccountView:
    """Repairs an account (typically ``needs_reauth``) with new credentials, keeping its id and bills."""
    stored = _own_account(store, user_id, account_id)
    adapter = REGISTRY[stored.account.provider]
    credentials = adapter.user_credentials(request.credentials, account_id)
    return await _repair(store, queue, vault, connector, adapter, stored, credentials, now)


def start_oauth(
    store: Repositories,
    states: OAuthStates,
    directory: ProviderDirectory,
    link: PendingLink,
    now: datetime,
) -> OAuthStart:
    """The provider's authorize URL for the user's browser, with a state bound to this link request."""
    adapter = get_adapter(link.provider)
    grant = _authorization_code_grant(adapter)
    if link.account_id is not None:
        stored = _own_account(store, link.user_id, link.account_id)
        if stored.account.provider != adapter.name:
            raise NotFound("No such account.")
    client = directory.oauth_clients.get(adapter.name)
    if client is None:
        raise ProviderDown(f"Linking {adapter.display_name} is not configured on this service.")
    state = states.issue(link, now)
    url = grant.authorize_url(directory.url(adapter.name, "authorize"), client, link.redirect_uri, state)
    return OAuthStart(authorize_url=url, state_expires_in=int(STATE_TTL.total_seconds()))


async def complete_oauth(
    store: Repositories,
    queue: FetchQueue,
    vault: CredentialVault,
    states: OAuthStates,
    connector: ProviderConnector,
    provider: str,
    callback: OAuthCallback,
    now: datetime,
) -> tuple[AccountView, bool]:
    """Exchanges the code the provider sent back and links (or repairs) the account; True when new."""
    adapter = get_adapter(provider)
    # The state is spent first, even when the user said no, so a stolen callback URL is worth nothing.
    link = states.redeem(callback.state, adapter.name, now)
    grant = _authorization_code_grant(adapter)
    if callback.error or not callback.code:
        raise OAuthDenied(
            f"{adapter.display_name} did not grant access; nothing was linked.",
            details={"provider_error": callback.error or "missing_code"},
        )
    exchange = grant.exchange_code(
        connector.http(adapter.name),
        connector.directory.url(adapter.name, "token"),
        connector.directory.oauth_clients.get(adapter.name),
        callback.code,
        link.redirect_uri,
        now,
    )
    try:
        tokens = await connector.within_deadline(exchange)
    except ProviderAuthRejected as error:
        raise CredentialsRejected(str(error)) from error
    except ProviderError as error:
        raise ProviderDown(f"{adapter.display_name} could not complete the link; start again shortly.") from error
    if link.account_id is not None:
        stored = _own_account(store, link.user_id, link.account_id)
        return await _repair(store, queue, vault, connector, adapter, stored, tokens, now), False
    return await _link_new(store, queue, vault, connector, adapter, link.user_id, tokens, link.nickname, now), True


async def _verify(adapter: ProviderAdapter, connector: ProviderConnector, session: ProviderSession) -> LinkedIdentity:
    """Whose provider account the session's credentials open; ``CredentialsRejected`` if refused."""
    try:
        return await connector.within_deadline(adapter.verify(session))
    except ProviderAuthRejected as error:
        raise CredentialsRejected(f"{adapter.display_name} did not accept these credentials.") from error


async def _link_new(
    store: Repositories,
    queue: FetchQueue,
    vault: CredentialVault,
    connector: ProviderConnector,
    adapter: ProviderAdapter,
    user_id: str,
    credentials: BaseModel,
    nickname: str | None,
    now: datetime,
) -> AccountView:
    """Verifies the credentials with the provider, then stores the account with them encrypted.

    Refused credentials store nothing. A provider that is down or slow does not block the user: the
    account is stored ``pending`` and its first fetch verifies it (and finds a duplicate link then).
    The account takes its owner's refresh interval, and its first fetch is enqueued at once.
    """
    session = connector.session(adapter.name, credentials)
    try:
        identity: LinkedIdentity | None = await _verify(adapter, connector, session)
    except ProviderError:
        identity = None
    account = Account(
        account_id=uuid.uuid4().hex,
        user_id=user_id,
        provider=adapter.name,
        external_ref=identity.masked if identity else "pending verification",
        nickname=nickname,
        status=AccountStatus.ACTIVE if identity else AccountStatus.PENDING,
        created_at=now,
        next_refresh_at=now,
    )
    # ``session.credentials``: a token renewed while verifying is the one worth keeping.
    ciphertext = vault.encrypt(user_id, account.account_id, session.credentials.model_dump(mode="json"))
    # A pending account holds a link of its own until its identity is known (never a hash of credentials).
    external_id = identity.external_id if identity else f"pending:{account.account_id}"
    # A re-read after a lost conditional write, not a retry with backoff (so no tenacity policy).
    for _ in range(2):  # once more if the user changed their refresh interval while this was linking
        try:
            interval = store.users.preferred_refresh_interval(user_id)
        except ItemMissing as error:  # deleted (or being deleted) while this was linking
            raise NotFound("No such user.") from error
        account = account.model_copy(update={"refresh_interval": interval})
        try:
            store.accounts.create_account(account, external_id, ciphertext, identity_pending=identity is None)
        except AlreadyExists as error:
            raise Conflict(
                f"This {account.provider} account is already linked.", details={"provider": account.provider}
            ) from error
        except CapReached as error:
            raise TooManyAccounts(error.limit) from error
        except ConcurrentUpdate:
            continue
        _enqueue_first_fetch(store, queue, account, now)
        return AccountView.of(account)
    raise Conflict("Your preferences changed while the account was being linked; try again.")


async def _repair(
    store: Repositories,
    queue: FetchQueue,
    vault: CredentialVault,
    connector: ProviderConnector,
    adapter: ProviderAdapter,
    stored: StoredAccount,
    credentials: BaseModel,
    now: datetime,
) -> AccountView:
    """New credentials for an existing account, accepted only if they open the same provider account.

    The provider must answer: without it we cannot tell whose account the new credentials open, so
    nothing changes and the user is asked to try again. A repaired account is fetched at once.
    """
    session = connector.session(adapter.name, credentials)
    try:
        identity = await _verify(adapter, connector, session)
    except ProviderError as error:
        raise ProviderDown(f"{adapter.display_name} is not answering; try again in a few minutes.") from error
    ciphertext = vault.encrypt(
        stored.account.user_id, stored.account.account_id, session.credentials.model_dump(mode="json")
    )
    # Once more if a fetch confirmed a pending account's identity, or a planner moved its schedule, meanwhile:
    # a re-read after a lost conditional write, not a retry with backoff (so no tenacity policy).
    for _ in range(2):
        if not stored.identity_pending and not stored.is_link_of(adapter.name, identity.external_id):
            raise DifferentProviderAccount(
                f"These credentials open a different {adapter.display_name} account ({identity.masked}) "
                f"than the one linked here ({stored.account.external_ref}); link it as a new account instead."
            )
        # Back to active from needing its user: the account's next fetch publishes the event (billhub.outbox).
        announce = (
            outbox.serialised([outbox.restored(stored.account, stored.credentials_version + 1, now)])
            if stored.account.status is AccountStatus.NEEDS_REAUTH
            else []
        )
        try:
            store.accounts.relink(stored, identity.external_id, identity.masked, now, ciphertext, announce)
        except AlreadyExists as error:
            raise DifferentProviderAccount(
                f"This {adapter.display_name} account ({identity.masked}) is already linked as another account."
            ) from error
        except ItemMissing as error:
            raise NotFound("No such account.") from error
        except ConcurrentUpdate:
            stored = _own_account(store, stored.account.user_id, stored.account.account_id)
            continue
        repaired = _own_account(store, stored.account.user_id, stored.account.account_id).account
        _enqueue_first_fetch(store, queue, repaired, now)
        return AccountView.of(repaired)
    raise Conflict("The account changed while it was being repaired; try again.")


def _enqueue_first_fetch(store: Repositories, queue: FetchQueue, account: Account, now: datetime) -> None:
    """Fetches a newly linked or repaired account's bills now rather than at the next schedule.

    The link stands even if this fails: the account is due now, so the schedule's next run fetches it.
    """
    try:
        fetch_now(store, queue, [account], "link", now)
    except EnqueueFailed:
        logger.exception(
            "could not enqueue the first fetch; the schedule will fetch the account",
            extra={"account_id": account.account_id},
        )


def _own_account(store: Repositories, user_id: str, account_id: str) -> StoredAccount:
    stored = store.accounts.get_account(user_id, account_id)
    if stored is None or stored.account.status is AccountStatus.DELETING:
        # Someone else's account is indistinguishable from one that does not exist.
        raise NotFound("No such account.")
    return stored


def _authorization_code_grant(adapter: ProviderAdapter) -> AuthorizationCodeGrant:
    if not isinstance(adapter.auth, AuthorizationCodeGrant):
        raise OAuthNotSupported(
            f"{adapter.display_name} links with credentials, not by signing in; use POST /accounts/link."
        )
    return adapter.auth


def list_accounts(store: Repositories, user_id: str) -> AccountList:
    listed = store.accounts.list_accounts(user_id)
    accounts = [account for account in listed if account.status is not AccountStatus.DELETING]
    return AccountList(accounts=[AccountView.of(account) for account in accounts])
