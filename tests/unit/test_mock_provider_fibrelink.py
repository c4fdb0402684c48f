"""FibreLink sandbox: HTTP Basic with the customer's password, ``next`` links, and totals sent as JSON
numbers (floats), which the service has to turn into exact money."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from flask.testing import FlaskClient

from mock_provider.app import create_app
from mock_provider.fibrelink import subscriber_id_for
from mock_provider.sandbox import monthly_bills, standing_charge

TODAY = date(2026, 11, 15)
GOOD = ("frank", "pass_good")


@pytest.fixture
def client() -> FlaskClient:
    return create_app(today=TODAY).test_client()


def all_items(client: FlaskClient, auth: tuple[str, str] = GOOD) -> tuple[list[dict[str, Any]], list[str | None]]:
    items: list[dict[str, Any]] = []
    links: list[str | None] = []
    url: str | None = "/fibrelink/api/invoices"
    while url is not None:
        body = client.get(url, auth=auth).get_json()
        items += body["items"]
        url = body["links"]["next"]
        links.append(url)
    return items, links


def test_the_right_password_names_the_subscriber(client: FlaskClient) -> None:
    answer = client.get("/fibrelink/api/me", auth=GOOD)
    assert answer.status_code == 200
    assert answer.get_json() == {"subscriber_id": subscriber_id_for("frank"), "plan": "Fibre 500"}
    assert re.fullmatch(r"FL-\d{8}", subscriber_id_for("frank"))


@pytest.mark.parametrize("auth", [("frank", "pass_bad"), ("bad user", "pass_good"), ("user_locked", "wrong"), None])
def test_wrong_credentials_are_refused_with_a_basic_challenge(
    client: FlaskClient, auth: tuple[str, str] | None
) -> None:
    answer = client.get("/fibrelink/api/me", auth=auth)
    assert (answer.status_code, answer.get_json()) == (401, {"error": "invalid_credentials"})
    assert answer.headers["WWW-Authenticate"] == 'Basic realm="fibrelink"'


def test_a_locked_account_is_403(client: FlaskClient) -> None:
    answer = client.get("/fibrelink/api/invoices", auth=("user_locked", "pass_good"))
    assert (answer.status_code, answer.get_json()) == (403, {"error": "account_locked"})


def test_invoices_page_by_eight_with_float_totals_and_timestamps(client: FlaskClient) -> None:
    items, links = all_items(client)
    expected = monthly_bills(subscriber_id_for("frank"), TODAY, "USD", (35, 95))
    assert links == ["/fibrelink/api/invoices?page=2", "/fibrelink/api/invoices?page=3", None]
    assert len(items) == 24
    for item, bill in zip(items, expected, strict=True):
        assert item["id"] == bill.bill_id
        assert type(item["total"]) is float and item["total"] == float(bill.amount)
        assert (item["currency"], item["rev"]) == ("USD", 1)
        assert item["issued"] == f"{bill.issue_date.isoformat()}T09:00:00Z"
        assert item["due"] == f"{bill.due_date.isoformat()}T23:59:59Z"
        assert item["billing_period"] == f"{bill.period_start.isoformat()}/{bill.period_end.isoformat()}"
    assert items[0]["state"] == "due"
    assert {item["state"] for item in items} <= {"paid", "due", "overdue"}


def test_totals_are_json_numbers_on_the_wire(client: FlaskClient) -> None:
    text = client.get("/fibrelink/api/invoices", auth=GOOD).get_data(as_text=True)
    assert re.search(r'"total":\s?\d+\.\d{1,2}[,}]', text)


def test_a_page_past_the_end_is_empty_and_a_bad_page_is_400(client: FlaskClient) -> None:
    assert client.get("/fibrelink/api/invoices?page=4", auth=GOOD).get_json() == {"items": [], "links": {"next": None}}
    assert client.get("/fibrelink/api/invoices?page=0", auth=GOOD).status_code == 400


def test_anomaly_usernames_get_a_threefold_spike_two_months_back(client: FlaskClient) -> None:
    items, _ = all_items(client, ("anomaly_gina", "pass_good"))
    usual = monthly_bills(subscriber_id_for("anomaly_gina"), TODAY, "USD", (35, 95))
    assert items[2]["total"] == float(usual[2].amount * 3)
    assert [item["total"] for item in items[:2] + items[3:]] == [float(b.amount) for b in usual[:2] + usual[3:]]


def test_a_revised_invoice_carries_the_new_total_and_rev(client: FlaskClient) -> None:
    bill_id = f"{subscriber_id_for('frank')}-202501"
    body = {"account": subscriber_id_for("frank"), "bill_id": bill_id, "amount": "49.99"}
    assert client.post("/_admin/revise/fibrelink", json=body).get_json()["revision"] == 2
    item = next(item for item in all_items(client)[0] if item["id"] == bill_id)
    assert (item["total"], item["rev"]) == (49.99, 2)


def test_invoices_itemise_items_as_json_numbers(client: FlaskClient) -> None:
    items, _ = all_items(client)
    expected = monthly_bills(subscriber_id_for("frank"), TODAY, "USD", (35, 95))
    for item, bill in zip(items, expected, strict=True):
        assert item["items"] == [{"name": line.description, "total": float(line.amount)} for line in bill.line_items]
        assert all(type(line["total"]) is float for line in item["items"])
        # Exact once read as Decimal, as the service reads them; floats only come close.
        assert sum(Decimal(str(line["total"])) for line in item["items"]) == Decimal(str(item["total"]))


def test_line_totals_are_json_numbers_on_the_wire(client: FlaskClient) -> None:
    text = client.get("/fibrelink/api/invoices", auth=GOOD).get_data(as_text=True)
    assert re.search(r'"items":\s?\[\{"name":\s?"Standing charge",\s?"total":\s?\d+\.\d{1,2}\}', text)


def test_mismatch_usernames_get_items_short_of_the_total_three_months_back(client: FlaskClient) -> None:
    items, _ = all_items(client, ("mismatch_mia", "pass_good"))
    gaps = [Decimal(str(i["total"])) - sum(Decimal(str(line["total"])) for line in i["items"]) for i in items]
    assert gaps == [0] * 3 + [standing_charge(subscriber_id_for("mismatch_mia"))] + [0] * 20


def test_credit_and_moved_usernames(client: FlaskClient) -> None:
    items, _ = all_items(client, ("moved_credit_cy", "pass_good"))
    usual = monthly_bills(subscriber_id_for("moved_credit_cy"), TODAY, "USD", (35, 95))
    assert items[4]["total"] == -float(usual[4].amount) and items[4]["state"] == "paid"
    assert all(line["total"] < 0 for line in items[4]["items"])
    assert [item["currency"] for item in items] == ["USD"] * 7 + ["CAD"] * 17
