"""Password hashing and the API's access tokens.

Tokens are HS256 JWTs whose header names the key that signed them (``kid``). The key lives in Secrets
Manager: the version staged ``AWSCURRENT`` signs, and the one staged ``AWSPREVIOUS`` (the key before the
last rotation) still verifies tokens issued within a grace period, so a rotation logs nobody out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from billhub.errors import Unauthorized
from billhub.settings import JwtSettings

# scrypt cost: ~50 ms per hash on a Lambda with 1 GB, slow enough to make offline guessing costly.
_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_ALGORITHM = "HS256"
# Clock skew tolerated between the token's issuer and its verifier.
_LEEWAY_SECONDS = 5
# An unknown ``kid`` makes the verifier re-read the secret (a key rotated since it was cached) at most
# this often per container, so tokens with made-up kids cannot turn into Secrets Manager calls.
KEY_REFETCH_INTERVAL_SECONDS = 10.0


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return _stored_hash(salt, digest)


def _stored_hash(salt: bytes, digest: bytes) -> str:
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


# Verifying against this when the email is unknown keeps both failures equally slow: it has a real
# hash's salt, digest length and scrypt cost, and matches no password. Its digest is random rather than
# computed, so importing this module (the authorizer and link functions do too) costs no scrypt.
DUMMY_PASSWORD_HASH = _stored_hash(secrets.token_bytes(16), secrets.token_bytes(32))


def key_id(secret: str) -> str:
    """A key's ``kid``: a fingerprint, so a secret version needs no metadata beside the key itself.
    A truncated SHA-256 of a 64-character random key discloses nothing usable about it."""
    return hashlib.sha256(b"billhub-jwt-kid\0" + secret.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    kid: str
    secret: str = field(repr=False)
    # The key before the last rotation: verifies tokens issued within the grace period, signs nothing.
    previous: bool = False

    @classmethod
    def of(cls, secret: str, previous: bool = False) -> SigningKey:
        return cls(key_id(secret), secret, previous)


# A key lookup: ``force`` bypasses the cache. The previous key's lookup answers None when there is none.
KeyLookup = Callable[[bool], str]
OptionalKeyLookup = Callable[[bool], str | None]


class KeyRing:
    """The current signing key and, when one exists, the previous one, each from a cached lookup."""

    def __init__(
        self,
        current: KeyLookup,
        previous: OptionalKeyLookup,
        refetch_interval: float = KEY_REFETCH_INTERVAL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        prepare: Callable[[], None] | None = None,
        forget: Callable[[], None] | None = None,
    ) -> None:
        self._current = current
        self._previous = previous
        self._refetch_interval = refetch_interval
        self._monotonic = monotonic
        self._last_refetch: float | None = None
        self._prepare = prepare
        self._forget = forget

    def prepare(self) -> None:
        """Builds what the lookups need (their clients) without reading a key: before a SnapStart
        snapshot, which must hold no secret."""
        if self._prepare is not None:
            self._prepare()

    def forget(self) -> None:
        """Forgets what the ring learnt between calls: when it last re-read the keys (a monotonic
        reading) and what its lookups remember. An environment restored from a SnapStart snapshot
        must not go by another environment's clock or cache."""
        self._last_refetch = None
        if self._forget is not None:
            self._forget()

    @classmethod
    def fixed(cls, current: str, previous: str | None = None) -> KeyRing:
        return cls(lambda _: current, lambda _: previous)

    def signing_key(self) -> SigningKey:
        return SigningKey.of(self._current(False))

    def find(self, kid: str) -> SigningKey | None:
        """The key named ``kid``. A kid not in the cached keys re-reads them (rate limited): a Lambda
        whose cache predates a rotation must still accept tokens the new key signed."""
        key = self._lookup(kid, force=False)
        if key is None and self._may_refetch():
            key = self._lookup(kid, force=True)
        return key

    def _lookup(self, kid: str, force: bool) -> SigningKey | None:
        current = SigningKey.of(self._current(force))
        if current.kid == kid:
            return current
        previous_secret = self._previous(force)
        if previous_secret is None:
            return None
        previous = SigningKey.of(previous_secret, previous=True)
        return previous if previous.kid == kid else None

    def _may_refetch(self) -> bool:
        now = self._monotonic()
        if self._last_refetch is not None and now - self._last_refetch < self._refetch_interval:
            return False
        self._last_refetch = now
        return True


class InvalidJwt(Exception):
    """A JWT refused: malformed, forged, expired, or signed with a key the ring no longer trusts."""


class RingJwt:
    """HS256 JWTs of one issuer and audience, signed with a ``KeyRing``'s current key and verified with the
    key their ``kid`` names: the current one, or the previous one for tokens issued within its grace.

    Every time rule (``exp``, ``nbf``, ``iat``, the previous key's grace) is checked against the ``now``
    the caller passes, one clock for all of them, rather than against pyjwt's own reading of the clock.
    """

    def __init__(self, keys: KeyRing, issuer: str, audience: str, previous_key_grace_seconds: int) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._grace = previous_key_grace_seconds

    def prepare(self) -> None:
        """Before a SnapStart snapshot: pyjwt imported and the key lookups' clients built, no key read."""
        import jwt  # noqa: F401

        self._keys.prepare()

    def forget(self) -> None:
        """After a SnapStart restore: nothing the key ring remembers from another environment is kept."""
        self._keys.forget()

    def sign(self, claims: dict[str, Any]) -> str:
        """``claims`` with this issuer and audience, signed with the current key, whose ``kid`` it names."""
        # pyjwt (with cryptography, when installed) loads where a token is issued or verified, not with
        # this module: the auth function's routes but login, and most of the link function's, never need it.
        import jwt

        key = self._keys.signing_key()
        claims = {**claims, "iss": self._issuer, "aud": self._audience}
        return jwt.encode(claims, key.secret, algorithm=_ALGORITHM, headers={"kid": key.kid})

    def verify(self, token: str, now: datetime, require: Sequence[str]) -> dict[str, Any]:
        """The token's claims, or ``InvalidJwt``. The algorithm is pinned (no ``none``, no RS/HS
        confusion) and the key is the one its ``kid`` names, never a key the token supplies."""
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise InvalidJwt from error
        kid = header.get("kid")
        if header.get("alg") != _ALGORITHM or not isinstance(kid, str):
            raise InvalidJwt
        key = self._keys.find(kid)
        if key is None:
            raise InvalidJwt
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.secret,
                algorithms=[_ALGORITHM],
                issuer=self._issuer,
                audience=self._audience,
                # The time claims are checked below, against ``now``.
                options={
                    "require": sorted({*require, "exp", "iat", "iss", "aud"}),
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as error:
            raise InvalidJwt from error
        self._check_times(claims, now.timestamp(), key)
        return claims

    def _check_times(self, claims: dict[str, Any], now: float, key: SigningKey) -> None:
        expires, issued, not_before = claims["exp"], claims["iat"], claims.get("nbf", claims["iat"])
        if not all(type(value) is int for value in (expires, issued, not_before)):
            raise InvalidJwt
        if expires <= now - _LEEWAY_SECONDS:
            raise InvalidJwt
        if issued > now + _LEEWAY_SECONDS or not_before > now + _LEEWAY_SECONDS:
            raise InvalidJwt
        if key.previous and now - issued > self._grace:
            # Signed with the key before the last rotation and older than the grace period.
            raise InvalidJwt


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int


class TokenService:
    """Issues and verifies the API's access tokens with the keys of a ``KeyRing`` (see ``RingJwt``)."""

    def __init__(
        self,
        keys: KeyRing,
        issuer: str,
        audience: str,
        ttl_seconds: int,
        previous_key_grace_seconds: int | None = None,
    ) -> None:
        self._ttl = ttl_seconds
        grace = ttl_seconds if previous_key_grace_seconds is None else previous_key_grace_seconds
        self._jwt = RingJwt(keys, issuer, audience, grace)

    def prepare(self) -> None:
        self._jwt.prepare()

    def forget(self) -> None:
        self._jwt.forget()

    def issue(self, user_id: str, now: datetime) -> IssuedToken:
        claims = {
            "sub": user_id,
            "iat": now,
            "nbf": now,
            "exp": now + timedelta(seconds=self._ttl),
            "jti": uuid.uuid4().hex,
        }
        return IssuedToken(self._jwt.sign(claims), self._ttl)

    def verify(self, token: str, now: datetime) -> dict[str, Any]:
        """The token's claims, or ``Unauthorized``."""
        try:
            claims = self._jwt.verify(token, now, require=["sub"])
        except InvalidJwt as error:
            raise _invalid() from error
        if not isinstance(claims["sub"], str) or not claims["sub"]:
            raise _invalid()
        return claims


def _invalid() -> Unauthorized:
    return Unauthorized("The access token is invalid or expired.")


def bearer_token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send an 'Authorization: Bearer <token>' header.")
    return token.strip()


def signing_key_from_secret(settings: JwtSettings) -> Callable[[], str]:
    """The API's current signing key in Secrets Manager (``AWSCURRENT``), cached by Powertools Parameters."""
    lookup = _current_key_lookup(settings)
    return lambda: lookup(False)


def _current_key_lookup(settings: JwtSettings) -> KeyLookup:
    from aws_lambda_powertools.utilities import parameters

    def current(force: bool) -> str:
        return str(
            parameters.get_secret(
                settings.JWT_SECRET_ARN, max_age=settings.JWT_SECRET_MAX_AGE_SECONDS, force_fetch=force
            )
        )

    return current


class PreviousKeyLookup:
    """The key staged ``AWSPREVIOUS``, or None when the secret has no such version (never rotated, or the
    label was removed to revoke the old key at once).

    Its own ``SecretsProvider``: Powertools keys its cache by secret name and transform only, not by
    ``VersionStage``, so through the shared provider the two versions would overwrite each other. An
    absent previous version is remembered as long as a value would be (Powertools caches no failure).
    """

    def __init__(self, settings: JwtSettings, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._monotonic = monotonic
        self._provider: Any = None
        self._absent_until: float | None = None

    def prepare(self) -> None:
        """Builds the provider and its Secrets Manager client, reading nothing."""
        if self._provider is None:
            from aws_lambda_powertools.utilities import parameters

            from billhub.runtime import aws_client

            self._provider = parameters.SecretsProvider(boto3_client=aws_client("secretsmanager"))

    def forget(self) -> None:
        """Drops the cached previous key and the remembered absence (the provider and client stay)."""
        self._absent_until = None
        if self._provider is not None:
            self._provider.clear_cache()

    def __call__(self, force: bool) -> str | None:
        from aws_lambda_powertools.utilities import parameters

        settings = self._settings
        if not force and self._absent_until is not None and self._monotonic() < self._absent_until:
            return None
        self.prepare()
        try:
            value = self._provider.get(
                settings.JWT_SECRET_ARN,
                max_age=settings.JWT_SECRET_MAX_AGE_SECONDS,
                force_fetch=force,
                VersionStage="AWSPREVIOUS",
            )
        except parameters.GetParameterError as error:
            if "ResourceNotFoundException" not in str(error):
                raise
            self._absent_until = self._monotonic() + settings.JWT_SECRET_MAX_AGE_SECONDS
            return None
        self._absent_until = None
        return str(value)


def key_ring_from_secret(settings: JwtSettings) -> KeyRing:
    previous = PreviousKeyLookup(settings)
    return KeyRing(_current_key_lookup(settings), previous, prepare=previous.prepare, forget=previous.forget)


def token_service(settings: JwtSettings) -> TokenService:
    return TokenService(
        key_ring_from_secret(settings),
        settings.JWT_ISSUER,
        settings.JWT_AUDIENCE,
        settings.ACCESS_TOKEN_TTL_SECONDS,
        settings.JWT_PREVIOUS_KEY_GRACE_SECONDS,
    )
