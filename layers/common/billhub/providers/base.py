"""The one interface every provider adapter implements."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ValidationError

from billhub.catalog import CATALOG
from billhub.errors import ServiceError
from billhub.models import Account, Bill, Category
from billhub.providers.auth import AuthorizationCodeGrant, AuthType, ProviderAuth
from billhub.providers.errors import (
    InvalidCredentialFields,
    ProviderDataError,
    ProviderError,
    ProviderUnavailable,
)

if TYPE_CHECKING:
    from billhub.providers.session import ProviderSession
    from billhub.settings import EndpointName

# A provider that pages forever must not hold a fetcher hostage.
MAX_PAGES = 50
# Bills one fetch of one account may return: 83 years of monthly bills, so more is a broken provider. It
# bounds what a fetch writes to the user's partition (DynamoDB caps it at 10 GB with a local secondary
# index): 50 accounts of 1,000 bills at their largest are about 8.5 GB, counted twice for the index.
MAX_BILLS_PER_FETCH = 1000

Model = TypeVar("Model", bound=BaseModel)


class OAuthRequired(ServiceError):
    status = 400
    code = "oauth_required"


@dataclass(frozen=True)
class LinkedIdentity:
    """Who the credentials belong to at the provider."""

    external_id: str

    @property
    def masked(self) -> str:
        return "•" * max(len(self.external_id) - 4, 0) + self.external_id[-4:]


class CredentialField(BaseModel):
    name: str
    label: str
    secret: bool


class ProviderAdapter(ABC):
    """Speaks one provider's API and turns its bills into the canonical ``Bill``.

    A new provider is a subclass naming its auth, its credentials model and its two calls; see
    docs/adding-a-provider.md.
    """

    name: ClassVar[str]
    # From the catalog, by name (see __init_subclass__).
    display_name: ClassVar[str]
    category: ClassVar[Category]
    # The provider's published limit; the service keeps under it whatever the concurrency (ratelimit.py).
    requests_per_second: ClassVar[int]
    # The provider requests one scheduled refresh of an account takes (its pages of bills, and a token
    # when each fetch needs its own): what the planner's hourly admissions are counted in (admission.py).
    requests_per_refresh: ClassVar[int]
    auth: ClassVar[ProviderAuth]
    credentials_model: ClassVar[type[BaseModel]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        entry = CATALOG[cls.name]  # a provider the catalog does not name is a KeyError at import
        cls.display_name, cls.category = entry.display_name, entry.category

    @classmethod
    def auth_type(cls) -> AuthType:
        return cls.auth.auth_type

    @classmethod
    def endpoints_needed(cls) -> tuple[EndpointName, ...]:
        """The endpoints a deployment must configure for this provider: its API, and what its auth calls."""
        return ("api", *cls.auth.endpoints)

    @classmethod
    def links_through_oauth(cls) -> bool:
        return isinstance(cls.auth, AuthorizationCodeGrant)

    @classmethod
    def credential_fields(cls) -> list[CredentialField]:
        """What a user types to link (nothing for OAuth2 providers: they sign in at the provider)."""
        if cls.links_through_oauth():
            return []
        return [
            CredentialField(
                name=name,
                label=field.description or name,
                secret=bool(field.json_schema_extra and field.json_schema_extra.get("secret")),  # type: ignore[union-attr]
            )
            for name, field in cls.credentials_model.model_fields.items()
        ]

    def parse_credentials(self, raw: dict[str, Any]) -> BaseModel:
        try:
            return self.credentials_model.model_validate(raw)
        except ValidationError as error:
            fields = sorted({".".join(str(part) for part in e["loc"]) for e in error.errors()})
            raise InvalidCredentialFields(
                f"{self.display_name} needs credentials with the fields: "
                f"{', '.join(f.name for f in self.credential_fields())}.",
                details={"invalid_fields": fields},
            ) from error

    def user_credentials(self, raw: dict[str, Any], account_id: str | None = None) -> BaseModel:
        """Credentials a user typed in, or ``OAuthRequired`` for providers that link by signing in
        (its details name the start route, for the repaired account when there is one)."""
        if self.links_through_oauth():
            start = f"/accounts/oauth/{self.name}/start"
            raise OAuthRequired(
                f"{self.display_name} links by signing in at {self.display_name}.",
                details={"start": f"{start}?account_id={account_id}" if account_id else start},
            )
        return self.parse_credentials(raw)

    async def get_json(
        self,
        session: ProviderSession,
        path: str,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """GET with retries and one token renewal after a 401; maps failures onto ``ProviderError``.

        Numbers are read as ``Decimal``, never float, whatever the provider sends.
        """
        # Deferred: the registry is read on every request (GET /bills, GET /providers), calling a
        # provider is rarer, and httpx and tenacity are a large share of a cold start.
        import httpx

        from billhub.providers.http import RETRYABLE_STATUS

        renewed = False
        while True:
            sent = {"Accept": "application/json", **(await self.auth.headers(session)), **(headers or {})}
            try:
                response = await session.http.request("GET", path, params=params, headers=sent)
            except httpx.TimeoutException as error:
                raise ProviderUnavailable(f"{self.display_name} did not answer in time.") from error
            except httpx.TransportError as error:
                raise ProviderUnavailable(f"{self.display_name} could not be reached.") from error
            if response.status_code == 401 and not renewed and await self.auth.renew(session):
                renewed = True
                continue
            break
        if response.status_code in (401, 403):
            raise self.auth.refused(self.display_name, response.status_code)
        if response.status_code in RETRYABLE_STATUS:
            raise ProviderUnavailable(f"{self.display_name} is unavailable (HTTP {response.status_code}).")
        if response.status_code >= 400:
            raise ProviderError(f"{self.display_name} answered HTTP {response.status_code}.")
        try:
            return json.loads(response.content, parse_float=Decimal)
        except ValueError as error:
            raise ProviderDataError(f"{self.display_name} sent a response that is not JSON.") from error

    def read(self, body: Any, model: type[Model]) -> Model:
        """The provider's payload read into its own model, or ``ProviderDataError``."""
        try:
            return model.model_validate(body)
        except ValidationError as error:
            raise ProviderDataError(f"{self.display_name} sent data we cannot read.") from error

    def too_many_pages(self) -> ProviderDataError:
        return ProviderDataError(f"{self.display_name} returned more than {MAX_PAGES} pages of bills.")

    def check_bill_count(self, bills: list[Bill]) -> None:
        """``ProviderDataError`` once one fetch has read more than ``MAX_BILLS_PER_FETCH`` bills."""
        if len(bills) > MAX_BILLS_PER_FETCH:
            raise ProviderDataError(f"{self.display_name} returned more than {MAX_BILLS_PER_FETCH} bills.")

    @abstractmethod
    async def verify(self, session: ProviderSession) -> LinkedIdentity:
        """Checks the credentials with the provider and says whose account they open."""

    @abstractmethod
    async def fetch_bills(self, session: ProviderSession, account: Account) -> list[Bill]:
        """Every bill the provider holds for the account, normalised."""
