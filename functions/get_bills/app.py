"""The caller's aggregated bills, bills per provider, and spending insights."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from billhub.api import caller_id, create_resolver, not_implemented
from billhub.bills import BillsPage, bills_page
from billhub.errors import NotFound
from billhub.providers import get_adapter
from billhub.runtime import aws_client, utc_now
from billhub.settings import TableSettings
from billhub.store import BillsTable

logger = Logger()
app = create_resolver()
settings = TableSettings.from_environ(os.environ)


@cache
def store() -> BillsTable:
    return BillsTable(aws_client("dynamodb"), settings.TABLE_NAME)


@app.get("/bills")
def list_bills() -> BillsPage:
    return bills_page(store().user_snapshot(caller_id(app)), utc_now())


@app.get("/bills/<provider>")
def list_provider_bills(provider: str) -> BillsPage:
    adapter = get_adapter(provider)
    page = bills_page(store().user_snapshot(caller_id(app)), utc_now(), provider=adapter.name)
    if not page.accounts:
        raise NotFound(f"You have no linked {adapter.display_name} account.")
    return page


@app.get("/insights")
def insights() -> None:
    raise not_implemented("Spending insights")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
