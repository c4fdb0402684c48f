"""Linking and fetching at each of the four sandbox providers, through the handlers, against moto and
the mock provider over HTTP: every auth method, every payload quirk, and what goes wrong with them."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

import boto3
import httpx
import pytest
from pydantic import BaseModel
from werkzeug.serving import make_server

import billhub.providers.base
from billhub.models import Account, AccountStatus, Bill, LineItem
from billhub.oauth import InvalidOAuthState, OAuthStates, PendingLink
from billhub.providers import REGISTRY
from billhub.providers.auth import AuthorizationCodeGrant
from billhub.providers.clearwater import ClearWaterCredentials
from billhub.providers.errors import ProviderDataError
from billhub.providers.fibrelink import FibreLinkCredentials
from billhub.providers.http import RetryPolicy
from billhub.providers.northgas import NorthGasCredentials
from billhub.providers.session import ProviderConnector
from billhub.store import BillsTable, ConcurrentUpdate
from localcloud.provision import Stack
from mock_provider.app import create_app
from mock_provider.control import Control
from mock_provider.sandbox import Quirk, standing_charge
from tests.conftest import Clock
from tests.events import authorizer_event
from tests.integration.harness import Api, LambdaContext, raw_items, user_items
from tests.sandbox import (
    SANDBOX_CLIENTS,
    SandboxAccount,
    expected_bill_views,
    expected_bills,
    sandbox_admin,
    sandbox_directory,
)

NORTHGAS = {"account_number": "NG20003000", "postcode": "ng1 1aa"}
FIBRELINK = {"username": "grace", "password": "pass_good"}
CLEARWATER = {"api_key": "cw_sandbox_providers"}
CREDENTIAL_LINKS = [
    ("northgas", NORTHGAS, SandboxAccount("northgas", "NG20003000")),
    ("clearwater", CLEARWATER, SandboxAccount.clearwater("cw_sandbox_providers")),
    ("fibrelink", FIBRELINK, SandboxAccount.fibrelink("grace")),
]


def stored_account(stack: Stack, user_id: str, account_id: str) -> dict[str, Any]:
    item = boto3.client("dynamodb").get_item(
        TableName=stack.refs["BillsTable"], Key={"PK": {"S": f"USER#{user_id}"}, "SK": {"S": f"ACCOUNT#{account_id}"}}
    )["Item"]
    return dict(item)


# ------------------------------------------------------------------ the catalogue
def test_providers_lists_all_four_with_how_each_links(api: Api) -> None:
    status, body, _ = api.call(api.link, "GET", "/providers", user_id="u1")
    assert status == 200
    listed = {
        p["name"]: (p["category"], p["auth_type"], [f["name"] for f in p["credential_fields"]])
        for p in body["providers"]
    }
    assert listed == {
        "sparkgrid": ("electricity", "oauth2_authorization_code", []),
        "northgas": ("gas", "oauth2_client_credentials", ["account_number", "postcode"]),
        "clearwater": ("water", "api_key", ["api_key"]),
        "fibrelink": ("internet", "basic", ["username", "password"]),
    }


# ------------------------------------------------------------------ linking with credentials
@pytest.mark.parametrize(("provider", "credentials", "sandbox"), CREDENTIAL_LINKS, ids=[c[0] for c in CREDENTIAL_LINKS])
def test_link_then_fetch_gives_the_exact_normalised_bills(
    api: Api, clock: Clock, provider: str, credentials: dict[str, str], sandbox: SandboxAccount
) -> None:
    # Given a user who links an account with the provider's own kind of credentials, on a day the month's
    # bill is still open
    clock.start_on_day_of_month(10)
    user_id = api.user()
    status, account = api.link_provider(user_id, provider, credentials)
    assert status == 201, account
    assert account["status"] == "active"
    assert account["external_ref"].endswith(sandbox.account_number[-4:])
    assert sandbox.account_number not in account["external_ref"]
    # When its bills are fetched
    assert api.refresh_all(user_id) == {"batchItemFailures": []}
    # Then the service holds exactly the provider's bills, in the canonical shape
    page = api.bills_of(user_id, provider)
    assert page["bills"] == expected_bill_views(sandbox, account["account_id"], clock.today(), clock.today())
    assert list(page["totals"]["due"]) == [sandbox.currency]


def test_a_provider_billing_in_pounds_keeps_its_currency(api: Api, clock: Clock) -> None:
    clock.start_on_day_of_month(10)  # the month's bill still open, so a total is due
    user_id = api.user()
    api.link_provider(user_id, "northgas", NORTHGAS)
    api.refresh_all(user_id)
    page = api.bills_of(user_id, "northgas")
    assert {bill["currency"] for bill in page["bills"]} == {"GBP"}
    assert set(page["totals"]["due"]) == {"GBP"}


@pytest.mark.parametrize(
    ("provider", "credentials"),
    [
        ("northgas", {"account_number": "NG20003000", "postcode": "SW1A 1AA"}),
        ("clearwater", {"api_key": "live_key_123456"}),
        ("fibrelink", {"username": "grace", "password": "pass_bad"}),
        ("fibrelink", {"username": "user_locked", "password": "pass_good"}),
    ],
)
def test_refused_credentials_are_422_and_store_nothing(
    api: Api, stack: Stack, provider: str, credentials: dict[str, str]
) -> None:
    user_id = api.user()
    before = user_items(stack)
    status, body = api.link_provider(user_id, provider, credentials)
    assert (status, body["code"]) == (422, "credentials_rejected")
    assert user_items(stack) == before


@pytest.mark.parametrize(
    ("provider", "credentials"), [link[:2] for link in CREDENTIAL_LINKS], ids=[c[0] for c in CREDENTIAL_LINKS]
)
def test_the_same_provider_account_twice_is_409(api: Api, provider: str, credentials: dict[str, str]) -> None:
    user_id = api.user()
    assert api.link_provider(user_id, provider, credentials)[0] == 201
    status, body = api.link_provider(user_id, provider, credentials)
    assert (status, body["code"]) == (409, "conflict")
    assert len(api.accounts(user_id)) == 1


def test_an_oauth_provider_cannot_be_linked_with_typed_credentials(api: Api) -> None:
    status, body = api.link_provider(api.user(), "sparkgrid", {"refresh_token": "stolen"})
    assert (status, body["code"]) == (400, "oauth_required")
    assert body["details"] == {"start": "/accounts/oauth/sparkgrid/start"}


def test_a_pending_account_learns_its_identity_on_its_first_fetch(
    api: Api, stack: Stack, mock_provider: tuple[str, Control]
) -> None:
    # Given a FibreLink account linked while FibreLink was down
    sandbox_admin(mock_provider[0], "faults/fibrelink", {"outage": True})
    user_id = api.user()
    status, account = api.link_provider(user_id, "fibrelink", FIBRELINK)
    assert (status, account["status"], account["external_ref"]) == (201, "pending", "pending verification")
    # When FibreLink is back and the account is fetched
    sandbox_admin(mock_provider[0], "faults/fibrelink", {"outage": False})
    assert api.refresh_all(user_id) == {"batchItemFailures": []}
    # Then the account is active under its real identity, with its bills
    [listed] = api.accounts(user_id)
    assert listed["status"] == "active"
    assert listed["external_ref"].endswith(SandboxAccount.fibrelink("grace").account_number[-4:])
    assert len(api.bills_of(user_id, "fibrelink")["bills"]) == 24
    # And linking the same subscriber again is recognised as a duplicate
    assert api.link_provider(user_id, "fibrelink", FIBRELINK)[0] == 409


# ------------------------------------------------------------------ OAuth2 authorization code (SparkGrid)
def test_oauth_link_then_fetch_gives_the_exact_normalised_bills(
    api: Api, clock: Clock, mock_provider: tuple[str, Control]
) -> None:
    user_id = api.user()
    status, start = api.oauth_start(user_id, "sparkgrid")
    assert status == 200 and start["state_expires_in"] == 600
    assert start["authorize_url"].startswith(f"{mock_provider[0]}/sparkgrid/oauth/authorize?")
    assert "client_secret" not in start["authorize_url"]
    status, account = api.oauth_link(user_id, "sparkgrid", "ada")
    assert (status, account["status"]) == (201, "active"), account
    assert api.refresh_all(user_id) == {"batchItemFailures": []}
    sandbox = SandboxAccount.sparkgrid("ada")
    assert api.bills_of(user_id, "sparkgrid")["bills"] == expected_bill_views(
        sandbox, account["account_id"], clock.today(), clock.today()
    )


def test_oauth_state_works_once_and_only_for_its_provider(api: Api) -> None:
    user_id = api.user()
    callback = api.oauth_consent(user_id, "sparkgrid", "ada")
    assert api.oauth_callback("sparkgrid", callback)[0] == 201
    status, body = api.oauth_callback("sparkgrid", callback)
    assert (status, body["code"]) == (400, "invalid_oauth_state")
    other = api.oauth_consent(user_id, "sparkgrid", "bob")
    assert api.oauth_callback("sparkgrid", {**other, "state": other["state"][:-4] + "AAAA"})[1]["code"] == (
        "invalid_oauth_state"
    )
    third = api.oauth_consent(user_id, "sparkgrid", "carol")
    status, body = api.oauth_callback("northgas", third)
    assert (status, body["code"], body["message"]) == (
        400,
        "invalid_oauth_state",
        "The link request was started for another provider.",
    )
    assert len(api.accounts(user_id)) == 1


def test_oauth_consent_denied_links_nothing(api: Api) -> None:
    user_id = api.user()
    status, body = api.oauth_link(user_id, "sparkgrid", "user_denied")
    assert (status, body["code"]) == (400, "oauth_denied")
    assert api.accounts(user_id) == []


def test_the_same_oauth_customer_twice_is_409(api: Api) -> None:
    user_id = api.user()
    assert api.oauth_link(user_id, "sparkgrid", "ada")[0] == 201
    status, body = api.oauth_link(user_id, "sparkgrid", "ada")
    assert (status, body["code"]) == (409, "conflict")


def test_expired_access_token_is_renewed_and_the_rotated_refresh_token_saved(
    api: Api, stack: Stack, mock_provider: tuple[str, Control]
) -> None:
    user_id = api.user()
    account_id = api.oauth_link(user_id, "sparkgrid", "ada")[1]["account_id"]
    before = stored_account(stack, user_id, account_id)
    sandbox_admin(mock_provider[0], "tokens/sparkgrid/expire")
    assert api.refresh_all(user_id) == {"batchItemFailures": []}
    after = stored_account(stack, user_id, account_id)
    # The renewal was saved (re-encrypted) at once: the provider already spent the old refresh token.
    assert int(after["credentials_version"]["N"]) == int(before["credentials_version"]["N"]) + 1
    assert after["credentials"] != before["credentials"]
    # And the saved refresh token is the live one: the next renewal works with it
    sandbox_admin(mock_provider[0], "tokens/sparkgrid/expire")
    assert api.refresh_all(user_id) == {"batchItemFailures": []}
    assert len(api.bills_of(user_id, "sparkgrid")["bills"]) == 24


def test_revoked_grant_needs_reauth_and_oauth_repair_keeps_the_account(
    api: Api, mock_provider: tuple[str, Control]
) -> None:
    # Given a SparkGrid account with bills whose grant the customer revoked at SparkGrid
    user_id = api.user()
    account_id = api.oauth_link(user_id, "sparkgrid", "ada")[1]["account_id"]
    api.refresh_all(user_id)
    sandbox_admin(mock_provider[0], "tokens/sparkgrid/revoke")
    # When it is fetched, it needs the user and says why, keeping its bills
    assert api.refresh_all(user_id) == {"batchItemFailures": []}  # not retried: retrying cannot help
    [listed] = api.accounts(user_id)
    assert listed["status"] == "needs_reauth"
    assert "revoked" in listed["last_error"]
    assert len(api.bills_of(user_id, "sparkgrid")["bills"]) == 24
    # Then signing in again with that account id repairs it in place
    status, repaired = api.oauth_link(user_id, "sparkgrid", "ada", account_id=account_id)
    assert (status, repaired["account_id"], repaired["status"]) == (200, account_id, "active")
    assert repaired["last_error"] is None
    assert api.refresh_all(user_id) == {"batchItemFailures": []}
    assert [a["account_id"] for a in api.accounts(user_id)] == [account_id]
    assert len(api.bills_of(user_id, "sparkgrid")["bills"]) == 24


def test_oauth_repair_refuses_a_different_customer(api: Api) -> None:
    user_id = api.user()
    account_id = api.oauth_link(user_id, "sparkgrid", "ada")[1]["account_id"]
    status, body = api.oauth_link(user_id, "sparkgrid", "bob", account_id=account_id)
    assert (status, body["code"]) == (409, "different_provider_account")


# ------------------------------------------------------------------ repair with typed credentials
def test_put_credentials_repairs_a_needs_reauth_account_in_place(api: Api, mock_provider: tuple[str, Control]) -> None:
    # Given a FibreLink account with bills whose password stopped working
    user_id = api.user()
    account_id = api.link_provider(user_id, "fibrelink", FIBRELINK)[1]["account_id"]
    api.refresh_all(user_id)
    sandbox_admin(mock_provider[0], "faults/fibrelink", {"auth_failure": True})
    api.refresh_all(user_id)
    assert api.accounts(user_id)[0]["status"] == "needs_reauth"
    # When the user sends credentials FibreLink refuses, nothing changes
    sandbox_admin(mock_provider[0], "faults/fibrelink", {"auth_failure": False})
    assert api.put_credentials(user_id, account_id, {**FIBRELINK, "password": "wrong"})[1]["code"] == (
        "credentials_rejected"
    )
    assert api.accounts(user_id)[0]["status"] == "needs_reauth"
    # And with working credentials the same account is active again, bills kept, due for refresh now
    status, repaired = api.put_credentials(user_id, account_id, FIBRELINK)
    assert (status, repaired["account_id"], repaired["status"], repaired["last_error"]) == (
        200,
        account_id,
        "active",
        None,
    )
    assert len(api.bills_of(user_id, "fibrelink")["bills"]) == 24


def test_put_credentials_refuses_another_subscriber_and_other_users(api: Api) -> None:
    user_id = api.user()
    account_id = api.link_provider(user_id, "fibrelink", FIBRELINK)[1]["account_id"]
    status, body = api.put_credentials(user_id, account_id, {"username": "mallory", "password": "pass_good"})
    assert (status, body["code"]) == (409, "different_provider_account")
    intruder = api.user("eve@example.com")
    status, body = api.put_credentials(intruder, account_id, FIBRELINK)
    assert (status, body["code"]) == (404, "not_found")
    status, body = api.put_credentials(user_id, account_id, {"api_key": "cw_sandbox_x"})
    assert (status, body["code"]) == (422, "invalid_credentials_format")


# ------------------------------------------------------------------ provider quirks over time
def test_a_corrected_statement_replaces_the_bill_it_revises(api: Api, mock_provider: tuple[str, Control]) -> None:
    user_id = api.user()
    api.link_provider(user_id, "northgas", NORTHGAS)
    api.refresh_all(user_id)
    first = api.bills_of(user_id, "northgas")["bills"]
    target = first[3]
    sandbox_admin(
        mock_provider[0],
        "revise/northgas",
        {"account": "NG20003000", "bill_id": target["provider_bill_id"], "amount": "12.34"},
    )
    assert api.refresh_all(user_id) == {"batchItemFailures": []}
    second = api.bills_of(user_id, "northgas")["bills"]
    assert len(second) == len(first)
    revised = next(bill for bill in second if bill["bill_id"] == target["bill_id"])
    assert (revised["amount"], revised["revision"]) == ("12.34", target["revision"] + 1)
    assert [b for b in second if b["bill_id"] != target["bill_id"]] == [
        b for b in first if b["bill_id"] != target["bill_id"]
    ]


def test_a_malformed_answer_keeps_the_last_good_bills(
    api: Api, clock: Clock, mock_provider: tuple[str, Control]
) -> None:
    user_id = api.user()
    api.link_provider(user_id, "clearwater", CLEARWATER)
    api.refresh_all(user_id)
    good = api.bills_of(user_id, "clearwater")["bills"]
    clock.advance(hours=1)  # the next refresh, an hour later, gets a broken answer
    sandbox_admin(mock_provider[0], "faults/clearwater", {"malformed_rate": 1.0})
    result = api.refresh_all(user_id)
    assert len(result["batchItemFailures"]) == 1  # retried later by the queue
    assert api.bills_of(user_id, "clearwater")["bills"] == good
    [listed] = api.accounts(user_id)
    assert listed["status"] == "active" and "ClearWater" in listed["last_error"]


def test_the_shared_gas_token_is_renewed_when_the_provider_expires_it(
    api: Api, mock_provider: tuple[str, Control]
) -> None:
    user_id = api.user()
    api.link_provider(user_id, "northgas", NORTHGAS)
    sandbox_admin(mock_provider[0], "tokens/northgas/expire")
    assert api.refresh_all(user_id) == {"batchItemFailures": []}
    assert len(api.bills_of(user_id, "northgas")["bills"]) == 24


# ------------------------------------------------------------------ OAuth2 start, and races on one account
def test_oauth_start_for_another_users_account_is_404(api: Api) -> None:
    owner = api.user()
    account_id = api.oauth_link(owner, "sparkgrid", "ada")[1]["account_id"]
    status, body = api.oauth_start(api.user("eve@example.com"), "sparkgrid", account_id)
    assert (status, body["code"]) == (404, "not_found")


def test_oauth_start_for_a_credentials_provider_is_400(api: Api) -> None:
    status, body = api.oauth_start(api.user(), "clearwater")
    assert (status, body["code"]) == (400, "oauth_not_supported")


def table(api: Api) -> BillsTable:
    return BillsTable(boto3.client("dynamodb"), api.stack.refs["BillsTable"])


def test_two_fetches_confirming_one_pending_account_leave_one_link(
    api: Api, clock: Clock, mock_provider: tuple[str, Control]
) -> None:
    # Given a pending account, read by two fetches before either confirmed it
    sandbox_admin(mock_provider[0], "faults/fibrelink", {"outage": True})
    user_id = api.user()
    account_id = api.link_provider(user_id, "fibrelink", FIBRELINK)[1]["account_id"]
    store = table(api)
    seen = store.accounts.get_account(user_id, account_id)
    assert seen is not None and seen.identity_pending
    identity = SandboxAccount.fibrelink("grace").account_number
    now = clock.now
    # When both confirm the same identity, the second learns it lost the race instead of a conflict
    store.accounts.relink(seen, identity, "•••", now)
    with pytest.raises(ConcurrentUpdate):
        store.accounts.relink(seen, identity, "•••", now)
    # And a repair racing with them for another identity cannot leave a second link behind
    with pytest.raises(ConcurrentUpdate):
        store.accounts.relink(seen, "FL-99999999", "•••", now, b"ciphertext")
    links = [item for item in raw_items(api.stack) if item["SK"]["S"].startswith("LINK#")]
    assert [link["account_id"]["S"] for link in links] == [account_id]
    assert store.accounts.get_account(user_id, account_id).link_key == links[0]["SK"]["S"]  # type: ignore[union-attr]


def test_a_refusal_of_credentials_replaced_meanwhile_does_not_undo_a_repair(api: Api, clock: Clock) -> None:
    user_id = api.user()
    account_id = api.link_provider(user_id, "fibrelink", FIBRELINK)[1]["account_id"]
    store = table(api)
    read_by_a_slow_fetch = store.accounts.get_account(user_id, account_id)
    assert read_by_a_slow_fetch is not None
    # The user repairs the account while the slow fetch is still waiting on its refused answer
    assert api.put_credentials(user_id, account_id, FIBRELINK)[0] == 200
    assert store.accounts.mark_needs_reauth(read_by_a_slow_fetch, "refused", clock.now) is False
    assert api.accounts(user_id)[0]["status"] == "active"


def test_a_failure_older_than_the_last_success_is_not_recorded(api: Api, clock: Clock) -> None:
    user_id = api.user()
    api.link_provider(user_id, "clearwater", CLEARWATER)
    started_before_the_success = clock.now
    clock.advance(seconds=1)
    assert api.refresh_all(user_id) == {"batchItemFailures": []}
    [account] = table(api).accounts.list_accounts(user_id)
    assert table(api).accounts.record_fetch_failure(account, "late 429", started_before_the_success) is False
    assert api.accounts(user_id)[0]["last_error"] is None
    clock.advance(seconds=1)
    assert table(api).accounts.record_fetch_failure(account, "HTTP 503", clock.now) is True
    assert api.accounts(user_id)[0]["last_error"] == "HTTP 503"


def oauth_states(api: Api) -> OAuthStates:
    return api.link.states()  # type: ignore[no-any-return]


def test_an_expired_oauth_state_is_refused(api: Api, clock: Clock) -> None:
    link = PendingLink(user_id=api.user(), provider="sparkgrid", redirect_uri="https://api.example/cb")
    state = oauth_states(api).issue(link, clock.now - timedelta(minutes=11))
    with pytest.raises(InvalidOAuthState, match="expired"):
        oauth_states(api).redeem(state, "sparkgrid", clock.now)


class ResendingClient:
    """A DynamoDB client whose every UpdateItem and DeleteItem is sent twice with the same parameters, as
    the SDK resends a write whose answer was lost to a timeout after it had landed."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def update_item(self, **request: Any) -> Any:
        self._client.update_item(**request)
        return self._client.update_item(**request)

    def delete_item(self, **request: Any) -> Any:
        self._client.delete_item(**request)
        return self._client.delete_item(**request)


def test_a_resent_oauth_state_consumption_still_links_and_the_state_still_works_once(api: Api, clock: Clock) -> None:
    # Given a stored link request, and a client that resends each write as after a lost answer
    now = clock.now
    user_id = api.user()
    table(api).oauth_states.put_oauth_state(
        user_id, "nonce-1", {"user_id": user_id, "provider": "sparkgrid"}, now + timedelta(minutes=10)
    )
    resending = BillsTable(cast(Any, ResendingClient(boto3.client("dynamodb"))), api.stack.refs["BillsTable"])
    # When the callback consumes it through that client
    link = resending.oauth_states.consume_oauth_state("nonce-1", now)
    # Then the resend found its own mark: the link is there; and a second callback is refused
    assert link == {"user_id": user_id, "provider": "sparkgrid"}
    assert table(api).oauth_states.consume_oauth_state("nonce-1", now) is None


def test_an_oauth_state_is_not_an_access_token(api: Api, clock: Clock) -> None:
    link = PendingLink(user_id=api.user(), provider="sparkgrid", redirect_uri="https://api.example/cb")
    state = oauth_states(api).issue(link, clock.now)
    verdict = api.authorizer.handler(authorizer_event(f"Bearer {state}"), LambdaContext())
    assert verdict["isAuthorized"] is False


def test_an_oauth_account_is_repaired_by_signing_in_not_by_put(api: Api) -> None:
    user_id = api.user()
    account_id = api.oauth_link(user_id, "sparkgrid", "ada")[1]["account_id"]
    status, body = api.put_credentials(user_id, account_id, {"refresh_token": "typed-in"})
    assert (status, body["code"]) == (400, "oauth_required")
    assert body["details"] == {"start": f"/accounts/oauth/sparkgrid/start?account_id={account_id}"}


# ------------------------------------------------------------------ line items and planted quirks, adapter by adapter
# Each adapter against the sandbox over HTTP, without AWS: its parsed bills, line items included, are
# exactly what the sandbox generated, for a plain account and for an account with each planted quirk.
OAUTH_CLIENTS = SANDBOX_CLIENTS
# One attempt (a parse error must show, not be retried away), and time enough for a loaded machine.
ONE_ATTEMPT = RetryPolicy(attempts=1, read_timeout=30.0)
OAUTH_REDIRECT = "http://127.0.0.1:9/callback"
# The login of one sandbox account per provider and quirk (None: no quirk).
QUIRK_LOGINS: dict[str, dict[Quirk | None, str]] = {
    "sparkgrid": {
        None: "ada",
        Quirk.ANOMALY: "anomaly_ann",
        Quirk.MISMATCH: "mismatch_mo",
        Quirk.CREDIT: "credit_carl",
        Quirk.CURRENCY_CHANGE: "moved_kim",
    },
    "northgas": {
        None: "NG20003000",
        Quirk.ANOMALY: "NG20003099",
        Quirk.MISMATCH: "NG20003098",
        Quirk.CREDIT: "NG20003097",
        Quirk.CURRENCY_CHANGE: "NG20003096",
    },
    "clearwater": {
        None: "cw_sandbox_providers",
        Quirk.ANOMALY: "cw_sandbox_anomaly_1",
        Quirk.MISMATCH: "cw_sandbox_mismatch_1",
        Quirk.CREDIT: "cw_sandbox_credit_1",
        Quirk.CURRENCY_CHANGE: "cw_sandbox_moved_1",
    },
    "fibrelink": {
        None: "grace",
        Quirk.ANOMALY: "anomaly_gina",
        Quirk.MISMATCH: "mismatch_mia",
        Quirk.CREDIT: "credit_cy",
        Quirk.CURRENCY_CHANGE: "moved_max",
    },
}
QUIRK_CASES = [(provider, quirk, login) for provider, logins in QUIRK_LOGINS.items() for quirk, login in logins.items()]
# Per provider: the key of its list of bills, the key of a bill's line items, and one good line item.
DIALECTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "sparkgrid": ("data", "lines", {"label": "Usage", "amount_minor": 1234}),
    "northgas": ("invoices", "charges", {"description": "Usage", "amount": "12.34"}),
    "clearwater": ("bills", "line_items", {"description": "Usage", "amount": "12.34"}),
    "fibrelink": ("items", "items", {"name": "Usage", "total": 12.34}),
}
Tamper = Callable[[list[dict[str, Any]]], None]


# The module's read-only sandbox and what its bills should be: the adapters alone, no service clock, on one
# named day.
READ_ONLY_SANDBOX_TODAY = date(2026, 11, 15)


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    """One sandbox for the read-only tests below (a server per test costs half a second to stop), with
    rate limits out of the way: these tests are about reading, not throttling. Tests that revise bills
    use their own ``mock_provider``."""
    control = Control()
    for provider in DIALECTS:
        control.set_faults(provider, rate_limit_per_second=10_000)
    server = make_server("127.0.0.1", 0, create_app(today=READ_ONLY_SANDBOX_TODAY, control=control), threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def sandbox_account(provider: str, login: str) -> SandboxAccount:
    constructors: dict[str, Callable[[str], SandboxAccount]] = {
        "sparkgrid": SandboxAccount.sparkgrid,
        "northgas": SandboxAccount.northgas,
        "clearwater": SandboxAccount.clearwater,
        "fibrelink": SandboxAccount.fibrelink,
    }
    return constructors[provider](login)


def adapter_account(provider: str) -> Account:
    now = datetime.now(UTC)
    return Account(
        account_id="b" * 32,
        user_id="u1",
        provider=provider,
        external_ref="•••",
        status=AccountStatus.ACTIVE,
        created_at=now,
        next_refresh_at=now,
    )


def tampering_transport(tamper: Tamper | None, bills_key: str) -> httpx.AsyncBaseTransport:
    """Forwards to the sandbox and lets ``tamper`` rewrite the bills of every listing it answers."""
    upstream = httpx.AsyncHTTPTransport()
    if tamper is None:
        return upstream

    async def forward(request: httpx.Request) -> httpx.Response:
        response = await upstream.handle_async_request(request)
        content = await response.aread()
        if request.method != "GET" or response.status_code != 200:
            return httpx.Response(response.status_code, headers=response.headers, content=content)
        body = json.loads(content)
        if isinstance(body, dict) and bills_key in body:
            tamper(body[bills_key])
        return httpx.Response(200, json=body)

    return httpx.MockTransport(forward)


async def _credentials(connector: ProviderConnector, provider: str, login: str) -> BaseModel:
    if provider == "northgas":
        return NorthGasCredentials(account_number=login, postcode="NG1 1AA")
    if provider == "clearwater":
        return ClearWaterCredentials(api_key=login)
    if provider == "fibrelink":
        return FibreLinkCredentials(username=login, password="pass_good")
    grant = REGISTRY["sparkgrid"].auth
    assert isinstance(grant, AuthorizationCodeGrant)
    authorize = connector.directory.url("sparkgrid", "authorize")
    url = grant.authorize_url(authorize, OAUTH_CLIENTS["sparkgrid"], OAUTH_REDIRECT, "s")
    consent = await connector.client.get(f"{url}&{urlencode({'login_hint': login})}")
    code = dict(parse_qsl(urlsplit(consent.headers["Location"]).query))["code"]
    http = connector.http("sparkgrid")
    token_url = connector.directory.url("sparkgrid", "token")
    return await grant.exchange_code(
        http, token_url, OAUTH_CLIENTS["sparkgrid"], code, OAUTH_REDIRECT, datetime.now(UTC)
    )


def fetch_with_adapter(base_url: str, provider: str, login: str, tamper: Tamper | None = None) -> list[Bill]:
    """The account's bills as the provider's adapter reads them from the sandbox."""

    async def fetch() -> list[Bill]:
        transport = tampering_transport(tamper, DIALECTS[provider][0])
        async with httpx.AsyncClient(transport=transport) as client:
            connector = ProviderConnector(client, sandbox_directory(base_url), now_utc, ONE_ATTEMPT)
            session = connector.session(provider, await _credentials(connector, provider, login))
            return await REGISTRY[provider].fetch_bills(session, adapter_account(provider))

    return asyncio.run(fetch())


def now_utc() -> datetime:
    return datetime.now(UTC)


def planted_quirks(bills: list[Bill]) -> set[Quirk]:
    """The quirks visible in parsed bills, found without asking the sandbox which it planted."""
    found: set[Quirk] = set()
    positive = sorted(bill.amount for bill in bills if bill.amount > 0)
    if any(bill.amount > 2 * positive[len(positive) // 2] for bill in bills):
        found.add(Quirk.ANOMALY)
    if any(sum(line.amount for line in bill.line_items) != bill.amount for bill in bills):
        found.add(Quirk.MISMATCH)
    if any(bill.amount < 0 for bill in bills):
        found.add(Quirk.CREDIT)
    if len({bill.currency for bill in bills}) > 1:
        found.add(Quirk.CURRENCY_CHANGE)
    return found


@pytest.mark.parametrize(
    ("provider", "quirk", "login"), QUIRK_CASES, ids=[f"{c[0]}-{c[1] or 'plain'}" for c in QUIRK_CASES]
)
def test_each_adapter_reads_line_items_and_quirks_exactly(
    sandbox_url: str, provider: str, quirk: Quirk | None, login: str
) -> None:
    sandbox = sandbox_account(provider, login)
    assert sandbox.quirks == ({quirk} if quirk else set())
    bills = fetch_with_adapter(sandbox_url, provider, login)
    assert bills == expected_bills(sandbox, adapter_account(provider).account_id, READ_ONLY_SANDBOX_TODAY)
    assert planted_quirks(bills) == sandbox.quirks
    # Exact money at the currency's minor units, whatever the dialect (cents, strings, JSON numbers)
    for bill in bills:
        assert 1 <= len(bill.line_items) <= 4
        for amount in (bill.amount, *(line.amount for line in bill.line_items)):
            assert isinstance(amount, Decimal) and amount.as_tuple().exponent == -2


def test_minor_units_carry_a_credit_note_exactly(sandbox_url: str) -> None:
    bills = fetch_with_adapter(sandbox_url, "sparkgrid", "credit_carl")
    note = bills[4]
    assert note.amount < 0 and note.status == "paid"
    assert [line.description for line in note.line_items] == ["Refund of overcharge", "Goodwill credit"]
    assert sum(line.amount for line in note.line_items) == note.amount
    usual = SandboxAccount("sparkgrid", SandboxAccount.sparkgrid("credit_carl").account_number).bills(
        READ_ONLY_SANDBOX_TODAY
    )[4]
    assert note.amount == -usual.amount


def test_json_numbers_keep_a_mismatch_exact(sandbox_url: str) -> None:
    # A float sum of the items would be off by a hair on many bills; read as Decimal only one is off, by
    # exactly the missing standing charge.
    bills = fetch_with_adapter(sandbox_url, "fibrelink", "mismatch_mia")
    account_number = SandboxAccount.fibrelink("mismatch_mia").account_number
    gaps = {bill.provider_bill_id: bill.amount - sum(line.amount for line in bill.line_items) for bill in bills}
    assert {bill_id: gap for bill_id, gap in gaps.items() if gap} == {
        bills[3].provider_bill_id: standing_charge(account_number)
    }


def test_a_revised_bill_is_read_with_its_adjustment(mock_provider: tuple[str, Control], clock: Clock) -> None:
    base_url = mock_provider[0]
    plain, short = SandboxAccount.clearwater("cw_sandbox_providers"), SandboxAccount.clearwater("cw_sandbox_mismatch_1")
    for sandbox in (plain, short):
        bill_id = sandbox.bills(clock.today())[3].bill_id
        sandbox_admin(
            base_url, "revise/clearwater", {"account": sandbox.account_number, "bill_id": bill_id, "amount": "7.5"}
        )
    revised = {
        sandbox: fetch_with_adapter(base_url, "clearwater", login)[3]
        for sandbox, login in ((plain, "cw_sandbox_providers"), (short, "cw_sandbox_mismatch_1"))
    }
    for sandbox, bill in revised.items():
        generated = sandbox.bills(clock.today())[3]
        assert (bill.amount, bill.revision) == (Decimal("7.50"), 2)
        assert bill.line_items[-1] == LineItem(
            description="Revision adjustment", amount=Decimal("7.50") - generated.amount
        )
        listed = sum(line.amount for line in bill.line_items)
        assert bill.amount - listed == generated.amount - sum(line.amount for line in generated.line_items)
    assert sum(line.amount for line in revised[plain].line_items) == Decimal("7.50")


@pytest.mark.parametrize("provider", list(DIALECTS))
def test_bills_without_line_items_have_none(sandbox_url: str, provider: str) -> None:
    login = QUIRK_LOGINS[provider][None]
    _, lines_key, _ = DIALECTS[provider]

    def drop_line_items(bills: list[dict[str, Any]]) -> None:
        for index, bill in enumerate(bills):
            if index % 2:
                del bill[lines_key]
            else:
                bill[lines_key] = None

    bills = fetch_with_adapter(sandbox_url, provider, login, drop_line_items)
    expected = expected_bills(
        sandbox_account(provider, login), adapter_account(provider).account_id, READ_ONLY_SANDBOX_TODAY
    )
    assert bills == [bill.model_copy(update={"line_items": ()}) for bill in expected]


def malformed_lines(provider: str) -> list[Any]:
    """Line-item lists a provider must not get away with: each is a data error for the whole fetch."""
    _, _, good = DIALECTS[provider]
    description, amount = list(good)
    wrong_amount = {"sparkgrid": "1234", "northgas": "12,34", "clearwater": "twelve", "fibrelink": "NaN"}[provider]
    return [
        [{description: "Usage"}],
        [{amount: good[amount]}],
        [{description: "", amount: good[amount]}],
        [{description: "x" * 201, amount: good[amount]}],
        [{description: "Usage", amount: wrong_amount}],
        [{description: "Usage", amount: None}],
        [good] * 101,
        {"Usage": good[amount]},
        good,
    ]


@pytest.mark.parametrize(
    ("provider", "lines"),
    [(provider, lines) for provider in DIALECTS for lines in malformed_lines(provider)],
    ids=[f"{provider}-{index}" for provider in DIALECTS for index in range(len(malformed_lines(provider)))],
)
def test_a_malformed_line_item_is_a_data_error(sandbox_url: str, provider: str, lines: Any) -> None:
    _, lines_key, _ = DIALECTS[provider]

    def spoil_the_first_bill(bills: list[dict[str, Any]]) -> None:
        if bills:
            bills[0][lines_key] = lines

    with pytest.raises(ProviderDataError, match="cannot read"):
        fetch_with_adapter(sandbox_url, provider, QUIRK_LOGINS[provider][None], spoil_the_first_bill)


def test_odd_but_valid_line_amounts_are_read_at_the_currency_minor_units(sandbox_url: str) -> None:
    odd = [{"name": "Usage", "total": 10}, {"name": "Refund", "total": -2.5}]  # "10", "-2.5" on the wire

    def send_odd_numbers(bills: list[dict[str, Any]]) -> None:
        for bill in bills:
            bill["items"] = odd

    [first, *_] = fetch_with_adapter(sandbox_url, "fibrelink", "grace", send_odd_numbers)
    assert first.line_items == (
        LineItem(description="Usage", amount=Decimal("10.00")),
        LineItem(description="Refund", amount=Decimal("-2.50")),
    )
    assert [str(line.amount) for line in first.line_items] == ["10.00", "-2.50"]


@pytest.mark.parametrize("provider", list(DIALECTS))
@pytest.mark.parametrize("over", [0, 1], ids=["at_the_bound", "one_past_it"])
def test_a_fetch_returning_more_bills_than_the_cap_is_a_data_error(
    sandbox_url: str, provider: str, over: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a cap on the bills of one fetch at the sandbox's 24 bills of an account, or one under them
    login = QUIRK_LOGINS[provider][None]
    expected = expected_bills(
        sandbox_account(provider, login), adapter_account(provider).account_id, READ_ONLY_SANDBOX_TODAY
    )
    monkeypatch.setattr(billhub.providers.base, "MAX_BILLS_PER_FETCH", len(expected) - over)
    if not over:
        # Then at the cap every bill is read
        assert fetch_with_adapter(sandbox_url, provider, login) == expected
        return
    # and past it the whole fetch is refused, saying why
    with pytest.raises(ProviderDataError, match=f"returned more than {len(expected) - 1} bills"):
        fetch_with_adapter(sandbox_url, provider, login)
