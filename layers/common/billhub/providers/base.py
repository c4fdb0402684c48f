"""The one interface every provider adapter implements, and the errors adapters raise."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ValidationError

from billhub.errors import ServiceError
from billhub.models import Account, Bill, Category
from billhub.providers.http import RETRYABLE_STATUS, ProviderHttp


class ProviderError(Exception):
    """A provider call failed. The message is safe to store and show: never a credential in it."""


class ProviderAuthRejected(ProviderError):
    """The provider refused the credentials (401/403): retrying will not help, the user must act."""


class ProviderUnavailable(ProviderError):
    """The provider is down, slow or rate limiting us, even after retries: try again later."""


class ProviderDataError(ProviderError):
    """The provider answered with something we cannot read."""


class InvalidCredentialFields(ServiceError):
    status = 400
    code = "invalid_credentials_format"


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


AuthType = Literal["api_key", "basic", "oauth2_authorization_code", "oauth2_client_credentials"]


class ProviderAdapter(ABC):
    """Speaks one provider's API and turns its bills into the canonical ``Bill``."""

    name: ClassVar[str]
    display_name: ClassVar[str]
    category: ClassVar[Category]
    auth_type: ClassVar[AuthType]
    credentials_model: ClassVar[type[BaseModel]]

    @classmethod
    def credential_fields(cls) -> list[CredentialField]:
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

    async def get_json(self, http: ProviderHttp, path: str, **kwargs: Any) -> Any:
        """GET with retries; maps the provider's failure modes onto the ``ProviderError`` family."""
        try:
            response = await http.request("GET", path, **kwargs)
        except httpx.TimeoutException as error:
            raise ProviderUnavailable(f"{self.display_name} did not answer in time.") from error
        except httpx.TransportError as error:
            raise ProviderUnavailable(f"{self.display_name} could not be reached.") from error
        if response.status_code in (401, 403):
            raise ProviderAuthRejected(f"{self.display_name} refused the credentials (HTTP {response.status_code}).")
        if response.status_code in RETRYABLE_STATUS:
            raise ProviderUnavailable(f"{self.display_name} is unavailable (HTTP {response.status_code}).")
        if response.status_code >= 400:
            raise ProviderError(f"{self.display_name} answered HTTP {response.status_code}.")
        try:
            return response.json()
        except ValueError as error:
            raise ProviderDataError(f"{self.display_name} sent a response that is not JSON.") from error

    @abstractmethod
    async def verify(self, http: ProviderHttp, credentials: BaseModel) -> LinkedIdentity:
        """Checks the credentials with the provider and says whose account they open."""

    @abstractmethod
    async def fetch_bills(self, http: ProviderHttp, account: Account, credentials: BaseModel) -> list[Bill]:
        """Every bill the provider holds for the account, normalised."""
