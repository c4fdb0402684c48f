"""What the service should show for a sandbox account, computed from the sandbox's own generator.

The sandbox writes each bill in its provider's dialect (cents, DD/MM/YYYY, JSON numbers, ...); these
expectations are in the service's canonical shape, so a test comparing the two proves the adapters
read every dialect exactly, line items and planted quirks included.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
from pydantic import TypeAdapter

from billhub.models import Account, AccountStatus, Bill, BillStatus, Category, LineItem
from billhub.providers.session import OAuthClient, ProviderDirectory, parse_oauth_clients
from billhub.settings import ProviderEndpoints
from mock_provider import clearwater, fibrelink, northgas, sparkgrid
from mock_provider.registry import service_clients, service_endpoints
from mock_provider.sandbox import Quirk, SandboxBill, monthly_bills

_CATEGORIES = {"sparkgrid": "electricity", "northgas": "gas", "clearwater": "water", "fibrelink": "internet"}
_CURRENCIES = {"northgas": "GBP"}
# ClearWater bills in the sandbox's default range.
_BASE_RANGES = {"sparkgrid": sparkgrid.BASE_RANGE, "northgas": northgas.BASE_RANGE, "fibrelink": fibrelink.BASE_RANGE}


def now() -> datetime:
    """The wall clock, for adapter tests that run against the sandbox's own dates."""
    return datetime.now(UTC)


def account(provider: str) -> Account:
    """An active account at ``provider``, as an adapter fetches for it."""
    return Account(
        account_id="a" * 32,
        user_id="u1",
        provider=provider,
        external_ref="•••",
        status=AccountStatus.ACTIVE,
        created_at=now(),
        next_refresh_at=now(),
    )


@dataclass(frozen=True)
class SandboxAccount:
    """One sandbox account; the constructors read its planted quirks from the credentials, as the
    provider does (``SandboxAccount("northgas", number)`` has none whatever the number)."""

    provider: str
    account_number: str
    quirks: frozenset[Quirk] = frozenset()

    @classmethod
    def sparkgrid(cls, username: str) -> SandboxAccount:
        return cls("sparkgrid", sparkgrid.customer_id_for(username), sparkgrid.quirks_for(username))

    @classmethod
    def northgas(cls, account_number: str) -> SandboxAccount:
        return cls("northgas", account_number, northgas.quirks_for(account_number))

    @classmethod
    def clearwater(cls, api_key: str) -> SandboxAccount:
        return cls("clearwater", clearwater.account_number_for(api_key), clearwater.quirks_for(api_key))

    @classmethod
    def fibrelink(cls, username: str) -> SandboxAccount:
        return cls("fibrelink", fibrelink.subscriber_id_for(username), fibrelink.quirks_for(username))

    @property
    def currency(self) -> str:
        """The currency the account bills in now (a ``currency_change`` account's older bills are in
        another one: see each bill's ``currency``)."""
        return _CURRENCIES.get(self.provider, "USD")

    def bills(self, today: date) -> list[SandboxBill]:
        """The account's bills as the sandbox generates them on ``today``, newest first."""
        base_range = _BASE_RANGES.get(self.provider)
        if base_range is None:
            return monthly_bills(self.account_number, today, self.currency, quirks=self.quirks)
        return monthly_bills(self.account_number, today, self.currency, base_range, quirks=self.quirks)


def money(amount: Decimal) -> str:
    """An amount as the API writes it, at the currency's minor units: every sandbox currency (USD, GBP,
    CAD, EUR) has two."""
    return f"{amount:.2f}"


def line_item_views(bill: SandboxBill) -> list[dict[str, str]]:
    return [{"description": line.description, "amount": money(line.amount)} for line in bill.line_items]


def expected_bills(account: SandboxAccount, account_id: str, sandbox_today: date) -> list[Bill]:
    """What the account's adapter should make of the provider's bills: canonical ``Bill`` objects in the
    provider's order (newest first), statuses as the provider states them."""
    return [
        Bill(
            provider=account.provider,
            account_id=account_id,
            provider_bill_id=bill.bill_id,
            category=Category(_CATEGORIES[account.provider]),
            amount=bill.amount,
            currency=bill.currency,
            issued_on=bill.issue_date,
            due_on=bill.due_date,
            period_start=bill.period_start,
            period_end=bill.period_end,
            status=BillStatus(bill.status),
            revision=bill.revision,
            line_items=tuple(LineItem(description=line.description, amount=line.amount) for line in bill.line_items),
        )
        for bill in account.bills(sandbox_today)
    ]


def expected_bill_views(
    account: SandboxAccount, account_id: str, today: date, sandbox_today: date
) -> list[dict[str, Any]]:
    """``GET /bills/<provider>``'s bills for the account, newest due first, as the service shows them
    ``today`` (an unpaid bill past its due date shows as overdue) when they were fetched from the
    sandbox on ``sandbox_today``."""
    views = [
        {
            "bill_id": f"{account.provider}.{account_id}.{bill.bill_id}",
            "account_id": account_id,
            "provider": account.provider,
            "provider_bill_id": bill.bill_id,
            "category": _CATEGORIES[account.provider],
            "amount": money(bill.amount),
            "currency": bill.currency,
            "issued_on": bill.issue_date.isoformat(),
            "due_on": bill.due_date.isoformat(),
            "period_start": bill.period_start.isoformat(),
            "period_end": bill.period_end.isoformat(),
            "status": "overdue" if bill.status == "unpaid" and bill.due_date < today else bill.status,
            "revision": 1,
            "line_items": line_item_views(bill),
        }
        for bill in account.bills(sandbox_today)
    ]
    return sorted(views, key=lambda view: (view["due_on"], view["bill_id"]), reverse=True)


def sandbox_admin(base_url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """POSTs to the sandbox's ``/_admin/<path>`` (faults, token expiry, revisions) and returns its answer."""
    response = httpx.post(f"{base_url}/_admin/{path}", json=body or {})
    assert response.status_code == 200, response.text
    return response.json()


def requests_seen(base_url: str, provider: str) -> int:
    """How many requests the sandbox received for ``provider``."""
    return int(httpx.get(f"{base_url}/_admin/stats").json()[provider]["requests"])


# The sandbox's registrations of the service, as the local cloud configures it.
SANDBOX_CLIENTS: dict[str, OAuthClient] = parse_oauth_clients(service_clients())


def sandbox_directory(base_url: str, clients: dict[str, OAuthClient] | None = None) -> ProviderDirectory:
    """The service's provider directory for the sandbox at ``base_url``, as the local cloud configures it."""
    endpoints = TypeAdapter(dict[str, ProviderEndpoints]).validate_python(service_endpoints(base_url))
    return ProviderDirectory(endpoints, SANDBOX_CLIENTS if clients is None else clients)
