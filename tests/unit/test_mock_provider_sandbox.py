"""The sandbox's bill generator: itemised bills that add up, and the quirks that plant data-quality
problems in exactly one place each, without moving any other bill."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest

from mock_provider import clearwater, fibrelink, northgas, sparkgrid
from mock_provider.sandbox import (
    CENT,
    REVISION_ADJUSTMENT,
    Quirk,
    SandboxBill,
    SandboxLineItem,
    monthly_bills,
    standing_charge,
)

TODAY = date(2026, 11, 15)
RANGES = [(25, 90), (60, 180), (40, 140), (35, 95)]


def total(bill: SandboxBill) -> Decimal:
    return sum((line.amount for line in bill.line_items), Decimal(0))


def descriptions(bill: SandboxBill) -> list[str]:
    return [line.description for line in bill.line_items]


def test_amounts_are_what_they_were_before_bills_were_itemised() -> None:
    # Pinned from the generator before line items and quirks existed: expectations elsewhere rely on them.
    bills = monthly_bills("CW-00000042", TODAY)
    assert [str(bill.amount) for bill in bills[:6]] == ["43.08", "50.41", "59.88", "59.77", "52.35", "42.59"]
    spiked = monthly_bills("NG12345699", TODAY, "GBP", (40, 140), quirks={Quirk.ANOMALY})
    assert [str(bill.amount) for bill in spiked[:4]] == ["92.08", "108.67", "389.79", "130.82"]


@pytest.mark.parametrize("base_range", RANGES)
def test_every_usual_bill_has_two_to_four_positive_lines_adding_up_exactly(base_range: tuple[int, int]) -> None:
    counts: set[int] = set()
    for number in range(400):
        for bill in monthly_bills(f"XX-{number:08d}", TODAY, "USD", base_range):
            assert total(bill) == bill.amount, bill
            assert all(line.amount > 0 and line.amount == line.amount.quantize(CENT) for line in bill.line_items)
            assert descriptions(bill)[:2] == ["Standing charge", "Usage"]
            assert set(descriptions(bill)[2:]) <= {"Network charge", "Tax at 5%", "Tax at 7%", "Tax at 8%"}
            counts.add(len(bill.line_items))
    assert counts == {2, 3, 4}


def test_line_items_are_deterministic_and_differ_between_accounts() -> None:
    bills = monthly_bills("SG-00000001", TODAY, quirks=set(Quirk))
    assert bills == monthly_bills("SG-00000001", TODAY, quirks=set(Quirk))
    assert [b.line_items for b in bills] != [
        b.line_items for b in monthly_bills("SG-00000002", TODAY, quirks=set(Quirk))
    ]
    assert {bill.line_items[0] for bill in bills if bill.line_items[0].description == "Standing charge"} == {
        SandboxLineItem("Standing charge", standing_charge("SG-00000001"))
    }


def changed_bills(
    quirk: Quirk, account: str = "SG-00001234", currency: str = "USD"
) -> dict[int, tuple[SandboxBill, SandboxBill]]:
    """months back -> (usual bill, quirky bill), for the bills the quirk changed."""
    usual = monthly_bills(account, TODAY, currency)
    quirky = monthly_bills(account, TODAY, currency, quirks={quirk})
    assert len(usual) == len(quirky) == 24
    return {back: pair for back, pair in enumerate(zip(usual, quirky, strict=True)) if pair[0] != pair[1]}


def test_anomaly_triples_the_bill_two_months_back_and_its_usage() -> None:
    [(back, (usual, spike))] = changed_bills(Quirk.ANOMALY).items()
    assert back == 2 and spike.amount == (usual.amount * 3).quantize(CENT)
    assert total(spike) == spike.amount
    assert spike.line_items[0] == usual.line_items[0]  # the standing charge does not spike
    assert spike.line_items[1].description == "Usage" and spike.line_items[1].amount > 3 * usual.line_items[1].amount


def test_mismatch_drops_the_standing_charge_three_months_back() -> None:
    [(back, (usual, short))] = changed_bills(Quirk.MISMATCH).items()
    assert back == 3
    assert replace(short, line_items=usual.line_items) == usual  # only the lines differ
    assert short.line_items == usual.line_items[1:]
    assert "Standing charge" not in descriptions(short)
    assert short.amount - total(short) == standing_charge("SG-00001234") > 0


def test_credit_turns_the_bill_four_months_back_into_a_paid_credit_note() -> None:
    [(back, (usual, credit))] = changed_bills(Quirk.CREDIT).items()
    assert back == 4
    assert credit.amount == -usual.amount < 0
    assert credit.status == "paid"
    assert descriptions(credit) == ["Refund of overcharge", "Goodwill credit"]
    assert all(line.amount < 0 for line in credit.line_items)
    assert total(credit) == credit.amount
    assert Decimal(-10) <= credit.line_items[1].amount <= Decimal(-5)


@pytest.mark.parametrize(("currency", "before"), [("USD", "CAD"), ("GBP", "EUR")])
def test_currency_change_moves_the_bills_older_than_six_months_to_the_previous_currency(
    currency: str, before: str
) -> None:
    changed = changed_bills(Quirk.CURRENCY_CHANGE, "NG12345678", currency)
    assert sorted(changed) == list(range(7, 24))
    for usual, moved in changed.values():
        assert (usual.currency, moved.currency) == (currency, before)
        assert replace(moved, currency=currency) == usual


def test_all_quirks_together_each_touch_only_their_own_bills() -> None:
    usual = monthly_bills("FL-00000099", TODAY, "USD", (35, 95))
    every = monthly_bills("FL-00000099", TODAY, "USD", (35, 95), quirks=set(Quirk))
    alone = {q: monthly_bills("FL-00000099", TODAY, "USD", (35, 95), quirks={q}) for q in Quirk}
    assert every[2] == alone[Quirk.ANOMALY][2]
    assert every[3] == alone[Quirk.MISMATCH][3]
    assert every[4] == alone[Quirk.CREDIT][4]
    assert every[7:] == alone[Quirk.CURRENCY_CHANGE][7:]
    assert every[:2] + every[5:7] == usual[:2] + usual[5:7]
    assert [back for back, bill in enumerate(every) if total(bill) != bill.amount] == [3]


def test_a_revision_adds_one_adjustment_line_so_the_lines_still_add_up() -> None:
    bill = monthly_bills("CW-00000042", TODAY)[5]
    revised = bill.revised(Decimal("12.34"), 2)
    assert (revised.amount, revised.revision) == (Decimal("12.34"), 2)
    assert revised.line_items == (
        *bill.line_items,
        SandboxLineItem(REVISION_ADJUSTMENT, Decimal("12.34") - bill.amount),
    )
    assert revised.line_items[-1].amount < 0 and total(revised) == Decimal("12.34")
    assert bill.revised(bill.amount, 3).line_items == bill.line_items  # no change, no adjustment


def test_a_revised_mismatch_bill_keeps_its_shortfall() -> None:
    short = monthly_bills("CW-00000042", TODAY, quirks={Quirk.MISMATCH})[3]
    revised = short.revised(Decimal("500.00"), 2)
    assert revised.amount - total(revised) == short.amount - total(short) == standing_charge("CW-00000042")


@pytest.mark.parametrize(
    ("quirks_for", "credential", "quirks"),
    [
        (sparkgrid.quirks_for, "ann", set()),
        (sparkgrid.quirks_for, "anomaly_ann", {Quirk.ANOMALY}),
        (sparkgrid.quirks_for, "mismatch_mo", {Quirk.MISMATCH}),
        (sparkgrid.quirks_for, "carl.credit", {Quirk.CREDIT}),
        (sparkgrid.quirks_for, "moved_kim", {Quirk.CURRENCY_CHANGE}),
        (sparkgrid.quirks_for, "moved_credit_anomaly_mismatch", set(Quirk)),
        (fibrelink.quirks_for, "gina", set()),
        (fibrelink.quirks_for, "anomaly_gina", {Quirk.ANOMALY}),
        (fibrelink.quirks_for, "mismatch_mia", {Quirk.MISMATCH}),
        (fibrelink.quirks_for, "credit_cy", {Quirk.CREDIT}),
        (fibrelink.quirks_for, "moved_max", {Quirk.CURRENCY_CHANGE}),
        (northgas.quirks_for, "NG12345695", set()),
        (northgas.quirks_for, "NG12345699", {Quirk.ANOMALY}),
        (northgas.quirks_for, "NG12345698", {Quirk.MISMATCH}),
        (northgas.quirks_for, "NG12345697", {Quirk.CREDIT}),
        (northgas.quirks_for, "NG12345696", {Quirk.CURRENCY_CHANGE}),
        (northgas.quirks_for, "NG12399900", set()),
        (clearwater.quirks_for, "cw_sandbox_mine", set()),
        (clearwater.quirks_for, "cw_sandbox_anomaly_1", {Quirk.ANOMALY}),
        (clearwater.quirks_for, "cw_sandbox_mismatch", {Quirk.MISMATCH}),
        (clearwater.quirks_for, "cw_sandbox_credit_2", {Quirk.CREDIT}),
        (clearwater.quirks_for, "cw_sandbox_moved_x", {Quirk.CURRENCY_CHANGE}),
        (clearwater.quirks_for, "cw_sandbox_mine_moved", set()),  # a prefix, not anywhere in the key
    ],
)
def test_each_provider_reads_quirks_from_credentials_in_its_own_style(
    quirks_for: Callable[[str], frozenset[Quirk]], credential: str, quirks: set[Quirk]
) -> None:
    assert quirks_for(credential) == quirks
