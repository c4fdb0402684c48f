"""ClearWater Utilities (water): a per-account API key, page/per_page pagination, decimal-string amounts."""

from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from billhub.models import Account, Bill, BillStatus, Category
from billhub.providers.base import LinkedIdentity, ProviderAdapter, ProviderDataError
from billhub.providers.http import ProviderHttp

_STATUSES = {"PAID": BillStatus.PAID, "UNPAID": BillStatus.UNPAID, "PAST_DUE": BillStatus.OVERDUE}
_PAGE_SIZE = 12
_MAX_PAGES = 50  # a provider that pages forever must not hold the fetcher hostage


class ClearWaterCredentials(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key: str = Field(
        min_length=8,
        max_length=128,
        pattern=r"^[A-Za-z0-9_\-]+$",
        description="API key from the ClearWater customer portal",
        json_schema_extra={"secret": True},
    )


class _ClearWaterBill(BaseModel):
    bill_id: str
    amount_due: str
    currency: str
    issue_date: date
    due_date: date
    status: str
    service_period: dict[str, date]
    revision: int = 1


class ClearWaterAdapter(ProviderAdapter):
    name: ClassVar[str] = "clearwater"
    display_name: ClassVar[str] = "ClearWater Utilities"
    category: ClassVar[Category] = Category.WATER
    auth_type = "api_key"
    credentials_model: ClassVar[type[BaseModel]] = ClearWaterCredentials

    @staticmethod
    def _headers(credentials: BaseModel) -> dict[str, str]:
        if not isinstance(credentials, ClearWaterCredentials):
            raise TypeError("ClearWater needs ClearWaterCredentials")
        return {"X-Api-Key": credentials.api_key, "Accept": "application/json"}

    async def verify(self, http: ProviderHttp, credentials: BaseModel) -> LinkedIdentity:
        body = await self.get_json(http, "/clearwater/v1/account", headers=self._headers(credentials))
        number = body.get("account_number") if isinstance(body, dict) else None
        if not isinstance(number, str) or not number:
            raise ProviderDataError(f"{self.display_name} sent an account without an account number.")
        return LinkedIdentity(external_id=number)

    async def fetch_bills(self, http: ProviderHttp, account: Account, credentials: BaseModel) -> list[Bill]:
        bills: list[Bill] = []
        page = 1
        while page <= _MAX_PAGES:
            body = await self.get_json(
                http,
                "/clearwater/v1/bills",
                headers=self._headers(credentials),
                params={"page": page, "per_page": _PAGE_SIZE},
            )
            bills.extend(self._normalise(account, raw) for raw in _list_of(body, "bills"))
            if page >= int(body.get("total_pages", page)):
                return bills
            page += 1
        raise ProviderDataError(f"{self.display_name} returned more than {_MAX_PAGES} pages of bills.")

    def _normalise(self, account: Account, raw: Any) -> Bill:
        try:
            parsed = _ClearWaterBill.model_validate(raw)
            status = _STATUSES[parsed.status]
            return Bill(
                provider=self.name,
                account_id=account.account_id,
                provider_bill_id=parsed.bill_id,
                category=self.category,
                amount=Decimal(parsed.amount_due),
                currency=parsed.currency,
                issued_on=parsed.issue_date,
                due_on=parsed.due_date,
                period_start=parsed.service_period.get("from"),
                period_end=parsed.service_period.get("to"),
                status=status,
                revision=parsed.revision,
            )
        except (ValidationError, KeyError, InvalidOperation) as error:
            raise ProviderDataError(f"{self.display_name} sent a bill we cannot read.") from error


def _list_of(body: Any, key: str) -> list[Any]:
    if not isinstance(body, dict) or not isinstance(body.get(key), list):
        raise ProviderDataError(f"expected a JSON object with a '{key}' list")
    items: list[Any] = body[key]
    return items
