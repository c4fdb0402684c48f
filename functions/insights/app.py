"""The caller's spending insights: monthly spend, change, trailing average, forecast, unusual bills.

A function of its own, apart from GET /bills (functions/get_bills), so that the bills' cold start does
not pay for importing the insights."""

from __future__ import annotations

import os
from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from billhub import snapstart
from billhub.api import CallerId, Store, bills_table, create_resolver, documented
from billhub.insights import MAX_INSIGHT_MONTHS, Insights, history_start, spending_insights
from billhub.runtime import utc_now
from billhub.settings import InsightsSettings

logger = Logger()
app = create_resolver()
settings = InsightsSettings.from_environ(os.environ)


# SnapStart: the client and the insights' response models (built at first use otherwise) before the snapshot.
snapstart.register(before_snapshot=[bills_table, lambda: Insights.model_rebuild(force=True)])


@app.get("/insights", summary="Spending insights", tags=["bills"], responses=documented(200))
def insights(
    store: Store, user_id: CallerId, months: Annotated[int, Query(ge=1, le=MAX_INSIGHT_MONTHS)] = 12
) -> Insights:
    today = utc_now().date()
    accounts = store.accounts.list_accounts(user_id)
    bills = store.bills.bills_issued_since(user_id, history_start(today, months))
    return spending_insights(accounts, bills, today, months, settings.UNUSUAL_BILL_THRESHOLD)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
