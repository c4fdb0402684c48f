"""Password hashing and access tokens."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from billhub.auth import KeyRing, TokenService, bearer_token, hash_password, key_id, verify_password
from billhub.errors import Unauthorized

KEY = "k" * 64
OLD_KEY = "o" * 64
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
ISSUER = "https://issuer.test"


def service(
    key: str = KEY, audience: str = "billhub-api", previous: str | None = None, grace: int | None = None
) -> TokenService:
    return TokenService(
        KeyRing.fixed(key, previous), ISSUER, audience, ttl_seconds=600, previous_key_grace_seconds=grace
    )


def test_password_hash_is_salted_and_verifies() -> None:
    first, second = hash_password("correct horse battery"), hash_password("correct horse battery")
    assert first != second
    assert first.startswith("scrypt$")
    assert verify_password("correct horse battery", first)
    assert not verify_password("correct horse batterY", first)


def test_issued_token_names_its_key_and_verifies_with_subject() -> None:
    token = service().issue("user-1", NOW).access_token
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT", "kid": key_id(KEY)}
    assert service().verify(token, NOW + timedelta(minutes=9))["sub"] == "user-1"


def claims(**overrides: object) -> dict[str, object]:
    moment = int(NOW.timestamp())
    return {"sub": "user-1", "iss": ISSUER, "aud": "billhub-api", "iat": moment, "exp": moment + 600, **overrides}


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda: service(key="x" * 64).issue("user-1", NOW).access_token, id="other-key"),
        pytest.param(lambda: service(audience="someone-else").issue("user-1", NOW).access_token, id="wrong-audience"),
        pytest.param(lambda: service().issue("user-1", NOW - timedelta(hours=2)).access_token, id="expired"),
        pytest.param(lambda: service().issue("user-1", NOW + timedelta(minutes=1)).access_token, id="issued-later"),
        pytest.param(
            lambda: jwt.encode(claims(), key="", algorithm="none", headers={"kid": key_id(KEY)}), id="alg-none"
        ),
        pytest.param(lambda: jwt.encode(claims(), KEY, algorithm="HS256"), id="no-kid"),
        pytest.param(lambda: jwt.encode(claims(), KEY, algorithm="HS512", headers={"kid": key_id(KEY)}), id="hs512"),
        pytest.param(
            lambda: jwt.encode(claims(iat=str(int(NOW.timestamp()))), KEY, headers={"kid": key_id(KEY)}),
            id="iat-not-a-number",
        ),
        pytest.param(lambda: jwt.encode(claims(sub=""), KEY, headers={"kid": key_id(KEY)}), id="empty-subject"),
        pytest.param(lambda: "not-a-jwt", id="garbage"),
    ],
)
def test_forged_or_stale_tokens_are_refused(forge: Callable[[], str]) -> None:
    with pytest.raises(Unauthorized):
        service().verify(forge(), NOW)


def test_previous_key_verifies_only_within_its_grace() -> None:
    old_token = service(key=OLD_KEY).issue("user-1", NOW).access_token
    rotated = service(key=KEY, previous=OLD_KEY, grace=300)
    assert rotated.verify(old_token, NOW + timedelta(seconds=300))["sub"] == "user-1"
    with pytest.raises(Unauthorized):
        rotated.verify(old_token, NOW + timedelta(seconds=301))
    # The previous key never signs.
    assert jwt.get_unverified_header(rotated.issue("user-1", NOW).access_token)["kid"] == key_id(KEY)


def test_unknown_kid_refetches_the_keys_at_most_once_per_interval() -> None:
    fetched: list[bool] = []
    stored, cached = {"current": KEY}, {"current": KEY}
    clock = [0.0]

    def current(force: bool) -> str:  # a cached lookup, as Powertools Parameters gives
        fetched.append(force)
        if force:
            cached.update(stored)
        return cached["current"]

    ring = KeyRing(current, lambda _: None, refetch_interval=10, monotonic=lambda: clock[0])
    stored["current"] = "n" * 64  # rotated after this container cached KEY: found through one refetch
    assert ring.find(key_id("n" * 64)) is not None
    assert ring.find("made-up") is None
    assert fetched.count(True) == 1
    clock[0] = 11
    assert ring.find("made-up") is None
    assert fetched.count(True) == 2


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "bearer"])
def test_authorization_header_must_be_a_bearer_token(header: str | None) -> None:
    with pytest.raises(Unauthorized):
        bearer_token(header)


def test_bearer_token_is_extracted() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
