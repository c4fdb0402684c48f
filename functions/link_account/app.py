"""Providers, linking provider accounts, and listing the caller's accounts."""

from __future__ import annotations

import asyncio
import os
from functools import cache
from typing import Any

import httpx
from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from billhub import accounts
from billhub.api import caller_id, create_resolver, not_implemented
from billhub.credentials import CredentialVault
from billhub.providers.http import ProviderHttp, RetryPolicy
from billhub.runtime import aws_client, utc_now
from billhub.settings import LinkSettings
from billhub.store import BillsTable

logger = Logger()
app = create_resolver()
settings = LinkSettings.from_environ(os.environ)
# The user is waiting: one quick retry at most, and a provider slower than this is verified later.
LINK_RETRY_POLICY = RetryPolicy(attempts=2, initial_wait=0.1, max_wait=0.5, max_retry_after=1.0, read_timeout=4.0)


@cache
def store() -> BillsTable:
    return BillsTable(aws_client("dynamodb"), settings.TABLE_NAME)


@cache
def vault() -> CredentialVault:
    return CredentialVault(aws_client("kms"), settings.CREDENTIALS_KEY_ID)


async def _link(user_id: str, request: accounts.LinkRequest) -> accounts.AccountView:
    async with httpx.AsyncClient() as client:
        http = ProviderHttp(client, str(settings.PROVIDER_BASE_URL), LINK_RETRY_POLICY)
        return await accounts.link_account(store(), vault(), http, user_id, request, utc_now())


@app.get("/providers")
def list_providers() -> accounts.ProviderList:
    return accounts.list_providers()


@app.post("/accounts/link")
def link(request: accounts.LinkRequest) -> tuple[accounts.AccountView, int]:
    return asyncio.run(_link(caller_id(app), request)), 201


@app.get("/accounts")
def list_accounts() -> accounts.AccountList:
    return accounts.list_accounts(store(), caller_id(app))


@app.put("/accounts/<account_id>/credentials")
def replace_credentials(account_id: str) -> None:
    raise not_implemented("Replacing an account's credentials")


@app.get("/accounts/oauth/<provider>/start")
def oauth_start(provider: str) -> None:
    raise not_implemented("OAuth2 linking")


@app.get("/accounts/oauth/<provider>/callback")
def oauth_callback(provider: str) -> None:
    raise not_implemented("OAuth2 linking")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
