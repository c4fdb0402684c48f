"""NorthGas sandbox: a client-credentials service token plus account number and postcode, and
invoices with DD/MM/YYYY dates and decimal-string amounts."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from mock_provider.sandbox import monthly_bills, standing_charge
from tests.unit.conftest import SANDBOX_TODAY, FakeClock

CLIENT_AUTH = ("billhub-sandbox", "northgas-sandbox-secret")
ACCOUNT = "NG1234567"
UK_DATE = re.compile(r"\d{2}/\d{2}/\d{4}")


def service_token(client: FlaskClient) -> str:
    answer = client.post("/northgas/oauth/token", data={"grant_type": "client_credentials"}, auth=CLIENT_AUTH)
    assert answer.status_code == 200
    access_token: str = answer.get_json()["access_token"]
    return access_token


def headers(access_token: str, postcode: str = "NG1 1AA") -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}", "X-Customer-Postcode": postcode}


def account(client: FlaskClient, access_token: str, number: str = ACCOUNT, postcode: str = "NG1 1AA") -> TestResponse:
    return client.get(f"/northgas/api/accounts/{number}", headers=headers(access_token, postcode))


def all_invoices(client: FlaskClient, number: str = ACCOUNT, limit: int = 10) -> tuple[list[dict[str, Any]], int]:
    access_token = service_token(client)
    invoices: list[dict[str, Any]] = []
    pages = 0
    while True:
        body = client.get(
            f"/northgas/api/accounts/{number}/invoices?offset={len(invoices)}&limit={limit}",
            headers=headers(access_token),
        ).get_json()
        pages += 1
        assert (body["offset"], body["limit"], body["total"]) == (len(invoices), limit, 24)
        invoices += body["invoices"]
        if len(invoices) >= body["total"]:
            return invoices, pages


def assert_invalid_token(response: TestResponse) -> None:
    assert (response.status_code, response.get_json()) == (401, {"error": "invalid_token"})
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_client_credentials_give_a_service_token_without_refresh(client: FlaskClient) -> None:
    for request in (
        {"data": {"grant_type": "client_credentials"}, "auth": CLIENT_AUTH},
        {"data": {"grant_type": "client_credentials", "client_id": CLIENT_AUTH[0], "client_secret": CLIENT_AUTH[1]}},
    ):
        body = client.post("/northgas/oauth/token", **request).get_json()
        assert set(body) == {"access_token", "token_type", "expires_in"}
        assert (body["token_type"], body["expires_in"]) == ("Bearer", 3600)


def test_the_token_endpoint_refuses_a_wrong_client_or_grant(client: FlaskClient) -> None:
    wrong = client.post(
        "/northgas/oauth/token", data={"grant_type": "client_credentials"}, auth=("billhub-sandbox", "nope")
    )
    assert (wrong.status_code, wrong.get_json()) == (401, {"error": "invalid_client"})
    grant = client.post("/northgas/oauth/token", data={"grant_type": "authorization_code"}, auth=CLIENT_AUTH)
    assert (grant.status_code, grant.get_json()) == (400, {"error": "unsupported_grant_type"})


@pytest.mark.parametrize("postcode", ["NG1 1AA", "ng11aa", " Ng1  1aA "])
def test_account_number_and_postcode_identify_the_customer(client: FlaskClient, postcode: str) -> None:
    answer = account(client, service_token(client), postcode=postcode)
    assert answer.status_code == 200
    assert answer.get_json() == {"account_number": ACCOUNT, "holder": "Sandbox Customer", "tariff": "Standard Variable"}


@pytest.mark.parametrize(
    ("number", "postcode"), [("NG12345", "NG1 1AA"), ("XX123456", "NG1 1AA"), (ACCOUNT, "NG2 2BB"), (ACCOUNT, "")]
)
def test_unknown_account_or_wrong_postcode_is_refused_alike(client: FlaskClient, number: str, postcode: str) -> None:
    answer = account(client, service_token(client), number, postcode)
    assert (answer.status_code, answer.get_json()) == (403, {"error": "account_access_denied"})


def test_calls_without_a_live_token_are_invalid_token(client: FlaskClient) -> None:
    assert_invalid_token(client.get(f"/northgas/api/accounts/{ACCOUNT}", headers={"X-Customer-Postcode": "NG1 1AA"}))
    assert_invalid_token(account(client, "made-up"))


def test_service_tokens_expire_on_the_clock(client: FlaskClient, clock: FakeClock) -> None:
    client.post("/_admin/faults/northgas", json={"token_ttl_seconds": 5})
    access_token = service_token(client)
    assert account(client, access_token).status_code == 200
    clock.now += 5
    assert_invalid_token(account(client, access_token))


def test_admin_expire_and_revoke_end_service_tokens(client: FlaskClient) -> None:
    first, second = service_token(client), service_token(client)
    assert client.post("/_admin/tokens/northgas/expire").get_json() == {"expired": 2}
    assert_invalid_token(account(client, first))
    third = service_token(client)
    assert client.post("/_admin/tokens/northgas/revoke").get_json() == {"revoked": 1}
    assert_invalid_token(account(client, third))
    assert_invalid_token(account(client, second))


def test_invoices_page_through_two_years_with_uk_dates(client: FlaskClient) -> None:
    invoices, pages = all_invoices(client)
    expected = monthly_bills(ACCOUNT, SANDBOX_TODAY, "GBP", (40, 140))
    assert (len(invoices), pages) == (24, 3)
    for invoice, bill in zip(invoices, expected, strict=True):
        assert invoice["invoice_no"] == bill.bill_id == f"{ACCOUNT}-{bill.issue_date:%Y%m}"
        assert invoice["amount"] == str(bill.amount) and re.fullmatch(r"\d+\.\d{2}", invoice["amount"])
        assert (invoice["currency"], invoice["revision"]) == ("GBP", 1)
        assert all(UK_DATE.fullmatch(invoice[key]) for key in ("invoice_date", "payment_due", "supply_from"))
        assert invoice["supply_to"] == f"{bill.period_end:%d/%m/%Y}"
    assert invoices[0]["invoice_date"] == "01/11/2026" and invoices[0]["payment_due"] == "22/11/2026"
    assert invoices[0]["payment_status"] == "OUTSTANDING"
    assert {invoice["payment_status"] for invoice in invoices} <= {"PAID", "OUTSTANDING", "IN_ARREARS"}
    assert {invoice["payment_status"] for invoice in invoices[2:]} == {"PAID"}


@pytest.mark.parametrize("query", ["limit=0", "limit=51", "limit=ten", "offset=-1"])
def test_bad_offset_or_limit_is_a_400(client: FlaskClient, query: str) -> None:
    answer = client.get(f"/northgas/api/accounts/{ACCOUNT}/invoices?{query}", headers=headers(service_token(client)))
    assert answer.status_code == 400 and answer.get_json()["error"] == "invalid_request"


def test_accounts_ending_99_get_a_threefold_spike_two_months_back(client: FlaskClient) -> None:
    invoices, _ = all_invoices(client, "NG12345699", limit=50)
    usual = monthly_bills("NG12345699", SANDBOX_TODAY, "GBP", (40, 140))
    assert invoices[2]["amount"] == str(usual[2].amount * 3)
    assert [invoice["amount"] for invoice in invoices[:2] + invoices[3:]] == [
        str(bill.amount) for bill in usual[:2] + usual[3:]
    ]


def test_a_revised_invoice_carries_the_new_amount_and_revision(client: FlaskClient) -> None:
    body = {"account": ACCOUNT, "bill_id": f"{ACCOUNT}-202511", "amount": "99.99"}
    assert client.post("/_admin/revise/northgas", json=body).get_json()["revision"] == 2
    assert client.post("/_admin/revise/northgas", json={**body, "amount": "12"}).get_json()["revision"] == 3
    invoice = next(invoice for invoice in all_invoices(client)[0] if invoice["invoice_no"] == body["bill_id"])
    assert (invoice["amount"], invoice["revision"]) == ("12.00", 3)


def test_invoices_itemise_charges_as_decimal_strings_that_add_up(client: FlaskClient) -> None:
    invoices, _ = all_invoices(client, limit=50)
    expected = monthly_bills(ACCOUNT, SANDBOX_TODAY, "GBP", (40, 140))
    for invoice, bill in zip(invoices, expected, strict=True):
        assert invoice["charges"] == [
            {"description": line.description, "amount": str(line.amount)} for line in bill.line_items
        ]
        assert all(re.fullmatch(r"\d+\.\d{2}", charge["amount"]) for charge in invoice["charges"])
        assert sum(Decimal(charge["amount"]) for charge in invoice["charges"]) == Decimal(invoice["amount"])


def test_accounts_ending_98_have_charges_short_of_the_amount_three_months_back(client: FlaskClient) -> None:
    invoices, _ = all_invoices(client, "NG12345698", limit=50)
    usual = monthly_bills("NG12345698", SANDBOX_TODAY, "GBP", (40, 140))
    gaps = [Decimal(i["amount"]) - sum(Decimal(c["amount"]) for c in i["charges"]) for i in invoices]
    assert gaps == [0] * 3 + [standing_charge("NG12345698")] + [0] * 20
    assert [invoice["amount"] for invoice in invoices] == [str(bill.amount) for bill in usual]


def test_accounts_ending_97_have_a_credit_note_four_months_back(client: FlaskClient) -> None:
    invoices, _ = all_invoices(client, "NG12345697", limit=50)
    usual = monthly_bills("NG12345697", SANDBOX_TODAY, "GBP", (40, 140))
    note = invoices[4]
    assert note["amount"] == f"-{usual[4].amount}" and note["payment_status"] == "PAID"
    assert sum(Decimal(charge["amount"]) for charge in note["charges"]) == Decimal(note["amount"])
    assert all(charge["amount"].startswith("-") for charge in note["charges"])


def test_accounts_ending_96_were_billed_in_euros_before_they_moved(client: FlaskClient) -> None:
    invoices, _ = all_invoices(client, "NG12345696", limit=50)
    usual = monthly_bills("NG12345696", SANDBOX_TODAY, "GBP", (40, 140))
    assert [invoice["currency"] for invoice in invoices] == ["GBP"] * 7 + ["EUR"] * 17
    assert invoices[6]["invoice_date"] == "01/05/2026" and invoices[7]["invoice_date"] == "01/04/2026"
    assert [invoice["amount"] for invoice in invoices] == [str(bill.amount) for bill in usual]


def test_a_revised_mismatch_invoice_stays_short_by_the_same_amount(client: FlaskClient) -> None:
    bill_id = "NG12345698-202608"
    client.post("/_admin/revise/northgas", json={"account": "NG12345698", "bill_id": bill_id, "amount": "250.00"})
    invoice = next(invoice for invoice in all_invoices(client, "NG12345698")[0] if invoice["invoice_no"] == bill_id)
    assert invoice["amount"] == "250.00" and invoice["charges"][-1]["description"] == "Revision adjustment"
    assert Decimal("250.00") - sum(Decimal(c["amount"]) for c in invoice["charges"]) == standing_charge("NG12345698")
