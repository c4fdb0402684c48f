"""Password hashing and the API's access tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from billhub.errors import Unauthorized
from billhub.settings import JwtSettings

# scrypt cost: ~50 ms per hash on a Lambda with 1 GB, slow enough to make offline guessing costly.
_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_ALGORITHM = "HS256"


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    encoded = [base64.b64encode(part).decode() for part in (salt, digest)]
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${encoded[0]}${encoded[1]}"


def verify_password(password: str, stored: str) -> bool:
    scheme, n, r, p, salt, digest = stored.split("$")
    if scheme != "scrypt":
        return False
    expected = base64.b64decode(digest)
    actual = hashlib.scrypt(
        password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
    )
    return hmac.compare_digest(actual, expected)


# Verifying against this when the email is unknown keeps both failures equally slow.
DUMMY_PASSWORD_HASH = hash_password(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int


class TokenService:
    """Issues and verifies HS256 JWTs. The key comes from ``signing_key``, a cached secret lookup."""

    def __init__(self, signing_key: Callable[[], str], issuer: str, audience: str, ttl_seconds: int) -> None:
        self._signing_key = signing_key
        self._issuer = issuer
        self._audience = audience
        self._ttl = ttl_seconds

    def issue(self, user_id: str, now: datetime | None = None) -> IssuedToken:
        issued_at = now or datetime.now(UTC)
        claims = {
            "sub": user_id,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + timedelta(seconds=self._ttl),
            "jti": uuid.uuid4().hex,
        }
        return IssuedToken(jwt.encode(claims, self._signing_key(), algorithm=_ALGORITHM), self._ttl)

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or ``Unauthorized``. The algorithm is pinned: no ``none``, no confusion."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._signing_key(),
                algorithms=[_ALGORITHM],
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["sub", "exp", "iat", "iss", "aud"]},
                leeway=5,
            )
        except jwt.PyJWTError as error:
            raise Unauthorized("The access token is invalid or expired.") from error
        return claims


def bearer_token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send an 'Authorization: Bearer <token>' header.")
    return token.strip()


def signing_key_from_secret(settings: JwtSettings) -> Callable[[], str]:
    """The API's signing key in Secrets Manager, cached by Powertools Parameters."""
    from aws_lambda_powertools.utilities import parameters

    def signing_key() -> str:
        return str(parameters.get_secret(settings.JWT_SECRET_ARN, max_age=settings.JWT_SECRET_MAX_AGE_SECONDS))

    return signing_key


def token_service(settings: JwtSettings) -> TokenService:
    return TokenService(
        signing_key_from_secret(settings),
        settings.JWT_ISSUER,
        settings.JWT_AUDIENCE,
        settings.ACCESS_TOKEN_TTL_SECONDS,
    )
