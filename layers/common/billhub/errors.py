"""Errors the domain raises; the HTTP layer maps each to its status and a JSON error body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ServiceError(Exception):
    """An error the caller can act on. ``message`` is shown to the user, so never put a secret in it.

    ``headers`` go out with the error response. ``retry_after`` (whole seconds) is sent both as the
    ``Retry-After`` header and as ``details.retry_after``, so every error that says when to try again
    spells it the same way (docs/errors.md).
    """

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})
        if retry_after is not None:
            details = {**(details or {}), "retry_after": retry_after}
            self.headers["Retry-After"] = str(retry_after)
        self.details = dict(details) if details is not None else None


class InvalidCursor(ServiceError):
    code = "invalid_cursor"

    def __init__(self) -> None:
        super().__init__("The cursor is not one this API handed out for this listing.")


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class TooManyAccounts(ServiceError):
    status = 409
    code = "too_many_accounts"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"You can link at most {limit} accounts; delete one to link another.", details={"limit": limit}
        )


class TooManyWebhooks(ServiceError):
    status = 409
    code = "too_many_webhooks"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"You can register at most {limit} webhooks; delete one to register another.", details={"limit": limit}
        )


class WebhookDisabled(ServiceError):
    status = 409
    code = "webhook_disabled"

    def __init__(self) -> None:
        super().__init__(
            "This webhook is disabled (its endpoint failed every delivery for too long): register it again to "
            "receive events."
        )


class CredentialsRejected(ServiceError):
    status = 422
    code = "credentials_rejected"


class TryAgain(ServiceError):
    """The store stayed busy (throttled, or the items kept meeting other writes) past its own retries;
    nothing was written, and the same request a moment later goes through."""

    status = 503
    code = "try_again"

    def __init__(self) -> None:
        super().__init__("The service is busy; send the request again.", retry_after=1)


class ProviderDown(ServiceError):
    status = 503
    code = "provider_unavailable"
