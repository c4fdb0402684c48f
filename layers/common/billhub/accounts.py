"""Linking provider accounts and listing them."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from billhub.credentials import CredentialVault
from billhub.errors import CredentialsRejected
from billhub.models import Account, AccountStatus, Category
from billhub.providers import REGISTRY, get_adapter
from billhub.providers.base import (
    CredentialField,
    LinkedIdentity,
    ProviderAuthRejected,
    ProviderError,
)
from billhub.providers.http import ProviderHttp
from billhub.store import BillsTable

ProviderName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{1,31}$")]


class ProviderInfo(BaseModel):
    name: str
    display_name: str
    category: Category
    auth_type: str
    credential_fields: list[CredentialField]


class ProviderList(BaseModel):
    providers: list[ProviderInfo]


class LinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: ProviderName
    credentials: dict[
        Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,32}$")],
        Annotated[str, StringConstraints(max_length=512)],
    ] = Field(max_length=8)
    nickname: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)] | None = None


class AccountView(BaseModel):
    account_id: str
    provider: str
    category: Category
    external_ref: str
    nickname: str | None
    status: AccountStatus
    created_at: datetime
    last_success_at: datetime | None
    last_attempt_at: datetime | None
    last_error: str | None
    next_refresh_at: datetime

    @classmethod
    def of(cls, account: Account) -> AccountView:
        return cls(category=REGISTRY[account.provider].category, **account.model_dump())


class AccountList(BaseModel):
    accounts: list[AccountView]


def list_providers() -> ProviderList:
    return ProviderList(
        providers=[
            ProviderInfo(
                name=adapter.name,
                display_name=adapter.display_name,
                category=adapter.category,
                auth_type=adapter.auth_type,
                credential_fields=adapter.credential_fields(),
            )
            for adapter in REGISTRY.values()
        ]
    )


async def link_account(
    store: BillsTable, vault: CredentialVault, http: ProviderHttp, user_id: str, request: LinkRequest, now: datetime
) -> AccountView:
    """Verifies the credentials with the provider, then stores the account with them encrypted.

    Refused credentials store nothing. A provider that is down or slow does not block the user: the
    account is stored ``pending`` and its first fetch verifies it.
    """
    adapter = get_adapter(request.provider)
    credentials = adapter.parse_credentials(request.credentials)
    status = AccountStatus.ACTIVE
    try:
        identity = await adapter.verify(http, credentials)
    except ProviderAuthRejected as error:
        raise CredentialsRejected(f"{adapter.display_name} did not accept these credentials.") from error
    except ProviderError:
        status = AccountStatus.PENDING
        # Until the provider says whose account this is, the credentials themselves identify it.
        canonical = json.dumps(credentials.model_dump(), sort_keys=True).encode()
        identity = LinkedIdentity(external_id=f"pending:{hashlib.sha256(canonical).hexdigest()}")
    account = Account(
        account_id=uuid.uuid4().hex,
        user_id=user_id,
        provider=adapter.name,
        external_ref=identity.masked if status is AccountStatus.ACTIVE else "pending verification",
        nickname=request.nickname,
        status=status,
        created_at=now,
        next_refresh_at=now,
    )
    ciphertext = vault.encrypt(user_id, account.account_id, credentials.model_dump())
    store.create_account(account, identity.external_id, ciphertext)
    return AccountView.of(account)


def list_accounts(store: BillsTable, user_id: str) -> AccountList:
    accounts = [account for account in store.list_accounts(user_id) if account.status is not AccountStatus.DELETING]
    return AccountList(accounts=[AccountView.of(account) for account in accounts])
