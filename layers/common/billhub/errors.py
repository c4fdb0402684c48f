"""Errors the domain raises; the HTTP layer maps each to its status and a JSON error body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ServiceError(Exception):
    """An error the caller can act on. ``message`` is shown to the user, so never put a secret in it.

    ``headers`` go out with the error response (``Retry-After`` on a 429, for example).
    """

    status = 400
    code = "bad_request"

    def __init__(self, message: str, details: Any = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = dict(headers or {})


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


class CredentialsRejected(ServiceError):
    status = 422
    code = "credentials_rejected"


class ProviderDown(ServiceError):
    status = 503
    code = "provider_unavailable"
