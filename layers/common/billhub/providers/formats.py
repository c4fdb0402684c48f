"""Field types for the ways providers write dates and money, so each adapter's payload model says
what its provider sends and pydantic does the reading."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt


class Payload(BaseModel):
    """Base of the adapters' payload models. Each is built when its adapter first reads a page, not at
    import: most functions import every adapter for its name and category and never read a payload,
    and a fetcher reads those of the providers it is given."""

    model_config = ConfigDict(defer_build=True)


def _day_month_year(value: Any) -> Any:
    if isinstance(value, str):
        return datetime.strptime(value, "%d/%m/%Y").date()
    return value


# ``"31/01/2026"``
DayMonthYear = Annotated[date, BeforeValidator(_day_month_year)]
# ``"2026-01-31T09:00:00Z"``: a moment with its zone; the bill's date is the UTC calendar day.
Timestamp = AwareDatetime
# ``"45.60"`` or ``45.6`` (read as Decimal by ``get_json``): at most 15 digits, no NaN or infinity, so
# a garbage amount is a validation error rather than an arithmetic one later.
DecimalAmount = Annotated[Decimal, Field(max_digits=15, allow_inf_nan=False)]
# ``4560`` meaning 45.60: whole minor units.
MinorUnits = Annotated[StrictInt, Field(ge=-(10**12), le=10**12)]
Revision = Annotated[int, Field(ge=1)]
# A line item's description, within what ``LineItem`` holds, so a bad one is the provider's data error.
LineDescription = Annotated[str, Field(min_length=1, max_length=200)]
# More lines than this on one bill is not an itemised bill but a broken payload.
MAX_LINE_ITEMS = 100
