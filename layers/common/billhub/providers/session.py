"""One account's conversation with its provider: HTTP with retries, and credentials kept current."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from pydantic import BaseModel, ConfigDict, Field

from billhub.providers.errors import ProviderMisconfigured, ProviderUnavailable
from billhub.providers.http import ProviderHttp, RetryPolicy

if TYPE_CHECKING:
    from billhub.settings import EndpointName, ProviderEndpoints


class OAuthClient(BaseModel):
    """The service's own registration at a provider (not a user's secret, but a secret all the same)."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    client_id: str = Field(min_length=1, max_length=256)
    client_secret: str = Field(min_length=1, max_length=512, repr=False)


def parse_oauth_clients(document: str | Mapping[str, Any]) -> dict[str, OAuthClient]:
    """``{"<provider>": {"client_id", "client_secret"}}`` as stored in the provider clients secret."""
    raw = json.loads(document) if isinstance(document, str) else document
    return {name: OAuthClient.model_validate(value) for name, value in raw.items()}


class RequestGate(Protocol):
    async def acquire(self, provider: str) -> None: ...


CredentialsSaver = Callable[[BaseModel], Awaitable[None]]
CredentialsLoader = Callable[[], Awaitable[BaseModel | None]]


@dataclass
class ProviderSession:
    """What an adapter needs to talk to its provider for one account.

    ``credentials`` is current: an adapter that renews a token replaces it and calls ``save`` at once,
    so a rotated refresh token is never lost. ``reload`` reads what is stored now, for when another
    fetch rotated the token first.
    """

    http: ProviderHttp
    credentials: BaseModel = field(repr=False)
    clock: Callable[[], datetime] = field(repr=False)
    endpoints: ProviderEndpoints | None = None
    oauth_client: OAuthClient | None = None
    save: CredentialsSaver | None = None
    reload: CredentialsLoader | None = None
    renewed_tokens: int = field(default=0)

    def endpoint(self, name: EndpointName) -> str:
        """The provider's configured ``name`` endpoint (settings refuse a deployment that lacks one its
        adapter needs, so a missing one here is a bug)."""
        url = self.endpoints.url(name) if self.endpoints is not None else None
        if url is None:
            raise ProviderMisconfigured(f"No {name} endpoint is configured for this provider.")
        return url

    async def replace_credentials(self, credentials: BaseModel) -> None:
        self.credentials = credentials
        self.renewed_tokens += 1
        if self.save is not None:
            await self.save(credentials)


@dataclass(frozen=True)
class ProviderDirectory:
    """Where each provider is (its API, and its OAuth2 endpoints), and the service's OAuth2 client at
    each provider that needs one. Every provider URL the service calls comes from here."""

    endpoints: Mapping[str, ProviderEndpoints]
    oauth_clients: Mapping[str, OAuthClient] = field(default_factory=dict)

    @classmethod
    def configured(
        cls, endpoints: Mapping[str, ProviderEndpoints], clients_secret_arn: str, max_age_seconds: int
    ) -> ProviderDirectory:
        """The directory as a function's settings describe it, OAuth clients from their secret."""
        return cls(endpoints, load_oauth_clients(clients_secret_arn, max_age_seconds))

    def url(self, provider: str, endpoint: EndpointName = "api") -> str:
        """The provider's configured endpoint; ``ProviderMisconfigured`` when it has none."""
        endpoints = self.endpoints.get(provider)
        url = endpoints.url(endpoint) if endpoints is not None else None
        if url is None:
            raise ProviderMisconfigured(f"No {endpoint} endpoint is configured for {provider}.")
        return url


@dataclass(frozen=True)
class ProviderConnector:
    """Opens sessions with any registered provider over one shared HTTP client."""

    client: httpx.AsyncClient
    directory: ProviderDirectory
    clock: Callable[[], datetime]
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    # A person waiting on the answer (linking) bounds the whole exchange, retries and all.
    deadline_seconds: float | None = None
    # The shared per-provider request budget, awaited before every request (ratelimit.py).
    rate_limiter: RequestGate | None = None

    async def within_deadline[Result](self, call: Awaitable[Result]) -> Result:
        """``call`` bounded by the deadline; running out is the provider being unavailable."""
        if self.deadline_seconds is None:
            return await call
        try:
            async with asyncio.timeout(self.deadline_seconds):
                return await call
        except TimeoutError as error:
            raise ProviderUnavailable("The provider did not answer in time.") from error

    def http(self, provider: str) -> ProviderHttp:
        limiter = self.rate_limiter
        gate = functools.partial(limiter.acquire, provider) if limiter is not None else None
        return ProviderHttp(self.client, self.directory.url(provider), self.policy, gate)

    def session(
        self,
        provider: str,
        credentials: BaseModel,
        save: CredentialsSaver | None = None,
        reload: CredentialsLoader | None = None,
    ) -> ProviderSession:
        return ProviderSession(
            http=self.http(provider),
            credentials=credentials,
            clock=self.clock,
            endpoints=self.directory.endpoints.get(provider),
            oauth_client=self.directory.oauth_clients.get(provider),
            save=save,
            reload=reload,
        )


def load_oauth_clients(secret_arn: str, max_age_seconds: int) -> dict[str, OAuthClient]:
    """The provider clients secret, through Powertools Parameters (cached for ``max_age_seconds``)."""
    from aws_lambda_powertools.utilities import parameters

    return parse_oauth_clients(str(parameters.get_secret(secret_arn, max_age=max_age_seconds)))
