"""SparkGrid sandbox: the OAuth 2 authorization code flow the SparkGrid adapter is written against,
and its statements (cursor pages, integer cents)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from mock_provider.sandbox import monthly_bills
from mock_provider.sparkgrid import customer_id_for
from tests.unit.conftest import SANDBOX_TODAY, FakeClock

REDIRECT = "http://localhost:3000/callback?from=sandbox"
CLIENT_AUTH = ("billhub-sandbox", "sparkgrid-sandbox-secret")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def authorize(client: FlaskClient, **params: str) -> TestResponse:
    query = {"response_type": "code", "client_id": "billhub-sandbox", "redirect_uri": REDIRECT, "state": "st4te"}
    return client.get("/sparkgrid/oauth/authorize", query_string={**query, **params})


def redirect_params(response: TestResponse) -> dict[str, str]:
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == "http://localhost:3000/callback"
    return {name: values[0] for name, values in parse_qs(location.query).items()}


def code_for(client: FlaskClient, username: str = "sandbox_user") -> str:
    return redirect_params(authorize(client, login_hint=username))["code"]


def token_request(client: FlaskClient, **form: str) -> TestResponse:
    return client.post("/sparkgrid/oauth/token", data=form, auth=CLIENT_AUTH)


def exchange(client: FlaskClient, code: str, redirect_uri: str = REDIRECT) -> TestResponse:
    return token_request(client, grant_type="authorization_code", code=code, redirect_uri=redirect_uri)


def link(client: FlaskClient, username: str = "sandbox_user") -> dict[str, Any]:
    answer = exchange(client, code_for(client, username))
    assert answer.status_code == 200
    tokens: dict[str, Any] = answer.get_json()
    return tokens


def refresh(client: FlaskClient, refresh_token: str) -> TestResponse:
    return token_request(client, grant_type="refresh_token", refresh_token=refresh_token)


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def customer(client: FlaskClient, access_token: str) -> TestResponse:
    return client.get("/sparkgrid/api/v2/customer", headers=bearer(access_token))


def assert_invalid_token(response: TestResponse) -> None:
    assert response.status_code == 401
    assert response.get_json() == {"error": "invalid_token"}
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def all_statements(client: FlaskClient, access_token: str, limit: int) -> tuple[list[dict[str, Any]], int]:
    statements: list[dict[str, Any]] = []
    pages, query = 0, f"limit={limit}"
    while True:
        body = client.get(f"/sparkgrid/api/v2/statements?{query}", headers=bearer(access_token)).get_json()
        statements += body["data"]
        pages += 1
        if body["next_cursor"] is None:
            return statements, pages
        query = f"limit={limit}&cursor={body['next_cursor']}"


def test_login_hint_redirects_with_a_code_and_links_the_customer(client: FlaskClient) -> None:
    params = redirect_params(authorize(client, login_hint="alice"))
    assert params["from"] == "sandbox" and params["state"] == "st4te"  # merged into the existing query
    answer = exchange(client, params["code"])
    tokens = answer.get_json()
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    assert (tokens["token_type"], tokens["expires_in"], tokens["scope"]) == ("Bearer", 3600, "bills:read")
    assert tokens["access_token"] and tokens["refresh_token"]
    identity = customer(client, tokens["access_token"])
    assert identity.status_code == 200
    assert identity.get_json()["customer_id"] == customer_id_for("alice")
    assert re.fullmatch(r"SG-\d{8}", customer_id_for("alice"))


def test_the_code_works_once(client: FlaskClient) -> None:
    code = code_for(client)
    assert exchange(client, code).status_code == 200
    reused = exchange(client, code)
    assert (reused.status_code, reused.get_json()) == (400, {"error": "invalid_grant"})


def test_the_code_is_bound_to_its_redirect_uri(client: FlaskClient) -> None:
    mismatch = exchange(client, code_for(client), redirect_uri="http://localhost:3000/elsewhere")
    assert (mismatch.status_code, mismatch.get_json()) == (400, {"error": "invalid_grant"})


def test_the_code_expires_after_two_minutes(client: FlaskClient, clock: FakeClock) -> None:
    code = code_for(client)
    clock.now += 121
    assert exchange(client, code).get_json() == {"error": "invalid_grant"}


def test_user_denied_is_sent_back_with_access_denied(client: FlaskClient) -> None:
    assert redirect_params(authorize(client, login_hint="user_denied")) == {
        "from": "sandbox",
        "error": "access_denied",
        "state": "st4te",
    }


def test_without_login_hint_a_consent_page_posts_the_decision_back(client: FlaskClient) -> None:
    page = authorize(client, scope="bills:read")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert 'action="/sparkgrid/oauth/authorize"' in text and 'value="sandbox_user"' in text
    hidden = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', text))
    assert hidden["redirect_uri"] == REDIRECT.replace("&", "&amp;") and hidden["scope"] == "bills:read"
    form = {**hidden, "redirect_uri": REDIRECT, "username": "bob"}
    approved = redirect_params(client.post("/sparkgrid/oauth/authorize", data={**form, "decision": "approve"}))
    access_token = exchange(client, approved["code"]).get_json()["access_token"]
    assert customer(client, access_token).get_json()["customer_id"] == customer_id_for("bob")
    denied = redirect_params(client.post("/sparkgrid/oauth/authorize", data={**form, "decision": "deny"}))
    assert denied["error"] == "access_denied" and "code" not in denied


@pytest.mark.parametrize(
    "override",
    [
        {"client_id": "someone-else"},
        {"response_type": "token"},
        {"redirect_uri": "ftp://localhost/callback"},
        {"redirect_uri": "not a url"},
        {"login_hint": "has spaces"},
    ],
)
def test_bad_authorization_requests_are_answered_400(client: FlaskClient, override: dict[str, str]) -> None:
    answer = authorize(client, **{"login_hint": "alice", **override})
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "invalid_request" and answer.get_json()["error_description"]


def test_the_token_endpoint_authenticates_the_client(client: FlaskClient) -> None:
    code = code_for(client)
    wrong = client.post(
        "/sparkgrid/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT},
        auth=("billhub-sandbox", "wrong"),
    )
    assert (wrong.status_code, wrong.get_json()) == (401, {"error": "invalid_client"})
    in_form = client.post(
        "/sparkgrid/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code_for(client),
            "redirect_uri": REDIRECT,
            "client_id": CLIENT_AUTH[0],
            "client_secret": CLIENT_AUTH[1],
        },
    )
    assert in_form.status_code == 200
    other_grant = token_request(client, grant_type="password", username="a", password="b")
    assert (other_grant.status_code, other_grant.get_json()) == (400, {"error": "unsupported_grant_type"})


def test_refresh_rotates_the_refresh_token_and_retires_the_old_one(client: FlaskClient) -> None:
    first = link(client)
    renewed = refresh(client, first["refresh_token"])
    body = renewed.get_json()
    assert renewed.status_code == 200 and body["refresh_token"] != first["refresh_token"]
    assert body["access_token"] != first["access_token"] and body["scope"] == "bills:read"
    assert customer(client, body["access_token"]).status_code == 200
    reused = refresh(client, first["refresh_token"])
    assert (reused.status_code, reused.get_json()) == (400, {"error": "invalid_grant"})
    assert refresh(client, body["refresh_token"]).status_code == 200


def test_without_rotation_the_refresh_token_stays_the_same(client: FlaskClient) -> None:
    client.post("/_admin/faults/sparkgrid", json={"rotate_refresh_tokens": False})
    first = link(client)
    for _ in range(2):
        renewed = refresh(client, first["refresh_token"]).get_json()
        assert renewed["refresh_token"] == first["refresh_token"]


def test_access_tokens_expire_on_the_clock_and_refresh_still_works(client: FlaskClient, clock: FakeClock) -> None:
    client.post("/_admin/faults/sparkgrid", json={"token_ttl_seconds": 60})
    tokens = link(client)
    assert tokens["expires_in"] == 60
    clock.now += 59
    assert customer(client, tokens["access_token"]).status_code == 200
    clock.now += 1
    assert_invalid_token(customer(client, tokens["access_token"]))
    renewed = refresh(client, tokens["refresh_token"]).get_json()
    assert customer(client, renewed["access_token"]).status_code == 200


def test_admin_expire_ends_access_tokens_but_not_refresh_tokens(client: FlaskClient) -> None:
    tokens = link(client)
    assert client.post("/_admin/tokens/sparkgrid/expire").get_json() == {"expired": 1}
    assert_invalid_token(customer(client, tokens["access_token"]))
    assert refresh(client, tokens["refresh_token"]).status_code == 200


def test_admin_revoke_ends_access_and_refresh_tokens(client: FlaskClient) -> None:
    tokens = link(client)
    assert client.post("/_admin/tokens/sparkgrid/revoke").get_json() == {"revoked": 2}
    assert_invalid_token(customer(client, tokens["access_token"]))
    assert refresh(client, tokens["refresh_token"]).get_json() == {"error": "invalid_grant"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eDp5"}])
def test_data_endpoints_need_a_live_bearer_token(client: FlaskClient, headers: dict[str, str]) -> None:
    assert_invalid_token(client.get("/sparkgrid/api/v2/statements", headers=headers))


def test_statements_page_through_two_years_in_integer_cents(client: FlaskClient) -> None:
    access_token = link(client, "carol")["access_token"]
    statements, pages = all_statements(client, access_token, limit=5)
    expected = monthly_bills(customer_id_for("carol"), SANDBOX_TODAY, "USD", (60, 180))
    assert (len(statements), pages) == (24, 5)
    assert [statement["statement_id"] for statement in statements] == [bill.bill_id for bill in expected]
    for statement, bill in zip(statements, expected, strict=True):
        assert type(statement["amount_due_minor"]) is int
        assert statement["amount_due_minor"] == int(bill.amount * 100)
        assert statement["currency"] == "USD" and statement["version"] == 1
        assert all(ISO_DATE.fullmatch(statement[key]) for key in ("issued_at", "due_by"))
        assert statement["period"] == {"start": bill.period_start.isoformat(), "end": bill.period_end.isoformat()}
    assert statements[0]["state"] == "open"
    assert {statement["state"] for statement in statements} <= {"settled", "open", "late"}
    assert {statement["state"] for statement in statements[2:]} == {"settled"}


def test_default_page_is_six_statements(client: FlaskClient) -> None:
    body = client.get("/sparkgrid/api/v2/statements", headers=bearer(link(client)["access_token"])).get_json()
    assert len(body["data"]) == 6 and isinstance(body["next_cursor"], str)


@pytest.mark.parametrize("query", ["limit=0", "limit=25", "limit=six", "cursor=garbage", "cursor=b2Zmc2V0Ojk5"])
def test_bad_limit_or_cursor_is_a_400(client: FlaskClient, query: str) -> None:
    answer = client.get(f"/sparkgrid/api/v2/statements?{query}", headers=bearer(link(client)["access_token"]))
    assert answer.status_code == 400 and answer.get_json()["error"] == "invalid_request"


def test_anomaly_usernames_get_a_threefold_spike_two_months_back(client: FlaskClient) -> None:
    statements, _ = all_statements(client, link(client, "dave_anomaly")["access_token"], limit=24)
    usual = monthly_bills(customer_id_for("dave_anomaly"), SANDBOX_TODAY, "USD", (60, 180))
    amounts = [statement["amount_due_minor"] for statement in statements]
    assert amounts[2] == int(usual[2].amount * 300)
    assert amounts[:2] + amounts[3:] == [int(bill.amount * 100) for bill in usual[:2] + usual[3:]]


def test_a_revised_statement_carries_the_new_amount_and_version(client: FlaskClient) -> None:
    access_token = link(client, "erin")["access_token"]
    bill_id = f"{customer_id_for('erin')}-202609"
    body = {"account": customer_id_for("erin"), "bill_id": bill_id, "amount": "321.5"}
    assert client.post("/_admin/revise/sparkgrid", json=body).get_json() == {
        "bill_id": bill_id,
        "amount": "321.50",
        "revision": 2,
    }
    statement = next(s for s in all_statements(client, access_token, 24)[0] if s["statement_id"] == bill_id)
    assert (statement["amount_due_minor"], statement["version"]) == (32150, 2)


def test_statements_itemise_in_integer_cents_that_add_up(client: FlaskClient) -> None:
    statements, _ = all_statements(client, link(client, "carol")["access_token"], limit=24)
    expected = monthly_bills(customer_id_for("carol"), SANDBOX_TODAY, "USD", (60, 180))
    for statement, bill in zip(statements, expected, strict=True):
        assert statement["lines"] == [
            {"label": line.description, "amount_minor": int(line.amount * 100)} for line in bill.line_items
        ]
        assert all(type(line["amount_minor"]) is int for line in statement["lines"])
        assert sum(line["amount_minor"] for line in statement["lines"]) == statement["amount_due_minor"]


def test_credit_usernames_get_a_credit_note_in_negative_cents_four_months_back(client: FlaskClient) -> None:
    statements, _ = all_statements(client, link(client, "credit_carl")["access_token"], limit=24)
    usual = monthly_bills(customer_id_for("credit_carl"), SANDBOX_TODAY, "USD", (60, 180))
    note = statements[4]
    assert note["amount_due_minor"] == -int(usual[4].amount * 100) < 0
    assert note["state"] == "settled"
    assert [line["label"] for line in note["lines"]] == ["Refund of overcharge", "Goodwill credit"]
    assert all(line["amount_minor"] < 0 for line in note["lines"])
    assert sum(line["amount_minor"] for line in note["lines"]) == note["amount_due_minor"]
    others = statements[:4] + statements[5:]
    assert [s["amount_due_minor"] for s in others] == [int(b.amount * 100) for b in usual[:4] + usual[5:]]


def test_usernames_can_carry_several_quirks(client: FlaskClient) -> None:
    statements, _ = all_statements(client, link(client, "moved_mismatch_mo")["access_token"], limit=24)
    assert [s["currency"] for s in statements] == ["USD"] * 7 + ["CAD"] * 17
    short = [
        s["statement_id"] for s in statements if sum(ln["amount_minor"] for ln in s["lines"]) != s["amount_due_minor"]
    ]
    assert short == [statements[3]["statement_id"]]
    assert "Standing charge" not in [line["label"] for line in statements[3]["lines"]]


def test_a_revised_statement_gains_an_adjustment_line_in_cents(client: FlaskClient) -> None:
    access_token = link(client, "erin")["access_token"]
    bill_id = f"{customer_id_for('erin')}-202609"
    before = next(s for s in all_statements(client, access_token, 24)[0] if s["statement_id"] == bill_id)
    client.post(
        "/_admin/revise/sparkgrid", json={"account": customer_id_for("erin"), "bill_id": bill_id, "amount": "1"}
    )
    after = next(s for s in all_statements(client, access_token, 24)[0] if s["statement_id"] == bill_id)
    assert after["lines"] == [
        *before["lines"],
        {"label": "Revision adjustment", "amount_minor": 100 - before["amount_due_minor"]},
    ]
    assert sum(line["amount_minor"] for line in after["lines"]) == after["amount_due_minor"] == 100


def test_tokens_are_as_long_as_told_and_still_work(client: FlaskClient) -> None:
    client.post("/_admin/faults/sparkgrid", json={"token_chars": 4096})
    tokens = link(client)
    renewed = refresh(client, tokens["refresh_token"]).get_json()
    lengths = {len(tokens[name]) for name in ("access_token", "refresh_token")} | {len(renewed["refresh_token"])}
    assert lengths == {4096}
    assert customer(client, renewed["access_token"]).status_code == 200
