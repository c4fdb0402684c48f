"""Password hashing and access tokens."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from billhub.auth import TokenService, bearer_token, hash_password, verify_password
from billhub.errors import Unauthorized

KEY = "k" * 64


def service(key: str = KEY, audience: str = "billhub-api") -> TokenService:
    return TokenService(lambda: key, "https://issuer.test", audience, ttl_seconds=600)


def test_password_hash_is_salted_and_verifies() -> None:
    first, second = hash_password("correct horse battery"), hash_password("correct horse battery")
    assert first != second
    assert first.startswith("scrypt$")
    assert verify_password("correct horse battery", first)
    assert not verify_password("correct horse batterY", first)


def test_issued_token_verifies_with_subject() -> None:
    token = service().issue("user-1").access_token
    assert service().verify(token)["sub"] == "user-1"


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda: service(key="x" * 64).issue("user-1").access_token, id="other-key"),
        pytest.param(lambda: service(audience="someone-else").issue("user-1").access_token, id="wrong-audience"),
        pytest.param(
            lambda: service().issue("user-1", now=datetime.now(UTC) - timedelta(hours=2)).access_token, id="expired"
        ),
        pytest.param(
            lambda: jwt.encode(
                {"sub": "user-1", "iss": "https://issuer.test", "aud": "billhub-api", "iat": 1, "exp": 4102444800},
                key="",
                algorithm="none",
            ),
            id="alg-none",
        ),
    ],
)
def test_forged_or_stale_tokens_are_refused(forge: Callable[[], str]) -> None:
    with pytest.raises(Unauthorized):
        service().verify(forge())


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "bearer"])
def test_authorization_header_must_be_a_bearer_token(header: str | None) -> None:
    with pytest.raises(Unauthorized):
        bearer_token(header)


def test_bearer_token_is_extracted() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
