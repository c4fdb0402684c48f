"""SparkGrid Energy (electricity): OAuth2 authorization code with rotating refresh tokens, cursor
pagination, amounts (line items' too) in integer minor units."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import BaseModel, Field

from billhub.models import Account, Bill, BillStatus, CurrencyCode, LineItem
from billhub.money import from_minor_units
from billhub.providers.auth import AuthorizationCodeGrant, OAuthTokens
from billhub.providers.base import MAX_PAGES, LinkedIdentity, ProviderAdapter
from billhub.providers.formats import MAX_LINE_ITEMS, LineDescription, MinorUnits, Payload, Revision

if TYPE_CHECKING:
    from billhub.providers.session import ProviderSession

_STATES = {"settled": BillStatus.PAID, "open": BillStatus.UNPAID, "late": BillStatus.OVERDUE}
_PAGE_SIZE = 12


class _Customer(Payload):
    customer_id: str = Field(min_length=1, max_length=64)


class _Period(Payload):
    start: date
    end: date


class _Line(Payload):
    label: LineDescription
    amount_minor: MinorUnits


class _Statement(Payload):
    statement_id: str = Field(min_length=1, max_length=128)
    amount_due_minor: MinorUnits
    currency: CurrencyCode
    issued_at: date
    due_by: date
    period: _Period
    state: Literal["settled", "open", "late"]
    version: Revision = 1
    lines: Annotated[list[_Line], Field(max_length=MAX_LINE_ITEMS)] | None = None


class _StatementsPage(Payload):
    data: list[_Statement]
    next_cursor: str | None = Field(default=None, max_length=512)


class SparkGridAdapter(ProviderAdapter):
    name: ClassVar[str] = "sparkgrid"
    requests_per_second: ClassVar[int] = 20
    # One token request (a day after the last fetch its access token has expired) and 24 months of bills
    # in pages of _PAGE_SIZE (12): 2 pages, as mock_provider/sparkgrid.py pages them.
    requests_per_refresh: ClassVar[int] = 3
    # Its token and authorize endpoints are configured (ProviderEndpoints), as real providers host them apart.
    auth = AuthorizationCodeGrant(scope="bills:read")
    credentials_model: ClassVar[type[BaseModel]] = OAuthTokens

    async def verify(self, session: ProviderSession) -> LinkedIdentity:
        body = self.read(await self.get_json(session, "/api/v2/customer"), _Customer)
        return LinkedIdentity(external_id=body.customer_id)

    async def fetch_bills(self, session: ProviderSession, account: Account) -> list[Bill]:
        bills: list[Bill] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            params: dict[str, str | int] = {"limit": _PAGE_SIZE}
            if cursor:
                params["cursor"] = cursor
            page = self.read(await self.get_json(session, "/api/v2/statements", params=params), _StatementsPage)
            bills.extend(self._normalise(account, statement) for statement in page.data)
            self.check_bill_count(bills)
            cursor = page.next_cursor
            if not cursor:
                return bills
        raise self.too_many_pages()

    def _normalise(self, account: Account, raw: _Statement) -> Bill:
        return Bill(
            provider=self.name,
            account_id=account.account_id,
            provider_bill_id=raw.statement_id,
            category=self.category,
            amount=from_minor_units(raw.amount_due_minor, raw.currency),
            currency=raw.currency,
            issued_on=raw.issued_at,
            due_on=raw.due_by,
            period_start=raw.period.start,
            period_end=raw.period.end,
            status=_STATES[raw.state],
            revision=raw.version,
            line_items=tuple(
                LineItem(description=line.label, amount=from_minor_units(line.amount_minor, raw.currency))
                for line in raw.lines or ()
            ),
        )
