"""billhub.money against ISO 4217 itself: the minor units the service rounds to are the standard's."""

from __future__ import annotations

from decimal import Decimal

import iso4217
import pytest

from billhub.money import format_amount, from_minor_units, minor_units

STANDARD = [currency for currency in iso4217.Currency if currency.exponent is not None]


@pytest.mark.parametrize("currency", STANDARD, ids=lambda currency: currency.code)
def test_every_currency_rounds_to_the_minor_units_iso_4217_gives_it(currency: iso4217.Currency) -> None:
    # Given a currency of the standard's table, when the service asks how many decimals it has
    # Then it is the standard's figure (a one-yen bill has no cents, a Kuwaiti dinar has fils)
    assert minor_units(currency.code) == currency.exponent


def test_a_currency_without_minor_units_in_the_standard_keeps_two_decimals() -> None:
    # Given gold (XAU), which ISO 4217 gives no minor units, then amounts in it keep two decimals
    assert iso4217.Currency("XAU").exponent is None
    assert format_amount(Decimal("1.005"), "XAU") == "1.00"


def test_minor_units_convert_both_ways_for_zero_three_and_four_decimal_currencies() -> None:
    assert from_minor_units(1500, "UGX") == Decimal("1500")
    assert from_minor_units(1234, "LYD") == Decimal("1.234")
    assert from_minor_units(12345, "CLF") == Decimal("1.2345")
