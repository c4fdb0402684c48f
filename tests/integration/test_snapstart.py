"""SnapStart's hooks on the real handlers, against moto, run as the local worker runs them: before the
snapshot a function builds its clients and reads nothing; after a restore it reads its secrets anew."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import boto3
import botocore.client
import jwt
import pytest
from snapshot_restore_py import get_after_restore

from billhub.auth import PreviousKeyLookup, key_id
from billhub.oauth import InvalidOAuthState, PendingLink
from billhub.settings import JwtSettings
from localcloud.provision import Stack
from localcloud.worker import run_snapstart_lifecycle
from tests.conftest import Clock
from tests.events import authorizer_event, http_event, response_json
from tests.integration.harness import Api, LambdaContext

PASSWORD = "pw-" * 4
# Each SnapStart function, and the client factories (functools.cache) its hooks build before the snapshot.
CLIENTS = {
    "AuthorizerFunction": ["store", "tokens"],
    "AuthFunction": ["bills_table", "tokens"],
    "LinkAccountFunction": ["bills_table", "queue", "vault", "states", "idempotency", "rate_limiter"],
    "GetBillsFunction": ["bills_table"],
    "InsightsFunction": ["bills_table"],
    "RefreshFunction": ["bills_table", "queue", "idempotency"],
    "WebhooksFunction": ["bills_table", "sealer", "publisher"],
}


@pytest.fixture
def aws_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every AWS API call the handlers make, as ``service.Operation``."""
    calls: list[str] = []
    make_api_call = botocore.client.BaseClient._make_api_call  # type: ignore[attr-defined]

    def recorded(client: Any, operation: str, params: dict[str, Any]) -> Any:
        calls.append(f"{client.meta.service_model.service_name}.{operation}")
        return make_api_call(client, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", recorded)
    return calls


def after_restore() -> None:
    for hook, args, kwargs in get_after_restore():
        hook(*args, **kwargs)


@pytest.mark.parametrize("logical_id", sorted(CLIENTS))
def test_before_the_snapshot_a_function_builds_its_clients_and_calls_nothing(
    load_handler: Callable[[str], ModuleType], aws_calls: list[str], logical_id: str
) -> None:
    module = load_handler(logical_id)
    assert all(getattr(module, name).cache_info().currsize == 0 for name in CLIENTS[logical_id])
    run_snapstart_lifecycle()
    # No secret (nor anything else) is read into the snapshot.
    assert aws_calls == []
    built = {name: getattr(module, name).cache_info().currsize for name in CLIENTS[logical_id]}
    assert built == dict.fromkeys(CLIENTS[logical_id], 1)


def login(auth: ModuleType, email: str) -> str:
    event = http_event("POST", "/auth/login", body={"email": email, "password": PASSWORD})
    response = auth.handler(event, LambdaContext())
    assert response["statusCode"] == 200, response
    return str(response_json(response)["access_token"])


def test_after_a_restore_the_signing_key_is_read_again_not_taken_from_the_snapshot(
    load_handler: Callable[[str], ModuleType], stack: Stack
) -> None:
    auth, authorizer = load_handler("AuthFunction"), load_handler("AuthorizerFunction")
    run_snapstart_lifecycle()
    register = http_event("POST", "/auth/register", body={"email": "ada@example.com", "password": PASSWORD})
    assert auth.handler(register, LambdaContext())["statusCode"] == 201
    old = login(auth, "ada@example.com")  # the key is cached now (JwtKeyCacheSeconds: 300 s)
    secrets = boto3.client("secretsmanager")
    secret_id = stack.refs["JwtSigningSecret"]
    secrets.put_secret_value(SecretId=secret_id, SecretString="r" * 64)  # rotated
    assert jwt.get_unverified_header(login(auth, "ada@example.com"))["kid"] == jwt.get_unverified_header(old)["kid"]
    # A restore: the cache filled before it is gone, so the first login signs with the key in force now.
    after_restore()
    token = login(auth, "ada@example.com")
    assert jwt.get_unverified_header(token)["kid"] == key_id("r" * 64)
    verdict = authorizer.handler(authorizer_event(f"Bearer {token}"), LambdaContext())
    assert verdict["isAuthorized"] is True


def test_a_restored_previous_key_lookup_forgets_the_absence_it_remembered(stack: Stack) -> None:
    settings = JwtSettings(
        JWT_SECRET_ARN=stack.refs["JwtSigningSecret"], JWT_ISSUER="i", JWT_AUDIENCE="a", JWT_SECRET_MAX_AGE_SECONDS=300
    )
    previous = PreviousKeyLookup(settings)
    previous.prepare()
    assert previous(False) is None  # never rotated: no AWSPREVIOUS, remembered for 300 s
    secrets = boto3.client("secretsmanager")
    first = secrets.get_secret_value(SecretId=settings.JWT_SECRET_ARN)["SecretString"]
    secrets.put_secret_value(SecretId=settings.JWT_SECRET_ARN, SecretString="r" * 64)
    assert previous(False) is None
    previous.forget()
    assert previous(False) == first


def test_after_a_restore_the_oauth_states_key_ring_forgets_what_it_learnt(api: Api, clock: Clock) -> None:
    run_snapstart_lifecycle()
    states = api.link.states()
    pending = PendingLink(user_id=api.user(), provider="sparkgrid", redirect_uri="https://api.example/cb")
    begun = states.issue(pending, clock.now)  # signed with the first key
    # A state naming a key nobody holds: the ring re-reads the secret, finds no AWSPREVIOUS, and
    # remembers both (no re-read for 10 s, no previous key for JwtKeyCacheSeconds).
    stranger = jwt.encode({"jti": "x"}, "s" * 64, algorithm="HS256", headers={"kid": key_id("s" * 64)})
    with pytest.raises(InvalidOAuthState):
        states.redeem(stranger, "sparkgrid", clock.now)
    secret_id = api.stack.refs["JwtSigningSecret"]
    boto3.client("secretsmanager").put_secret_value(SecretId=secret_id, SecretString="r" * 64)  # rotated
    # A restore: what the ring learnt before it is gone, so the first key is found as AWSPREVIOUS.
    after_restore()
    assert states.redeem(begun, "sparkgrid", clock.now) == pending


def test_after_a_restore_the_webhook_vault_makes_a_new_data_key(api: Api, aws_calls: list[str]) -> None:
    # Given the webhooks function restored once, having sealed a secret with a data key
    run_snapstart_lifecycle()
    user_id = api.user()
    body = {"url": "https://93.184.215.14/hooks"}
    first = api.call(api.webhooks, "POST", "/webhooks", user_id=user_id, body=body)
    assert first[0] == 201, first
    assert aws_calls.count("kms.GenerateDataKey") == 1
    # When the next one is sealed in the same environment, it reuses that key; after a restore it does not
    assert api.call(api.webhooks, "POST", "/webhooks", user_id=user_id, body=body)[0] == 201
    assert aws_calls.count("kms.GenerateDataKey") == 1
    after_restore()
    assert api.call(api.webhooks, "POST", "/webhooks", user_id=user_id, body=body)[0] == 201
    assert aws_calls.count("kms.GenerateDataKey") == 2
