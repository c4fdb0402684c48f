"""ClearWater sandbox: the API-key provider the service already links, plus quirk keys, line items and revisions."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from flask.testing import FlaskClient

from mock_provider.app import create_app
from mock_provider.clearwater import account_number_for
from mock_provider.sandbox import monthly_bills, standing_charge

TODAY = date(2026, 11, 15)
KEY = "cw_sandbox_tests"


@pytest.fixture
def client() -> FlaskClient:
    return create_app(today=TODAY).test_client()


def all_bills(client: FlaskClient, key: str = KEY, per_page: int = 10) -> tuple[list[dict[str, Any]], int]:
    bills: list[dict[str, Any]] = []
    page = 1
    while True:
        body = client.get(
            f"/clearwater/v1/bills?page={page}&per_page={per_page}", headers={"X-Api-Key": key}
        ).get_json()
        bills += body["bills"]
        if page >= body["total_pages"]:
            return bills, body["total_pages"]
        page += 1


def test_a_sandbox_key_names_its_account(client: FlaskClient) -> None:
    answer = client.get("/clearwater/v1/account", headers={"X-Api-Key": KEY})
    assert answer.status_code == 200
    assert answer.get_json()["account_number"] == account_number_for(KEY)
    assert re.fullmatch(r"CW-\d{8}", account_number_for(KEY))


@pytest.mark.parametrize("key", ["live_key_1234", "cw_sandbox_", ""])
def test_other_keys_are_refused(client: FlaskClient, key: str) -> None:
    answer = client.get("/clearwater/v1/account", headers={"X-Api-Key": key})
    assert (answer.status_code, answer.get_json()["error"]) == (401, "invalid_api_key")


def test_bills_page_through_two_years_with_decimal_strings(client: FlaskClient) -> None:
    bills, total_pages = all_bills(client)
    expected = monthly_bills(account_number_for(KEY), TODAY)
    assert (len(bills), total_pages) == (24, 3)
    for bill, generated in zip(bills, expected, strict=True):
        assert bill["bill_id"] == generated.bill_id and bill["amount_due"] == str(generated.amount)
        assert re.fullmatch(r"\d+\.\d{2}", bill["amount_due"]) and bill["currency"] == "USD"
        assert bill["issue_date"] == generated.issue_date.isoformat() and bill["revision"] == 1
        assert bill["service_period"] == {
            "from": generated.period_start.isoformat(),
            "to": generated.period_end.isoformat(),
        }
    assert bills[0]["status"] == "UNPAID"
    assert {bill["status"] for bill in bills} <= {"PAID", "UNPAID", "PAST_DUE"}


def test_anomaly_keys_get_a_threefold_spike_two_months_back(client: FlaskClient) -> None:
    key = "cw_sandbox_anomaly_1"
    bills, _ = all_bills(client, key, per_page=50)
    usual = monthly_bills(account_number_for(key), TODAY)
    assert bills[2]["amount_due"] == str(usual[2].amount * 3)
    assert [bill["amount_due"] for bill in bills[:2] + bills[3:]] == [str(b.amount) for b in usual[:2] + usual[3:]]


def test_a_revised_bill_carries_the_new_amount_and_revision(client: FlaskClient) -> None:
    bill_id = f"{account_number_for(KEY)}-202610"
    body = {"account": account_number_for(KEY), "bill_id": bill_id, "amount": "70.10"}
    assert client.post("/_admin/revise/clearwater", json=body).get_json() == {
        "bill_id": bill_id,
        "amount": "70.10",
        "revision": 2,
    }
    bill = next(bill for bill in all_bills(client)[0] if bill["bill_id"] == bill_id)
    assert (bill["amount_due"], bill["revision"]) == ("70.10", 2)


def test_bills_itemise_line_items_as_decimal_strings_that_add_up(client: FlaskClient) -> None:
    bills, _ = all_bills(client, per_page=50)
    expected = monthly_bills(account_number_for(KEY), TODAY)
    for bill, generated in zip(bills, expected, strict=True):
        assert bill["line_items"] == [
            {"description": line.description, "amount": str(line.amount)} for line in generated.line_items
        ]
        assert 2 <= len(bill["line_items"]) <= 4
        assert sum(Decimal(line["amount"]) for line in bill["line_items"]) == Decimal(bill["amount_due"])


def test_moved_keys_were_billed_in_canadian_dollars_more_than_six_months_back(client: FlaskClient) -> None:
    key = "cw_sandbox_moved_1"
    bills, _ = all_bills(client, key, per_page=50)
    usual = monthly_bills(account_number_for(key), TODAY)
    assert [bill["currency"] for bill in bills] == ["USD"] * 7 + ["CAD"] * 17
    assert [bill["amount_due"] for bill in bills] == [str(b.amount) for b in usual]
    assert all(sum(Decimal(ln["amount"]) for ln in b["line_items"]) == Decimal(b["amount_due"]) for b in bills)


@pytest.mark.parametrize(
    ("key", "odd_one_out"), [("cw_sandbox_mismatch_1", 3), ("cw_sandbox_credit_1", 4), ("cw_sandbox_anomaly_1", 2)]
)
def test_quirk_keys_change_only_their_bill(client: FlaskClient, key: str, odd_one_out: int) -> None:
    bills, _ = all_bills(client, key, per_page=50)
    usual = monthly_bills(account_number_for(key), TODAY)
    changed = [
        back
        for back, (bill, generated) in enumerate(zip(bills, usual, strict=True))
        if (bill["amount_due"], bill["line_items"])
        != (
            str(generated.amount),
            [{"description": ln.description, "amount": str(ln.amount)} for ln in generated.line_items],
        )
    ]
    assert changed == [odd_one_out]


def test_credit_keys_get_a_negative_paid_bill_four_months_back(client: FlaskClient) -> None:
    bills, _ = all_bills(client, "cw_sandbox_credit_1", per_page=50)
    usual = monthly_bills(account_number_for("cw_sandbox_credit_1"), TODAY)
    assert (bills[4]["amount_due"], bills[4]["status"]) == (str(-usual[4].amount), "PAID")
    assert sum(Decimal(line["amount"]) for line in bills[4]["line_items"]) == -usual[4].amount


def test_mismatch_keys_get_line_items_short_of_the_amount_three_months_back(client: FlaskClient) -> None:
    key = "cw_sandbox_mismatch_1"
    bills, _ = all_bills(client, key, per_page=50)
    short = bills[3]
    listed = sum(Decimal(line["amount"]) for line in short["line_items"])
    assert Decimal(short["amount_due"]) - listed == standing_charge(account_number_for(key))
    assert "Standing charge" not in [line["description"] for line in short["line_items"]]


def test_a_revised_bill_gains_an_adjustment_so_its_line_items_still_add_up(client: FlaskClient) -> None:
    bill_id = f"{account_number_for(KEY)}-202610"
    before = next(bill for bill in all_bills(client)[0] if bill["bill_id"] == bill_id)
    client.post(
        "/_admin/revise/clearwater", json={"account": account_number_for(KEY), "bill_id": bill_id, "amount": "200"}
    )
    after = next(bill for bill in all_bills(client)[0] if bill["bill_id"] == bill_id)
    adjustment = Decimal("200.00") - Decimal(before["amount_due"])
    assert after["line_items"] == [
        *before["line_items"],
        {"description": "Revision adjustment", "amount": str(adjustment)},
    ]
    assert sum(Decimal(line["amount"]) for line in after["line_items"]) == Decimal(after["amount_due"]) == 200
