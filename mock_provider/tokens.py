"""OAuth 2 state of one simulated provider: authorization codes, access tokens and refresh tokens.

Opaque random strings mapped to the subject they stand for (a username or a client id); expiry
follows the sandbox's clock so tests can age tokens without sleeping. Thread-safe.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

CODE_TTL_SECONDS = 120
# What ``secrets.token_urlsafe(32)`` gives: 256 random bits, 43 characters.
TOKEN_CHARS = 43


def _new_token(chars: int) -> str:
    """A random URL-safe token of ``chars`` characters (never fewer than 256 random bits behind it)."""
    return secrets.token_urlsafe(max(32, chars))[:chars]


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    refresh_token: str | None = None


@dataclass(frozen=True)
class _Code:
    client_id: str
    redirect_uri: str
    subject: str
    expires_at: float


@dataclass
class _AccessToken:
    subject: str
    expires_at: float


class TokenStore:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._codes: dict[str, _Code] = {}
        self._access: dict[str, _AccessToken] = {}
        self._refresh: dict[str, str] = {}  # refresh token -> subject
        self.changes = 0  # counts every change, so whoever keeps the store on disk knows when to write

    def snapshot(self) -> dict[str, Any]:
        """Everything the store remembers, as JSON-ready data (``restore`` takes it back)."""
        with self._lock:
            return {
                "codes": {code: asdict(issued) for code, issued in self._codes.items()},
                "access": {token: asdict(issued) for token, issued in self._access.items()},
                "refresh": dict(self._refresh),
            }

    def restore(self, snapshot: Mapping[str, Any]) -> int:
        """Replaces what the store remembers with a ``snapshot``; how many tokens and codes it holds."""
        codes = {str(code): _Code(**issued) for code, issued in snapshot["codes"].items()}
        access = {str(token): _AccessToken(**issued) for token, issued in snapshot["access"].items()}
        refresh = {str(token): str(subject) for token, subject in snapshot["refresh"].items()}
        with self._lock:
            self._codes, self._access, self._refresh = codes, access, refresh
            self.changes += 1
            return len(codes) + len(access) + len(refresh)

    def issue_code(self, client_id: str, redirect_uri: str, subject: str) -> str:
        code = secrets.token_urlsafe(24)
        with self._lock:
            now = self._clock()
            self._codes = {key: value for key, value in self._codes.items() if value.expires_at > now}
            self._codes[code] = _Code(client_id, redirect_uri, subject, now + CODE_TTL_SECONDS)
            self.changes += 1
        return code

    def redeem_code(self, code: str, client_id: str, redirect_uri: str) -> str | None:
        """The code's subject, if the code is live and bound to this client and redirect URI.

        Any attempt spends the code, a failed one included, so a code can never be tried twice."""
        with self._lock:
            issued = self._codes.pop(code, None)
            now = self._clock()
            self.changes += 1
        if issued is None or issued.expires_at <= now:
            return None
        if (issued.client_id, issued.redirect_uri) != (client_id, redirect_uri):
            return None
        return issued.subject

    def issue(self, subject: str, ttl_seconds: int, *, with_refresh: bool, chars: int = TOKEN_CHARS) -> IssuedTokens:
        refresh_token = _new_token(chars) if with_refresh else None
        with self._lock:
            if refresh_token is not None:
                self._refresh[refresh_token] = subject
            return self._issue_access(subject, ttl_seconds, refresh_token, chars)

    def refresh(
        self, refresh_token: str, ttl_seconds: int, *, rotate: bool, chars: int = TOKEN_CHARS
    ) -> IssuedTokens | None:
        """A new access token for a live refresh token; with ``rotate`` the refresh token is replaced.
        New tokens are ``chars`` characters long."""
        with self._lock:
            subject = self._refresh.get(refresh_token)
            if subject is None:
                return None
            if rotate:
                self.changes += 1
                del self._refresh[refresh_token]
                refresh_token = _new_token(chars)
                self._refresh[refresh_token] = subject
            return self._issue_access(subject, ttl_seconds, refresh_token, chars)

    def subject_of(self, access_token: str) -> str | None:
        """Who a live access token stands for; None for unknown, expired or revoked tokens."""
        with self._lock:
            token = self._access.get(access_token)
            if token is None or token.expires_at <= self._clock():
                return None
            return token.subject

    def expire_access_tokens(self) -> int:
        """Ends every live access token now (refresh tokens keep working); how many there were."""
        with self._lock:
            now = self._clock()
            live = [token for token in self._access.values() if token.expires_at > now]
            for token in live:
                token.expires_at = now
            self.changes += 1
            return len(live)

    def revoke_all(self) -> int:
        """Forgets every access and refresh token; how many there were."""
        with self._lock:
            revoked = len(self._access) + len(self._refresh)
            self._access.clear()
            self._refresh.clear()
            self.changes += 1
            return revoked

    def clear(self) -> None:
        with self._lock:
            self._codes.clear()
            self._access.clear()
            self._refresh.clear()
            self.changes += 1

    def _issue_access(
        self, subject: str, ttl_seconds: int, refresh_token: str | None, chars: int = TOKEN_CHARS
    ) -> IssuedTokens:
        # Caller holds the lock. Expired tokens are dropped here so a long-running sandbox stays small.
        now = self._clock()
        self._access = {key: value for key, value in self._access.items() if value.expires_at > now}
        access_token = _new_token(chars)
        self._access[access_token] = _AccessToken(subject, now + ttl_seconds)
        self.changes += 1
        return IssuedTokens(access_token, ttl_seconds, refresh_token)
