"""Field types for the ways providers write dates and money, so each adapter's payload model says
what its provider sends and pydantic does the reading."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator, Field, StrictInt


def _day_month_year(value: Any) -> Any:
    if isinstance(value, str):
        return datetime.strptime(value, "%d/%m/%Y").date()
    return value


# ``"31/01/2026"``
DayMonthYear = Annotated[date, BeforeValidator(_day_month_year)]
# ``"2026-01-31T09:00:00Z"``: a moment with its zone; the bill's date is the UTC calendar day.
Timestamp = AwareDatetime
# ``"45.60"``: a decimal string, never a float on the way in.
DecimalString = Annotated[Decimal, BeforeValidator(lambda value: Decimal(value) if isinstance(value, str) else value)]
# ``4560`` meaning 45.60: whole minor units.
MinorUnits = Annotated[StrictInt, Field(ge=-(10**12), le=10**12)]
Revision = Annotated[int, Field(ge=1)]
