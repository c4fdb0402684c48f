"""Money helpers: Decimal amounts per ISO 4217 currency, never floats, never mixed currencies."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal

# ISO 4217 minor units that differ from the usual two decimals.
_MINOR_UNITS = {"JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0, "BHD": 3, "KWD": 3, "JOD": 3, "OMR": 3, "TND": 3}


def minor_units(currency: str) -> int:
    return _MINOR_UNITS.get(currency, 2)


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
