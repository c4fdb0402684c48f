"""FibreLink Broadband (internet): HTTP Basic, next-link pagination, RFC 3339 timestamps and totals
sent as JSON numbers (read as Decimal, never float)."""

from __future__ import annotations

import posixpath
from datetime import UTC, date
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field, field_validator

from billhub.models import Account, Bill, BillStatus, CurrencyCode, LineItem
from billhub.money import quantize
from billhub.providers.auth import HttpBasic, UsernamePassword
from billhub.providers.base import MAX_PAGES, LinkedIdentity, ProviderAdapter
from billhub.providers.errors import ProviderDataError
from billhub.providers.formats import MAX_LINE_ITEMS, DecimalAmount, LineDescription, Payload, Revision, Timestamp

if TYPE_CHECKING:
    from billhub.providers.session import ProviderSession

_STATES = {"paid": BillStatus.PAID, "due": BillStatus.UNPAID, "overdue": BillStatus.OVERDUE}


class FibreLinkCredentials(UsernamePassword):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$", description="FibreLink username")
    password: str = Field(
        min_length=1, max_length=128, description="FibreLink password", repr=False, json_schema_extra={"secret": True}
    )


class _Subscriber(Payload):
    subscriber_id: str = Field(min_length=1, max_length=64)


class _Line(Payload):
    name: LineDescription
    total: DecimalAmount


class _Invoice(Payload):
    id: str = Field(min_length=1, max_length=128)
    total: DecimalAmount
    currency: CurrencyCode
    issued: Timestamp
    due: Timestamp
    billing_period: tuple[date, date]
    state: Literal["paid", "due", "overdue"]
    rev: Revision = 1
    items: Annotated[list[_Line], Field(max_length=MAX_LINE_ITEMS)] | None = None

    @field_validator("billing_period", mode="before")
    @classmethod
    def _split_period(cls, value: object) -> object:
        # "2026-10-01/2026-10-31", an ISO 8601 interval
        return tuple(value.split("/", 1)) if isinstance(value, str) else value


class _Links(Payload):
    next: str | None = Field(default=None, max_length=512)


class _InvoicesPage(Payload):
    items: list[_Invoice]
    links: _Links


class FibreLinkAdapter(ProviderAdapter):
    name: ClassVar[str] = "fibrelink"
    requests_per_second: ClassVar[int] = 15
    # 24 months of bills in the provider's pages of 8 (mock_provider/fibrelink.py PAGE_SIZE, followed by
    # next link): 3 pages; HTTP Basic, no token requests.
    requests_per_refresh: ClassVar[int] = 3
    auth = HttpBasic()
    credentials_model: ClassVar[type[BaseModel]] = FibreLinkCredentials

    async def verify(self, session: ProviderSession) -> LinkedIdentity:
        body = self.read(await self.get_json(session, "/api/me"), _Subscriber)
        return LinkedIdentity(external_id=body.subscriber_id)

    async def fetch_bills(self, session: ProviderSession, account: Account) -> list[Bill]:
        bills: list[Bill] = []
        path: str | None = "/api/invoices?page=1"
        for _ in range(MAX_PAGES):
            if path is None:
                return bills
            page = self.read(await self.get_json(session, path), _InvoicesPage)
            bills.extend(self._normalise(account, invoice) for invoice in page.items)
            self.check_bill_count(bills)
            path = self._next_path(page.links.next)
        raise self.too_many_pages()

    def _next_path(self, link: str | None) -> str | None:
        """The next page's path below this provider's base, refusing links that leave it."""
        if not link:
            return None
        parts = urlsplit(link)
        prefix = f"/{self.name}/"
        decoded = unquote(parts.path)
        # Dot segments ("/fibrelink/../_admin") would climb out of the API once the client resolves them.
        if parts.scheme or parts.netloc or posixpath.normpath(decoded) != decoded or not decoded.startswith(prefix):
            raise ProviderDataError(f"{self.display_name} sent a next-page link outside its API.")
        return parts.path.removeprefix(prefix[:-1]) + (f"?{parts.query}" if parts.query else "")

    def _normalise(self, account: Account, raw: _Invoice) -> Bill:
        return Bill(
            provider=self.name,
            account_id=account.account_id,
            provider_bill_id=raw.id,
            category=self.category,
            amount=quantize(raw.total, raw.currency),
            currency=raw.currency,
            issued_on=raw.issued.astimezone(UTC).date(),
            due_on=raw.due.astimezone(UTC).date(),
            period_start=raw.billing_period[0],
            period_end=raw.billing_period[1],
            status=_STATES[raw.state],
            revision=raw.rev,
            line_items=tuple(
                LineItem(description=line.name, amount=quantize(line.total, raw.currency)) for line in raw.items or ()
            ),
        )
