"""NorthGas (gas): a service-level OAuth2 client-credentials token plus the customer's account
number and postcode; offset/limit pagination, DD/MM/YYYY dates, bills in pounds sterling."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import BaseModel, Field

from billhub.models import Account, Bill, BillStatus, CurrencyCode, LineItem
from billhub.money import quantize
from billhub.providers.auth import ClientCredentialsGrant, ProviderCredentials
from billhub.providers.base import MAX_PAGES, LinkedIdentity, ProviderAdapter
from billhub.providers.formats import MAX_LINE_ITEMS, DayMonthYear, DecimalAmount, LineDescription, Payload, Revision

if TYPE_CHECKING:
    from billhub.providers.session import ProviderSession

_STATUSES = {"PAID": BillStatus.PAID, "OUTSTANDING": BillStatus.UNPAID, "IN_ARREARS": BillStatus.OVERDUE}
_PAGE_SIZE = 10


class NorthGasCredentials(ProviderCredentials):
    account_number: str = Field(
        pattern=r"^NG\d{6,10}$", description="Account number from a NorthGas bill (NG followed by digits)"
    )
    postcode: str = Field(
        min_length=5,
        max_length=8,
        pattern=r"^[A-Za-z0-9 ]+$",
        description="Postcode of the supply address",
        repr=False,
        json_schema_extra={"secret": True},
    )


class _Account(Payload):
    account_number: str = Field(min_length=1, max_length=64)


class _Line(Payload):
    description: LineDescription
    amount: DecimalAmount


class _Invoice(Payload):
    invoice_no: str = Field(min_length=1, max_length=128)
    amount: DecimalAmount
    currency: CurrencyCode
    invoice_date: DayMonthYear
    payment_due: DayMonthYear
    supply_from: DayMonthYear
    supply_to: DayMonthYear
    payment_status: Literal["PAID", "OUTSTANDING", "IN_ARREARS"]
    revision: Revision = 1
    charges: Annotated[list[_Line], Field(max_length=MAX_LINE_ITEMS)] | None = None


class _InvoicesPage(Payload):
    invoices: list[_Invoice]
    offset: int = Field(ge=0)
    total: int = Field(ge=0)


class NorthGasAdapter(ProviderAdapter):
    name: ClassVar[str] = "northgas"
    requests_per_second: ClassVar[int] = 10
    # 24 months of bills in pages of _PAGE_SIZE (10): 3 pages (mock_provider/northgas.py); the service
    # token is shared by every account a fetcher serves, so it adds next to nothing per account.
    requests_per_refresh: ClassVar[int] = 3
    auth = ClientCredentialsGrant()
    credentials_model: ClassVar[type[BaseModel]] = NorthGasCredentials

    @staticmethod
    def _customer(session: ProviderSession) -> tuple[str, dict[str, str]]:
        credentials = session.credentials
        if not isinstance(credentials, NorthGasCredentials):
            raise TypeError("NorthGas needs NorthGasCredentials")
        return f"/api/accounts/{credentials.account_number}", {"X-Customer-Postcode": credentials.postcode}

    async def verify(self, session: ProviderSession) -> LinkedIdentity:
        path, headers = self._customer(session)
        body = self.read(await self.get_json(session, path, headers=headers), _Account)
        return LinkedIdentity(external_id=body.account_number)

    async def fetch_bills(self, session: ProviderSession, account: Account) -> list[Bill]:
        path, headers = self._customer(session)
        bills: list[Bill] = []
        offset = 0
        for _ in range(MAX_PAGES):
            body = await self.get_json(
                session, f"{path}/invoices", params={"offset": offset, "limit": _PAGE_SIZE}, headers=headers
            )
            page = self.read(body, _InvoicesPage)
            bills.extend(self._normalise(account, invoice) for invoice in page.invoices)
            self.check_bill_count(bills)
            offset += len(page.invoices)
            if not page.invoices or offset >= page.total:
                return bills
        raise self.too_many_pages()

    def _normalise(self, account: Account, raw: _Invoice) -> Bill:
        return Bill(
            provider=self.name,
            account_id=account.account_id,
            provider_bill_id=raw.invoice_no,
            category=self.category,
            amount=quantize(raw.amount, raw.currency),
            currency=raw.currency,
            issued_on=raw.invoice_date,
            due_on=raw.payment_due,
            period_start=raw.supply_from,
            period_end=raw.supply_to,
            status=_STATUSES[raw.payment_status],
            revision=raw.revision,
            line_items=tuple(
                LineItem(description=line.description, amount=quantize(line.amount, raw.currency))
                for line in raw.charges or ()
            ),
        )
