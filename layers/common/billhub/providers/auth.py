"""How each provider authenticates: API key, HTTP Basic, and the two OAuth2 grants.

An adapter owns one of these. ``headers`` gives what the next call needs; ``renew`` is called once
after a ``401`` and says whether a retry can succeed (a fresh token might; a refused key never will).
"""

from __future__ import annotations

import asyncio
import base64
import weakref
from abc import ABC, abstractmethod
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from billhub.providers.errors import (
    ProviderAuthRejected,
    ProviderDataError,
    ProviderError,
    ProviderMisconfigured,
    ProviderUnavailable,
)

if TYPE_CHECKING:
    import httpx

    from billhub.providers.http import ProviderHttp
    from billhub.providers.session import OAuthClient, ProviderSession
    from billhub.settings import EndpointName

# A token this close to its expiry is renewed before use rather than sent and refused.
EXPIRY_MARGIN = timedelta(seconds=30)
Token = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


AuthType = Literal["api_key", "basic", "oauth2_authorization_code", "oauth2_client_credentials"]
# A fetch whose refresh token another fetch just spent looks this long for the one that fetch saves.
ROTATION_WAITS = (0.1, 0.3, 0.6)


class ProviderAuth(ABC):
    auth_type: ClassVar[AuthType]
    # The provider's endpoints this auth calls besides its API (configured in ProviderEndpoints).
    endpoints: ClassVar[tuple[EndpointName, ...]] = ()

    @abstractmethod
    async def headers(self, session: ProviderSession) -> dict[str, str]:
        """Headers that authenticate the next call."""

    async def renew(self, session: ProviderSession) -> bool:
        """After a 401: get fresh credentials if that can help; True when a retry is worth it."""
        return False

    def refused(self, provider: str, status: int) -> ProviderError:
        """The error for a 401/403 that renewal did not cure: the user's credentials were refused."""
        return ProviderAuthRejected(f"{provider} refused the credentials (HTTP {status}).")


class ProviderCredentials(BaseModel):
    """Base of every credentials model: unknown fields refused, and a value never echoed in an error
    message or a repr (fields marked secret are also hidden from reprs). Each is built when first used
    (a link or a fetch with that provider), not at import by every function that lists the providers."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, defer_build=True)


class ApiKey(ProviderCredentials):
    """Base of an API-key provider's credentials; the adapter's subclass adds the key's format."""

    api_key: str = Field(description="API key", repr=False, json_schema_extra={"secret": True})


class UsernamePassword(ProviderCredentials):
    """Base of an HTTP Basic provider's credentials; the adapter's subclass adds each field's format."""

    username: str = Field(description="Username")
    password: str = Field(description="Password", repr=False, json_schema_extra={"secret": True})


class ApiKeyHeader(ProviderAuth):
    auth_type = "api_key"

    def __init__(self, header: str) -> None:
        self._header = header

    async def headers(self, session: ProviderSession) -> dict[str, str]:
        credentials = session.credentials
        if not isinstance(credentials, ApiKey):
            raise TypeError("an API key provider needs ApiKey credentials")
        return {self._header: credentials.api_key}


class HttpBasic(ProviderAuth):
    auth_type = "basic"

    async def headers(self, session: ProviderSession) -> dict[str, str]:
        credentials = session.credentials
        if not isinstance(credentials, UsernamePassword):
            raise TypeError("an HTTP Basic provider needs UsernamePassword credentials")
        pair = f"{credentials.username}:{credentials.password}"
        return {"Authorization": f"Basic {base64.b64encode(pair.encode()).decode()}"}


class OAuthTokens(ProviderCredentials):
    """A user's grant at an OAuth2 provider, as stored (encrypted) on the account."""

    refresh_token: Token = Field(repr=False, json_schema_extra={"secret": True})
    access_token: Token | None = Field(default=None, repr=False)
    access_token_expires_at: datetime | None = None

    def usable_at(self, now: datetime) -> bool:
        expires = self.access_token_expires_at
        return bool(self.access_token) and expires is not None and expires - EXPIRY_MARGIN > now


class _TokenResponse(BaseModel):
    # Built at the first token request, which most invocations never make.
    model_config = ConfigDict(hide_input_in_errors=True, defer_build=True)

    access_token: Token
    token_type: str = "Bearer"  # noqa: S105 - a token type, not a secret
    expires_in: int = Field(default=3600, ge=1, le=366 * 24 * 3600)
    refresh_token: Token | None = None


class _InvalidGrant(ProviderError):
    pass


async def request_token(
    http: ProviderHttp, token_url: str, client: OAuthClient | None, form: dict[str, str]
) -> _TokenResponse:
    """POSTs to the provider's token endpoint (an absolute URL, often on a host of its own) with the
    service's client credentials (HTTP Basic, RFC 6749 2.3.1)."""
    # Deferred, as in ProviderAdapter.get_json: only calling a provider needs httpx.
    import httpx

    from billhub.providers.http import RETRYABLE_STATUS

    if client is None:
        raise ProviderMisconfigured("No OAuth client is configured for this provider.")
    try:
        response = await http.request_url(
            "POST",
            token_url,
            content=urlencode(form),
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
            auth=httpx.BasicAuth(client.client_id, client.client_secret),
        )
    except httpx.TransportError as error:
        raise ProviderUnavailable("The provider's token service could not be reached.") from error
    if response.status_code in RETRYABLE_STATUS:
        raise ProviderUnavailable(f"The provider's token service is unavailable (HTTP {response.status_code}).")
    error_code = _oauth_error(response)
    if response.status_code == 400 and error_code == "invalid_grant":
        raise _InvalidGrant("The provider no longer accepts this authorization.")
    if response.status_code == 401 or error_code == "invalid_client":
        raise ProviderMisconfigured("The provider refused the service's OAuth client credentials.")
    if response.status_code != 200:
        raise ProviderError(f"The provider's token service answered HTTP {response.status_code}.")
    try:
        return _TokenResponse.model_validate_json(response.content)
    except ValidationError as error:
        raise ProviderDataError("The provider's token service sent a token we cannot read.") from error


def _oauth_error(response: httpx.Response) -> str | None:
    try:
        body: Any = response.json()
    except ValueError:
        return None
    return str(body.get("error")) if isinstance(body, dict) and body.get("error") else None


class ClientCredentialsGrant(ProviderAuth):
    """A service-level token (RFC 6749 4.4), shared by every account at the provider and cached per
    container until shortly before it expires."""

    auth_type = "oauth2_client_credentials"
    endpoints = ("token",)

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], tuple[str, datetime]] = {}
        # One token request at a time per event loop: ten accounts of a batch share the first token.
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    def _cache_key(self, session: ProviderSession) -> tuple[str, str]:
        client_id = session.oauth_client.client_id if session.oauth_client else ""
        return (session.endpoint("token"), client_id)

    async def headers(self, session: ProviderSession) -> dict[str, str]:
        key = self._cache_key(session)
        lock = self._locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        async with lock:
            cached = self._cache.get(key)
            if cached is None or cached[1] - EXPIRY_MARGIN <= session.clock():
                token = await request_token(
                    session.http, session.endpoint("token"), session.oauth_client, {"grant_type": "client_credentials"}
                )
                cached = (token.access_token, session.clock() + timedelta(seconds=token.expires_in))
                self._cache[key] = cached
        return {"Authorization": f"Bearer {cached[0]}"}

    async def renew(self, session: ProviderSession) -> bool:
        # The provider may have revoked or expired the shared token early: drop it and ask again once.
        self._cache.pop(self._cache_key(session), None)
        return True

    def refused(self, provider: str, status: int) -> ProviderError:
        if status == 401:
            # A freshly issued service token refused: the service's fault, not the customer's.
            return ProviderMisconfigured(f"{provider} refused the service's access token.")
        return super().refused(provider, status)


class AuthorizationCodeGrant(ProviderAuth):
    """The user's own grant (RFC 6749 4.1): a refresh token that buys short-lived access tokens.

    Providers that rotate refresh tokens invalidate the old one on use, so every renewal is saved at
    once; a fetch that finds its refresh token spent looks for the one another fetch saved.
    """

    auth_type = "oauth2_authorization_code"
    endpoints = ("token", "authorize")

    def __init__(self, scope: str) -> None:
        self.scope = scope

    def authorize_url(self, authorize_endpoint: str, client: OAuthClient, redirect_uri: str, state: str) -> str:
        """The provider's authorization endpoint (absolute, configured) with this request's query."""
        query = urlencode(
            {
                "response_type": "code",
                "client_id": client.client_id,
                "redirect_uri": redirect_uri,
                "scope": self.scope,
                "state": state,
            }
        )
        # RFC 6749 3.1: the endpoint's own query, if it has one, is kept.
        return f"{authorize_endpoint}{'&' if '?' in authorize_endpoint else '?'}{query}"

    async def exchange_code(
        self,
        http: ProviderHttp,
        token_url: str,
        client: OAuthClient | None,
        code: str,
        redirect_uri: str,
        now: datetime,
    ) -> OAuthTokens:
        try:
            token = await request_token(
                http,
                token_url,
                client,
                {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri},
            )
        except _InvalidGrant as error:
            raise ProviderAuthRejected("The authorization code was refused; start linking again.") from error
        if token.refresh_token is None:
            raise ProviderDataError("The provider granted no refresh token, so the account could not stay linked.")
        return _tokens(token, token.refresh_token, now)

    async def headers(self, session: ProviderSession) -> dict[str, str]:
        tokens = _current(session)
        if not tokens.usable_at(session.clock()):
            tokens = await self._refresh(session)
        return {"Authorization": f"Bearer {tokens.access_token}"}

    async def renew(self, session: ProviderSession) -> bool:
        await self._refresh(session)
        return True

    async def _refresh(self, session: ProviderSession) -> OAuthTokens:
        spent = _current(session).refresh_token
        try:
            token = await request_token(
                session.http,
                session.endpoint("token"),
                session.oauth_client,
                {"grant_type": "refresh_token", "refresh_token": spent},
            )
        except _InvalidGrant as error:
            rotated = await self._saved_by_another_fetch(session, spent)
            if rotated is None:
                raise ProviderAuthRejected("The provider revoked the account's authorization.") from error
            session.credentials = rotated
            return rotated if rotated.usable_at(session.clock()) else await self._refresh(session)
        tokens = _tokens(token, token.refresh_token or spent, session.clock())
        await session.replace_credentials(tokens)
        return tokens

    @staticmethod
    async def _saved_by_another_fetch(session: ProviderSession, spent: str) -> OAuthTokens | None:
        """The pair a concurrent fetch saved after spending ``spent``, if one appears shortly.

        That fetch was issued its new tokens just before we were refused, and is saving them now.
        """
        if session.reload is None:
            return None
        for wait in (0.0, *ROTATION_WAITS):
            await asyncio.sleep(wait)
            stored = await session.reload()
            if isinstance(stored, OAuthTokens) and stored.refresh_token != spent:
                return stored
        return None


def _current(session: ProviderSession) -> OAuthTokens:
    if not isinstance(session.credentials, OAuthTokens):
        raise TypeError("an OAuth2 authorization code provider needs OAuthTokens")
    return session.credentials


def _tokens(token: _TokenResponse, refresh_token: str, now: datetime) -> OAuthTokens:
    return OAuthTokens(
        refresh_token=refresh_token,
        access_token=token.access_token,
        access_token_expires_at=now + timedelta(seconds=token.expires_in),
    )
