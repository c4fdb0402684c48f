"""The OAuth 2 pieces SparkGrid and NorthGas share: client authentication, bearer tokens and the
standard error and token answers (RFC 6749 / 6750 shapes, so real client libraries work against them)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from flask import Response, abort, jsonify, request

from mock_provider.tokens import IssuedTokens, TokenStore

SANDBOX_CLIENT_ID = "billhub-sandbox"


@dataclass(frozen=True)
class RegisteredClient:
    client_id: str
    client_secret: str

    def is_presented(self) -> bool:
        """Whether the request authenticates as this client, by HTTP Basic or by form fields."""
        presented_id, presented_secret = _presented_client()
        return secrets.compare_digest(presented_id.encode(), self.client_id.encode()) and secrets.compare_digest(
            presented_secret.encode(), self.client_secret.encode()
        )


def _presented_client() -> tuple[str, str]:
    authorization = request.authorization
    if authorization is not None and authorization.type == "basic":
        # RFC 6749 2.3.1: the Basic user and password are form-encoded first.
        return unquote_plus(authorization.username or ""), unquote_plus(authorization.password or "")
    return request.form.get("client_id", ""), request.form.get("client_secret", "")


def oauth_error(error: str, status: int = 400, description: str | None = None) -> Response:
    body = {"error": error}
    if description:
        body["error_description"] = description
    response = jsonify(body)
    response.status_code = status
    return response


def invalid_client(realm: str) -> Response:
    response = oauth_error("invalid_client", 401)
    response.headers["WWW-Authenticate"] = f'Basic realm="{realm}"'
    return response


def token_answer(tokens: IssuedTokens, scope: str | None = None) -> Response:
    body: dict[str, Any] = {
        "access_token": tokens.access_token,
        "token_type": "Bearer",
        "expires_in": tokens.expires_in,
    }
    if tokens.refresh_token is not None:
        body["refresh_token"] = tokens.refresh_token
    if scope is not None:
        body["scope"] = scope
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response


def bearer_subject(store: TokenStore, *, refuse_all: bool) -> str:
    """Who the request's bearer token stands for; otherwise aborts with 401 ``invalid_token``.

    ``refuse_all`` is the ``auth_failure`` fault: every token is treated as revoked."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    subject = None if refuse_all or scheme.lower() != "bearer" else store.subject_of(token.strip())
    if subject is None:
        response = oauth_error("invalid_token", 401)
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        abort(response)
    return subject
