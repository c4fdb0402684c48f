"""ClearWater Utilities (water): a per-account API key, page/per_page pagination, decimal-string amounts."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import BaseModel, Field

from billhub.models import Account, Bill, BillStatus, CurrencyCode, LineItem
from billhub.money import quantize
from billhub.providers.auth import ApiKey, ApiKeyHeader
from billhub.providers.base import MAX_PAGES, LinkedIdentity, ProviderAdapter
from billhub.providers.formats import MAX_LINE_ITEMS, DecimalAmount, LineDescription, Payload, Revision

if TYPE_CHECKING:
    from billhub.providers.session import ProviderSession

_STATUSES = {"PAID": BillStatus.PAID, "UNPAID": BillStatus.UNPAID, "PAST_DUE": BillStatus.OVERDUE}
_PAGE_SIZE = 12


class ClearWaterCredentials(ApiKey):
    api_key: str = Field(
        min_length=8,
        max_length=128,
        pattern=r"^[A-Za-z0-9_\-]+$",
        description="API key from the ClearWater customer portal",
        repr=False,
        json_schema_extra={"secret": True},
    )


class _Account(Payload):
    account_number: str = Field(min_length=1, max_length=64)


class _Period(Payload):
    from_: date = Field(alias="from")
    to: date


class _Line(Payload):
    description: LineDescription
    amount: DecimalAmount


class _Bill(Payload):
    bill_id: str = Field(min_length=1, max_length=128)
    amount_due: DecimalAmount
    currency: CurrencyCode
    issue_date: date
    due_date: date
    status: Literal["PAID", "UNPAID", "PAST_DUE"]
    service_period: _Period
    revision: Revision = 1
    line_items: Annotated[list[_Line], Field(max_length=MAX_LINE_ITEMS)] | None = None


class _BillsPage(Payload):
    bills: list[_Bill]
    page: int
    total_pages: int


class ClearWaterAdapter(ProviderAdapter):
    name: ClassVar[str] = "clearwater"
    requests_per_second: ClassVar[int] = 25
    # 24 months of bills in pages of _PAGE_SIZE (12): 2 pages (mock_provider/clearwater.py); an API key,
    # no token requests.
    requests_per_refresh: ClassVar[int] = 2
    auth = ApiKeyHeader("X-Api-Key")
    credentials_model: ClassVar[type[BaseModel]] = ClearWaterCredentials

    async def verify(self, session: ProviderSession) -> LinkedIdentity:
        body = self.read(await self.get_json(session, "/v1/account"), _Account)
        return LinkedIdentity(external_id=body.account_number)

    async def fetch_bills(self, session: ProviderSession, account: Account) -> list[Bill]:
        bills: list[Bill] = []
        for page in range(1, MAX_PAGES + 1):
            body = await self.get_json(session, "/v1/bills", params={"page": page, "per_page": _PAGE_SIZE})
            listing = self.read(body, _BillsPage)
            bills.extend(self._normalise(account, raw) for raw in listing.bills)
            self.check_bill_count(bills)
            if page >= listing.total_pages:
                return bills
        raise self.too_many_pages()

    def _normalise(self, account: Account, raw: _Bill) -> Bill:
        return Bill(
            provider=self.name,
            account_id=account.account_id,
            provider_bill_id=raw.bill_id,
            category=self.category,
            amount=quantize(raw.amount_due, raw.currency),
            currency=raw.currency,
            issued_on=raw.issue_date,
            due_on=raw.due_date,
            period_start=raw.service_period.from_,
            period_end=raw.service_period.to,
            status=_STATUSES[raw.status],
            revision=raw.revision,
            line_items=tuple(
                LineItem(description=line.description, amount=quantize(line.amount, raw.currency))
                for line in raw.line_items or ()
            ),
        )
