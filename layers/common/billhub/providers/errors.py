"""What can go wrong talking to a provider. Every message is safe to store and show: never a secret."""

from __future__ import annotations

from billhub.errors import ServiceError


class ProviderError(Exception):
    """A provider call failed."""


class ProviderAuthRejected(ProviderError):
    """The provider refused the user's credentials and no token renewal cures it: the user must act."""


class ProviderUnavailable(ProviderError):
    """The provider is down, slow or rate limiting us, even after retries: try again later."""


class ProviderBusy(ProviderUnavailable):
    """Our own request budget for the provider is spent: the work waits, nothing failed."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderDataError(ProviderError):
    """The provider answered with something we cannot read."""


class ProviderMisconfigured(ProviderError):
    """The provider refused the service's own client registration: an operator must act, not the user."""


class InvalidCredentialFields(ServiceError):
    """Credentials without the provider's fields: 422, as any other invalid field of a body is."""

    status = 422
    code = "invalid_credentials_format"
