"""The adapters and their auth strategies against the sandbox over HTTP, without AWS: token renewal
races, the shared service token, and each kind of provider misbehaviour mapped to the right error."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest

from billhub.providers import REGISTRY
from billhub.providers.auth import AuthorizationCodeGrant, OAuthTokens
from billhub.providers.clearwater import ClearWaterCredentials
from billhub.providers.errors import (
    ProviderAuthRejected,
    ProviderDataError,
    ProviderMisconfigured,
    ProviderUnavailable,
)
from billhub.providers.fibrelink import FibreLinkCredentials
from billhub.providers.http import RetryPolicy
from billhub.providers.northgas import NorthGasCredentials
from billhub.providers.session import ProviderConnector, ProviderSession
from mock_provider.control import Control
from tests.sandbox import SANDBOX_CLIENTS, account, now, requests_seen, sandbox_admin, sandbox_directory

CLIENTS = SANDBOX_CLIENTS
# Quick retries, and a read timeout no loaded machine reaches: these tests count the requests the sandbox
# saw, and a slow answer timed out would be sent again. Only the timeout test itself times out (IMPATIENT).
FAST = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.02, max_retry_after=0.05, read_timeout=30)
IMPATIENT = replace(FAST, read_timeout=0.5)
REDIRECT = "http://127.0.0.1:9/callback"


def connector(client: httpx.AsyncClient, base_url: str, policy: RetryPolicy = FAST) -> ProviderConnector:
    return ProviderConnector(client, sandbox_directory(base_url), now, policy)


async def sparkgrid_tokens(conn: ProviderConnector, base_url: str, login: str) -> OAuthTokens:
    grant = REGISTRY["sparkgrid"].auth
    assert isinstance(grant, AuthorizationCodeGrant)
    url = grant.authorize_url(conn.directory.url("sparkgrid", "authorize"), CLIENTS["sparkgrid"], REDIRECT, "s1")
    consent = httpx.get(f"{url}&{urlencode({'login_hint': login})}")
    code = dict(parse_qsl(urlsplit(consent.headers["Location"]).query))["code"]
    token_url = conn.directory.url("sparkgrid", "token")
    return await grant.exchange_code(conn.http("sparkgrid"), token_url, CLIENTS["sparkgrid"], code, REDIRECT, now())


def expired(tokens: OAuthTokens) -> OAuthTokens:
    return tokens.model_copy(update={"access_token_expires_at": now() - timedelta(minutes=1)})


def test_a_fetch_whose_refresh_token_was_rotated_elsewhere_carries_on_with_the_saved_one(
    mock_provider: tuple[str, Control],
) -> None:
    base_url = mock_provider[0]
    adapter = REGISTRY["sparkgrid"]

    async def scenario() -> tuple[int, int, int]:
        async with httpx.AsyncClient() as client:
            conn = connector(client, base_url)
            original = await sparkgrid_tokens(conn, base_url, "ada")
            saved: list[Any] = []

            async def save(credentials: Any) -> None:
                saved.append(credentials)

            # Fetch A renews first: the provider rotates the refresh token and A saves the new pair
            first = conn.session("sparkgrid", expired(original), save=save)
            await adapter.verify(first)

            # Fetch B started from the same stored pair; its refresh token is now spent
            async def reload() -> Any:
                return saved[-1]

            second = conn.session("sparkgrid", expired(original), reload=reload)
            bills = await adapter.fetch_bills(second, account("sparkgrid"))
            return len(saved), second.renewed_tokens, len(bills)

    saves, renewals_by_b, bills = asyncio.run(scenario())
    assert (saves, renewals_by_b, bills) == (1, 0, 24)


def test_a_spent_refresh_token_with_nothing_newer_stored_needs_the_user(mock_provider: tuple[str, Control]) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient() as client:
            conn = connector(client, mock_provider[0])
            original = await sparkgrid_tokens(conn, mock_provider[0], "ada")
            await REGISTRY["sparkgrid"].verify(conn.session("sparkgrid", expired(original)))

            async def reload() -> Any:
                return original  # nothing newer was saved

            stale = conn.session("sparkgrid", expired(original), reload=reload)
            await REGISTRY["sparkgrid"].verify(stale)

    with pytest.raises(ProviderAuthRejected, match="revoked"):
        asyncio.run(scenario())


def test_the_gas_service_token_is_shared_across_accounts(mock_provider: tuple[str, Control]) -> None:
    adapter = REGISTRY["northgas"]

    async def scenario() -> None:
        async with httpx.AsyncClient() as client:
            conn = connector(client, mock_provider[0])
            for number in ("NG30000001", "NG30000002"):
                creds = NorthGasCredentials(account_number=number, postcode="NG1 1AA")
                await adapter.fetch_bills(conn.session("northgas", creds), account("northgas"))

    asyncio.run(scenario())
    # one token, then three pages of ten for each of the two accounts
    assert requests_seen(mock_provider[0], "northgas") == 1 + 3 + 3


@pytest.mark.parametrize(
    ("faults", "error", "message", "policy"),
    [
        ({"timeout_rate": 1.0, "hang_ms": 1500}, ProviderUnavailable, "did not answer in time", IMPATIENT),
        ({"storm_429": True}, ProviderUnavailable, "HTTP 429", FAST),
        ({"outage": True}, ProviderUnavailable, "HTTP 503", FAST),
        ({"malformed_rate": 1.0}, ProviderDataError, "FibreLink", FAST),
        ({"auth_failure": True}, ProviderAuthRejected, "refused the credentials", FAST),
    ],
    ids=["timeout", "429-storm", "outage", "malformed", "revoked"],
)
def test_each_fault_becomes_the_error_that_decides_what_happens_next(
    mock_provider: tuple[str, Control],
    faults: dict[str, Any],
    error: type[Exception],
    message: str,
    policy: RetryPolicy,
) -> None:
    sandbox_admin(mock_provider[0], "faults/fibrelink", faults)
    credentials = FibreLinkCredentials(username="grace", password="pass_good")

    async def scenario() -> ProviderSession:
        async with httpx.AsyncClient() as client:
            session = connector(client, mock_provider[0], policy).session("fibrelink", credentials)
            await REGISTRY["fibrelink"].fetch_bills(session, account("fibrelink"))
            return session

    with pytest.raises(error, match=message):
        asyncio.run(scenario())
    # Retryable faults were retried within the policy; the others were not
    retried = error is ProviderUnavailable
    assert requests_seen(mock_provider[0], "fibrelink") == (policy.attempts if retried else 1)


def fetch_from_canned(provider: str, credentials: Any, answer: dict[str, Any]) -> Any:
    """Fetches bills from a provider that always sends ``answer`` (for payloads the sandbox never sends)."""

    async def scenario() -> Any:
        transport = httpx.MockTransport(lambda request: httpx.Response(200, json=answer))
        async with httpx.AsyncClient(transport=transport) as client:
            session = connector(client, "http://provider.test").session(provider, credentials)
            return await REGISTRY[provider].fetch_bills(session, account(provider))

    return asyncio.run(scenario())


@pytest.mark.parametrize(
    "next_link",
    ["https://elsewhere.example/steal", "/fibrelink/../_admin/stats", "/fibrelink/%2e%2e/sparkgrid/api/v2/customer"],
)
def test_a_next_link_that_leaves_the_provider_is_never_followed(next_link: str) -> None:
    # The user's credentials would go with the request
    credentials = FibreLinkCredentials(username="grace", password="pass_good")
    with pytest.raises(ProviderDataError, match="outside its API"):
        fetch_from_canned("fibrelink", credentials, {"items": [], "links": {"next": next_link}})


@pytest.mark.parametrize("amount", ["abc", "1E+40", "NaN", "Infinity"])
def test_an_amount_that_is_not_money_is_a_data_error(amount: str) -> None:
    bill = {
        "bill_id": "CW-1-202611",
        "amount_due": amount,
        "currency": "USD",
        "issue_date": "2026-11-01",
        "due_date": "2026-11-22",
        "status": "UNPAID",
        "service_period": {"from": "2026-10-01", "to": "2026-10-31"},
    }
    with pytest.raises(ProviderDataError, match="cannot read"):
        fetch_from_canned(
            "clearwater", ClearWaterCredentials(api_key="cw_sandbox_x"), {"bills": [bill], "page": 1, "total_pages": 1}
        )


def test_two_fetches_renewing_one_grant_at_once_both_succeed(mock_provider: tuple[str, Control]) -> None:
    adapter = REGISTRY["sparkgrid"]

    async def scenario() -> tuple[int, int]:
        async with httpx.AsyncClient() as client:
            conn = connector(client, mock_provider[0])
            original = await sparkgrid_tokens(conn, mock_provider[0], "ada")
            stored: list[Any] = [expired(original)]

            async def slow_save(credentials: Any) -> None:
                await asyncio.sleep(0.2)  # KMS and DynamoDB take a moment
                stored.append(credentials)

            async def reload() -> Any:
                return stored[-1]

            sessions = [conn.session("sparkgrid", expired(original), save=slow_save, reload=reload) for _ in range(2)]
            await asyncio.gather(*(adapter.verify(session) for session in sessions))
            return sum(session.renewed_tokens for session in sessions), len(stored)

    # One fetch renewed and saved; the other found the grant spent and waited for what was saved
    assert asyncio.run(scenario()) == (1, 2)


def test_a_refused_service_token_is_the_services_fault_not_the_customers(mock_provider: tuple[str, Control]) -> None:
    sandbox_admin(mock_provider[0], "faults/northgas", {"auth_failure": True})
    credentials = NorthGasCredentials(account_number="NG30000001", postcode="NG1 1AA")

    async def scenario() -> None:
        async with httpx.AsyncClient() as client:
            await REGISTRY["northgas"].verify(connector(client, mock_provider[0]).session("northgas", credentials))

    with pytest.raises(ProviderMisconfigured, match="service's access token"):
        asyncio.run(scenario())
