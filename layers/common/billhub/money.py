"""Money helpers: Decimal amounts per ISO 4217 currency, never floats, never mixed currencies."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal

# Every ISO 4217 currency whose minor units are not the usual two, as the standard's table has them (a
# unit test compares this with the ``iso4217`` package's copy of it). Written out rather than imported:
# that package parses its XML table on import, 30-40 ms of every cold start, for these 26 numbers.
# fmt: off
_MINOR_UNITS_NOT_TWO = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0,
    "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    "CLF": 4, "UYW": 4,
}
# fmt: on


def minor_units(currency: str) -> int:
    """The currency's decimals: ISO 4217's minor units, two where the standard has none (gold, SDRs)."""
    return _MINOR_UNITS_NOT_TWO.get(currency, 2)


def format_amount(amount: Decimal, currency: str) -> str:
    """The amount as a decimal string with the currency's minor units ("42.10", not "42.1")."""
    return str(quantize(amount, currency))


def totals_by_currency(amounts: Iterable[tuple[Decimal, str]]) -> dict[str, str]:
    """Sums per currency, formatted; currencies are never added together."""
    sums: dict[str, Decimal] = defaultdict(Decimal)
    for amount, currency in amounts:
        sums[currency] += amount
    return {currency: format_amount(total, currency) for currency, total in sorted(sums.items())}


def quantize(amount: Decimal, currency: str) -> Decimal:
    """The amount at the currency's minor units (a provider's ``50.1`` becomes ``50.10``)."""
    return amount.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUND_HALF_EVEN)


def from_minor_units(minor: int, currency: str) -> Decimal:
    """An amount given in minor units (cents, pence) as a Decimal in major units."""
    return Decimal(minor).scaleb(-minor_units(currency))
