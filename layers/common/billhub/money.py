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
    exponent = Decimal(1).scaleb(-minor_units(currency))
    return str(amount.quantize(exponent, rounding=ROUND_HALF_EVEN))


def totals_by_currency(amounts: Iterable[tuple[Decimal, str]]) -> dict[str, str]:
    """Sums per currency, formatted; currencies are never added together."""
    sums: dict[str, Decimal] = defaultdict(Decimal)
    for amount, currency in amounts:
        sums[currency] += amount
    return {currency: format_amount(total, currency) for currency, total in sorted(sums.items())}
