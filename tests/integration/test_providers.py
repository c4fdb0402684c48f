"""Linking and fetching at each of the four sandbox providers, through the handlers, against moto and
the mock provider over HTTP: every auth method, every payload quirk, and what goes wrong with them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import boto3
import pytest

from billhub.oauth import InvalidOAuthState, OAuthStates, PendingLink
from billhub.store import BillsTable, ConcurrentUpdate
from localcloud.provision import Stack
from mock_provider.control import Control
from tests.events import authorizer_event
from tests.integration.harness import Api, LambdaContext, raw_items, user_items
from tests.sandbox import SandboxAccount, expected_bill_views, sandbox_admin

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
    api: Api, provider: str, credentials: dict[str, str], sandbox: SandboxAccount
) -> None:
    # Given a user who links an account with the provider's own kind of credentials
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
    assert page["bills"] == expected_bill_views(sandbox, account["account_id"], date.today())
    assert list(page["totals"]["due"]) == [sandbox.currency]


def test_a_provider_billing_in_pounds_keeps_its_currency(api: Api) -> None:
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
def test_oauth_link_then_fetch_gives_the_exact_normalised_bills(api: Api, mock_provider: tuple[str, Control]) -> None:
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
        sandbox, account["account_id"], date.today()
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
    assert (status, body["code"]) == (400, "invalid_credentials_format")


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


def test_a_malformed_answer_keeps_the_last_good_bills(api: Api, mock_provider: tuple[str, Control]) -> None:
    user_id = api.user()
    api.link_provider(user_id, "clearwater", CLEARWATER)
    api.refresh_all(user_id)
    good = api.bills_of(user_id, "clearwater")["bills"]
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
    api: Api, mock_provider: tuple[str, Control]
) -> None:
    # Given a pending account, read by two fetches before either confirmed it
    sandbox_admin(mock_provider[0], "faults/fibrelink", {"outage": True})
    user_id = api.user()
    account_id = api.link_provider(user_id, "fibrelink", FIBRELINK)[1]["account_id"]
    store = table(api)
    seen = store.get_account(user_id, account_id)
    assert seen is not None and seen.identity_pending
    identity = SandboxAccount.fibrelink("grace").account_number
    now = datetime.now(UTC)
    # When both confirm the same identity, the second learns it lost the race instead of a conflict
    store.relink(seen, identity, "•••", now)
    with pytest.raises(ConcurrentUpdate):
        store.relink(seen, identity, "•••", now)
    # And a repair racing with them for another identity cannot leave a second link behind
    with pytest.raises(ConcurrentUpdate):
        store.relink(seen, "FL-99999999", "•••", now, b"ciphertext")
    links = [item for item in raw_items(api.stack) if item["SK"]["S"].startswith("LINK#")]
    assert [link["account_id"]["S"] for link in links] == [account_id]
    assert store.get_account(user_id, account_id).link_key == links[0]["SK"]["S"]  # type: ignore[union-attr]


def test_a_refusal_of_credentials_replaced_meanwhile_does_not_undo_a_repair(api: Api) -> None:
    user_id = api.user()
    account_id = api.link_provider(user_id, "fibrelink", FIBRELINK)[1]["account_id"]
    store = table(api)
    read_by_a_slow_fetch = store.get_account(user_id, account_id)
    assert read_by_a_slow_fetch is not None
    # The user repairs the account while the slow fetch is still waiting on its refused answer
    assert api.put_credentials(user_id, account_id, FIBRELINK)[0] == 200
    assert store.mark_needs_reauth(read_by_a_slow_fetch, "refused", datetime.now(UTC)) is False
    assert api.accounts(user_id)[0]["status"] == "active"


def test_a_failure_older_than_the_last_success_is_not_recorded(api: Api) -> None:
    user_id = api.user()
    api.link_provider(user_id, "clearwater", CLEARWATER)
    started_before_the_success = datetime.now(UTC)
    assert api.refresh_all(user_id) == {"batchItemFailures": []}
    [account] = table(api).list_accounts(user_id)
    assert table(api).record_fetch_failure(account, "late 429", started_before_the_success) is False
    assert api.accounts(user_id)[0]["last_error"] is None
    assert table(api).record_fetch_failure(account, "HTTP 503", datetime.now(UTC)) is True
    assert api.accounts(user_id)[0]["last_error"] == "HTTP 503"


def oauth_states(api: Api) -> OAuthStates:
    return api.link.states()  # type: ignore[no-any-return]


def test_an_expired_oauth_state_is_refused(api: Api) -> None:
    link = PendingLink(user_id=api.user(), provider="sparkgrid", redirect_uri="https://api.example/cb")
    state = oauth_states(api).issue(link, datetime.now(UTC) - timedelta(minutes=11))
    with pytest.raises(InvalidOAuthState, match="expired"):
        oauth_states(api).redeem(state, "sparkgrid", datetime.now(UTC))


def test_an_oauth_state_is_not_an_access_token(api: Api) -> None:
    link = PendingLink(user_id=api.user(), provider="sparkgrid", redirect_uri="https://api.example/cb")
    state = oauth_states(api).issue(link, datetime.now(UTC))
    verdict = api.authorizer.handler(authorizer_event(f"Bearer {state}"), LambdaContext())
    assert verdict["isAuthorized"] is False


def test_an_oauth_account_is_repaired_by_signing_in_not_by_put(api: Api) -> None:
    user_id = api.user()
    account_id = api.oauth_link(user_id, "sparkgrid", "ada")[1]["account_id"]
    status, body = api.put_credentials(user_id, account_id, {"refresh_token": "typed-in"})
    assert (status, body["code"]) == (400, "oauth_required")
    assert body["details"] == {"start": f"/accounts/oauth/sparkgrid/start?account_id={account_id}"}
