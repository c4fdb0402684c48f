"""Sign-in security through the handlers, as API Gateway calls them, against moto: the JWT attack matrix
at the authorizer, signing-key rotation with a grace period, and login throttling per account and per
source. Time is driven through the handlers' clock; the signing keys are read uncached
(``JwtKeyCacheSeconds=0``), standing for a cache that has expired."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import boto3
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from billhub import accounts
from billhub.auth import KeyRing, key_id
from billhub.oauth import OAuthStates, PendingLink
from tests.conftest import Clock
from tests.events import authorizer_event, http_event, response_json
from tests.integration.harness import Api, LambdaContext

PASSWORD = "pw-" * 4
WRONG = "wrong-password"
ISSUER = "https://billhub.example/auth"
AUDIENCE = "billhub-api"
ATTACKER_IP = "203.0.113.9"
OTHER_IP = "198.51.100.7"

pytestmark = pytest.mark.stack_parameters(JwtKeyCacheSeconds="0", JwtPreviousKeyGraceSeconds="900")


def login(api: Api, email: str, password: str = PASSWORD, ip: str = "192.0.2.1") -> tuple[int, Any, dict[str, str]]:
    event = http_event("POST", "/auth/login", body={"email": email, "password": password})
    event["requestContext"]["http"]["sourceIp"] = ip
    response = api.auth.handler(event, LambdaContext())
    return response["statusCode"], response_json(response), response.get("headers", {})


def token_of(api: Api, email: str = "ada@example.com") -> str:
    status, body, _ = login(api, email)
    assert status == 200, body
    return str(body["access_token"])


def authorized(api: Api, token: str) -> bool:
    verdict = api.authorizer.handler(authorizer_event(f"Bearer {token}"), LambdaContext())
    return bool(verdict["isAuthorized"])


def secrets_manager() -> Any:
    return boto3.client("secretsmanager")


def current_key(api: Api) -> str:
    return str(secrets_manager().get_secret_value(SecretId=api.stack.refs["JwtSigningSecret"])["SecretString"])


def rotate(api: Api, new_key: str) -> None:
    """What an operator does: a new AWSCURRENT version; Secrets Manager stages the old one AWSPREVIOUS."""
    secrets_manager().put_secret_value(SecretId=api.stack.refs["JwtSigningSecret"], SecretString=new_key)


# ------------------------------------------------------------------ the JWT attack matrix
def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_by_hand(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """HS256 with any bytes as the secret (pyjwt refuses a PEM key as an HMAC secret, an attacker need not)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


class Forge:
    """Builds attack tokens for ``user_id`` at the clock's time, knowing what an attacker may know
    (and, for the claim checks, the real key: those tokens fail on their claims alone)."""

    def __init__(self, key: str, user_id: str, now: datetime) -> None:
        self.key, self.user_id, self.moment = key, user_id, int(now.timestamp())

    def claims(self, **overrides: Any) -> dict[str, Any]:
        claims = {
            "sub": self.user_id,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": self.moment,
            "nbf": self.moment,
            "exp": self.moment + 3600,
            **overrides,
        }
        return {name: value for name, value in claims.items() if value is not None}

    def signed(self, **overrides: Any) -> str:
        return jwt.encode(self.claims(**overrides), self.key, algorithm="HS256", headers={"kid": key_id(self.key)})


def tampered(token: str, forge: Forge) -> str:
    """A genuine token whose payload now names another user, the signature left as it was."""
    header, _, signature = token.split(".")
    return f"{header}.{b64url(json.dumps(forge.claims(sub='someone-else')).encode())}.{signature}"


ATTACKS: dict[str, Callable[[Forge], str]] = {
    "alg none": lambda f: jwt.encode(f.claims(), key="", algorithm="none", headers={"kid": key_id(f.key)}),
    "alg none, no signature, no kid": lambda f: jwt.encode(f.claims(), key="", algorithm="none"),
    "HS256 keyed with the RSA public key (confusion)": lambda f: hs256_by_hand(
        {"alg": "HS256", "typ": "JWT", "kid": key_id(f.key)}, f.claims(), RSA_PUBLIC_PEM
    ),
    "RS256 with the attacker's key": lambda f: jwt.encode(
        f.claims(), RSA_KEY, algorithm="RS256", headers={"kid": key_id(f.key)}
    ),
    "HS512 with the real key": lambda f: jwt.encode(
        f.claims(), f.key, algorithm="HS512", headers={"kid": key_id(f.key)}
    ),
    "expired": lambda f: f.signed(iat=f.moment - 7200, nbf=f.moment - 7200, exp=f.moment - 60),
    "not yet valid (nbf)": lambda f: f.signed(nbf=f.moment + 600),
    "issued in the future (iat)": lambda f: f.signed(iat=f.moment + 600),
    "no exp": lambda f: f.signed(exp=None),
    "wrong issuer": lambda f: f.signed(iss="https://evil.example/auth"),
    "wrong audience": lambda f: f.signed(aud="another-api"),
    "tampered payload": lambda f: tampered(f.signed(), f),
    "guessed key": lambda f: jwt.encode(f.claims(), "g" * 64, algorithm="HS256", headers={"kid": key_id(f.key)}),
    "unknown kid": lambda f: jwt.encode(f.claims(), f.key, algorithm="HS256", headers={"kid": "0123456789abcdef"}),
    "no kid": lambda f: jwt.encode(f.claims(), f.key, algorithm="HS256"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_attack_token_is_denied(api: Api, clock: Clock, attack: str) -> None:
    forge = Forge(current_key(api), api.user(), clock())
    assert authorized(api, forge.signed()), "the control token, built the same way, must pass"
    assert not authorized(api, ATTACKS[attack](forge))


def test_token_of_a_deleted_user_is_denied(api: Api, clock: Clock) -> None:
    user_id = api.user()
    token = token_of(api)
    assert authorized(api, token)
    assert api.delete_me(user_id) == (204, None)
    assert not authorized(api, token)


def test_time_rules_follow_the_clock(api: Api, clock: Clock) -> None:
    api.user()
    token = token_of(api)
    clock.advance(seconds=3600 + 5)  # the leeway is 5 s
    assert not authorized(api, token)


# ------------------------------------------------------------------ key rotation
def test_rotation_keeps_old_tokens_for_the_grace_period_and_signs_with_the_new_key(api: Api, clock: Clock) -> None:
    api.user()
    old_key = current_key(api)
    old_token = token_of(api)
    rotate(api, "n" * 64)

    clock.advance(minutes=5)
    assert authorized(api, old_token), "within the grace period the previous key still verifies"
    new_token = token_of(api)
    assert jwt.get_unverified_header(new_token)["kid"] == key_id("n" * 64) != key_id(old_key)
    assert authorized(api, new_token)

    clock.advance(minutes=10, seconds=1)  # the old token is 15 min + 1 s old, still unexpired
    assert not authorized(api, old_token), "after the grace period it does not"
    assert authorized(api, new_token)


def test_a_second_rotation_retires_the_oldest_key(api: Api, clock: Clock) -> None:
    api.user()
    old_token = token_of(api)
    rotate(api, "n" * 64)
    middle_token = token_of(api)
    rotate(api, "m" * 64)
    assert not authorized(api, old_token)
    assert authorized(api, middle_token)


def test_removing_the_previous_label_revokes_the_old_key_at_once(api: Api, clock: Clock) -> None:
    api.user()
    old_token = token_of(api)
    rotate(api, "n" * 64)
    assert authorized(api, old_token)
    arn = api.stack.refs["JwtSigningSecret"]
    stages = secrets_manager().describe_secret(SecretId=arn)["VersionIdsToStages"]
    previous = next(version for version, labels in stages.items() if "AWSPREVIOUS" in labels)
    secrets_manager().update_secret_version_stage(
        SecretId=arn, VersionStage="AWSPREVIOUS", RemoveFromVersionId=previous
    )
    assert not authorized(api, old_token)
    assert authorized(api, token_of(api))


# ------------------------------------------------------------------ OAuth2 link states across a rotation
def state_kid(query: dict[str, str]) -> str:
    return str(jwt.get_unverified_header(query["state"])["kid"])


def test_a_link_begun_before_a_rotation_completes_after_it(api: Api, clock: Clock) -> None:
    user_id = api.user()
    old_key = current_key(api)
    begun = api.oauth_consent(user_id, "sparkgrid", "ada")
    assert state_kid(begun) == key_id(old_key)
    rotate(api, "n" * 64)
    clock.advance(minutes=5)
    status, body = api.oauth_callback("sparkgrid", begun)
    assert status == 201, body
    assert [account["provider"] for account in api.accounts(user_id)] == ["sparkgrid"]
    # New links are signed with the new key; the used state stays used.
    assert state_kid(api.oauth_consent(user_id, "sparkgrid", "ada")) == key_id("n" * 64)
    assert api.oauth_callback("sparkgrid", begun)[1]["code"] == "invalid_oauth_state"


def test_a_state_signed_with_a_retired_key_is_refused_as_a_forged_one(api: Api) -> None:
    user_id = api.user()
    begun = api.oauth_consent(user_id, "sparkgrid", "ada")
    rotate(api, "n" * 64)
    rotate(api, "m" * 64)  # the state's key is neither AWSCURRENT nor AWSPREVIOUS now
    status, body = api.oauth_callback("sparkgrid", begun)
    assert (status, body["code"]) == (400, "invalid_oauth_state")
    assert body["message"] == "The link request is invalid or has expired; start linking again."
    assert api.accounts(user_id) == []


@pytest.mark.stack_parameters(JwtKeyCacheSeconds="300", JwtPreviousKeyGraceSeconds="900")
def test_a_container_holding_the_old_key_completes_a_link_begun_on_one_holding_the_new(api: Api, clock: Clock) -> None:
    user_id = api.user()
    old_key = current_key(api)
    assert api.oauth_start(user_id, "sparkgrid")[0] == 200  # this container has read (and caches) the key
    rotate(api, "n" * 64)
    assert state_kid(api.oauth_consent(user_id, "sparkgrid", "ada")) == key_id(old_key), "still cached"
    # Another warm container, whose cache expired since, already signs with the new key.
    newer = OAuthStates(api.link.bills_table().oauth_states, KeyRing.fixed("n" * 64, old_key), ISSUER, AUDIENCE, 900)
    pending = PendingLink(
        user_id=user_id, provider="sparkgrid", redirect_uri=api.link.settings.oauth_callback_url("sparkgrid")
    )
    start = accounts.start_oauth(api.link.bills_table(), newer, api.link.directory(), pending, clock.now)
    begun = api.consent(start.authorize_url, "ada")
    assert state_kid(begun) == key_id("n" * 64)
    # The user comes back to the first container: the unknown kid makes it re-read the secret.
    status, body = api.oauth_callback("sparkgrid", begun)
    assert status == 201, body
    assert state_kid(api.oauth_consent(user_id, "sparkgrid", "ada")) == key_id("n" * 64)


# ------------------------------------------------------------------ login throttling
def test_failures_per_account_are_throttled_alike_for_known_and_unknown_emails(api: Api, clock: Clock) -> None:
    api.user("ada@example.com")
    api.user("bob@example.com")
    answers = {}
    for email in ("ada@example.com", "nobody@example.com"):
        for attempt in range(5):
            status, body, _ = login(api, email, WRONG, ip=f"192.0.2.{attempt + 10}")
            assert (status, body["code"]) == (401, "unauthorized")
        answers[email] = login(api, email, PASSWORD, ip=OTHER_IP)  # even the right password now waits
    assert answers["ada@example.com"] == answers["nobody@example.com"]
    status, body, headers = answers["ada@example.com"]
    assert (status, body["code"], headers["Retry-After"]) == (429, "too_many_attempts", "900")
    assert login(api, "bob@example.com")[0] == 200, "other accounts are unaffected"

    clock.advance(minutes=10)
    status, _, headers = login(api, "ada@example.com")
    assert (status, headers["Retry-After"]) == (429, "300")
    clock.advance(minutes=5)
    assert login(api, "ada@example.com")[0] == 200, "the window is over"


def test_a_successful_login_clears_the_account_count(api: Api, clock: Clock) -> None:
    api.user()
    for _ in range(4):
        assert login(api, "ada@example.com", WRONG)[0] == 401
    assert login(api, "ada@example.com")[0] == 200
    for _ in range(5):
        assert login(api, "ada@example.com", WRONG)[0] == 401
    assert login(api, "ada@example.com", WRONG)[0] == 429


def test_a_wrong_password_at_delete_me_is_a_failed_login_and_throttled_with_them(api: Api, clock: Clock) -> None:
    # Given a user whose token was stolen: the thief does not know the password
    user_id = api.user("ada@example.com")
    for _ in range(3):
        status, body = api.delete_me(user_id, WRONG)
        assert (status, body["code"]) == (401, "unauthorized"), body
    # Then those guesses and failed logins share the email's count: 5 in all, then even the right
    # password waits, at DELETE /me as at the login
    for _ in range(2):
        assert login(api, "ada@example.com", WRONG, ip=OTHER_IP)[0] == 401
    status, body = api.delete_me(user_id)
    assert (status, body["code"]) == (429, "too_many_attempts"), body
    assert login(api, "ada@example.com", ip=OTHER_IP)[0] == 429
    assert api.call(api.auth, "GET", "/me", user_id=user_id)[0] == 200, "nothing was deleted"
    # and once the window is over, the right password deletes
    clock.advance(minutes=15)
    assert api.delete_me(user_id) == (204, None)
    assert api.call(api.auth, "GET", "/me", user_id=user_id)[0] == 404


def test_failures_per_source_are_throttled_and_a_success_does_not_reset_them(api: Api, clock: Clock) -> None:
    api.user("ada@example.com")
    api.user("eve@example.com")  # the attacker's own account
    for attempt in range(19):
        assert login(api, f"victim{attempt}@example.com", WRONG, ip=ATTACKER_IP)[0] == 401
    assert login(api, "eve@example.com", ip=ATTACKER_IP)[0] == 200
    assert login(api, "victim19@example.com", WRONG, ip=ATTACKER_IP)[0] == 401
    for _ in range(4):
        assert login(api, "ada@example.com", WRONG, ip=OTHER_IP)[0] == 401
    status, body, headers = login(api, "ada@example.com", ip=ATTACKER_IP)
    assert (status, body["code"], headers["Retry-After"]) == (429, "too_many_attempts", "900")
    # That refused attempt tried no password, so it did not count against ada's account either.
    assert login(api, "ada@example.com", WRONG, ip=OTHER_IP)[0] == 401
    assert login(api, "ada@example.com", ip=OTHER_IP)[0] == 429
    assert login(api, "bob@example.com", WRONG, ip=OTHER_IP)[0] == 401, "other sources are unaffected"
