"""The caller's aggregated bills and bills per provider.

GET /insights is a function of its own (functions/insights)."""

from __future__ import annotations

import os
from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from billhub import snapstart
from billhub.api import CallerId, ProviderPath, Store, bills_table, create_resolver, documented
from billhub.bills import BillFilters, BillsPage, read_bills
from billhub.runtime import utc_now
from billhub.settings import TableSettings

logger = Logger()
app = create_resolver()
settings = TableSettings.from_environ(os.environ)


# SnapStart: the client is built before the snapshot.
snapstart.register(before_snapshot=[bills_table])


# 404 for a caller whose deletion of themselves has begun.
@app.get(
    "/bills",
    summary="All of the caller's bills, with totals",
    description="Totals, overdue and due-soon bills and accounts cover every account of the caller, whatever "
    "page, status or dates are asked for: they are what the caller owes now.",
    tags=["bills"],
    responses=documented(200, 400, 404),
)
def list_bills(store: Store, user_id: CallerId, filters: Annotated[BillFilters, Query()]) -> BillsPage:
    return read_bills(store, user_id, filters, utc_now())


@app.get(
    "/bills/<provider>",
    summary="The caller's bills at one provider",
    description="As `GET /bills`, for the caller's accounts at this provider only: its bills, and totals, overdue "
    "and due-soon bills and accounts over those accounts, whatever page, status or dates are asked for.",
    tags=["bills"],
    responses=documented(200, 400, 404),
)
def list_provider_bills(
    store: Store, user_id: CallerId, provider: ProviderPath, filters: Annotated[BillFilters, Query()]
) -> BillsPage:
    return read_bills(store, user_id, filters, utc_now(), provider=provider)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
